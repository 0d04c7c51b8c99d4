"""`aligndebug` command line: arranges calls into the package, computes nothing itself."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .align import Selector, align_record, default_layer, word_matrix
from .batch import ScoreOptions, read_links, score_stream, summary, write_json_atomic
from .errors import InputError
from .extract import extract
from .gold import scan_gold
from .metrics import AlignmentSignature
from .models import ModelLoadError, load_model
from .pairs import count_lines, iter_pair_lengths, iter_pairs


def parse_selector(text: str) -> Selector:
    """'mean', an index, or a comma-separated list of indices (averaged)."""
    text = text.strip()
    if text == "mean":
        return "mean"
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'mean', an index or a comma-separated list, not {text!r}")
    return parts[0] if len(parts) == 1 else parts


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="Hugging Face id or local folder ('default': the embedded de->en model)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (half precision on GPU)")
    p.add_argument("--src-lang", help="source language code for multilingual models (mBART/M2M100/NLLB)")
    p.add_argument("--tgt-lang", help="target language code for multilingual models (mBART/M2M100/NLLB)")
    p.add_argument("--source-prefix", default="", help="text put before every source, e.g. T5's 'translate German to English: '")


def _add_method_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=("shift-att", "naive", "learned"), default="shift-att",
                   help="shift-att: row where the target token is the decoder input; naive: where it is the output; "
                        "learned: a trained aligner on top of the model (--aligner)")
    p.add_argument("--layer", type=parse_selector, default=None,
                   help="decoder layer, 0-based (negative from the end), a list, or 'mean' (default: middle-upper)")
    p.add_argument("--head", type=parse_selector, default="mean", help="head index, a list, or 'mean' (default)")
    p.add_argument("--threshold", type=float, default=None,
                   help="link every subword pair with attention >= this instead of the argmax")
    from .learned_cli import add_learned_args  # --aligner, --decode (learned aligner, issue 14)

    add_learned_args(p)


def add_run_args(p: argparse.ArgumentParser, chunk_help: str) -> None:
    """The options of `score` and `triage` on how they run: batches, chunks, beam, progress, and Ray
    (--ray, --ray-address, --ray-actors, --ray-gpus-per-actor)."""
    p.add_argument("--batch-size", type=positive_int, default=16, help="sentences per forward pass")
    p.add_argument("--chunk-size", type=positive_int, default=256, help=chunk_help)
    p.add_argument("--beam", type=int, default=1, help="beam size when the model translates (1 = greedy)")
    p.add_argument("--no-progress", action="store_true")
    r = p.add_argument_group("Ray (pip install 'aligndebug[ray]')")
    r.add_argument("--ray", action="store_true", help="run on a Ray cluster: actors holding the model, same rows")
    r.add_argument("--ray-address", help="cluster to join (default: $RAY_ADDRESS, else a local Ray instance)")
    r.add_argument("--ray-actors", type=positive_int, default=2, help="model-holding actors (default 2)")
    r.add_argument("--ray-gpus-per-actor", type=float, default=None,
                   help="GPUs per actor (default: 1 with --device cuda, else 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aligndebug", description=__doc__)
    parser.add_argument("--version", action="version", version=f"aligndebug {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="extract alignments for a test set and score them against gold (AER)")
    _add_model_args(s)
    _add_method_args(s)
    s.add_argument("--src", type=Path, help="source sentences, one a line (pre-tokenized words)")
    s.add_argument("--tgt", type=Path, help="target sentences to force; without them the model translates")
    s.add_argument("--pairs", type=Path, help="one 'source ||| target' pair a line, instead of --src/--tgt")
    s.add_argument("--gold", type=Path, help="gold alignment file (Pharaoh i-j / ipj / i?j, 'S|P i j', or 'sentno i j S|P')")
    s.add_argument("--gold-base", type=int, choices=(0, 1), help="gold index base (default: detect and say)")
    s.add_argument("--gold-format", choices=("pharaoh", "sp", "naacl"), help="gold format (default: detect)")
    s.add_argument("--skip-invalid", action="store_true", help="skip bad gold lines with a warning instead of stopping")
    s.add_argument("--per-head", action="store_true", help="also AER for every layer x head and each layer's head mean")
    s.add_argument("--compare", action="store_true",
                   help="also score rollout- and Integrated-Gradients-based alignments and report attention-vs-IG "
                        "agreement (Spearman rho); IG costs about --ig-steps forward passes a sentence")
    s.add_argument("--ig-steps", type=positive_int, default=16, help="Integrated Gradients steps for --compare")
    s.add_argument("--out", type=Path, help="JSONL, one row per sentence (appended as it goes)")
    s.add_argument("--resume", action="store_true", help="keep the rows already in --out and do only the rest")
    s.add_argument("--summary-json", type=Path, help="write the summary (fractions, not percent) as JSON")
    s.add_argument("--alignments-out", type=Path, help="write predicted links as Pharaoh lines (0-based)")
    add_run_args(s, "sentences read, scored and appended to --out at a time (what a kill can cost)")
    s.set_defaults(func=cmd_score)

    i = sub.add_parser("inspect", help="show tokens, word alignment and pooled cross-attention for one sentence")
    _add_model_args(i)
    _add_method_args(i)
    i.add_argument("--source", required=True)
    i.add_argument("--target", help="target to force; without it the model translates")
    i.add_argument("--beam", type=int, default=1)
    i.add_argument("--json", action="store_true", help="print JSON instead of tables")
    i.add_argument("--record", type=Path, help="also write the full Record (all attention arrays) as JSON")
    i.set_defaults(func=cmd_inspect)

    from .triage import add_triage_parser

    add_triage_parser(sub)
    from .learned_train import add_train_parser

    add_train_parser(sub, _add_model_args)
    return parser


def _bundle(args: argparse.Namespace):
    return load_model(args.model, device=args.device, src_lang=args.src_lang, tgt_lang=args.tgt_lang,
                      source_prefix=args.source_prefix)


def driver_setup(args: argparse.Namespace) -> tuple[Any, dict[str, Any] | None]:
    """The model for this process, and with --ray the keyword arguments of the Ray runners (None without).

    With --ray, Ray must be installed (else a clear InputError) and the actors load the model on --device;
    the driver's own copy, for shapes, names and reports, stays on the CPU.
    """
    if not args.ray:
        return _bundle(args), None
    try:
        from .ray_backend import require_ray

        require_ray()
    except ImportError as exc:
        raise InputError(None, None, f"--ray needs Ray Data ({exc})", "pip install 'aligndebug[ray]'") from exc
    bundle = load_model(args.model, device="cpu", src_lang=args.src_lang, tgt_lang=args.tgt_lang,
                        source_prefix=args.source_prefix)
    gpus = args.ray_gpus_per_actor
    gpus = (1.0 if args.device.startswith("cuda") else 0.0) if gpus is None else gpus
    return bundle, dict(num_actors=args.ray_actors, num_gpus_per_actor=gpus, device=args.device,
                        address=args.ray_address,
                        load_kwargs=dict(src_lang=args.src_lang, tgt_lang=args.tgt_lang, source_prefix=args.source_prefix))


def _pairs(args: argparse.Namespace):
    return iter_pairs(src_path=args.src, tgt_path=args.tgt, pairs_path=args.pairs)


def cmd_score(args: argparse.Namespace) -> int:
    if args.method == "learned" or args.decode is not None:
        from .learned_cli import score_learned

        return score_learned(args)
    if args.pairs is None and args.src is None:
        raise InputError(None, None, "no input given", "--src FILE (with optional --tgt FILE) or --pairs FILE")
    if args.resume and args.out is None:
        raise InputError(None, None, "--resume was given without --out", "--out FILE naming the rows file to complete")
    gold = None
    if args.gold is not None:
        if args.pairs is None and args.tgt is None:
            raise InputError(args.gold, None, "gold alignments index the target words, but no target was given",
                             "--tgt FILE or --pairs FILE together with --gold")
        gold = scan_gold(args.gold, base=args.gold_base, fmt=args.gold_format,
                         sentences=iter_pair_lengths(_pairs(args)), skip_invalid=args.skip_invalid)
        for w in gold.warnings:
            print(f"aligndebug: warning: {w}", file=sys.stderr)
    bundle, ray_kwargs = driver_setup(args)
    n_layers = bundle.num_layers
    layer = default_layer(n_layers) if args.layer is None else args.layer
    opts = ScoreOptions(method=args.method, layer=layer, head=args.head, threshold=args.threshold,
                        per_head=args.per_head, compare=args.compare, ig_steps=args.ig_steps, batch_size=args.batch_size, beam=args.beam, chunk_size=args.chunk_size)
    total = count_lines(args.pairs or args.src)
    from tqdm import tqdm

    with tqdm(total=total, unit="sent", disable=args.no_progress, file=sys.stderr) as bar:
        try:
            if ray_kwargs is not None:
                from .ray_backend import score_with_ray

                totals, kept = score_with_ray(args.model, src=args.src, tgt=args.tgt, pairs=args.pairs, gold=gold,
                                              opts=opts, out_path=args.out, resume=args.resume,
                                              on_progress=bar.update, **ray_kwargs)
            else:
                totals, kept = score_stream(bundle, _pairs(args), gold, opts,
                                            rows_path=args.out, resume=args.resume, on_progress=bar.update)
        except InputError as exc:
            if exc.path is not None:
                raise
            side = args.tgt if args.tgt is not None and exc.message.startswith("the target") else args.src
            raise InputError(args.pairs or side, exc.line, exc.message, exc.expected) from exc
    sig_args = dict(model=bundle.name, method=args.method, layer=_fmt_sel(layer), heads=_fmt_sel(args.head),
                    threshold=args.threshold)
    signature = (AlignmentSignature.for_gold(gold, **sig_args) if gold else AlignmentSignature(**sig_args)).format()
    n_heads = bundle.model.config.decoder_attention_heads if args.per_head else None
    result = summary(totals, signature, n_layers, n_heads,
                     extra={"gold": gold.describe() if gold else None, "gold_skipped": gold.skipped if gold else 0})
    print(format_summary(result))
    if args.summary_json:
        write_json_atomic(args.summary_json, result)
    if args.alignments_out:
        links = read_links(args.out) if args.out else sorted((r["index"], r["links"]) for r in kept)
        tmp = args.alignments_out.with_name(args.alignments_out.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for _, line in links)
        tmp.replace(args.alignments_out)
    return 0


def _fmt_sel(sel: Selector) -> str:
    return ",".join(map(str, sel)) if isinstance(sel, (list, tuple)) else str(sel)


def format_summary(result: dict[str, Any]) -> str:
    """Plain-text summary table, percentages for reading (the JSON keeps fractions)."""
    lines = [f"{'sentences':>12} {result['sentences']}", f"{'links':>12} {result['links']}"]
    if "aer" in result:
        lines[:0] = [f"{'AER':>12} {100 * result['aer']:.2f}", f"{'precision':>12} {100 * result['precision']:.2f}",
                     f"{'recall':>12} {100 * result['recall']:.2f}", f"{'F1':>12} {100 * result['f1']:.2f}"]
    if "per_layer_mean" in result:
        lines.append("AER per layer (rows) x head (cols), last column the head mean:")
        for l, (row, mean) in enumerate(zip(result["per_head"], result["per_layer_mean"])):
            lines.append(f"  layer {l}: " + " ".join(f"{100 * v:6.2f}" for v in row) + f" | {100 * mean:6.2f}")
    if "compare" in result:
        cmp = result["compare"]
        if "aer" in result:
            lines.append(f"{'alignment':>12} {'AER':>7} {'P':>7} {'R':>7}")
            lines.append(f"{'attention':>12} " + " ".join(f"{100 * result[k]:7.2f}" for k in ("aer", "precision", "recall")))
            for name in ("rollout", "ig"):
                if name in cmp:
                    lines.append(f"{name:>12} " + " ".join(f"{100 * cmp[name][k]:7.2f}" for k in ("aer", "precision", "recall")))
        if cmp.get("agreement_rho_mean") is not None:
            lines.append(f"attention vs IG, mean Spearman rho per sentence: {cmp['agreement_rho_mean']:.3f}")
    if result.get("gold"):
        lines.append(f"gold: {result['gold']}")
    lines.append(f"signature: {result['signature']}")
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace) -> int:
    if args.method == "learned" or args.decode is not None:
        from .learned_cli import inspect_learned

        return inspect_learned(args)
    bundle = _bundle(args)
    rec = extract(bundle, [args.source], None if args.target is None else [args.target], beam=args.beam)[0]
    layer = default_layer(bundle.num_layers) if args.layer is None else args.layer
    links = align_record(rec, args.method, layer, args.head, args.threshold)
    mat = word_matrix(rec, args.method, layer, args.head)
    if args.record:
        args.record.write_text(rec.to_json(), encoding="utf-8")
    if args.json:
        print(json.dumps({
            "model": bundle.name, "method": args.method, "layer": layer, "head": args.head,
            "translated": args.target is None, "source_words": rec.src_words, "target_words": rec.tgt_words,
            "source_tokens": rec.src_tokens, "source_token_words": rec.src_word_ids.tolist(),
            "target_tokens": rec.label_tokens, "target_token_words": rec.tgt_word_ids.tolist(),
            "token_logprobs": [round(float(x), 4) for x in rec.token_logprobs],
            "links": sorted(links), "word_attention": [[round(float(x), 4) for x in row] for row in mat],
        }, ensure_ascii=False))
        return 0
    print(f"model: {bundle.name} ({bundle.family})   method: {args.method}   layer: {layer}   head: {args.head}")
    print(f"target ({'model translation' if args.target is None else 'forced'}): {rec.target}")
    print("source tokens: " + " ".join(f"{t}/{w}" for t, w in zip(rec.src_tokens, rec.src_word_ids)))
    print("target tokens: " + " ".join(f"{t}/{w}" for t, w in zip(rec.label_tokens, rec.tgt_word_ids)))
    print("links (source-target, 0-based): " + " ".join(f"{i}-{j}" for i, j in sorted(links)))
    print(format_matrix(mat, rec.src_words, rec.tgt_words, links))
    return 0


def format_matrix(mat, src_words: Sequence[str], tgt_words: Sequence[str], links: set[tuple[int, int]]) -> str:
    """Word-level attention as a text table; '*' marks aligned cells."""
    width = max([6] + [len(w) + 1 for w in src_words])
    head = " " * 16 + "".join(f"{w[:width - 1]:>{width}}" for w in src_words)
    rows = [head]
    for j, tw in enumerate(tgt_words):
        cells = "".join(f"{('*' if (i, j) in links else '') + format(mat[j, i], '.2f'):>{width}}"
                        for i in range(len(src_words)))
        rows.append(f"{tw[:15]:<16}{cells}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (InputError, ModelLoadError, ValueError, OSError) as exc:
        print(f"aligndebug: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
