"""Error labels that people gave translations (hallucination, omission, ...), read from a TSV file, and how
well a triage ranks them: ROC-AUC of the score and of every signal, per label, against the unlabelled rows
(the protocol of Guerreiro et al., 2023, on WMT18 German-English)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import stats

from .errors import InputError, PathLike
from .pairs import iter_lines
from .triage import SIGNALS, Calibration, auc_from_ranks, roc_auc, suspect_values

CLEAN_WORDS = ("", "none")
_LABEL = re.compile(r"[a-z][a-z0-9_]*")
INTERVAL_LEVEL = 0.95  # of the interval `label_aucs` gives the score's lead over the best single signal
# the error type (`combine.ERROR_TYPES`) of each label of the WMT18 hallucination categories (Guerreiro et al.)
LABEL_TYPES = {"fully_detached": "detached", "strongly_detached": "detached", "omission": "omission",
               "repetition": "repetition"}


@dataclass(frozen=True)
class ErrorLabels:
    """The labels of one sentence (empty: judged free of the errors labelled) and, when the file gives it,
    the translation they were given for."""

    labels: frozenset[str]
    translation: str | None = None


def read_error_labels(path: PathLike) -> list[ErrorLabels]:
    """One `ErrorLabels` per sentence, in input order, from a tab-separated file with a header line.

    Its `labels` column holds `none` (or nothing) or comma-separated names (`omission,repetition`; lower
    case, digits, underscores). Optional columns: `id`, the sentence's 0-based index (checked against the
    line's place), and `translation`, the text that was labelled (a triage row with another translation is
    left out of the AUCs). Other columns (a note) are ignored.
    """
    out: list[ErrorLabels] = []
    columns: list[str] | None = None
    for lineno, line in iter_lines(path):
        fields = line.split("\t")
        if columns is None:
            columns = [f.strip().lower() for f in fields]
            if "labels" not in columns:
                raise InputError(path, lineno, f"the header names no 'labels' column (it has {fields!r})",
                                 "a tab-separated header with a 'labels' column, e.g. 'id<TAB>labels<TAB>translation'")
            continue
        if len(fields) != len(columns):
            raise InputError(path, lineno, f"{len(fields)} tab-separated fields, the header has {len(columns)}",
                             "one field per header column")
        row = dict(zip(columns, fields))
        if "id" in row and row["id"].strip() != str(len(out)):
            raise InputError(path, lineno, f"id {row['id']!r} on the line of sentence {len(out)}",
                             "one line per sentence, in input order, ids counting from 0")
        names = [n.strip() for n in row["labels"].split(",")]
        if row["labels"].strip().lower() in CLEAN_WORDS:
            names = []
        for name in names:
            if not _LABEL.fullmatch(name):
                raise InputError(path, lineno, f"label {name!r} is not a name",
                                 "'none' or comma-separated names of lower-case letters, digits and underscores")
        out.append(ErrorLabels(frozenset(names), row.get("translation")))
    if columns is None:
        raise InputError(path, None, "the file is empty", "a header line and one line per sentence")
    return out


def same_text(a: str, b: str) -> bool:
    """Whether two translations are the same text up to spacing (the labelled one and a triage row's)."""
    return a.split() == b.split()


def _bootstrap_aucs(values: np.ndarray, n_pos: int, idx_pos: np.ndarray, idx_neg: np.ndarray) -> np.ndarray:
    """[n_scores, B] ROC-AUCs of `values` ([n_scores, n]; positives first, `n_pos` of them) on B resamples
    (`idx_pos` [B, n_pos] and `idx_neg` [B, n_neg] row indices), from average ranks as `triage.roc_auc`."""
    n_neg = idx_neg.shape[1]
    out = []
    for v in values:
        both = np.concatenate([v[idx_pos], v[n_pos + idx_neg]], axis=1)
        out.append(auc_from_ranks(stats.rankdata(both, axis=1)[:, :n_pos].sum(axis=1), n_pos, n_neg))
    return np.array(out)


def auc_difference_interval(a: np.ndarray, b: np.ndarray, positive: np.ndarray, resamples: int = 1000,
                            level: float = INTERVAL_LEVEL, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ROC-AUC(a) - ROC-AUC(b) over a bootstrap that resamples the positive and the
    negative rows apart (each class keeps its size), the two scores on the same resampled rows (paired)."""
    positive = np.asarray(positive, dtype=bool)
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan"), float("nan")
    values = np.stack([np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)])[:, np.r_[pos, neg]]
    rng = np.random.default_rng(seed)
    block = max(1, 2_000_000 // len(positive))  # resamples per block: memory stays near 2M values per score
    diffs = []
    for start in range(0, resamples, block):
        k = min(block, resamples - start)
        idx_pos = rng.integers(0, len(pos), size=(k, len(pos)))
        idx_neg = rng.integers(0, len(neg), size=(k, len(neg)))
        auc = _bootstrap_aucs(values, len(pos), idx_pos, idx_neg)
        diffs.append(auc[0] - auc[1])
    d = np.concatenate(diffs)
    tail = (1 - level) / 2
    return float(np.quantile(d, tail)), float(np.quantile(d, 1 - tail))


def label_aucs(rows: Sequence[dict[str, Any]], labelled: Sequence[ErrorLabels],
               calibration: Calibration | None = None, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """ROC-AUC of triage's `score` and of every signal the rows hold (each turned suspect-high), per label:
    the rows with that label against the rows with none. Rows are matched to labels by their `id`; a row
    whose translation is not the labelled one is left out and listed under "mismatched".

    Per label, "score_vs_best" gives the score's AUC minus the best single signal's and a 95% interval of that
    difference (`auc_difference_interval`, `resamples` draws; none with 0): with a few labelled rows a lead of
    either is often chance. The best signal is picked on these same rows, which favours it. When the rows carry
    a learned combination's `type_scores`, "type_auc" is the AUC of the label's own error type's score
    (`LABEL_TYPES`), the ranking a user who looks for that error alone would sort by, and "type_vs_best" its
    lead over the best single signal with the same kind of interval."""
    if len(rows) != len(labelled):
        raise ValueError(f"{len(rows)} triage rows but {len(labelled)} labelled sentences: expected one each")
    matched, mismatched = [], []
    for r in rows:  # may stream from a ranked file: keep only the numbers an AUC needs
        lab = labelled[r["id"]]
        if lab.translation is not None and not same_text(lab.translation, r.get("translation") or ""):
            mismatched.append(r["id"])
        else:
            matched.append(({k: r[k] for k in ("score", "type_scores", *SIGNALS) if k in r}, lab.labels))
    kept = [r for r, _ in matched]
    clean = np.array([not names for _, names in matched], dtype=bool)
    signals = [n for n in SIGNALS if any(isinstance(r.get(n), (int, float)) and np.isfinite(r[n]) for r in kept)]
    values = {"score": np.array([float(r["score"]) for r in kept], dtype=np.float64)}
    for name in signals:
        if SIGNALS[name].direction != "both" or calibration is not None:
            values[name] = suspect_values(name, kept, calibration)
    result: dict[str, Any] = {"n": len(kept), "clean": int(clean.sum()), "mismatched": sorted(mismatched),
                              "labels": {}}
    for label in sorted({n for _, names in matched for n in names}):
        has = np.array([label in names for _, names in matched], dtype=bool)
        use = has | clean
        auc = {name: roc_auc(v[use], has[use]) for name, v in values.items()}
        finite = [(a, n) for n, a in auc.items() if n != "score" and np.isfinite(a)]
        best = max(finite) if finite else (float("nan"), None)  # NaN: no row without a label to rank against
        entry = {"n": int(has.sum()), "auc": auc, "best_signal": best[1], "best_auc": best[0]}
        kind = LABEL_TYPES.get(label)
        typed = None
        if kind is not None and all(kind in (r.get("type_scores") or {}) for r in kept):
            typed = np.array([float(r["type_scores"][kind]) for r in kept], dtype=np.float64)
            entry["type_auc"] = {"type": kind, "auc": roc_auc(typed[use], has[use])}
        if resamples and best[1] is not None:
            for key, v, a in (("score_vs_best", values["score"], auc["score"]),
                              ("type_vs_best", typed, entry.get("type_auc", {}).get("auc"))):
                if v is None:
                    continue
                low, high = auc_difference_interval(v[use], values[best[1]][use], has[use], resamples, seed=seed)
                entry[key] = {"difference": a - best[0], "low": low, "high": high, "level": INTERVAL_LEVEL,
                              "resamples": resamples}
        result["labels"][label] = entry
    return result


def format_label_aucs(result: dict[str, Any]) -> str:
    """Plain-text table: per label, how many rows hold it, the AUC of the score and the best single signal."""
    lines = [f"labelled rows: {result['n']} ({result['clean']} without a label)"
             + (f"; {len(result['mismatched'])} left out: their translation is not the labelled one"
                if result["mismatched"] else ""),
             f"{'label':<20} {'rows':>5} {'score AUC':>10}  {'score - best (95% interval)':<28} "
             f"{'best single signal':<28} its type's score, - best (interval)"]
    for label, r in result["labels"].items():
        best = f"{r['best_auc']:.3f} ({r['best_signal']})" if r["best_signal"] else "-"
        vs = r.get("score_vs_best")
        gap = f"{vs['difference']:+.3f} [{vs['low']:+.3f}, {vs['high']:+.3f}]" if vs else "-"
        typed = f"{r['type_auc']['auc']:.3f} ({r['type_auc']['type']})" if "type_auc" in r else "-"
        tv = r.get("type_vs_best")
        typed += f"  {tv['difference']:+.3f} [{tv['low']:+.3f}, {tv['high']:+.3f}]" if tv else ""
        lines.append(f"{label:<20} {r['n']:>5} {r['auc']['score']:>10.3f}  {gap:<28} {best:<28} {typed}")
    other = [label for label in result["labels"] if label not in LABEL_TYPES]
    if other:  # a misspelt label would otherwise pass as a category of its own
        lines.append(f"note: {', '.join(other)} {'is' if len(other) == 1 else 'are'} none of the categories "
                     f"{', '.join(LABEL_TYPES)}: scored as {'a label' if len(other) == 1 else 'labels'} of "
                     f"{'its' if len(other) == 1 else 'their'} own, with no error type's score")
    return "\n".join(lines)
