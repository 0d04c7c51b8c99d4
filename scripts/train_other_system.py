"""Train a second German->English system, unlike the embedded model, and translate the 500 held-out Europarl
sources with it: "another system's output" to force through the embedded model (`aligndebug triage --src
--tgt`), as the issue's WMT18 table forces another system's output.

It reads the same training data as `train_default_model.py` (its corpus preparation and held-out split, so
the 500 stay unseen) but is another system: its own SentencePiece vocabulary (16k), a larger Transformer (d=512,
6+6 layers, 8 heads, by default), its own seed, a fixed wall-clock training budget and beam search. The default
size is meant for a GPU; on two CPU cores a smaller one (still unlike the embedded model: 4 encoder and 3 decoder
layers, ReLU, twice the vocabulary) made `datasets/heldout/europarl-deen-500/other.en` in 70 minutes::

    python scripts/train_other_system.py --seconds 240 --out other.en          # a GPU
    OMP_NUM_THREADS=2 python scripts/train_other_system.py --seconds 4200 --out other.en --d-model 256 \
        --encoder-layers 4 --decoder-layers 3 --heads 4 --ffn 1024 --max-tokens 4000 --lr 1e-3 --warmup 400

Prints BLEU/chrF of its translations against the references, and writes one translation a line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import sacrebleu
import torch
from transformers import MarianMTModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_default_model import (build_tokenizer, encode_corpus, make_batches, marian_config,  # noqa: E402
                                 prepare_corpus, read_lines, train_step, translate)

SEED = 20261204


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "datasets")
    ap.add_argument("--work", type=Path, default=Path("runs/other-system"))
    ap.add_argument("--out", type=Path, required=True, help="the held-out sources' translations, one a line")
    ap.add_argument("--seconds", type=float, default=240.0, help="training time (wall clock)")
    ap.add_argument("--max-tokens", type=int, default=12000)
    ap.add_argument("--lr", type=float, default=7e-4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--limit", type=int, default=None, help="translate only the first N sources (a quick check)")
    ap.add_argument("--vocab", type=int, default=16000)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--encoder-layers", type=int, default=6)
    ap.add_argument("--decoder-layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--ffn", type=int, default=2048)
    args = ap.parse_args()
    torch.manual_seed(SEED)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    prepare_corpus(args.data, args.work)
    tok = build_tokenizer(args.work, args.vocab)
    src, tgt = encode_corpus(tok, args.work, max_len=200)
    pad = tok.pad_token_id
    cfg = marian_config(tok, args.d_model, args.encoder_layers, args.decoder_layers, args.heads, args.ffn,
                        dropout=0.2, attention_dropout=0.1, activation_function="relu")
    model = MarianMTModel(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-9, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=0.1)
    model.train()
    t0, step, epoch = time.time(), 0, 0
    while time.time() - t0 < args.seconds:
        for idx in make_batches(src, tgt, args.max_tokens, epoch + 100):
            elapsed = time.time() - t0
            if elapsed >= args.seconds:
                break
            # linear warm-up, then linear decay to 0 at the end of the time budget
            lr = args.lr * min(1.0, (step + 1) / args.warmup) * max(0.0, 1 - elapsed / args.seconds)
            for g in opt.param_groups:
                g["lr"] = lr
            loss, _ = train_step(model, opt, loss_fn, [src[i] for i in idx], [tgt[i] for i in idx], pad, device,
                                 bf16=device == "cuda")
            step += 1
            if step % 500 == 0:
                print(f"epoch {epoch} step {step} loss {loss:.3f} {time.time() - t0:.0f}s", flush=True)
        epoch += 1
    print(f"trained {step} steps in {epoch} passes (the last one partial), {time.time() - t0:.0f}s", flush=True)
    model.save_pretrained(args.work / "model")  # safetensors: to translate again without training again
    tok.save_pretrained(args.work / "model")
    sources = read_lines(args.work / "heldout_europarl.de")[:args.limit]
    refs = read_lines(args.work / "heldout_europarl.en")[:args.limit]
    # one line each, whatever the tokenizer decodes
    out = [" ".join(h.split()) for h in translate(model, tok, sources, device, batch_size=50, beam=args.beam,
                                                   max_new_tokens=200)]
    print(f"held-out Europarl: BLEU {sacrebleu.corpus_bleu(out, [refs]).score:.2f} "
          f"chrF {sacrebleu.corpus_chrf(out, [refs]).score:.2f}", flush=True)
    args.out.write_text("".join(h + "\n" for h in out), encoding="utf-8")


if __name__ == "__main__":
    main()
