"""Watch a model's alignments while it trains: AER on a gold set, error signals, a probe heatmap.

`AlignmentMonitor.evaluate(model, tokenizer, step)` works from any training loop;
`AlignDebugCallback` hooks it into a `transformers.Trainer` at every evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .align import align_grid, word_matrix
from .extract import extract
from .gold import read_gold
from .methods import ROW_RULES
from .metrics import AlignmentCounts, count_links
from .models import ModelBundle
from .pairs import iter_pairs, pair_lengths
from .signals import record_signals


class AlignmentMonitor:
    """Scores a model's cross-attention alignments on a fixed gold set at each call, and logs them.

    Writes one JSON line per call to `out_dir/monitor.jsonl` (AER per decoder layer for naive
    and Shift-Att, head mean; mean Wass-to-Unif and Seq-Logprob) and the probe sentence's
    word-level attention to `out_dir/probe_stepNNNNNN.json`.
    """

    def __init__(self, src: Path, tgt: Path, gold: Path, out_dir: Path, gold_base: int | None = None,
                 probe: tuple[str, str] | None = None, batch_size: int = 32):
        pairs = list(iter_pairs(src_path=src, tgt_path=tgt, require_target=True))
        gold_set = read_gold(gold, base=gold_base, sentences=pair_lengths(pairs), skip_invalid=True)
        self.sources = [p.src_words for p in pairs]
        self.targets = [p.tgt_words for p in pairs]
        self.golds = gold_set.alignments
        self.probe = probe or (" ".join(self.sources[0]), " ".join(self.targets[0]))
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.batch_size = batch_size

    def evaluate(self, model: Any, tokenizer: Any, step: int) -> dict[str, Any]:
        """Score `model` now; restores its train/eval mode and attention implementation afterwards."""
        was_training = model.training
        previous_attn = getattr(model.config, "_attn_implementation", None)
        try:
            bundle = ModelBundle.from_objects(model, tokenizer, name=f"step{step}", device=str(model.device))
            recs = extract(bundle, self.sources, self.targets, batch_size=self.batch_size, keep=("cross",))
            result: dict[str, Any] = {"step": step, "sentences": len(recs)}
            for method in sorted(ROW_RULES):  # naive, shift-att (the order the monitor file has always had)
                totals: dict[int, AlignmentCounts] = {}
                for rec, gold in zip(recs, self.golds):
                    if gold is None:
                        continue
                    for (layer, head), links in align_grid(rec, method).items():
                        if head == "mean":
                            totals[layer] = totals.get(layer, AlignmentCounts()) + count_links(links, gold)
                result[f"aer_{method}"] = [round(totals[l].aer, 4) for l in sorted(totals)]
            sigs = [record_signals(r) for r in recs]
            result["wass_to_unif"] = float(np.nanmean([s["wass_to_unif"] for s in sigs]))
            result["seq_logprob"] = float(np.nanmean([s["seq_logprob"] for s in sigs]))
            probe = extract(bundle, [self.probe[0]], [self.probe[1]], keep=("cross",))[0]
            (self.out_dir / f"probe_step{step:06d}.json").write_text(json.dumps({
                "step": step, "source_words": probe.src_words, "target_words": probe.tgt_words,
                "shift_att_mean_layers": word_matrix(probe, "shift-att", "mean").round(4).tolist(),
            }, ensure_ascii=False))
            with open(self.out_dir / "monitor.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(result) + "\n")
            return result
        finally:
            if previous_attn and hasattr(model, "set_attn_implementation"):
                model.set_attn_implementation(previous_attn)
            model.train(was_training)


def read_monitor_log(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


try:
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover - transformers is a hard dependency; kept for clarity
    TrainerCallback = object  # type: ignore[misc,assignment]


class AlignDebugCallback(TrainerCallback):  # type: ignore[misc]
    """`transformers.Trainer` callback: runs an AlignmentMonitor at every evaluation and logs its numbers."""

    def __init__(self, monitor: AlignmentMonitor, tokenizer: Any = None):
        self.monitor = monitor
        self.tokenizer = tokenizer

    def on_evaluate(self, args, state, control, model=None, processing_class=None, **kwargs):
        tokenizer = self.tokenizer or processing_class or kwargs.get("tokenizer")
        if model is None or tokenizer is None:
            raise ValueError("AlignDebugCallback needs the model and its tokenizer (pass tokenizer= when the "
                             "Trainer has no processing_class)")
        result = self.monitor.evaluate(model, tokenizer, state.global_step)
        state.log_history.append({f"aligndebug/{k}": v for k, v in result.items()})
        return control
