"""Training a learned aligner on a frozen model: `train_aligner`, and the `aligndebug train-aligner` subcommand.

The frozen model runs one teacher-forced pass per batch (no gradients); only the small module learns. Every
`checkpoint_every` steps the module, optimizer and position are written atomically to `<out>/checkpoint/`, so the
same call resumes after a kill. After each epoch the aligner is scored on the dev set (AER) and, when it is the
best so far, saved to `<out>/` with the AER curve in its card.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .extract import Encoded, SentenceError, encode_pair, length_batches
from .learned import CARD, LearnedAligner, Links, load_aligner
from .metrics import corpus_counts
from .models import ModelBundle

Words = Sequence[str]


def _encode_all(bundle: ModelBundle, sources: Sequence[Words], targets: Sequence[Words], lower: bool
                ) -> tuple[list[Encoded | None], int]:
    out: list[Encoded | None] = []
    skipped = 0
    for i, (s, t) in enumerate(zip(sources, targets)):
        if lower:
            s, t = [w.lower() for w in s], [w.lower() for w in t]
        try:
            out.append(encode_pair(bundle, s, t, i))
        except SentenceError:
            out.append(None)
            skipped += 1
    return out, skipped


def dev_aer(aligner: LearnedAligner, bundle: ModelBundle, encoded: Sequence[Encoded], golds: Sequence[Any],
            rule: str = "argmax", threshold: float | None = None) -> dict[str, float]:
    """AER, precision and recall of the aligner's links against `golds` (GoldAlignment or link sets)."""
    links = aligner.align_encoded(bundle, encoded, rule, threshold)
    c = corpus_counts(links, golds)
    return {"aer": c.aer, "precision": c.precision, "recall": c.recall}


def _save_checkpoint(folder: Path, aligner: LearnedAligner, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    aligner.save(folder, train_state=state)
    torch.save(opt.state_dict(), folder / "optimizer.pt.tmp")
    (folder / "optimizer.pt.tmp").replace(folder / "optimizer.pt")


def train_aligner(bundle: ModelBundle, sources: Sequence[Words], targets: Sequence[Words],
                  silver: Sequence[Links | None] | None, out_dir: Path | str, *, objective: str = "supervised",
                  layers: int | str | Sequence[int] = "all", epochs: int = 2, batch_size: int = 32, lr: float = 1e-3,
                  dev: tuple[Sequence[Words], Sequence[Words], Sequence[Any]] | None = None,
                  dev_rule: str = "argmax", dev_threshold: float | None = None, lowercase: float = 0.0,
                  seed: int = 0, checkpoint_every: int = 200, resume: bool = True, progress: bool = True,
                  max_steps: int | None = None, data: str = "", dim: int | None = None, enc_layers: str | None = "all",
                  init: Path | str | None = None, log: Callable[[str], None] | None = None) -> LearnedAligner:
    """Train an aligner for `bundle` on word-split pairs and return the best one (by dev AER; the last without dev).

    `silver[k]` is the set of (source word, target word) links of pair k (None: pair skipped by the supervised
    loss); `lowercase` is the probability that a pair is seen lowercased in an epoch (for gold sets that are
    lowercased). The result and its card are saved in `out_dir`; `out_dir/checkpoint` lets a rerun resume.
    `silver[k]` may also be a tuple of link sets, one per teacher: the target is the mean of their distributions
    (`learned.silver_targets`). `init`: an aligner folder whose weights (and shape: `layers`, `dim`, `enc_layers`
    are then ignored) the training starts from, with a fresh optimizer and schedule; the card records it.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if objective in ("supervised", "both") and silver is None:
        raise ValueError(f"the {objective!r} objective needs silver links (--silver)")
    if silver is not None and len(silver) != len(sources):
        raise ValueError(f"{len(sources)} pairs but {len(silver)} silver alignments: expected one per pair")
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources but {len(targets)} targets: expected one target per source")
    out = Path(out_dir)
    ckpt = out / "checkpoint"
    bundle.model.eval()  # frozen: its pass runs without gradients and the optimizer holds only the module

    if init is not None:
        start_from = load_aligner(init, bundle)
        if start_from.config.objective != objective:
            raise ValueError(f"{init} was trained with the {start_from.config.objective!r} objective, not {objective!r}")
        torch.manual_seed(seed)
        aligner = LearnedAligner(start_from.module, {k: start_from.card[k] for k in ("base_model", "base_family", "fingerprint")})
        # what it started from, self-described: the folder may be overwritten later (e.g. the shipped aligner)
        aligner.card["init"] = {"from": str(init), **{k: start_from.card.get(k) for k in
                                                      ("data", "pairs", "epochs", "lr", "seed", "steps", "train_seconds",
                                                      "aer_curve", "init")}}
    else:
        aligner = LearnedAligner.new(bundle, layers=layers, objective=objective, dim=dim, seed=seed, enc_layers=enc_layers)
    opt = torch.optim.AdamW(aligner.module.parameters(), lr=lr, weight_decay=0.01)
    state: dict[str, Any] = {"epoch": 0, "batch": 0, "step": 0, "curve": [], "best_aer": None, "seconds": 0.0}
    if resume and (ckpt / CARD).exists():
        old = load_aligner(ckpt, bundle)
        if asdict(old.config) != asdict(aligner.config):
            raise ValueError(f"{ckpt} holds a checkpoint of another setup ({old.card['config']}); remove it or use another --out")
        aligner = old
        opt = torch.optim.AdamW(aligner.module.parameters(), lr=lr, weight_decay=0.01)
        opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        state = dict(old.card["train_state"])
        log(f"resuming from {ckpt}: epoch {state['epoch'] + 1}, batch {state['batch']}, step {state['step']}")
    aligner.card.update({"objective": objective, "data": data, "pairs": len(sources), "lowercase": lowercase,
                         "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                         "dev_decode": dev_rule, "dev_threshold": dev_threshold})
    n_model = sum(p.numel() for p in bundle.model.parameters())
    n_mod = sum(p.numel() for p in aligner.module.parameters())
    log(f"aligner: {n_mod:,} parameters ({n_mod / n_model:.1%} of the model's {n_model:,}); "
        f"decoder states {aligner.config.layers}, objective {objective}, context {aligner.config.context}")

    cased, skipped = _encode_all(bundle, sources, targets, lower=False)
    lowered = _encode_all(bundle, sources, targets, lower=True)[0] if lowercase > 0 else cased
    if skipped:
        log(f"{skipped} pairs skipped: too long for the model's positions")
    usable = [k for k, e in enumerate(cased) if e is not None and (silver is None or objective == "self" or silver[k] is not None)]
    dev_enc = dev_golds = None
    if dev is not None:
        dev_enc = [encode_pair(bundle, s, t, i) for i, (s, t) in enumerate(zip(dev[0], dev[1]))]
        dev_golds = list(dev[2])
    batches_per_epoch = len(length_batches([0] * len(usable), batch_size))
    total_steps = min(max_steps or 10**12, epochs * batches_per_epoch)
    done = state["step"]  # a resumed run continues the schedule where it stopped

    def lr_factor(s: int) -> float:  # 100 warm-up steps, then linear decay to a tenth
        s += done
        return min(1.0, (s + 1) / 100) * max(0.1, 1 - s / max(1, total_steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)

    from tqdm import tqdm

    aligner.module.train()
    start = time.time() - state["seconds"]
    while state["epoch"] < epochs and state["step"] < total_steps:
        rng = random.Random(seed * 1000 + state["epoch"])
        lower_mask = [rng.random() < lowercase for _ in range(len(cased))]
        lengths = [len(cased[k].src_ids) + len(cased[k].label_ids) + rng.random() * 4 for k in usable]
        batches = [[usable[i] for i in b] for b in length_batches(lengths, batch_size)]
        rng.shuffle(batches)
        bar = tqdm(total=len(batches), initial=state["batch"], unit="batch", disable=not progress, file=sys.stderr,
                   desc=f"epoch {state['epoch'] + 1}/{epochs}")
        running = None
        for bi in range(state["batch"], len(batches)):
            idx = batches[bi]
            enc = [(lowered if lower_mask[k] else cased)[k] for k in idx]
            enc = [e if e is not None else cased[k] for e, k in zip(enc, idx)]
            losses = aligner.losses(bundle, enc, None if silver is None else [silver[k] for k in idx])
            opt.zero_grad()
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(aligner.module.parameters(), 1.0)
            opt.step()
            sched.step()
            state["step"] += 1
            state["batch"] = bi + 1
            val = float(losses["loss"].detach())
            running = val if running is None else 0.98 * running + 0.02 * val
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}")
            if state["step"] % checkpoint_every == 0:
                state["seconds"] = time.time() - start
                _save_checkpoint(ckpt, aligner, opt, state)
            if state["step"] >= total_steps:
                break
        bar.close()
        finished_epoch = state["batch"] >= len(batches)
        entry: dict[str, Any] = {"epoch": state["epoch"] + (1 if finished_epoch else state["batch"] / len(batches)),
                                 "step": state["step"], "loss": running, "seconds": round(time.time() - start, 1)}
        if dev_enc is not None:
            entry.update({f"dev_{k}": v for k, v in dev_aer(aligner, bundle, dev_enc, dev_golds, dev_rule, dev_threshold).items()})
            log(f"epoch {entry['epoch']:.2f}: step {state['step']}, loss {running:.4f}, dev AER {entry['dev_aer']:.4f} "
                f"(P {entry['dev_precision']:.3f}, R {entry['dev_recall']:.3f}), {entry['seconds']:.0f} s")
        else:
            log(f"epoch {entry['epoch']:.2f}: step {state['step']}, loss {running:.4f}, {entry['seconds']:.0f} s")
        state["curve"].append(entry)
        if finished_epoch:
            state["epoch"] += 1
            state["batch"] = 0
        state["seconds"] = time.time() - start
        better = dev_enc is None or state["best_aer"] is None or entry["dev_aer"] < state["best_aer"]
        if better:
            state["best_aer"] = entry.get("dev_aer")
            aligner.save(out, steps=state["step"], aer_curve=state["curve"], train_seconds=round(state["seconds"], 1),
                         train_state=dict(state))
        _save_checkpoint(ckpt, aligner, opt, state)
    best = load_aligner(out, bundle)
    best.card["aer_curve"] = state["curve"]  # the whole curve, also the epochs after the best
    best.save(out)
    return best


# ------------------------------------------------------------------------------------ command line

def read_words(path: Path) -> list[list[str]]:
    from .pairs import iter_pairs

    return [p.src_words for p in iter_pairs(src_path=path)]


def read_silver(path: Path, lengths: Sequence[tuple[int, int]]) -> list[Links | None]:
    """Silver links (Pharaoh, 0-based) checked against the sentence lengths; bad lines become None with a warning."""
    from .gold import read_gold

    gold = read_gold(path, base=0, fmt="pharaoh", sentences=lengths, skip_invalid=True)
    for w in gold.warnings:
        print(f"aligndebug: warning: {w}", file=sys.stderr)
    return [None if g is None else set(g.sure) for g in gold]
