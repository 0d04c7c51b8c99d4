"""The app's test-set page: one pass for scores and triage against the two passes it used to make.

  (two)  `runner.score_stream` (per-head grid, as with a gold file) and `runner.run_triage`, one after the other
  (one)  `runner.score_and_triage`: both from the same Records

Same sentences (Biçici de-en, with gold), same model, 1 thread, process CPU time, best of --repeats.

    python bench/bench_testset.py --n 100 --repeats 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from bench_extract import load_sentences  # noqa: E402

from aligndebug.rows import ScoreOptions  # noqa: E402
from aligndebug.models import load_model  # noqa: E402
from aligndebug.runner import run_triage, score_and_triage, score_stream  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    bundle = load_model(args.model)
    pairs, golds, data = load_sentences(args.n, "bicici")
    opts = ScoreOptions(method="naive", layer=1, per_head=True)
    sources, targets = [p.source for p in pairs], [p.target for p in pairs]

    def two() -> None:
        _, rows = score_stream(bundle, pairs, golds, opts)
        list(rows)
        run_triage(bundle, sources, targets, layer=1, method="naive")

    def one() -> None:
        score_and_triage(bundle, pairs, golds, None, opts, triage_layer=1)

    times = {"two": [], "one": []}
    for _ in range(args.repeats):
        for name, fn in (("two", two), ("one", one)):
            t = time.process_time()
            fn()
            times[name].append(time.process_time() - t)
    two_s, one_s = min(times["two"]), min(times["one"])
    print(f"model {bundle.name}; {data}; 1 thread; best of {args.repeats}, process CPU time")
    print(f"(two) score_stream + run_triage     {args.n / two_s:7.1f} sent/s ({two_s:.2f} s)")
    print(f"(one) score_and_triage              {args.n / one_s:7.1f} sent/s ({one_s:.2f} s)")
    print(f"(two)/(one) = {two_s / one_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
