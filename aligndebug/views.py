"""What the app and the charts show of a Record, as arrays and labels: source x target matrices at word or
subword level, the layer x head grid, self-attention, per-token log-probabilities and entropies, source
coverage, the AER of every layer and head, and the differing positions of a contrast of two targets. No drawing here (charts.py draws); pooling to words goes
through `words.pool_record`, the one path every view shares.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .align import (align_grid, align_record, attention_matrix, select, target_token_word_ids, token_links,
                    word_matrix)
from .decoding import resolve as resolve_decoding
from .metrics import count_links
from .record import Record
from .signals import content_mask, normalised_entropy, relative_coverage
from .words import pool_record, pool_to_words, token_links_to_words

LEVELS = ("word", "subword")


def check_level(level: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}: expected one of {LEVELS}")


def check_gold_range(gold: Any, n_src: int, n_tgt: int) -> None:
    for s, t in set(gold.possible) | set(gold.sure):
        if not (0 <= s < n_src and 0 <= t < n_tgt):
            raise ValueError(f"gold link {s}-{t} is out of range: the sentence has {n_src} source and "
                             f"{n_tgt} target words (0-based indices expected below those)")


def source_target(rec: Record, token_mat: np.ndarray, level: str, threshold: float | None = None,
                  decode: str | None = None) -> tuple[np.ndarray, list[str], list[str], set[tuple[int, int]], Any]:
    """(matrix, x labels, y labels, links, to_cells) for a [target word tokens, S] matrix; links by the
    decoding rule `decode` (None: argmax, or cells >= `threshold`).

    ``to_cells`` maps word-level gold pairs into the matrix's cell space.
    """
    check_level(level)
    rows, cols = token_links(token_mat, rec.src_word_ids, threshold, decode)
    tgt_ids = target_token_word_ids(rec)
    if level == "word":
        mat = pool_record(rec, token_mat)
        links = token_links_to_words(rows, cols, rec.src_word_ids, tgt_ids)
        return mat, list(rec.src_words), list(rec.tgt_words), links, lambda pairs: set(pairs)
    y_labels = [rec.label_tokens[p] for p in rec.target_positions]
    links = {(int(c), int(r)) for r, c in zip(np.asarray(rows).tolist(), np.asarray(cols).tolist())}

    def to_cells(pairs: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
        # a token cell belongs to a gold pair when its source and target words do
        pairs = set(pairs)
        if not pairs:
            return set()
        s_idx, t_idx = np.asarray(rec.src_word_ids), np.asarray(tgt_ids)
        cells = set()
        for s, t in pairs:
            for x in np.flatnonzero(s_idx == s).tolist():
                for y in np.flatnonzero(t_idx == t).tolist():
                    cells.add((x, y))
        return cells

    return token_mat, list(rec.src_tokens), y_labels, links, to_cells


def layer_head_values(rec: Record, method: str, level: str) -> tuple[np.ndarray, list[str], list[str]]:
    """[L, H+1, rows, cols] cross-attention (last head slot = mean over heads), and axis labels."""
    if rec.cross is None:
        raise ValueError("this Record holds no cross-attention (extracted without 'cross')")
    att = rec.cross[:, :, rec.rows_for(method), :]
    att = np.concatenate([att, att.mean(axis=1, keepdims=True)], axis=1)
    if level == "word":
        att = pool_record(rec, att)
        return att, list(rec.src_words), list(rec.tgt_words)
    return att, list(rec.src_tokens), [rec.label_tokens[p] for p in rec.target_positions]


def layer_head_aer(rec: Record, gold: Any, *, method: str = "shift-att", threshold: float | None = None
                   ) -> dict[tuple[int, Any], float]:
    """Sentence AER of the alignment from every (layer, head) and (layer, 'mean')."""
    check_gold_range(gold, len(rec.src_words), len(rec.tgt_words))
    return {key: float(count_links(links, gold).aer) for key, links in align_grid(rec, method, threshold).items()}


def self_attention_matrix(rec: Record, side: str, *, layer: int | str | None = None, head: int | str = "mean",
                          level: str = "subword") -> tuple[np.ndarray, list[str]]:
    """Encoder or decoder self-attention [query, key] of one layer/head (or mean), and its labels.

    Word level pools keys by sum and queries by mean over each word's subwords; specials drop out.
    Decoder rows are decoder *inputs*: the input at row t is the label of row t-1.
    """
    check_level(level)
    if side == "encoder":
        att, tokens, words = rec.enc_self, rec.src_tokens, rec.src_words
        word_ids = np.asarray(rec.src_word_ids)
    elif side == "decoder":
        att, tokens, words = rec.dec_self, rec.dec_tokens, rec.tgt_words
        word_ids = np.concatenate([[-1], np.asarray(rec.tgt_word_ids)[:-1]]).astype(np.int64)
    else:
        raise ValueError(f"side must be 'encoder' or 'decoder', not {side!r}")
    if att is None:
        raise ValueError(f"this Record holds no {side} self-attention (extracted without "
                         f"'{'enc_self' if side == 'encoder' else 'dec_self'}')")
    mat = select(att, layer, head)
    if level == "word":
        return pool_to_words(mat, word_ids, word_ids, len(words), len(words)), list(words)
    return mat, list(tokens)


def token_signals(rec: Record, *, layer: int | str | None = None, head: int | str = "mean",
                  method: str = "shift-att", level: str = "word") -> dict[str, Any]:
    """Per target unit (word or subword token): label, log-probability, normalised attention entropy.

    Word level: a word's log-prob is the sum over its subwords (the log-prob of the whole word);
    its entropy is that of its pooled row over source words. Subword level: each target word
    token's row pooled over source words. The final ``</s>`` gets its log-prob and no entropy.
    """
    check_level(level)
    tok = attention_matrix(rec, layer, head, method)
    tgt_ids = target_token_word_ids(rec)
    n_src = len(rec.src_words)
    lp = np.asarray(rec.token_logprobs, dtype=np.float64)
    pos = rec.target_positions
    eos = [i for i in range(len(rec.label_tokens)) if rec.tgt_word_ids[i] < 0 and i > (pos[-1] if len(pos) else -1)]
    if level == "word":
        pooled = pool_record(rec, tok)
        ent = normalised_entropy(pooled)
        word_lp = np.zeros(len(rec.tgt_words))
        np.add.at(word_lp, tgt_ids, lp[pos])
        labels, logprobs, entropy = list(rec.tgt_words), word_lp.tolist(), ent.tolist()
    else:
        pooled = pool_to_words(tok, rec.src_word_ids, np.arange(len(pos)), n_src, len(pos))
        ent = normalised_entropy(pooled)
        labels, logprobs, entropy = [rec.label_tokens[p] for p in pos], lp[pos].tolist(), ent.tolist()
    if eos:  # the end-of-sentence decision is scored too
        labels.append(rec.label_tokens[eos[0]])
        logprobs.append(float(lp[eos[0]]))
        entropy.append(float("nan"))
    return {"labels": labels, "logprob": logprobs, "entropy": entropy}


def coverage_values(rec: Record, *, layer: int | str | None = None, head: int | str = "mean",
                    method: str = "shift-att") -> tuple[np.ndarray, np.ndarray]:
    """(relative coverage, content-word mask) per source word; 1 = the share uniform attention gives."""
    w = word_matrix(rec, method, layer, head)
    return relative_coverage(w), content_mask(rec.src_words)


def contrast_view(positions: Sequence[Mapping[str, Any]], source_words: Sequence[str], *,
                  target_key: str = "target", contrast_key: str = "contrast") -> dict[str, Any]:
    """What the app shows of a contrast: [D, S] contrastive attribution and attention (differing position x
    source word, None when not computed), row labels, and one table row per differing position.

    ``positions``: `ContrastResult.to_dict()["positions"]` (keys ``target_text``, ``attention_target``...)
    or a suite row's ``positions`` (``target_key="correct", contrast_key="wrong"``, key ``attention``).
    """
    n = len(source_words)
    labels, table, attr, att = [], [], [], []
    for d, p in enumerate(positions):
        good, bad = p[f"{target_key}_text"] or "∅", p[f"{contrast_key}_text"] or "∅"
        labels.append(f"{d}: {good} / {bad}")
        rel = p.get("relative_delta")
        table.append({"position": d, "kind": p["kind"], target_key: p[f"{target_key}_text"],
                      contrast_key: p[f"{contrast_key}_text"],
                      f"log p {target_key}": p[f"logprob_{target_key}"],
                      f"log p {contrast_key}": p[f"logprob_{contrast_key}"], "difference": p["difference"],
                      "completeness gap": float("nan") if rel is None else rel})
        attr.append(p.get("attribution") or [])
        att.append(p.get("attention_target", p.get("attention")) or [])

    def matrix(rows: list[list[float]]) -> np.ndarray | None:
        if not rows or any(len(r) != n for r in rows):  # not computed (IG skipped, no attention kept)
            return None
        return np.asarray(rows, dtype=np.float64)

    return {"source_words": list(source_words), "labels": labels, "table": table,
            "attribution": matrix(attr), "attention": matrix(att)}


def alti_view(bundle: Any, rec: Record) -> dict[str, Any]:
    """ALTI+ of a Record (one teacher-forced pass of its token ids, `alti.source_contribution`):

    * ``matrix`` [n target word tokens, S]: how much of the prediction of each target word token comes
      from each source token (row t of the rollout predicts label t, so rows are the target positions);
    * ``source_share`` per target word token: the share of its prediction that comes from the source at
      all (the rest comes from the target prefix); ``sentence``: the triage signal ``alti_source``, their
      mean over the word tokens and the closing </s>.

    Contribution is not causation: it measures how much of a vector's geometry a token accounts for, not
    what would change without it.
    """
    from .alti import source_contribution

    res = source_contribution(bundle, [rec], keep_matrices=True)[0]
    pos = rec.target_positions
    s = len(rec.src_ids)
    return {"matrix": res.total[pos, :s], "source_share": res.source_share[pos],
            "labels": [rec.label_tokens[p] for p in pos], "sentence": res.sentence_score}


# ------------------------------------------------------------------ learned aligner beside raw attention

def argmax_sources(mat: np.ndarray, null: bool = False) -> np.ndarray:
    """Per row (target word) of a [target words, source words] matrix, the column of largest weight; -1 where the
    row has no positive weight, or, with `null` (the last column is a "no source" slot), where that column wins."""
    m = np.nan_to_num(np.asarray(mat, dtype=np.float64), nan=0.0)
    if m.ndim != 2:
        raise ValueError(f"expected a [target words, source words] matrix, got shape {m.shape}")
    n = m.shape[1] - (1 if null else 0)
    if m.shape[0] == 0 or n <= 0:
        return np.full(m.shape[0], -1, dtype=np.int64)
    best = m.argmax(axis=1)
    none = (m.max(axis=1) <= 0) | (best >= n)
    return np.where(none, -1, best).astype(np.int64)


def disagreements(attention: np.ndarray, learned: np.ndarray, src_words: Sequence[str], tgt_words: Sequence[str],
                  gold: Any | None = None) -> list[dict[str, Any]]:
    """The target words whose most-attended source word (raw attention, [T, S] pooled to words) is not the one the
    learned aligner puts most mass on ([T, S + 1], last column "no source"): where the model knows the link but
    its attention does not look there. A word the aligner leaves without a source is not counted (nothing to
    compare). With `gold` (sure/possible pairs), whether each side's source word is a gold (possible) link."""
    att, lea = np.asarray(attention), np.asarray(learned)
    shape = (len(tgt_words), len(src_words))
    if att.shape != shape or lea.shape != (shape[0], shape[1] + 1):
        raise ValueError(f"attention {att.shape} and learned {lea.shape} matrices do not fit {shape[0]} target and "
                         f"{shape[1]} source words (learned has one more column: no source)")
    a, l = argmax_sources(att), argmax_sources(lea, null=True)
    possible = None if gold is None else set(gold.possible) | set(gold.sure)
    out = []
    for j in np.flatnonzero((a >= 0) & (l >= 0) & (a != l)).tolist():
        row: dict[str, Any] = {"target": j, "target word": tgt_words[j],
                               "attention looks at": src_words[a[j]], "attention source": int(a[j]),
                               "learned links": src_words[l[j]], "learned source": int(l[j])}
        if possible is not None:
            row["learned in gold"] = (int(l[j]), j) in possible
            row["attention in gold"] = (int(a[j]), j) in possible
        out.append(row)
    return out


def marked_labels(labels: Sequence[str], marked: Iterable[int], mark: str = " ≠") -> list[str]:
    """`labels` with `mark` after the ones at the `marked` positions (the app's disagreeing target words)."""
    marked = set(marked)
    return [f"{w}{mark}" if k in marked else str(w) for k, w in enumerate(labels)]


def learned_vs_attention(bundle: Any, aligner: Any, rec: Record, *, layer: Any = None, head: Any = "mean",
                         method: str = "shift-att", decode: str | None = None, threshold: float | None = None,
                         gold: Any | None = None) -> dict[str, Any]:
    """A learned aligner (`learned.LearnedAligner`) and raw attention on one Record's sentence pair:

    * ``matrix`` [target words, source words + 1] (last column: no source), ``links`` by ``rule`` at
      ``threshold`` (`decode` None: the rule the aligner's card names, else argmax);
    * ``attention`` [target words, source words] of `layer`, `head`, `method`, ``attention_links`` by the same
      `decode` (None: argmax, or cells >= `threshold`);
    * ``disagreements`` (see `disagreements`) and their target word indices ``marked``.

    The aligner reads its own teacher-forced pass of the Record's words (hidden states, not attention)."""
    from .extract import encode_pair
    from .learned import links_from_word_matrix

    if gold is not None:
        check_gold_range(gold, len(rec.src_words), len(rec.tgt_words))
    card = aligner.card.get("decode") or {}
    rule, thr = resolve_decoding(decode, threshold, (card["rule"], card.get("threshold")) if card.get("rule") else None)
    mat = aligner.word_matrices(bundle, [encode_pair(bundle, rec.src_words, rec.tgt_words)])[0]
    att = word_matrix(rec, method, layer, head)
    dis = disagreements(att, mat, rec.src_words, rec.tgt_words, gold)
    return {"matrix": mat, "links": links_from_word_matrix(mat, rule, thr), "rule": rule, "threshold": thr,
            "attention": att, "attention_links": align_record(rec, method, layer, head, threshold, decode),
            "disagreements": dis, "marked": [d["target"] for d in dis]}
