"""Decoding-rule sweep for learned aligners on the held-out dev (500 Europarl pairs, silver S/P) and Biçici.

Word matrices ([target words, source words + no-source]) of each aligner, and of the embedded model's raw
cross-attention (one layer, head mean), are computed once per set and cached in --cache; every rule is then
scored from the cache. Rules are chosen on dev; Biçici is printed beside them for the README, never used to choose.

    nice -n 10 python scripts/learned_decode_sweep.py --aligner default --aligner runs/aligner-mix [--rules ...]
"""

from __future__ import annotations

import argparse
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
from aligndebug.learned import DEFAULT_ALIGNER_DIR, links_from_word_matrix, load_aligner  # noqa: E402
from aligndebug.learned_train import read_silver  # noqa: E402
from aligndebug.metrics import corpus_counts  # noqa: E402
from aligndebug.models import load_model  # noqa: E402
from aligndebug.pairs import iter_pairs  # noqa: E402
from aligndebug.symmetrize import grow_diag_final_and  # noqa: E402
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
    folder = None if name.startswith("attn:") else (DEFAULT_ALIGNER_DIR if name == "default" else Path(name))
    stamp = "" if folder is None else f"-{int((folder / 'aligner.safetensors').stat().st_mtime)}"
    path = cache / (name.replace("/", "_").replace(":", "_") + stamp + ".pkl")  # a retrained folder gets a new key
    if path.exists():
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


def _share(m: np.ndarray, axis: int) -> np.ndarray:
    t = m.sum(axis, keepdims=True)
    return np.divide(m, t, out=np.zeros_like(m), where=t > 0)


def gdfa_rule(m: np.ndarray, reverse_share: float = 0.5) -> set:
    """Tried, not kept: the matrix read as two directional aligners symmetrised by grow-diag-final-and. Forward: each
    target word's argmax (no-source included); reverse: each source word's best target word by its share of the
    source word's column, kept when that share is >= `reverse_share`."""
    n = m.shape[1] - 1
    if m.shape[0] == 0 or n == 0:
        return set()
    cols = m.argmax(1)
    fwd = {(int(c), t) for t, c in enumerate(cols) if c < n}
    cs = _share(m[:, :n], 0)
    rows = cs.argmax(0)
    rev = {(s, int(r)) for s, r in enumerate(rows) if cs[r, s] >= reverse_share and m[r, s] > 0}
    return grow_diag_final_and(fwd, rev)


def intersection_rule(m: np.ndarray) -> set:
    """Tried, not kept: links that are both the target word's argmax and the source word's best target word."""
    n = m.shape[1] - 1
    if m.shape[0] == 0 or n == 0:
        return set()
    cols = m.argmax(1)
    rows = _share(m[:, :n], 0).argmax(0)
    return {(int(c), t) for t, c in enumerate(cols) if c < n and rows[c] == t}


def geometric_mix(a: list[np.ndarray], b: list[np.ndarray], alpha: float) -> list[np.ndarray]:
    """Row-renormalised a^(1-alpha) * b^alpha (e.g. a learned matrix and the raw attention of one layer)."""
    out = []
    for x, y in zip(a, b):
        m = np.exp((1 - alpha) * np.log(x + 1e-9) + alpha * np.log(y + 1e-9))
        out.append(m / m.sum(1, keepdims=True))
    return out


RULES = [("argmax", None), ("argmax", 0.3), ("bidir", 0.2), ("bidir", 0.25), ("bidir", 0.3), ("bidir", 0.35),
         ("threshold", 0.3)]
EXPLORED = {"gdfa@0.3": lambda m: gdfa_rule(m, 0.3), "gdfa@0.5": lambda m: gdfa_rule(m, 0.5),
            "intersection": intersection_rule}


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
    ap.add_argument("--average", action="append", default=[],
                    help="A,B[,...]: also score the mean of these aligners' word matrices (each also given by --aligner)")
    ap.add_argument("--attention-mix", type=float, action="append", default=[],
                    help="also score each aligner's matrix mixed geometrically with layer --attention-layer's raw "
                         "attention (head mean) with this weight")
    ap.add_argument("--attention-layer", type=int, default=1)
    ap.add_argument("--explored", action="store_true", help="also score the rules tried and not kept (gdfa, intersection)")
    args = ap.parse_args(argv)
    sets = load_sets(args.data, args.eflomal)
    bundle = load_model("default")
    results = []
    names = args.aligner or ["default"]
    variants: list[tuple[str, dict]] = [(n, matrices(bundle, n, sets, args.cache)) for n in names]
    found = dict(variants)
    for spec in args.average:
        parts = spec.split(",")
        missing = [p for p in parts if p not in found]
        if missing:
            ap.error(f"--average {spec}: {missing} not given with --aligner")
        variants.append((f"mean({spec})", {s: [np.mean(ms, axis=0) for ms in zip(*[found[p][s] for p in parts])]
                                           for s in sets}))
    if args.attention_mix:
        attn = matrices(bundle, f"attn:{args.attention_layer}", sets, args.cache)
        for n in names:
            for alpha in args.attention_mix:
                variants.append((f"{n}*attn{args.attention_layer}^{alpha:g}",
                                 {s: geometric_mix(found[n][s], attn[s], alpha) for s in sets}))
    for name, mats in variants:
        rules = [(f"{r}" + ("" if t is None else f"@{t:g}"), lambda m, r=r, t=t: links_from_word_matrix(m, r, t))
                 for r, t in RULES]
        if args.explored:
            rules += list(EXPLORED.items())
        for label, rule in rules:
            row = {"matrix": name, "rule": label}
            for s in sets:
                a, p, r = score(mats[s], sets[s][2], rule)
                row[s] = {"aer": round(a, 4), "precision": round(p, 4), "recall": round(r, 4)}
            results.append(row)
            print(f"{name:<40} {label:<14} dev {row['dev']['aer']:.4f}   Biçici {row['bicici']['aer']:.4f} "
                  f"(P {row['bicici']['precision']:.3f} R {row['bicici']['recall']:.3f})", flush=True)
    kept = {f"{r}" + ("" if t is None else f"@{t:g}") for r, t in RULES}
    for name, _ in variants:
        for among, ok in (("the decoding rules", lambda r: r in kept), ("all rules tried", lambda r: True)):
            if among == "all rules tried" and not args.explored:
                continue
            best = min((r for r in results if r["matrix"] == name and ok(r["rule"])), key=lambda r: r["dev"]["aer"])
            print(f"chosen on dev among {among} for {name}: {best['rule']} (dev {best['dev']['aer']:.4f}, "
                  f"Biçici {best['bicici']['aer']:.4f})")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
