"""Train aligndebug's embedded German->English Marian model from datasets.

One command, fixed seed, resumable::

    python scripts/train_default_model.py --data datasets --run runs/default-model \
        --out aligndebug/default_model

Steps: detokenize Europarl (sacremoses) so both corpora are natural text, hold out 500
Europarl pairs, train a joint SentencePiece vocabulary, train a small Marian transformer
with token-bucketed batches (checkpoint every few minutes; rerun the same command to
resume), evaluate greedy sacreBLEU/chrF, and write the model folder (safetensors) with
its card. Uses CUDA when present.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
import sacrebleu
import sentencepiece as spm
import torch
from sacremoses import MosesDetokenizer
from transformers import MarianConfig, MarianMTModel, MarianTokenizer

SEED = 1234
HELDOUT_EUROPARL = 500


def read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def prepare_corpus(data: Path, work: Path) -> dict:
    """Write train/heldout text files under `work`; return their sizes."""
    work.mkdir(parents=True, exist_ok=True)
    marker = work / "corpus.json"
    if marker.exists():
        return json.loads(marker.read_text())
    euro = data / "train" / "europarl-comtrans-deen"
    de_detok, en_detok = MosesDetokenizer(lang="de"), MosesDetokenizer(lang="en")
    ep_de = [de_detok.detokenize(s.split()) for s in read_lines(euro / "train.de")]
    ep_en = [en_detok.detokenize(s.split()) for s in read_lines(euro / "train.en")]
    ep = [(d, e) for d, e in zip(ep_de, ep_en) if d.strip() and e.strip()]
    rng = random.Random(SEED)
    idx = list(range(len(ep)))
    rng.shuffle(idx)
    held = sorted(idx[:HELDOUT_EUROPARL])
    listed = data / "heldout" / "europarl-deen-500" / "lines.txt"  # the same split, shipped for evaluation
    if listed.exists() and [int(x) - 1 for x in listed.read_text().split()] != held:
        raise SystemExit(f"{listed} lists another held-out split than this script makes: the data has changed")
    held_set = set(held)
    ep_train = [ep[i] for i in range(len(ep)) if i not in held_set]
    m30 = data / "train" / "multi30k-deen"
    m_train = list(zip(read_lines(m30 / "train.de.gz"), read_lines(m30 / "train.en.gz")))
    m_train = [(d, e) for d, e in m_train if d.strip() and e.strip()]
    train = ep_train + m_train
    (work / "train.de").write_text("".join(d + "\n" for d, _ in train), encoding="utf-8")
    (work / "train.en").write_text("".join(e + "\n" for _, e in train), encoding="utf-8")
    (work / "heldout_europarl.de").write_text("".join(ep[i][0] + "\n" for i in held), encoding="utf-8")
    (work / "heldout_europarl.en").write_text("".join(ep[i][1] + "\n" for i in held), encoding="utf-8")
    info = {"europarl_train": len(ep_train), "multi30k_train": len(m_train),
            "europarl_heldout": len(held), "heldout_line_numbers_0based": held}
    marker.write_text(json.dumps(info))
    return info


def build_tokenizer(work: Path, vocab_size: int) -> MarianTokenizer:
    tok_dir = work / "tokenizer"
    if not (tok_dir / "vocab.json").exists():
        tok_dir.mkdir(parents=True, exist_ok=True)
        if hasattr(spm, "set_random_generator_seed"):
            spm.set_random_generator_seed(SEED)
        spm.SentencePieceTrainer.train(
            input=[str(work / "train.de"), str(work / "train.en")], model_prefix=str(tok_dir / "spm"),
            vocab_size=vocab_size - 1, model_type="unigram", character_coverage=1.0,
            unk_id=1, bos_id=-1, eos_id=0, pad_id=-1, num_threads=2,
        )
        sp = spm.SentencePieceProcessor(model_file=str(tok_dir / "spm.model"))
        # Marian convention: </s>=0, <unk>=1, pad last (also the decoder start).
        vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
        vocab["</s>"], vocab["<unk>"] = 0, 1
        vocab["<pad>"] = len(vocab)
        (tok_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        shutil.copy(tok_dir / "spm.model", tok_dir / "source.spm")
        shutil.copy(tok_dir / "spm.model", tok_dir / "target.spm")
    return MarianTokenizer(source_spm=str(tok_dir / "source.spm"), target_spm=str(tok_dir / "target.spm"),
                           vocab=str(tok_dir / "vocab.json"), source_lang="de", target_lang="en",
                           model_max_length=256)


def encode_corpus(tok: MarianTokenizer, work: Path, max_len: int) -> tuple[list[list[int]], list[list[int]]]:
    cache = work / "encoded.pt"
    if cache.exists():
        return torch.load(cache)
    de, en = read_lines(work / "train.de"), read_lines(work / "train.en")
    src = tok(de, truncation=True, max_length=max_len)["input_ids"]
    tgt = tok(text_target=en, truncation=True, max_length=max_len)["input_ids"]
    torch.save((src, tgt), cache)
    return src, tgt


def make_batches(src: list[list[int]], tgt: list[list[int]], max_tokens: int, epoch: int) -> list[list[int]]:
    """Length-bucketed batches whose padded size stays under `max_tokens`; order fixed by seed+epoch."""
    rng = np.random.default_rng(SEED + epoch)
    lengths = np.array([max(len(s), len(t)) for s, t in zip(src, tgt)])
    order = np.lexsort((rng.random(len(lengths)), lengths))
    batches, cur, cur_max = [], [], 0
    for i in order:
        new_max = max(cur_max, lengths[i])
        if cur and new_max * (len(cur) + 1) > max_tokens:
            batches.append(cur)
            cur, new_max = [], lengths[i]
        cur.append(int(i))
        cur_max = new_max
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def collate(ids: list[list[int]], pad: int) -> torch.Tensor:
    out = torch.full((len(ids), max(len(x) for x in ids)), pad, dtype=torch.long)
    for row, x in enumerate(ids):
        out[row, : len(x)] = torch.tensor(x)
    return out


def marian_config(tok: MarianTokenizer, d_model: int, encoder_layers: int, decoder_layers: int, heads: int,
                  ffn: int, **kw) -> MarianConfig:
    """A Marian Transformer for `tok`'s shared vocabulary (Marian's conventions: pad starts the decoder, tied
    embeddings, 256 positions); `kw` sets dropout and activation."""
    pad, vocab = tok.pad_token_id, len(tok.get_vocab())
    return MarianConfig(
        vocab_size=vocab, d_model=d_model, encoder_layers=encoder_layers, decoder_layers=decoder_layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn,
        max_position_embeddings=256, pad_token_id=pad, eos_token_id=tok.eos_token_id, decoder_start_token_id=pad,
        forced_eos_token_id=tok.eos_token_id, scale_embedding=True, share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True, decoder_vocab_size=vocab, **kw)


def train_step(model, opt, loss_fn, src_ids: list[list[int]], tgt_ids: list[list[int]], pad: int, device: str,
               bf16: bool = False) -> tuple[float, int]:
    """One optimiser step on a batch of (source, target) id lists, gradients clipped to norm 1; returns the loss
    and the batch's target tokens. `bf16`: the forward pass under bfloat16 autocast (a GPU)."""
    x = collate(src_ids, pad).to(device)
    y = collate(tgt_ids, pad).to(device)
    labels = y.masked_fill(y == pad, -100)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=x, attention_mask=(x != pad), labels=labels).logits
    loss = loss_fn(logits.float().view(-1, logits.size(-1)), labels.view(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item(), int((labels != -100).sum())


def translate(model, tok, sentences: list[str], device: str, batch_size: int = 64, beam: int = 1,
              max_new_tokens: int = 128) -> list[str]:
    model.eval()
    out: list[str] = []
    with torch.no_grad():
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        results: dict[int, str] = {}
        for b in range(0, len(order), batch_size):
            idx = order[b: b + batch_size]
            enc = tok([sentences[i] for i in idx], return_tensors="pt", padding=True, truncation=True).to(device)
            gen = model.generate(**enc, num_beams=beam, do_sample=False, max_new_tokens=max_new_tokens)
            for i, text in zip(idx, tok.batch_decode(gen, skip_special_tokens=True)):
                results[i] = text
        out = [results[i] for i in range(len(sentences))]
    model.train()
    return out


def evaluate(model, tok, data: Path, work: Path, device: str, limit: int | None = None) -> dict:
    m30 = data / "train" / "multi30k-deen"
    sets = {
        "multi30k_test_2016_flickr": (read_lines(m30 / "test_2016_flickr.de.gz"), read_lines(m30 / "test_2016_flickr.en.gz")),
        "europarl_heldout500": (read_lines(work / "heldout_europarl.de"), read_lines(work / "heldout_europarl.en")),
    }
    scores = {}
    for name, (srcs, refs) in sets.items():
        srcs, refs = srcs[:limit], refs[:limit]
        hyps = translate(model, tok, srcs, device)
        scores[name] = {"bleu": round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2),
                        "chrf": round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2), "sentences": len(srcs)}
    return scores


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "datasets")
    ap.add_argument("--run", type=Path, default=Path("runs/default-model"), help="work/checkpoint folder")
    ap.add_argument("--out", type=Path, default=Path("aligndebug/default_model"))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=3000, help="padded tokens per batch (max of src/tgt)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=400)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--checkpoint-minutes", type=float, default=5.0)
    ap.add_argument("--no-monitor", action="store_true",
                    help="skip aligndebug's AlignmentMonitor (AER on bicici gold, signals, probe) at each evaluation")
    ap.add_argument("--snapshots-per-epoch", type=int, default=2,
                    help="model snapshots kept per epoch for the training-curve probes")
    args = ap.parse_args()

    torch.manual_seed(SEED)
    random.seed(SEED)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    work = args.run
    corpus = prepare_corpus(args.data, work)
    tok = build_tokenizer(work, args.vocab)
    src, tgt = encode_corpus(tok, work, max_len=200)
    pad = tok.pad_token_id
    cfg = marian_config(tok, args.d_model, args.layers, args.layers, args.heads, args.ffn,
                        dropout=0.1, attention_dropout=0.0, activation_function="swish")
    model = MarianMTModel(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-9, weight_decay=1e-4)
    steps_per_epoch = len(make_batches(src, tgt, args.max_tokens, 0))
    total = steps_per_epoch * args.epochs
    state = {"epoch": 0, "batch": 0, "step": 0, "elapsed_s": 0.0, "tokens": 0}
    ckpt = work / "checkpoint.pt"
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        state = saved["state"]
        torch.set_rng_state(saved["rng"])
        print(f"resumed at epoch {state['epoch']} batch {state['batch']} step {state['step']}", flush=True)
    log = open(work / "train_log.jsonl", "a", encoding="utf-8")
    monitor = None
    if not args.no_monitor:
        from aligndebug.training import AlignmentMonitor  # the package watches its own model train

        gold = args.data / "gold" / "bicici-deen-gold"
        monitor = AlignmentMonitor(gold / "test.de", gold / "test.en", gold / "de-en.wa", work / "monitor",
                                   gold_base=0, probe=("der hund schläft im haus .", "the dog sleeps in the house ."))
    snap_every = max(1, steps_per_epoch // args.snapshots_per_epoch)

    def save_checkpoint() -> None:
        tmp = work / "checkpoint.pt.tmp"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state,
                    "rng": torch.get_rng_state()}, tmp)
        tmp.replace(ckpt)  # atomic: a kill never leaves a half-written checkpoint

    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=0.1)
    model.train()
    last_ckpt = time.time()
    t0 = time.time() - state["elapsed_s"]
    running = []
    while state["epoch"] < args.epochs:
        batches = make_batches(src, tgt, args.max_tokens, state["epoch"])
        while state["batch"] < len(batches):
            idx = batches[state["batch"]]
            for g in opt.param_groups:
                g["lr"] = lr_at(state["step"], total, args.warmup, args.lr)
            loss, n_tokens = train_step(model, opt, loss_fn, [src[i] for i in idx], [tgt[i] for i in idx], pad, device)
            state["step"] += 1
            state["batch"] += 1
            state["tokens"] += n_tokens
            state["elapsed_s"] = time.time() - t0
            running.append(loss)
            if state["step"] % 50 == 0:
                row = {"step": state["step"], "epoch": state["epoch"], "loss": round(sum(running) / len(running), 4),
                       "lr": opt.param_groups[0]["lr"], "elapsed_min": round(state["elapsed_s"] / 60, 2),
                       "tgt_tok_per_s": round(state["tokens"] / state["elapsed_s"], 1), "total_steps": total}
                running = []
                print(json.dumps(row), flush=True)
                log.write(json.dumps(row) + "\n")
                log.flush()
            if state["step"] % snap_every == 0:
                snap = work / "snapshots" / f"step{state['step']:06d}"
                model.save_pretrained(snap)
                tok.save_pretrained(snap)
            if time.time() - last_ckpt > args.checkpoint_minutes * 60:
                save_checkpoint()
                last_ckpt = time.time()
        state["epoch"] += 1
        state["batch"] = 0
        save_checkpoint()
        scores = evaluate(model, tok, args.data, work, device, limit=200)
        if monitor is not None:
            scores["aligndebug_monitor"] = monitor.evaluate(model, tok, state["step"])
        row = {"step": state["step"], "epoch": state["epoch"], "eval_first200": scores,
               "elapsed_min": round(state["elapsed_s"] / 60, 2)}
        print(json.dumps(row), flush=True)
        log.write(json.dumps(row) + "\n")
        log.flush()

    final = evaluate(model, tok, args.data, work, device)
    print(json.dumps({"final": final}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    model.generation_config.num_beams = 1
    model.generation_config.bad_words_ids = [[pad]]
    model.save_pretrained(args.out, safe_serialization=True)
    tok.save_pretrained(args.out)
    summary = {"corpus": {k: v for k, v in corpus.items() if k != "heldout_line_numbers_0based"},
               "config": {k: getattr(args, k) for k in ("epochs", "max_tokens", "lr", "warmup", "vocab",
                                                          "d_model", "layers", "heads", "ffn")},
               "parameters": sum(p.numel() for p in model.parameters()),
               "steps": state["step"], "train_minutes": round(state["elapsed_s"] / 60, 1),
               "target_tokens_seen": state["tokens"], "device": device, "seed": SEED,
               "scores_greedy": final}
    (args.out / "training_summary.json").write_text(json.dumps(summary, indent=2))
    (work / "heldout_europarl_lines.json").write_text(json.dumps(corpus["heldout_line_numbers_0based"]))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
