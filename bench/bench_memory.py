"""Peak memory of `aligndebug score` (or `triage`) on 1k vs 20k sentences: streaming means it must not grow.

Each run is a fresh `python -m aligndebug.cli score ... --out rows.jsonl` subprocess; its peak
resident set size comes from the kernel (`os.wait4` rusage, ru_maxrss) for that child alone. The
sentences are the tiny test sentences (tests/tiny_models.py) shuffled and joined in ones and twos,
written to temporary files, and scored by a tiny random Marian so the 20k run takes minutes.

A tiny run (--baseline-n sentences) is also measured: most of the peak is the fixed cost of Python,
torch and transformers, so the growth between runs is printed in MB as well as the ratio.
By default runs are made without gold and with gold (`--gold`; the gold set is read into memory,
so that run holds one alignment per sentence).

    python bench/bench_memory.py                   # 1k vs 20k, with and without gold
    python bench/bench_memory.py --command triage  # the same for `aligndebug triage` (forced targets)
    python bench/bench_memory.py --small 1000 --large 20000 --batch-size 32 --chunk-size 256
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def write_corpus(folder: Path, n: int, seed: int = 0) -> dict[str, Path]:
    """n shuffled pairs of one or two tiny sentences, and a Pharaoh gold line each (diagonal, all sure)."""
    import tiny_models as tm

    rng = random.Random(seed)
    paths = {k: folder / f"{k}.{n}.txt" for k in ("src", "tgt", "gold")}
    with open(paths["src"], "w", encoding="utf-8") as fs, open(paths["tgt"], "w", encoding="utf-8") as ft, \
            open(paths["gold"], "w", encoding="utf-8") as fg:
        for _ in range(n):
            ks = rng.sample(range(len(tm.DE)), rng.choice((1, 2)))
            src = " ".join(tm.DE[k] for k in ks)
            tgt = " ".join(tm.EN[k] for k in ks)
            ns, nt = len(src.split()), len(tgt.split())
            fs.write(src + "\n")
            ft.write(tgt + "\n")
            fg.write(" ".join(f"{i}-{min(i, nt - 1)}" for i in range(ns)) + "\n")
    return paths


def peak_rss(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(peak RSS in MiB, seconds, exit code) of one child process."""
    t = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{err[-3000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t, proc.returncode  # ru_maxrss is in KiB on Linux


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model folder (default: a tiny random Marian from tests/tiny_models.py)")
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=20000)
    ap.add_argument("--baseline-n", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--gold", choices=("both", "no", "yes"), default="both", help="score against gold too")
    ap.add_argument("--command", choices=("score", "triage"), default="score")
    args = ap.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the machine is shared; one thread is plenty for a tiny model
    with tempfile.TemporaryDirectory(prefix="aligndebug-mem-") as tmp:
        tmp = Path(tmp)
        if args.model:
            model = args.model
        else:
            import tiny_models as tm

            model = str(tm.save("marian", tmp / "tiny-marian"))
        print(f"model: {model}; batch size {args.batch_size}, chunk size {args.chunk_size}; python {sys.version.split()[0]}")
        golds = {"both": (False, True), "no": (False,), "yes": (True,)}[args.gold] if args.command == "score" else (False,)
        for with_gold in golds:
            peaks = {}
            for n in (args.baseline_n, args.small, args.large):
                p = write_corpus(tmp, n)
                out = tmp / f"rows.{n}.jsonl"
                cmd = [sys.executable, "-m", "aligndebug.cli", args.command, "--model", model, "--src", str(p["src"]),
                       "--tgt", str(p["tgt"]), "--out", str(out), "--batch-size", str(args.batch_size),
                       "--chunk-size", str(args.chunk_size), "--no-progress"]
                if with_gold:
                    cmd += ["--gold", str(p["gold"]), "--gold-base", "0"]
                rss, secs, _ = peak_rss(cmd, env)
                with open(out, "rb") as f:
                    rows = sum(1 for _ in f)
                assert rows == n, f"{rows} rows for {n} sentences"
                peaks[n] = rss
                print(f"  {args.command} {'with' if with_gold else 'without'} gold, {n:>6} sentences: peak RSS {rss:8.1f} MiB "
                      f"({secs:.0f} s wall)")
            small, large = peaks[args.small], peaks[args.large]
            print(f"{args.command} {'with' if with_gold else 'without'} gold: {args.large} vs {args.small} sentences: "
                  f"ratio {large / small:.3f} (target <= 1.10), growth {large - small:+.1f} MiB; "
                  f"fixed cost ({args.baseline_n} sentences) {peaks[args.baseline_n]:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
