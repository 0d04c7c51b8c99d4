"""Streaming, resumable alignment scoring of whole test sets.

Pairs are read lazily and processed in chunks; inside a chunk, sentences are length-bucketed
into batches and each batch is one teacher-forced pass. Each sentence's attention is reduced to
what the requested outputs need as soon as it is produced, so memory does not grow with the
number of sentences. Rows are appended to the output in input order and flushed per chunk; a
rerun with `resume=True` skips the sentences already written (a torn last line from a kill is
cut off first), so every sentence ends up in the file exactly once.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .align import Selector, align_grid, default_layer, select, token_links
from .errors import InputError
from .extract import SentenceError, iter_extract
from .gold import GoldAlignment, format_pharaoh
from .metrics import AlignmentCounts, count_links
from .models import ModelBundle
from .pairs import SentencePair
from .words import token_links_to_words

COUNT_FIELDS = ("predicted", "sure", "pred_and_sure", "pred_and_possible")


@dataclass
class ScoreOptions:
    """How links are read off the attention."""

    method: str = "shift-att"
    layer: Selector | None = None
    head: Selector = "mean"
    threshold: float | None = None
    per_head: bool = False
    batch_size: int = 16
    beam: int = 1
    chunk_size: int = 256
    compare: bool = False  # also rollout- and IG-based alignments, and attention-vs-IG agreement
    ig_steps: int = 16


@dataclass
class ScoreTotals:
    """Corpus counts accumulated over rows (also rebuilt from rows on resume)."""

    counts: AlignmentCounts = field(default_factory=lambda: AlignmentCounts())
    grid: dict[str, AlignmentCounts] = field(default_factory=dict)  # "layer:head" -> counts
    sentences: int = 0
    scored: int = 0  # sentences with a gold alignment
    links: int = 0
    compared: dict[str, AlignmentCounts] = field(default_factory=dict)  # "rollout" / "ig" -> counts
    agreement: list[float] = field(default_factory=list)  # per-sentence mean Spearman rho, attention vs IG

    def add_row(self, row: dict[str, Any]) -> None:
        self.sentences += 1
        self.links += len(row["links"].split())
        if row.get("counts") is not None:
            self.scored += 1
            self.counts = self.counts + AlignmentCounts(*row["counts"])
        for key, c in (row.get("per_head_counts") or {}).items():
            self.grid[key] = self.grid.get(key, AlignmentCounts()) + AlignmentCounts(*c)
        for name in ("rollout", "ig"):
            if row.get(f"{name}_counts") is not None:
                counts = AlignmentCounts(*row[f"{name}_counts"])
                self.compared[name] = self.compared.get(name, AlignmentCounts()) + counts
        if row.get("agreement_rho") is not None:
            self.agreement.append(row["agreement_rho"])


def _counts_list(c: AlignmentCounts) -> list[int]:
    return [int(getattr(c, f)) for f in COUNT_FIELDS]


def _reducer(opts: ScoreOptions) -> Callable[[str, np.ndarray], np.ndarray] | None:
    if opts.per_head or opts.compare:
        return None  # the grid and rollout need every layer and head of this sentence (dropped right after)
    return lambda kind, att: select(att, opts.layer, opts.head)[None, None]


def sentence_row(rec, pair: SentencePair, gold: GoldAlignment | None, opts: ScoreOptions,
                 bundle: ModelBundle | None = None, reduced: bool = False) -> dict[str, Any]:
    """One output row: words, links, gold, and per-sentence counts and scores.

    `reduced`: the Record's cross-attention was already cut down to the chosen layer and heads
    (`[1, 1, T, S]`, see `_reducer`) as it was produced.
    """
    layer = default_layer(rec.cross.shape[0]) if opts.layer is None else opts.layer
    grid = align_grid(rec, opts.method, opts.threshold) if opts.per_head else None
    mat = (rec.cross[0, 0] if reduced else select(rec.cross, layer, opts.head))[rec.rows_for(opts.method)]
    rows, cols = token_links(mat, rec.src_word_ids, opts.threshold)
    links = token_links_to_words(rows, cols, rec.src_word_ids, rec.tgt_word_ids[rec.target_positions])
    row: dict[str, Any] = {
        "index": pair.index, "line": pair.line, "source_words": rec.src_words, "target_words": rec.tgt_words,
        "translated": not rec.meta.get("forced_target", True), "links": format_pharaoh(links),
        "mean_logprob": float(rec.token_logprobs.mean()),  # Seq-Logprob over every label, </s> included
    }
    if gold is not None:
        c = count_links(links, gold)
        row.update({"gold": format_pharaoh(gold),
                    "counts": _counts_list(c), "precision": c.precision, "recall": c.recall, "aer": c.aer})
        if grid is not None:
            row["per_head_counts"] = {f"{l}:{h}": _counts_list(count_links(v, gold)) for (l, h), v in grid.items()}
    if opts.compare:
        row.update(_compare(rec, gold, opts, layer, bundle))
    return row


def _compare(rec, gold: GoldAlignment | None, opts: ScoreOptions, layer: Selector, bundle: ModelBundle | None) -> dict:
    """Rollout and IG alignments (with counts against gold) and attention-vs-IG agreement for one sentence."""
    from .agreement import ig_links, record_agreement, rollout_links, sentence_agreement
    from .attribution import ig_for_record

    if bundle is None:
        raise ValueError("comparing with Integrated Gradients needs the model")
    ig = ig_for_record(bundle, rec, steps=opts.ig_steps, rows=rec.target_positions)
    out: dict[str, Any] = {"agreement_rho": sentence_agreement(record_agreement(rec, ig, "cross", layer, opts.head)),
                           "ig_max_gap": float(ig.delta.max()) if len(ig.delta) else 0.0}
    for name, links in (("rollout", rollout_links(rec)), ("ig", ig_links(rec, ig))):
        out[f"{name}_links"] = format_pharaoh(links)
        if gold is not None:
            out[f"{name}_counts"] = _counts_list(count_links(links, gold))
    if np.isnan(out["agreement_rho"]):
        out["agreement_rho"] = None
    return out


def read_done(path: Path) -> tuple[set[int], ScoreTotals]:
    """Indices already in a rows file and their totals; a torn last line (killed mid-write) is cut off."""
    done: set[int] = set()
    totals = ScoreTotals()
    if not path.exists():
        return done, totals
    with open(path, "rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            f.truncate(end)
    for line in data[:end].splitlines():
        row = json.loads(line)
        if row["index"] not in done:
            done.add(row["index"])
            totals.add_row(row)
    return done, totals


def score_stream(bundle: ModelBundle, pairs: Iterable[SentencePair],
                 golds: Sequence[GoldAlignment | None] | Iterable[GoldAlignment | None] | None,
                 opts: ScoreOptions, rows_path: Path | None = None, resume: bool = False,
                 on_progress: Callable[[int], None] | None = None) -> tuple[ScoreTotals, Iterator[dict] | None]:
    """Score every pair; append rows to `rows_path` (if given). Returns the corpus totals.

    `golds` is a sequence indexed by pair index, or a stream (a `gold.GoldStream`, any iterable)
    read along with the pairs, one entry per pair in order, so a gold file need not be held whole.
    With `resume`, sentences whose index is already in `rows_path` are skipped and their rows
    count towards the totals. Without `rows_path`, rows are kept in memory and returned.
    """
    gold_for = _gold_reader(golds)
    with RowSink(rows_path, resume) as sink:
        if on_progress and sink.done:
            on_progress(len(sink.done))
        it = iter(pairs)
        while chunk := list(itertools.islice(it, opts.chunk_size)):
            chunk_golds = gold_for(chunk)
            todo = [p for p in chunk if p.index not in sink.done]
            for row in score_chunk(bundle, todo, chunk_golds, opts):
                sink.add(row)
            sink.end_chunk()
            if on_progress:
                on_progress(len(todo))  # the done ones were reported once, up front
    return sink.totals, sink.rows()


def _gold_reader(golds) -> Callable[[list[SentencePair]], dict[int, GoldAlignment | None]]:
    """chunk of pairs -> {pair index: gold}: looked up in a sequence, or read along from a stream."""
    if golds is None:
        return lambda chunk: {}
    if isinstance(golds, Sequence):
        return lambda chunk: {p.index: golds[p.index] for p in chunk if p.index < len(golds)}
    stream = iter(golds)
    return lambda chunk: {p.index: g for p, g in zip(chunk, itertools.islice(stream, len(chunk)))}


class RowSink:
    """Where scored rows go: appended to a rows file (flushed and synced per chunk, so a kill loses at most the
    chunk in flight) or kept in memory. Corpus totals follow every row; on resume they are rebuilt from the file."""

    def __init__(self, path: Path | None, resume: bool = False):
        self.path = path
        self.done, self.totals = read_done(path) if (path and resume) else (set(), ScoreTotals())
        self.kept: list[dict] = []
        self._out = None
        if path:
            if not resume and path.exists():
                path.unlink()
            path.parent.mkdir(parents=True, exist_ok=True)
            self._out = open(path, "a", encoding="utf-8")

    def add(self, row: dict[str, Any], line: str | None = None) -> None:
        """Count `row`; write it (as `line` when its JSON is already at hand) or keep it."""
        self.totals.add_row(row)
        if self._out is not None:
            self._out.write((line if line is not None else json.dumps(row, ensure_ascii=False)) + "\n")
        else:
            self.kept.append(row)

    def end_chunk(self) -> None:
        if self._out is not None:
            self._out.flush()
            os.fsync(self._out.fileno())

    def rows(self) -> Iterator[dict] | None:
        """The rows kept in memory (None when they went to a file)."""
        return None if self.path else iter(self.kept)

    def __enter__(self) -> "RowSink":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._out is not None:
            self._out.close()


def score_chunk(bundle: ModelBundle, todo: list[SentencePair], golds: dict[int, GoldAlignment | None],
                 opts: ScoreOptions) -> list[dict]:
    """Rows for `todo`, in order; `golds` maps pair index to its gold (missing: no gold)."""
    if not todo:
        return []
    forced = [p for p in todo if p.tgt_words is not None]
    free = [p for p in todo if p.tgt_words is None]
    rows: dict[int, dict] = {}
    keep = ("cross", "enc_self", "dec_self") if opts.compare else ("cross",)
    reduce = _reducer(opts)
    for group, targets in ((forced, [p.tgt_words for p in forced]), (free, None)):
        if not group:
            continue
        try:
            for i, rec in iter_extract(bundle, [p.src_words for p in group], targets, batch_size=opts.batch_size,
                                       beam=opts.beam, keep=keep, reduce=reduce):
                pair = group[i]
                rows[pair.index] = sentence_row(rec, pair, golds.get(pair.index), opts, bundle, reduced=reduce is not None)
        except SentenceError as exc:  # name the input line, not the position inside this chunk
            raise InputError(None, group[exc.index].line, exc.reason) from exc
    return [rows[p.index] for p in todo]


def summary(totals: ScoreTotals, signature: str, n_layers: int | None = None, n_heads: int | None = None,
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON summary: fractions (not percent), plus per-head AER grid when it was computed."""
    c = totals.counts
    out: dict[str, Any] = {"sentences": totals.sentences, "scored_sentences": totals.scored, "links": totals.links}
    if totals.scored:
        out.update({"aer": c.aer, "precision": c.precision, "recall": c.recall, "f1": c.f1, "gold_sure": c.sure})
    if totals.grid and n_layers and n_heads:
        out["per_head"] = [[totals.grid[f"{l}:{h}"].aer for h in range(n_heads)] for l in range(n_layers)]
        out["per_layer_mean"] = [totals.grid[f"{l}:mean"].aer for l in range(n_layers)]
    if totals.compared or totals.agreement:
        out["compare"] = {name: {"aer": c.aer, "precision": c.precision, "recall": c.recall, "f1": c.f1}
                          for name, c in totals.compared.items()}
        out["compare"]["agreement_rho_mean"] = float(np.mean(totals.agreement)) if totals.agreement else None
    out["signature"] = signature
    out.update(extra or {})
    return out


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


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
