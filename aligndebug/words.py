"""Subword <-> word mapping for any tokenizer, and pooling of token matrices to words.

Words are the pre-tokenized units a gold alignment indexes. Fast tokenizers map each token
to a word through character offsets; slow (SentencePiece-in-Python) tokenizers are fed the
words one by one, so the mapping holds by construction. Neither path assumes a marker
convention such as '▁', 'Ġ' or '##'.
"""

from __future__ import annotations

import weakref
from typing import Any, Sequence

import numpy as np

from .pairs import split_words  # noqa: F401  (re-exported: words are split on ASCII spaces only)


class NoTokensError(ValueError):
    """The tokenizer made no token of a sentence's words (a line that is only special tokens' text)."""


def encode_words(tokenizer: Any, words: Sequence[str], target: bool = False, prefix: str = "") -> tuple[list[int], np.ndarray]:
    """Token ids (special tokens included) for `words`, and the word index of each token (-1: special/prefix).

    `target` selects the tokenizer's target side (language codes, target vocabulary).
    `prefix` is text placed before the words (e.g. a T5 task prefix); its tokens get -1.
    """
    if not words:
        raise ValueError("cannot encode an empty sentence: expected at least one word")
    text = prefix + " ".join(words)
    if getattr(tokenizer, "is_fast", False):
        return _encode_by_offsets(tokenizer, words, text, target, len(prefix))
    return _encode_word_by_word(tokenizer, words, text, target, prefix)


def _call(tokenizer: Any, text: Any, target: bool, **kwargs: Any) -> Any:
    # not verbose: a sentence beyond the model's positions is the runner's to refuse or flag, by line, and the
    # tokenizer's own warning ("will result in indexing errors") would say it cannot be handled
    kwargs.setdefault("verbose", False)
    return tokenizer(text_target=text, **kwargs) if target else tokenizer(text, **kwargs)


def _encode_by_offsets(tokenizer: Any, words: Sequence[str], text: str, target: bool, start: int) -> tuple[list[int], np.ndarray]:
    enc = _call(tokenizer, text, target, return_offsets_mapping=True, return_special_tokens_mask=True)
    ids = list(enc["input_ids"])
    char_word = np.full(len(text) + 1, -1, dtype=np.int64)  # one slot past the end keeps lookups in range
    pos = start
    for w, word in enumerate(words):
        char_word[pos: pos + len(word)] = w
        pos += len(word) + 1
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    special = np.asarray(enc["special_tokens_mask"], dtype=bool)
    end = offsets[:, 1]
    last_char = np.clip(end - 1, 0, len(text))
    word_ids = char_word[last_char]
    # A token that is only the space before a word (SentencePiece's lone '▁') belongs to the next word.
    lone_space = (word_ids < 0) & (end > offsets[:, 0]) & (end < len(text))
    word_ids[lone_space] = char_word[end[lone_space]]
    # Byte-level BPE trims offsets: a lone 'Ġ' before a word gets an empty span at that word's first character.
    empty = end <= offsets[:, 0]
    word_ids[empty] = char_word[np.clip(offsets[empty, 0], 0, len(text))]
    word_ids[special] = -1
    return ids, word_ids


def _encode_word_by_word(tokenizer: Any, words: Sequence[str], text: str, target: bool, prefix: str) -> tuple[list[int], np.ndarray]:
    full = _call(tokenizer, text, target, return_special_tokens_mask=True)
    ids, mask = list(full["input_ids"]), list(full["special_tokens_mask"])
    content = [i for i, m in enumerate(mask) if not m]
    if not content:
        raise NoTokensError(f"the tokenizer produced no tokens for {text!r}")
    head, tail = ids[: content[0]], ids[content[-1] + 1:]
    per_word = _word_pieces(tokenizer, words, target)
    prefix_ids = _call(tokenizer, prefix, target, add_special_tokens=False)["input_ids"] if prefix else []
    body = [t for piece in per_word for t in piece]
    word_ids = [-1] * (len(head) + len(prefix_ids))
    word_ids += [w for w, piece in enumerate(per_word) for _ in piece]
    word_ids += [-1] * len(tail)
    return head + list(prefix_ids) + body + tail, np.asarray(word_ids, dtype=np.int64)


_WORD_CACHE: "weakref.WeakKeyDictionary[Any, dict[bool, dict[str, list[int]]]]" = weakref.WeakKeyDictionary()
_WORD_CACHE_MAX = 200_000  # words per tokenizer side: bounded, so memory does not grow with the corpus


def _word_pieces(tokenizer: Any, words: Sequence[str], target: bool) -> list[list[int]]:
    """Ids of each word tokenized alone. Slow tokenizers spend most of their time per call, and words repeat
    (Zipf), so pieces are cached per tokenizer and side; a word's pieces do not depend on its sentence here."""
    try:
        cache = _WORD_CACHE.setdefault(tokenizer, {}).setdefault(target, {})
    except TypeError:  # not weak-referenceable: no cache
        return [list(x) for x in _call(tokenizer, list(words), target, add_special_tokens=False)["input_ids"]]
    new = [w for w in dict.fromkeys(words) if w not in cache]
    if new and len(cache) + len(new) > _WORD_CACHE_MAX:
        cache.clear()
        new = list(dict.fromkeys(words))
    if new:
        for w, ids in zip(new, _call(tokenizer, new, target, add_special_tokens=False)["input_ids"]):
            cache[w] = list(ids)
    return [cache[w] for w in words]


def pooling_matrix(word_ids: np.ndarray, n_words: int, mode: str) -> np.ndarray:
    """[n_words, n_tokens] matrix that sums ('sum') or averages ('mean') each word's tokens; -1 tokens drop out."""
    word_ids = np.asarray(word_ids)
    onehot = (word_ids[None, :] == np.arange(n_words)[:, None]).astype(np.float32)
    if mode == "sum":
        return onehot
    if mode == "mean":
        counts = onehot.sum(axis=1, keepdims=True)
        return np.divide(onehot, counts, out=np.zeros_like(onehot), where=counts > 0)
    raise ValueError(f"unknown pooling mode {mode!r}: expected 'sum' or 'mean'")


def pool_to_words(mat: np.ndarray, src_word_ids: np.ndarray, tgt_word_ids: np.ndarray, n_src_words: int,
                  n_tgt_words: int) -> np.ndarray:
    """Pool a [target tokens, source tokens] matrix to [target words, source words].

    Sum over a source word's subwords (attention mass a word receives), mean over a target
    word's subwords (each target subword is one distribution). Works on a leading batch axis too.
    """
    p_src = pooling_matrix(src_word_ids, n_src_words, "sum")
    p_tgt = pooling_matrix(tgt_word_ids, n_tgt_words, "mean")
    return p_tgt @ mat @ p_src.T


def pool_record(rec: Any, mat: np.ndarray) -> np.ndarray:
    """Pool a Record's [..., target tokens, source tokens] matrix (rows already chosen for the target tokens,
    `rec.target_positions` order, e.g. by `rec.rows_for(method)`) to [..., target words, source words]:
    the one way every view (attention, rollout, IG, charts) goes from tokens to words."""
    return pool_to_words(mat, rec.src_word_ids, rec.tgt_word_ids[rec.target_positions], len(rec.src_words),
                         len(rec.tgt_words))


def token_links_to_words(tgt_tokens: np.ndarray, src_tokens: np.ndarray, src_word_ids: np.ndarray,
                         tgt_word_ids: np.ndarray) -> set[tuple[int, int]]:
    """Map token-level links (parallel index arrays) to (source word, target word) links."""
    s = np.asarray(src_word_ids)[np.asarray(src_tokens, dtype=np.int64)]
    t = np.asarray(tgt_word_ids)[np.asarray(tgt_tokens, dtype=np.int64)]
    keep = (s >= 0) & (t >= 0)
    return set(zip(s[keep].tolist(), t[keep].tolist()))
