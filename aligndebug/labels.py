"""Error labels that people gave translations (hallucination, omission, ...), read from a TSV file, and how
well a triage ranks them: ROC-AUC of the score and of every signal, per label, against the unlabelled rows
(the protocol of Guerreiro et al., 2023, on WMT18 German-English)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .errors import InputError, PathLike
from .pairs import iter_lines
from .triage import SIGNALS, Calibration, roc_auc, suspect_values

CLEAN_WORDS = ("", "none")
_LABEL = re.compile(r"[a-z][a-z0-9_]*")


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


def _same_text(a: str, b: str) -> bool:
    return a.split() == b.split()


def label_aucs(rows: Sequence[dict[str, Any]], labelled: Sequence[ErrorLabels],
               calibration: Calibration | None = None) -> dict[str, Any]:
    """ROC-AUC of triage's `score` and of every signal the rows hold (each turned suspect-high), per label:
    the rows with that label against the rows with none. Rows are matched to labels by their `id`; a row
    whose translation is not the labelled one is left out and listed under "mismatched"."""
    if len(rows) != len(labelled):
        raise ValueError(f"{len(rows)} triage rows but {len(labelled)} labelled sentences: expected one each")
    matched, mismatched = [], []
    for r in rows:  # may stream from a ranked file: keep only the numbers an AUC needs
        lab = labelled[r["id"]]
        if lab.translation is not None and not _same_text(lab.translation, r.get("translation") or ""):
            mismatched.append(r["id"])
        else:
            matched.append(({k: r[k] for k in ("score", *SIGNALS) if k in r}, lab.labels))
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
        result["labels"][label] = {"n": int(has.sum()), "auc": auc, "best_signal": best[1], "best_auc": best[0]}
    return result


def format_label_aucs(result: dict[str, Any]) -> str:
    """Plain-text table: per label, how many rows hold it, the AUC of the score and the best single signal."""
    lines = [f"labelled rows: {result['n']} ({result['clean']} without a label)"
             + (f"; {len(result['mismatched'])} left out: their translation is not the labelled one"
                if result["mismatched"] else ""),
             f"{'label':<20} {'rows':>5} {'score AUC':>10}  best single signal"]
    for label, r in result["labels"].items():
        best = f"{r['best_auc']:.3f} ({r['best_signal']})" if r["best_signal"] else "-"
        lines.append(f"{label:<20} {r['n']:>5} {r['auc']['score']:>10.3f}  {best}")
    return "\n".join(lines)
