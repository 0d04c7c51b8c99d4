"""Error signals for MT triage: plain numpy functions, and `record_signals` over a Record.

Definitions (design notes part 2; every choice about special tokens is stated here):

* **Pooled word attention** ``W`` [n_tgt_words, n_src_words]: `aligndebug.align.word_matrix`
  (sum over a source word's subwords, mean over a target word's subwords, source specials
  such as ``</s>`` and language codes excluded). Rows therefore sum to *less* than 1 when a
  target word looks at specials; the signals below renormalise each row over the source
  words so that they describe *where among the words* attention went, and the mass on
  specials is reported separately as a sink share.
* **Token attention** ``A`` [n_target_word_tokens, S]: `aligndebug.align.attention_matrix`,
  all S encoder tokens, specials included (rows are probability distributions).
* **Normalised entropy** of a target word: H(p)/log(n_src_words) of its renormalised row of
  ``W``; 1 = uniform, 0 = one-hot. With one source word every distribution is both, so the
  value is defined as 0 (nothing to scatter over); a row with no mass on any source word
  (all on specials) counts as uniform (1: it looks nowhere in particular).
* **Wass-to-Unif** (Guerreiro et al., 2023): the rows of ``A`` (one per target word token,
  the final ``</s>`` row excluded) are averaged with equal weight; the result, a distribution
  over *all* S encoder tokens including ``</s>``, is compared with the uniform distribution
  over the same S tokens by total-variation distance (the Wasserstein distance under the 0/1
  cost). Specials are kept on purpose: the collapse of attention onto ``</s>`` is the typical
  pattern of detached output in that paper, where a *large* distance flags a hallucination.
  (The design notes describe the opposite failure, attention spread everywhere; that one
  shows in the entropy signals. The error suite measures which direction holds.)
* **Coverage** of a source word: its column sum of the row-renormalised ``W`` (each target
  word hands out one unit). *Relative* coverage divides by the fair share n_tgt/n_src, so 1
  means "as much as every word would get under uniform attention".
* **Omission / repetition suspects**: source *content words* (see `FUNCTION_WORDS`) whose
  relative coverage is below / above token-level thresholds passed in (triage calibrates
  them as percentiles).
* **Attention sinks**: over the rows of ``A``, the mean share of attention on encoder
  specials (``src_word_ids == -1``: ``</s>``, language codes, prefixes) and on punctuation
  (tokens of punctuation-only words, and punctuation tokens split off a word).
* **Seq-Logprob**: mean of ``rec.token_logprobs`` over the label positions that hold target
  word tokens *plus the final* ``</s>`` (so stopping early or late is scored too); forced
  language-code labels are excluded.
* **Output repetition** and **length ratio** are over target words (split on spaces);
  chrF / BLEU are sacrebleu's sentence scores against a reference.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .align import attention_matrix, word_matrix

# Small, documented function-word lists. A source word is a *content word* when it holds a
# letter or digit, is longer than two characters (this catches short particles in any
# language: "a", "of", "le", "la", "de", "zu", "im") and its case-folded form is not in the
# union below. The lists cover the languages of the embedded model (German, English);
# other languages fall back on the length and punctuation rules. Pass `function_words` to
# `record_signals` to use another list.
FUNCTION_WORDS: frozenset[str] = frozenset(
    """
    der die das den dem des ein eine einen einem einer eines und oder aber mit auf aus bei
    von vor nach für fur über uber unter durch gegen ohne zum zur vom beim sich ist sind war
    waren wird werden hat haben sein seine ihr ihre nicht auch noch wie als wenn dass daß
    sie wir ihm ihn ihnen uns man was wer dort hier sehr neben hinter zwischen während
    the and but for with from into onto over under through are was were has have had his
    her hers its their they them this that these those not also too very who what which
    where when while there here some any all each another other than then off out one
    """.split()
)


@dataclass(frozen=True)
class Signal:
    """One triage signal: which values are suspect (`direction` "high", "low", or "both"), the `family` of
    signals measuring the same thing (combined as one in the score), the `flag` a row gets beyond the
    threshold (for "both": the low-side and high-side flags), the `label` reasons use, and whether the HTML
    `report` and the app's test-set `table` show it."""

    name: str
    direction: str
    family: str
    flag: str | tuple[str, str]
    label: str
    report: bool = False
    table: bool = False


SIGNALS: dict[str, Signal] = {s.name: s for s in (
    Signal("entropy_mean", "high", "dispersion", "scattered", "mean normalised attention entropy", report=True, table=True),
    Signal("scattered_share", "high", "dispersion", "scattered", "share of target words with scattered attention"),
    Signal("wass_to_unif", "high", "detachment", "detached", "Wass-to-Unif distance", report=True, table=True),
    Signal("sink_special", "high", "detachment", "detached", "share of attention on special tokens (</s>)", report=True),
    Signal("sink_punct", "high", "detachment", "detached", "share of attention on punctuation"),
    Signal("coverage_min", "low", "omission", "omission", "lowest relative coverage of a source content word",
           report=True, table=True),
    Signal("omission_share", "high", "omission", "omission", "share of source content words left unattended"),
    Signal("coverage_max", "high", "overattention", "repetition", "highest relative coverage of a source content word",
           report=True),
    Signal("overattended_share", "high", "overattention", "repetition", "share of source content words over-attended"),
    Signal("seq_logprob", "low", "confidence", "low_confidence", "Seq-Logprob (mean target log-probability)",
           report=True, table=True),
    Signal("min_logprob", "low", "confidence", "low_confidence", "lowest target token log-probability", report=True),
    Signal("repeat_share", "high", "repetition", "repetition", "share of target words inside a repeated n-gram",
           report=True),
    Signal("longest_repeat", "high", "repetition", "repetition", "longest repeated target span (words)"),
    Signal("tandem_repeat", "high", "repetition", "repetition", "longest immediately repeated target span (words)",
           report=True),
    Signal("repeated_words", "high", "repetition", "repetition",
           "target content words said again (occurrences beyond each word's first)", report=True),
    Signal("length_ratio", "both", "length", ("too_short", "too_long"), "target/source length ratio (words)",
           report=True, table=True),
    Signal("chrf", "low", "reference", "low_reference_score", "sentence chrF against the reference", report=True, table=True),
    Signal("bleu", "low", "reference", "low_reference_score", "sentence BLEU against the reference", report=True, table=True),
    # traced by `alti.traced_records` in the same forward pass (not from `record_signals`: it needs the model)
    Signal("alti_source", "low", "source_contribution", "detached",
           "ALTI+ source contribution (share of each prediction that comes from the source)", report=True),
    # from a second pass with an empty source (`source_gain`), set by the runner like alti_source
    Signal("source_gain", "low", "source_contribution", "detached",
           "source gain (Seq-Logprob with the source minus with an empty source)", report=True),
    # from a learned aligner run on the same pass (`aligner_signals`; only when triage has one for the model)
    Signal("unaligned_target", "high", "source_contribution", "detached",
           "mass the learned aligner puts on no source word (mean over target content words)", report=True),
    Signal("unaligned_source", "high", "omission", "omission",
           "share of source content words no target word aligns to (learned aligner)", report=True),
)}
"""Every sentence-level signal triage scores, by name (registry order is the order rows, calibrations and
the score's combination read them). Adding a signal is one entry here and its value in `record_signals`."""

FAMILIES: dict[str, list[str]] = {}
for _s in SIGNALS.values():
    FAMILIES.setdefault(_s.family, []).append(_s.name)


def _as_float(a: Any) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.size and np.nanmin(arr) < -1e-6:
        raise ValueError("attention weights must be non-negative")
    return arr


def normalised_entropy(weights: np.ndarray) -> np.ndarray:
    """Entropy of each row of `weights` [R, n] after renormalising it, divided by log(n).

    1 = uniform, 0 = one-hot. n == 1 gives 0 for every row (nothing to scatter over);
    an all-zero row is treated as uniform (1). n == 0 gives NaN.
    """
    w = _as_float(weights)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D matrix [rows, n], got shape {w.shape}")
    rows, n = w.shape
    if n == 0:
        return np.full(rows, np.nan)
    if n == 1:
        return np.zeros(rows)
    p = _renormalise_rows(w)
    logp = np.log(np.where(p > 0, p, 1.0))  # 0·log 0 = 0
    return -(p * logp).sum(axis=1) / math.log(n)


def _renormalise_rows(w: np.ndarray) -> np.ndarray:
    """Rows scaled to sum 1; rows with no mass become uniform."""
    n = w.shape[1]
    total = w.sum(axis=1, keepdims=True)
    uniform = np.full_like(w, 1.0 / n) if n else w
    return np.where(total > 0, w / np.where(total > 0, total, 1.0), uniform)


def scattered_share(entropy: np.ndarray, threshold: float) -> float:
    """Share of target words whose normalised entropy is above `threshold` (NaN if none)."""
    e = np.asarray(entropy, dtype=np.float64)
    e = e[~np.isnan(e)]
    return float(np.mean(e > threshold)) if e.size else float("nan")


def wass_to_unif(attention: np.ndarray) -> float:
    """Total-variation distance between uniform over the S columns and the mean row of `attention`.

    `attention` [R, S]: one row per target token, one column per source token (keep the
    specials you want counted). Rows are averaged with equal weight and the mean is
    renormalised. Range [0, 1 - 1/S]; NaN when there are no rows or columns.
    """
    a = _as_float(attention)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D matrix [rows, S], got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        return float("nan")
    mean = _renormalise_rows(a.mean(axis=0, keepdims=True))[0]
    return float(0.5 * np.abs(mean - 1.0 / a.shape[1]).sum())


def coverage(word_attention: np.ndarray) -> np.ndarray:
    """Attention mass each source word receives, summed over target words [n_src].

    Each row of `word_attention` [n_tgt, n_src] is renormalised first (one unit per target
    word; a row with no mass spreads its unit uniformly).
    """
    w = _as_float(word_attention)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D matrix [n_tgt, n_src], got shape {w.shape}")
    if w.shape[1] == 0:
        return np.zeros(0)
    return _renormalise_rows(w).sum(axis=0)


def relative_coverage(word_attention: np.ndarray) -> np.ndarray:
    """Coverage divided by the fair share n_tgt/n_src: 1 = what uniform attention gives.

    An empty target (n_tgt == 0) covers nothing: every source word gets 0.
    """
    w = np.asarray(word_attention)
    n_tgt, n_src = w.shape
    if n_tgt == 0:
        return np.zeros(n_src)
    return coverage(w) * n_src / n_tgt


def is_punctuation(word: str) -> bool:
    """True for a non-empty word made only of punctuation or symbol characters."""
    return bool(word) and all(unicodedata.category(ch)[0] in "PS" for ch in word)


def is_punctuation_token(token: str) -> bool:
    """True for a subword token with no letter or digit and at least one punctuation character
    (so "▁." and "," qualify whatever the tokenizer's word-start marker)."""
    return not any(ch.isalnum() for ch in token) and any(unicodedata.category(ch)[0] == "P" for ch in token)


def content_mask(words: Sequence[str], function_words: Iterable[str] | None = None) -> np.ndarray:
    """Boolean mask of content words (see FUNCTION_WORDS for the rule)."""
    stop = FUNCTION_WORDS if function_words is None else frozenset(w.casefold() for w in function_words)
    return np.array(
        [any(ch.isalnum() for ch in w) and len(w) > 2 and w.casefold() not in stop for w in words], dtype=bool
    )


def coverage_suspects(rel_cov: np.ndarray, content: np.ndarray, low: float | None, high: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of content words with relative coverage below `low` (omission suspects) and
    above `high` (repetition suspects); a threshold of None yields no suspects."""
    rel = np.asarray(rel_cov, dtype=np.float64)
    content = np.asarray(content, dtype=bool)
    none = np.zeros(0, dtype=int)
    omitted = np.flatnonzero(content & (rel < low)) if low is not None else none
    repeated = np.flatnonzero(content & (rel > high)) if high is not None else none
    return omitted, repeated


def sink_shares(attention: np.ndarray, special_cols: np.ndarray, punct_cols: np.ndarray) -> tuple[float, float]:
    """Mean share of each row's attention on special columns and on punctuation columns.

    `attention` [R, S] over all encoder tokens; masks are boolean [S]. NaN without rows.
    """
    a = _as_float(attention)
    if a.shape[0] == 0:
        return float("nan"), float("nan")
    p = _renormalise_rows(a)
    special = p[:, np.asarray(special_cols, dtype=bool)].sum(axis=1).mean()
    punct = p[:, np.asarray(punct_cols, dtype=bool)].sum(axis=1).mean()
    return float(special), float(punct)


def logprob_positions(tgt_word_ids: np.ndarray) -> np.ndarray:
    """Label positions scored by Seq-Logprob: target word tokens plus the final label when it
    is a special (the closing ``</s>``)."""
    ids = np.asarray(tgt_word_ids)
    pos = np.flatnonzero(ids >= 0)
    if len(ids) and ids[-1] < 0:
        pos = np.append(pos, len(ids) - 1)
    return pos


def seq_logprob(token_logprobs: np.ndarray, positions: np.ndarray) -> float:
    """Mean log-probability at `positions` (NaN when there are none)."""
    lp = np.asarray(token_logprobs, dtype=np.float64)[np.asarray(positions, dtype=int)]
    return float(lp.mean()) if lp.size else float("nan")


def lowest_tokens(token_logprobs: np.ndarray, tokens: Sequence[str], positions: np.ndarray, k: int = 3) -> list[dict[str, Any]]:
    """The `k` lowest-probability tokens among `positions`, lowest first."""
    pos = np.asarray(positions, dtype=int)
    lp = np.asarray(token_logprobs, dtype=np.float64)[pos]
    order = np.argsort(lp, kind="stable")[:k]
    return [{"position": int(pos[i]), "token": tokens[pos[i]], "logprob": round(float(lp[i]), 4)} for i in order]


PUNCT_RUN = 5  # the same punctuation word this many times in a row is degenerate output, not an ellipsis


def repetition_stats(words: Sequence[str], function_words: Iterable[str] | None = None) -> dict[str, float]:
    """Output repetition over target words, compared case-folded and without the punctuation
    attached at either end ("street." matches "street"; a punctuation-only word stays itself).
    A repeat made of punctuation-only words alone (`is_punctuation`) does not count: doubled closing
    brackets or quotes (") )") and a spaced ellipsis (". . .") are ordinary text, not a model repeating
    itself; a run of `PUNCT_RUN` or more of the same punctuation word (". . . . . ." on and on) is
    degenerate output, and its words count like any other.

    * ``repeat_share``: share of words inside a word n-gram (n >= 2) that occurs more than once.
    * ``longest_repeat``: length in words of the longest span occurring at least twice
      (occurrences may overlap; 1 when only single words repeat, 0 when nothing repeats).
    * ``tandem_repeat``: length of the longest span immediately followed by itself
      ("is is" = 1, "the man the man" = 2), 0 when there is none.
    * ``repeated_words``: occurrences of content words (`content_mask`, `function_words`) beyond each one's
      first, wherever they stand ("a street in a city street" = 1). A decoder that repeats itself mostly says
      one content word or phrase again further on; the n-gram signals miss a single word, and
      ``longest_repeat`` counts "the" and "of" said twice, which every long sentence does.
    """
    w = [_bare(x) for x in words]
    n = len(w)
    if n == 0:
        return {"repeat_share": 0.0, "longest_repeat": 0.0, "tandem_repeat": 0.0, "repeated_words": 0.0}
    content = [x for x, keep in zip(w, content_mask(w, function_words)) if keep]
    repeated_words = len(content) - len(set(content))
    _, codes = np.unique(np.array(w, dtype=object).astype(str), return_inverse=True)
    eq = codes[:, None] == codes[None, :]
    # lcp[i, j] = length of the common run starting at i and j; filled one anti-diagonal
    # step at a time from the end (vectorised over all pairs).
    lcp = np.zeros((n + 1, n + 1), dtype=np.int64)
    for k in range(n - 1, -1, -1):
        lcp[k, :n] = np.where(eq[k], lcp[k + 1, 1 : n + 1] + 1, 0)
    lcp = lcp[:n, :n]
    ar = np.arange(n)
    counted = np.array([not is_punctuation(x) for x in w]) | _in_long_run(codes, PUNCT_RUN)
    words_before = np.r_[0, np.cumsum(counted)]  # words that count before position i
    lcp = np.where(words_before[np.minimum(ar[:, None] + lcp, n)] > words_before[ar][:, None], lcp, 0)
    off = ~np.eye(n, dtype=bool)
    longest = int(lcp[off].max()) if n > 1 else 0
    # a position starts a repeated n-gram (n >= 2) when another position matches it for 2+
    starts = np.flatnonzero(((lcp >= 2) & off).any(axis=1))
    covered = np.zeros(n, dtype=bool)
    covered[starts] = True
    covered[np.minimum(starts + 1, n - 1)] = True
    # a span words[i:j] followed by itself, with a word in it
    spans = (lcp >= ar[None, :] - ar[:, None]) & (words_before[ar][None, :] > words_before[ar][:, None])
    i, j = np.nonzero(np.triu(spans, k=1))
    tandem = int((j - i).max()) if len(i) else 0
    return {"repeat_share": float(covered.mean()), "longest_repeat": float(longest), "tandem_repeat": float(tandem),
            "repeated_words": float(repeated_words)}


def _in_long_run(codes: np.ndarray, length: int) -> np.ndarray:
    """Mask of the positions inside a run of `length` or more equal codes in a row."""
    starts = np.r_[True, codes[1:] != codes[:-1]]
    run_id = np.cumsum(starts) - 1
    return np.bincount(run_id)[run_id] >= length


def _bare(word: str) -> str:
    """Case-folded word without leading/trailing punctuation (unchanged if nothing else is left)."""
    start, end = 0, len(word)
    while start < end and unicodedata.category(word[start])[0] == "P":
        start += 1
    while end > start and unicodedata.category(word[end - 1])[0] == "P":
        end -= 1
    return (word[start:end] or word).casefold()


def length_ratio(n_tgt_words: int, n_src_words: int) -> float:
    """Target words per source word (NaN for an empty source)."""
    return n_tgt_words / n_src_words if n_src_words else float("nan")


def reference_scores(hypothesis: str, reference: str) -> dict[str, float]:
    """Sentence chrF and BLEU (sacrebleu defaults; BLEU with exp smoothing and effective order)."""
    import sacrebleu

    return {
        "chrf": float(sacrebleu.sentence_chrf(hypothesis, [reference]).score),
        "bleu": float(sacrebleu.sentence_bleu(hypothesis, [reference]).score),
    }


ALIGNER_SIGNALS = ("unaligned_target", "unaligned_source")  # `aligner_signals`: rows hold them only with an aligner


def aligner_signals(matrix: np.ndarray, src_words: Sequence[str], tgt_words: Sequence[str],
                    function_words: Iterable[str] | None = None) -> dict[str, Any]:
    """Signals from a learned aligner's [target words, source words + 1] matrix (`learned.LearnedAligner.
    word_matrices`; last column: the mass on no source word). ``unaligned_target``: that mass, averaged over the
    target's content words (words with no source: an addition, a detached translation). ``unaligned_source``: the
    share of the source's content words that are no target word's most likely source word (an omission); NaN
    when the side has no content word. The reasons name the words: ``unaligned_source_words`` (those source
    content words) and ``unaligned_target_words`` (target content words whose most likely source is none)."""
    m = _as_float(matrix)
    if m.shape != (len(tgt_words), len(src_words) + 1):
        raise ValueError(f"aligner matrix shape {m.shape} does not match {len(tgt_words)} target x "
                         f"{len(src_words)} source words + 1")
    tgt_content, src_content = content_mask(tgt_words, function_words), content_mask(src_words, function_words)
    choice = m.argmax(axis=1)
    linked = np.zeros(len(src_words) + 1, dtype=bool)
    linked[choice] = True
    unlinked = ~linked[:-1] & src_content
    return {
        "unaligned_target": float(m[tgt_content, -1].mean()) if tgt_content.any() else float("nan"),
        "unaligned_source": float(unlinked.sum() / src_content.sum()) if src_content.any() else float("nan"),
        "unaligned_source_words": [src_words[i] for i in np.flatnonzero(unlinked)],
        "unaligned_target_words": [tgt_words[j] for j in np.flatnonzero(tgt_content & (choice == len(src_words)))],
    }


def word_signals(
    word_att: np.ndarray,
    src_words: Sequence[str],
    tgt_words: Sequence[str],
    *,
    entropy_threshold: float | None = None,
    coverage_low: float | None = None,
    coverage_high: float | None = None,
    function_words: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Signals from the pooled word matrix [n_tgt, n_src] alone (no Record needed)."""
    w = _as_float(word_att)
    if w.shape != (len(tgt_words), len(src_words)):
        raise ValueError(f"word matrix shape {w.shape} does not match {len(tgt_words)} target x {len(src_words)} source words")
    ent = normalised_entropy(w)
    rel = relative_coverage(w)
    content = content_mask(src_words, function_words)
    out: dict[str, Any] = {
        "entropy_mean": float(np.nanmean(ent)) if ent.size and not np.isnan(ent).all() else float("nan"),
        "entropy_max": float(np.nanmax(ent)) if ent.size and not np.isnan(ent).all() else float("nan"),
        "coverage_min": float(rel[content].min()) if content.any() else float("nan"),
        "coverage_max": float(rel[content].max()) if content.any() else float("nan"),
        "length_ratio": length_ratio(len(tgt_words), len(src_words)),
        "word_entropy": [round(float(x), 5) for x in ent],
        "src_coverage": [round(float(x), 5) for x in rel],
        "src_content": [bool(x) for x in content],
    }
    out.update(repetition_stats(tgt_words, function_words))
    out.update(threshold_signals(out, src_words, entropy_threshold, coverage_low, coverage_high))
    return out


def threshold_signals(
    sig: dict[str, Any],
    src_words: Sequence[str],
    entropy_threshold: float | None,
    coverage_low: float | None,
    coverage_high: float | None,
) -> dict[str, Any]:
    """Signals that need token-level thresholds, computed from the stored per-word lists:
    ``scattered_share``, ``omission_share`` / ``omission_suspects`` and
    ``overattended_share`` / ``repetition_suspects``. A missing threshold gives NaN / []."""
    ent = np.asarray(sig["word_entropy"], dtype=np.float64)
    rel = np.asarray(sig["src_coverage"], dtype=np.float64)
    content = np.asarray(sig["src_content"], dtype=bool)
    omitted, repeated = coverage_suspects(rel, content, coverage_low, coverage_high)
    n_content = int(content.sum())
    return {
        "scattered_share": scattered_share(ent, entropy_threshold) if entropy_threshold is not None else float("nan"),
        "omission_share": len(omitted) / n_content if coverage_low is not None and n_content else float("nan"),
        "overattended_share": len(repeated) / n_content if coverage_high is not None and n_content else float("nan"),
        "omission_suspects": [src_words[i] for i in omitted],
        "repetition_suspects": [src_words[i] for i in repeated],
    }


def record_signals(
    rec: Any,
    layer: int | str = "mean",
    head: int | str = "mean",
    method: str = "shift-att",
    *,
    reference: str | None = None,
    entropy_threshold: float | None = None,
    coverage_low: float | None = None,
    coverage_high: float | None = None,
    function_words: Iterable[str] | None = None,
    k_lowest: int = 3,
) -> dict[str, Any]:
    """Every signal for one Record (needs `rec.cross`). Scalars are floats (NaN = undefined);
    per-token lists (`word_entropy`, `src_coverage`, `src_content`, `lowest_tokens`) are kept
    so thresholds can be applied later without the attention."""
    if rec.cross is None:
        raise ValueError("record_signals needs cross-attention: extract with keep including 'cross'")
    word_att = np.asarray(word_matrix(rec, method=method, layer=layer, head=head))
    tok_att = np.asarray(attention_matrix(rec, layer=layer, head=head, method=method))
    sig = word_signals(
        word_att, rec.src_words, rec.tgt_words, entropy_threshold=entropy_threshold,
        coverage_low=coverage_low, coverage_high=coverage_high, function_words=function_words,
    )
    src_ids = np.asarray(rec.src_word_ids)
    special = src_ids < 0
    punct_word = np.array([is_punctuation(w) for w in rec.src_words] + [False], dtype=bool)
    # punctuation: tokens of punctuation-only words, and punctuation tokens split off a word
    # ("Park." -> "▁Park", "."); specials are never punctuation (they are counted as sinks)
    punct = punct_word[np.where(special, len(rec.src_words), src_ids)] | np.array(
        [is_punctuation_token(t) for t in rec.src_tokens], dtype=bool)
    punct &= ~special
    sig["wass_to_unif"] = wass_to_unif(tok_att)
    sig["sink_special"], sig["sink_punct"] = sink_shares(tok_att, special, punct)
    pos = logprob_positions(rec.tgt_word_ids)
    sig["seq_logprob"] = seq_logprob(rec.token_logprobs, pos)
    lowest = lowest_tokens(rec.token_logprobs, rec.label_tokens, pos, k=k_lowest)
    sig["min_logprob"] = lowest[0]["logprob"] if lowest else float("nan")
    sig["lowest_tokens"] = lowest
    if reference is not None:
        sig.update(reference_scores(rec.target, reference))
    return sig
