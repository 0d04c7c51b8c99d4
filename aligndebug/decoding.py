"""Decoding rules: links from any [target rows, source columns] weight matrix, registered by name.

Every rule takes a non-negative matrix (attention rows, a learned aligner's distributions, rollout or
IG scores) and a mask of the columns that may be linked (special source tokens excluded), and
returns the linked cells as two parallel index arrays (rows, cols). Columns in the optional `null`
mask compete (they take part in the argmax and in the shares) but are never linked: a row whose
mass goes to a null column (a learned aligner's "no source" slot, e.g. `</s>`) stays unaligned. Rules are plain numpy and know
nothing of models or words; `DECODERS` maps each name to its function so that a method, the CLI and
a score's signature can name the rule.

- ``argmax``: the largest column of every row; with ``threshold`` a row whose largest weight is
  below it stays unaligned (a target word may have no source).
- ``threshold``: every cell whose weight is >= ``threshold``.
- ``bidir``: awesome-align's extraction (Dou & Neubig 2021). Awesome-align links (i, j) when the
  softmax of the similarity matrix over the source and the softmax over the target both exceed a
  threshold. Our matrices hold weights, not similarities; the softmax of log-weights is the plain
  renormalisation, so here a cell is linked when its share of its row (over allowed columns) and
  its share of its column (over all rows) are both >= ``threshold``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Links = tuple[np.ndarray, np.ndarray]
Decoder = Callable[..., Links]

DEFAULT_DECODE = "argmax"
DEFAULT_THRESHOLDS = {"argmax": None, "threshold": 0.1, "bidir": 0.1}


def _mask(mat: np.ndarray, mask: np.ndarray | None, default: bool, what: str) -> np.ndarray:
    if mask is None:
        return np.full(mat.shape[1], default, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (mat.shape[1],):
        raise ValueError(f"the {what} mask has shape {mask.shape}, expected ({mat.shape[1]},) for a matrix of {mat.shape}")
    return mask


def _check(mat: np.ndarray, allowed: np.ndarray | None, null: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mat = np.asarray(mat, dtype=np.float64)
    if mat.ndim != 2:
        raise ValueError(f"a decoding rule needs a [target rows, source columns] matrix, got shape {mat.shape}")
    allowed, null = _mask(mat, allowed, True, "column"), _mask(mat, null, False, "null")
    if np.isnan(mat).any() or (mat < 0).any():
        raise ValueError("a decoding rule needs non-negative weights without NaN (probabilities or attention)")
    return mat, allowed & ~null, null


def _empty() -> Links:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)


def decode_argmax(mat: np.ndarray, allowed: np.ndarray | None = None, threshold: float | None = None,
                  null: np.ndarray | None = None) -> Links:
    """One link per row, at its largest allowed column; rows whose maximum is below `threshold`, or is a null
    column, stay unaligned."""
    mat, allowed, null = _check(mat, allowed, null)
    if mat.shape[0] == 0 or not allowed.any():
        return _empty()
    masked = np.where(allowed | null, mat, -np.inf)
    cols = masked.argmax(axis=1)
    rows = np.arange(mat.shape[0])
    keep = ~null[cols]
    if threshold is not None:
        keep &= masked[rows, cols] >= threshold
    rows, cols = rows[keep], cols[keep]
    return rows.astype(np.int64), cols.astype(np.int64)


def decode_threshold(mat: np.ndarray, allowed: np.ndarray | None = None, threshold: float | None = 0.1,
                     null: np.ndarray | None = None) -> Links:
    """Every allowed (non-null) cell with weight >= `threshold`."""
    if threshold is None:
        raise ValueError("the 'threshold' decoding rule needs a threshold")
    mat, allowed, _ = _check(mat, allowed, null)
    rows, cols = np.nonzero((mat >= threshold) & allowed[None, :])
    return rows.astype(np.int64), cols.astype(np.int64)


def _share(mat: np.ndarray, axis: int) -> np.ndarray:
    total = mat.sum(axis=axis, keepdims=True)
    return np.divide(mat, total, out=np.zeros_like(mat), where=total > 0)


def decode_bidir(mat: np.ndarray, allowed: np.ndarray | None = None, threshold: float | None = 0.1,
                 null: np.ndarray | None = None) -> Links:
    """Cells whose share of their row (over allowed and null columns) and of their column (over rows) are both
    >= `threshold`; null columns are never linked."""
    if threshold is None:
        raise ValueError("the 'bidir' decoding rule needs a threshold")
    mat, allowed, null = _check(mat, allowed, null)
    mat = np.where((allowed | null)[None, :], mat, 0.0)
    over_source, over_target = _share(mat, 1), _share(mat, 0)
    rows, cols = np.nonzero((over_source >= threshold) & (over_target >= threshold) & (mat > 0) & allowed[None, :])
    return rows.astype(np.int64), cols.astype(np.int64)


DECODERS: dict[str, Decoder] = {"argmax": decode_argmax, "threshold": decode_threshold, "bidir": decode_bidir}


def decode(mat: np.ndarray, rule: str = DEFAULT_DECODE, allowed: np.ndarray | None = None,
           threshold: float | None = None, null: np.ndarray | None = None) -> Links:
    """Links of `mat` by the rule named `rule` (see DECODERS); `threshold` None takes the rule's default."""
    try:
        fn = DECODERS[rule]
    except KeyError:
        raise ValueError(f"unknown decoding rule {rule!r}: expected one of {sorted(DECODERS)}") from None
    if threshold is None:
        threshold = DEFAULT_THRESHOLDS.get(rule)
    return fn(mat, allowed, threshold=threshold, null=null)


def resolve(rule: str | None, threshold: float | None = None,
            default: tuple[str, float | None] | None = None) -> tuple[str, float | None]:
    """The (rule, threshold) a run uses. `rule` None: `default` (e.g. the rule a learned aligner's card names) when
    no threshold is given either, else the rule every method had before rules were named: ``threshold`` at the
    given threshold, or plain ``argmax``. A named rule without a threshold takes the rule's default threshold."""
    if rule is None:
        if threshold is None and default is not None:
            return default
        return ("argmax", None) if threshold is None else ("threshold", threshold)
    if rule not in DECODERS:
        raise ValueError(f"unknown decoding rule {rule!r}: expected one of {sorted(DECODERS)}")
    return rule, threshold if threshold is not None else DEFAULT_THRESHOLDS.get(rule)


def word_links(mat: np.ndarray, rule: str = DEFAULT_DECODE, threshold: float | None = None,
               null: np.ndarray | None = None) -> set[tuple[int, int]]:
    """(source word, target word) links of a [target words, source words] matrix by the rule named `rule`.

    Signed scores (Integrated Gradients) enter as their positive part: a rule reads weights, and a source
    word that pushes a prediction down is no evidence of a link. NaN cells (undefined rows) count as 0, and a
    cell of weight 0 is never linked (a row with no positive weight has no argmax to speak of)."""
    mat = np.clip(np.nan_to_num(np.asarray(mat, dtype=np.float64), nan=0.0), 0.0, None)
    rows, cols = decode(mat, rule, threshold=threshold, null=null)
    keep = mat[rows, cols] > 0
    return set(zip(cols[keep].tolist(), rows[keep].tolist()))
