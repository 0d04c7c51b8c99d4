"""Decoding-rule sweep for learned aligners on the held-out dev (500 Europarl pairs, silver S/P) and Biçici.

Word matrices ([target words, source words + no-source]) of each aligner, and of the embedded model's raw
cross-attention (one layer, head mean), are computed once per set and cached in --cache; every rule is then
scored from the cache. Rules are chosen on dev; Biçici is printed beside them for the README, never used to choose.

    nice -n 10 python scripts/learned_decode_sweep.py --aligner default --aligner runs/aligner-mix [--rules ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import pickle
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aligndebug.extract import encode_pair, forward_batch, length_batches  # noqa: E402
from aligndebug.gold import GoldAlignment, read_gold  # noqa: E402
from aligndebug.learned import links_from_word_matrix, load_aligner  # noqa: E402
from aligndebug.learned_train import read_silver  # noqa: E402
from aligndebug.metrics import corpus_counts  # noqa: E402
from aligndebug.models import load_model  # noqa: E402
from aligndebug.pairs import iter_pairs  # noqa: E402
from aligndebug.words import pool_to_words  # noqa: E402


def load_sets(data: Path, eflomal: Path):
    """{'dev': (src, tgt, golds), 'bicici': (src, tgt, golds)} as train_embedded_aligner.py builds them."""
    train = data / "train" / "europarl-comtrans-deen"
    held = data / "heldout" / "europarl-deen-500"
    pairs = list(iter_pairs(train / "train.de", train / "train.en"))
    lengths = [(len(p.src_words), len(p.tgt_words)) for p in pairs]
    heldout = {int(x) for x in (held / "lines.txt").read_text().split()}
    europarl, efl = read_silver(train / "silver.align", lengths), read_silver(eflomal, lengths)
    dev_idx = [k for k, p in enumerate(pairs) if p.line in heldout]
    dev_golds = [GoldAlignment.from_links(sure=(europarl[k] or set()) & (efl[k] or set()),
                                          possible=(europarl[k] or set()) | (efl[k] or set())) for k in dev_idx]
    gold_dir = data / "gold" / "bicici-deen-gold"
    test = list(iter_pairs(gold_dir / "test.de", gold_dir / "test.en"))
    gold = read_gold(gold_dir / "de-en.wa", base=0, sentences=[(len(p.src_words), len(p.tgt_words)) for p in test],
                     skip_invalid=True)
    return {"dev": ([pairs[k].src_words for k in dev_idx], [pairs[k].tgt_words for k in dev_idx], dev_golds),
            "bicici": ([p.src_words for p in test], [p.tgt_words for p in test], list(gold))}


def attention_matrices(bundle, encoded, layer: int, batch_size: int = 32) -> list[np.ndarray]:
    """Raw cross-attention of one layer, head mean, label rows (naive), pooled like the learned matrices:
    [target words, source words + 1], the last column the mass on special source tokens."""
    out: list[np.ndarray] = [None] * len(encoded)  # type: ignore[list-item]
    for idx in length_batches([len(e.src_ids) + len(e.label_ids) for e in encoded], batch_size):
        recs = forward_batch(bundle, [encoded[i] for i in idx], keep=("cross",),
                             reduce=lambda kind, m: m[layer].mean(0))
        for i, rec in zip(idx, recs):
            e = encoded[i]
            nulls = np.where(e.src_word_ids < 0, len(e.src_words), e.src_word_ids)
            out[i] = pool_to_words(rec.cross, nulls, e.tgt_word_ids, len(e.src_words) + 1, len(e.tgt_words))
    return out


def matrices(bundle, name: str, sets, cache: Path) -> dict[str, list[np.ndarray]]:
    """Cached word matrices of aligner folder `name` ('default', a path, or 'attn:LAYER') for every set."""
    key = name.replace("/", "_").replace(":", "_")
    path = cache / f"{key}.pkl"
    if path.exists() and not name.startswith("attn:"):
        ok = path.stat().st_mtime >= (Path(name) / "aligner.safetensors").stat().st_mtime if Path(name).is_dir() else True
        if ok:
            return pickle.loads(path.read_bytes())
    elif path.exists():
        return pickle.loads(path.read_bytes())
    result = {}
    aligner = None if name.startswith("attn:") else load_aligner(name, bundle)
    for set_name, (src, tgt, _) in sets.items():
        enc = [encode_pair(bundle, s, t, i) for i, (s, t) in enumerate(zip(src, tgt))]
        if aligner is None:
            result[set_name] = attention_matrices(bundle, enc, int(name.split(":")[1]))
        else:
            aligner.module.eval()
            mats: list[np.ndarray] = [None] * len(enc)  # type: ignore[list-item]
            for idx in length_batches([len(e.src_ids) + len(e.label_ids) for e in enc], 32):
                for i, m in zip(idx, aligner.word_matrices(bundle, [enc[i] for i in idx])):
                    mats[i] = m
            result[set_name] = mats
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(result))
    return result


def score(mats: Sequence[np.ndarray], golds, rule: Callable[[np.ndarray], set]) -> tuple[float, float, float]:
    c = corpus_counts([rule(m) for m in mats], golds)
    return c.aer, c.precision, c.recall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "datasets")
    ap.add_argument("--eflomal", type=Path, default=ROOT / "runs" / "silver.eflomal.align")
    ap.add_argument("--aligner", action="append", default=[], help="aligner folder ('default': the shipped one)")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "sweep-cache")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for every (matrix, rule) score")
    args = ap.parse_args(argv)
    sets = load_sets(args.data, args.eflomal)
    bundle = load_model("default")
    results = []
    for name in args.aligner or ["default"]:
        mats = matrices(bundle, name, sets, args.cache)
        for rule, thr in [("argmax", None), ("argmax", 0.3), ("bidir", 0.2), ("bidir", 0.3), ("threshold", 0.3)]:
            row = {"matrix": name, "rule": rule, "threshold": thr}
            for s in sets:
                a, p, r = score(mats[s], sets[s][2], lambda m: links_from_word_matrix(m, rule, thr))
                row[s] = {"aer": round(a, 4), "precision": round(p, 4), "recall": round(r, 4)}
            results.append(row)
            print(f"{name:<28} {rule}@{thr}: dev {row['dev']['aer']:.4f}  bicici {row['bicici']['aer']:.4f} "
                  f"(P {row['bicici']['precision']:.3f} R {row['bicici']['recall']:.3f})", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
