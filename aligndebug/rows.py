"""The rows a run writes, one per sentence, built from a Record: alignment rows (`score`) and signal rows
(`triage`), with their typed views and corpus totals.

Rows travel and are stored as JSON objects (one JSONL line each, the format of `aligndebug score --out`
and of triage's files); `SentenceScore.from_json` reads an alignment row back into typed values
(`AlignmentCounts`, (layer, head) keys), so no caller decodes the counts' list or the "layer:head" keys.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .agreement import record_agreement, sentence_agreement
from .align import Selector, align_grid, default_layer, select, token_links
from .attribution import ig_for_record
from .gold import GoldAlignment, format_pharaoh
from .methods import DEFAULT_ROW_RULE, compared_aligners
from .metrics import AlignmentCounts, AlignmentSignature, count_links
from .models import ModelBundle
from .record import Record
from .signals import SIGNALS, aligner_signals, length_ratio, record_signals, reference_scores, repetition_stats
from .source_gain import source_gain
from .words import token_links_to_words

COUNT_FIELDS = ("predicted", "sure", "pred_and_sure", "pred_and_possible")
HeadKey = tuple[int, "int | str"]  # (layer, head index or "mean")


@dataclass
class ScoreOptions:
    """How links are read: off the attention (row rule, layer, heads), or by a learned aligner (method "learned",
    `aligner`); either with the decoding rule `decode` at `threshold`."""

    method: str = DEFAULT_ROW_RULE  # a name in methods.ROW_RULES
    layer: Selector | None = None
    head: Selector = "mean"
    threshold: float | None = None
    per_head: bool = False
    batch_size: int = 16
    beam: int = 1
    chunk_size: int = 256
    compare: bool = False  # also rollout- and IG-based alignments, and attention-vs-IG agreement
    ig_steps: int = 16
    skip_invalid: bool = False  # a sentence the model cannot take is kept as a skipped row instead of stopping
    decode: str | None = None  # a rule of decoding.DECODERS; None: argmax, or `threshold` when one is given
    aligner: Any = field(default=None, repr=False, compare=False)  # the LearnedAligner of method "learned"
    aligner_name: str = "default"  # how the signature names the aligner

    def signature(self, model: str, gold: Any = None) -> AlignmentSignature:
        """The settings behind scores read with these options (and `gold`, a GoldStream/GoldSet, when given)."""
        if self.method == "learned":
            layers = self.aligner.config.layers if self.aligner is not None else []
            args = dict(model=model, method=f"learned:{self.aligner_name}",
                        layer="states:" + ",".join(map(str, layers)), heads="-")
        else:
            args = dict(model=model, method=self.method, layer=_fmt_selector(self.layer), heads=_fmt_selector(self.head))
        args.update(threshold=self.threshold, decode=self.decode)
        return AlignmentSignature.for_gold(gold, **args) if gold else AlignmentSignature(**args)


def _fmt_selector(sel: Selector | None) -> str:
    return ",".join(map(str, sel)) if isinstance(sel, (list, tuple)) else str(sel)


# ------------------------------------------------------------------------------ encodings of a row's values

def counts_to_json(c: AlignmentCounts) -> list[int]:
    """Counts as the row stores them: [predicted, sure, pred_and_sure, pred_and_possible]."""
    return [int(getattr(c, f)) for f in COUNT_FIELDS]


def counts_from_json(values: list[int] | None) -> AlignmentCounts | None:
    return None if values is None else AlignmentCounts(*values)


def head_key_to_json(key: HeadKey) -> str:
    return f"{key[0]}:{key[1]}"


def head_key_from_json(text: str) -> HeadKey:
    layer, head = text.split(":")
    return int(layer), (head if head == "mean" else int(head))


@dataclass
class SentenceScore:
    """The typed values of one alignment row (what `score_row` writes)."""

    index: int
    links: str
    counts: AlignmentCounts | None = None
    per_head: dict[HeadKey, AlignmentCounts] = field(default_factory=dict)
    compared: dict[str, AlignmentCounts] = field(default_factory=dict)  # compared aligner -> counts
    agreement_rho: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # the row itself

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> "SentenceScore":
        return cls(index=row["index"], links=row["links"], counts=counts_from_json(row.get("counts")),
                   per_head={head_key_from_json(k): AlignmentCounts(*v)
                             for k, v in (row.get("per_head_counts") or {}).items()},
                   compared={a.name: AlignmentCounts(*row[f"{a.name}_counts"]) for a in compared_aligners()
                             if row.get(f"{a.name}_counts") is not None},
                   agreement_rho=row.get("agreement_rho"), raw=row)

    def to_json(self) -> dict[str, Any]:
        """The row (as it was read, with the typed values written back in the stored encoding)."""
        row = dict(self.raw)
        row.update({"index": self.index, "links": self.links})
        if self.counts is not None:
            row["counts"] = counts_to_json(self.counts)
        if self.per_head:
            row["per_head_counts"] = {head_key_to_json(k): counts_to_json(v) for k, v in self.per_head.items()}
        for name, c in self.compared.items():
            row[f"{name}_counts"] = counts_to_json(c)
        return row


# ------------------------------------------------------------------------------------------ alignment rows

def score_row(rec: Record, pair: Any, gold: GoldAlignment | None, opts: ScoreOptions,
              bundle: ModelBundle | None = None, reduced: bool = False) -> dict[str, Any]:
    """One alignment row: words, links, gold, and per-sentence counts and scores.

    `pair` is a SentencePair (or anything with `index` and `line`). `reduced`: the Record's cross-attention
    was already cut down to the chosen layer and heads (`[1, 1, T, S]`, see `score_reducer`) as it was produced.
    """
    layer = default_layer(rec.cross.shape[0]) if opts.layer is None else opts.layer
    grid = align_grid(rec, opts.method, opts.threshold, opts.decode) if opts.per_head else None
    mat = (rec.cross[0, 0] if reduced else select(rec.cross, layer, opts.head))[rec.rows_for(opts.method)]
    rows, cols = token_links(mat, rec.src_word_ids, opts.threshold, opts.decode)
    links = token_links_to_words(rows, cols, rec.src_word_ids, rec.tgt_word_ids[rec.target_positions])
    row: dict[str, Any] = {
        "index": pair.index, "line": pair.line, "source_words": rec.src_words, "target_words": rec.tgt_words,
        "translated": not rec.meta.get("forced_target", True), "links": format_pharaoh(links),
        "mean_logprob": float(rec.token_logprobs.mean()),  # Seq-Logprob over every label, </s> included
    }
    if gold is not None:
        c = count_links(links, gold)
        row.update({"gold": format_pharaoh(gold),
                    "counts": counts_to_json(c), "precision": c.precision, "recall": c.recall, "aer": c.aer})
        if grid is not None:
            row["per_head_counts"] = {head_key_to_json(k): counts_to_json(count_links(v, gold))
                                      for k, v in grid.items()}
    if opts.compare:
        row.update(_compare(rec, gold, opts, layer, bundle))
    return row


def score_reducer(opts: ScoreOptions):
    """What `extract` may keep of each sentence's attention for `score_row`, or None for all of it."""
    if opts.per_head or opts.compare:
        return None  # the grid and rollout need every layer and head of this sentence (dropped right after)
    return lambda kind, att: select(att, opts.layer, opts.head)[None, None]


def _compare(rec: Record, gold: GoldAlignment | None, opts: ScoreOptions, layer: Selector,
             bundle: ModelBundle | None) -> dict[str, Any]:
    """The compared aligners' links (with counts against gold) and attention-vs-IG agreement for one sentence."""
    if bundle is None:
        raise ValueError("comparing with Integrated Gradients needs the model")
    ig = ig_for_record(bundle, rec, steps=opts.ig_steps, rows=rec.target_positions)
    out: dict[str, Any] = {"agreement_rho": sentence_agreement(record_agreement(rec, ig, "cross", layer, opts.head)),
                           "ig_max_gap": float(ig.delta.max()) if len(ig.delta) else 0.0}
    settings = {"method": opts.method, "layer": layer, "head": opts.head, "threshold": opts.threshold,
                "decode": opts.decode}
    for aligner in compared_aligners():
        links = aligner.links(rec, ig, settings)
        out[f"{aligner.name}_links"] = format_pharaoh(links)
        if gold is not None:
            out[f"{aligner.name}_counts"] = counts_to_json(count_links(links, gold))
    if np.isnan(out["agreement_rho"]):
        out["agreement_rho"] = None
    return out


@dataclass
class ScoreTotals:
    """Corpus counts accumulated over alignment rows (also rebuilt from rows on resume)."""

    counts: AlignmentCounts = field(default_factory=lambda: AlignmentCounts())
    grid: dict[HeadKey, AlignmentCounts] = field(default_factory=dict)  # (layer, head or "mean") -> counts
    sentences: int = 0
    scored: int = 0  # sentences with a gold alignment
    links: int = 0
    compared: dict[str, AlignmentCounts] = field(default_factory=dict)  # "rollout" / "ig" -> counts
    agreement: list[float] = field(default_factory=list)  # per-sentence mean Spearman rho, attention vs IG
    skipped: list[dict[str, Any]] = field(default_factory=list)  # sentences the model could not take (--skip-invalid)

    def add_row(self, row: dict[str, Any]) -> None:
        s = SentenceScore.from_json(row)
        self.sentences += 1
        if row.get("skipped"):
            self.skipped.append({k: row.get(k) for k in ("index", "line", "skipped", "message")})
        self.links += len(s.links.split())
        if s.counts is not None:
            self.scored += 1
            self.counts = self.counts + s.counts
        for key, c in s.per_head.items():
            self.grid[key] = self.grid.get(key, AlignmentCounts()) + c
        for name, c in s.compared.items():
            self.compared[name] = self.compared.get(name, AlignmentCounts()) + c
        if s.agreement_rho is not None:
            self.agreement.append(s.agreement_rho)


def summary(totals: ScoreTotals, signature: str, n_layers: int | None = None, n_heads: int | None = None,
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON summary: fractions (not percent), plus per-head AER grid when it was computed."""
    c = totals.counts
    out: dict[str, Any] = {"sentences": totals.sentences, "scored_sentences": totals.scored, "links": totals.links}
    if totals.scored:
        out.update({"aer": c.aer, "precision": c.precision, "recall": c.recall, "f1": c.f1, "gold_sure": c.sure})
    if totals.grid and n_layers and n_heads:
        out["per_head"] = [[totals.grid[(l, h)].aer for h in range(n_heads)] for l in range(n_layers)]
        out["per_layer_mean"] = [totals.grid[(l, "mean")].aer for l in range(n_layers)]
    if totals.compared or totals.agreement:
        out["compare"] = {name: {"aer": c.aer, "precision": c.precision, "recall": c.recall, "f1": c.f1}
                          for name, c in totals.compared.items()}
        out["compare"]["agreement_rho_mean"] = float(np.mean(totals.agreement)) if totals.agreement else None
    if totals.skipped:
        out["skipped_sentences"] = sorted(totals.skipped, key=lambda s: s["index"])
    out["signature"] = signature
    out.update(extra or {})
    return out


def read_links(path: Path) -> Iterator[tuple[int, str]]:
    """(index, Pharaoh links) of every row in a rows file, in index order.

    Rows are appended in input order (resumed runs too), so the file is streamed; one that is not in
    order (edited or joined by hand) is sorted in memory instead.
    """
    def rows() -> Iterator[tuple[int, str]]:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    yield row["index"], row["links"]

    if all(a < b for (a, _), (b, _) in itertools.pairwise(rows())):
        return rows()
    return iter(sorted(rows()))


# ------------------------------------------------------------------------------------------- signal rows

@dataclass
class TriageRow:
    """The typed values of one triage row (a signal row, and once ranked its score, flags and rank); the
    registered signals' values are in `signals` (NaN when undefined, as null in the file)."""

    id: int
    source: str
    translation: str
    reference: str | None = None
    score: float | None = None
    suspect: bool | None = None
    flags: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    rank: int | None = None
    signals: dict[str, float] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # the row itself

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> "TriageRow":
        return cls(id=row["id"], source=row["source"], translation=row["translation"],
                   reference=row.get("reference"), score=row.get("score"), suspect=row.get("suspect"),
                   flags=list(row.get("flags") or []), reasons=list(row.get("reasons") or []), rank=row.get("rank"),
                   signals={n: (float("nan") if row[n] is None else float(row[n])) for n in SIGNALS if n in row},
                   raw=row)

    def to_json(self) -> dict[str, Any]:
        """The row as stored: its fields in their order, the typed values written back."""
        row = dict(self.raw)
        typed = {"id": self.id, "source": self.source, "translation": self.translation, "reference": self.reference,
                 "score": self.score, "suspect": self.suspect, "flags": self.flags, "reasons": self.reasons,
                 "rank": self.rank, **self.signals}
        row.update({k: v for k, v in typed.items() if k in row or (v is not None and v != [])})
        return row


def signal_reducer(layer: int | str | None):
    """What `extract` may keep of each sentence's [L, H, T, S] for `signal_row`: the one layer (or the
    layer mean) the signals read, None meaning the default layer as `align.select` reads it; `signal_row`
    then reads layer 0."""
    def reduce(kind: str, m: np.ndarray) -> np.ndarray:
        if layer == "mean":
            return m.mean(axis=0, keepdims=True)
        n = m.shape[0]
        at = default_layer(n) if layer is None else layer
        if not isinstance(at, (int, np.integer)) or not -n <= at < n:
            raise ValueError(f"layer {layer!r} does not exist: the model has {n} decoder layers (0-based) or use 'mean'")
        return m[[at]]
    return reduce


def signal_row(rec: Record, id_: int, source: str, reference: str | None = None, *, layer: int | str = "mean",
               head: int | str = "mean", method: str = "shift-att") -> dict[str, Any]:
    """The triage row of one Record (unscored): id, texts, source words and every signal."""
    sig = record_signals(rec, layer=layer, head=head, method=method, reference=reference)
    row = {"id": id_, "source": source, "translation": rec.target}
    if reference is not None:
        row["reference"] = reference
    row["src_words"] = rec.src_words
    row.update(sig)
    if "alti_source" in rec.meta:  # traced in the pass that made the Record (`alti.traced_records`)
        row["alti_source"] = rec.meta["alti_source"]
    if "aligner_words" in rec.meta:  # a learned aligner's word matrix from the same pass (`extract.forward_batch`)
        row.update(aligner_signals(rec.meta["aligner_words"], rec.src_words, rec.tgt_words))
    if "seq_logprob_prior" in rec.meta:  # the target's Seq-Logprob given an empty source (`source_gain`)
        row["source_gain"] = source_gain(row["seq_logprob"], rec.meta["seq_logprob_prior"])
    return row


def unusable_row(id_: int, source: str, translation: str, reference: str | None, reason: str,
                 message: str) -> dict[str, Any]:
    """The row of a sentence the model cannot take (`reason`: a code of `runner.unusable_reason`): kept, with
    the signals that need no forward pass (length ratio, output repetition, reference scores); the others
    are undefined (NaN)."""
    src_words, tgt_words = source.split(), translation.split()
    row: dict[str, Any] = {"id": id_, "source": source, "translation": translation}
    if reference is not None:
        row["reference"] = reference
    row.update({"src_words": src_words, "unusable": reason, "unusable_reason": message})
    row.update({name: float("nan") for name in SIGNALS})
    row["length_ratio"] = length_ratio(len(tgt_words), len(src_words))
    row.update(repetition_stats(tgt_words))
    if reference is not None:
        row.update(reference_scores(translation, reference))
    return row
