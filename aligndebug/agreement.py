"""Where attention and attribution agree: rank correlation per target token, and argmax alignments.

Attention (a layer/head choice of cross-attention, or the decoder rollout) says where the model
looks; Integrated Gradients says what moves its prediction. Per target token we compare the two
distributions over source words (or tokens) with Spearman's ρ. ρ is undefined (NaN) when either
row is constant or has fewer than two entries; summaries skip NaNs and count them.

IG values are signed; by default their magnitude is ranked (``absolute=True``), because attention
weights say how much a word is involved, not in which direction it pushes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
from scipy.stats import rankdata

from .align import select
from .attribution import ig_word_matrix
from .rollout import rollout_word_matrix
from .words import pool_record

if TYPE_CHECKING:  # pragma: no cover
    from .attribution import IGResult
    from .record import Record


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's ρ between matching rows of ``a`` and ``b`` ([n, m] each): ``[n]``.

    Ties get average ranks (as scipy.stats.spearmanr). A row that is constant in either matrix,
    or has fewer than two columns, gives NaN; NaN entries in a row make that row NaN too.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"spearman_rows: expected two [n, m] matrices of one shape, got {a.shape} and {b.shape}")
    n, m = a.shape
    if n == 0:
        return np.zeros(0)
    if m < 2:
        return np.full(n, np.nan)
    ra = rankdata(a, axis=1)
    rb = rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    num = (ra * rb).sum(axis=1)
    den = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    rho[np.isnan(a).any(axis=1) | np.isnan(b).any(axis=1)] = np.nan
    return np.clip(rho, -1.0, 1.0)


def token_agreement(attention: np.ndarray, attribution: np.ndarray, absolute: bool = True) -> np.ndarray:
    """ρ per target row between an attention matrix and an attribution matrix of the same shape."""
    attribution = np.abs(attribution) if absolute else np.asarray(attribution)
    return spearman_rows(attention, attribution)


def sentence_agreement(rho: np.ndarray) -> float:
    """Mean ρ over a sentence's target tokens, NaNs skipped; NaN when none is defined."""
    rho = np.asarray(rho, dtype=np.float64)
    defined = rho[~np.isnan(rho)]
    return float(defined.mean()) if len(defined) else float("nan")


@dataclass
class AgreementSummary:
    """Corpus view of per-token ρ. ``token_mean`` weighs every defined token equally,
    ``sentence_mean`` every sentence with at least one defined token."""

    n_sentences: int
    n_tokens: int
    n_defined: int
    token_mean: float
    token_median: float
    sentence_mean: float
    share_negative: float  # share of defined tokens with ρ < 0: attention and IG rank words oppositely

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def corpus_agreement(per_sentence: Iterable[np.ndarray]) -> AgreementSummary:
    """Summarise per-token ρ arrays (one per sentence)."""
    sentences = [np.asarray(r, dtype=np.float64).reshape(-1) for r in per_sentence]
    flat = np.concatenate(sentences) if sentences else np.zeros(0)
    defined = flat[~np.isnan(flat)]
    means = np.array([sentence_agreement(r) for r in sentences])
    means = means[~np.isnan(means)]
    nan = float("nan")
    return AgreementSummary(
        n_sentences=len(sentences), n_tokens=len(flat), n_defined=len(defined),
        token_mean=float(defined.mean()) if len(defined) else nan,
        token_median=float(np.median(defined)) if len(defined) else nan,
        sentence_mean=float(means.mean()) if len(means) else nan,
        share_negative=float((defined < 0).mean()) if len(defined) else nan,
    )


def argmax_links(mat: np.ndarray, absolute: bool = False) -> set[tuple[int, int]]:
    """One link per target word: ``(argmax source word, target word)`` for ``mat [n_tgt, n_src]``.

    Rows that are all NaN, and matrices without source columns, give no link. ``absolute`` takes
    the argmax of |mat| (for signed attributions where a strong negative also counts as involvement).
    The result is a set of (source, target) pairs, 0-based, as gold alignments and metrics expect.
    """
    mat = np.asarray(mat, dtype=np.float64)
    if mat.ndim != 2:
        raise ValueError(f"argmax_links: expected a [target words, source words] matrix, got shape {mat.shape}")
    if mat.shape[1] == 0:
        return set()
    if absolute:
        mat = np.abs(mat)
    valid = ~np.isnan(mat).all(axis=1)
    cols = np.argmax(np.where(np.isnan(mat), -np.inf, mat), axis=1)
    tgt = np.flatnonzero(valid)
    return set(zip(cols[tgt].tolist(), tgt.tolist()))


def attention_words(rec: "Record", attention: str = "cross", layer: int | str | Sequence[int] | None = None,
                    head: int | str | Sequence[int] = "mean", method: str = "naive", fusion: str = "mean",
                    residual: float = 0.5) -> np.ndarray:
    """[target words, source words] attention for agreement: cross-attention (layer/head) or rollout.

    ``method`` picks the decoder rows ('naive': the row that predicts the token, the same row IG
    explains; 'shift-att': one row later).
    """
    if attention == "cross":
        if rec.cross is None:
            raise ValueError("this Record holds no cross-attention (extracted without 'cross')")
        full = select(rec.cross, layer, head)
    elif attention == "rollout":
        return rollout_word_matrix(rec, method=method, fusion=fusion, residual=residual)
    else:
        raise ValueError(f"unknown attention {attention!r}: expected 'cross' or 'rollout'")
    return pool_record(rec, full[rec.rows_for(method)])


def record_agreement(rec: "Record", ig: "IGResult", attention: str = "cross",
                     layer: int | str | Sequence[int] | None = None, head: int | str | Sequence[int] = "mean",
                     method: str = "naive", fusion: str = "mean", residual: float = 0.5,
                     absolute: bool = True) -> np.ndarray:
    """ρ per target word between attention (cross or rollout) and IG, both pooled to words: ``[n_tgt_words]``."""
    att = attention_words(rec, attention, layer, head, method, fusion, residual)
    return token_agreement(att, ig_word_matrix(rec, ig), absolute=absolute)


def ig_links(rec: "Record", ig: "IGResult", absolute: bool = False) -> set[tuple[int, int]]:
    """IG alignment: per target word, the source word with the largest (pooled) attribution."""
    return argmax_links(ig_word_matrix(rec, ig), absolute=absolute)


def rollout_links(rec: "Record", method: str = "naive", fusion: str = "mean",
                  residual: float = 0.5) -> set[tuple[int, int]]:
    """Rollout alignment: per target word, the source word receiving the most rollout flow."""
    return argmax_links(rollout_word_matrix(rec, method=method, fusion=fusion, residual=residual))
