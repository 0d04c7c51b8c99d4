"""MT error triage: calibrate signal thresholds, flag and rank suspect translations.

**Calibration** (`calibrate`). Thresholds are percentiles of the signals on a reference set:
the test set itself (default) or a clean calibration set (a Calibration saved by an earlier
run, `--calibration FILE`). With percentile q (default 95):

* token level: a target word is *scattered* when its normalised entropy is above the q-th
  percentile of all target words' entropies; a source content word is an *omission suspect*
  when its relative coverage is below the (100-q)-th percentile of all content words'
  coverage, a *repetition suspect* when above the q-th;
* sentence level: a signal whose high values are suspect flags above its q-th percentile,
  one whose low values are suspect below its (100-q)-th; length ratio is two-sided.

The calibration keeps each signal's reference values (all of them, or 1001 quantiles of a
large set) and is written as JSON beside the results.

**Score** (`triage_row`): higher = more suspect. For each signal, the one-sided empirical
p-value of the sentence's value against the calibration values in the suspect direction,
p = (1 + #{reference values at least as extreme}) / (n + 1) (two-sided for length ratio:
twice the smaller tail, at most 1); beyond the most extreme reference value it keeps falling
like a half-normal tail (see `Calibration.log_p_value`), so outliers are not all tied at
1/(n+1). Signals measuring the same thing form a *family* (`FAMILIES`); a family's p-value
is its smallest signal p-value times the number of its signals present (Bonferroni, valid
however correlated they are). The families' p-values are combined with Fisher's method,
X = -2 sum(ln p_f), and the score is -log10 of the combined p-value, P(chi2 with 2m degrees
of freedom >= X) for m families present. A score of 2 reads "as extreme as 1 sentence in
100 of the calibration set would be if the families were independent" (they are not quite,
so read it as a ranking, not a test). Signals that are undefined for a sentence (NaN, e.g.
chrF without a reference) are left out of it. A row is `suspect` when its score is above
the q-th percentile of the calibration rows' own scores; its `flags` name every signal
beyond its own threshold (so a clean sentence can carry a flag without being a suspect).
"""

from __future__ import annotations

import json
import math
import os
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from .errors import InputError
from .store import write_text_atomic
from .signals import FAMILIES, SIGNALS, threshold_signals  # noqa: F401  (FAMILIES re-exported)

MAX_SAMPLES = 1001
CAL_VERSION = 1


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool) and math.isfinite(float(x))


@dataclass
class Calibration:
    """Percentile thresholds and reference distributions for every signal; JSON round-trips."""

    percentile: float
    n: int
    source: str
    token_thresholds: dict[str, float | None]  # entropy_high, coverage_low, coverage_high
    thresholds: dict[str, dict[str, float]]  # signal -> {"low": x} / {"high": y} / both
    samples: dict[str, list[float]]  # signal -> sorted reference values (or quantiles)
    settings: dict[str, Any] = field(default_factory=dict)  # model, method, layer, head, ...
    score_threshold: float | None = None  # q-th percentile of the calibration rows' own scores
    combine: str = "fisher"  # how signals make the score: "fisher" or "learned" (`combiner`)
    combiner: dict[str, Any] | None = None  # `combine.Combiner.to_dict()` of the learned combination
    combine_threshold: float | None = None  # q-th percentile of the calibration rows' own learned scores
    version: int = CAL_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Calibration":
        return cls(**data)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (a kill never leaves half a calibration)."""
        write_text_atomic(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Calibration":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(path, None, f"cannot read calibration: {exc.strerror or exc}", "a calibration JSON file") from exc
        except json.JSONDecodeError as exc:
            raise InputError(path, exc.lineno, f"not valid JSON: {exc.msg}", "a calibration JSON file written by aligndebug triage") from None
        missing = {"percentile", "n", "token_thresholds", "thresholds", "samples"} - set(data) if isinstance(data, dict) else {"everything"}
        if missing:
            raise InputError(path, None, f"calibration lacks {sorted(missing)}", "a calibration JSON file written by aligndebug triage")
        return cls.from_dict(data)

    def p_value(self, name: str, value: float) -> float:
        """p-value of `value` in the signal's suspect direction (NaN if undefined); see `log_p_value`."""
        return math.exp(self.log_p_value(name, value))

    def log_p_value(self, name: str, value: float) -> float:
        """Natural log of the p-value of `value` in the signal's suspect direction.

        Within the reference range: the empirical p = (1 + #{reference values at least as
        extreme}) / (n + 1). Beyond the most extreme reference value that would stop at
        1/(n+1) and tie every outlier, so there it goes on falling like a half-normal tail
        starting at the extreme, p = p_extreme * 2 * P(Z > (value - extreme) / scale), with
        scale = IQR/1.349 of the reference (its std, or 1, when the IQR is 0). Two-sided
        signals take twice the smaller tail, at most 1. NaN when undefined.
        """
        sample = self.samples.get(name)
        if not sample or not _finite(value):
            return float("nan")
        value = float(value)
        ref, scale = self._reference(name, sample)
        n = len(ref)
        at_least = n - np.searchsorted(ref, value, side="left")  # reference values >= value
        at_most = np.searchsorted(ref, value, side="right")  # reference values <= value
        log_hi, log_lo = math.log((1 + at_least) / (n + 1)), math.log((1 + at_most) / (n + 1))
        if value > ref[-1]:
            log_hi += math.log(2) + float(stats.norm.logsf((value - ref[-1]) / scale))
        if value < ref[0]:
            log_lo += math.log(2) + float(stats.norm.logsf((ref[0] - value) / scale))
        direction = SIGNALS[name].direction
        if direction == "high":
            return log_hi
        if direction == "low":
            return log_lo
        return min(0.0, math.log(2) + min(log_hi, log_lo))


    def _reference(self, name: str, sample: list[float]) -> tuple[np.ndarray, float]:
        """The sample as an array and its tail scale, cached per signal (rebuilt if replaced)."""
        cache = self.__dict__.setdefault("_cache", {})  # not a dataclass field: never serialised
        hit = cache.get(name)
        if hit is None or hit[0] is not sample:
            ref = np.asarray(sample, dtype=np.float64)
            hit = cache[name] = (sample, ref, tail_scale(ref))
        return hit[1], hit[2]


def tail_scale(ref: np.ndarray) -> float:
    """Robust spread of a sorted reference sample: IQR/1.349, else its std, else 1."""
    q1, q3 = np.percentile(ref, [25, 75])
    scale = (q3 - q1) / 1.349
    if scale <= 0:
        scale = float(np.std(ref))
    return scale if scale > 0 else 1.0


def apply_token_thresholds(sig: dict[str, Any], calibration: Calibration, src_words: Sequence[str] | None = None) -> dict[str, Any]:
    """The threshold-dependent signals (scattered/omission/over-attended shares and suspects)
    for one row, from its stored per-word lists and the calibration's token thresholds."""
    if "word_entropy" not in sig:
        return {}
    words = src_words if src_words is not None else sig.get("src_words") or str(sig.get("source", "")).split()
    if len(words) != len(sig["src_coverage"]):
        words = [str(i) for i in range(len(sig["src_coverage"]))]
    t = calibration.token_thresholds
    return threshold_signals(sig, words, t.get("entropy_high"), t.get("coverage_low"), t.get("coverage_high"))


def calibrate(rows: Iterable[dict[str, Any]], percentile: float = 95.0, source: str = "self",
              settings: dict[str, Any] | None = None, max_samples: int = MAX_SAMPLES) -> Calibration:
    """Percentile thresholds from signal rows (dicts from `record_signals`, or triage rows).

    `rows` may be any iterable that can be read more than once (a list, `PartialRows`): it is read
    three times and never held whole.

    `percentile` q in (50, 100): high-suspect signals flag above the q-th percentile, low-suspect
    ones below the (100-q)-th. Rows are not modified.
    """
    if not 50 < percentile < 100:
        raise ValueError(f"percentile must be between 50 and 100 (exclusive), not {percentile}")
    q_hi, q_lo = percentile, 100 - percentile
    ent, cov = array("d"), array("d")  # compact: 8 bytes a value, however many sentences
    n = 0
    for r in rows:
        n += 1
        ent.extend(x for x in r.get("word_entropy", []) if _finite(x))
        cov.extend(c for c, m in zip(r.get("src_coverage", []), r.get("src_content", [])) if m and _finite(c))
    if not n:
        raise ValueError("cannot calibrate on no rows: expected at least one sentence's signals")
    token = {
        "entropy_high": float(np.percentile(ent, q_hi)) if ent else None,
        "coverage_low": float(np.percentile(cov, q_lo)) if cov else None,
        "coverage_high": float(np.percentile(cov, q_hi)) if cov else None,
    }
    cal = Calibration(percentile=float(percentile), n=n, source=source, token_thresholds=token,
                      thresholds={}, samples={}, settings=dict(settings or {}))
    values = {name: array("d") for name in SIGNALS}
    for r in rows:
        full = {**r, **apply_token_thresholds(r, cal)}
        for name in SIGNALS:
            v = full.get(name)
            if _finite(v):
                values[name].append(float(v))
    for name, vals in values.items():
        if not vals:
            continue
        arr = np.sort(np.asarray(vals))
        direction = SIGNALS[name].direction
        thr: dict[str, float] = {}
        if direction in ("high", "both"):
            thr["high"] = float(np.percentile(arr, q_hi))
        if direction in ("low", "both"):
            thr["low"] = float(np.percentile(arr, q_lo))
        cal.thresholds[name] = thr
        if len(arr) > max_samples:
            arr = np.quantile(arr, np.linspace(0, 1, max_samples))
        cal.samples[name] = [float(x) for x in arr]
    # the calibration rows scored against the calibration itself: a sentence is `suspect`
    # when its score is above their q-th percentile
    own = array("d", (triage_row(r, cal)[0] for r in rows))
    cal.score_threshold = float(np.percentile(own, q_hi))
    return cal


def combine_pvalues(log_pvalues: dict[str, float]) -> float:
    """Score from per-signal *log* p-values: Bonferroni-min within families, Fisher across them;
    returns -log10 of the combined p-value (0 when no signal is defined)."""
    fam_logp = []
    for members in FAMILIES.values():
        lps = [log_pvalues[m] for m in members if m in log_pvalues and _finite(log_pvalues[m])]
        if lps:
            fam_logp.append(min(0.0, math.log(len(lps)) + min(lps)))
    if not fam_logp:
        return 0.0
    x = -2.0 * float(np.sum(fam_logp))
    return float(-fisher_logsf(x, len(fam_logp)) / math.log(10))


def fisher_logsf(x: float, m: int) -> float:
    """ln P(chi2 with 2m degrees of freedom >= x), exact and free of underflow:
    for even degrees of freedom the survival function is e^{-x/2} sum_{k<m} (x/2)^k / k!."""
    if x <= 0:
        return 0.0
    k = np.arange(m)
    terms = k * math.log(x / 2) - np.array([math.lgamma(i + 1) for i in k])
    return float(-x / 2 + np.logaddexp.reduce(terms))


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def triage_row(signals: dict[str, Any], calibration: Calibration) -> tuple[float, list[str], list[str]]:
    """(score, flags, reasons) for one sentence's signals against a calibration.

    A flag fires when a signal lies strictly beyond its calibrated threshold; each reason
    names the signal, its value and the threshold.
    """
    sig = {**signals, **apply_token_thresholds(signals, calibration)}
    score = combine_pvalues({name: calibration.log_p_value(name, sig.get(name)) for name in SIGNALS})
    flags: list[str] = []
    reasons: list[str] = []
    q = calibration.percentile
    for name, spec in SIGNALS.items():
        flag, label = spec.flag, spec.label
        v = sig.get(name)
        thr = calibration.thresholds.get(name)
        if not _finite(v) or not thr:
            continue
        lo_flag, hi_flag = flag if isinstance(flag, tuple) else (flag, flag)
        if "high" in thr and v > thr["high"]:
            reasons.append(f"{label} {_fmt(v)} is above the {q:g}th-percentile threshold {_fmt(thr['high'])}")
            if hi_flag not in flags:
                flags.append(hi_flag)
        elif "low" in thr and v < thr["low"]:
            reasons.append(f"{label} {_fmt(v)} is below the {100 - q:g}th-percentile threshold {_fmt(thr['low'])}")
            if lo_flag not in flags:
                flags.append(lo_flag)
    if "omission" in flags and sig.get("omission_suspects"):
        reasons.append("source words with almost no attention: " + ", ".join(sig["omission_suspects"]))
    if "omission" in flags and sig.get("unaligned_source_words"):
        reasons.append("source words no target word aligns to (learned aligner): "
                       + ", ".join(sig["unaligned_source_words"]))
    if "detached" in flags and sig.get("unaligned_target_words"):
        reasons.append("target words the learned aligner finds no source word for: "
                       + ", ".join(sig["unaligned_target_words"]))
    if "repetition" in flags and sig.get("repetition_suspects"):
        reasons.append("source words with far more than their share: " + ", ".join(sig["repetition_suspects"]))
    if "low_confidence" in flags and sig.get("lowest_tokens"):
        t = sig["lowest_tokens"][0]
        reasons.append(f"least likely token {t['token']!r} (log-prob {_fmt(t['logprob'])})")
    return score, flags, reasons


# --------------------------------------------------------------------------- scoring a row

def triage_settings(model_name: str | None, *, method: str, layer: int | str, head: int | str,
                    aligner: str | None = None, calibration: Calibration | None = None) -> dict[str, Any]:
    """The settings a calibration records (`aligner`: `learned.aligner_id` of the learned aligner whose signals
    the rows hold, None for none); a given `calibration` made with other settings is refused."""
    settings = {"model": model_name, "method": method, "layer": layer, "head": head, "aligner": aligner}
    if calibration is not None:
        clash = {k: (calibration.settings.get(k), v) for k, v in settings.items()
                 if k != "model" and k in calibration.settings and calibration.settings[k] != v}
        if clash:
            raise ValueError("the calibration was made with other settings, so its thresholds do not apply: "
                             + ", ".join(f"{k} {a!r} there, {b!r} here" for k, (a, b) in clash.items()))
    return settings


ROW_ORDER = ("id", "rank", "score", "flags", "reasons", "source", "translation", "reference")


# --------------------------------------------------------------------------- statistics

def auc_from_ranks(positive_rank_sum: Any, n_pos: int, n_neg: int) -> Any:
    """Mann-Whitney's ROC-AUC from the sum of the positives' (average) ranks among all the scores."""
    return (positive_rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """ROC-AUC from ranks (Mann-Whitney U): P(score of a positive > score of a negative), ties
    counting one half. NaN when a class is empty; NaN scores are an error."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape:
        raise ValueError(f"{s.shape[0]} scores but {y.shape[0]} labels")
    if np.isnan(s).any():
        raise ValueError("scores hold NaN: fill undefined values first (e.g. with the least suspect value)")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float(auc_from_ranks(stats.rankdata(s)[y].sum(), n_pos, n_neg))  # average ranks for ties


def suspect_values(name: str, rows: Sequence[dict[str, Any]], calibration: Calibration | None = None) -> np.ndarray:
    """A signal turned so that larger = more suspect (for AUC): the value for high-suspect
    signals, its negative for low-suspect ones, and -log p (from `calibration`) for two-sided
    ones. Undefined values get the least suspect value."""
    direction = SIGNALS[name].direction
    if direction == "both":
        if calibration is None:
            raise ValueError(f"{name} is two-sided: pass the calibration to orient it")
        v = np.array([-lp if _finite(lp := calibration.log_p_value(name, r.get(name))) else np.nan for r in rows])
    else:
        v = np.array([float(r[name]) if _finite(r.get(name)) else np.nan for r in rows])
        if direction == "low":
            v = -v
    if np.isnan(v).all():
        return np.zeros(len(rows))
    return np.where(np.isnan(v), np.nanmin(v), v)
