"""What issue 16 adds to `aligndebug triage`: ALTI+ traced in the signal pass, the source gain (a second pass with
an empty source), the learned aligner's signals (read off the signal pass) and the learned combination.

Five kinds of run of `runner.run_triage` on the same sources (the model translates, then forces), 1 thread,
process CPU time (other load on the machine does not count):

  (plain)   Fisher's method, no ALTI+ (`alti.supports` patched to refuse the model), no source gain (its
            pass patched out) and no aligner: triage before issue 16
  (fisher)  `--combine fisher`: Fisher's method with ALTI+ traced in the signal pass, the source gain and the
            aligner
  (nogain)  ALTI+ and the learned combination without the source gain (its pass patched out): what the
            issue's two additions cost on their own
  (noalign) the default without the aligner (`--aligner none`): what the aligner's signals add
  (learned) the default: ALTI+, source gain, the aligner and the learned combination (synthetic variants
            forced, the fits, scoring)

    OMP_NUM_THREADS=1 python bench/bench_triage.py --n 500 --repeats 3
    OMP_NUM_THREADS=1 python bench/bench_triage.py --n 500 --repeats 6 --kinds plain,learned   # more rounds of the two
    OMP_NUM_THREADS=1 python bench/bench_triage.py --src datasets/train/europarl-comtrans-deen/train.de --n 2000 \
        --kinds plain,learned   # a larger set: the fit's cost is fixed, the rest grows with the set

Printed: each run's time, and each kind against the plain one twice: the fastest run of each (best of the
repeats), and run by run within each round of the five (the runs of a round follow each other, so the
machine's drift between rounds moves their ratio less).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from contextlib import ExitStack
from unittest import mock

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aligndebug import alti, runner  # noqa: E402
from aligndebug.models import load_model  # noqa: E402
from aligndebug.pairs import iter_lines  # noqa: E402
from aligndebug.runner import run_triage  # noqa: E402


KINDS = ("plain", "fisher", "nogain", "noalign", "learned")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="sentences: the first N of --src")
    ap.add_argument("--src", type=Path, default=REPO / "datasets/heldout/europarl-deen-500/test.de",
                    help="sources, one a line (.gz read too; default: the 500 held-out Europarl sources)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each, interleaved; the fastest counts")
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help="the kinds of run, comma-separated (plain is always run: the others are measured against it)")
    args = ap.parse_args()
    kinds = ["plain"] + [k for k in KINDS[1:] if k in args.kinds.split(",")]
    unknown = set(args.kinds.split(",")) - set(KINDS)
    if unknown:
        ap.error(f"unknown kinds {sorted(unknown)}: expected some of {', '.join(KINDS)}")
    torch.set_num_threads(1)
    sources = [text for _, (_, text) in zip(range(args.n), iter_lines(args.src))]
    bundle = load_model("default")
    rounds: dict[str, list[float]] = {}  # name -> its runs' times, round by round
    for name in [n for _ in range(args.repeats) for n in kinds]:
        with ExitStack() as patches:
            if name == "plain":
                patches.enter_context(mock.patch.object(alti, "supports", lambda model: False))
            if name in ("plain", "nogain"):
                patches.enter_context(mock.patch.object(runner, "prior_seq_logprobs",
                                                        lambda _b, encoded, _bs: np.full(len(encoded), np.nan)))
            t0 = time.process_time()
            rows = run_triage(bundle, sources, batch_size=args.batch_size,
                              combine="fisher" if name in ("plain", "fisher") else "learned",
                              aligner="none" if name in ("plain", "noalign") else "default")
            took = time.process_time() - t0
        rounds.setdefault(name, []).append(took)
        print(f"{name:8s} {took:7.1f} s CPU  ({len(rows)} rows, combine {rows.calibration.combine})", flush=True)
    for name in kinds[1:]:
        # a round's runs follow each other, so their ratio is less moved by the machine's drift between rounds
        paired = np.array(rounds[name]) / np.array(rounds["plain"])
        best = min(rounds[name]) / min(rounds["plain"])
        print(f"{name} / plain: {best:.2f}x (best of {args.repeats} each); within each round "
              + ", ".join(f"{r:.2f}x" for r in paired) + f" (median {np.median(paired):.2f}x)")


if __name__ == "__main__":
    main()
