"""`aligndebug` command line: arranges calls into the package, computes nothing itself."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from . import __version__
from .align import Selector, align_record, default_layer, word_matrix
from .compare import CompareOptions, finish_compare, format_table, run_compare
from .combine import ERROR_TYPES, learned
from .contrast import contrast
from .datasets import add_testset, echo, load_testset, table
from .decoding import DECODERS, DEFAULT_THRESHOLDS
from .decoding import resolve as resolve_decoding
from .errors import InputError, ModelLoadError
from .extract import encode_pair, extract, translate
from .gold import read_gold, scan_gold
from .labels import format_label_aucs, label_aucs, read_error_labels
from .learned import WEIGHTS, LearnedAligner, aligner_id, links_from_word_matrix, load_aligner, triage_aligner
from .learned_train import read_words, read_silver, train_aligner
from .methods import DEFAULT_ROW_RULE, ROW_RULES, compared_aligners
from .models import load_model
from .pairs import blank_as_none, count_lines, iter_pair_lengths, iter_pairs, join_reasons, read_lines_keeping_bad
from . import ray_backend
from .report import write_report
from .rows import ScoreOptions, TriageRow, read_links, summary
from .runner import calibration_path, partial_path, run_triage, score_stream, unusable_counts
from .store import claim_run, file_fingerprint, run_record_path, write_json_atomic, write_lines_atomic
from .suite import SuiteOptions, read_suite, resolve_suite, run_suite, summarize, write_html
from .suite import format_summary as format_suite_summary
from .triage import Calibration


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


class Parser(argparse.ArgumentParser):
    """Every (sub)command's parser: defaults shown in --help, and a usage error on one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number_type(ok, expected: str):
    """An argparse type: a float for which `ok` holds (NaN never does), else a one-line error."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not ok(value):  # comparisons with NaN are false
            raise argparse.ArgumentTypeError(f"expected {expected}, not {text!r}")
        return value
    return parse


non_negative_float = _number_type(lambda v: v >= 0.0, "a number >= 0")
probability = _number_type(lambda v: 0.0 <= v <= 1.0, "a probability between 0 and 1")
percentile = _number_type(lambda v: 0.0 < v < 100.0, "a percentile between 0 and 100 (exclusive)")


def check_outputs(*paths: Path | None) -> None:
    """Refuse, before any work, an output whose folder is missing and cannot be made, is not writable, or
    that names a folder: a run must not fail after its work is done."""
    for path in paths:
        if path is None:
            continue
        if path.is_dir():
            raise InputError(path, None, "this output path is a folder", "a file name")
        folder = path.parent
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise InputError(path, None, f"{existing} is not a folder", "an output path inside a folder")
        if not os.access(existing, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise InputError(path, None, "this output cannot be written (permission denied)",
                             "a writable file in a writable folder")
        folder.mkdir(parents=True, exist_ok=True)


def check_layer(layer: Selector | None, n_layers: int) -> None:
    """Refuse a decoder layer the model does not have, before any work."""
    for i in ([] if layer is None or layer == "mean" else [layer] if isinstance(layer, int) else layer):
        if not -n_layers <= i < n_layers:
            raise InputError(None, None, f"--layer {i} does not exist: the model has {n_layers} decoder layers",
                             f"0..{n_layers - 1}, negative from the end, or 'mean'")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="Hugging Face id or local folder ('default': the embedded de->en model)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (half precision on GPU)")
    p.add_argument("--src-lang", help="source language code for multilingual models (mBART/M2M100/NLLB)")
    p.add_argument("--tgt-lang", help="target language code for multilingual models (mBART/M2M100/NLLB)")
    p.add_argument("--source-prefix", default="", help="text put before every source, e.g. T5's 'translate German to English: '")


VIEW_DEFAULT = ("Default: the model's recommended view (its aligndebug.json; the embedded model's is naive, layer 1), "
                f"else {DEFAULT_ROW_RULE} and a middle-upper layer")


def apply_view(args: argparse.Namespace, bundle: Any) -> None:
    """--method and --layer left unset take the model's recommended view, else the package's one default
    (Shift-Att, a middle-upper layer): one rule for score, inspect, triage and the app."""
    if getattr(args, "method", None) is None:
        args.method = bundle.view.get("method", DEFAULT_ROW_RULE)
    if getattr(args, "layer", None) is None:
        args.layer = bundle.view.get("layer", default_layer(bundle.num_layers))


def _add_method_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=(*ROW_RULES, "learned"), default=None,
                   help="; ".join(f"{k}: {v}" for k, v in ROW_RULES.items())
                        + f"; learned: a trained aligner on top of the model (--aligner). {VIEW_DEFAULT}")
    p.add_argument("--layer", type=parse_selector, default=None,
                   help=f"decoder layer, 0-based (negative from the end), a list, or 'mean'. {VIEW_DEFAULT}")
    p.add_argument("--head", type=parse_selector, default="mean", help="head index, a list, or 'mean' (default)")
    p.add_argument("--threshold", type=probability, default=None,
                   help="the decoding rule's threshold; without --decode, link every subword pair with attention >= "
                        "this instead of the argmax (the threshold rule)")

    add_learned_args(p)


def add_run_args(p: argparse.ArgumentParser, chunk_help: str) -> None:
    """The options of `score` and `triage` on how they run: batches, chunks, beam, progress, and Ray
    (--ray, --ray-address, --ray-actors, --ray-gpus-per-actor)."""
    p.add_argument("--batch-size", type=positive_int, default=16, help="sentences per forward pass")
    p.add_argument("--chunk-size", type=positive_int, default=256, help=chunk_help)
    p.add_argument("--beam", type=positive_int, default=1, help="beam size when the model translates (1 = greedy)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    r = p.add_argument_group("Ray (pip install 'aligndebug[ray]')")
    r.add_argument("--ray", action="store_true", help="run on a Ray cluster: actors holding the model, same rows")
    r.add_argument("--ray-address", help="cluster to join (default: $RAY_ADDRESS, else a local Ray instance)")
    r.add_argument("--ray-actors", type=positive_int, default=2, help="model-holding actors (default 2)")
    r.add_argument("--ray-gpus-per-actor", type=non_negative_float, default=None,
                   help="GPUs per actor (default: 1 with --device cuda, else 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="aligndebug", description="Translation alignment debugger: word alignments from an "
                    "encoder-decoder model's attention, scored against gold (AER), error triage, named test sets.")
    parser.add_argument("--version", action="version", version=f"aligndebug {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="extract alignments for a test set and score them against gold (AER)",
                       description="Align every sentence pair of a test set from the model's cross-attention "
                                   "(translating first when no target is given), score the links against gold "
                                   "alignments (AER, precision, recall) and write one row a sentence.")
    _add_model_args(s)
    _add_method_args(s)
    add_testset_arg(s, "its source, target and gold with the gold's own format, base and skip rule")
    s.add_argument("--src", type=Path, help="source sentences, one a line (pre-tokenized words)")
    s.add_argument("--tgt", type=Path, help="target sentences to force; without them the model translates")
    s.add_argument("--pairs", type=Path, help="one 'source ||| target' pair a line, instead of --src/--tgt")
    s.add_argument("--gold", type=Path, help="gold alignment file (Pharaoh i-j / ipj / i?j, 'S|P i j', or 'sentno i j S|P')")
    s.add_argument("--gold-base", type=int, choices=(0, 1), help="gold index base (default: detect and say)")
    s.add_argument("--gold-format", choices=("pharaoh", "sp", "naacl"), help="gold format (default: detect)")
    s.add_argument("--skip-invalid", action="store_true",
                   help="skip bad gold lines, and sentences the model cannot take (empty, too long, a line that "
                        "cannot be decoded), instead of stopping; skipped sentences are counted and listed (index, "
                        "line, reason, file) in the summary")
    s.add_argument("--per-head", action="store_true", help="also AER for every layer x head and each layer's head mean")
    s.add_argument("--compare", action="store_true",
                   help="also score the alignments of " + ", ".join(a.label for a in compared_aligners())
                        + " and report attention-vs-IG agreement (Spearman rho); IG costs about --ig-steps forward "
                          "passes a sentence")
    s.add_argument("--ig-steps", type=positive_int, default=16, help="Integrated Gradients steps for --compare")
    s.add_argument("--out", type=Path, help="JSONL, one row per sentence (appended as it goes)")
    s.add_argument("--resume", action="store_true", help="keep the rows already in --out and do only the rest")
    s.add_argument("--summary-json", type=Path, help="write the summary (fractions, not percent) as JSON")
    s.add_argument("--alignments-out", type=Path, help="write predicted links as Pharaoh lines (0-based)")
    add_run_args(s, "sentences read, scored and appended to --out at a time (what a kill can cost)")
    s.set_defaults(func=cmd_score)

    i = sub.add_parser("inspect", help="show tokens, word alignment and pooled cross-attention for one sentence",
                       description="One sentence: its subword tokens and their words, the word alignment and the "
                                   "word-level cross-attention, as tables or JSON.")
    _add_model_args(i)
    _add_method_args(i)
    i.add_argument("--source", required=True, help="the source sentence (words split on spaces)")
    i.add_argument("--target", help="target to force; without it the model translates")
    i.add_argument("--beam", type=positive_int, default=1, help="beam size when the model translates (1 = greedy)")
    i.add_argument("--json", action="store_true", help="print JSON instead of tables")
    i.add_argument("--record", type=Path, help="also write the full Record (all attention arrays) as JSON")
    i.set_defaults(func=cmd_inspect)

    c = sub.add_parser("contrast", help="why this target and not that one: log-probs and contrastive attribution "
                                        "(IG of the log-prob difference) where two targets differ",
                       description="Force two targets for one source, find where they differ (word alignment of the "
                                   "two), and show per differing position the log-prob of each, their difference, "
                                   "the Integrated Gradients of that difference per source word (with its "
                                   "completeness gap) and the cross-attention of that step.")
    _add_model_args(c)
    c.add_argument("--source", required=True, help="the source sentence (words split on spaces)")
    c.add_argument("--target", required=True, help="the target to explain")
    c.add_argument("--contrast", required=True, help="the alternative target (the foil)")
    c.add_argument("--layer", type=parse_selector, default=None, help="cross-attention layer shown (default: middle-upper)")
    c.add_argument("--head", type=parse_selector, default="mean", help="head index, a list, or 'mean' (default)")
    c.add_argument("--ig-steps", type=positive_int, default=32, help="Integrated Gradients steps")
    c.add_argument("--json", action="store_true", help="print JSON instead of tables")
    c.set_defaults(func=cmd_contrast)

    u = sub.add_parser("suite", help="score a contrastive test suite (source, correct, wrong[, tags]) or the "
                                     "built-in gender probe: accuracy, bootstrap intervals, rows and an HTML report",
                       description="Score every item of a contrastive suite (it passes when the correct target has "
                                   "the higher log-prob): accuracy overall and per tag with bootstrap intervals, the "
                                   "contrastive attribution at the differing position, rows as JSONL (resumable) "
                                   "and a self-contained HTML report of the failing items.")
    _add_model_args(u)
    u.add_argument("--suite", required=True, help="TSV file 'source<TAB>correct<TAB>wrong[<TAB>tags]' or gender-de-en")
    u.add_argument("--out", type=Path, help="JSONL, one row per item (appended as it goes)")
    u.add_argument("--resume", action="store_true", help="keep the rows already in --out and do only the rest")
    u.add_argument("--html", type=Path, help="write a self-contained HTML report with the failing items")
    u.add_argument("--summary-json", type=Path, help="write the summary (fractions, not percent) as JSON")
    u.add_argument("--attribute", choices=("all", "failing", "none"), default="all",
                   help="items that get the contrastive attribution (marker rates need 'all')")
    u.add_argument("--ig-steps", type=positive_int, default=16, help="Integrated Gradients steps per item")
    u.add_argument("--top-k", type=positive_int, default=2, help="'top-attributed' = among the top K source words")
    u.add_argument("--layer", type=parse_selector, default=None, help="cross-attention layer shown (default: middle-upper)")
    u.add_argument("--head", type=parse_selector, default="mean", help="head index, a list, or 'mean' (default)")
    u.add_argument("--batch-size", type=positive_int, default=16, help="targets per forward pass")
    u.add_argument("--chunk-size", type=positive_int, default=64, help="items scored and appended to --out at a time")
    u.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    u.set_defaults(func=cmd_suite)

    add_triage_parser(sub)

    add_compare_parser(sub)

    d = sub.add_parser("datasets", help="list the named test sets, print their files, or register a local copy",
                       description="Named test sets (sacrebleu-style): shipped in the repository's datasets/ "
                                   "folder, or registered from local files under $ALIGNDEBUG_CACHE "
                                   "(default ~/.cache/aligndebug).")
    d.add_argument("--echo", nargs=2, metavar=("WHAT", "NAME"),
                   help="print a set's src, tgt or gold lines, e.g. --echo src bicici-deen")
    d.add_argument("--json", action="store_true", help="list as JSON")
    dsub = d.add_subparsers(dest="datasets_command")
    a = dsub.add_parser("add", help="copy local files into the cache and register them under NAME",
                        description="Check a test set's files (line counts, gold links, registered checksums), copy "
                                    "them under $ALIGNDEBUG_CACHE and register them, so --testset NAME works.")
    a.add_argument("name", help="the set's name (a not-shipped one such as rwth-deen is checked against its registry entry)")
    a.add_argument("--src", type=Path, help="source sentences, one a line")
    a.add_argument("--tgt", type=Path, help="target sentences, one a line")
    a.add_argument("--pairs", type=Path, help="one 'source ||| target' pair a line, instead of --src/--tgt")
    a.add_argument("--gold", type=Path, help="gold alignments (checked against the sentences before anything is kept)")
    a.add_argument("--gold-base", type=int, choices=(0, 1), help="gold index base (default: detect)")
    a.add_argument("--gold-format", choices=("pharaoh", "sp", "naacl"), help="gold format (default: detect)")
    a.add_argument("--direction", help="language direction, e.g. de-en")
    d.set_defaults(func=cmd_datasets)

    add_train_parser(sub)
    return parser


def add_testset_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--testset", metavar="NAME",
                   help=f"a named test set (see `aligndebug datasets`) instead of file options: {what}")


def apply_testset(args: argparse.Namespace, roles: dict[str, str]) -> None:
    """Fill file options from `--testset NAME`: `roles` maps an option (e.g. 'ref') to the set's file role
    (e.g. 'tgt'). Gold format, base and skip rule come with a gold file. Giving both a set and files is an error."""
    if not getattr(args, "testset", None):
        return
    ts = load_testset(args.testset)
    clash = [f"--{opt}" for opt in ("src", "tgt", "pairs", "gold", "ref") if getattr(args, opt, None) is not None]
    if clash:
        raise InputError(None, None, f"--testset {args.testset} was given together with {', '.join(clash)}",
                         "either a named test set or files")
    for opt, role in roles.items():
        setattr(args, opt, ts.path(role))
    if ts.pairs is not None and "src" in roles:
        args.src, args.tgt = None, None
        if hasattr(args, "pairs"):
            args.pairs = ts.path("pairs")
        else:
            raise InputError(None, None, f"test set {ts.name} is a pairs file, which this command cannot read",
                             "a set with separate source and target files")
    if getattr(args, "gold", None) is not None:
        args.gold_base = ts.gold_base if args.gold_base is None else args.gold_base
        args.gold_format = ts.gold_format if args.gold_format is None else args.gold_format
        args.skip_invalid = args.skip_invalid or ts.skip_invalid


def cmd_datasets(args: argparse.Namespace) -> int:
    if args.datasets_command == "add":
        ts = add_testset(args.name, src=args.src, tgt=args.tgt, pairs=args.pairs, gold=args.gold,
                         gold_base=args.gold_base, gold_format=args.gold_format, direction=args.direction)
        print(f"registered {ts.name}: {ts.sentences} sentences in {ts.root}")
        return 0
    if args.echo:
        what, name = args.echo
        for line in echo(name, what):
            sys.stdout.write(line + "\n")
        return 0
    rows = table()
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return 0
    cols = ("name", "direction", "sentences", "gold", "licence", "status")
    widths = {c: max(len(c), *(len(str(r[c] or "-")) for r in rows)) for c in cols}
    print("  ".join(f"{c:<{widths[c]}}" for c in cols))
    for r in rows:
        print("  ".join(f"{str(r[c] if r[c] is not None else '-'):<{widths[c]}}" for c in cols))
    return 0


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
        ray_backend.require_ray()
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
    keep = getattr(args, "skip_invalid", False)  # a sentence the run skips is read, not refused
    return iter_pairs(src_path=args.src, tgt_path=args.tgt, pairs_path=args.pairs, allow_empty=keep,
                      keep_unreadable=keep)


def device_setting(device: str) -> dict[str, str]:
    """`--device` in a run's record when it is not the CPU: on a GPU the model runs in half precision, so its rows
    differ in the last digits and a run is resumed on the device it began on (records of CPU runs, written before
    the key, stay the same). The flag, not the bundle's device: with --ray the actors load the model there."""
    return {} if device.startswith("cpu") else {"device": device}


def score_run(args: argparse.Namespace, bundle: Any, opts: ScoreOptions) -> dict[str, Any]:
    """What identifies a `score` run for --resume: its inputs' contents, the model, and every setting that
    changes a row (not batch or chunk sizes, which change nothing but the last digits)."""
    learned = opts.method == "learned"
    run = {"command": "score", "aligndebug": __version__,
           "text": {k: file_fingerprint(getattr(args, k)) for k in ("src", "tgt", "pairs")},
           "inputs": {"gold": file_fingerprint(args.gold)},
           "model": bundle.name, "model_fingerprint": bundle.fingerprint(), **device_setting(args.device),
           "method": opts.method, "layer": None if learned else opts.layer, "head": None if learned else opts.head,
           "threshold": opts.threshold, "per_head": args.per_head, "compare": args.compare}
    if opts.decode is not None:  # absent from records written before rules had names: the same run
        run["decode"] = opts.decode
    if learned:
        run["aligner"] = aligner_run(opts.aligner)
    if args.compare:
        run["ig_steps"] = args.ig_steps
    if args.tgt is None and args.pairs is None:
        run["beam"] = args.beam  # the model translates
    if args.gold is not None:
        run.update(gold_base=args.gold_base, gold_format=args.gold_format, skip_invalid=args.skip_invalid)
    return run


def _score_gold(args: argparse.Namespace):
    """`score`'s input check and its gold file, scanned against the pairs (warnings printed); None without gold."""
    if args.pairs is None and args.src is None:
        raise InputError(None, None, "no input given", "--src FILE (with optional --tgt FILE) or --pairs FILE")
    if args.gold is None:
        return None
    if args.pairs is None and args.tgt is None:
        raise InputError(args.gold, None, "gold alignments index the target words, but no target was given",
                         "--tgt FILE or --pairs FILE together with --gold")
    gold = scan_gold(args.gold, base=args.gold_base, fmt=args.gold_format,
                     sentences=iter_pair_lengths(_pairs(args)), skip_invalid=args.skip_invalid)
    for w in gold.warnings:
        print(f"aligndebug: warning: {w}", file=sys.stderr)
    return gold


def score_options(args: argparse.Namespace, bundle: Any) -> ScoreOptions:
    """`score`'s ScoreOptions: the model's view for attention, or the learned aligner (loaded and checked against
    `bundle`), and the decoding rule."""
    aligner = None
    if args.method == "learned":
        aligner = load_aligner(args.aligner, bundle)
    else:
        check_layer(args.layer, bundle.num_layers)
        apply_view(args, bundle)
    decode, threshold = decoding_of(args, aligner)
    layer = None if aligner is not None else default_layer(bundle.num_layers) if args.layer is None else args.layer
    return ScoreOptions(method=args.method, layer=layer, head=args.head, threshold=threshold, decode=decode,
                        skip_invalid=args.skip_invalid, per_head=args.per_head, compare=args.compare,
                        ig_steps=args.ig_steps, batch_size=args.batch_size, beam=args.beam,
                        chunk_size=args.chunk_size, aligner=aligner,
                        aligner_name="default" if args.aligner is None else Path(args.aligner).name)


def cmd_score(args: argparse.Namespace) -> int:
    apply_testset(args, {"src": "src", "tgt": "tgt", "gold": "gold"})
    if args.resume and args.out is None:
        raise InputError(None, None, "--resume was given without --out", "--out FILE naming the rows file to complete")
    check_learned_options(args)
    gold = _score_gold(args)
    check_outputs(args.out, args.summary_json, args.alignments_out)
    bundle, ray_kwargs = driver_setup(args)
    n_layers = bundle.num_layers
    opts = score_options(args, bundle)
    total = count_lines(args.pairs or args.src)
    if args.out is not None:
        forced = args.tgt is not None or args.pairs is not None
        claim_run(args.out, score_run(args, bundle, opts), resume=args.resume, key="index", n_items=total,
                  fields=("source_words", "target_words") if forced else ("source_words",),
                  expected=lambda: ((p.index, (p.src_words, p.tgt_words) if forced else (p.src_words,))
                                    for p in _pairs(args)))
    with tqdm(total=total, unit="sent", disable=args.no_progress, file=sys.stderr) as bar:
        try:
            if ray_kwargs is not None:
                totals, kept = ray_backend.score_with_ray(args.model, src=args.src, tgt=args.tgt, pairs=args.pairs, gold=gold,
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
    signature = opts.signature(bundle.name, gold).format()
    n_heads = bundle.num_heads if args.per_head else None
    extra = {"gold": gold.describe() if gold else None, "gold_skipped": gold.skipped if gold else 0}
    if opts.aligner is not None:
        extra["aligner"] = {k: opts.aligner.card.get(k) for k in ("base_model", "objective", "steps", "data")}
    result = summary(totals, signature, n_layers, n_heads, extra=extra)
    for s in result.get("skipped_sentences", []):  # name the file and line of each skipped sentence
        message = s.get("message") or ""
        target_side = args.tgt is not None and (message.startswith("the target") or message.startswith(f"{args.tgt}:"))
        s["file"] = str(args.tgt if target_side else (args.pairs or args.src))
    print(format_summary(result))
    if args.summary_json:
        write_json_atomic(args.summary_json, result)
    if args.alignments_out:
        links = read_links(args.out) if args.out else sorted((r["index"], r["links"]) for r in kept)
        write_lines_atomic(args.alignments_out, (line for _, line in links))
    return 0


def format_summary(result: dict[str, Any]) -> str:
    """Plain-text summary table, percentages for reading (the JSON keeps fractions)."""
    lines = [f"{'sentences':>12} {result['sentences']}", f"{'links':>12} {result['links']}"]
    if result.get("skipped_sentences"):
        lines.append(f"{'skipped':>12} {len(result['skipped_sentences'])} sentence(s) the model cannot take "
                     "(listed in the summary JSON)")
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
            for name in (a.name for a in compared_aligners()):
                if name in cmp:
                    lines.append(f"{name:>12} " + " ".join(f"{100 * cmp[name][k]:7.2f}" for k in ("aer", "precision", "recall")))
        if cmp.get("agreement_rho_mean") is not None:
            lines.append(f"attention vs IG, mean Spearman rho per sentence: {cmp['agreement_rho_mean']:.3f}")
    if result.get("gold"):
        lines.append(f"gold: {result['gold']}")
    lines.append(f"signature: {result['signature']}")
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace) -> int:
    check_outputs(args.record)
    check_learned_options(args)
    if args.method == "learned":
        return inspect_learned(args)
    bundle = _bundle(args)
    check_layer(args.layer, bundle.num_layers)
    apply_view(args, bundle)
    rec = extract(bundle, [args.source], None if args.target is None else [args.target], beam=args.beam)[0]
    layer = default_layer(bundle.num_layers) if args.layer is None else args.layer
    decode, threshold = decoding_of(args)
    links = align_record(rec, args.method, layer, args.head, threshold, decode)
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
            **({} if decode is None else {"decode": decode, "threshold": threshold}),
        }, ensure_ascii=False))
        return 0
    print(f"model: {bundle.name} ({bundle.family})   method: {args.method}   layer: {layer}   head: {args.head}"
          + ("" if decode is None else f"   decode: {decode}{'' if threshold is None else f' @ {threshold:g}'}"))
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


def cmd_contrast(args: argparse.Namespace) -> int:
    bundle = _bundle(args)
    if args.layer is not None:
        check_layer(args.layer, bundle.num_layers)
    res = contrast(bundle, args.source, args.target, args.contrast, steps=args.ig_steps,
                   layer=args.layer, head=args.head)
    if args.json:
        print(json.dumps(res.to_dict(), ensure_ascii=False))
        return 0
    print(f"model: {res.model}   IG steps: {res.steps} (baseline {res.baseline})   attention: layer {res.layer}, head {res.head}")
    print(f"log p(target) = {res.logprob_target:.3f}   log p(contrast) = {res.logprob_contrast:.3f}   "
          f"difference = {res.difference:+.3f}")
    if not res.positions:
        print("the two targets have the same words: nothing to contrast")
    width = max([8] + [len(w) + 1 for w in res.source_words])
    for p in res.positions:
        gap = p.relative_delta
        print(f"\n{p.kind} at target words {p.target_span[0]}:{p.target_span[1]}: '{p.target_text}' vs '{p.contrast_text}'"
              f"   {p.logprob_target:.3f} vs {p.logprob_contrast:.3f}   difference {p.difference:+.3f}"
              f"   completeness gap {p.delta:.2g}" + ("" if gap != gap else f" ({100 * gap:.1f}%)"))
        print(" " * 20 + "".join(f"{w[:width - 1]:>{width}}" for w in res.source_words))
        for name, vals in (("contrastive IG", p.attribution), ("attention target", p.attention_target),
                           ("attention contrast", p.attention_contrast)):
            print(f"{name:<20}" + "".join(f"{v:>{width}.3f}" for v in vals))
    return 0


def cmd_suite(args: argparse.Namespace) -> int:
    if args.resume and args.out is None:
        raise InputError(None, None, "--resume was given without --out", "--out FILE naming the rows file to complete")
    check_outputs(args.out, args.html, args.summary_json)
    path = resolve_suite(args.suite)
    items = read_suite(path)
    bundle = _bundle(args)
    if args.layer is not None:
        check_layer(args.layer, bundle.num_layers)
    opts = SuiteOptions(steps=args.ig_steps, attribute=args.attribute, layer=args.layer, head=args.head,
                        batch_size=args.batch_size, chunk_size=args.chunk_size)
    with tqdm(total=len(items), unit="item", disable=args.no_progress, file=sys.stderr) as bar:
        rows = run_suite(bundle, items, opts, rows_path=args.out, resume=args.resume, source=path,
                         on_progress=bar.update)
    result = summarize(rows, top_k=args.top_k)
    result.update({"suite": str(path), "model": bundle.name, "ig_steps": args.ig_steps})
    print(format_suite_summary(result))
    if args.summary_json:
        write_json_atomic(args.summary_json, result)
    if args.html:
        layer = default_layer(bundle.num_layers) if args.layer is None else args.layer
        write_html(args.html, rows, result, title=f"aligndebug suite: {path.name}",
                   meta=[f"suite {path}", f"model {bundle.name}", f"{len(rows)} items",
                         f"IG steps {args.ig_steps}", f"attention layer {_fmt_sel(layer)}, head {_fmt_sel(args.head)}"])
    return 0


def _fmt_sel(sel: Selector) -> str:
    return ",".join(map(str, sel)) if isinstance(sel, (list, tuple)) else str(sel)


# --------------------------------------------------------------------------- triage

def add_triage_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `triage` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "triage", help="flag and rank suspect translations of a test set",
        description="Score every translation with attention, confidence and repetition signals, flag the "
                    "ones beyond calibrated percentile thresholds and rank them, most suspect first.")
    _add_model_args(p)
    add_testset_arg(p, "its source sentences, with its target side as references")
    p.add_argument("--src", type=Path, help="source sentences, one a line (or --testset)")
    p.add_argument("--tgt", type=Path, help="translations to force through the model (default: the model translates)")
    p.add_argument("--ref", type=Path, help="references, one a line: adds sentence chrF and BLEU")
    p.add_argument("--out", type=Path, required=True, help="JSONL rows, most suspect first (calibration saved beside it)")
    p.add_argument("--html", type=Path, help="self-contained HTML report of the top suspects")
    p.add_argument("--top", type=positive_int, default=20, help="suspects shown in the HTML report")
    p.add_argument("--labels", type=Path, help="error labels people gave these translations (TSV with a 'labels' "
                                               "column, one line per sentence): print the ROC-AUC of the score and "
                                               "of every signal per label, against the rows with no label")
    p.add_argument("--labels-json", type=Path, help="also write those AUCs as JSON (with --labels)")
    p.add_argument("--calibration", type=Path, help="calibration JSON from an earlier run on a clean set "
                                                     "(default: calibrate on this set)")
    p.add_argument("--percentile", type=percentile, default=95.0, help="flag threshold percentile when calibrating")
    p.add_argument("--combine", choices=("learned", "fisher"), default="learned",
                   help="how the signals make one score: learned (default; weights fitted without labels on this "
                        "set against synthetic errors made from it, and the rate of each error the set seems to hold, "
                        "saved in the calibration) or fisher (Fisher's "
                        "method, every signal family the same weight)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the synthetic errors the learned combination is fitted on (default 0): another seed "
                        "shows how much a ranking owes to that draw")
    p.add_argument("--rank-by", choices=ERROR_TYPES, default=None,
                   help="rank by one error type's own score (the rows' type_scores) instead of the overall score, "
                        "to look for that error alone (learned combination only); flags and the overall score "
                        "stay as they are")
    p.add_argument("--aligner", default="default",
                   help="learned aligner folder whose links give two more signals from the same pass (target words "
                        "it finds no source for, source words no target word aligns to); default: the embedded "
                        "model's aligner when the model is the one it was trained for; 'none': no aligner")
    p.add_argument("--method", choices=tuple(ROW_RULES), default=None,
                   help="; ".join(f"{k}: {v}" for k, v in ROW_RULES.items()) + f". {VIEW_DEFAULT}")
    p.add_argument("--layer", type=parse_selector, default=None, help=f"decoder layer (0-based) or 'mean'. {VIEW_DEFAULT}")
    p.add_argument("--head", type=parse_selector, default="mean", help="head index or 'mean' (default)")
    add_run_args(p, "sentences translated and scored at a time, in input order (what a kill can cost)")
    p.set_defaults(func=cmd_triage)
    return p


def _triage_lines(path: str, unreadable: dict[int, str]) -> list[str]:
    """The lines of one of triage's files, every line kept (`pairs.read_lines_keeping_bad`); the errors of those
    that could not be read are added to `unreadable` (sentence index -> why, a sentence's files joined)."""
    lines, bad = read_lines_keeping_bad(path)
    for k, why in bad.items():
        unreadable[k] = join_reasons(unreadable.get(k), why)
    return lines


def cmd_triage(args: argparse.Namespace) -> int:
    """Handler of `aligndebug triage`."""
    apply_testset(args, {"src": "src", "ref": "tgt"})
    if args.src is None:
        raise InputError(None, None, "no source sentences given", "--src FILE or --testset NAME")
    if isinstance(args.layer, list) or isinstance(args.head, list):
        raise InputError(None, None, "lists of layers or heads are not supported by triage", "one index or 'mean'")
    # no line stops a triage: an empty source or translation is flagged `empty`, a line with bytes that cannot
    # be decoded `undecodable` (file and line named), both ranked among the suspects; an empty reference
    # line leaves its row without reference scores
    unreadable: dict[int, str] = {}
    sources, targets, references = (_triage_lines(path, unreadable) if path else None
                                    for path in (args.src, args.tgt, args.ref))
    if references is not None:
        references = blank_as_none(references)
    for path, lines in ((args.tgt, targets), (args.ref, references)):
        if lines is not None and len(lines) != len(sources):
            raise InputError(path, None, f"{len(lines)} lines but {args.src} has {len(sources)}",
                             "one line per source sentence")
    calibration = Calibration.load(args.calibration) if args.calibration else None
    labelled = read_error_labels(args.labels) if args.labels else None  # a bad file fails before any work
    if labelled is not None and len(labelled) != len(sources):
        raise InputError(args.labels, None, f"labels for {len(labelled)} sentences but {args.src} has {len(sources)}",
                         "one line per source sentence after the header")
    if args.labels_json and labelled is None:
        raise InputError(None, None, "--labels-json needs --labels", "--labels FILE")
    check_outputs(args.out, args.html, args.labels_json)
    bundle, ray_kwargs = driver_setup(args)
    check_layer(args.layer, bundle.num_layers)
    apply_view(args, bundle)
    aligner = triage_aligner(bundle, args.aligner)
    common = dict(batch_size=args.batch_size, calibration=calibration, beam=args.beam, layer=args.layer,
                  head=args.head, method=args.method, percentile=args.percentile, out=args.out,
                  chunk_size=args.chunk_size, combine=args.combine, seed=args.seed, aligner=aligner,
                  rank_by=args.rank_by)
    # a triage rerun with the same --out resumes from <out>.partial: only when that file is this run's
    triage_run = {"command": "triage", "aligndebug": __version__, "model": bundle.name,
                  "model_fingerprint": bundle.fingerprint(), **device_setting(args.device), "method": args.method,
                  "layer": args.layer, "head": args.head, "percentile": args.percentile, "combine": args.combine,
                  "aligner": aligner_id(aligner),
                  "text": {k: file_fingerprint(getattr(args, k)) for k in ("src", "tgt", "ref")},
                  "inputs": {"calibration": file_fingerprint(args.calibration)},
                  **({"beam": args.beam} if args.tgt is None else {})}
    claim_run(partial_path(args.out), triage_run, resume=True, key="id", n_items=len(sources),
              fields=("source", "translation", "reference") if targets is not None else ("source", "reference"),
              expected=lambda: ((i, (s, *([targets[i]] if targets is not None else []),
                                     references[i] if references is not None else None))
                                for i, s in enumerate(sources)))
    with tqdm(total=len(sources), unit="sent", disable=args.no_progress, file=sys.stderr) as bar:
        try:
            if ray_kwargs is not None:
                rows = ray_backend.triage_with_ray(args.model, sources, targets, references, **common, on_progress=bar.update,
                                                   unreadable=unreadable, **ray_kwargs)
            else:
                rows = run_triage(bundle, sources, targets, references, **common, on_progress=bar.update,
                                  unreadable=unreadable)
        except InputError as exc:  # a sentence the model cannot take: name the source file
            if exc.path is not None:
                raise
            raise InputError(args.src, exc.line, exc.message, exc.expected) from exc
    run_record_path(partial_path(args.out)).unlink(missing_ok=True)  # the partial rows are ranked and gone
    calibration = rows.calibration
    if args.html:
        write_report(rows, args.html, bundle=bundle, calibration=calibration, top=args.top,
                     layer=args.layer, head=args.head, method=args.method)
    print(format_top(rows, 10, args.rank_by))
    unusable = rows.unusable
    combine = "learned" if learned(calibration) is not None else "Fisher's method"
    print(f"{len(rows)} sentences, score: {combine}; the model could not take {sum(unusable.values())}"
          + (f" ({unusable_counts(unusable)})" if unusable else ""))
    print(f"rows: {args.out}   calibration: {calibration_path(args.out)}"
          + (f"   report: {args.html}" if args.html else ""))
    if labelled is not None:
        aucs = label_aucs(rows, labelled, calibration)
        print(format_label_aucs(aucs))
        if args.labels_json:
            write_json_atomic(args.labels_json, aucs)
    return 0


def format_top(rows: Sequence[dict[str, Any]], k: int = 10, rank_by: str | None = None) -> str:
    """Plain-text table of the `k` most suspect rows, with the learned verdict's error type when there is one;
    with `rank_by`, the rows ranked by that error type's score, shown beside the overall score."""
    top = [TriageRow.from_json(r) for r in rows[:k]]
    typed = any("error_type" in r.raw for r in top)
    by = f"{rank_by[:4]} sc" if rank_by else ""
    lines = [f"{'rank':>4} " + (f"{by:>7} " if rank_by else "") + f"{'score':>7}  " + (f"{'type':<10} " if typed else "")
             + f"{'flags':<32} translation"]
    for r in top:
        flags = ",".join(r.flags) or "-"
        kind = f"{r.raw.get('error_type', '-'):<10} " if typed else ""
        own = f"{r.raw['type_scores'][rank_by]:>7.2f} " if rank_by else ""
        lines.append(f"{r.rank:>4} {own}{r.score:>7.2f}  {kind}{flags[:32]:<32} {r.translation[:80]}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- compare

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
    p.add_argument("--method", choices=tuple(ROW_RULES), default=DEFAULT_ROW_RULE,
                   help="; ".join(f"{k}: {v}" for k, v in ROW_RULES.items()))
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
    p.add_argument("--combine", choices=("learned", "fisher"), default="learned",
                   help="how triage signals make one score, on the first model's scale: learned (default, as "
                        "`triage`: weights fitted without labels on the first model's rows against synthetic errors "
                        "made from them, forced through it) or fisher (Fisher's method against its calibration)")
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
                          seed=args.seed, percentile=args.percentile, combine=args.combine,
                          translate=not args.alignment_only)

    def load(spec: str):
        return load_model(spec, device=args.device, src_lang=args.src_lang, tgt_lang=args.tgt_lang,
                          source_prefix=args.source_prefix)

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





# ------------------------------------------------------------------ decoding rules and the learned aligner

def add_learned_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--aligner", type=Path, default=None,
                   help="learned aligner folder for --method learned (default: the embedded model's aligner)")
    p.add_argument("--decode", choices=tuple(DECODERS), default=None,
                   help="decoding rule, for every method: argmax (per target token; with --threshold a row below it "
                        "stays unaligned), threshold (every cell >= --threshold), bidir (share of its row and of its "
                        "column both >= --threshold, as awesome-align). Default: argmax, or threshold when --threshold "
                        "is given; with --method learned the rule in the aligner's card. Without --threshold a rule "
                        "takes its default (" + ", ".join(f"{k} {v}" for k, v in DEFAULT_THRESHOLDS.items() if v) + ")")


def decoding_of(args: argparse.Namespace, aligner: LearnedAligner | None = None) -> tuple[str | None, float | None]:
    """(rule, threshold) a command reads links with. Attention without --decode keeps its plain reading (rule None:
    argmax, or the threshold rule with --threshold, and no rule in the signature); a learned aligner without either
    option takes the rule its card names (chosen on its dev set)."""
    if aligner is None:
        if args.decode is None:
            return None, args.threshold
        return resolve_decoding(args.decode, args.threshold)
    card = aligner.card.get("decode") or {}
    default = (card["rule"], card.get("threshold")) if card.get("rule") else None
    return resolve_decoding(args.decode, args.threshold, default)


def check_learned_options(args: argparse.Namespace) -> None:
    """Refuse, before any work, what --method learned has no use for (it reads hidden states, not heads)."""
    if args.method != "learned":
        if getattr(args, "aligner", None) is not None:
            raise InputError(None, None, "--aligner is only read by --method learned", "--method learned, or no --aligner")
        return
    for attr, flag, why in (("per_head", "--per-head", "a learned aligner has no layers or heads to grid"),
                            ("compare", "--compare", "--compare scores attention-based aligners beside attention"),
                            ("layer", "--layer", "a learned aligner reads the layers its card names")):
        value = getattr(args, attr, None)
        if value is not None and value is not False:  # layer 0 is given, though falsy
            raise InputError(None, None, f"{flag} is not available with --method learned: {why}",
                             f"--method naive or shift-att with {flag}, or no {flag}")


def aligner_run(aligner: LearnedAligner) -> dict[str, Any] | None:
    """What identifies a learned aligner in a run record: its weights' size and sha256 (any folder it sits in)."""
    return file_fingerprint(aligner.folder / WEIGHTS) if aligner.folder is not None else None


def inspect_learned(args: argparse.Namespace) -> int:
    """`inspect --method learned`: the aligner's word matrix and links for one sentence."""

    bundle = _bundle(args)
    aligner = load_aligner(args.aligner, bundle)
    target = args.target if args.target is not None else translate(bundle, [args.source], beam=args.beam)[0]
    enc = encode_pair(bundle, args.source, target)
    mat = aligner.word_matrices(bundle, [enc])[0]  # last column: mass on special tokens (no source)
    rule, thr = decoding_of(args, aligner)
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


def add_train_parser(sub: Any) -> None:
    p = sub.add_parser("train-aligner", help="train a learned aligner on top of a frozen model (silver links or none)",
                       description="Train a small alignment module on a frozen encoder-decoder: supervised by silver "
                                   "Pharaoh links, self-supervised, or both; saved as safetensors plus a JSON card.")
    _add_model_args(p)
    p.add_argument("--src", type=Path, required=True, help="source sentences, one a line (words split on spaces)")
    p.add_argument("--tgt", type=Path, required=True, help="target sentences, one a line")
    p.add_argument("--silver", type=Path, action="append",
                   help="silver links, Pharaoh i-j 0-based, one line per pair; repeat it for several teachers (each "
                        "target word then learns the mean of their distributions)")
    p.add_argument("--objective", choices=("supervised", "self", "both"), default=None,
                   help="default: supervised with --silver, self without")
    p.add_argument("--layer", default="all", help="decoder layer(s) the queries read: 'all', an index or a list")
    p.add_argument("--epochs", type=positive_int, default=2, help="passes over the training pairs")
    p.add_argument("--batch-size", type=positive_int, default=32, help="sentence pairs per step")
    p.add_argument("--lr", type=non_negative_float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many steps")
    p.add_argument("--lowercase", type=probability, default=0.0, help="probability a pair is seen lowercased in an epoch")
    p.add_argument("--dev-src", type=Path, help="dev source sentences for the AER after each epoch")
    p.add_argument("--dev-tgt", type=Path, help="dev target sentences")
    p.add_argument("--dev-gold", type=Path, help="dev alignments (any gold format) for the AER after each epoch")
    p.add_argument("--seed", type=int, default=0, help="random seed (initialisation and batch order)")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this aligner's weights (same model and objective), e.g. to continue at a lower --lr")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--out", type=Path, required=True, help="folder for the aligner (and its checkpoint/)")
    p.set_defaults(func=cmd_train_aligner)


def cmd_train_aligner(args: argparse.Namespace) -> int:
    objective = args.objective or ("supervised" if args.silver else "self")
    if objective != "self" and args.silver is None:
        raise InputError(None, None, f"the {objective!r} objective needs silver links", "--silver FILE")
    src, tgt = read_words(args.src), read_words(args.tgt)
    if len(src) != len(tgt):
        raise InputError(args.tgt, None, f"{len(tgt)} lines, but {args.src} has {len(src)}", "one target per source")
    lengths = [(len(s), len(t)) for s, t in zip(src, tgt)]
    teachers = [read_silver(path, lengths) for path in args.silver or ()]
    silver = teachers[0] if len(teachers) == 1 else list(zip(*teachers)) if teachers else None
    dev = None
    if args.dev_gold is not None:
        if args.dev_src is None or args.dev_tgt is None:
            raise InputError(args.dev_gold, None, "a dev gold needs its sentences", "--dev-src and --dev-tgt")
        ds, dt = read_words(args.dev_src), read_words(args.dev_tgt)
        dev = (ds, dt, list(read_gold(args.dev_gold, sentences=[(len(a), len(b)) for a, b in zip(ds, dt)],
                                      skip_invalid=True)))
    bundle = _bundle(args)
    layer = args.layer if args.layer == "all" else parse_selector(args.layer)
    aligner = train_aligner(bundle, src, tgt, silver, args.out, objective=objective, layers=layer, epochs=args.epochs,
                            batch_size=args.batch_size, lr=args.lr, dev=dev, lowercase=args.lowercase, seed=args.seed,
                            progress=not args.no_progress, max_steps=args.max_steps, init=args.init,
                            data=" ".join(str(x) for x in (args.src, args.tgt, *(args.silver or ()))))
    print(json.dumps({k: aligner.card.get(k) for k in ("base_model", "fingerprint", "objective", "steps",
                                                         "parameters", "train_seconds")}, ensure_ascii=False))
    return 0

def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
        sys.stdout.flush()  # inside the try: a closed pipe met at exit's flush would print a traceback
        return rc
    except BrokenPipeError:
        # the reader stopped early (`| head`), as a shell tool expects: no error, and none again at exit
        # when Python flushes stdout
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool a pipe closed on
    except (InputError, ModelLoadError, ValueError, OSError) as exc:
        print(f"aligndebug: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
