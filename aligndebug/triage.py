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

import argparse
import json
import math
import os
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from .extract import SentenceError
from .signals import record_signals, threshold_signals

# name -> (suspect direction, family, flag when beyond threshold, label for reasons)
# direction: "high" (large is suspect), "low", or "both" (flag names for low / high side)
SIGNALS: dict[str, tuple[str, str, Any, str]] = {
    "entropy_mean": ("high", "dispersion", "scattered", "mean normalised attention entropy"),
    "scattered_share": ("high", "dispersion", "scattered", "share of target words with scattered attention"),
    "wass_to_unif": ("high", "detachment", "detached", "Wass-to-Unif distance"),
    "sink_special": ("high", "detachment", "detached", "share of attention on special tokens (</s>)"),
    "sink_punct": ("high", "detachment", "detached", "share of attention on punctuation"),
    "coverage_min": ("low", "omission", "omission", "lowest relative coverage of a source content word"),
    "omission_share": ("high", "omission", "omission", "share of source content words left unattended"),
    "coverage_max": ("high", "overattention", "repetition", "highest relative coverage of a source content word"),
    "overattended_share": ("high", "overattention", "repetition", "share of source content words over-attended"),
    "seq_logprob": ("low", "confidence", "low_confidence", "Seq-Logprob (mean target log-probability)"),
    "min_logprob": ("low", "confidence", "low_confidence", "lowest target token log-probability"),
    "repeat_share": ("high", "repetition", "repetition", "share of target words inside a repeated n-gram"),
    "longest_repeat": ("high", "repetition", "repetition", "longest repeated target span (words)"),
    "tandem_repeat": ("high", "repetition", "repetition", "longest immediately repeated target span (words)"),
    "length_ratio": ("both", "length", ("too_short", "too_long"), "target/source length ratio (words)"),
    "chrf": ("low", "reference", "low_reference_score", "sentence chrF against the reference"),
    "bleu": ("low", "reference", "low_reference_score", "sentence BLEU against the reference"),
}
FAMILIES: dict[str, list[str]] = {}
for _name, (_d, _fam, _f, _l) in SIGNALS.items():
    FAMILIES.setdefault(_fam, []).append(_name)

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
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json() + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Calibration":
        from .errors import InputError

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
        direction = SIGNALS[name][0]
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
            hit = cache[name] = (sample, ref, _tail_scale(ref))
        return hit[1], hit[2]


def _tail_scale(ref: np.ndarray) -> float:
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
        direction = SIGNALS[name][0]
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
    for name, (direction, _fam, flag, label) in SIGNALS.items():
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
    if "repetition" in flags and sig.get("repetition_suspects"):
        reasons.append("source words with far more than their share: " + ", ".join(sig["repetition_suspects"]))
    if "low_confidence" in flags and sig.get("lowest_tokens"):
        t = sig["lowest_tokens"][0]
        reasons.append(f"least likely token {t['token']!r} (log-prob {_fmt(t['logprob'])})")
    return score, flags, reasons


# --------------------------------------------------------------------------- running

def _layer_reducer(layer: int | str) -> tuple[Callable[[str, np.ndarray], np.ndarray], int | str]:
    """Shrink each sentence's [L, H, T, S] to the one layer (or layer mean) the signals read."""
    def reduce(kind: str, m: np.ndarray) -> np.ndarray:
        if layer == "mean":
            return m.mean(axis=0, keepdims=True)
        n = m.shape[0]
        if not isinstance(layer, (int, np.integer)) or not -n <= layer < n:
            raise ValueError(f"layer {layer!r} does not exist: the model has {n} decoder layers (0-based) or use 'mean'")
        return m[[layer]]
    return reduce, 0


def iter_signal_rows(bundle: Any, sources: Sequence[str], targets: Sequence[str] | None = None,
                     references: Sequence[str] | None = None, batch_size: int = 16, beam: int = 1,
                     layer: int | str = "mean", head: int | str = "mean", method: str = "shift-att",
                     ids: Sequence[int] | None = None) -> Iterator[dict[str, Any]]:
    """One signal row per sentence, as batches finish (length-sorted order, `id` says which).

    Only the chosen layer's cross-attention is kept per sentence, so memory stays flat.
    """
    from .extract import iter_extract

    if references is not None and len(references) != len(sources):
        raise ValueError(f"{len(sources)} sources but {len(references)} references: expected one reference per source")
    ids = list(range(len(sources))) if ids is None else list(ids)
    reduce, read_layer = _layer_reducer(layer)
    for i, rec in iter_extract(bundle, sources, targets, batch_size=batch_size, beam=beam, keep=("cross",), reduce=reduce):
        yield signal_row(rec, ids[i], sources[i], None if references is None else references[i],
                         layer=read_layer, head=head, method=method)


def signal_row(rec: Any, id_: int, source: str, reference: str | None = None, *, layer: int | str = "mean",
               head: int | str = "mean", method: str = "shift-att") -> dict[str, Any]:
    """The triage row of one Record (unscored): id, texts, source words and every signal."""
    sig = record_signals(rec, layer=layer, head=head, method=method, reference=reference)
    row = {"id": id_, "source": source, "translation": rec.target}
    if reference is not None:
        row["reference"] = reference
    row["src_words"] = rec.src_words
    row.update(sig)
    return row


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    return x


def row_json(row: dict[str, Any]) -> str:
    """One JSONL line; undefined values (NaN) become null."""
    return json.dumps(_jsonable(row), ensure_ascii=False)


def run_triage(bundle: Any, sources: Sequence[str], targets: Sequence[str] | None = None,
               references: Sequence[str] | None = None, batch_size: int = 16,
               calibration: Calibration | None = None, *, beam: int = 1, layer: int | str = "mean",
               head: int | str = "mean", method: str = "shift-att", percentile: float = 95.0,
               out: str | os.PathLike[str] | None = None, chunk_size: int = 256,
               on_progress: Callable[[int], None] | None = None) -> "TriageRows | RankedFile":
    """Signals, score, flags and reasons for every sentence, most suspect first.

    Sentences are taken `chunk_size` at a time in input order (translated, then length-bucketed into
    batches, within their chunk), as a Ray run (`ray_triage.triage_with_ray`) takes them. Without
    `calibration` the thresholds are calibrated on this set (`percentile`). With `out`, each row is
    appended to ``<out>.partial`` as soon as its batch finishes (a rerun resumes from it); at the end
    the ranked rows go to `out`, the calibration to ``<out stem>.calibration.json``, and the partial
    file is removed. Returns the ranked rows, with `.calibration` the Calibration used: a list
    (TriageRows) without `out`, else a RankedFile that reads them from `out` (no row is held).
    """
    settings = triage_settings(getattr(bundle, "name", None), method=method, layer=layer, head=head,
                               calibration=calibration)
    store, todo = read_resume(out, sources)
    chunks = triage_chunks(sources, targets, references, todo, chunk_size)
    options = dict(batch_size=batch_size, beam=beam, layer=layer, head=head, method=method)
    stream = (row for chunk in chunks for row in chunk.signal_rows(bundle, **options))
    collect_rows(stream, store, on_progress)
    return finish_triage(store, calibration, settings=settings, percentile=percentile, out=out)


@dataclass(frozen=True)
class TriageChunk:
    """Sentences whose signals are computed together: in turn by a local run, one per Ray actor call.
    Translation and length-bucketed batching happen inside a chunk, so both ways give the same rows."""

    ids: list[int]
    sources: list[str]
    targets: list[str] | None
    references: list[str] | None

    def signal_rows(self, bundle: Any, **options: Any) -> Iterator[dict[str, Any]]:
        """`iter_signal_rows` on this chunk (options: batch_size, beam, layer, head, method); a sentence that
        cannot be used raises SentenceError naming it by its id."""
        try:
            yield from iter_signal_rows(bundle, self.sources, self.targets, self.references, ids=self.ids, **options)
        except SentenceError as exc:
            raise SentenceError(self.ids[exc.index], exc.reason) from None


def triage_chunks(sources: Sequence[str], targets: Sequence[str] | None, references: Sequence[str] | None,
                  todo: Sequence[int], chunk_size: int) -> Iterator[TriageChunk]:
    """The sentences `todo` (ids, in input order), `chunk_size` at a time; the inputs are checked at once."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    for what, lines in (("targets", targets), ("references", references)):
        if lines is not None and len(lines) != len(sources):
            raise ValueError(f"{len(sources)} sources but {len(lines)} {what}: expected one {what[:-1]} per source")

    def pick(lines: Sequence[str] | None, ids: list[int]) -> list[str] | None:
        return None if lines is None else [lines[i] for i in ids]

    return (TriageChunk(ids, pick(sources, ids), pick(targets, ids), pick(references, ids))
            for ids in (list(todo[k: k + chunk_size]) for k in range(0, len(todo), chunk_size)))


# The steps of `run_triage`, shared with the Ray driver (`ray_triage.triage_with_ray`), so both resume,
# append, calibrate, score, rank and write the same way.

def triage_settings(model_name: str | None, *, method: str, layer: int | str, head: int | str,
                    calibration: Calibration | None = None) -> dict[str, Any]:
    """The settings a calibration records; a given `calibration` made with other settings is refused."""
    settings = {"model": model_name, "method": method, "layer": layer, "head": head}
    if calibration is not None:
        clash = {k: (calibration.settings.get(k), v) for k, v in settings.items()
                 if k != "model" and k in calibration.settings and calibration.settings[k] != v}
        if clash:
            raise ValueError("the calibration was made with other settings, so its thresholds do not apply: "
                             + ", ".join(f"{k} {a!r} there, {b!r} here" for k, (a, b) in clash.items()))
    return settings


class PartialRows:
    """The rows of a run writing `out`, kept in ``<out>.partial`` until they are ranked.

    Rows are appended as they come (flushed, so a kill loses at most the row being written) and read
    back as often as ranking needs; only the ids already done are held in memory. Opening checks the
    rows against `sources` and cuts off a line torn by a kill.
    """

    def __init__(self, out: str | os.PathLike[str], sources: Sequence[str]):
        self.path = partial_path(out)
        self.done: set[int] = set()
        self._sink = None
        if not self.path.exists():
            return
        with open(self.path, "rb+") as f:
            end = 0
            for line in f:
                if not line.endswith(b"\n"):
                    break  # killed mid-write
                row = json.loads(line)
                i = row.get("id")
                if not isinstance(i, int) or not 0 <= i < len(sources) or row.get("source") != sources[i]:
                    raise ValueError(f"{self.path}: holds rows of another input (row {i} does not match the sources); "
                                     "delete it or use another --out")
                self.done.add(i)
                end += len(line)
            f.truncate(end)

    def __len__(self) -> int:
        return len(self.done)

    def append(self, row: dict[str, Any]) -> None:
        if self._sink is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._sink = open(self.path, "a", encoding="utf-8")
        self._sink.write(row_json(row) + "\n")
        self._sink.flush()
        self.done.add(row["id"])

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (row for _, row in self.with_offsets())

    def with_offsets(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(byte offset, row) of every row, in file order."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            offset = 0
            for line in f:
                yield offset, _parse_row(line)
                offset += len(line)

    @staticmethod
    def row_at(handle: Any, offset: int) -> dict[str, Any]:
        """The row at byte `offset` of an open binary handle on the file."""
        handle.seek(offset)
        return _parse_row(handle.readline())


def _parse_row(line: bytes | str) -> dict[str, Any]:
    """A row as written by `row_json`: null signals are NaN again."""
    return {k: (float("nan") if v is None and k in SIGNALS else v) for k, v in json.loads(line).items()}


def partial_path(out: str | os.PathLike[str]) -> Path:
    """Where the rows of an unfinished run writing `out` are kept: ``<out>.partial``."""
    return Path(str(out) + ".partial")


def read_resume(out: str | os.PathLike[str] | None,
                sources: Sequence[str]) -> tuple[PartialRows | list[dict[str, Any]], list[int]]:
    """(where rows go: ``<out>.partial``, holding the rows of an interrupted run, or a list without `out`;
    the ids still to do, in input order)."""
    store: PartialRows | list[dict[str, Any]] = PartialRows(out, sources) if out is not None else []
    done = store.done if isinstance(store, PartialRows) else set()
    return store, [i for i in range(len(sources)) if i not in done]


def collect_rows(stream: Iterable[dict[str, Any]] | None, store: PartialRows | list[dict[str, Any]],
                 on_progress: Callable[[int], None] | None = None) -> None:
    """Append each (unscored) row of `stream` to `store` as it arrives."""
    if on_progress and len(store):
        on_progress(len(store))
    try:
        for row in stream or ():
            store.append(row)
            if on_progress:
                on_progress(1)
    finally:
        if isinstance(store, PartialRows):
            store.close()


def finish_triage(store: PartialRows | list[dict[str, Any]], calibration: Calibration | None, *,
                  settings: dict[str, Any], percentile: float = 95.0,
                  out: str | os.PathLike[str] | None = None) -> "TriageRows | RankedFile":
    """Calibrate on the rows (unless `calibration` is given), score, rank (most suspect first, then by id).

    Rows in a list are ranked in place and returned as TriageRows. Rows in ``<out>.partial`` are
    streamed: only their scores and offsets are held, `out` and the calibration are written atomically,
    the partial file is removed, and the ranked rows are returned as a RankedFile reading `out`.
    """
    if calibration is None:
        calibration = calibrate(store, percentile=percentile, source="self", settings=settings)
    if not isinstance(store, PartialRows):
        for row in store:
            _score_into(row, calibration)
        store.sort(key=lambda r: (-r["score"], r["id"]))
        for rank, row in enumerate(store, start=1):
            row["rank"] = rank
        return TriageRows(store, calibration)
    scores, ids, offsets = array("d"), array("q"), array("q")
    for offset, row in store.with_offsets():
        scores.append(round(triage_row(row, calibration)[0], 4))  # the score a row carries, as the list sort uses
        ids.append(row["id"])
        offsets.append(offset)
    order = np.lexsort((np.asarray(ids), -np.asarray(scores)))
    out = Path(out)
    calibration.save(calibration_path(out))
    tmp = out.with_name(out.name + ".tmp")
    ranked = array("q")
    with open(store.path, "rb") as src, open(tmp, "wb") as dst:
        for rank, k in enumerate(order.tolist(), start=1):
            row = store.row_at(src, offsets[k])
            _score_into(row, calibration)
            row["rank"] = rank
            ranked.append(dst.tell())
            dst.write((row_json(row) + "\n").encode("utf-8"))
    tmp.replace(out)
    store.path.unlink(missing_ok=True)
    return RankedFile(out, ranked, calibration)


class RankedFile(Sequence):
    """The ranked rows of a triage run, read from its `out` file on demand (only line offsets are held);
    `calibration` is the Calibration they were scored with."""

    def __init__(self, path: Path, offsets: array, calibration: Calibration):
        self.path, self._offsets, self.calibration = path, offsets, calibration

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[k] for k in range(*index.indices(len(self)))]
        with open(self.path, "rb") as f:
            return PartialRows.row_at(f, self._offsets[index])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with open(self.path, "rb") as f:
            for line in f:
                yield _parse_row(line)


class TriageRows(list):
    """The ranked rows of `run_triage` (a plain list) carrying the `calibration` they were scored with."""

    def __init__(self, rows: Iterable[dict[str, Any]], calibration: Calibration):
        super().__init__(rows)
        self.calibration = calibration


def calibration_path(out: str | os.PathLike[str]) -> Path:
    """Where the calibration of results file `out` is saved: beside it, ``<stem>.calibration.json``."""
    out = Path(out)
    return out.with_name(out.stem + ".calibration.json")


ROW_ORDER = ("id", "rank", "score", "flags", "reasons", "source", "translation", "reference")


def _score_into(row: dict[str, Any], calibration: Calibration) -> None:
    row.update(apply_token_thresholds(row, calibration))
    score, flags, reasons = triage_row(row, calibration)
    suspect = calibration.score_threshold is not None and score > calibration.score_threshold
    head = {"id": row["id"], "score": round(score, 4), "suspect": suspect, "flags": flags, "reasons": reasons}
    rest = {k: v for k, v in row.items() if k not in head}
    row.clear()
    row.update(head)
    row.update(rest)


# --------------------------------------------------------------------------- statistics

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
    ranks = stats.rankdata(s)  # average ranks for ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def suspect_values(name: str, rows: Sequence[dict[str, Any]], calibration: Calibration | None = None) -> np.ndarray:
    """A signal turned so that larger = more suspect (for AUC): the value for high-suspect
    signals, its negative for low-suspect ones, and -log p (from `calibration`) for two-sided
    ones. Undefined values get the least suspect value."""
    direction = SIGNALS[name][0]
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


# --------------------------------------------------------------------------- command line

def read_text_lines(path: str | os.PathLike[str], what: str) -> list[str]:
    """Lines of a text file (one sentence each); empty lines are an error naming file and line."""
    from .errors import InputError
    from .pairs import iter_lines

    out = []
    for lineno, text in iter_lines(path):
        if not text.strip(" "):
            raise InputError(path, lineno, f"empty {what}", f"one {what} a line, with at least one word")
        out.append(text)
    return out


def add_triage_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `triage` subcommand to an argparse subparsers object."""
    from .cli import _add_model_args, add_run_args, add_testset_arg, parse_selector, percentile, positive_int

    p = subparsers.add_parser(
        "triage", help="flag and rank suspect translations of a test set",
        description="Score every translation with attention, confidence and repetition signals, flag the "
                    "ones beyond calibrated percentile thresholds and rank them, most suspect first.")
    _add_model_args(p)
    add_testset_arg(p, "its source sentences, with its target side as references")
    p.add_argument("--src", type=Path, help="source sentences, one a line (or --testset)")
    p.add_argument("--tgt", type=Path, help="translations to force through the model (default: the model translates)")
    p.add_argument("--ref", type=Path, help="references, one a line: adds sentence chrF and BLEU")
    p.add_argument("--out", type=Path, required=True, help="JSONL rows, most suspect first (calibration saved beside it)")
    p.add_argument("--html", type=Path, help="self-contained HTML report of the top suspects")
    p.add_argument("--top", type=positive_int, default=20, help="suspects shown in the HTML report")
    p.add_argument("--calibration", type=Path, help="calibration JSON from an earlier run on a clean set "
                                                     "(default: calibrate on this set)")
    p.add_argument("--percentile", type=percentile, default=95.0, help="flag threshold percentile when calibrating")
    p.add_argument("--method", choices=("shift-att", "naive"), default="shift-att",
                   help="shift-att: row where the target token is the decoder input; naive: where it is the output")
    p.add_argument("--layer", type=parse_selector, default="mean", help="decoder layer (0-based) or 'mean' (default)")
    p.add_argument("--head", type=parse_selector, default="mean", help="head index or 'mean' (default)")
    add_run_args(p, "sentences translated and scored at a time, in input order (what a kill can cost)")
    p.set_defaults(func=cmd_triage)
    return p


def cmd_triage(args: argparse.Namespace) -> int:
    """Handler of `aligndebug triage`."""
    from .cli import apply_testset, check_layer, check_outputs, driver_setup
    from .errors import InputError

    apply_testset(args, {"src": "src", "ref": "tgt"})
    if args.src is None:
        raise InputError(None, None, "no source sentences given", "--src FILE or --testset NAME")
    if isinstance(args.layer, list) or isinstance(args.head, list):
        raise InputError(None, None, "lists of layers or heads are not supported by triage", "one index or 'mean'")
    sources = read_text_lines(args.src, "source sentence")
    targets = read_text_lines(args.tgt, "translation") if args.tgt else None
    references = read_text_lines(args.ref, "reference") if args.ref else None
    for path, lines in ((args.tgt, targets), (args.ref, references)):
        if lines is not None and len(lines) != len(sources):
            raise InputError(path, None, f"{len(lines)} lines but {args.src} has {len(sources)}",
                             "one line per source sentence")
    calibration = Calibration.load(args.calibration) if args.calibration else None
    check_outputs(args.out, args.html)
    bundle, ray_kwargs = driver_setup(args)
    check_layer(args.layer, bundle.num_layers)
    from tqdm import tqdm

    common = dict(batch_size=args.batch_size, calibration=calibration, beam=args.beam, layer=args.layer,
                  head=args.head, method=args.method, percentile=args.percentile, out=args.out,
                  chunk_size=args.chunk_size)
    with tqdm(total=len(sources), unit="sent", disable=args.no_progress, file=sys.stderr) as bar:
        try:
            if ray_kwargs is not None:
                from .ray_triage import triage_with_ray

                rows = triage_with_ray(args.model, sources, targets, references, **common, on_progress=bar.update,
                                       **ray_kwargs)
            else:
                rows = run_triage(bundle, sources, targets, references, **common, on_progress=bar.update)
        except SentenceError as exc:  # name the line of the source file
            raise InputError(args.src, exc.index + 1, exc.reason) from exc
    calibration = rows.calibration
    if args.html:
        from .report import write_report

        write_report(rows, args.html, bundle=bundle, calibration=calibration, top=args.top,
                     layer=args.layer, head=args.head, method=args.method)
    print(format_top(rows, 10))
    print(f"rows: {args.out}   calibration: {calibration_path(args.out)}"
          + (f"   report: {args.html}" if args.html else ""))
    return 0


def format_top(rows: Sequence[dict[str, Any]], k: int = 10) -> str:
    """Plain-text table of the `k` most suspect rows."""
    lines = [f"{'rank':>4} {'score':>7}  {'flags':<32} translation"]
    for r in rows[:k]:
        flags = ",".join(r["flags"]) or "-"
        lines.append(f"{r['rank']:>4} {r['score']:>7.2f}  {flags[:32]:<32} {r['translation'][:80]}")
    return "\n".join(lines)
