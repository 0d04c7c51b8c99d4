"""`aligndebug triage` on a Ray cluster: the same ranked rows and calibration as `triage.run_triage`.

Which sentences share a batch changes the floats (padding changes the kernels' shapes and summation
order, and greedy decoding can follow), so chunks are cut at the batch boundaries of a local run:

1. *plan*: a local run first translates the sentences still to do (when no targets are given) in
   batches of `extract.translate`'s size, longest source first, then measures each pair in tokens.
   The driver sorts the sources by length exactly so, cuts that order into chunks of whole
   translation batches, and a pool of actors translates each chunk and measures its pairs (with
   targets given they only measure, in input order).
2. *signals*: the driver sorts the pairs by token length as `extract.length_batches` does, cuts that
   order into chunks of whole `batch_size` batches, and a second pool runs `triage.iter_signal_rows`
   (the very function of a local run) on each chunk; since a chunk comes already sorted, its own
   sort keeps it and its batches are the local run's.

When all the sentences still to do fit in one chunk there is nothing to plan: one actor makes the
local run's very call. Each actor loads the model once (a name or path, as for
`ray_backend.ChunkScorer`, or an in-memory ModelBundle shipped through the object store as a
`SavedBundle`); the two stages are two pools, so an actor slot loads the model twice in all. Rows
come back in the local run's order and the driver appends each one to ``<out>.partial`` as it
arrives, then calibrates, scores, ranks and writes with the steps of `run_triage` itself
(`triage.read_resume`, `collect_rows`, `finish_triage`), so a rerun resumes the same way and the
results are the same, row for row and bit for bit.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import ray_backend
from .extract import SentenceError, encode_pair, length_batches, translate
from .models import DEFAULT_NAMES, ModelBundle, load_model
from .triage import (Calibration, TriageRows, collect_rows, finish_triage, iter_signal_rows, read_resume,
                     triage_settings)

# the batch size a local run translates with (iter_extract leaves translate's default)
TRANSLATE_BATCH: int = inspect.signature(translate).parameters["batch_size"].default


# -------------------------------------------------------------------------------------------- actors

@dataclass(frozen=True)
class SavedBundle:
    """An in-memory ModelBundle as its `save_pretrained` files (safetensors weights, config, generation
    config, tokenizer) and settings, for the object store.

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


class _ModelActor:
    """Loads the model once per actor: by name or path (with `load_kwargs`), or from the object store
    (a SavedBundle, loaded on `load_kwargs["device"]`)."""

    def __init__(self, model: Any, load_kwargs: dict[str, Any]):
        import ray

        if isinstance(model, ray.ObjectRef):
            model = ray.get(model)
        if isinstance(model, SavedBundle):
            model = model.load(load_kwargs.get("device", "cpu"))
        self.bundle: ModelBundle = model if isinstance(model, ModelBundle) else load_model(model, **load_kwargs)


@contextlib.contextmanager
def _sentence_ids(ids: Sequence[int]) -> Iterator[None]:
    """A SentenceError names the sentence by its position in the chunk: name it by its id instead
    (as a plain ValueError, which pickles back to the driver)."""
    try:
        yield
    except SentenceError as exc:
        raise ValueError(f"sentence {ids[exc.index]}: {exc.reason}") from None


class PlanChunk(_ModelActor):
    """Stage 1: translate a chunk (when it has no targets) and measure each pair's length in tokens."""

    def __init__(self, model: Any, load_kwargs: dict[str, Any], beam: int):
        super().__init__(model, load_kwargs)
        self.beam = beam

    def __call__(self, items: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids, translations, lengths = [], [], []
        for blob in items["chunk"]:
            chunk = pickle.loads(blob)
            sources, targets = chunk["sources"], chunk["targets"]
            with _sentence_ids(chunk["ids"]):
                if targets is None:  # as extract.iter_extract does (translate checks the sources first)
                    targets = translations_here = translate(self.bundle, sources, beam=self.beam)
                else:
                    translations_here = [""] * len(sources)  # not needed: the driver has the targets
                encoded = [encode_pair(self.bundle, s, t, k) for k, (s, t) in enumerate(zip(sources, targets))]
            ids += chunk["ids"]
            translations += translations_here
            lengths += [len(e.src_ids) + len(e.label_ids) for e in encoded]  # iter_extract's batching key
        return {"id": np.asarray(ids, dtype=np.int64), "translation": np.asarray(translations, dtype=object),
                "length": np.asarray(lengths, dtype=np.int64)}


class SignalChunk(_ModelActor):
    """Stage 2: `triage.iter_signal_rows` on a chunk of whole batches; rows come back pickled, as they are."""

    def __init__(self, model: Any, load_kwargs: dict[str, Any], options: dict[str, Any]):
        super().__init__(model, load_kwargs)
        self.options = options  # batch_size, beam, layer, head, method

    def __call__(self, items: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = []
        for blob in items["chunk"]:
            chunk = pickle.loads(blob)
            with _sentence_ids(chunk["ids"]):
                rows += [pickle.dumps(row) for row in iter_signal_rows(
                    self.bundle, chunk["sources"], chunk["targets"], chunk["references"], ids=chunk["ids"],
                    **self.options)]
        return {"row": np.asarray(rows, dtype=object)}


# ------------------------------------------------------------------------------------------- driver

def _model_name(model: str | ModelBundle | None) -> str:
    """The name `load_model` gives the bundle (what the calibration's settings record)."""
    if isinstance(model, ModelBundle):
        return model.name
    return "default" if model in DEFAULT_NAMES else str(model)


def _chunks(order: list[int], batch: int, chunk_size: int) -> list[list[int]]:
    """`order` cut into chunks of whole batches of `batch` (about `chunk_size` sentences each)."""
    step = max(1, math.ceil(chunk_size / batch)) * batch
    return [order[k: k + step] for k in range(0, len(order), step)]


def _in_batch_order(ids: list[int], lengths: Sequence[int], batch: int) -> list[int]:
    """`ids` in the order `extract.length_batches` puts them (longest first, ties in input order)."""
    return [ids[k] for b in length_batches(lengths, batch) for k in b]


def _map_chunks(ray: Any, actor: type, items: list[dict[str, Any]], ctor: dict[str, Any],
                pool: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
    """Run `actor` over the chunk `items` on a pool of actors; yields each chunk's output, in order."""
    ds = ray.data.from_items([{"chunk": pickle.dumps(it)} for it in items], override_num_blocks=len(items))
    ds = ds.map_batches(
        actor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(pool["num_actors"], len(items))),
        num_gpus=pool["num_gpus"] or None, num_cpus=pool["num_cpus"], udf_modifying_row_count=True,
        fn_constructor_kwargs=ctor)
    try:
        yield from ds.iter_batches(batch_size=None, batch_format="numpy")
    except Exception as exc:  # noqa: BLE001 - Ray wraps what the actor raised; give the user that
        raise _user_error(exc) from exc


def _user_error(exc: BaseException) -> BaseException:
    """What an actor raised (a bad sentence or layer: a ValueError; a model that cannot load), out of
    Ray's wrapper (`RayTaskError.cause`), so the CLI reports it as it would a local run's."""
    from .models import ModelLoadError

    seen: BaseException | None = exc
    for _ in range(8):  # wrappers nest a few levels at most
        if seen is None:
            break
        if isinstance(seen, (ValueError, ModelLoadError)) and not type(seen).__module__.startswith("ray"):
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    return exc


def _ray_rows(ray: Any, model: str | ModelBundle, sources: Sequence[str], targets: Sequence[str] | None,
              references: Sequence[str] | None, todo: list[int], *, batch_size: int, beam: int,
              layer: int | str, head: int | str, method: str, chunk_size: int, pool: dict[str, Any],
              device: str, load_kwargs: dict[str, Any], address: str | None) -> Iterator[dict[str, Any]]:
    """The signal rows of the sentences `todo`, in a local run's order, computed on Ray."""
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False)
    ray_backend.check_resources(ray.cluster_resources(), pool["num_actors"], pool["num_cpus"], pool["num_gpus"])
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars,
             ctx.raise_original_map_exception)  # put back when done
    ctx.execution_options.preserve_order = True  # chunks come back in the order they were cut
    ctx.enable_progress_bars = False  # the CLI has its own progress bar
    ctx.raise_original_map_exception = True  # an actor's ValueError, not Ray Data's UserCodeException
    try:
        model_arg = ray.put(SavedBundle.of(model)) if isinstance(model, ModelBundle) else str(model)
        load = {"device": device, **load_kwargs}

        translation: dict[int, str] | None = None
        if len(todo) <= chunk_size:  # one chunk: the local run's very call, in input order; nothing to plan
            chunks = [todo]
        else:
            # 1. plan: translations (chunks of the local run's translation batches) and lengths in tokens
            if targets is None:
                plan = _chunks(_in_batch_order(todo, [len(sources[i]) for i in todo], TRANSLATE_BATCH),
                               TRANSLATE_BATCH, chunk_size)
            else:
                plan = _chunks(todo, 1, chunk_size)
            items = [{"ids": c, "sources": [sources[i] for i in c],
                      "targets": None if targets is None else [targets[i] for i in c]} for c in plan]
            length, translation = {}, {}
            ctor = {"model": model_arg, "load_kwargs": load, "beam": beam}
            for part in _map_chunks(ray, PlanChunk, items, ctor, pool):
                for i, t, n in zip(part["id"].tolist(), part["translation"], part["length"].tolist()):
                    length[i], translation[i] = n, str(t)
            # 2. chunks of the local run's forward batches
            chunks = _chunks(_in_batch_order(todo, [length[i] for i in todo], batch_size), batch_size, chunk_size)
        forced = targets if targets is not None else translation  # indexed by id; None: the actor translates
        items = [{"ids": c, "sources": [sources[i] for i in c],
                  "targets": None if forced is None else [forced[i] for i in c],
                  "references": None if references is None else [references[i] for i in c]} for c in chunks]
        options = {"batch_size": batch_size, "beam": beam, "layer": layer, "head": head, "method": method}
        for part in _map_chunks(ray, SignalChunk, items,
                                {"model": model_arg, "load_kwargs": load, "options": options}, pool):
            for blob in part["row"]:
                yield pickle.loads(bytes(blob))
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.raise_original_map_exception = saved


def triage_with_ray(model: str | ModelBundle, sources: Sequence[str], targets: Sequence[str] | None = None,
                    references: Sequence[str] | None = None, *, batch_size: int = 16,
                    calibration: Calibration | None = None, beam: int = 1, layer: int | str = "mean",
                    head: int | str = "mean", method: str = "shift-att", percentile: float = 95.0,
                    out: str | os.PathLike[str] | None = None, chunk_size: int = 256, num_actors: int = 2,
                    num_gpus_per_actor: float = 0.0, num_cpus_per_actor: float = 1.0, device: str | None = None,
                    load_kwargs: dict[str, Any] | None = None, address: str | None = None,
                    on_progress: Callable[[int], None] | None = None) -> TriageRows:
    """`triage.run_triage` on Ray: the same ranked rows, calibration, files and resume.

    `model` is a name or path each actor loads (with `load_kwargs`: src_lang, tgt_lang, source_prefix),
    or an in-memory ModelBundle shipped through the object store. Actors run on `device`, by default
    'cuda' when `num_gpus_per_actor` > 0, else 'cpu'. A chunk holds about `chunk_size` sentences (whole
    batches); ``<out>.partial`` grows as chunks finish. Ray is started (or joined at `address`, or at
    $RAY_ADDRESS) unless it is already initialised, and only when some sentence is still to do.
    """
    ray = ray_backend.require_ray()
    if num_actors < 1:
        raise ValueError(f"num_actors must be at least 1, not {num_actors}")
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be at least 1, not {batch_size} and {chunk_size}")
    for what, lines in (("targets", targets), ("references", references)):
        if lines is not None and len(lines) != len(sources):
            raise ValueError(f"{len(sources)} sources but {len(lines)} {what}: expected one {what[:-1]} per source")
    settings = triage_settings(_model_name(model), method=method, layer=layer, head=head, calibration=calibration)
    rows, todo = read_resume(out, sources)
    stream = None
    if todo:
        pool = {"num_actors": num_actors, "num_gpus": num_gpus_per_actor, "num_cpus": num_cpus_per_actor}
        stream = _ray_rows(ray, model, sources, targets, references, todo, batch_size=batch_size, beam=beam,
                           layer=layer, head=head, method=method, chunk_size=chunk_size, pool=pool,
                           device=device or ("cuda" if num_gpus_per_actor > 0 else "cpu"),
                           load_kwargs=dict(load_kwargs or {}), address=address)
    collect_rows(stream, rows, out, calibration, on_progress)
    return finish_triage(rows, calibration, settings=settings, percentile=percentile, out=out)
