"""The one runner: sentences -> Records -> the requested rows -> stores, chunk by chunk, resumable.

Work is cut one way everywhere: the input, in input order, `chunk_size` sentences at a time; sentences
already in the store are left out of their chunk. A chunk is run by `run_chunk` (locally, or by the same
call on a Ray actor, see `ray_backend`): sentences with a given target are teacher-forced, the others are
translated first; inside the chunk, sentences are length-bucketed into batches, each batch one forward
pass. Each Record feeds every requested row builder (`ScoreRows`: `aligndebug score`'s alignment rows;
`SignalRows`: triage's signal rows) before it is dropped, so score and triage together are one pass. A
builder with its own `extract` (`LearnedRows`: a learned aligner reads hidden states, not attention) makes
its own pass per batch and runs alone.
Each chunk's rows are appended to their stores (flushed and synced) before the next chunk runs.

`score_stream`, `run_triage` and `score_and_triage` are the three runs built from these parts; the Ray
versions (`ray_backend.score_with_ray`, `ray_backend.triage_with_ray`) pass another `execute`.
"""

from __future__ import annotations

import itertools
import os
import warnings
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .align import Selector
from .errors import InputError, SentenceError
from .extract import Encoded, encode_pair, iter_extract, iter_forward, translate
from .gold import GoldAlignment, format_pharaoh
from .learned import aligner_id, triage_aligner
from .methods import compared_aligners
from .metrics import count_links
from .models import ModelBundle
from .pairs import SentencePair
from .record import Record
from .rows import (ScoreOptions, ScoreTotals, counts_to_json, score_reducer, score_row, signal_reducer, signal_row,
                   unusable_row)
from .source_gain import prior_seq_logprobs
from .store import JsonlStore, parse_row, row_at, row_json, write_lines_atomic, write_text_atomic
from .combine import ERROR_TYPES, check_rank_by, is_suspect, row_score, scored_row, scored_rows
from .triage import SIGNALS, Calibration, calibrate, triage_settings

# (rows per builder, in input order) of one chunk, and how many sentences it ran
ChunkResult = tuple[int, list[list[dict[str, Any]]]]


@dataclass(frozen=True)
class Item:
    """One sentence to run: its 0-based `index` (the row key), the 1-based `line` errors name, the source
    (text or words), the target to force (None: the model translates), and what rows compare against."""

    index: int
    line: int
    source: str | list[str]
    target: str | list[str] | None = None
    gold: GoldAlignment | None = None
    reference: str | None = None
    unreadable: str | None = None  # why its text could not be read as it is (file and line named): not run

    @property
    def source_text(self) -> str:
        return self.source if isinstance(self.source, str) else " ".join(self.source)


# ------------------------------------------------------------------------------------------- row builders

class RowBuilder(Protocol):
    keep: tuple[str, ...]  # the attention kinds the rows read

    def reducer(self) -> Callable[[str, np.ndarray], np.ndarray] | None: ...

    def build(self, rec: Record, item: Item, bundle: ModelBundle, reduced: bool) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ScoreRows:
    """Alignment rows (`rows.score_row`) read with `opts`."""

    opts: ScoreOptions

    @property
    def keep(self) -> tuple[str, ...]:
        if not self.opts.compare:
            return ("cross",)
        return tuple(dict.fromkeys(("cross",) + tuple(k for a in compared_aligners() for k in a.keep)))

    def reducer(self):
        return score_reducer(self.opts)

    def build(self, rec: Record, item: Item, bundle: ModelBundle, reduced: bool) -> dict[str, Any]:
        return score_row(rec, item, item.gold, self.opts, bundle, reduced=reduced)

    def fallback(self, item: Item, reason: str, message: str) -> dict[str, Any]:
        """With `skip_invalid`, a sentence the model cannot take becomes a row that says why (no links, not
        scored); without, it stops the run naming its line."""
        if not self.opts.skip_invalid:
            raise InputError(None, item.line, message)
        return {"index": item.index, "line": item.line, "source_words": _words(item.source),
                "target_words": None if item.target is None else _words(item.target), "links": "",
                "skipped": reason, "message": message}


@dataclass(frozen=True)
class LearnedRows(ScoreRows):
    """Alignment rows of a learned aligner (`opts.aligner`, links by `opts.decode` at `opts.threshold`): the
    same fields as `ScoreRows`' minus what needs attention (Seq-Logprob, per head, compared aligners). Its
    pass (`extract`) reads hidden states through the aligner instead of attention."""

    @property
    def keep(self) -> tuple[str, ...]:
        return ()

    def reducer(self):
        return None

    def extract(self, bundle: ModelBundle, sources: list, targets: list | None, batch_size: int, beam: int):
        return self.opts.aligner.iter_word_matrices(bundle, sources, targets, batch_size=batch_size, beam=beam)

    def build(self, view: Any, item: Item, bundle: ModelBundle, reduced: bool) -> dict[str, Any]:
        links = view.links(self.opts.decode or "argmax", self.opts.threshold)
        row: dict[str, Any] = {"index": item.index, "line": item.line, "source_words": view.encoded.src_words,
                               "target_words": view.encoded.tgt_words, "translated": not view.forced,
                               "links": format_pharaoh(links)}
        if item.gold is not None:
            c = count_links(links, item.gold)
            row.update({"gold": format_pharaoh(item.gold), "counts": counts_to_json(c), "precision": c.precision,
                        "recall": c.recall, "aer": c.aer})
        return row


def score_rows(opts: ScoreOptions) -> ScoreRows:
    """The builder of `aligndebug score`'s rows for `opts`: a learned aligner's, or attention's."""
    if opts.method == "learned":
        if opts.aligner is None:
            raise ValueError("method 'learned' needs an aligner (ScoreOptions.aligner, see learned.load_aligner)")
        if opts.per_head or opts.compare:
            raise ValueError("a learned aligner has no layers or heads to grid (per_head) and is not compared "
                             "with attention-based aligners (compare)")
        return LearnedRows(opts)
    return ScoreRows(opts)


def _words(x: str | list[str]) -> list[str]:
    return x.split() if isinstance(x, str) else list(x)


@dataclass(frozen=True)
class SignalRows:
    """Triage signal rows (`rows.signal_row`, unscored) read at `layer`, `head` with `method`; with `alti`
    also ALTI+ source contribution, traced in the same forward pass (models whose layout ALTI+ knows); with
    `prior` also the source gain (Seq-Logprob minus that given an empty source; one more pass per batch).

    A sentence the model cannot take (`unusable`) does not stop the run: its row (`fallback`) holds the
    signals that need no forward pass and the reason."""

    layer: int | str = "mean"
    head: int | str = "mean"
    method: str = "shift-att"
    keep: tuple[str, ...] = ("cross",)
    alti: bool = True
    prior: bool = True  # source gain: a second pass with an empty source (`source_gain`)
    # target text -> its Seq-Logprob given an empty source, already known (it depends on the target alone):
    # a detached variant's target is another row's translation, so its prior pass is skipped
    known_priors: Mapping[str, float] = field(default_factory=dict)
    # a learned aligner for the model (`learned.triage_aligner`), run on the same pass: `signals.aligner_signals`
    aligner: Any = None

    def reducer(self):
        return signal_reducer(self.layer)

    def build(self, rec: Record, item: Item, bundle: ModelBundle, reduced: bool) -> dict[str, Any]:
        return signal_row(rec, item.index, item.source_text, item.reference, layer=0 if reduced else self.layer,
                          head=self.head, method=self.method)

    def fallback(self, item: Item, reason: str, message: str) -> dict[str, Any]:
        return unusable_row(item.index, item.source_text, _text(item.target), item.reference, reason, message)


def _text(x: str | list[str] | None) -> str:
    return "" if x is None else x if isinstance(x, str) else " ".join(x)


def unusable_reason(bundle: ModelBundle, item: Item) -> tuple[str, str] | Encoded:
    """(code, message) when the model cannot take `item` -- ``undecodable`` (a line whose bytes could not be
    read, `Item.unreadable`), ``empty`` (no source word, or a given target with no word),
    ``too_long_for_model`` (past the model's positions) or ``no_tokens`` (words its tokenizer makes no token
    of) -- else the pair as encoded for the forward pass (the target empty when the model is to translate)."""
    if item.unreadable:
        return "undecodable", item.unreadable
    if not _text(item.source).split():
        return "empty", "the source is empty"
    no_target = item.target is not None and not _text(item.target).split()
    try:
        # an empty target is named only for a source the model could take: one too long left no translation
        enc = encode_pair(bundle, item.source, [] if no_target or item.target is None else item.target, item.index)
    except SentenceError as exc:
        return exc.code, exc.reason
    return ("empty", "the target is empty") if no_target else enc


# ------------------------------------------------------------------------------------------ cutting, running

def items_from_pairs(pairs: Iterable[SentencePair], golds: Sequence[GoldAlignment | None] | Iterable | None = None,
                     references: Sequence[str] | None = None) -> Iterator[Item]:
    """Items of sentence pairs (source and target as words). `golds` is a sequence indexed by pair index, or a
    stream (a `gold.GoldStream`, any iterable) read along with the pairs, one entry per pair, so a gold file
    need not be held whole; `references` a sequence indexed by pair index."""
    if golds is None:
        gold_of = lambda p: None  # noqa: E731
    elif isinstance(golds, Sequence):
        gold_of = lambda p: golds[p.index] if p.index < len(golds) else None  # noqa: E731
    else:
        stream = iter(golds)
        gold_of = lambda p: next(stream, None)  # noqa: E731
    for p in pairs:
        yield Item(p.index, p.line, p.src_words, p.tgt_words, gold_of(p),
                   None if references is None else references[p.index], p.unreadable)


def items_from_lines(sources: Sequence[str], targets: Sequence[str] | None = None,
                     references: Sequence[str | None] | None = None,
                     unreadable: Mapping[int, str] | None = None) -> list[Item]:
    """Items of parallel lists of sentences (texts); sentence k is line k + 1. `unreadable`: sentence index ->
    why a line of it could not be read (`pairs.read_lines_keeping_bad`); such a sentence is kept, not run."""
    unreadable = unreadable or {}
    for what, lines in (("targets", targets), ("references", references)):
        if lines is not None and len(lines) != len(sources):
            raise ValueError(f"{len(sources)} sources but {len(lines)} {what}: expected one {what[:-1]} per source")
    return [Item(k, k + 1, s, None if targets is None else targets[k], None,
                 None if references is None else references[k], unreadable.get(k)) for k, s in enumerate(sources)]


def iter_chunks(items: Iterable[Item], chunk_size: int, done: Iterable[int] = ()) -> Iterator[list[Item]]:
    """The items in input order, `chunk_size` input positions at a time, without those whose index is `done`
    (a chunk may come out empty: its sentences were all done)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    done = done if isinstance(done, (set, frozenset)) else set(done)
    it = iter(items)
    while chunk := list(itertools.islice(it, chunk_size)):
        yield [x for x in chunk if x.index not in done]


def run_chunk(bundle: ModelBundle, items: list[Item], builders: Sequence[RowBuilder], batch_size: int = 16,
              beam: int = 1, on_item: Callable[[int], None] | None = None) -> list[list[dict[str, Any]]]:
    """Every builder's rows for `items`, in input order, from one forward pass per batch.

    One builder keeps only what its rows read of each sentence's attention (its reducer); several keep all
    of it. A sentence that cannot be used raises InputError naming its line (the caller adds the file),
    unless every builder has a `fallback` row for it (triage: the sentence is kept, with the reason).
    A builder asking for `alti` gets ALTI+ traced in the same passes (``rec.meta["alti_source"]``), one asking
    for `prior` each target's Seq-Logprob given an empty source (``rec.meta["seq_logprob_prior"]``), from a
    pass of its own made before the traced ones, one with an `aligner` that aligner's word matrix from the same
    passes (``rec.meta["aligner_words"]``).
    """
    from . import alti as alti_mod

    out: list[dict[int, dict[str, Any]]] = [{} for _ in builders]
    own = getattr(builders[0], "extract", None)
    if len(builders) > 1 and any(hasattr(b, "extract") for b in builders):
        raise ValueError("a row builder with its own pass (e.g. a learned aligner's) runs alone")
    keep = tuple(dict.fromkeys(k for b in builders for k in b.keep))
    reduce = builders[0].reducer() if len(builders) == 1 else None
    checked: dict[int, Encoded] = {}  # forced pairs encoded by the check, not encoded again
    keeps_unusable = all(hasattr(b, "fallback") for b in builders)
    if keeps_unusable:
        usable = []
        for x in items:
            enc = unusable_reason(bundle, x)
            if isinstance(enc, Encoded):
                usable.append(x)
                if x.target is not None:
                    checked[x.index] = enc
            else:
                for rows, b in zip(out, builders):
                    rows[x.index] = b.fallback(x, *enc)
                if on_item:
                    on_item(1)
    else:
        usable = items
    traced = own is None and any(getattr(b, "alti", False) for b in builders) and alti_mod.supports(bundle.model)
    prior = own is None and any(getattr(b, "prior", False) for b in builders)
    known = {k: v for b in builders for k, v in getattr(b, "known_priors", {}).items()}
    aligner = next((b.aligner for b in builders if getattr(b, "aligner", None) is not None), None) \
        if own is None else None
    forced = [x for x in usable if x.target is not None]
    free = [x for x in usable if x.target is None]
    for group, targets in ((forced, [x.target for x in forced]), (free, None)):
        if not group:
            continue
        translated = (traced or prior or aligner is not None) and targets is None
        try:
            if translated:  # generation is neither traced nor contrasted: translate first, then force
                # every source of `group` passed `unusable_reason` already when the sentences are kept
                targets = translate(bundle, [x.source for x in group], beam=beam, check=not keeps_unusable)
            priors = None
            if own is not None:
                records = own(bundle, [x.source for x in group], targets, batch_size, beam)
            elif targets is not None:  # encoded once for the source-gain pass and the main one
                encoded = [checked[x.index] if x.index in checked else encode_pair(bundle, x.source, t, i)
                           for i, (x, t) in enumerate(zip(group, targets))]
                # before the traced passes, whose hooks would also record this one
                priors = _priors(bundle, encoded, [_text(t) for t in targets], known, batch_size) if prior else None
                records = iter_forward(bundle, encoded, batch_size, keep, reduce, aligner=aligner)
            else:
                records = iter_extract(bundle, [x.source for x in group], None, batch_size=batch_size, beam=beam,
                                       keep=keep, reduce=reduce)
            if traced:
                records = alti_mod.traced_records(bundle.model, records)
            for i, rec in records:
                if translated:
                    rec.meta.update({"forced_target": False, "beam": beam})
                if priors is not None:
                    rec.meta["seq_logprob_prior"] = float(priors[i])
                for rows, b in zip(out, builders):
                    rows[group[i].index] = b.build(rec, group[i], bundle, reduce is not None)
                if on_item:  # progress a sentence at a time, not a chunk at a time
                    on_item(1)
        except SentenceError as exc:  # name the input line, not the position inside this chunk
            raise InputError(None, group[exc.index].line, exc.reason) from exc
    return [[rows[x.index] for x in items] for rows in out]


def _priors(bundle: ModelBundle, encoded: Sequence[Encoded], texts: Sequence[str], known: Mapping[str, float],
            batch_size: int) -> np.ndarray:
    """Seq-Logprob of each target given an empty source: from `known` by target text, else from its pass."""
    out = np.array([known.get(t, np.nan) for t in texts], dtype=np.float64)
    todo = [i for i, t in enumerate(texts) if t not in known]
    if todo:
        out[todo] = prior_seq_logprobs(bundle, [encoded[i] for i in todo], batch_size)
    return out


Execute = Callable[[Iterable[Any], Sequence[RowBuilder]], Iterator[ChunkResult]]


def local_execute(bundle: ModelBundle, batch_size: int = 16, beam: int = 1,
                  on_item: Callable[[int], None] | None = None) -> Execute:
    """Run chunks (lists of Items) one after another in this process. With `on_item`, progress is reported
    a sentence at a time as rows are built (and the chunks then count 0 towards `run_chunks`' progress)."""
    def execute(chunks: Iterable[list[Item]], builders: Sequence[RowBuilder]) -> Iterator[ChunkResult]:
        for chunk in chunks:
            rows = run_chunk(bundle, chunk, builders, batch_size, beam, on_item)
            yield (0 if on_item else len(chunk)), rows
    return execute


def run_chunks(chunks: Iterable[Any], builders: Sequence[RowBuilder], sinks: Sequence[Any], execute: Execute,
               on_progress: Callable[[int], None] | None = None) -> None:
    """Run `chunks` with `execute`; append each chunk's rows of builder k to `sinks[k]` (then sync it)."""
    for n, per_builder in execute(chunks, builders):
        for sink, rows in zip(sinks, per_builder):
            for row in rows:
                sink.append(row)
            sync = getattr(sink, "sync", None)
            if sync is not None:
                sync()
        if on_progress:
            on_progress(n)


# ------------------------------------------------------------------------------------------------ score

class ScoreSink:
    """Where alignment rows go: appended to a rows file (resumable: kept rows count towards the totals) or
    kept in memory. Corpus totals follow every row."""

    def __init__(self, path: Path | None, resume: bool = False):
        self.path = path
        self.totals = ScoreTotals()
        self.kept: list[dict[str, Any]] = []
        self.store = JsonlStore(path, "index", resume=resume, on_row=self.totals.add_row) if path else None
        self.done: set[int] = self.store.done if self.store is not None else set()

    def append(self, row: dict[str, Any], line: str | None = None) -> None:
        self.totals.add_row(row)
        if self.store is not None:
            self.store.append(row, line)
        else:
            self.kept.append(row)

    def sync(self) -> None:
        if self.store is not None:
            self.store.sync()

    def rows(self) -> Iterator[dict[str, Any]] | None:
        """The rows kept in memory (None when they went to a file)."""
        return None if self.path else iter(self.kept)

    def __enter__(self) -> "ScoreSink":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.store is not None:
            self.store.close()


def score_stream(bundle: ModelBundle, pairs: Iterable[SentencePair],
                 golds: Sequence[GoldAlignment | None] | Iterable[GoldAlignment | None] | None,
                 opts: ScoreOptions, rows_path: Path | None = None, resume: bool = False,
                 on_progress: Callable[[int], None] | None = None) -> tuple[ScoreTotals, Iterator[dict] | None]:
    """Score every pair; append rows to `rows_path` (if given). Returns the corpus totals and, without
    `rows_path`, the rows.

    `golds`: see `items_from_pairs`. With `resume`, sentences whose index is already in `rows_path` are
    skipped and their rows count towards the totals.
    """
    with ScoreSink(rows_path, resume) as sink:
        if on_progress and sink.done:
            on_progress(len(sink.done))
        chunks = iter_chunks(items_from_pairs(pairs, golds), opts.chunk_size, sink.done)
        run_chunks(chunks, [score_rows(opts)], [sink], local_execute(bundle, opts.batch_size, opts.beam, on_progress))
    return sink.totals, sink.rows()


# ----------------------------------------------------------------------------------------------- triage

def partial_path(out: str | os.PathLike[str]) -> Path:
    """Where the rows of an unfinished triage run writing `out` are kept: ``<out>.partial``."""
    return Path(str(out) + ".partial")


def calibration_path(out: str | os.PathLike[str]) -> Path:
    """Where the calibration of results file `out` is saved: beside it, ``<stem>.calibration.json``."""
    out = Path(out)
    return out.with_name(out.stem + ".calibration.json")


class PartialRows(JsonlStore):
    """The signal rows of a triage run writing `out`, kept in ``<out>.partial`` until they are ranked.

    Opening checks the rows against `sources` (a rerun on other input is refused) and cuts off a line torn
    by a kill; rows are read back (null signals as NaN) as often as ranking needs.
    """

    def __init__(self, out: str | os.PathLike[str], sources: Sequence[str]):
        def check(row: dict[str, Any], lineno: int) -> None:
            i = row.get("id")
            if not isinstance(i, int) or not 0 <= i < len(sources) or row.get("source") != sources[i]:
                raise ValueError(f"{partial_path(out)}: holds rows of another input (row {i} does not match the "
                                 "sources); delete it or use another --out")
        super().__init__(partial_path(out), "id", check=check, nan_fields=SIGNALS)


class RankedFile(Sequence):
    """The ranked rows of a triage run, read from its `out` file on demand (only line offsets are held);
    `calibration` is the Calibration they were scored with."""

    def __init__(self, path: Path, offsets: array, calibration: Calibration):
        self.path, self._offsets, self.calibration = path, offsets, calibration

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[k] for k in range(*index.indices(len(self)))]
        with open(self.path, "rb") as f:
            return row_at(f, self._offsets[index], SIGNALS)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with open(self.path, "rb") as f:
            for line in f:
                yield parse_row(line, SIGNALS)


def unusable_counts(counts: Mapping[str, int]) -> str:
    """How many sentences the model could not take, by reason, in words: ``"empty 2, undecodable 1"``."""
    return ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))


class TriageRows(list):
    """The ranked rows of a triage run kept in memory (a plain list) carrying the `calibration` they were scored with."""

    def __init__(self, rows: Iterable[dict[str, Any]], calibration: Calibration):
        super().__init__(rows)
        self.calibration = calibration
        self.unusable: dict[str, int] = {}


COMBINES = ("learned", "fisher")


class UsableRows:
    """The rows of `store` that the model could take (re-iterable, as `calibrate` reads them several times):
    sentences kept with an `unusable` reason are left out of calibration and of the learned fit."""

    def __init__(self, store: Iterable[dict[str, Any]]):
        self.store = store

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (r for r in self.store if not r.get("unusable"))


def fit_combination(calibration: Calibration, clean_rows: Iterable[dict[str, Any]], compute_rows: Callable[..., list],
                    *, seed: int = 0, max_per_type: int = 50) -> Calibration:
    """Fit the learned combination (`combine.fit_with_model`) on `clean_rows` and store it in `calibration`
    (`combiner`, `combine_threshold`: the q-th percentile of the clean rows' own learned scores).

    `compute_rows(items)` gives the signal rows of synthetic variants ({"source", "translation"[, "reference"]}),
    forced through the model as the run's own rows were; the variants are used for fitting only, never ranked.
    """
    from . import combine as comb_mod

    keys = ("source", "translation", "reference", *SIGNALS)
    clean = [{k: r[k] for k in keys if k in r} for r in clean_rows]
    # the prior depends on the target alone: a detached variant's (another row's translation) is known
    priors = {str(r["translation"]): r["seq_logprob"] - r["source_gain"] for r in clean
              if all(isinstance(r.get(k), float) and np.isfinite(r[k]) for k in ("seq_logprob", "source_gain"))}
    try:
        comb = comb_mod.fit_with_model(None, clean, seed=seed, max_per_type=max_per_type, alti=False,
                                       compute_rows=lambda _b, items, **_: compute_rows(items, priors))
    except ValueError as exc:  # too few rows, or none long enough for a variant: rank as Fisher does
        warnings.warn(f"no learned combination could be fitted ({exc}); ranking by Fisher's method", stacklevel=2)
        return calibration
    calibration.combine, calibration.combiner = "learned", comb.to_dict()
    own = comb.logit(clean)
    calibration.combine_threshold = float(np.percentile(np.round(own, 4), calibration.percentile))
    return calibration


def variant_rows(execute: Execute, builder: SignalRows, chunk_size: int) -> Callable[[list], list[dict[str, Any]]]:
    """Signal rows of variant items forced through the model with `execute`, in input order; `priors` (target
    text -> Seq-Logprob given an empty source) spares the source-gain pass of targets it knows."""
    def compute(variants: list[dict[str, Any]], priors: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
        items = [Item(k, k + 1, v["source"], v["translation"], None, v.get("reference")) for k, v in enumerate(variants)]
        rows: list[dict[str, Any]] = []
        run_chunks(iter_chunks(items, chunk_size), [replace(builder, known_priors=dict(priors or {}))], [rows], execute)
        return rows
    return compute


def finish_triage(store: PartialRows | list[dict[str, Any]], calibration: Calibration | None, *,
                  settings: dict[str, Any], percentile: float = 95.0,
                  out: str | os.PathLike[str] | None = None,
                  fit: Callable[[Calibration, UsableRows], Calibration] | None = None,
                  rank_by: str | None = None) -> TriageRows | RankedFile:
    """Calibrate on the rows (unless `calibration` is given; `fit` then adds the learned combination), score,
    rank: suspects first (a sentence the model could not take is always one), each group most suspect first,
    then by id. With `rank_by` (an error type, learned combination only) the rows are ranked by that type's own
    score instead: the sentences the model could not take first, then the rest, each by that score, then by id.

    Rows in a list are ranked in place and returned as TriageRows. Rows in ``<out>.partial`` are
    streamed: only their scores and offsets are held, `out` and the calibration are written atomically,
    the partial file is removed, and the ranked rows are returned as a RankedFile reading `out`.
    Either carries `unusable`: how many sentences the model could not take, by reason.
    """
    usable = UsableRows(store)
    if calibration is None:
        calibration = calibrate(usable, percentile=percentile, source="self", settings=settings)
        if fit is not None:
            calibration = fit(calibration, usable)
    check_rank_by(rank_by, calibration)
    unusable: dict[str, int] = {}
    if not isinstance(store, PartialRows):
        for row in store:
            if row.get("unusable"):
                unusable[row["unusable"]] = unusable.get(row["unusable"], 0) + 1
        scored_rows(store, calibration)
        if rank_by is None:
            store.sort(key=lambda r: (not r["suspect"], -r["score"], r["id"]))
        else:
            store.sort(key=lambda r: (not r.get("unusable"), -r["type_scores"][rank_by], r["id"]))
        for rank, row in enumerate(store, start=1):
            row["rank"] = rank
        ranked_rows = TriageRows(store, calibration)
        ranked_rows.unusable = unusable
        return ranked_rows
    scores, ids, offsets, plain = array("d"), array("q"), array("q"), array("b")
    for offset, row in store.with_offsets():
        if row.get("unusable"):
            unusable[row["unusable"]] = unusable.get(row["unusable"], 0) + 1
        score = row_score(row, calibration, rank_by)  # the score a row carries, as the list sort uses
        scores.append(score)
        plain.append(not row.get("unusable") if rank_by is not None else not is_suspect(row, score, calibration))
        ids.append(row["id"])
        offsets.append(offset)
    order = np.lexsort((np.asarray(ids), -np.asarray(scores), np.asarray(plain)))
    out = Path(out)
    write_text_atomic(calibration_path(out), calibration.to_json() + "\n")
    ranked = array("q")  # byte offset of each ranked row in `out`

    def ranked_lines() -> Iterator[str]:
        pos = 0
        with open(store.path, "rb") as src:
            for rank, k in enumerate(order.tolist(), start=1):
                row = store.row_at(src, offsets[k])
                scored_row(row, calibration)
                row["rank"] = rank
                line = row_json(row)
                ranked.append(pos)
                pos += len(line.encode("utf-8")) + 1
                yield line

    write_lines_atomic(out, ranked_lines())
    store.path.unlink(missing_ok=True)
    ranked_file = RankedFile(out, ranked, calibration)
    ranked_file.unusable = unusable
    return ranked_file


def signal_rows(bundle: ModelBundle, sources: Sequence[str], targets: Sequence[str] | None = None,
                references: Sequence[str] | None = None, *, batch_size: int = 16, beam: int = 1,
                layer: int | str = "mean", head: int | str = "mean", method: str = "shift-att",
                chunk_size: int = 256, aligner: Any = "default") -> list[dict[str, Any]]:
    """The unscored signal rows of every sentence, in input order (what triage ranks; for studies of the signals).
    `aligner`: as `run_triage`."""
    rows: list[dict[str, Any]] = []
    run_chunks(iter_chunks(items_from_lines(sources, targets, references), chunk_size),
               [SignalRows(layer, head, method, aligner=resolve_aligner(bundle, aligner))], [rows],
               local_execute(bundle, batch_size, beam))
    return rows


def resolve_aligner(bundle: ModelBundle | None, aligner: Any) -> Any:
    """The learned aligner triage reads: a LearnedAligner or None as given, else `learned.triage_aligner` of the
    path or name ("default": the embedded model's aligner when `bundle` is its model; "none"); None without a
    bundle."""
    if aligner is None or not isinstance(aligner, (str, os.PathLike)):
        return aligner
    return None if bundle is None else triage_aligner(bundle, aligner)


def run_triage(bundle: Any, sources: Sequence[str], targets: Sequence[str] | None = None,
               references: Sequence[str | None] | None = None, batch_size: int = 16,
               calibration: Calibration | None = None, *, beam: int = 1, layer: int | str = "mean",
               head: int | str = "mean", method: str = "shift-att", percentile: float = 95.0,
               out: str | os.PathLike[str] | None = None, chunk_size: int = 256,
               on_progress: Callable[[int], None] | None = None, execute: Execute | None = None,
               model_name: str | None = None, combine: str = "learned", seed: int = 0,
               max_variants: int = 50, unreadable: Mapping[int, str] | None = None,
               aligner: Any = "default", rank_by: str | None = None) -> TriageRows | RankedFile:
    """Signals, score, flags and reasons for every sentence, most suspect first.

    `combine`: how the signals make one score. "learned" (default): when calibrating on this set, a learned
    combination (`combine.Combiner`) is fitted on it against synthetic errors made from its own rows
    (`max_variants` per error type, forced through the model, never ranked), saved in the calibration; a
    given calibration must hold one. "fisher": Fisher's method over the signal families (`triage`).
    A sentence the model cannot take is kept, flagged with the reason and ranked among the suspects; so is one
    with a line that could not be read (`unreadable`: sentence index -> why, file and line named), not run.
    A reference may be None (an empty line): that row has no reference scores. `aligner`: a learned aligner for
    the model whose links give two more signals (`signals.aligner_signals`) from the same pass: a LearnedAligner,
    a folder, "default" (the embedded model's aligner when `bundle` is its model, `learned.triage_aligner`) or
    None / "none". `rank_by`: an error type (`combine.ERROR_TYPES`) to rank by its own score instead of the
    overall score (learned combination only; `finish_triage`).

    Without `calibration` the thresholds are calibrated on this set (`percentile`). With `out`, each chunk's
    rows are appended to ``<out>.partial`` as they come (a rerun resumes from it); at the end the ranked rows
    go to `out`, the calibration to ``<out stem>.calibration.json``, and the partial file is removed.
    Returns the ranked rows, with `.calibration` the Calibration used: a list (TriageRows) without `out`,
    else a RankedFile that reads them from `out` (no row is held). `execute` runs the chunks elsewhere
    (`ray_backend`); `model_name` is then the name the calibration records.
    """
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES}, not {combine!r}")
    if rank_by is not None and (rank_by not in ERROR_TYPES or combine != "learned"):
        raise ValueError(f"rank_by must be one of {ERROR_TYPES} with combine 'learned', not {rank_by!r} with "
                         f"{combine!r}: Fisher's method gives no score per error type")
    if calibration is not None:
        if combine == "learned" and calibration.combiner is None:
            raise ValueError("the calibration holds no learned combination: make it with combine 'learned' "
                             "(aligndebug triage --combine learned) or use combine 'fisher'")
        calibration.combine = combine
        check_rank_by(rank_by, calibration)  # before any pass
    items = items_from_lines(sources, targets, references, unreadable)
    aligner = resolve_aligner(bundle, aligner)
    settings = triage_settings(model_name or getattr(bundle, "name", None), method=method, layer=layer, head=head,
                               aligner=aligner_id(aligner), calibration=calibration)
    store: PartialRows | list[dict[str, Any]] = PartialRows(out, sources) if out is not None else []
    done = store.done if isinstance(store, PartialRows) else set()
    if on_progress and done:
        on_progress(len(done))
    chunks = [c for c in iter_chunks(items, chunk_size, done) if c]
    builder = SignalRows(layer, head, method, aligner=aligner)
    local = execute is None
    execute = execute or local_execute(bundle, batch_size, beam, on_progress)
    try:
        if chunks:
            run_chunks(chunks, [builder], [store], execute, None if local else on_progress)
    finally:
        if isinstance(store, PartialRows):
            store.close()
    fit = None
    if combine == "learned":
        compute = variant_rows(execute, builder, chunk_size)
        fit = lambda cal, rows: fit_combination(cal, rows, compute, seed=seed, max_per_type=max_variants)  # noqa: E731
    return finish_triage(store, calibration, settings=settings, percentile=percentile, out=out, fit=fit,
                         rank_by=rank_by)


# ------------------------------------------------------------------------------------------ both at once

def score_and_triage(bundle: ModelBundle, pairs: Sequence[SentencePair], golds: Sequence[GoldAlignment | None] | None,
                     references: Sequence[str] | None, opts: ScoreOptions, *, triage_layer: Selector = "mean",
                     percentile: float = 95.0, on_progress: Callable[[int], None] | None = None,
                     combine: str = "learned", seed: int = 0, max_variants: int = 50, aligner: Any = "default"
                     ) -> tuple[TriageRows, dict[int, dict[str, Any]], ScoreTotals]:
    """(ranked triage rows, alignment rows by pair index, corpus totals) from one forward pass per batch.

    Every pair needs its target (translate first). Alignment rows are `score_stream`'s and triage rows
    `run_triage`'s, read with `opts`' method and head and `triage_layer`, self-calibrated and ranked by
    `combine` as `run_triage` ranks (the learned combination's variants are forced after the set's rows), with
    `aligner` as there.
    """
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES}, not {combine!r}")
    if any(p.tgt_words is None for p in pairs):
        raise ValueError("every pair needs a target: translate the sources first")
    if references is not None and len(references) != len(pairs):
        raise ValueError(f"{len(pairs)} pairs but {len(references)} references: expected one reference per pair")
    refs = None if references is None else {p.index: r for p, r in zip(pairs, references)}
    items = [replace(x, reference=None if refs is None else refs[x.index])
             for x in items_from_pairs(pairs, _by_index(pairs, golds))]
    sink, signals = ScoreSink(None), []
    aligner = resolve_aligner(bundle, aligner)
    builders = [ScoreRows(opts), SignalRows(triage_layer, opts.head, opts.method, aligner=aligner)]
    run_chunks(iter_chunks(items, opts.chunk_size), builders, [sink, signals],
               local_execute(bundle, opts.batch_size, opts.beam, on_progress))
    settings = triage_settings(bundle.name, method=opts.method, layer=triage_layer, head=opts.head,
                               aligner=aligner_id(aligner))
    fit = None
    if combine == "learned":
        compute = variant_rows(local_execute(bundle, opts.batch_size, opts.beam), builders[1], opts.chunk_size)
        fit = lambda cal, rows: fit_combination(cal, rows, compute, seed=seed, max_per_type=max_variants)  # noqa: E731
    ranked = finish_triage(signals, None, settings=settings, percentile=percentile, fit=fit)
    return ranked, {r["index"]: r for r in sink.kept}, sink.totals


def _by_index(pairs: Sequence[SentencePair], golds: Sequence[GoldAlignment | None] | None):
    """`golds` given by position in `pairs`, as a mapping by pair index."""
    if golds is None:
        return None
    by = {p.index: g for p, g in zip(pairs, golds)}
    return [by.get(i) for i in range(max(by, default=-1) + 1)]
