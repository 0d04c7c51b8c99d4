"""A test set scored and triaged in one pass: what the app's test-set page shows.

`batch.score_stream` (alignment scores against gold) and `triage.run_triage` (error signals) each run
the model over the set; a caller that wants both, for a set small enough to look at, runs it once here:
every Record feeds both the alignment row and the signal row before it is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .align import Selector
from .batch import ScoreOptions, ScoreTotals, sentence_row
from .extract import iter_extract
from .gold import GoldAlignment
from .models import ModelBundle
from .pairs import SentencePair
from .triage import TriageRows, finish_triage, signal_row, triage_settings


def score_and_triage(bundle: ModelBundle, pairs: Sequence[SentencePair], golds: Sequence[GoldAlignment | None] | None,
                     references: Sequence[str] | None, opts: ScoreOptions, *, triage_layer: Selector = "mean",
                     percentile: float = 95.0,
                     on_progress: Callable[[int], None] | None = None) -> tuple[TriageRows, dict[int, dict[str, Any]], ScoreTotals]:
    """(ranked triage rows, alignment rows by pair index, corpus totals) from one forward pass per batch.

    Every pair needs its target (translate first). Alignment rows are `batch.sentence_row`'s and triage
    rows `triage.signal_row`'s, read with `opts`' method and head and `triage_layer`, self-calibrated.
    """
    if any(p.tgt_words is None for p in pairs):
        raise ValueError("every pair needs a target: translate the sources first")
    if references is not None and len(references) != len(pairs):
        raise ValueError(f"{len(pairs)} pairs but {len(references)} references: expected one reference per pair")
    totals, aligned, signals = ScoreTotals(), {}, []
    for i, rec in iter_extract(bundle, [p.src_words for p in pairs], [p.tgt_words for p in pairs],
                               batch_size=opts.batch_size, keep=("cross",)):
        pair = pairs[i]
        row = sentence_row(rec, pair, golds[i] if golds is not None and i < len(golds) else None, opts, bundle)
        totals.add_row(row)
        aligned[pair.index] = row
        signals.append(signal_row(rec, pair.index, pair.source, None if references is None else references[i],
                                  layer=triage_layer, head=opts.head, method=opts.method))
        if on_progress:
            on_progress(1)
    settings = triage_settings(bundle.name, method=opts.method, layer=triage_layer, head=opts.head)
    return finish_triage(signals, None, settings=settings, percentile=percentile), aligned, totals
