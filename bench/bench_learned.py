"""Time to align N sentence pairs with raw attention and with the learned aligner, through the same runner.

Both runs are `runner.score_stream` over the same forced pairs (the first N of the Europarl training text in
datasets/, German -> English) on the embedded model, batch 16, one thread, rows kept in memory, no gold:
raw attention reads naive rows of layer 1 (the model's view); the learned aligner (the shipped one unless
--aligner) runs its own teacher-forced pass (hidden states, no attention) and its module. Model and aligner
are loaded before the clock starts. The clock is the process's CPU time (the machine is shared; wall time is
printed too); each run is repeated --repeats times, interleaved, and the minimum is used.

    python bench/bench_learned.py --n 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aligndebug.learned import load_aligner  # noqa: E402
from aligndebug.models import load_model  # noqa: E402
from aligndebug.pairs import iter_pairs  # noqa: E402
from aligndebug.rows import ScoreOptions  # noqa: E402
from aligndebug.runner import score_stream  # noqa: E402

TRAIN = REPO / "datasets" / "train" / "europarl-comtrans-deen"


def timed(bundle, pairs, opts) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, links) of one run over `pairs`."""
    cpu, wall = time.process_time(), time.perf_counter()
    totals, rows = score_stream(bundle, iter(pairs), None, opts)
    n_rows = sum(1 for _ in rows)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert n_rows == len(pairs), (n_rows, len(pairs))
    return cpu, wall, totals.links


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="sentence pairs (first N of the Europarl training text)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--aligner", default=None, help="aligner folder (default: the embedded model's)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_model("default")
    aligner = load_aligner(args.aligner, bundle)
    pairs = [p for _, p in zip(range(args.n), iter_pairs(TRAIN / "train.de", TRAIN / "train.en"))]
    runs = {
        "raw attention (naive, layer 1)": ScoreOptions(method="naive", layer=1, batch_size=args.batch_size,
                                                       chunk_size=256),
        "learned (shipped aligner, card rule)": ScoreOptions(
            method="learned", aligner=aligner, batch_size=args.batch_size, chunk_size=256,
            decode=(aligner.card.get("decode") or {}).get("rule", "argmax"),
            threshold=(aligner.card.get("decode") or {}).get("threshold")),
    }
    best: dict[str, tuple[float, float, int]] = {}
    for r in range(args.repeats):
        for name, opts in runs.items():
            cpu, wall, links = timed(bundle, pairs, opts)
            print(f"repeat {r + 1}: {name}: {cpu:.2f} s CPU, {wall:.2f} s wall, {links} links", flush=True)
            if name not in best or cpu < best[name][0]:
                best[name] = (cpu, wall, links)
    print(f"\n{len(pairs)} pairs, batch {args.batch_size}, {args.threads} thread(s), best of {args.repeats} (CPU time):")
    for name, (cpu, wall, _) in best.items():
        print(f"  {name:<40} {cpu:8.2f} s CPU ({len(pairs) / cpu:7.1f} sentences/s), {wall:.2f} s wall")
    (a_cpu, _, _), (l_cpu, _, _) = best.values()
    print(f"  ratio learned / raw attention: {l_cpu / a_cpu:.2f}")


if __name__ == "__main__":
    main()
