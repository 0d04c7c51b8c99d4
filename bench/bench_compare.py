"""`aligndebug compare` against the separate runs it replaces, in one process on the same sentences.

Issue 15's target: compare costs at most 1.1x the sum of the models' `score` times on the same set.
Every run goes through the command line in this process (`aligndebug.cli.main`), so each includes what
a user pays: reading the files, checking the gold, loading the model (compare loads each model once;
the separate runs load it once per command), the passes and the outputs. Measured, per run:

  (1) compare --alignment-only       vs  sum over models of  score --per-head
      (the same work: teacher-forced pass over the reference, AER per layer x head; compare adds
      the bootstrap and the ranked deltas)
  (2) compare (full)                 vs  sum over models of  score --per-head + triage --ref
      (full compare also translates, scores BLEU/chrF and triages, which `score` alone does not)
  (3) compare (full)                 vs  sum over models of  score --per-head   (for the record)

The clock is the process's CPU time (the machine is shared; wall time mostly measures waiting for a
core), 1 thread; each command is timed --repeats times, interleaved, and the minimum is used. No HTML
(the report reloads each model for its heatmaps; time it with --html if wanted).

    python bench/bench_compare.py --n 100 --model default --model default
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aligndebug.cli import main as cli  # noqa: E402
from aligndebug.datasets import load_testset  # noqa: E402
from aligndebug.pairs import iter_lines  # noqa: E402


def write_set(n: int, folder: Path) -> tuple[Path, Path, Path, str]:
    """Bicici de-en (100 sentences with gold) cycled to n lines: source, reference, gold files."""
    ts = load_testset("bicici-deen")
    lines = {role: [t for _, t in iter_lines(ts.path(role))] for role in ("src", "tgt", "gold")}
    files = []
    for role in ("src", "tgt", "gold"):
        path = folder / f"set.{role}"
        base = lines[role]
        path.write_text("".join(base[k % len(base)] + "\n" for k in range(n)), encoding="utf-8")
        files.append(path)
    return files[0], files[1], files[2], f"bicici-deen ({len(lines['src'])} sentences with gold, cycled to {n})"


def timed(argv: list[str]) -> float:
    """CPU seconds of one command (its printed output swallowed); a failing command stops the bench."""
    out = io.StringIO()
    t = time.process_time()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()) as err:
        rc = cli(argv)
    seconds = time.process_time() - t
    if rc != 0:
        raise SystemExit(f"{' '.join(argv[:3])} ... failed ({rc}): {err.getvalue()[-500:]}")
    return seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="models to compare, in order (default: the embedded one twice)")
    ap.add_argument("--n", type=int, default=100, help="sentences")
    ap.add_argument("--repeats", type=int, default=1, help="times each command runs (the minimum is used)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--html", action="store_true", help="also time compare with --html")
    args = ap.parse_args(argv)
    models = args.model or ["default", "default"]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src, tgt, gold, data = write_set(args.n, tmp)
        files = ["--src", str(src), "--tgt", str(tgt)]
        gold_args = ["--gold", str(gold), "--gold-base", "0", "--gold-format", "pharaoh", "--skip-invalid"]
        common = ["--no-progress"]

        def score(m: str) -> list[str]:
            return ["score", "--model", m, *files, *gold_args, "--per-head", "--out", str(tmp / "score.jsonl"), *common]

        def triage(m: str) -> list[str]:
            return ["triage", "--model", m, "--src", str(src), "--ref", str(tgt), "--out", str(tmp / "triage.jsonl"),
                    *common]

        def compare(*extra: str) -> list[str]:
            return ["compare", "--model", *models, *files, *gold_args, "--out", str(tmp / "cmp.jsonl"),
                    "--bootstrap", str(args.bootstrap), *extra, *common]

        timed(score(models[0]))  # warm-up: imports and first-call caches, untimed
        runs: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for k, m in enumerate(models):
                runs.setdefault(f"score {k}", []).append(timed(score(m)))
                runs.setdefault(f"triage {k}", []).append(timed(triage(m)))
            runs.setdefault("compare --alignment-only", []).append(timed(compare("--alignment-only")))
            runs.setdefault("compare", []).append(timed(compare()))
            if args.html:
                runs.setdefault("compare --html", []).append(timed(compare("--html", str(tmp / "cmp.html"))))
    best = {k: min(v) for k, v in runs.items()}
    score_sum = sum(best[f"score {k}"] for k in range(len(models)))
    triage_sum = sum(best[f"triage {k}"] for k in range(len(models)))
    print(f"models {', '.join(models)}; {data}; 1 thread; process CPU time, best of {args.repeats}; "
          f"bootstrap {args.bootstrap}")
    for k, v in best.items():
        print(f"  {k:<26} {v:8.2f} s")
    print(f"(1) compare --alignment-only / sum(score --per-head)          = {best['compare --alignment-only'] / score_sum:.3f}"
          "   (target <= 1.1)")
    print(f"(2) compare / sum(score --per-head + triage --ref)            = {best['compare'] / (score_sum + triage_sum):.3f}"
          "   (target <= 1.1)")
    print(f"(3) compare / sum(score --per-head)  (compare also translates) = {best['compare'] / score_sum:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
