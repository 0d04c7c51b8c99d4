"""`aligndebug compare`: the command line of `compare` (arranges calls, computes nothing itself)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .errors import InputError


def layer_or_best(text: str) -> int | str:
    text = text.strip()
    if text == "best":
        return "best"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a layer index or 'best', not {text!r}") from None


def head_or_mean(text: str) -> int | str:
    text = text.strip()
    if text == "mean":
        return "mean"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a head index or 'mean', not {text!r}") from None


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `compare` subcommand to an argparse subparsers object."""
    from .cli import add_testset_arg, percentile, positive_int

    p = subparsers.add_parser(
        "compare", help="compare models or checkpoints on one test set: alignment, translation, triage",
        description="Run every model on the same sentence pairs and gold, one model at a time (rows streamed to "
                    "--out, resumable): AER per layer x head, BLEU/chrF of each model's own translation, "
                    "Seq-Logprob of the reference and triage scores; paired bootstrap differences against the "
                    "first model, and the sentences that changed the most.")
    p.add_argument("--model", action="extend", nargs="+", required=True, metavar="MODEL",
                   help="Hugging Face ids or local folders ('default': the embedded model), in order; "
                        "repeat --model or list several; the first is the baseline")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--src-lang", help="source language code for multilingual models (every model)")
    p.add_argument("--tgt-lang", help="target language code for multilingual models (every model)")
    p.add_argument("--source-prefix", default="", help="text put before every source (every model), e.g. for T5")
    add_testset_arg(p, "its source, reference and gold")
    p.add_argument("--src", type=Path, help="source sentences, one a line (pre-tokenized words)")
    p.add_argument("--tgt", type=Path, help="reference translations, one a line (the gold indexes their words)")
    p.add_argument("--pairs", type=Path, help="one 'source ||| reference' pair a line, instead of --src/--tgt")
    p.add_argument("--gold", type=Path, help="gold alignments of source and reference words")
    p.add_argument("--gold-base", type=int, choices=(0, 1), help="gold index base (default: detect and say)")
    p.add_argument("--gold-format", choices=("pharaoh", "sp", "naacl"), help="gold format (default: detect)")
    p.add_argument("--skip-invalid", action="store_true", help="skip bad gold lines with a warning instead of stopping")
    p.add_argument("--method", choices=("shift-att", "naive"), default="shift-att",
                   help="shift-att: row where the target token is the decoder input; naive: where it is the output")
    p.add_argument("--layer", type=layer_or_best, default=None,
                   help="decoder layer (0-based, negative from the end) or 'best' (lowest AER per model); "
                        "default: each model's middle-upper layer")
    p.add_argument("--head", type=head_or_mean, default="mean", help="head index or 'mean'")
    p.add_argument("--out", type=Path, required=True, help="JSONL rows, one per model and sentence (appended as it goes)")
    p.add_argument("--resume", action="store_true", help="keep the finished models and rows in --out and do only the rest")
    p.add_argument("--html", type=Path, help="self-contained HTML report with the top changed sentences' heatmaps")
    p.add_argument("--top", type=positive_int, default=5, help="changed sentences shown per model in the HTML report")
    p.add_argument("--summary-json", type=Path, help="summary JSON (default: <out stem>.summary.json beside --out)")
    p.add_argument("--deltas", type=Path, help="ranked per-sentence deltas, JSONL (default: <out stem>.deltas.jsonl)")
    p.add_argument("--curve", type=Path, help="checkpoint-series chart (3+ models): .png, .svg or .json (Vega-Lite)")
    p.add_argument("--bootstrap", type=positive_int, default=1000, help="paired bootstrap resamples")
    p.add_argument("--seed", type=int, default=12345, help="bootstrap seed (sacreBLEU's default)")
    p.add_argument("--percentile", type=percentile, default=95.0, help="triage calibration percentile (on the first model)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="sentences per forward pass")
    p.add_argument("--chunk-size", type=positive_int, default=256,
                   help="sentences measured and appended to --out at a time (what a kill can cost)")
    p.add_argument("--beam", type=positive_int, default=1, help="beam size of the models' translations (1 = greedy)")
    p.add_argument("--alignment-only", action="store_true",
                   help="no translations, BLEU/chrF or triage: AER per layer x head and Seq-Logprob of the reference")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_compare)
    return p


def cmd_compare(args: argparse.Namespace) -> int:
    """Handler of `aligndebug compare`."""
    from .cli import apply_testset, check_outputs
    from .compare import CompareOptions, finish_compare, format_table, run_compare
    from .gold import scan_gold
    from .models import load_model
    from .pairs import iter_pair_lengths, iter_pairs

    apply_testset(args, {"src": "src", "tgt": "tgt", "gold": "gold"})
    if len(args.model) < 2:
        raise InputError(None, None, f"compare needs at least two models, got {len(args.model)}",
                         "--model A --model B [...]")
    if args.pairs is None and (args.src is None or args.tgt is None):
        raise InputError(None, None, "no sentence pairs given", "--testset NAME, --src FILE --tgt FILE, or --pairs FILE")
    if args.curve is not None and args.curve.suffix.lower() not in (".png", ".svg", ".json"):
        raise InputError(args.curve, None, f"unknown chart format {args.curve.suffix!r}", "a .png, .svg or .json file name")
    stem = args.out.with_name(args.out.stem)
    summary_path = args.summary_json or stem.with_name(stem.name + ".summary.json")
    deltas_path = args.deltas or stem.with_name(stem.name + ".deltas.jsonl")
    check_outputs(args.out, args.html, summary_path, deltas_path, args.curve)

    def pairs_iter():
        return iter_pairs(src_path=args.src, tgt_path=args.tgt, pairs_path=args.pairs, require_target=True)

    pairs = list(pairs_iter())
    gold = golds = None
    if args.gold is not None:
        gold = scan_gold(args.gold, base=args.gold_base, fmt=args.gold_format,
                         sentences=iter_pair_lengths(pairs_iter()), skip_invalid=args.skip_invalid)
        for w in gold.warnings:
            print(f"aligndebug: warning: {w}", file=sys.stderr)
        golds = list(gold)
    opts = CompareOptions(method=args.method, layer=args.layer, head=args.head, beam=args.beam,
                          batch_size=args.batch_size, chunk_size=args.chunk_size, bootstrap=args.bootstrap,
                          seed=args.seed, percentile=args.percentile,
                          translate=not args.alignment_only)

    def load(spec: str):
        return load_model(spec, device=args.device, src_lang=args.src_lang, tgt_lang=args.tgt_lang,
                          source_prefix=args.source_prefix)

    from tqdm import tqdm

    with tqdm(total=len(pairs) * len(args.model), unit="sent", disable=args.no_progress, file=sys.stderr) as bar:
        try:
            run_compare(args.model, pairs, golds, opts, args.out, resume=args.resume,
                        gold_name=None if gold is None else gold.describe(), load=load,
                        on_progress=lambda spec, n: bar.update(n))
        except InputError as exc:
            if exc.path is not None or exc.line is None:
                raise
            raise InputError(args.pairs or args.src, exc.line, exc.message, exc.expected) from exc
    result = finish_compare(args.out, pairs, golds, opts, gold=gold, deltas_path=deltas_path,
                            summary_path=summary_path, html_path=args.html, chart_path=args.curve, top=args.top,
                            load=load)
    print(format_table(result.summary))
    if args.curve is not None and "chart" not in result.files:
        print("aligndebug: note: --curve needs three or more models; no chart written", file=sys.stderr)
    print("   ".join(f"{k}: {v}" for k, v in [("rows", args.out), *result.files.items()]))
    return 0
