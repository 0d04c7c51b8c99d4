"""A learned, label-free combination of triage signals (issue 16).

Fisher's method gives every signal family the same weight, so many weak attention signals can
drown a strong one. Here the weights are learned from the calibration set itself, without labels:

1. **Synthetic errors** (`make_variants`): from the calibration rows that say no span twice in a row and no
   content word twice (`reliable_clean`: such a row is a repetition error, by the variants' own definition or as
   most labelled real ones are, so it is neither a base nor a clean row of the fit; it stays in the features'
   and type scores' reference), *detached* variants (for a third of them another row's translation, for a
   third *partly_detached*: the row's first 20-50% of words, then another row's translation from the same place
   on, `detach_part`, and for a third *appended*: the row's whole translation, then another row's from a place
   in its first half on, `append_other`; each a kind of its own, reported as detached: a wholly foreign
   translation is far out on every likelihood signal, one that starts on its source much nearer the clean rows,
   and one that goes on past its source is too long for it), *omission* variants (a
   contiguous third of the words removed) and *repetition* variants (a span of one to four words said twice: for
   half of them right after itself, for the other half (two to four words) further on, *distant_repetition*,
   fitted as a kind of its own and reported as repetition, `KINDS`). Sentence-final punctuation is taken off
   before an edit and put back after, so no edit shows as a missing or doubled full stop.
   Their signals come from forcing them through the model (`forced_signal_rows`); they are used
   for fitting only and never shown as rows.
2. **Features** (`Combiner.features`): each signal's value as a *suspect z-score*: its mid-rank
   percentile among the clean calibration values, turned to the suspect side and mapped through
   the normal quantile function (0 = the calibration median, 2 ≈ more suspect than 97.7 % of it).
   Beyond the calibration range the score keeps growing linearly in units of the reference's
   robust spread (IQR/1.349), so outliers are not all tied; it is capped at ±10. A two-sided signal
   (length ratio) gives two features, its low side and its high side. Undefined values are 0.
3. **One logistic regression per error kind** (`fit`), clean calibration rows (label 0) against
   that type's variants (label 1), the two classes weighted equally; L2-regularised (on the weights,
   none on the intercept) with a fixed strength, `FIT_L2` (`fit_with_model`). Cross-validation on the
   synthetic errors (`choose_l2`, `l2=None`; a variant shares the fold of the row it was made from) picks
   weak strengths (1e-4 to 1e-2 of `L2_GRID`), since synthetic errors separate almost perfectly, and its
   weights then fit how the variants were made: README's benchmarks, synthetic and labelled, both
   rank better with the fixed strength, and its fits hardly move with the draw of the variants. A kind
   whose variants are spliced inside a sentence leaves out the lowest token
   log-prob (`SPLICE_BLIND`): it finds the splice's junction, which errors a decoder makes do not have.
   Weights are **non-negative**: every feature
   is already oriented towards "suspect", so a signal can only raise a score, and one that does
   not help gets weight 0 rather than a sign that fits an artefact of the synthetic errors. Solved
   with scipy's L-BFGS-B (bounds) on the exact gradient; scikit-learn is not needed (and has no
   non-negativity constraint).
4. **Error rates** (`error_rates`, VERSION 10): how many of the calibration rows seem to hold each kind of
   error. The fitted log-odds of a kind are a likelihood ratio, error of that kind against clean; with those
   held fixed, the shares of a mixture of clean rows and the kinds are estimated on all the calibration rows by
   expectation-maximisation, with a small Dirichlet prior (`PRIOR_SHARE`) so that no kind's rate is 0.
5. **Score** (`Combiner.logit`): the log-odds that a row holds any of the errors at those rates (log of the
   sum over kinds of rate x likelihood ratio, over the clean rate). Each error type's own score
   (`Verdict.type_scores`) is the same sum over its kinds alone, and the verdict is the type with the largest.
   Why the rates: a set's errors are not spread evenly over the types (a weak system repeats itself in most of
   its sentences, a good one hardly ever), and with every type at the same odds a type that is rare in the set
   fills the top of the ranking with its false alarms. README's labelled errors (Europarl, own translations):
   the repetitions ranked 0.90 by version 9's largest type score and 0.95 with the rates.
   Calibrations saved before VERSION 10 keep ranking as they did: "blend" (VERSION 3-9: the largest over the
   kinds of the mean of a kind's log-odds and of their z-score among the clean rows' own, `continuous_z`) or
   "max" (before VERSION 3: the largest log-odds). `Combiner.clean_z` (z-scores alone) stays for comparison.

`fit_with_model` forces 50 variants per error type by default: on that benchmark 50, 100 and all
(248) gave learned AUCs within 0.012 of each other, and the forced passes are most of the fit's cost
(bench/bench_triage.py measures it; README gives the figures).

`Combiner.to_dict` / `from_dict` round-trip through JSON (weights, intercepts, the reference
quantiles of every signal used).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, special

from . import triage
from .signals import is_punctuation
from .triage import apply_token_thresholds, roc_auc, triage_row

ERROR_TYPES = ("detached", "omission", "repetition")
# the kinds of synthetic error a combination is fitted on, one model each, and the error type each one is:
# a span repeated right after itself and one repeated further on look alike to no single linear model (one
# shows in the tandem-repeat signal, the other only in the longest repeat, noisier on clean text), so each
# gets its own and the larger of the two speaks for repetition; likewise a wholly foreign translation (far out
# on every likelihood signal) and one that leaves its source partway (much nearer the clean rows: fitted with
# the wholly foreign ones, its model's weights follow the easy cases, README's benchmark), and one that
# translates its source and then goes on with unrelated words (too long for its source, fluent up to the
# seam: neither of the other two shows it, README's labelled references)
KINDS = {"detached": "detached", "partly_detached": "detached", "appended": "detached", "omission": "omission",
         "repetition": "repetition", "distant_repetition": "repetition"}
# derived from per-word lists with token thresholds (NaN in raw signal rows), and needing a reference
SKIP = ("scattered_share", "omission_share", "overattended_share")
# signals a kind's fit leaves out, because they find how its variants were made rather than the error. A
# variant spliced inside a sentence (a span cut out or said again, a translation that drifts into another's)
# has a junction the model finds improbable, and the lowest token log-prob finds exactly that junction; an
# error a decoder makes is fluent there. On the embedded model's own translations it ranks spliced omissions
# and repetitions 0.96-0.98 (README's synthetic benchmark) but labelled real ones 0.67-0.74; left out, the
# combination ranks the labelled real repetitions of two held-out sets 0.05-0.10 higher, omissions as high or
# higher (README). A wholly foreign translation has no junction and keeps it.
SPLICE_BLIND: dict[str, tuple[str, ...]] = {k: ("min_logprob",) for k in
                                            ("partly_detached", "appended", "omission", "repetition",
                                             "distant_repetition")}
# how `make_variants` makes detached variants: "alternate" deals the rows in turn to the three ways
DETACHED_WAYS = ("alternate", "full", "part", "append")
Z_CAP = 10.0
MAX_SAMPLES = 1001
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
# the L2 strength of the fits triage makes. Chosen on README's labelled own translations (three draws of the
# variants each: 0.1-0.3 rank alike; 0.01 and below, where cross-validation lands, rank lower, and with
# cross-validated strengths a label's AUC has a standard deviation of up to 0.05 across draws); on the synthetic
# benchmark, held out from that choice, it also ranks higher than the cross-validated strengths
FIT_L2 = 0.2
# the smallest share of the calibration rows `reliable_clean` keeps when it leaves out rows that say a content
# word again: a fit on fewer would stand on the few short rows of a set of long sentences
MIN_RELIABLE_SHARE = 0.25
# the prior of `error_rates`: pseudo-rows, as a share of the rows, spread evenly over the kinds, so that no kind's
# rate falls to 0 (a rate of 0 would leave that kind's errors unranked, whatever their log-odds)
PRIOR_SHARE = 0.05
VERSION = 10


def signal_catalogue() -> dict[str, tuple[str, str]]:
    """Every known signal: name -> (suspect direction 'high'/'low'/'both', label)."""
    from .signals import SIGNALS

    return {s.name: (s.direction, s.label) for s in SIGNALS.values()}


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool) and math.isfinite(float(x))


# --------------------------------------------------------------------------- synthetic errors

def split_final_punct(text: str) -> tuple[list[str], str]:
    """Words of `text` without its trailing punctuation, and that punctuation with the space before
    it (" ." in tokenized text, "." in plain text), so that `join_words` gives back the same spelling."""
    text = text.strip()
    end = len(text)
    while end > 0 and unicodedata.category(text[end - 1])[0] == "P":
        end -= 1
    body = text[:end].rstrip()
    return body.split(), text[len(body):]


def join_words(words: list[str], punct: str) -> str:
    return " ".join(words) + punct if words else punct.strip()


def omit_span(text: str, rng: np.random.Generator) -> str | None:
    """`text` with a contiguous ceil(n/3) of its n words removed (None when n < 3)."""
    words, punct = split_final_punct(text)
    n = len(words)
    if n < 3:
        return None
    length = math.ceil(n / 3)
    start = int(rng.integers(0, n - length + 1))
    return join_words(words[:start] + words[start + length:], punct)


def repeat_span(text: str, rng: np.random.Generator, distant: bool = False) -> str | None:
    """`text` with a span of 1 to 4 of its words said again, a span that holds more than punctuation (None
    when it has no such word): a doubled ")" is no repetition error. The copy comes right after the span,
    or with `distant` at a random place elsewhere, neither inside it nor touching it (right after it when
    the sentence has no such place); a distant span has two words or more (one word said again further on is
    ordinary text: "the", "of"), unless the sentence has only one."""
    words, punct = split_final_punct(text)
    n = len(words)
    if not any(not is_punctuation(w) for w in words):
        return None
    length = int(rng.integers(2 if distant and n >= 2 else 1, min(4, n) + 1))
    starts = [s for s in range(n - length + 1) if not all(is_punctuation(w) for w in words[s:s + length])]
    start = starts[int(rng.integers(0, len(starts)))]
    at = start + length
    if distant:
        elsewhere = [p for p in range(n + 1) if p < start or p > start + length]
        if elsewhere:
            at = elsewhere[int(rng.integers(0, len(elsewhere)))]
    return join_words(words[:at] + words[start:start + length] + words[at:], punct)


def detach_part(text: str, other: str, rng: np.random.Generator) -> str | None:
    """`text` drifting off into `other`: the first 20-50% of its words, then `other` from the same relative
    place on, so that half or more of the result is unrelated to the source (a *strongly detached*
    hallucination, where a translation starts on the source and leaves it). None when either has < 2 words."""
    words, punct = split_final_punct(text)
    tail, tail_punct = split_final_punct(other)
    if len(words) < 2 or len(tail) < 2:
        return None
    frac = float(rng.uniform(0.2, 0.5))
    keep = min(max(1, int(round(len(words) * frac))), len(tail))
    start = min(int(round(len(tail) * frac)), len(tail) - keep)  # the unrelated rest is never the shorter part
    return join_words(words[:keep] + tail[start:], tail_punct or punct)


def append_other(text: str, other: str, rng: np.random.Generator) -> str | None:
    """`text` in full, then `other` from a random place in its first half on: a translation that covers its
    source and goes on with words unrelated to it (an addition; a *strongly detached* hallucination when the
    rest is long). `text` keeps its final punctuation, the result ends with `other`'s. None when `text` has no
    word or `other` fewer than 2."""
    words, punct = split_final_punct(text)
    tail, tail_punct = split_final_punct(other)
    if not words or len(tail) < 2:
        return None
    start = int(rng.integers(0, len(tail) // 2))
    return join_words(words + punct.split() + tail[start:], tail_punct or punct)


def make_variants(rows: Sequence[Mapping[str, Any]], seed: int = 0, max_per_type: int | None = None,
                  repetition: str = "alternate", detached: str = "alternate") -> dict[str, list[dict[str, Any]]]:
    """Synthetic errors of every kind (`KINDS`) from rows holding "source" and "translation" (and maybe
    "reference"): per kind a list of {"base": index of the row, "source", "translation"[, "reference"]}.

    *detached* / *partly_detached* / *appended*: the translation of another row with a different text (a random
    derangement) / the row's own first words drifting off into it (`detach_part`) / the row's own translation
    going on into it (`append_other`), for the rows in turn (`detached` "alternate"), or every row's in full
    ("full"), in part ("part") or appended ("append"); the partial and appended ones draw from streams of their
    own, so the other kinds' variants do not depend on `detached`;
    *omission*: a contiguous ceil(n/3) of the n words removed (rows of 3+ words);
    *repetition* / *distant_repetition*: a span of 1-4 words said again right after itself / of 2-4 further on,
    for the rows in turn (`repetition` "alternate": repetition costs no more forced passes than another
    type), or every row's right after itself ("adjacent") or further on ("distant").
    `max_per_type` keeps a random subset of the rows.
    """
    if repetition not in ("alternate", "adjacent", "distant"):
        raise ValueError(f"repetition must be 'alternate', 'adjacent' or 'distant', not {repetition!r}")
    if detached not in DETACHED_WAYS:
        raise ValueError(f"detached must be 'alternate' or one of {DETACHED_WAYS[1:]}, not {detached!r}")
    rng = np.random.default_rng(seed)
    n = len(rows)
    base = np.arange(n)
    if max_per_type is not None and n > max_per_type:
        base = np.sort(rng.choice(n, size=max_per_type, replace=False))
    texts = [str(r.get("translation", "")) for r in rows]

    def variant(i: int, translation: str) -> dict[str, Any]:
        v = {"base": int(i), "source": rows[i]["source"], "translation": translation}
        if rows[i].get("reference") is not None:
            v["reference"] = rows[i]["reference"]
        return v

    out: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    if n >= 2:
        shift = rng.permutation(n)
        # streams of their own: the other kinds' draws stay as they were
        part_rng, append_rng = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
        for k, i in enumerate(base):
            # the next row in a random cycle whose text differs (a cycle has no fixed point)
            pos = int(np.flatnonzero(shift == i)[0])
            for step in range(1, n):
                j = int(shift[(pos + step) % n])
                if texts[j] != texts[i] and texts[j].strip():
                    way = DETACHED_WAYS[1 + k % 3] if detached == "alternate" else detached
                    if way == "full":
                        out["detached"].append(variant(i, texts[j]))
                    elif way == "part" and (t := detach_part(texts[i], texts[j], part_rng)) is not None:
                        out["partly_detached"].append(variant(i, t))
                    elif way == "append" and (t := append_other(texts[i], texts[j], append_rng)) is not None:
                        out["appended"].append(variant(i, t))
                    break
    for k, i in enumerate(base):
        if (t := omit_span(texts[i], rng)) is not None:
            out["omission"].append(variant(i, t))
        distant = repetition == "distant" or (repetition == "alternate" and k % 2 == 1)
        if (t := repeat_span(texts[i], rng, distant=distant)) is not None:
            out["distant_repetition" if distant else "repetition"].append(variant(i, t))
    return out


def forced_signal_rows(bundle: Any, items: Sequence[Mapping[str, Any]], *, alti: bool = True, prior: bool = True,
                       batch_size: int = 16, layer: int | str = "mean", head: int | str = "mean",
                       method: str = "shift-att", aligner: Any = None) -> list[dict[str, Any]]:
    """Signal rows (as `rows.signal_row` makes them) of items holding "source", "translation"
    and maybe "reference", forced through the model, in input order. With `alti` every row also gets
    "alti_source", the mean ALTI+ source contribution, traced in the very same forward pass
    (`alti.traced_records`); with `prior` "source_gain", from one more pass with an empty source; with a
    learned `aligner` for the model, its signals from the same pass (`signals.aligner_signals`)."""
    from .alti import supports, traced_records
    from .extract import iter_extract
    from .rows import signal_reducer, signal_row
    from .source_gain import prior_seq_logprobs_of

    sources = [it["source"] for it in items]
    targets = [it["translation"] for it in items]
    refs = [it.get("reference") for it in items]
    references = refs if refs and all(r is not None for r in refs) else None
    reduce, read_layer = signal_reducer(layer), 0  # the reducer keeps one layer (or the mean): read layer 0
    priors = prior_seq_logprobs_of(bundle, sources, targets, batch_size) if prior else None
    records = iter_extract(bundle, sources, targets, batch_size=batch_size, keep=("cross",), reduce=reduce,
                           aligner=aligner)
    rows: list[dict[str, Any] | None] = [None] * len(items)
    for i, rec in (traced_records(bundle.model, records) if alti and supports(bundle.model) else records):
        if priors is not None:
            rec.meta["seq_logprob_prior"] = float(priors[i])
        rows[i] = signal_row(rec, i, sources[i], None if references is None else references[i],
                             layer=read_layer, head=head, method=method)
    return rows  # type: ignore[return-value]


def add_alti(bundle: Any, rows: Sequence[dict[str, Any]], batch_size: int = 16) -> None:
    """Set "alti_source" (mean ALTI+ source contribution) on every row, from its source and translation."""
    from .alti import source_contribution

    results = source_contribution(bundle, [(r["source"], r["translation"]) for r in rows], batch_size=batch_size)
    for r, res in zip(rows, results):
        r["alti_source"] = res.sentence_score


# --------------------------------------------------------------------------- features

def suspect_z(values: np.ndarray, ref: np.ndarray, scale: float) -> np.ndarray:
    """Upper-side z-score of `values` against the sorted reference `ref` (see the module docstring):
    probit of the mid-rank percentile, extended linearly beyond the range, capped at ±Z_CAP; NaN -> 0."""
    v = np.asarray(values, dtype=np.float64)
    n = len(ref)
    below = np.searchsorted(ref, v, side="left")
    upto = np.searchsorted(ref, v, side="right")
    p = (below + 0.5 * (upto - below) + 0.5) / (n + 1)
    return _extend(special.ndtri(p), v, ref, scale, (n + 0.5) / (n + 1), 0.5 / (n + 1))


def _extend(z: np.ndarray, v: np.ndarray, ref: np.ndarray, scale: float, p_hi: float, p_lo: float) -> np.ndarray:
    """z beyond the reference's range: linear from the end percentiles `p_hi`/`p_lo` in units of `scale`;
    capped at ±Z_CAP; NaN values -> 0."""
    z = np.where(v > ref[-1], special.ndtri(p_hi) + (v - ref[-1]) / scale, z)
    z = np.where(v < ref[0], special.ndtri(p_lo) - (ref[0] - v) / scale, z)
    return np.where(np.isfinite(v), np.clip(z, -Z_CAP, Z_CAP), 0.0)


def continuous_z(values: np.ndarray, ref: np.ndarray, scale: float) -> np.ndarray:
    """Like `suspect_z`, but continuous in `values`: the percentile is interpolated linearly between the
    sorted reference values (k-th at (k+1)/(n+1)), so a value scored against a reference that holds it
    (a row of the calibration set itself) does not jump with float noise."""
    v = np.asarray(values, dtype=np.float64)
    n = len(ref)
    p = np.interp(v, ref, (np.arange(n) + 1.0) / (n + 1))
    return _extend(special.ndtri(p), v, ref, scale, n / (n + 1), 1 / (n + 1))


def feature_names(signals: Sequence[str], directions: Mapping[str, str]) -> list[str]:
    """One feature per signal ("name"), two for a two-sided one ("name:low", "name:high")."""
    out = []
    for s in signals:
        out += [f"{s}:low", f"{s}:high"] if directions[s] == "both" else [s]
    return out


# --------------------------------------------------------------------------- the model

@dataclass
class Verdict:
    """One row's learned verdict: the ranking score, the reasons in words (the verdict first), the error type
    (`ERROR_TYPES`) it is most like (the largest of its type scores), each error type's own score (from the
    type scores of its kinds, on the scale of the ranking score: in a mixture the log-odds of that type's
    errors, the ranking score the log-odds of any), and the probability the verdict's words give."""

    score: float
    reasons: list[str]
    error_type: str
    type_scores: dict[str, float]
    # that the row holds an error: in a mixture at the calibration rows' error rates, else its verdict's kind
    # at even odds against a clean row
    probability: float


@dataclass
class Combiner:
    """Fitted weights of the learned combination; JSON round-trips with `to_dict` / `from_dict`."""

    signals: list[str]
    directions: dict[str, str]
    samples: dict[str, list[float]]  # signal -> sorted clean reference values (or their quantiles)
    weights: dict[str, dict[str, float]]  # error type -> feature -> weight (>= 0)
    intercepts: dict[str, float]
    l2: dict[str, float]  # error type -> the L2 strength its fit used (FIT_L2 in triage; cross-validated with l2=None)
    n_fit: dict[str, dict[str, int]]  # error type -> {"clean": n, "errors": n}
    train_auc: dict[str, float] = field(default_factory=dict)  # on the fitting rows themselves
    clean_logits: dict[str, list[float]] = field(default_factory=dict)  # error type -> sorted log-odds of the clean rows
    cv_loss: dict[str, dict[str, float]] = field(default_factory=dict)  # error type -> L2 -> out-of-fold log-loss
    # "clean" and each kind -> its share of the reference rows (`error_rates`); empty before VERSION 10
    rates: dict[str, float] = field(default_factory=dict)
    # how the kinds make one score: "mixture" (new fits: the log-odds of any error at the calibration rows' own
    # error rates), "blend" (VERSION 3-9: the largest blended type score) or "max" (the largest log-odds;
    # calibrations saved before VERSION 3 have no such key and keep ranking that way)
    ranking: str = "max"
    version: int = VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Combiner":
        missing = {"signals", "directions", "samples", "weights", "intercepts"} - set(data)
        if missing:
            raise ValueError(f"not a learned combination: it lacks {sorted(missing)}")
        return cls(**{k: data[k] for k in data if k in cls.__dataclass_fields__})

    @property
    def features_order(self) -> list[str]:
        return feature_names(self.signals, self.directions)

    def _cached_refs(self, key: str, source: Mapping[str, list[float]]) -> dict[str, tuple[np.ndarray, float]]:
        """name -> (sorted reference values, their tail scale), built once per combiner: rows are scored one
        at a time when a ranked file is streamed."""
        cache = self.__dict__.get(key)
        if cache is None:
            cache = {}
            for name, values in source.items():
                ref = np.asarray(values, dtype=np.float64)
                cache[name] = (ref, triage.tail_scale(ref))
            self.__dict__[key] = cache  # not a dataclass field: never serialised
        return cache

    def _refs(self) -> dict[str, tuple[np.ndarray, float]]:
        """Signal -> its clean calibration values and their tail scale."""
        return self._cached_refs("_ref_cache", self.samples)

    def _logit_refs(self) -> dict[str, tuple[np.ndarray, float]]:
        """Error kind -> the clean rows' own sorted log-odds and their tail scale."""
        return self._cached_refs("_logit_ref_cache", self.clean_logits)

    def features(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """[n_rows, n_features] suspect z-scores, in `features_order`."""
        refs = self._refs()
        cols = []
        for s in self.signals:
            v = np.array([float(r[s]) if _finite(r.get(s)) else np.nan for r in rows], dtype=np.float64)
            ref, scale = refs[s]
            z = suspect_z(v, ref, scale)
            d = self.directions[s]
            if d == "both":
                cols += [-z, z]
            else:
                cols.append(z if d == "high" else -z)
        return np.stack(cols, axis=1) if cols else np.zeros((len(rows), 0))

    def logits(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Error type -> log-odds per row (error of that type vs clean, at even odds)."""
        return self._logits(self.features(rows))

    def _logits(self, x: np.ndarray) -> dict[str, np.ndarray]:
        order = self.features_order
        return {k: x @ np.array([w.get(f, 0.0) for f in order]) + self.intercepts[k] for k, w in self.weights.items()}

    def probabilities(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        return {k: special.expit(v) for k, v in self.logits(rows).items()}

    def _type_scores(self, lg: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.ranking == "mixture":
            clean = math.log(self.rates["clean"])
            return {k: v + math.log(self.rates[k]) - clean for k, v in lg.items()}
        if self.ranking == "max":
            return dict(lg)
        refs = self._logit_refs()
        return {k: 0.5 * v + 0.5 * continuous_z(v, *refs[k]) for k, v in lg.items()}

    def type_scores(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Kind -> the score that kind gives each row. "mixture": the log-odds that the row is an error of that
        kind rather than clean, at the error rates of the calibration rows (`rates`): its fitted log-odds (at
        even odds) plus the log of its rate over the clean rows'. "blend": the mean of its log-odds and of
        those log-odds as a z-score among the clean rows' own (`continuous_z`); "max": the log-odds."""
        return self._type_scores(self.logits(rows))

    def _combined(self, scores: Sequence[np.ndarray]) -> np.ndarray:
        """One score from several kinds' type scores: the log-odds of any of them (their log-sum-exp) in a
        mixture, else the largest."""
        stacked = np.stack(list(scores))
        return special.logsumexp(stacked, axis=0) if self.ranking == "mixture" else np.max(stacked, axis=0)

    def _by_error_type(self, sc: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Error type (`KINDS`) -> its score, from its kinds' type scores (`_combined`)."""
        of = {kind: KINDS.get(kind, kind) for kind in sc}
        return {t: self._combined([sc[k] for k in sc if of[k] == t]) for t in dict.fromkeys(of.values())}

    def error_type_scores(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Error type -> its own score per row (what `Verdict.type_scores` holds), without the reasons in words."""
        return self._by_error_type(self.type_scores(rows))

    def logit(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The ranking score per row: in a mixture the log-odds that the row holds any of the fitted errors
        (`_combined` over all kinds), else the largest type score."""
        sc = self.type_scores(rows)
        return self._combined([sc[k] for k in self.weights])

    def with_rates_of(self, rows: Sequence[Mapping[str, Any]], prior_share: float = PRIOR_SHARE) -> "Combiner":
        """A copy whose error rates are estimated on `rows` (`error_rates`) instead of the calibration rows."""
        lg = self.logits(rows)
        rates = rates_of({k: lg[k] for k in self.weights}, prior_share)
        return Combiner.from_dict({**self.to_dict(), "rates": rates, "ranking": "mixture"})

    def clean_z(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """An alternative ranking score: each type's log-odds as a suspect z-score among the clean
        rows' own log-odds (so every type has the same false-alarm tail), largest over the types."""
        lg, refs = self.logits(rows), self._logit_refs()
        return np.max(np.stack([suspect_z(lg[k], *refs[k]) for k in self.weights]), axis=0)

    def score(self, row: Mapping[str, Any]) -> tuple[float, str]:
        """(error probability, error type) of one row: its verdict's (`Verdict.probability`, `error_type`)."""
        v = self.verdicts([row], k=0)[0]
        return v.probability, v.error_type

    def verdicts(self, rows: Sequence[Mapping[str, Any]], k: int = 3) -> list[Verdict]:
        """The `Verdict` of every row, from one pass over the features: the score is `logit`'s, the verdict
        the error type with the largest score (`error_type_scores`), the words `reasons` for the kind of that
        type with the largest type score."""
        if not rows:
            return []
        x = self.features(rows)
        kinds = list(self.weights)
        lg = self._logits(x)
        sc = self._type_scores(lg)
        stacked = np.stack([sc[t] for t in kinds])
        overall = self._combined(stacked)
        by_type = self._by_error_type(sc)
        types = list(by_type)
        verdict = np.stack([by_type[t] for t in types]).argmax(axis=0)
        # the verdict's kind: the one of the verdict's type with the largest type score
        of_type = np.array([[KINDS.get(k, k) == t for k in kinds] for t in types])
        best = np.where(of_type[verdict].T, stacked, -np.inf).argmax(axis=0)
        out = []
        for i, row in enumerate(rows):
            kind = kinds[best[i]]
            even = float(special.expit(lg[kind][i]))
            prob = float(special.expit(overall[i])) if self.ranking == "mixture" else even
            out.append(Verdict(float(overall[i]), self._reasons(row, x[i], kind, even, prob, k), KINDS.get(kind, kind),
                               {t: float(v[i]) for t, v in by_type.items()}, prob))
        return out

    def reasons(self, row: Mapping[str, Any], k: int = 3) -> list[str]:
        """The verdict in words: the most likely error type and the (up to `k`) signals that pushed it
        most, among those more suspect than about 84 % of the calibration rows (z > 1)."""
        return self.verdicts([row], k)[0].reasons

    def _reasons(self, row: Mapping[str, Any], x: np.ndarray, kind: str, even: float, prob: float,
                 k: int) -> list[str]:
        """The verdict in words (`even`: its kind's probability at even odds; `prob`: in a mixture, that the row
        holds any error at the calibration rows' rates), then the signals that pushed it most."""
        cat = signal_catalogue()
        order = self.features_order
        w = np.array([self.weights[kind].get(f, 0.0) for f in order])
        push = w * x
        error = KINDS.get(kind, kind)
        article = "an" if error[0] in "aeiou" else "a"
        how = {"distant_repetition": " (a span said again further on)",
               "partly_detached": " (it leaves the source partway)",
               "appended": " (it goes on past its source)"}.get(kind, "")
        rates = (f"; {prob:.2f} that it holds an error at the calibration rows' error rates "
                 f"({100 * (1 - self.rates['clean']):.0f}% of them errors)" if self.ranking == "mixture" else "")
        out = [f"most like {article} {error} error{how}: learned probability {even:.2f} (at even odds against a "
               f"clean row){rates}"]
        for i in np.argsort(-push)[:k]:
            if push[i] <= 0 or x[i] < 1.0:  # only signals beyond one standard deviation on the suspect side
                continue
            name, _, side = order[i].partition(":")
            side = side or self.directions[name]
            v = float(row[name])
            ref = self._refs()[name][0]
            share = float(np.mean(ref < v)) if side == "high" else float(np.mean(ref > v))
            word = "higher" if side == "high" else "lower"
            out.append(f"{cat.get(name, (None, name))[1]} {triage._fmt(v)} is {word} than {100 * share:.0f}% of the "
                       f"calibration rows (weight {w[i]:.2f})")
        return out


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Class-balanced, L2-regularised logistic regression with non-negative weights (L-BFGS-B)."""
    n, m = x.shape
    sw = np.where(y, 0.5 / max(1, y.sum()), 0.5 / max(1, (~y).sum()))  # each class weighs 1/2 in all
    t = y.astype(np.float64)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:m], theta[m]
        z = x @ w + b
        # log(1 + e^z) - t z, stable
        ell = np.logaddexp(0.0, z) - t * z
        g = sw * (special.expit(z) - t)
        val = float(sw @ ell) + 0.5 * l2 * float(w @ w)
        grad = np.r_[x.T @ g + l2 * w, g.sum()]
        return val, grad

    res = optimize.minimize(loss, np.zeros(m + 1), jac=True, method="L-BFGS-B",
                            bounds=[(0.0, None)] * m + [(None, None)])
    return res.x[:m], float(res.x[m])


def reference_samples(rows: Sequence[Mapping[str, Any]], signals: Sequence[str] | None = None,
                      max_samples: int = MAX_SAMPLES, min_share: float = 0.5) -> dict[str, list[float]]:
    """Sorted finite values (or `max_samples` quantiles) of every signal defined on at least
    `min_share` of the rows (default: every known signal but the threshold-dependent ones)."""
    names = [s for s in (signals or signal_catalogue()) if s not in SKIP]
    out = {}
    for s in names:
        v = np.sort([float(r[s]) for r in rows if _finite(r.get(s))])
        if len(v) < max(2, min_share * len(rows)):
            continue
        if len(v) > max_samples:
            v = np.quantile(v, np.linspace(0, 1, max_samples))
        out[s] = [float(a) for a in v]
    return out


def _balanced_log_loss(z: np.ndarray, y: np.ndarray) -> float:
    """Mean logistic loss of log-odds `z` for labels `y`, each class weighing one half."""
    ell = np.logaddexp(0.0, z) - y * z
    return float(0.5 * ell[y].mean() + 0.5 * ell[~y].mean())


def choose_l2(x_clean: np.ndarray, x_err: np.ndarray, err_groups: np.ndarray | None = None,
              grid: Sequence[float] = L2_GRID, folds: int = 5, seed: int = 0) -> tuple[float, dict[str, float]]:
    """The L2 strength of `grid` with the lowest class-balanced log-loss out of fold, and every strength's loss.

    Clean rows are dealt to `folds` folds at random; an error row goes to the fold of the clean row it was
    made from (`err_groups`: that row's index), so no fit scores a variant of a sentence it has seen. Too few
    rows for the folds: the middle of the grid. A type whose errors separate cleanly wants little shrinkage
    (its log-odds then spread as far as its evidence goes); a noisy one wants more."""
    n, m = len(x_clean), len(x_err)
    folds = min(folds, n, m)
    if folds < 2:
        return float(grid[len(grid) // 2]), {}
    rng = np.random.default_rng(seed)
    fold_clean = rng.permutation(n) % folds
    fold_err = fold_clean[np.asarray(err_groups)] if err_groups is not None else rng.permutation(m) % folds
    x = np.vstack([x_clean, x_err])
    y = np.r_[np.zeros(n, bool), np.ones(m, bool)]
    fold = np.r_[fold_clean, fold_err]
    losses = {}
    for l2 in grid:
        z = np.zeros(len(y))
        for f in range(folds):
            test = fold == f
            if y[~test].all() or not y[~test].any():
                continue  # a fold holding every row of one class: no fit without it
            w, b = _fit_logistic(x[~test], y[~test], l2)
            z[test] = x[test] @ w + b
        losses[f"{l2:g}"] = _balanced_log_loss(z, y)
    best = min(losses, key=losses.get)
    return float(best), losses


def error_rates(logits: np.ndarray, prior_share: float = PRIOR_SHARE, tol: float = 1e-9,
                max_iter: int = 1000) -> np.ndarray:
    """The shares of clean rows and of each kind's errors among rows whose log-odds of each kind against a clean
    row (at even odds) are `logits` [kinds, rows]: the weights of a mixture of the clean rows and the kinds,
    with each row's likelihood ratios held at exp(logits), by expectation-maximisation. A Dirichlet prior adds
    `prior_share` times the number of rows as pseudo-rows, spread evenly over the kinds (none to the clean
    rows), so every kind keeps a rate above 0. Returns [clean, kind 1, ...], summing to 1."""
    k, n = logits.shape
    log_lr = np.vstack([np.zeros(n), np.asarray(logits, dtype=np.float64)])
    prior = np.r_[0.0, np.full(k, prior_share * n / k)] if k else np.zeros(1)
    rates = np.full(k + 1, 1.0 / (k + 1))
    for _ in range(max_iter):
        posterior = special.softmax(log_lr + np.log(rates)[:, None], axis=0)  # P(component | row)
        counts = posterior.sum(axis=1) + prior
        new = counts / counts.sum()
        done = np.max(np.abs(new - rates)) < tol
        rates = new
        if done:
            break
    return rates


def rates_of(logits: Mapping[str, np.ndarray], prior_share: float = PRIOR_SHARE) -> dict[str, float]:
    """`error_rates` of kind -> log-odds per row, as "clean" and each kind -> its share."""
    shares = error_rates(np.stack(list(logits.values())), prior_share)
    return {"clean": float(shares[0]), **{kind: float(v) for kind, v in zip(logits, shares[1:])}}


def fit(clean_rows: Sequence[Mapping[str, Any]], variant_rows: Mapping[str, Sequence[Mapping[str, Any]]],
        l2: float | None = None, signals: Sequence[str] | None = None,
        groups: Mapping[str, Sequence[int]] | None = None, seed: int = 0,
        reference_rows: Sequence[Mapping[str, Any]] | None = None) -> Combiner:
    """Fit one logistic regression per error type in `variant_rows` (type -> signal rows of its
    synthetic errors) against `clean_rows` (signal rows).

    `reference_rows` (default `clean_rows`): the rows whose signal values the features are percentiles of,
    whose log-odds a blended type score's rarity was measured among (`clean_logits`) and whose error rates the
    ranking uses (`error_rates`, `rates`). `l2`: the regularisation
    strength; None (default) chooses it per error type by cross-validation over `L2_GRID` (`choose_l2`;
    `groups[type][j]` is the clean row variant j was made from). A kind's model leaves out the signals
    `SPLICE_BLIND` names for it (weight 0)."""
    if len(clean_rows) < 2:
        raise ValueError("cannot fit a combination on fewer than two clean rows")
    cat = signal_catalogue()
    reference_rows = clean_rows if reference_rows is None else reference_rows
    samples = reference_samples(reference_rows, signals)
    if not samples:
        raise ValueError("no signal is defined on the clean rows")
    chosen = list(samples)
    comb = Combiner(signals=chosen, directions={s: cat[s][0] for s in chosen}, samples=samples, weights={},
                    intercepts={}, l2={}, n_fit={}, ranking="mixture")
    x_all = comb.features(clean_rows)
    x_ref = x_all if reference_rows is clean_rows else comb.features(reference_rows)
    order = comb.features_order
    ref_logits: dict[str, np.ndarray] = {}  # kind -> the reference rows' log-odds, for their error rates
    for kind, rows in variant_rows.items():
        if not rows:
            continue
        # a left-out signal's columns are zero, so its weight stays 0 (L2 on a weight with no data gradient)
        used = np.array([f.split(":")[0] not in SPLICE_BLIND.get(kind, ()) for f in order], dtype=np.float64)
        x_clean, x_err = x_all * used, comb.features(rows) * used
        if l2 is None:
            strength, comb.cv_loss[kind] = choose_l2(x_clean, x_err, None if groups is None else groups.get(kind),
                                                     seed=seed)
        else:
            strength = float(l2)
        x = np.vstack([x_clean, x_err])
        y = np.r_[np.zeros(len(x_clean), bool), np.ones(len(x_err), bool)]
        w, b = _fit_logistic(x, y, strength)
        comb.l2[kind] = strength
        comb.weights[kind] = {f: float(v) for f, v in zip(order, w)}
        comb.intercepts[kind] = b
        comb.n_fit[kind] = {"clean": len(x_clean), "errors": len(x_err)}
        comb.train_auc[kind] = roc_auc(x @ w + b, y)
        ref_logits[kind] = (x_ref * used) @ w + b
        own = np.sort(ref_logits[kind])
        if len(own) > MAX_SAMPLES:
            own = np.quantile(own, np.linspace(0, 1, MAX_SAMPLES))
        comb.clean_logits[kind] = [float(v) for v in own]
    if not comb.weights:
        raise ValueError("no synthetic errors to fit on")
    comb.rates = rates_of(ref_logits)
    return comb


def _says_again(row: Mapping[str, Any], signal: str) -> bool:
    return _finite(row.get(signal)) and float(row[signal]) > 0


def reliable_clean(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows a fit takes as clean and makes its variants from: those that say no span twice in a row
    (`tandem_repeat` > 0, a repetition by the synthetic errors' own definition) and no content word twice
    (`repeated_words` > 0, what most labelled real repetitions are: one content word or phrase said again further
    on). Taken as clean, such rows teach the repetition kinds that a repeat is what clean rows do, and their
    weight moves to signals that find the splice instead (README: version 8, which leaves out both, ranks the
    labelled real repetitions and omissions of Europarl 0.03-0.04 higher than version 7, which left out the
    tandem repeats alone, and version 7 0.05-0.08 higher than version 6, which took every row).

    Content words are said again in many a correct long sentence, so when fewer than `MIN_RELIABLE_SHARE` of
    the rows are left, only the tandem repeats are left out; all rows when fewer than two would be left."""
    no_tandem = [r for r in rows if not _says_again(r, "tandem_repeat")]
    strict = [r for r in no_tandem if not _says_again(r, "repeated_words")]
    if len(strict) >= max(2.0, MIN_RELIABLE_SHARE * len(rows)):
        return strict
    return no_tandem if len(no_tandem) >= 2 else list(rows)


def fit_with_model(bundle: Any, clean_rows: Sequence[Mapping[str, Any]], *, seed: int = 0,
                   max_per_type: int | None = 50, l2: float | None = FIT_L2, alti: bool = True, batch_size: int = 16,
                   compute_rows: Callable[..., list[dict[str, Any]]] | None = None, **options: Any) -> Combiner:
    """Make synthetic variants of the rows of `clean_rows` that `reliable_clean` keeps, force them through the
    model for their signals (`compute_rows(bundle, items, alti=..., batch_size=..., **options)`, default
    `forced_signal_rows`) and `fit` against those rows, with every row of `clean_rows` as the features' and
    type scores' reference (a score says how unusual a row is among all the rows it was calibrated on). `l2`:
    the fits' strength (None: chosen per type by cross-validation, `choose_l2`). With `alti`, clean rows
    lacking "alti_source" get it first."""
    compute_rows = compute_rows or forced_signal_rows
    reference = list(clean_rows)
    if alti and any("alti_source" not in r for r in reference):
        add_alti(bundle, reference, batch_size=batch_size)  # type: ignore[arg-type]
    clean_rows = reliable_clean(reference)
    variants = make_variants(clean_rows, seed=seed, max_per_type=max_per_type)
    kinds = [k for k in KINDS if variants[k]]
    items = [v for k in kinds for v in variants[k]]
    rows = compute_rows(bundle, items, alti=alti, batch_size=batch_size, **options)
    by_kind, start = {}, 0
    for k in kinds:
        by_kind[k] = rows[start:start + len(variants[k])]
        start += len(variants[k])
    return fit(clean_rows, by_kind, l2=l2, groups={k: [v["base"] for v in variants[k]] for k in kinds}, seed=seed,
               reference_rows=reference)


def fisher_scores(rows: Sequence[Mapping[str, Any]], calibration: Any) -> np.ndarray:
    """Today's triage score (Fisher combination, `triage.triage_row`) of every row, for comparison."""
    return np.array([triage_row({**r, **apply_token_thresholds(dict(r), calibration)}, calibration)[0] for r in rows])


# --------------------------------------------------------------------------- scoring triage rows

def learned(calibration: Any) -> "Combiner | None":
    """The learned combination a `triage.Calibration` holds (cached on it), or None when it ranks by Fisher."""
    if calibration.combine != "learned":
        return None
    if calibration.combiner is None:
        raise ValueError("the calibration says combine 'learned' but holds no learned combination")
    hit = calibration.__dict__.get("_combiner")  # not a dataclass field: never serialised
    if hit is None or hit[0] is not calibration.combiner:
        hit = calibration.__dict__["_combiner"] = (calibration.combiner, Combiner.from_dict(calibration.combiner))
    return hit[1]


UNUSABLE = {"empty": "the model cannot take this sentence (empty)",
            "too_long_for_model": "the model cannot take this sentence (too long for its positions)",
            "undecodable": "the model was not given this sentence (a line of it could not be read as text)",
            "no_tokens": "the model cannot take this sentence (its tokenizer makes no token of it)"}


def row_score(row: dict[str, Any], calibration: triage.Calibration, rank_by: str | None = None) -> float:
    """The ranking score of a row (rounded as rows carry it): the learned log-odds when the calibration
    holds a learned combination, else Fisher's -log10 p (`triage_row`); with `rank_by` (an error type) that
    type's own score (`check_rank_by`), as the row's `type_scores` carry it."""
    comb = learned(calibration)
    if rank_by is not None:
        return round(float(comb.error_type_scores([row])[rank_by][0]), 4)
    score = float(comb.logit([row])[0]) if comb is not None else triage_row(row, calibration)[0]
    return round(score, 4)


def check_rank_by(rank_by: str | None, calibration: triage.Calibration) -> None:
    """Refuse a ranking by one error type that `calibration` cannot give: Fisher's method has no type scores,
    and a combination fitted without that type's errors has none for it."""
    if rank_by is None:
        return
    comb = learned(calibration)
    if comb is None:
        raise ValueError(f"ranking by the {rank_by} score needs the learned combination: Fisher's method gives no "
                         "score per error type (use combine 'learned', or rank by the score)")
    types = {KINDS.get(k, k) for k in comb.weights}
    if rank_by not in types:
        raise ValueError(f"the calibration's combination has no {rank_by!r} score: it was fitted on "
                         f"{', '.join(sorted(types))} errors")


def is_suspect(row: dict[str, Any], score: float, calibration: triage.Calibration) -> bool:
    """Above the calibration rows' own q-th percentile score, or a sentence the model cannot take."""
    threshold = calibration.combine_threshold if learned(calibration) is not None else calibration.score_threshold
    return bool(row.get("unusable")) or (threshold is not None and score > threshold)


def scored_rows(rows: Sequence[dict[str, Any]], calibration: triage.Calibration) -> None:
    """`scored_row` on every row, with the learned verdicts of all of them from one pass over their features."""
    comb = learned(calibration)
    verdicts = comb.verdicts(rows) if comb is not None else [None] * len(rows)
    for row, verdict in zip(rows, verdicts):
        scored_row(row, calibration, verdict)


def scored_row(row: dict[str, Any], calibration: triage.Calibration, verdict: Verdict | None = None) -> None:
    """Put score, suspect, flags and reasons (and the threshold-dependent signals) into a signal row, in place;
    id, score, suspect, flags and reasons lead the row. Flags come from the calibrated thresholds (each with
    its reason); with a learned combination the score is its log-odds and its verdict (`Combiner.verdicts`,
    computed here unless given) leads the reasons, and `error_type` and `type_scores` follow them."""
    row.update(apply_token_thresholds(row, calibration))
    score, flags, reasons = triage_row(row, calibration)
    comb = learned(calibration)
    typed: dict[str, Any] = {}
    if comb is not None:
        v = verdict if verdict is not None else comb.verdicts([row])[0]
        score, reasons = v.score, v.reasons + reasons
        typed = {"error_type": v.error_type, "type_scores": {t: round(x, 4) for t, x in v.type_scores.items()}}
    score = round(score, 4)
    if row.get("unusable"):
        flags.insert(0, row["unusable"])
        reasons.insert(0, f"{UNUSABLE.get(row['unusable'], 'the model cannot take this sentence')}: "
                          f"{row.get('unusable_reason', '')}; only signals needing no forward pass are scored")
    head = {"id": row["id"], "score": score, "suspect": is_suspect(row, score, calibration), "flags": flags,
            "reasons": reasons, **typed}
    rest = {k: v for k, v in row.items() if k not in head}
    row.clear()
    row.update(head)
    row.update(rest)


def describe(comb: Combiner, k: int = 5) -> list[str]:
    """The fitted weights in words: the calibration rows' error rates (a mixture's), then per kind of error its
    largest weights."""
    cat = signal_catalogue()
    lines = []
    if comb.rates:
        lines.append("error rates of the calibration rows (estimated): "
                     + ", ".join(f"{kind} {100 * v:.1f}%" for kind, v in comb.rates.items()))
    for kind, w in comb.weights.items():
        top = sorted(((v, f) for f, v in w.items() if v > 0), reverse=True)[:k]
        parts = [f"{cat.get(f.partition(':')[0], (None, f))[1]}{' (' + f.partition(':')[2] + ' side)' if ':' in f else ''}"
                 f" {v:.2f}" for v, f in top]
        auc, l2 = comb.train_auc.get(kind), comb.l2.get(kind) if isinstance(comb.l2, dict) else comb.l2
        notes = ([f"fit AUC {auc:.3f}"] if auc is not None else []) + ([f"L2 {l2:g}"] if l2 is not None else [])
        lines.append(f"{kind}: " + ("; ".join(parts) or "no signal helps") + (f"  [{', '.join(notes)}]" if notes else ""))
    return lines


__all__ = ["Combiner", "is_suspect", "learned", "row_score", "scored_row", "scored_rows", "ERROR_TYPES", "add_alti", "describe", "fisher_scores", "fit",
           "fit_with_model", "reliable_clean", "check_rank_by", "forced_signal_rows", "make_variants", "detach_part", "omit_span", "repeat_span", "suspect_z",
           "reference_samples", "signal_catalogue"]
