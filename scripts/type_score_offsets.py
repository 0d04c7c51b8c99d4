"""Could another weighting of the three error-type scores meet issue 16's goal on labelled errors?

Version 9's overall score was the largest of a row's three type scores (detached, omission, repetition); version
10's is their log-sum-exp, each type's score already shifted by the log of its error rate, which is such an
offset, estimated without labels (`combine.error_rates`). This adds an offset to the omission and the repetition
score before taking the largest, over a grid, and reports the offsets
whose smallest lead over the best single signal, across every label of every run given, is largest. The offsets
are fitted to the very labels they are scored on, so the figure is an upper bound for any such re-weighting,
not a method: if even it is negative, the type scores themselves, not how the largest of them is taken, fall
short. Each run is the output of `aligndebug triage ... --labels FILE --labels-json JSON`::

    python scripts/type_score_offsets.py own.jsonl:errors.own.tsv:own.json ref.jsonl:errors.reference.tsv:ref.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from aligndebug.combine import ERROR_TYPES  # noqa: E402
from aligndebug.labels import LABEL_TYPES, read_error_labels, same_text  # noqa: E402
from aligndebug.triage import roc_auc  # noqa: E402


def label_cells(rows_path: Path, labels_path: Path, aucs_path: Path) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """(label, type scores [rows, 3], positives, best single signal's AUC) per label with 2+ rows, against the
    unlabelled rows, as `--labels` scores them (a row whose translation is not the labelled text is left out)."""
    labels = read_error_labels(labels_path)
    aucs = json.loads(aucs_path.read_text(encoding="utf-8"))["labels"]
    rows = [json.loads(line) for line in rows_path.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if labels[r["id"]].translation is None or same_text(labels[r["id"]].translation,
                                                                                  r["translation"])]
    scores = np.array([[r["type_scores"][t] for t in ERROR_TYPES] for r in rows])
    cells = []
    for label in LABEL_TYPES:
        pos = np.array([label in labels[r["id"]].labels for r in rows])
        keep = pos | np.array([not labels[r["id"]].labels for r in rows])
        if pos.sum() >= 2 and label in aucs:
            cells.append((f"{rows_path.stem}/{label}", scores[keep], pos[keep], aucs[label]["best_auc"]))
    return cells


def leads(cells: list, offset: np.ndarray) -> list[float]:
    """Per cell, the AUC of the largest type score (with `offset` added per type) minus the best single signal's."""
    return [roc_auc((s + offset).max(1), p) - best for _, s, p, best in cells]


def best_offsets(cells: list, grid: np.ndarray) -> list[tuple[float, float, float, list[float]]]:
    """(smallest lead, omission offset, repetition offset, leads) for every pair of offsets on `grid`, the largest
    smallest lead first."""
    results = [(min(ls), o, r, ls) for o in grid for r in grid for ls in [leads(cells, np.array([0.0, o, r]))]]
    return sorted(results, key=lambda x: -x[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="ROWS.jsonl:LABELS.tsv:AUCS.json, one per labelled triage run")
    ap.add_argument("--span", type=float, default=3.0, help="offsets from -span to +span")
    ap.add_argument("--step", type=float, default=0.25)
    args = ap.parse_args()
    cells = [c for run in args.runs for c in label_cells(*map(Path, run.split(":")))]
    leads0 = leads(cells, np.zeros(3))
    print("no offsets: smallest lead", f"{min(leads0):+.3f};", " ".join(f"{c[0]} {x:+.3f}" for c, x in zip(cells, leads0)))
    for low, omission, repetition, leads_ in best_offsets(cells, np.arange(-args.span, args.span + args.step / 2,
                                                                          args.step))[:3]:
        print(f"omission {omission:+.2f}, repetition {repetition:+.2f}: smallest lead {low:+.3f};",
              " ".join(f"{c[0]} {x:+.3f}" for c, x in zip(cells, leads_)))


if __name__ == "__main__":
    main()
