"""Statistical word-aligner baseline for the README: eflomal on Europarl + the Bicici test set.

Trains eflomal (Östling & Tiedemann 2016; `pip install eflomal`, GPLv3, run as a separate
tool, not imported by the package) on the tokenized Europarl training text lowercased to match
the gold, with the 100 Bicici test sentences appended (as is usual for unsupervised aligners:
they align the test text together with the training text). Both directions are symmetrized with
grow-diag-final-and and scored against the human gold `de-en.wa` with aligndebug's reader and
AER. Gold sentence 63 holds a link past the end of its English sentence; it is skipped and
said so (a second line scores all 100 sentences with the gold read without length checks).

    nice -n 10 python scripts/eflomal_baseline.py --data datasets [--out DIR]

Data: Europarl (statmt.org; NLTK comtrans sample) and E. Biçici's German-English gold
alignments (PhD thesis, Koç University, 2011).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from aligndebug.gold import read_gold, write_pharaoh
from aligndebug.metrics import corpus_counts
from aligndebug.pairs import iter_pairs, pair_lengths
from aligndebug.symmetrize import grow_diag_final_and


def _read_links(path: Path) -> list[set[tuple[int, int]]]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            out.append({tuple(map(int, tok.split("-"))) for tok in line.split()})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "datasets")
    ap.add_argument("--out", type=Path, default=None, help="folder for the symmetrized Pharaoh output (default: a temporary folder)")
    ap.add_argument("--samplers", type=int, default=2, help="eflomal independent samplers (threads); 2 suits a 2-core machine")
    ap.add_argument("--length", type=float, default=1.0, help="eflomal relative number of iterations")
    args = ap.parse_args(argv)

    try:
        from eflomal import Aligner
    except ImportError:
        print("eflomal is not installed: pip install eflomal", file=sys.stderr)
        return 2

    train = args.data / "train" / "europarl-comtrans-deen"
    gold_dir = args.data / "gold" / "bicici-deen-gold"
    src_lines: list[str] = []
    tgt_lines: list[str] = []
    for p in iter_pairs(train / "train.de", train / "train.en"):
        src_lines.append(" ".join(p.src_words).lower())
        tgt_lines.append(" ".join(p.tgt_words).lower())
    n_train = len(src_lines)
    test = list(iter_pairs(gold_dir / "test.de", gold_dir / "test.en"))  # test.de starts with a BOM
    for p in test:  # the test text is lowercased already; lower() again is harmless
        src_lines.append(" ".join(p.src_words).lower())
        tgt_lines.append(" ".join(p.tgt_words).lower())
    from importlib.metadata import version

    print(f"eflomal {version('eflomal')}, model 3 (IBM1+HMM+fertility), {args.samplers} samplers, relative iterations {args.length}")
    print(f"training text: {n_train} Europarl pairs + {len(test)} Bicici test pairs (lowercased)")

    out_dir = args.out or Path(tempfile.mkdtemp(prefix="eflomal_baseline_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    fwd_path, rev_path = out_dir / "all.fwd", out_dir / "all.rev"
    start_wall, start_cpu = time.time(), time.process_time()
    aligner = Aligner(model=3, n_samplers=args.samplers, rel_iterations=args.length)
    aligner.align((s + "\n" for s in src_lines), (t + "\n" for t in tgt_lines),
                  links_filename_fwd=str(fwd_path), links_filename_rev=str(rev_path), quiet=True)
    wall = time.time() - start_wall
    # eflomal runs as a child binary: its CPU time shows in the children's times, not ours
    child = os.times()
    print(f"eflomal: {wall:.1f} s wall, {child.children_user + child.children_system:.1f} s CPU in the eflomal binary "
          f"(+{time.process_time() - start_cpu:.1f} s Python)")

    fwd = _read_links(fwd_path)[n_train:]
    rev = _read_links(rev_path)[n_train:]  # eflomal writes both directions as source-target links
    if len(fwd) != len(test) or len(rev) != len(test):
        print(f"expected {len(test)} test alignments, got {len(fwd)} forward / {len(rev)} reverse", file=sys.stderr)
        return 1
    sym = [grow_diag_final_and(f, r) for f, r in zip(fwd, rev)]
    write_pharaoh(sym, out_dir / "test.gdfa.wa")

    lengths = pair_lengths(test)
    gold = read_gold(gold_dir / "de-en.wa", sentences=lengths, skip_invalid=True)
    print(gold.describe())
    for w in gold.warnings:
        print("warning:", w)
    print(f"{'alignment':<24}{'sentences':>10}{'AER':>8}{'P':>8}{'R':>8}{'F1':>8}{'|A|':>7}")
    for name, pred in (("forward", fwd), ("reverse", rev), ("grow-diag-final-and", sym)):
        c = corpus_counts(pred, gold)
        print(f"{name:<24}{len(gold) - gold.skipped:>10}{c.aer:>8.3f}{c.precision:>8.3f}{c.recall:>8.3f}{c.f1:>8.3f}{c.predicted:>7}")
    # all 100 sentences: the out-of-range link stays in the gold and can never be predicted
    whole = read_gold(gold_dir / "de-en.wa", base=0)
    c = corpus_counts(sym, whole)
    print(f"{'gdfa, all 100 (no check)':<24}{len(whole):>10}{c.aer:>8.3f}{c.precision:>8.3f}{c.recall:>8.3f}{c.f1:>8.3f}{c.predicted:>7}")
    print(f"symmetrized test alignments: {out_dir / 'test.gdfa.wa'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
