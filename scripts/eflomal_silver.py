"""Silver links for training an aligner: eflomal (model 3) on a parallel text, both directions, grow-diag-final-and.

The text is lowercased for eflomal (as in scripts/eflomal_baseline.py); links index the words as they are
in the files, so they fit the original cased text. No test set is mixed in: these links train an aligner
that is then scored on gold sets it never saw.

    nice -n 10 python scripts/eflomal_silver.py --src train.de --tgt train.en --out silver.eflomal.align
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from aligndebug.gold import write_pharaoh
from aligndebug.pairs import iter_pairs
from aligndebug.symmetrize import grow_diag_final_and


def _read_links(path: Path) -> list[set[tuple[int, int]]]:
    with open(path, encoding="utf-8") as f:
        return [{tuple(map(int, tok.split("-"))) for tok in line.split()} for line in f]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, required=True)
    ap.add_argument("--tgt", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="Pharaoh file (0-based, source-target), one line per pair")
    ap.add_argument("--samplers", type=int, default=2)
    ap.add_argument("--length", type=float, default=1.0, help="eflomal relative number of iterations")
    args = ap.parse_args(argv)
    try:
        from eflomal import Aligner
    except ImportError:
        print("eflomal is not installed: pip install eflomal", file=sys.stderr)
        return 2
    pairs = list(iter_pairs(args.src, args.tgt))
    src = [" ".join(p.src_words).lower() + "\n" for p in pairs]
    tgt = [" ".join(p.tgt_words).lower() + "\n" for p in pairs]
    tmp = Path(tempfile.mkdtemp(prefix="eflomal_silver_"))
    start = time.time()
    Aligner(model=3, n_samplers=args.samplers, rel_iterations=args.length).align(
        iter(src), iter(tgt), links_filename_fwd=str(tmp / "fwd"), links_filename_rev=str(tmp / "rev"), quiet=True)
    fwd, rev = _read_links(tmp / "fwd"), _read_links(tmp / "rev")
    if len(fwd) != len(pairs) or len(rev) != len(pairs):
        print(f"expected {len(pairs)} alignments, got {len(fwd)} forward / {len(rev)} reverse", file=sys.stderr)
        return 1
    n = write_pharaoh([grow_diag_final_and(f, r) for f, r in zip(fwd, rev)], args.out)
    print(f"{n} lines of grow-diag-final-and links in {args.out} ({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
