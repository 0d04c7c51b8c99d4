"""Triage signals, Fisher combination, learned combination and ALTI+ on held-out synthetic errors.

Data: datasets/heldout/europarl-deen-500 (500 Europarl pairs the embedded model never trained on).
The pairs with 4+ source words are split at random (seed `--seed`) into a *fit* half and an
*evaluation* half. Two suites, each run separately:

* **own**: the targets are the model's own (greedy) translations;
* **reference**: the targets are the human references, forced through the model as if another
  system had written them.

Per suite, on the fit half: the clean rows calibrate today's triage (`triage.calibrate`, the Fisher
score) and fit the learned combination (`combine.fit_with_model`, on synthetic variants of the fit
half). On the evaluation half only: controls are its clean targets, errors are synthetic variants
made from them with another seed (detached / omission / repetition, `combine.make_variants`), all
forced through the model. Printed: ROC-AUC of every signal in its suspect direction, of the Fisher
score, of the learned combination and of ALTI+, errors of each type against the controls.

Timing (`--time`): `triage.run_triage` on the whole set (own translations: translate, force,
calibrate, score) against the same plus ALTI+ on every row, the synthetic variants, their signals
and ALTI+, the fit, and scoring every row with the learned combination.

    python scripts/triage_auc.py --time
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from aligndebug.combine import (ERROR_TYPES, add_alti, fisher_scores, fit_with_model, forced_signal_rows,
                                make_variants, describe)
from aligndebug.extract import translate
from aligndebug.models import load_model
from aligndebug.triage import SIGNALS, calibrate, roc_auc, run_triage, suspect_values

DATA = Path(__file__).resolve().parents[1] / "datasets" / "heldout" / "europarl-deen-500"


def oriented(name: str, rows: list[dict], cal) -> np.ndarray:
    """A signal with its suspect direction as 'high' (undefined values: the least suspect)."""
    if name in SIGNALS:
        return suspect_values(name, rows, cal)
    v = -np.array([r.get(name, np.nan) for r in rows], dtype=np.float64)  # alti_source: low = suspect
    return np.where(np.isnan(v), np.nanmin(v), v)


def run_suite(bundle, name: str, fit_src, fit_tgt, ev_src, ev_tgt, args) -> dict:
    t0 = time.time()
    opts = dict(batch_size=args.batch_size, layer="mean", head="mean", method="shift-att")
    fit_rows = forced_signal_rows(bundle, [{"source": s, "translation": t} for s, t in zip(fit_src, fit_tgt)], **opts)
    cal = calibrate(fit_rows, percentile=95.0, source=f"{name}: fit half",
                    settings={"model": bundle.name, "method": "shift-att", "layer": "mean", "head": "mean"})
    comb = fit_with_model(bundle, fit_rows, seed=args.seed, max_per_type=None, **opts)
    controls = [{"source": s, "translation": t} for s, t in zip(ev_src, ev_tgt)]
    variants = make_variants(controls, seed=args.seed + 1)
    rows = {"control": forced_signal_rows(bundle, controls, **opts)}
    for kind in ERROR_TYPES:
        rows[kind] = forced_signal_rows(bundle, variants[kind], **opts)
    names = [n for n in list(SIGNALS) + ["alti_source"]
             if sum(np.isfinite(r.get(n, np.nan)) for r in rows["control"] if isinstance(r.get(n), float)) > 0]
    table: dict[str, dict[str, float]] = {}
    for kind in ERROR_TYPES:
        both = rows["control"] + rows[kind]
        labels = np.r_[np.zeros(len(rows["control"]), bool), np.ones(len(rows[kind]), bool)]
        for n in names:
            table.setdefault(n, {})[kind] = roc_auc(oriented(n, both, cal), labels)
        table.setdefault("Fisher score (today)", {})[kind] = roc_auc(fisher_scores(both, cal), labels)
        table.setdefault("learned combination", {})[kind] = roc_auc(comb.logit(both), labels)
    return {"table": table, "weights": describe(comb), "n": {k: len(v) for k, v in rows.items()},
            "n_fit": len(fit_rows), "seconds": time.time() - t0, "combiner": comb.to_dict()}


def markdown(table: dict[str, dict[str, float]]) -> str:
    single = {k: v for k, v in table.items() if k not in ("Fisher score (today)", "learned combination")}
    best = {e: max(v[e] for v in single.values()) for e in ERROR_TYPES}
    lines = ["| signal | direction | " + " | ".join(ERROR_TYPES) + " |", "|---|---|" + "---:|" * len(ERROR_TYPES)]
    for name, row in table.items():
        direction = SIGNALS[name][0] if name in SIGNALS else "low" if name == "alti_source" else ""
        label = f"**{name}**" if name in ("Fisher score (today)", "learned combination") else f"`{name}`"
        cells = [f"**{row[e]:.3f}**" if name in single and row[e] == best[e] else f"{row[e]:.3f}" for e in ERROR_TYPES]
        lines.append(f"| {label} | {direction} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def timing(bundle, sources: list[str], args) -> dict:
    t0 = time.time()
    rows = run_triage(bundle, sources, batch_size=args.batch_size)
    t_triage = time.time() - t0
    t1 = time.time()
    rows = list(rows)
    add_alti(bundle, rows, batch_size=args.batch_size)
    comb = fit_with_model(bundle, rows, seed=args.seed, max_per_type=args.max_per_type, batch_size=args.batch_size)
    comb.logit(rows)
    t_extra = time.time() - t1
    return {"triage_s": t_triage, "alti_and_learned_s": t_extra, "ratio": (t_triage + t_extra) / t_triage,
            "max_per_type": args.max_per_type}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", type=Path, default=DATA, help="folder with test.de and test.en")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N pairs (quick runs)")
    ap.add_argument("--suites", default="own,reference")
    ap.add_argument("--time", action="store_true", help="also time triage with and without ALTI+ and the learned combination")
    ap.add_argument("--max-per-type", type=int, default=None, help="variants per error type when timing (default: all)")
    ap.add_argument("--out-json", type=Path)
    args = ap.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    de = (args.data / "test.de").read_text(encoding="utf-8").splitlines()
    en = (args.data / "test.en").read_text(encoding="utf-8").splitlines()
    if args.limit:
        de, en = de[:args.limit], en[:args.limit]
    bundle = load_model(args.model)
    keep = [i for i, s in enumerate(de) if len(s.split()) >= 4]
    perm = np.random.default_rng(args.seed).permutation(keep)
    half = len(perm) // 2
    fit_ids, ev_ids = sorted(perm[:half].tolist()), sorted(perm[half:].tolist())
    result: dict = {"data": str(args.data), "model": bundle.name, "seed": args.seed, "fit_n": len(fit_ids),
                    "eval_n": len(ev_ids)}
    t0 = time.time()
    own = None
    if "own" in args.suites.split(","):
        own = translate(bundle, de, batch_size=args.batch_size)
        result["translate_s"] = time.time() - t0
    for suite in args.suites.split(","):
        tgt = own if suite == "own" else en
        res = run_suite(bundle, suite, [de[i] for i in fit_ids], [tgt[i] for i in fit_ids],
                        [de[i] for i in ev_ids], [tgt[i] for i in ev_ids], args)
        result[suite] = res
        print(f"\n## suite: {suite} (targets: {'the model' + chr(39) + 's own translations' if suite == 'own' else 'references forced as another system'}); "
              f"fit on {res['n_fit']} clean rows + their variants, evaluated on {res['n']}  ({res['seconds']:.0f}s)\n")
        print(markdown(res["table"]))
        print("\nlearned weights (largest first):")
        for line in res["weights"]:
            print("  " + line)
    if args.time:
        result["timing"] = timing(bundle, de, args)
        tm = result["timing"]
        print(f"\ntiming on {len(de)} sentences: triage {tm['triage_s']:.1f}s; + ALTI+ and learned combination "
              f"{tm['alti_and_learned_s']:.1f}s; ratio {tm['ratio']:.2f}x")
    if args.out_json:
        args.out_json.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
