"""Train the embedded model's learned aligner on datasets/train/europarl-comtrans-deen and score it.

Training pairs: the Europarl lines the embedded model trained on (the 500 held-out lines of
datasets/heldout/europarl-deen-500 are left out). Silver links: the ComTrans links shipped with the data
(`--silver europarl`), eflomal's grow-diag-final-and links (`--silver eflomal`, made by
scripts/eflomal_silver.py), or both teachers (`--silver mix`: each target word's distribution is the mean of the
two teachers'). Dev: the 500 held-out pairs, scored against a silver gold that favours neither
teacher: Sure = links both silvers agree on, Possible = links either gives. After training the chosen aligner is
scored on Biçici's gold (lowercased, tokenized; sentence 63 skipped) with each decoding rule, and the time to align
1,000 sentences is measured.

The shipped aligner (aligndebug/default_model/aligner/) was made by:

    python scripts/eflomal_silver.py --src $T/train.de --tgt $T/train.en --out runs/silver.eflomal.align
    python scripts/train_embedded_aligner.py --silver mix --keys output --seed 2 --lr 1e-3 --epochs 3 --out runs/a3
    python scripts/train_embedded_aligner.py --silver mix --init runs/a3 --seed 3 --lr 3e-4 --epochs 2 --out runs/a5
    python scripts/train_embedded_aligner.py --silver mix --init runs/a5 --seed 4 --lr 2e-4 --epochs 2 --out runs/a7
    python scripts/train_embedded_aligner.py --silver mix --init runs/a7 --seed 5 --lr 1.5e-4 --epochs 2 --out runs/a9
    python scripts/train_embedded_aligner.py --eval-only --out runs/a9 --ship   # a9: the lowest dev AER

(T=datasets/train/europarl-comtrans-deen; run with nice -n 10 on a shared machine.)

The same command resumes from <out>/checkpoint after a kill. `--ship` copies the result to
aligndebug/default_model/aligner/, where `--method learned` finds it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aligndebug.gold import GoldAlignment, read_gold  # noqa: E402
from aligndebug.learned import CARD, WEIGHTS, DEFAULT_ALIGNER_DIR, load_aligner  # noqa: E402
from aligndebug.learned_train import read_silver, train_aligner  # noqa: E402
from aligndebug.metrics import corpus_counts  # noqa: E402
from aligndebug.models import load_model  # noqa: E402
from aligndebug.pairs import iter_pairs  # noqa: E402

RULES = [("argmax", None), ("argmax", 0.3), ("bidir", 0.2), ("bidir", 0.25), ("bidir", 0.3), ("bidir", 0.35),
         ("threshold", 0.3)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "datasets")
    ap.add_argument("--silver", default="eflomal",
                    help="'europarl', 'eflomal' (runs/silver.eflomal.align), 'mix' (both teachers, their target "
                         "distributions averaged) or a path")
    ap.add_argument("--eflomal", type=Path, default=ROOT / "runs" / "silver.eflomal.align")
    ap.add_argument("--objective", default="supervised", choices=("supervised", "self", "both"))
    ap.add_argument("--layer", default="all")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lowercase", type=float, default=0.5, help="share of pairs seen lowercased (Biçici is lowercased)")
    ap.add_argument("--max-pairs", type=int, default=None)
    ap.add_argument("--keys", choices=("all", "output"), default="all",
                    help="keys from a mix of every encoder layer (all) or from the encoder output only (the shipped aligner)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", type=Path, default=None,
                    help="start from this aligner's weights (e.g. the shipped one) with a fresh optimizer and schedule")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ship", action="store_true", help=f"copy the result to {DEFAULT_ALIGNER_DIR}")
    ap.add_argument("--eval-only", action="store_true", help="score the aligner in --out without training")
    args = ap.parse_args(argv)

    train = args.data / "train" / "europarl-comtrans-deen"
    held = args.data / "heldout" / "europarl-deen-500"
    pairs = list(iter_pairs(train / "train.de", train / "train.en"))
    lengths = [(len(p.src_words), len(p.tgt_words)) for p in pairs]
    heldout = {int(x) for x in (held / "lines.txt").read_text().split()}  # 1-based line numbers
    europarl = read_silver(train / "silver.align", lengths)
    eflomal = read_silver(args.eflomal, lengths) if args.eflomal.exists() else None
    mix = [(e, c) for e, c in zip(eflomal, europarl)] if eflomal is not None else None
    silver = {"europarl": europarl, "eflomal": eflomal, "mix": mix}.get(args.silver)
    if silver is None:
        silver = read_silver(Path(args.silver), lengths) if args.silver not in ("europarl", "eflomal", "mix") else None
    if silver is None:
        print(f"no silver links for {args.silver!r} (eflomal: run scripts/eflomal_silver.py first)", file=sys.stderr)
        return 2
    keep = [k for k, p in enumerate(pairs) if p.line not in heldout][: args.max_pairs]
    dev_idx = [k for k, p in enumerate(pairs) if p.line in heldout]
    dev_golds = []
    for k in dev_idx:
        a, b = europarl[k] or set(), (eflomal[k] if eflomal else europarl[k]) or set()
        dev_golds.append(GoldAlignment.from_links(sure=a & b, possible=a | b))
    dev = ([pairs[k].src_words for k in dev_idx], [pairs[k].tgt_words for k in dev_idx], dev_golds)

    bundle = load_model("default")
    if not args.eval_only:
        start = time.time()
        train_aligner(bundle, [pairs[k].src_words for k in keep], [pairs[k].tgt_words for k in keep],
                      [silver[k] for k in keep], args.out, objective=args.objective,
                      layers=args.layer if args.layer == "all" else [int(x) for x in args.layer.split(",")],
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, dev=dev, lowercase=args.lowercase,
                      enc_layers=None if args.keys == "output" else "all", seed=args.seed, init=args.init,
                      data=f"datasets/train/europarl-comtrans-deen minus heldout-500, silver={args.silver}"
                           + (" (eflomal grow-diag-final-and + ComTrans links, target distributions averaged)"
                              if args.silver == "mix" else ""))
        print(f"trained in {time.time() - start:.0f} s (this call)")

    aligner = load_aligner(args.out, bundle)
    gold_dir = args.data / "gold" / "bicici-deen-gold"
    test = list(iter_pairs(gold_dir / "test.de", gold_dir / "test.en"))
    gold = read_gold(gold_dir / "de-en.wa", base=0, sentences=[(len(p.src_words), len(p.tgt_words)) for p in test],
                     skip_invalid=True)
    results = {"aligner": str(args.out), "card_steps": aligner.card.get("steps"),
               "train_seconds": aligner.card.get("train_seconds"), "bicici": {}, "dev": {}}
    for rule, thr in RULES:
        name = f"{rule}" + ("" if thr is None else f"@{thr:g}")
        links = aligner.align(bundle, [p.src_words for p in test], [p.tgt_words for p in test], rule, thr)
        c = corpus_counts(links, gold)
        dl = aligner.align(bundle, dev[0], dev[1], rule, thr)
        d = corpus_counts(dl, dev[2])
        results["bicici"][name] = {"aer": round(c.aer, 4), "precision": round(c.precision, 4), "recall": round(c.recall, 4)}
        results["dev"][name] = round(d.aer, 4)
        print(f"{name:<14} dev AER {d.aer:.4f}   Biçici AER {c.aer:.4f} (P {c.precision:.3f} R {c.recall:.3f})")
    best = min(RULES, key=lambda r: results["dev"][r[0] + ("" if r[1] is None else f"@{r[1]:g}")])
    card = json.loads((args.out / CARD).read_text(encoding="utf-8"))
    card["decode"] = {"rule": best[0], "threshold": best[1],
                      "chosen_on": "lowest dev AER (held-out 500, silver S/P) among " + ", ".join(results["dev"])}
    card["eval"] = {"bicici_aer": results["bicici"], "dev_aer": results["dev"]}
    (args.out / CARD).write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"decoding rule chosen on dev: {best}")
    src2, tgt2 = (dev[0] * 2)[:1000], (dev[1] * 2)[:1000]
    t = time.time()
    aligner.align(bundle, src2, tgt2)
    results["seconds_per_1000"] = round(time.time() - t, 1)
    print(f"align 1,000 sentences: {results['seconds_per_1000']} s")
    (args.out / "eval.json").write_text(json.dumps(results, indent=1) + "\n")
    if args.ship:
        DEFAULT_ALIGNER_DIR.mkdir(parents=True, exist_ok=True)
        for name in (WEIGHTS, CARD):
            shutil.copyfile(args.out / name, DEFAULT_ALIGNER_DIR / name)
        print(f"shipped to {DEFAULT_ALIGNER_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
