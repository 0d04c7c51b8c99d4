"""Speed of `aligndebug score` against a bare forward pass and against Inseq, in one run on the same sentences.

  (a)  a bare teacher-forced forward pass: eager attention, output_attentions=True, the same model
       object, batched the same way (length-sorted batches of --batch-size). Two flavours:
       (a0) forward only, on tensors prepared before the clock starts (the strict baseline), and
       (a)  plain batch tokenization + forward, what a hand-written script would do.
  (b)  aligndebug's extraction + alignment + scoring path (`runner.score_stream`: word-mapped
       tokenization, the forward pass, the per-sentence reduction, links, counts against gold).
  (c)  Inseq's attention attribution (`inseq.load_model(..., "attention").attribute`), if installed.

Targets (issue 6): (b)/(a) <= 1.3 and (c)/(b) >= 10 (time per sentence). (a) and (b) are repeated
--repeats times, interleaved, and the minimum is used (the least disturbed run on a shared machine);
medians are printed too. On CPU the clock is the process's CPU time by default (--clock cpu): on a
machine shared with other jobs, wall time mostly measures waiting for a core. With --threads 1 and
an idle machine the two agree; --clock wall measures wall time (always used on GPU).

    python bench/bench_extract.py                      # embedded model, else a training snapshot, else tiny
    python bench/bench_extract.py --n 300 --batch-size 16 --threads 1 --inseq-n 40 --data bicici
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aligndebug.rows import ScoreOptions  # noqa: E402
from aligndebug.runner import score_stream  # noqa: E402
from aligndebug.extract import decoder_inputs, length_batches  # noqa: E402
from aligndebug.gold import read_gold  # noqa: E402
from aligndebug.models import DEFAULT_MODEL_DIR, load_model  # noqa: E402
from aligndebug.pairs import SentencePair, iter_pairs  # noqa: E402

DATA = REPO / "datasets"


def pick_model(tmp: Path) -> tuple[str, str]:
    """(path, how it was chosen): the embedded model, else the newest training snapshot, else a tiny random one."""
    if (DEFAULT_MODEL_DIR / "config.json").exists():
        return str(DEFAULT_MODEL_DIR), "embedded default model"
    snaps = sorted(p for p in (REPO / "runs" / "default-model" / "snapshots").glob("*")
                   if (p / "config.json").exists() and (p / "model.safetensors").exists())
    if snaps:
        return str(snaps[-1]), f"training snapshot {snaps[-1].name} (read only)"
    sys.path.insert(0, str(REPO / "tests"))
    import tiny_models

    return str(tiny_models.save("marian", tmp / "tiny-marian")), "tiny random Marian (no trained model found)"


def load_sentences(n: int, data: str = "multi30k") -> tuple[list[SentencePair], list | None, str]:
    """n sentence pairs: Multi30k test 2016 (1,000 unique captions, no gold), or Bicici de-en (Europarl,
    100 sentences with gold, cycled when n > 100; its one out-of-range gold sentence is skipped)."""
    if data == "multi30k":
        import gzip

        d = DATA / "train" / "multi30k-deen"
        with gzip.open(d / "test_2016_flickr.de.gz", "rt", encoding="utf-8") as fs, \
                gzip.open(d / "test_2016_flickr.en.gz", "rt", encoding="utf-8") as ft:
            lines = list(zip(fs.read().splitlines(), ft.read().splitlines()))
        if n > len(lines):
            raise SystemExit(f"--n {n}: Multi30k test 2016 has {len(lines)} pairs")
        pairs = [SentencePair(k, k + 1, s.split(" "), t.split(" ")) for k, (s, t) in enumerate(lines[:n])]
        return pairs, None, f"Multi30k test_2016_flickr, first {n} pairs (unique, raw text split on spaces, no gold)"
    d = DATA / "gold" / "bicici-deen-gold"
    base = list(iter_pairs(d / "test.de", d / "test.en"))
    gold = read_gold(d / "de-en.wa", base=0, sentences=[(len(p.src_words), len(p.tgt_words)) for p in base],
                     skip_invalid=True).alignments
    pairs, golds = [], []
    for k in range(n):
        p = base[k % len(base)]
        pairs.append(SentencePair(k, k + 1, p.src_words, p.tgt_words))
        golds.append(gold[k % len(base)])
    return pairs, golds, f"{d.name} ({len(base)} sentences with gold, cycled to {n})"


def clear_caches() -> None:
    """Start every timed run cold, as a fresh process would (any tokenization cache aligndebug keeps)."""
    from aligndebug import words

    for name in ("_WORD_CACHE",):
        cache = getattr(words, name, None)
        if cache is not None:
            cache.clear()


def bare_batches(bundle, pairs, batch_size):
    """Length-sorted batches as plain tokenizer output: the input a hand-written script would feed the model."""
    tok = bundle.tokenizer
    srcs = [p.source for p in pairs]
    tgts = [p.target for p in pairs]
    lengths = [len(tok(s)["input_ids"]) + len(tok(text_target=t)["input_ids"]) for s, t in zip(srcs, tgts)]
    return [([srcs[i] for i in idx], [tgts[i] for i in idx]) for idx in length_batches(lengths, batch_size)]


def tensors(bundle, src, tgt):
    enc = bundle.tokenizer(src, text_target=tgt, padding=True, return_tensors="pt")
    labels = enc["labels"].masked_fill(enc["labels"] == bundle.tokenizer.pad_token_id, -100)
    dec = decoder_inputs(bundle.model, labels)
    dev = bundle.device
    return dict(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev),
                decoder_input_ids=dec.to(dev), decoder_attention_mask=(labels != -100).long().to(dev))


CLOCK = time.process_time


def forward(bundle, batch) -> None:
    with torch.inference_mode():
        out = bundle.model(**batch, output_attentions=True, return_dict=True)
        assert out.cross_attentions[0] is not None  # eager attention really returns the weights
    if bundle.device.startswith("cuda"):
        torch.cuda.synchronize()


def time_a0(bundle, prepared) -> float:
    t = CLOCK()
    for batch in prepared:
        forward(bundle, batch)
    return CLOCK() - t


def time_a(bundle, batches) -> float:
    t = CLOCK()
    for src, tgt in batches:
        forward(bundle, tensors(bundle, src, tgt))
    return CLOCK() - t


def time_b(bundle, pairs, golds, opts) -> tuple[float, int]:
    clear_caches()
    t = CLOCK()
    totals, rows = score_stream(bundle, pairs, golds, opts)
    n = sum(1 for _ in rows)
    if bundle.device.startswith("cuda"):
        torch.cuda.synchronize()
    return CLOCK() - t, n


def time_inseq(model_path: str, pairs, device: str) -> tuple[float | None, str]:
    try:
        import inseq
    except ImportError as exc:
        return None, f"Inseq is not installed ({exc}); `pip install inseq` (check with --dry-run that it keeps torch)"
    model = inseq.load_model(model_path, "attention", model_kwargs={"attn_implementation": "eager"}, device=device)
    src, tgt = [p.source for p in pairs], [p.target for p in pairs]
    model.attribute(input_texts=src[:2], generated_texts=tgt[:2], show_progress=False)  # warm-up
    t = CLOCK()
    out = model.attribute(input_texts=src, generated_texts=tgt, batch_size=len(src), show_progress=False)
    elapsed = CLOCK() - t
    assert len(out.sequence_attributions) == len(src)
    from importlib.metadata import version

    return elapsed, f"inseq {version('inseq')}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model id or folder (default: see pick_model)")
    ap.add_argument("--n", type=int, default=300, help="sentences for (a) and (b)")
    ap.add_argument("--data", choices=("multi30k", "bicici"), default="multi30k",
                    help="unique Multi30k test captions, or Bicici Europarl sentences with gold (cycled past 100)")
    ap.add_argument("--inseq-n", type=int, default=40, help="sentences for (c); Inseq is slow")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-inseq", action="store_true")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="CPU time of this process, or wall time")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" or args.device.startswith("cuda") else time.process_time
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path, how = (args.model, "given") if args.model else pick_model(Path(tmp))
        bundle = load_model(path, device=args.device)
        pairs, golds, data = load_sentences(args.n, args.data)
        opts = ScoreOptions(batch_size=args.batch_size, chunk_size=256)
        batches = bare_batches(bundle, pairs, args.batch_size)
        prepared = [tensors(bundle, s, t) for s, t in batches]
        cfg = bundle.model.config
        print(f"model: {path} [{how}], {bundle.family}, {cfg.decoder_layers} decoder layers x "
              f"{cfg.decoder_attention_heads} heads, d_model {cfg.d_model}")
        print(f"data: {data}; batch size {args.batch_size}; device {args.device}; torch {torch.__version__}, "
              f"{args.threads} thread(s); repeats {args.repeats} (min used); clock: "
              f"{'wall' if CLOCK is time.perf_counter else 'process CPU time'}")
        # warm-up: first calls allocate and load lazily
        time_a(bundle, batches[:2])
        time_b(bundle, pairs[:8], golds, opts)
        a0s, as_, bs = [], [], []
        for _ in range(args.repeats):
            a0s.append(time_a0(bundle, prepared))
            as_.append(time_a(bundle, batches))
            tb, n_rows = time_b(bundle, pairs, golds, opts)
            assert n_rows == len(pairs)
            bs.append(tb)
        n = len(pairs)
        a0, a, b = min(a0s), min(as_), min(bs)
        line = "{:<44} {:>9.1f} sent/s   (min {:.2f} s, median {:.2f} s)"
        print(line.format("(a0) bare forward, pre-tokenized", n / a0, a0, statistics.median(a0s)))
        print(line.format("(a)  bare tokenize + forward", n / a, a, statistics.median(as_)))
        print(line.format("(b)  aligndebug score_stream", n / b, b, statistics.median(bs)))
        print(f"(b)/(a)  = {b / a:.2f}   (target <= 1.3)")
        print(f"(b)/(a0) = {b / a0:.2f}   (against the forward pass alone)")
        if args.no_inseq:
            print("(c) Inseq: skipped (--no-inseq)")
            return 0
        sub = pairs[:: max(1, len(pairs) // args.inseq_n)][: args.inseq_n]  # spread: same length mix as (b)
        tc, what = time_inseq(path, sub, args.device)
        if tc is None:
            print(f"(c) Inseq: not measured: {what}")
            return 0
        per_c, per_b = tc / len(sub), b / n
        print(line.format(f"(c)  {what} attention, {len(sub)} sentences", len(sub) / tc, tc, tc))
        print(f"(c)/(b)  = {per_c / per_b:.1f}   (time per sentence; target >= 10)")
        print(f"(c)/(a0) = {per_c / (a0 / n):.1f}   (the most (c)/(b) could be for any tool that runs this forward pass)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
