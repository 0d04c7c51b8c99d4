"""`aligndebug score|inspect --method learned [--aligner DIR] [--decode RULE]`: alignments from a learned aligner.

Kept apart from cli.py so the attention paths stay as they are; cli.py hands `--method learned` over here.
Without `--aligner` the embedded model's aligner (aligndebug/default_model/aligner/) is used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .decoding import DEFAULT_THRESHOLDS
from .errors import InputError
from .extract import SentenceError, encode_pair, translate
from .gold import format_pharaoh, scan_gold
from .learned import LearnedAligner, links_from_word_matrix, load_aligner
from .metrics import AlignmentSignature, count_links
from .pairs import count_lines, iter_pair_lengths

UNSUPPORTED = (("per_head", "--per-head"), ("compare", "--compare"), ("ray", "--ray"), ("resume", "--resume"))


def add_learned_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--aligner", type=Path, default=None,
                   help="learned aligner folder for --method learned (default: the embedded model's aligner)")
    p.add_argument("--decode", choices=("argmax", "threshold", "bidir"), default=None,
                   help="decoding rule for --method learned (default: the rule in the aligner's card, else argmax; "
                        "--threshold sets its threshold)")


def _rule(args: argparse.Namespace, aligner: LearnedAligner) -> tuple[str, float | None]:
    """--decode/--threshold when given; else the rule the aligner's card names (chosen on its dev set); else argmax."""
    if args.decode is None and args.threshold is None and aligner.card.get("decode"):
        return aligner.card["decode"]["rule"], aligner.card["decode"].get("threshold")
    rule = args.decode or "argmax"
    return rule, args.threshold if args.threshold is not None else DEFAULT_THRESHOLDS.get(rule)


def _signature(args: argparse.Namespace, bundle, aligner: LearnedAligner, gold) -> str:
    name = "default" if args.aligner is None else Path(args.aligner).name
    rule, thr = _rule(args, aligner)
    sig = dict(model=bundle.name, method=f"learned:{name}", layer="states:" + ",".join(map(str, aligner.config.layers)),
               heads="-", threshold=thr, decode=rule)
    return (AlignmentSignature.for_gold(gold, **sig) if gold else AlignmentSignature(**sig)).format()


def _load(args: argparse.Namespace):
    from .cli import _bundle

    if args.method != "learned":  # decoding rules for attention rows are not wired into the attention paths yet
        raise InputError(None, None, f"--decode is only available with --method learned, not with --method {args.method}",
                         "--method learned, or no --decode")

    bundle = _bundle(args)
    return bundle, load_aligner(args.aligner, bundle)


def score_learned(args: argparse.Namespace) -> int:
    """`score --method learned`: links for every pair, AER against --gold, summary like the attention methods'."""
    from tqdm import tqdm

    from .batch import ScoreTotals, summary, write_json_atomic
    from .cli import _pairs, format_summary

    for attr, flag in UNSUPPORTED:
        if getattr(args, attr, False):
            raise InputError(None, None, f"{flag} is not available with --method learned", "--method shift-att or naive")
    if args.pairs is None and args.src is None:
        raise InputError(None, None, "no input given", "--src FILE (with optional --tgt FILE) or --pairs FILE")
    gold = None
    if args.gold is not None:
        if args.pairs is None and args.tgt is None:
            raise InputError(args.gold, None, "gold alignments index the target words, but no target was given",
                             "--tgt FILE or --pairs FILE together with --gold")
        gold = scan_gold(args.gold, base=args.gold_base, fmt=args.gold_format,
                         sentences=iter_pair_lengths(_pairs(args)), skip_invalid=args.skip_invalid)
        for w in gold.warnings:
            print(f"aligndebug: warning: {w}", file=sys.stderr)
    bundle, aligner = _load(args)
    pairs = list(_pairs(args))
    forced = all(p.tgt_words is not None for p in pairs)
    targets = [p.tgt_words for p in pairs] if forced else translate(bundle, [p.src_words for p in pairs], beam=args.beam)
    encoded = []
    for p, t in zip(pairs, targets):
        try:
            encoded.append(encode_pair(bundle, p.src_words, t, p.index))
        except SentenceError as exc:
            raise InputError(args.pairs or args.src, p.line, exc.reason) from exc
    with tqdm(total=count_lines(args.pairs or args.src), unit="sent", disable=args.no_progress, file=sys.stderr) as bar:
        links = aligner.align_encoded(bundle, encoded, *_rule(args, aligner), args.batch_size,
                                      on_progress=bar.update)
    golds = list(gold) if gold is not None else [None] * len(pairs)
    totals, rows = ScoreTotals(), []
    for p, e, ls, g in zip(pairs, encoded, links, golds):
        row: dict[str, Any] = {"index": p.index, "line": p.line, "source_words": e.src_words, "target_words": e.tgt_words,
                               "translated": not forced, "links": format_pharaoh(ls)}
        if g is not None:
            c = count_links(ls, g)
            row.update({"gold": format_pharaoh(g), "counts": [c.predicted, c.sure, c.pred_and_sure, c.pred_and_possible],
                        "precision": c.precision, "recall": c.recall, "aer": c.aer})
        totals.add_row(row)
        rows.append(row)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    result = summary(totals, _signature(args, bundle, aligner, gold), extra={
        "gold": gold.describe() if gold else None, "gold_skipped": gold.skipped if gold else 0,
        "aligner": {k: aligner.card.get(k) for k in ("base_model", "objective", "steps", "data")}})
    print(format_summary(result))
    if args.summary_json:
        write_json_atomic(args.summary_json, result)
    if args.alignments_out:
        tmp = args.alignments_out.with_name(args.alignments_out.name + ".tmp")
        tmp.write_text("".join(r["links"] + "\n" for r in rows), encoding="utf-8")
        tmp.replace(args.alignments_out)
    return 0


def inspect_learned(args: argparse.Namespace) -> int:
    """`inspect --method learned`: the aligner's word matrix and links for one sentence."""
    from .cli import format_matrix

    bundle, aligner = _load(args)
    target = args.target if args.target is not None else translate(bundle, [args.source], beam=args.beam)[0]
    enc = encode_pair(bundle, args.source, target)
    mat = aligner.word_matrices(bundle, [enc])[0]  # last column: mass on special tokens (no source)
    rule, thr = _rule(args, aligner)
    links = links_from_word_matrix(mat, rule, thr)
    if args.json:
        print(json.dumps({
            "model": bundle.name, "method": "learned", "aligner": str(args.aligner or "default"),
            "decode": rule, "threshold": thr, "translated": args.target is None,
            "source_words": enc.src_words, "target_words": enc.tgt_words, "links": sorted(links),
            "word_alignment": [[round(float(x), 4) for x in row[:-1]] for row in mat],
            "no_source": [round(float(x), 4) for x in mat[:, -1]],
        }, ensure_ascii=False))
        return 0
    print(f"model: {bundle.name} ({bundle.family})   method: learned   aligner: {args.aligner or 'default'}   "
          f"decode: {rule}{'' if thr is None else f' @ {thr:g}'}")
    print(f"target ({'model translation' if args.target is None else 'forced'}): {' '.join(enc.tgt_words)}")
    print("links (source-target, 0-based): " + " ".join(f"{i}-{j}" for i, j in sorted(links)))
    print(format_matrix(np.asarray(mat[:, :-1]), enc.src_words, enc.tgt_words, links))
    return 0
