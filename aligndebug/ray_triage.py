"""`aligndebug triage` on a Ray cluster: the same ranked rows and calibration as `triage.run_triage`.

The work is cut as a local run cuts it: the sentences still to do, `chunk_size` at a time in input
order (`triage.triage_chunks`). Each chunk goes to a pool of actors holding the model (see
`ray_backend`), which runs the very call a local run makes on it (`TriageChunk.signal_rows`:
translate, then length-bucketed batches, inside the chunk), so every row is the same, bit for bit.
Rows come back in input order; the driver appends each to ``<out>.partial`` as a local run does, then
calibrates, scores, ranks and writes with `run_triage`'s own steps, so resuming works the same way.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .models import DEFAULT_NAMES, ModelBundle
from . import ray_backend
from .ray_backend import ModelActor, Pool, map_chunks, model_arg, start_ray
from .triage import (Calibration, RankedFile, TriageRows, collect_rows, finish_triage, read_resume, triage_chunks,
                     triage_settings)


class SignalChunk(ModelActor):
    """The signal rows of one `TriageChunk` per input item (pickled, so they come back as they are)."""

    def __init__(self, model: Any, load_kwargs: dict[str, Any], options: dict[str, Any]):
        super().__init__(model, load_kwargs)
        self.options = options  # batch_size, beam, layer, head, method

    def __call__(self, items: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [pickle.dumps(row) for blob in items["chunk"]
                for row in pickle.loads(blob).signal_rows(self.bundle, **self.options)]
        return {"row": np.asarray(rows, dtype=object)}


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
                    on_progress: Callable[[int], None] | None = None) -> TriageRows | RankedFile:
    """`triage.run_triage` on Ray: the same ranked rows, calibration, files and resume.

    `model` is a name or path each actor loads (with `load_kwargs`: src_lang, tgt_lang, source_prefix),
    or an in-memory ModelBundle shipped through the object store. Actors run on `device`, by default
    'cuda' when `num_gpus_per_actor` > 0, else 'cpu'. Ray is started (or joined at `address`, or at
    $RAY_ADDRESS) unless it is already initialised, and only when some sentence is still to do.
    """
    ray = ray_backend.require_ray()
    settings = triage_settings(_model_name(model), method=method, layer=layer, head=head, calibration=calibration)
    store, todo = read_resume(out, sources)
    chunks = [pickle.dumps(c) for c in triage_chunks(sources, targets, references, todo, chunk_size)]
    stream = None
    if chunks:
        pool = Pool(num_actors, num_cpus_per_actor, num_gpus_per_actor)
        start_ray(ray, address, pool)
        device = device or ("cuda" if num_gpus_per_actor > 0 else "cpu")
        options = dict(batch_size=batch_size, beam=beam, layer=layer, head=head, method=method)
        ctor = {"model": model_arg(ray, model), "load_kwargs": {"device": device, **(load_kwargs or {})},
                "options": options}
        stream = (pickle.loads(bytes(blob)) for part in map_chunks(ray, SignalChunk, chunks, ctor, pool)
                  for blob in part["row"])
    collect_rows(stream, store, on_progress)
    return finish_triage(store, calibration, settings=settings, percentile=percentile, out=out)
