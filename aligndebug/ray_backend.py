"""The one runner (`runner`) on a Ray cluster (`pip install aligndebug[ray]`): the same rows, files and resume.

Work is cut as a local run cuts it (`runner.iter_chunks`: input order, `chunk_size` sentences, done ones
left out), and each chunk goes to a pool of actors holding the model (on a GPU when `num_gpus_per_actor`
> 0), which run the very call a local run makes on it (`runner.run_chunk`), so a chunk is translated,
batched, padded and reduced the same way and every row is the same as a local run's. Results come back
in input order and go to the same stores as a local run's.

What an actor is handed for a chunk: for `score` read from files, where the chunk starts in each input
file (a `ChunkSpec`: the driver checks the input in one streaming pass and notes byte offsets, and the
actor reads the chunk, and its gold, straight from the files); for sentences already in memory (triage),
the chunk's Items themselves.

On a multi-node cluster the input files (and a model given by path) must be readable at the same path
on every node, e.g. on a shared file system; the model may also be a Hugging Face id cached on each node.
"""

from __future__ import annotations

import itertools
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Iterator

import numpy as np

from .errors import PathLike
from .gold import GoldPosition, GoldStream
from .models import DEFAULT_NAMES, ModelBundle, ModelLoadError, load_model
from .pairs import SentencePair, iter_lines_flagged, iter_pairs, join_reasons, pair_of_line, pair_of_lines
from .rows import ScoreOptions, ScoreTotals
from .runner import (ChunkResult, Item, RankedFile, RowBuilder, ScoreSink, TriageRows, items_from_pairs,
                     resolve_aligner, run_chunk, run_chunks, run_triage, score_rows)
from .triage import Calibration


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:  # the extra is optional
        raise ImportError("scoring on Ray needs Ray Data: pip install 'aligndebug[ray]'") from exc
    return ray


# ---------------------------------------------------------------------------------- chunks of input

@dataclass(frozen=True)
class ChunkSpec:
    """Where one chunk starts in each input file, and which of its sentences are already done."""

    chunk: int
    first_index: int
    first_line: int
    n: int
    src: str | None
    tgt: str | None
    pairs: str | None
    offsets: tuple[int, ...]  # byte offset of the chunk's first line in each file (src, tgt) or (pairs,)
    skip: frozenset[int] = field(default_factory=frozenset)
    gold_start: GoldPosition | None = None  # where the chunk's first sentence starts in the gold file
    keep_bad: bool = False  # empty and unreadable lines are read as `iter_pairs` keeps them (for --skip-invalid)

    def read(self, gold: GoldStream | None = None) -> list[Item]:
        """The chunk's sentences still to do, with their gold read from `gold` (the stream `plan_chunks` was given)."""
        pairs = read_chunk(self)
        golds = None if gold is None else gold.iter_from(self.gold_start, self.n)  # one per pair, in order
        return [x for x in items_from_pairs(pairs, golds) if x.index not in self.skip]


def _line_offsets(path: str, every: int) -> list[int]:
    """Byte offset of lines 0, every, 2*every, ... of `path` (one streaming pass, no decoding)."""
    out, pos = [], 0
    with open(path, "rb") as f:
        for k, line in enumerate(f):
            if k % every == 0:
                out.append(pos)
            pos += len(line)
    return out


def plan_chunks(src: PathLike | None = None, tgt: PathLike | None = None, pairs: PathLike | None = None,
                chunk_size: int = 256, done: set[int] | frozenset[int] = frozenset(),
                gold: GoldStream | None = None, keep_bad: bool = False) -> list[ChunkSpec]:
    """Check every input line (raising the reader's InputError) and cut the input into chunk specs.

    Chunks whose sentences are all in `done` are left out; the others carry the done ones to skip,
    and, with a `gold` (already checked against these pairs), where the chunk starts in the gold file.
    `keep_bad`: empty and unreadable lines are kept, as `iter_pairs` keeps them (the run skips them).
    """
    n = sum(1 for _ in iter_pairs(src_path=src, tgt_path=tgt, pairs_path=pairs, allow_empty=keep_bad,
                                  keep_unreadable=keep_bad))  # validates, streaming
    files = [os.fspath(p) for p in ((pairs,) if pairs is not None else (src, tgt)) if p is not None]
    offsets = [_line_offsets(f, chunk_size) for f in files]
    gold_starts = gold.positions(chunk_size) if gold is not None else None
    specs = []
    for k, first in enumerate(range(0, n, chunk_size)):
        size = min(chunk_size, n - first)
        skip = frozenset(i for i in range(first, first + size) if i in done)
        if len(skip) == size:
            continue
        specs.append(ChunkSpec(k, first, first + 1, size, None if src is None else os.fspath(src),
                               None if tgt is None else os.fspath(tgt), None if pairs is None else os.fspath(pairs),
                               tuple(o[k] for o in offsets), skip, None if gold_starts is None else gold_starts[k],
                               keep_bad))
    return specs


def _lines_at(path: str, offset: int, first_line: int, n: int, keep: bool) -> Iterator[tuple[int, str, str | None]]:
    """`n` lines of `path` from byte `offset`, read as `pairs.iter_pairs` reads them (`iter_lines_flagged`)."""
    return itertools.islice(iter_lines_flagged(path, offset, first_line, keep=keep), n)


def read_chunk(spec: ChunkSpec) -> list[SentencePair]:
    """The chunk's sentence pairs, split exactly as `pairs.iter_pairs` splits them."""
    keep = spec.keep_bad
    if spec.pairs is not None:
        return [pair_of_line(spec.pairs, spec.first_index + k, lineno, text, keep, why)
                for k, (lineno, text, why) in enumerate(_lines_at(spec.pairs, spec.offsets[0], spec.first_line,
                                                                   spec.n, keep))]
    out = []
    src_lines = _lines_at(spec.src, spec.offsets[0], spec.first_line, spec.n, keep)
    tgt_lines = _lines_at(spec.tgt, spec.offsets[1], spec.first_line, spec.n, keep) if spec.tgt is not None else None
    for k, (lineno, s, why) in enumerate(src_lines):
        t, t_why = (None, None) if tgt_lines is None else next(tgt_lines)[1:]
        out.append(pair_of_lines(spec.src, spec.tgt, spec.first_index + k, lineno, s, t, keep, join_reasons(why, t_why)))
    return out


# -------------------------------------------------------------------------------------------- actors

@dataclass(frozen=True)
class SavedBundle:
    """An in-memory ModelBundle as its `save_pretrained` files (safetensors weights, config, tokenizer) and
    settings, for the object store.

    A pickled model is no use in a fresh process with transformers 5: once it has run, its output-capturing
    hooks hold a ContextVar (which cannot be pickled), and the registry of which outputs each model class
    records is filled only by a model's __init__, so an unpickled model returns no attentions. Saved and
    loaded again with `load_model`, the copy is the model itself: same weights, same eager attention.
    """

    files: dict[str, bytes]
    name: str
    src_lang: str | None
    tgt_lang: str | None
    source_prefix: str

    @classmethod
    def of(cls, bundle: ModelBundle) -> "SavedBundle":
        with tempfile.TemporaryDirectory() as tmp:
            bundle.model.save_pretrained(tmp)
            bundle.tokenizer.save_pretrained(tmp)
            files = {p.relative_to(tmp).as_posix(): p.read_bytes() for p in Path(tmp).rglob("*") if p.is_file()}
        return cls(files, bundle.name, bundle.src_lang, bundle.tgt_lang, bundle.source_prefix)

    def load(self, device: str = "cpu") -> ModelBundle:
        with tempfile.TemporaryDirectory() as tmp:
            for rel, data in self.files.items():
                path = Path(tmp, rel)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            bundle = load_model(tmp, device=device, src_lang=self.src_lang, tgt_lang=self.tgt_lang,
                                source_prefix=self.source_prefix)
        bundle.name = self.name
        return bundle


class ModelActor:
    """A Ray Data actor holding the model, loaded once: by name or path (with `load_kwargs`), from the object
    store (a SavedBundle, loaded on `load_kwargs["device"]`), or a ModelBundle given in-process (tests)."""

    def __init__(self, model: Any, load_kwargs: dict[str, Any]):
        import ray

        if isinstance(model, ray.ObjectRef):
            model = ray.get(model)
        if isinstance(model, SavedBundle):
            model = model.load(load_kwargs.get("device", "cpu"))
        self.bundle: ModelBundle = model if isinstance(model, ModelBundle) else load_model(model, **load_kwargs)


class ChunkRunner(ModelActor):
    """Runs `runner.run_chunk` on one chunk per input item (a pickled ChunkSpec or list of Items); returns
    the pickled ChunkResult."""

    def __init__(self, model: Any, load_kwargs: dict[str, Any], builders: list[RowBuilder], batch_size: int = 16,
                 beam: int = 1, gold: GoldStream | None = None):
        super().__init__(model, load_kwargs)
        self.builders, self.batch_size, self.beam = builders, batch_size, beam
        self.gold = gold  # read from the file, chunk by chunk: no actor holds the whole gold set

    def __call__(self, items: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for blob in items["chunk"]:
            payload = pickle.loads(blob)
            todo = payload.read(self.gold) if isinstance(payload, ChunkSpec) else payload
            out.append(pickle.dumps((len(todo), run_chunk(self.bundle, todo, self.builders, self.batch_size,
                                                          self.beam))))
        return {"result": np.asarray(out, dtype=object)}


# ------------------------------------------------------------------------------------------- driver

@dataclass(frozen=True)
class Pool:
    """How many model-holding actors, and the CPUs and GPUs each one takes."""

    actors: int = 2
    cpus: float = 1.0
    gpus: float = 0.0


def check_resources(have: dict[str, float], pool: Pool) -> None:
    """A pool the cluster cannot hold would wait forever for its actors: say so instead."""
    if pool.actors < 1:
        raise ValueError(f"num_actors must be at least 1, not {pool.actors}")
    for name, per in (("CPU", pool.cpus), ("GPU", pool.gpus)):
        need = pool.actors * per
        if per and have.get(name, 0.0) < need:
            raise ValueError(f"the Ray cluster has {have.get(name, 0.0):g} {name}s, but {pool.actors} actors x {per:g} "
                             f"{name} each need {need:g}; use fewer actors (--ray-actors) or fewer {name}s per actor"
                             + (" (--ray-gpus-per-actor 0 for CPU actors)" if name == "GPU" else ""))


def start_ray(ray: Any, address: str | None, pool: Pool) -> None:
    """Start Ray (or join `address`, or $RAY_ADDRESS) unless it is running, and check it can hold `pool`."""
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False)
    check_resources(ray.cluster_resources(), pool)


def model_arg(ray: Any, model: str | ModelBundle) -> Any:
    """What the actors are given: a name or path to load, or an in-memory bundle saved to the object store."""
    return ray.put(SavedBundle.of(model)) if isinstance(model, ModelBundle) else str(model)


def map_chunks(ray: Any, actor: type, items: list[bytes], ctor: dict[str, Any], pool: Pool) -> Iterator[dict[str, np.ndarray]]:
    """Run `actor` (built with `ctor`) over the pickled chunk `items` on a pool of actors; yields each chunk's
    output in input order. What an actor raised (a bad line, layer or sentence) reaches the caller as itself."""
    ctx = ray.data.DataContext.get_current()
    saved = ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.raise_original_map_exception
    ctx.execution_options.preserve_order = True  # outputs come back (and are written) in input order
    ctx.enable_progress_bars = False  # the CLI has its own progress bar
    ctx.raise_original_map_exception = True  # the actor's own exception, not Ray Data's wrapper
    try:
        ds = ray.data.from_items([{"chunk": it} for it in items], override_num_blocks=len(items))
        ds = ds.map_batches(
            actor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(pool.actors, len(items))),
            num_gpus=pool.gpus or None, num_cpus=pool.cpus, udf_modifying_row_count=True, fn_constructor_kwargs=ctor)
        try:
            yield from ds.iter_batches(batch_size=None, batch_format="numpy")
        except Exception as exc:  # noqa: BLE001 - Ray may still wrap what the actor raised
            raise _actor_error(exc) from exc
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.raise_original_map_exception = saved


def _actor_error(exc: BaseException) -> BaseException:
    """The user's error (a ValueError such as InputError, or a ModelLoadError) out of Ray's wrappers."""
    seen: BaseException | None = exc
    for _ in range(8):  # wrappers nest a few levels at most
        if seen is None:
            break
        if isinstance(seen, (ValueError, ModelLoadError)) and not type(seen).__module__.startswith("ray"):
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    return exc


@dataclass
class RayExecute:
    """A `runner.Execute` that runs chunks on a pool of actors (started, or joined, on first use)."""

    model: str | ModelBundle
    pool: Pool
    device: str | None = None
    load_kwargs: dict[str, Any] = field(default_factory=dict)
    address: str | None = None
    batch_size: int = 16
    beam: int = 1
    gold: GoldStream | None = None

    def __call__(self, chunks, builders) -> Iterator[ChunkResult]:
        payloads = [pickle.dumps(c) for c in chunks]
        if not payloads:
            return
        ray = require_ray()
        start_ray(ray, self.address, self.pool)
        device = self.device or ("cuda" if self.pool.gpus > 0 else "cpu")
        ctor = {"model": model_arg(ray, self.model), "load_kwargs": {"device": device, **self.load_kwargs},
                "builders": list(builders), "batch_size": self.batch_size, "beam": self.beam, "gold": self.gold}
        for part in map_chunks(ray, ChunkRunner, payloads, ctor, self.pool):
            for blob in part["result"]:
                yield pickle.loads(bytes(blob))


def score_with_ray(model: str | ModelBundle, *, src: PathLike | None = None, tgt: PathLike | None = None,
                   pairs: PathLike | None = None, gold: GoldStream | None = None,
                   opts: ScoreOptions | None = None, out_path: Path | None = None, resume: bool = False,
                   num_actors: int = 2, num_gpus_per_actor: float = 0.0, num_cpus_per_actor: float = 1.0,
                   device: str | None = None, load_kwargs: dict[str, Any] | None = None, address: str | None = None,
                   on_progress: Callable[[int], None] | None = None) -> tuple[ScoreTotals, Iterator[dict] | None]:
    """Score a test set on Ray; same rows, totals and return value as `runner.score_stream`.

    `model` is a name or path each actor loads (with `load_kwargs`: src_lang, tgt_lang, source_prefix),
    or an in-memory ModelBundle shipped through the object store. Actors run on `device`, by default
    'cuda' when `num_gpus_per_actor` > 0, else 'cpu'. Ray is started (or joined at `address`, or at
    $RAY_ADDRESS) unless it is already initialised. `gold` (from `gold.scan_gold`, or a GoldSet) is read by
    the actors from its file, chunk by chunk, like the pairs.
    """
    require_ray()
    opts = opts or ScoreOptions()
    if out_path is not None:
        out_path = Path(out_path)
    with ScoreSink(out_path, resume) as sink:
        specs = plan_chunks(src, tgt, pairs, opts.chunk_size, sink.done, gold, keep_bad=opts.skip_invalid)
        if on_progress and sink.done:
            on_progress(len(sink.done))
        execute = RayExecute(model, Pool(num_actors, num_cpus_per_actor, num_gpus_per_actor), device,
                             dict(load_kwargs or {}), address, opts.batch_size, opts.beam, gold)
        run_chunks(specs, [score_rows(opts)], [sink], execute, on_progress)
    return sink.totals, sink.rows()


def _model_name(model: str | ModelBundle) -> str:
    """The name `load_model` gives the bundle (what the calibration's settings record)."""
    if isinstance(model, ModelBundle):
        return model.name
    return "default" if model in DEFAULT_NAMES else str(model)


def triage_with_ray(model: str | ModelBundle, sources: Sequence[str], targets: Sequence[str] | None = None,
                    references: Sequence[str] | None = None, *, batch_size: int = 16,
                    calibration: Calibration | None = None, beam: int = 1, layer: int | str = "mean",
                    head: int | str = "mean", method: str = "shift-att", percentile: float = 95.0,
                    out: str | os.PathLike[str] | None = None, chunk_size: int = 256, num_actors: int = 2,
                    num_gpus_per_actor: float = 0.0, num_cpus_per_actor: float = 1.0, device: str | None = None,
                    load_kwargs: dict[str, Any] | None = None, address: str | None = None,
                    on_progress: Callable[[int], None] | None = None, combine: str = "learned", seed: int = 0,
                    unreadable: Mapping[int, str] | None = None, aligner: Any = "default",
                    rank_by: str | None = None) -> TriageRows | RankedFile:
    """`runner.run_triage` on Ray: the same ranked rows, calibration, files and resume.

    `model` is a name or path each actor loads (with `load_kwargs`), or an in-memory ModelBundle shipped
    through the object store; see `score_with_ray`. Ray is started only when some sentence is still to do.
    `aligner` (and `rank_by`): as `run_triage`; a name or folder is checked against the model here, in the driver (which loads
    the model on the CPU for that when given its name), and the aligner goes to the actors with the row builder.
    """
    require_ray()
    if isinstance(aligner, (str, os.PathLike)) and str(aligner) != "none":
        driver = model if isinstance(model, ModelBundle) else load_model(model, **dict(load_kwargs or {}))
        aligner = resolve_aligner(driver, aligner)
    execute = RayExecute(model, Pool(num_actors, num_cpus_per_actor, num_gpus_per_actor), device,
                         dict(load_kwargs or {}), address, batch_size, beam)
    return run_triage(None, sources, targets, references, batch_size, calibration, beam=beam, layer=layer, head=head,
                      method=method, percentile=percentile, out=out, chunk_size=chunk_size, on_progress=on_progress,
                      execute=execute, model_name=_model_name(model), combine=combine, seed=seed,
                      unreadable=unreadable, aligner=aligner, rank_by=rank_by)
