"""Measure how well triage finds broken translations, on a synthetic error suite.

From a clean test set (default: Multi30k test_2016_flickr, German -> English), the script

1. samples `--n` sentences (seed `--seed`; sources of at least 4 words) and lets the model
   translate them (greedy): its own output is the clean *control*;
2. builds three broken versions of every control translation:
   * **detached** -- another sampled sentence's translation (a derangement, never the same text);
   * **omission** -- a contiguous span of ceil(n/3) to max(ceil(n/3), floor(n/2)) words removed;
   * **repetition** -- a span of 1 to 4 words inserted again right after itself ("a dog a dog");
   sentence-final punctuation is taken off first and put back after, so neither edit can be
   spotted by a missing or doubled full stop;
3. forces controls and errors through the model (one teacher-forced pass each) and computes
   every signal (`aligndebug.signals`);
4. calibrates on a *disjoint* clean set: the model's own translations of `--calibration-n`
   other sentences of the same test set (so the thresholds never see an error);
5. reports ROC-AUC (errors vs controls, 1 = perfect, 0.5 = chance) for every signal, oriented so
   that its suspect direction is "high", and for the combined triage score, per error type,
   as a Markdown table.

Example::

    python scripts/error_suite.py --model default --n 300 --seed 1
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from aligndebug.combine import join_words, repeat_span, split_final_punct
from aligndebug.extract import translate
from aligndebug.models import load_model
from aligndebug.signals import is_punctuation
from aligndebug.runner import signal_rows as run_signal_rows
from aligndebug.triage import SIGNALS, apply_token_thresholds, calibrate, roc_auc, suspect_values, triage_row

ERRORS = ("detached", "omission", "repetition")
DEFAULT_DATA = Path(__file__).resolve().parents[1] / "datasets"


def read_gz_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def omit(text: str, rng: np.random.Generator) -> str:
    """Remove a contiguous third or more (up to half) of the words; at least one word is kept."""
    words, punct = split_final_punct(text)
    n = len(words)
    lo = math.ceil(n / 3)
    hi = max(lo, n // 2)
    length = int(rng.integers(lo, hi + 1))
    length = min(length, n - 1)
    start = int(rng.integers(0, n - length + 1))
    return join_words(words[:start] + words[start + length:], punct)


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation with no fixed point (n >= 2)."""
    while True:
        perm = rng.permutation(n)
        if not (perm == np.arange(n)).any():
            return perm


def build_suite(controls: list[str], rng: np.random.Generator) -> dict[str, list[str]]:
    """The three broken versions of every control translation."""
    perm = derangement(len(controls), rng)
    detached = []
    for i, j in enumerate(perm):
        k = j
        while controls[k] == controls[i]:  # two identical translations: pick another donor
            k = int(rng.integers(len(controls)))
        detached.append(controls[k])
    return {
        "detached": detached,
        "omission": [omit(t, rng) for t in controls],
        "repetition": [repeat_span(t, rng) for t in controls],
    }


def signal_rows(bundle, sources, targets, args) -> list[dict]:
    return run_signal_rows(bundle, sources, targets, batch_size=args.batch_size, layer=args.layer, head="mean",
                           method=args.method)


def auc_table(rows: dict[str, list[dict]], cal) -> tuple[dict[str, dict[str, float]], list[str]]:
    """AUC per signal (and 'combined score') per error type, errors vs controls."""
    names = [n for n in SIGNALS if any(r.get(n) is not None and not _nan(r.get(n)) for r in rows["control"])]
    table: dict[str, dict[str, float]] = {}
    for err in ERRORS:
        both = rows["control"] + rows[err]
        labels = np.r_[np.zeros(len(rows["control"]), bool), np.ones(len(rows[err]), bool)]
        for name in names:
            table.setdefault(name, {})[err] = roc_auc(suspect_values(name, both, cal), labels)
        table.setdefault("combined score", {})[err] = roc_auc([r["score"] for r in both], labels)
    return table, names


def _nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


def markdown(table: dict[str, dict[str, float]]) -> str:
    lines = ["| signal | " + " | ".join(ERRORS) + " |", "|---|" + "---:|" * len(ERRORS)]
    for name, row in table.items():
        label = f"**{name}**" if name == "combined score" else f"`{name}`"
        lines.append(f"| {label} | " + " | ".join(f"{row[e]:.3f}" for e in ERRORS) + " |")
    return "\n".join(lines)


def parse_layer(text: str):
    return text if text == "mean" else int(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="model id or folder ('default': the embedded model)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="data folder (holding train/; default: the repository's datasets/)")
    ap.add_argument("--test", default="train/multi30k-deen/test_2016_flickr",
                    help="test set path stem under --data; '.de.gz' and '.en.gz' are appended")
    ap.add_argument("--src-ext", default="de.gz")
    ap.add_argument("--n", type=int, default=300, help="sentences in the suite")
    ap.add_argument("--calibration-n", type=int, default=None, help="disjoint clean calibration sentences (default: --n)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--percentile", type=float, default=95.0)
    ap.add_argument("--layer", type=parse_layer, default="mean")
    ap.add_argument("--method", choices=("shift-att", "naive"), default="shift-att")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--out-json", type=Path, help="also write the table, settings and per-sentence scores as JSON")
    args = ap.parse_args(argv)

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # generate() warns once per batch about max_length vs max_new_tokens
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    t0 = time.time()
    src_path = args.data / f"{args.test}.{args.src_ext}"
    sources_all = read_gz_lines(src_path)
    rng = np.random.default_rng(args.seed)
    eligible = [i for i, s in enumerate(sources_all) if len(s.split()) >= 4]
    n_cal = args.n if args.calibration_n is None else args.calibration_n
    if args.n + n_cal > len(eligible):
        raise SystemExit(f"{src_path}: {len(eligible)} usable sentences, fewer than --n {args.n} + calibration {n_cal}")
    picked = rng.permutation(eligible)[: args.n + n_cal]
    suite_ids, cal_ids = sorted(picked[: args.n].tolist()), sorted(picked[args.n:].tolist())
    bundle = load_model(args.model, device=args.device)
    suite_src = [sources_all[i] for i in suite_ids]
    cal_src = [sources_all[i] for i in cal_ids]
    controls = translate(bundle, suite_src, batch_size=args.batch_size)
    cal_hyp = translate(bundle, cal_src, batch_size=args.batch_size)
    # a translation needs 3+ words for a third of it to be removed, and a word that is not punctuation
    # alone to be repeated; keep the sentences where it has them
    keep = [k for k, t in enumerate(controls)
            if len(words := split_final_punct(t)[0]) >= 3 and not all(map(is_punctuation, words))]
    suite_ids = [suite_ids[k] for k in keep]
    suite_src = [suite_src[k] for k in keep]
    controls = [controls[k] for k in keep]
    cal_keep = [k for k, t in enumerate(cal_hyp) if t.split()]
    cal_src, cal_hyp = [cal_src[k] for k in cal_keep], [cal_hyp[k] for k in cal_keep]
    t_translate = time.time() - t0

    suite = build_suite(controls, rng)
    targets = {"control": controls, **suite}
    cal_rows = signal_rows(bundle, cal_src, cal_hyp, args)
    settings = {"model": bundle.name, "method": args.method, "layer": args.layer, "head": "mean"}
    cal = calibrate(cal_rows, percentile=args.percentile, source=f"clean: model translations of {len(cal_rows)} "
                    f"other {args.test} sentences (seed {args.seed})", settings=settings)
    rows = {}
    for kind, tgts in targets.items():
        rows[kind] = signal_rows(bundle, suite_src, tgts, args)
        for r in rows[kind]:
            r.update(apply_token_thresholds(r, cal))
            r["score"], r["flags"], _ = triage_row(r, cal)
    table, _ = auc_table(rows, cal)
    elapsed = time.time() - t0

    print(f"model: {bundle.name}   test set: {args.test} ({len(controls)} sentences; calibration on "
          f"{len(cal_rows)} disjoint clean sentences)   seed: {args.seed}   layer: {args.layer}   "
          f"method: {args.method}   percentile: {args.percentile:g}")
    print(f"translate: {t_translate:.0f}s   total: {elapsed:.0f}s")
    print()
    print(markdown(table))
    print()
    flag_rates = {k: float(np.mean([bool(r["flags"]) for r in v])) for k, v in rows.items()}
    suspect_rates = {k: float(np.mean([r["score"] > cal.score_threshold for r in v])) for k, v in rows.items()}
    print(f"share marked suspect (score above the calibration's {args.percentile:g}th percentile, "
          f"{cal.score_threshold:.2f}): " + ", ".join(f"{k} {v:.2f}" for k, v in suspect_rates.items()))
    print("share with at least one flag: " + ", ".join(f"{k} {v:.2f}" for k, v in flag_rates.items()))
    if args.out_json:
        args.out_json.write_text(json.dumps({
            "settings": {**settings, "n": len(controls), "calibration_n": len(cal_rows), "seed": args.seed,
                         "percentile": args.percentile, "test": args.test},
            "auc": table, "flag_rates": flag_rates, "suspect_rates": suspect_rates,
            "score_threshold": cal.score_threshold,
            "examples": {k: [{"id": suite_ids[i], "target": targets[k][i], "score": rows[k][i]["score"],
                              "flags": rows[k][i]["flags"]} for i in range(len(controls))] for k in targets},
        }, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
