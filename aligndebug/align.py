"""Alignment methods over a Record: naive / Shift-Att rows, any layer or head, links by a decoding rule.

Links are read off the subword rows and columns and then lifted to words. Without a rule name (`decode`
None) a row is linked at its argmax, or with `threshold` at every cell >= it, as before rules had names; a
rule from `decoding.DECODERS` (``argmax``, ``threshold``, ``bidir``) may be named instead.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np

from .decoding import decode as decode_links
from .record import Record
from .words import pool_record, token_links_to_words

Selector = Union[int, str, Sequence[int]]
METHODS = ("naive", "shift-att")


def default_layer(n_layers: int) -> int:
    """A middle-upper decoder layer (0-based), where Chen et al. (2020) find attention aligns best."""
    return n_layers // 2


def _pick(att: np.ndarray, axis: int, which: Selector, what: str) -> np.ndarray:
    n = att.shape[axis]
    if isinstance(which, str):
        if which != "mean":
            raise ValueError(f"{what} must be an index, a list of indices or 'mean', not {which!r}")
        return att.mean(axis=axis)
    idx = [which] if isinstance(which, (int, np.integer)) else list(which)
    for i in idx:
        if not -n <= i < n:
            raise ValueError(f"{what} {i} does not exist: the model has {n} (0-based; negative counts from the end)")
    return np.take(att, idx, axis=axis).mean(axis=axis)


def select(att: np.ndarray, layer: Selector | None = None, head: Selector = "mean") -> np.ndarray:
    """[L, H, R, C] -> [R, C] for one layer/head, a list of them (averaged) or 'mean'."""
    if att.ndim != 4:
        raise ValueError(f"expected attention of shape [layers, heads, rows, cols], got {att.shape}")
    layer = default_layer(att.shape[0]) if layer is None else layer
    return _pick(_pick(att, 0, layer, "layer"), 0, head, "head")


def attention_matrix(rec: Record, layer: Selector | None = None, head: Selector = "mean",
                     method: str = "shift-att") -> np.ndarray:
    """Cross-attention rows of the target word tokens (in order) over all encoder tokens."""
    if rec.cross is None:
        raise ValueError("this Record holds no cross-attention (extracted without 'cross')")
    return select(rec.cross, layer, head)[rec.rows_for(method)]


def target_token_word_ids(rec: Record) -> np.ndarray:
    """Word index of each target word token, in the row order of `attention_matrix`."""
    return rec.tgt_word_ids[rec.target_positions]


def word_matrix(rec: Record, method: str = "shift-att", layer: Selector | None = None,
                head: Selector = "mean") -> np.ndarray:
    """[target words, source words]: sum over a source word's subwords, mean over a target word's."""
    mat = attention_matrix(rec, layer, head, method)
    return pool_record(rec, mat)


def token_links(mat: np.ndarray, src_word_ids: np.ndarray, threshold: float | None = None,
                decode: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(target rows, source columns) of the links in `mat` [..., rows, cols], special source tokens excluded.

    `decode` None: argmax per row when `threshold` is None, else every cell with weight >= threshold. A rule
    name: that rule of `decoding` on the [rows, cols] matrix (`threshold` None: the rule's default).
    """
    special = np.asarray(src_word_ids) < 0
    if decode is not None:
        return decode_links(mat, decode, allowed=~special, threshold=threshold)
    if threshold is None:
        masked = np.where(special, -np.inf, mat)
        if masked.shape[-1] == 0 or special.all():
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        cols = masked.argmax(axis=-1)
        return np.arange(mat.shape[-2]), cols
    rows, cols = np.nonzero((mat >= threshold) & ~special)
    return rows, cols


def align_record(rec: Record, method: str = "shift-att", layer: Selector | None = None, head: Selector = "mean",
                 threshold: float | None = None, decode: str | None = None) -> set[tuple[int, int]]:
    """Word links (source word, target word), 0-based: a word pair is linked when any subword pair is.
    `decode`: a decoding rule's name (see `token_links`)."""
    mat = attention_matrix(rec, layer, head, method)
    rows, cols = token_links(mat, rec.src_word_ids, threshold, decode)
    return token_links_to_words(rows, cols, rec.src_word_ids, target_token_word_ids(rec))


def align_grid(rec: Record, method: str = "shift-att", threshold: float | None = None,
               decode: str | None = None) -> dict[tuple[int, int | str], set[tuple[int, int]]]:
    """Links for every (layer, head) and every (layer, 'mean'), from one vectorised pass over the Record
    (`decode`: a decoding rule's name, see `token_links`)."""
    if rec.cross is None:
        raise ValueError("this Record holds no cross-attention (extracted without 'cross')")
    rows = rec.rows_for(method)
    att = rec.cross[:, :, rows, :]  # [L, H, Tc, S]
    att = np.concatenate([att, att.mean(axis=1, keepdims=True)], axis=1)  # head index H = layer mean
    tgt_ids = target_token_word_ids(rec)
    n_heads = rec.cross.shape[1]
    special = rec.src_word_ids < 0
    out: dict[tuple[int, int | str], set[tuple[int, int]]] = {}
    if threshold is None and decode in (None, "argmax"):
        cols = np.where(special, -np.inf, att).argmax(axis=-1) if len(rows) and not special.all() else None
        for l in range(att.shape[0]):
            for h in range(n_heads + 1):
                key = (l, h if h < n_heads else "mean")
                out[key] = set() if cols is None else token_links_to_words(
                    np.arange(len(rows)), cols[l, h], rec.src_word_ids, tgt_ids)
    else:
        for l in range(att.shape[0]):
            for h in range(n_heads + 1):
                r, c = token_links(att[l, h], rec.src_word_ids, threshold, decode)
                out[(l, h if h < n_heads else "mean")] = token_links_to_words(r, c, rec.src_word_ids, tgt_ids)
    return out
