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
made from them with another seed (detached / omission / repetition right after the span / repetition further
on, `combine.make_variants`, one of each kind per row; partly detached: the row's first 20-50% of words and
then the rest of its detached variant, `combine.detach_part`, a translation that starts on its source and
drifts off, what human annotators call strongly detached; appended: the row's whole target and then its detached
variant from a place in its first half on, `combine.append_other`, a translation that goes on past its
source), all forced through the model. Printed: ROC-AUC of every signal in its suspect direction, of the Fisher
score, of the learned combination and of ALTI+, errors of each type against the controls; and the clean rows
the learned combination ranks above the most errors of each type (where its AUC loses, they show why), and the
detached, omission, partly detached and appended AUCs again without the clean rows that already hold a span said twice in a row (repetition
errors by the benchmark's own definition, common among the embedded model's own translations; not for repetition,
where removing them by the tandem-repeat signal would make that signal perfect by construction); and every kind's
AUCs with only the controls that the data folder's error labels (`errors.own.tsv`, `errors.reference.tsv`) call
free of errors, controls chosen by labels (a language-model assistant's, their SOURCE.txt says) rather than by a signal.

"learned combination" is the deployable score (`Combiner.logit`: since version 10 the log-odds of any error at
the fit half's error rates); "learned, at the evaluation rows' error rates" is the same fit with the rates
estimated on the rows it ranks (one part controls to six parts errors), and "learned, prior share P" with
another prior of the rates (`--prior-shares`); "learned, this type only" reads the one model of the kind of error
being tested, which a user cannot pick without knowing the error, and shows what combining the kinds costs;
"learned, its error type's score" reads the rows' `type_scores` of that kind's error type (detached, omission or
repetition), what a user looking for one error type sorts by.

Timing (`--time`, CPU seconds of this process, so other load on the machine does not count; run with
OMP_NUM_THREADS=1): `runner.run_triage` on the whole set (translate, force, calibrate, score), against
what ALTI+ adds (in its own pass, and traced inside the signal pass) and what the learned
combination adds (synthetic variants of `--max-per-type` rows per error type forced with ALTI+, the
fit, scoring every row).

    python scripts/triage_auc.py --time
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from aligndebug.combine import (KINDS, add_alti, append_other, describe, detach_part, fisher_scores, fit_with_model,
                                forced_signal_rows, make_variants)
from aligndebug.extract import translate
from aligndebug.labels import read_error_labels, same_text
from aligndebug.learned import triage_aligner
from aligndebug.models import load_model
from aligndebug.runner import run_triage
from aligndebug.triage import SIGNALS, calibrate, roc_auc, suspect_values

# the kinds scored again without the controls that say a span twice in a row (not repetition: see run_suite)
UNREPEATED_KINDS = ("detached", "omission", "partly_detached", "appended")
DATA = Path(__file__).resolve().parents[1] / "datasets" / "heldout" / "europarl-deen-500"


def run_suite(bundle, name: str, fit_src, fit_tgt, ev_src, ev_tgt, args, ev_labelled_clean=None) -> dict:
    """`ev_labelled_clean`: per evaluation row, whether its target was labelled free of errors (None: no labels)."""
    t0 = time.process_time()
    opts = dict(batch_size=args.batch_size, layer="mean", head="mean", method="shift-att",
                aligner=triage_aligner(bundle, args.aligner))
    fit_rows = forced_signal_rows(bundle, [{"source": s, "translation": t} for s, t in zip(fit_src, fit_tgt)], **opts)
    cal = calibrate(fit_rows, percentile=95.0, source=f"{name}: fit half",
                    settings={"model": bundle.name, "method": "shift-att", "layer": "mean", "head": "mean"})
    comb = fit_with_model(bundle, fit_rows, seed=args.seed, max_per_type=args.fit_max_per_type, **opts)
    controls = [{"source": s, "translation": t} for s, t in zip(ev_src, ev_tgt)]
    # every evaluation row gets one variant of each kind: the repetition right after itself (as the errors
    # before distant repetitions were made) and, from a second draw, further on; detached in full and, from the
    # same foreign translation, in part
    variants = make_variants(controls, seed=args.seed + 1, repetition="adjacent", detached="full")
    variants["distant_repetition"] = make_variants(controls, seed=args.seed + 1, repetition="distant")["distant_repetition"]
    rng = np.random.default_rng(args.seed + 2)
    for kind, edit in (("partly_detached", detach_part), ("appended", append_other)):
        variants[kind] = [{**v, "translation": t} for v in variants["detached"]
                          if (t := edit(controls[v["base"]]["translation"], v["translation"], rng)) is not None]
    rows = {"control": forced_signal_rows(bundle, controls, **opts)}
    for kind in KINDS:
        rows[kind] = forced_signal_rows(bundle, variants[kind], **opts)
    names = [n for n in SIGNALS
             if sum(np.isfinite(r.get(n, np.nan)) for r in rows["control"] if isinstance(r.get(n), float)) > 0]
    learned = {k: comb.logit(v) for k, v in rows.items()}  # per row, so the score of a set is its rows' scores
    # the evaluation rows are one part controls to six parts errors, the calibration rows mostly clean: the same
    # fit at the error rates of the rows it ranks, as triage estimates them when it calibrates on the rows it ranks
    own_rates = comb.with_rates_of([r for v in rows.values() for r in v])
    by_share: dict = {}  # the same fit at other priors of its error rates (--prior-shares)
    table: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        both = rows["control"] + rows[kind]
        labels = np.r_[np.zeros(len(rows["control"]), bool), np.ones(len(rows[kind]), bool)]
        for n in names:
            table.setdefault(n, {})[kind] = roc_auc(suspect_values(n, both, cal), labels)
        table.setdefault("Fisher score (today)", {})[kind] = roc_auc(fisher_scores(both, cal), labels)
        table.setdefault("learned combination", {})[kind] = roc_auc(np.r_[learned["control"], learned[kind]], labels)
        lg = comb.logits(both)
        table.setdefault("learned, at the evaluation rows' error rates", {})[kind] = roc_auc(own_rates.logit(both), labels)
        for share in args.prior_shares:
            at = by_share.setdefault(share, comb.with_rates_of(fit_rows, share))
            table.setdefault(f"learned, prior share {share:g}", {})[kind] = roc_auc(at.logit(both), labels)
        table.setdefault("learned, this type only", {})[kind] = roc_auc(lg[kind], labels) if kind in lg else np.nan
        typed = comb.error_type_scores(both)
        table.setdefault("learned, its error type's score", {})[kind] = (
            roc_auc(typed[KINDS[kind]], labels) if KINDS[kind] in typed else np.nan)
        table.setdefault("learned, clean-percentile max", {})[kind] = roc_auc(comb.clean_z(both), labels)
        table.setdefault("learned, largest log-odds", {})[kind] = roc_auc(np.max([lg[k] for k in lg], 0), labels)
    above = {kind: outranking(learned["control"], learned[kind], [r["translation"] for r in rows["control"]])
             for kind in KINDS}
    # a clean row that already says a span twice in a row is a repetition error by this benchmark's own definition
    stutter_free = np.array([not r.get("tandem_repeat") for r in rows["control"]], dtype=bool)
    # not repetition: removing by tandem repeat makes that signal perfect
    unrepeated: dict = {"removed": int((~stutter_free).sum()),
                        **controls_subset_aucs(stutter_free, UNREPEATED_KINDS, rows, learned, names, cal)}
    # controls the annotators found free of errors: chosen by labels, not by a signal, so every kind is scored
    labelled: dict = {}
    if ev_labelled_clean is not None:
        keep = np.asarray(ev_labelled_clean, dtype=bool)
        labelled = {"controls": int(keep.sum()), **controls_subset_aucs(keep, KINDS, rows, learned, names, cal)}
    return {"table": table, "outranking": above, "without_stuttering_controls": unrepeated,
            "labelled_clean_controls": labelled, "weights": describe(comb),
            "n": {k: len(v) for k, v in rows.items()}, "n_fit": len(fit_rows), "seconds": time.process_time() - t0,
            "combiner": comb.to_dict()}


def controls_subset_aucs(keep: np.ndarray, kinds, rows: dict, learned: dict, names: list[str], cal) -> dict:
    """Per kind, the AUCs of its errors against only the controls `keep` marks: the learned combination's, Fisher's
    and the best single signal's (and its name)."""
    controls = [r for r, k in zip(rows["control"], keep) if k]
    out = {}
    for kind in kinds:
        both = controls + rows[kind]
        labels = np.r_[np.zeros(len(controls), bool), np.ones(len(rows[kind]), bool)]
        best = max((roc_auc(suspect_values(n, both, cal), labels), n) for n in names)
        out[kind] = {"learned": roc_auc(np.r_[learned["control"][keep], learned[kind]], labels),
                     "fisher": roc_auc(fisher_scores(both, cal), labels), "best": best[0], "best_signal": best[1]}
    return out


def labelled_clean(path: Path, targets: list[str], ids: list[int]) -> np.ndarray | None:
    """Per evaluation row, whether `path` (an errors TSV of the data folder) labels its target free of errors;
    a row whose target is not the labelled text (up to spacing, as `--labels` compares them) counts as not
    labelled clean. None when there is no such file."""
    if not path.exists():
        return None
    labels = read_error_labels(path)
    return np.array([not labels[i].labels and (labels[i].translation is None or same_text(labels[i].translation, t))
                     for i, t in zip(ids, targets)])


def outranking(control: np.ndarray, errors: np.ndarray, texts: list[str], k: int = 3) -> dict:
    """The clean rows behind the learned score's misses: how many (clean, error) pairs are ranked the wrong way
    (ties count half, as in ROC-AUC), and the `k` clean rows in most of them, with how many errors each outranks."""
    per = (errors[None, :] < control[:, None]).sum(1) + 0.5 * (errors[None, :] == control[:, None]).sum(1)
    top = [i for i in np.argsort(-per, kind="stable")[:k] if per[i] > 0]
    return {"pairs": float(per.sum()), "of": len(control) * len(errors),
            "rows": [{"outranks": float(per[i]), "score": float(control[i]), "translation": texts[i]} for i in top]}


def markdown(table: dict[str, dict[str, float]]) -> str:
    combined = ("Fisher score (today)", "learned combination", "learned, its error type's score",
                "learned, this type only", "learned, clean-percentile max", "learned, largest log-odds")
    single = {k: v for k, v in table.items() if k not in combined}
    best = {e: max(v[e] for v in single.values()) for e in KINDS}
    lines = ["| signal | direction | " + " | ".join(KINDS) + " |", "|---|---|" + "---:|" * len(KINDS)]
    for name, row in table.items():
        direction = SIGNALS[name].direction if name in SIGNALS else ""
        label = f"**{name}**" if name in combined else f"`{name}`"
        cells = [f"**{row[e]:.3f}**" if name in single and row[e] == best[e] else f"{row[e]:.3f}" for e in KINDS]
        lines.append(f"| {label} | {direction} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def timing(bundle, sources: list[str], args) -> dict:
    """Seconds of today's triage and of what ALTI+ and the learned combination add to it."""
    t0 = time.process_time()
    rows = list(run_triage(bundle, sources, batch_size=args.batch_size, combine="fisher"))
    t_triage = time.process_time() - t0
    items = [{"source": r["source"], "translation": r["translation"]} for r in rows]
    t1 = time.process_time()
    forced_signal_rows(bundle, items, alti=False, batch_size=args.batch_size)
    t_plain = time.process_time() - t1
    t1 = time.process_time()
    with_alti = forced_signal_rows(bundle, items, alti=True, batch_size=args.batch_size)
    t_fused = time.process_time() - t1
    t1 = time.process_time()
    add_alti(bundle, [dict(r) for r in rows], batch_size=args.batch_size)
    t_alone = time.process_time() - t1
    t1 = time.process_time()
    comb = fit_with_model(bundle, with_alti, seed=args.seed, max_per_type=args.max_per_type, batch_size=args.batch_size)
    comb.logit(with_alti)
    t_fit = time.process_time() - t1
    alti_fused = max(0.0, t_fused - t_plain)
    return {"n": len(sources), "triage_s": t_triage, "alti_own_pass_s": t_alone, "alti_in_signal_pass_s": alti_fused,
            "variants_fit_score_s": t_fit, "max_per_type": args.max_per_type,
            "ratio_alti_own_pass": (t_triage + t_alone + t_fit) / t_triage,
            "ratio_alti_in_signal_pass": (t_triage + alti_fused + t_fit) / t_triage}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", type=Path, default=DATA, help="folder with test.de and test.en")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N pairs (quick runs)")
    ap.add_argument("--suites", default="own,reference")
    ap.add_argument("--time", action="store_true", help="also time triage with and without ALTI+ and the learned combination")
    ap.add_argument("--max-per-type", type=int, default=50, help="variants per error type when timing (default 50, as fit_with_model)")
    ap.add_argument("--fit-max-per-type", type=int, default=None,
                    help="variants per error type for the suites' fits (default: one per fit-half row)")
    ap.add_argument("--aligner", default="default",
                    help="learned aligner whose signals the rows hold, as `triage --aligner` (default: the embedded "
                         "model's, when the model is its model; 'none': without)")
    ap.add_argument("--out-json", type=Path)
    ap.add_argument("--prior-shares", type=lambda v: [float(x) for x in v.split(",")], default=[],
                    help="also score the fit at these priors of its error rates (combine.PRIOR_SHARE), comma-separated")
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
    t0 = time.process_time()
    own = None
    if "own" in args.suites.split(","):  # the own suite's targets
        own = translate(bundle, de, batch_size=args.batch_size)
        result["translate_s"] = time.process_time() - t0
    for suite in [x for x in args.suites.split(",") if x]:
        tgt = own if suite == "own" else en
        res = run_suite(bundle, suite, [de[i] for i in fit_ids], [tgt[i] for i in fit_ids],
                        [de[i] for i in ev_ids], [tgt[i] for i in ev_ids], args,
                        labelled_clean(args.data / f"errors.{suite}.tsv", [tgt[i] for i in ev_ids], ev_ids))
        result[suite] = res
        print(f"\n## suite: {suite} (targets: {'the model' + chr(39) + 's own translations' if suite == 'own' else 'references forced as another system'}); "
              f"fit on {res['n_fit']} clean rows + their variants, evaluated on {res['n']}  ({res['seconds']:.0f} CPU s)\n")
        print(markdown(res["table"]))
        print("\nclean rows the learned combination ranks above errors (pairs in the wrong order; the rows in most):")
        for kind, miss in res["outranking"].items():
            print(f"  {kind}: {miss['pairs']:g} of {miss['of']} pairs")
            for r in miss["rows"]:
                print(f"    above {r['outranks']:g} ({r['score']:.2f}): {r['translation'][:100]}")
        miss = res["without_stuttering_controls"]
        print(f"\nwithout the {miss['removed']} clean rows holding a span said twice in a row (tandem repeat > 0): "
              + "; ".join(f"{k} learned {miss[k]['learned']:.3f}, best single {miss[k]['best']:.3f} ({miss[k]['best_signal']})"
                          for k in UNREPEATED_KINDS))
        lab = res["labelled_clean_controls"]
        if lab:
            print(f"\nwith only the {lab['controls']} controls labelled free of errors (errors.{suite}.tsv): "
                  + "; ".join(f"{k} learned {lab[k]['learned']:.3f}, Fisher {lab[k]['fisher']:.3f}, best single "
                              f"{lab[k]['best']:.3f} ({lab[k]['best_signal']})" for k in KINDS))
        print("\nlearned weights (largest first):")
        for line in res["weights"]:
            print("  " + line)
    if args.time:
        result["timing"] = tm = timing(bundle, de, args)
        print(f"\ntiming on {tm['n']} sentences (own translations): triage {tm['triage_s']:.1f}s; ALTI+ in its own "
              f"pass {tm['alti_own_pass_s']:.1f}s, or {tm['alti_in_signal_pass_s']:.1f}s more when traced in the "
              f"signal pass; variants + fit + scoring {tm['variants_fit_score_s']:.1f}s "
              f"({tm['max_per_type']} variants per type)")
        print(f"ratio to triage alone: {tm['ratio_alti_own_pass']:.2f}x (ALTI+ in its own pass), "
              f"{tm['ratio_alti_in_signal_pass']:.2f}x (ALTI+ in the signal pass)")
    if args.out_json:
        args.out_json.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
