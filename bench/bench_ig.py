"""Speed of Integrated Gradients per sentence, against a plain teacher-forced forward pass in the same run.

For each sentence pair (German source, its English reference as the forced target) every target
row is attributed to the source token embeddings, with the same number of steps everywhere:

  (a)  plain teacher-forced forward pass of the sentence (no gradients): the baseline.
  (b)  aligndebug.attribution.integrated_gradients, one line per batching strategy:
       vmap (default: one forward per path point, vmapped backward per target row),
       expanded (one batch row per (point, target row) pair), per-token (one IG run per row).
  (c)  captum LayerIntegratedGradients on the encoder embedding layer, batched over target rows
       the natural captum way (the sentence repeated once per row, each copy's own target).
  (d)  Inseq's "integrated_gradients" (attribute_target=False), if installed, on the same sentences.

Ratios are time per sentence against (a) and against (b, vmap). On CPU the clock is the process's
CPU time by default (the machine may be shared: wall time would mostly measure waiting); --clock
wall measures wall time (always used on GPU). Each timing is the minimum over --repeats runs.
Before timing, the strategies are checked to give the same attributions.

    python bench/bench_ig.py                          # tiny random Marian (runs anywhere)
    python bench/bench_ig.py --size base --n 4        # random Marian of the embedded model's size
    python bench/bench_ig.py --model aligndebug/default_model --n 8 --steps 32

Measured (2 shared CPU cores, --threads 1, process CPU time):

    python bench/bench_ig.py --model aligndebug/default_model --n 4 --steps 32 --repeats 1
    plain forward 0.014 s/sentence; IG vmap 3.54 s (x254 of the forward), expanded 6.24 s,
    per-token 6.10 s, captum LayerIntegratedGradients 8.97 s, Inseq 0.7.1 6.93 s
    (x1.76, 1.72, 2.54, 1.96 of vmap)
    python bench/bench_ig.py        (tiny random Marian, 8 pairs, 32 steps)
    vmap 0.81 s/sentence; expanded x1.08, per-token x1.29, captum x1.38, Inseq x1.52 of vmap
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aligndebug.attribution import integrated_gradients  # noqa: E402
from aligndebug.extract import extract  # noqa: E402
from aligndebug.models import load_model  # noqa: E402

DATA = REPO / "datasets"
CLOCK = time.process_time
STRATEGIES = ("vmap", "expanded", "per-token")


def build_random_marian(size: str, dest: Path) -> Path:
    """A random Marian with the tests' tiny SentencePiece tokenizer: 'tiny' (d_model 16, 2+2 layers)
    or 'base' (the embedded model's shape: d_model 256, 3+3 layers, 4 heads, FFN 1024)."""
    sys.path.insert(0, str(REPO / "tests"))
    import tiny_models

    if size == "tiny":
        return tiny_models.save("marian", dest)
    from transformers import MarianConfig, MarianMTModel

    tok = tiny_models.tokenizer("marian")
    n = tiny_models.vocab_size(tok)
    cfg = MarianConfig(vocab_size=n, decoder_vocab_size=n, d_model=256, encoder_layers=3, decoder_layers=3,
                       encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=1024,
                       decoder_ffn_dim=1024, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
                       eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id, dropout=0.0)
    torch.manual_seed(0)
    MarianMTModel(cfg).save_pretrained(str(dest))
    tok.save_pretrained(str(dest))
    return dest


def load_pairs(n: int, max_words: int) -> tuple[list[str], list[str], str]:
    """The first n Bicici de-en pairs with at most max_words words on each side."""
    d = DATA / "gold" / "bicici-deen-gold"
    src = (d / "test.de").read_text(encoding="utf-8-sig").splitlines()
    tgt = (d / "test.en").read_text(encoding="utf-8").splitlines()
    pairs = [(s, t) for s, t in zip(src, tgt) if len(s.split()) <= max_words and len(t.split()) <= max_words]
    if len(pairs) < n:
        raise SystemExit(f"only {len(pairs)} pairs in {d} have <= {max_words} words; lower --n or raise --max-words")
    pairs = pairs[:n]
    return [s for s, _ in pairs], [t for _, t in pairs], f"{d.name}, first {n} pairs of <= {max_words} words"


def timed(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = CLOCK()
        out = fn()
        best = min(best, CLOCK() - t)
    return best, out


def plain_forward(model, recs) -> None:
    with torch.inference_mode():
        for r in recs:
            model(input_ids=torch.as_tensor(r.src_ids)[None], decoder_input_ids=torch.as_tensor(r.dec_ids)[None])


def ours(model, recs, strategy, steps, ibs):
    return [integrated_gradients(model, r.src_ids, r.dec_ids, r.label_ids, steps=steps, internal_batch_size=ibs,
                                 strategy=strategy) for r in recs]


def captum_lig(model, recs, steps, ibs):
    """captum's LayerIntegratedGradients, pad baseline, batched over target rows: [T, S] per sentence."""
    from captum.attr import LayerIntegratedGradients

    out = []
    for p in model.parameters():
        p.requires_grad_(False)
    pad = model.config.pad_token_id
    for r in recs:
        T = len(r.dec_ids)
        dec = torch.as_tensor(r.dec_ids)[None]
        labels = torch.as_tensor(r.label_ids)

        def forward(src_ids, rows):
            logits = model(input_ids=src_ids, decoder_input_ids=dec.expand(len(src_ids), -1)).logits
            logp = torch.log_softmax(logits[torch.arange(len(rows)), rows], -1)
            return logp[torch.arange(len(rows)), labels[rows]]

        lig = LayerIntegratedGradients(forward, model.get_encoder().embed_tokens)
        src = torch.as_tensor(r.src_ids)[None].expand(T, -1)
        attr = lig.attribute(src, baselines=torch.full_like(src, pad), additional_forward_args=(torch.arange(T),),
                             n_steps=steps, internal_batch_size=ibs, method="gausslegendre")
        out.append(attr.sum(-1).detach().numpy())
    return out


def inseq_ig(path, srcs, tgts, steps, ibs, device):
    try:
        import inseq
    except ImportError as exc:
        return None, f"Inseq is not installed ({exc})"
    from importlib.metadata import version

    model = inseq.load_model(path, "integrated_gradients", model_kwargs={"attn_implementation": "eager"},
                             device=device)
    kw = dict(n_steps=steps, internal_batch_size=ibs, attribute_target=False, show_progress=False)
    model.attribute(input_texts=srcs[:1], generated_texts=tgts[:1], **kw)  # warm-up
    t = CLOCK()
    out = model.attribute(input_texts=srcs, generated_texts=tgts, **kw)
    elapsed = CLOCK() - t
    assert len(out.sequence_attributions) == len(srcs)
    return elapsed, f"inseq {version('inseq')}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model folder or id (default: a random Marian, see --size)")
    ap.add_argument("--size", choices=("tiny", "base"), default="tiny", help="random Marian when no --model")
    ap.add_argument("--n", type=int, default=8, help="sentence pairs")
    ap.add_argument("--max-words", type=int, default=25)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--internal-batch-size", type=int, default=64)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine may be shared)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-captum", action="store_true")
    ap.add_argument("--no-inseq", action="store_true")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" or args.device.startswith("cuda") else time.process_time
    torch.set_num_threads(args.threads)
    strategies = [s for s in args.strategies.split(",") if s]
    with tempfile.TemporaryDirectory() as tmp:
        path, how = (args.model, "given") if args.model else (
            str(build_random_marian(args.size, Path(tmp) / f"marian-{args.size}")), f"random Marian, {args.size}")
        bundle = load_model(path, device=args.device)
        model = bundle.model
        srcs, tgts, data = load_pairs(args.n, args.max_words)
        recs = extract(bundle, srcs, tgts, keep=())
        S = np.mean([len(r.src_ids) for r in recs])
        T = np.mean([len(r.dec_ids) for r in recs])
        cfg = model.config
        print(f"model: {path} [{how}], {bundle.family}, d_model {cfg.d_model}, {cfg.encoder_layers}+"
              f"{cfg.decoder_layers} layers, vocabulary {cfg.vocab_size}")
        print(f"data: {data}; mean {S:.1f} source and {T:.1f} target tokens; IG steps {args.steps}, "
              f"internal batch {args.internal_batch_size}; torch {torch.__version__}, {args.threads} thread(s); "
              f"clock: {'wall' if CLOCK is time.perf_counter else 'process CPU time'}; min of {args.repeats}")

        # correctness first: every strategy gives the same numbers, completeness gap reported
        check = {s: ours(model, recs[:1], s, args.steps, args.internal_batch_size)[0] for s in strategies}
        ref = check[strategies[0]]
        for s, res in check.items():
            diff = np.abs(res.source - ref.source).max()
            print(f"check {s:<10} max |diff| to {strategies[0]}: {diff:.2e}; "
                  f"completeness gap max {res.delta.max():.2e}")

        n = len(recs)
        line = "{:<48} {:>10.3f} sent/s  {:>9.3f} s/sent  x{:>8.1f} of (a)"
        ta, _ = timed(lambda: plain_forward(model, recs), max(args.repeats, 3))
        print(line.format("(a) plain teacher-forced forward", n / ta, ta / n, 1.0))
        times = {}
        for s in strategies:
            tb, _ = timed(lambda: ours(model, recs, s, args.steps, args.internal_batch_size), args.repeats)
            times[s] = tb
            print(line.format(f"(b) aligndebug IG, strategy={s}", n / tb, tb / n, tb / ta))
        base_name = strategies[0]
        if not args.no_captum:
            tc, cap = timed(lambda: captum_lig(model, recs, args.steps, args.internal_batch_size), args.repeats)
            times["captum"] = tc
            print(line.format("(c) captum LayerIntegratedGradients (batched)", n / tc, tc / n, tc / ta))
            diff = max(np.abs(c - o.source).max() for c, o in
                       zip(cap, ours(model, recs, base_name, args.steps, args.internal_batch_size)))
            print(f"    captum vs aligndebug max |diff|: {diff:.2e}")
        if not args.no_inseq:
            td, what = inseq_ig(path, srcs, tgts, args.steps, args.internal_batch_size, args.device)
            if td is None:
                print(f"(d) Inseq: not measured: {what}")
            else:
                times["inseq"] = td
                print(line.format(f"(d) {what} integrated_gradients", n / td, td / n, td / ta))
        ref_t = times[base_name]
        print("time per sentence relative to (b) " + base_name + ": " +
              ", ".join(f"{k} {v / ref_t:.2f}" for k, v in times.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
