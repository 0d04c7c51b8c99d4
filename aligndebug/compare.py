"""Compare models or checkpoints on one test set: did a change make alignment (and translation) better or worse?

Every model sees the same sentence pairs and gold. For each model and sentence one row is measured:

* alignment counts (|A|, |S|, |A∩S|, |A∩P|) for every decoder layer x head and every layer's head mean,
  from the teacher-forced pass over the *reference* (the gold indexes its words);
* Seq-Logprob of the reference (mean log-probability of its tokens, as `signals.seq_logprob`);
* the model's own translation (greedy or beam), its sacreBLEU sufficient statistics for BLEU and chrF
  against the reference, and its triage signals (`rows.signal_row` on a teacher-forced pass over it).

Rows stream to a JSONL file model by model (`run_compare`): a model is loaded, its rows appended, then
it is dropped before the next is loaded, so peak memory is that of the largest model, not the sum. A
rerun with `resume=True` skips finished models and the sentences already written for an unfinished one.

Everything after that is pure and reads only the rows (`summarize`):

* the chosen layer per model (an index, or ``"best"``: the lowest corpus AER for the chosen head);
* corpus AER/precision/recall/F1, the layer x head AER grid, BLEU, chrF, mean Seq-Logprob;
* triage scores of every model on the *first* model's scale: the learned combination fitted on its rows
  (`fit_triage`, while it is loaded: its synthetic errors are forced through it; stored in its "model" line) or,
  with ``combine="fisher"``, Fisher's method against its calibration;
* paired bootstrap resampling over sentences of the differences against the first model, as
  sacreBLEU's ``--paired-bs`` (`sacrebleu.significance._paired_bs_test`): the same resample indices
  (``numpy.random.default_rng(seed).choice(n, (B, n))``), corpus scores recomputed from summed
  sufficient statistics for every resample, the 95% interval read at sorted positions B//40 and
  B - B//40 - 1 (sacreBLEU's `estimate_ci`), and p = (1 + #{b: |d_b| - mean|d| >= |d_obs|}) / (B + 1).
  The one deviation: sacreBLEU counts ``>``; ``>=`` is used here so that a zero observed difference
  (identical systems) has p = 1, not 1/(B+1). For any non-zero difference the two agree (ties have
  measure zero; the tests check it against sacreBLEU's own function);
* per-sentence deltas ranked: where alignment got worse the most, where the triage score rose the most.
"""

from __future__ import annotations

import functools
import gc
import html
import json
import math
import os
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .align import align_grid, default_layer
from .errors import InputError
from .extract import SentenceError, iter_extract, translate
from .gold import GoldAlignment
from .metrics import AlignmentCounts, AlignmentSignature, count_links
from .models import load_model
from .pairs import SentencePair
from .rows import signal_reducer, signal_row
from .signals import logprob_positions, seq_logprob
from .store import json_safe
from .triage import calibrate, triage_row, triage_settings

DEFAULT_SEED = 12345  # sacreBLEU's default (SACREBLEU_SEED)
COUNTS = ("predicted", "sure", "pred_and_sure", "pred_and_possible")


@dataclass(frozen=True)
class CompareOptions:
    """Every setting behind a comparison (all of them go into its signature)."""

    method: str = "shift-att"
    layer: int | str | None = None  # an index (negative from the end), "best", or None: each model's middle-upper layer
    head: int | str = "mean"
    beam: int = 1
    batch_size: int = 16
    chunk_size: int = 256
    bootstrap: int = 1000
    seed: int = DEFAULT_SEED
    triage_layer: int | str = "mean"  # the layer triage signals read (as `aligndebug triage`)
    percentile: float = 95.0  # triage calibration percentile
    translate: bool = True  # False: alignment only (no translations, BLEU/chrF or triage)
    # how triage signals make one score: "learned" (as `aligndebug triage`: fitted without labels on the first
    # model's rows and synthetic errors made from them, forced through that model) or "fisher" (Fisher's method)
    combine: str = "learned"

    def __post_init__(self) -> None:
        if self.method not in ("shift-att", "naive"):
            raise ValueError(f"method must be 'shift-att' or 'naive', not {self.method!r}")
        if not (self.layer is None or self.layer == "best" or isinstance(self.layer, (int, np.integer))):
            raise ValueError(f"layer must be an index, 'best' or None, not {self.layer!r}")
        if not (self.head == "mean" or isinstance(self.head, (int, np.integer))):
            raise ValueError(f"head must be an index or 'mean', not {self.head!r}")
        if self.bootstrap < 1:
            raise ValueError(f"bootstrap needs at least 1 resample, not {self.bootstrap}")
        if self.combine not in ("learned", "fisher"):
            raise ValueError(f"combine must be 'learned' or 'fisher', not {self.combine!r}")

    def run_settings(self) -> dict[str, Any]:
        """The settings that change the rows (a resumed file must have been made with the same)."""
        return {"method": self.method, "beam": self.beam, "triage_layer": self.triage_layer, "translate": self.translate,
                "combine": self.combine}


# a rows file written before a setting existed was made as this
LEGACY_SETTINGS = {"combine": "fisher"}


# --------------------------------------------------------------------------------------------- rows

def _counts_list(c: AlignmentCounts) -> list[int]:
    return [c.predicted, c.sure, c.pred_and_sure, c.pred_and_possible]


def grid_counts(rec: Any, gold: GoldAlignment, method: str) -> list[list[list[int]]]:
    """[layer][head (last: head mean)] -> the four alignment counts of one sentence against its gold."""
    grid = align_grid(rec, method)
    n_layers, n_heads = rec.cross.shape[0], rec.cross.shape[1]
    return [[_counts_list(count_links(grid[(l, h if h < n_heads else "mean")], gold)) for h in range(n_heads + 1)]
            for l in range(n_layers)]


@functools.lru_cache(maxsize=1)
def _bleu_chrf():
    """sacreBLEU's BLEU and chrF with defaults, evaluated once so their signatures know the reference count."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(), CHRF()
    for metric in (bleu, chrf):
        metric.corpus_score(["a"], [["a"]])
    return bleu, chrf


def translation_stats(hyps: Sequence[str], refs: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
    """Per-sentence sacreBLEU sufficient statistics (BLEU, chrF) of hypotheses against one reference each.

    Summed over any subset of sentences they give that subset's corpus score (`corpus_bleu`,
    `corpus_chrf`); this is what sacreBLEU's own paired bootstrap resamples.
    """
    bleu, chrf = _bleu_chrf()
    # sacreBLEU's significance module uses these two (private) methods the same way
    return ([list(map(int, s)) for s in bleu._extract_corpus_statistics(list(hyps), [list(refs)])],
            [list(map(int, s)) for s in chrf._extract_corpus_statistics(list(hyps), [list(refs)])])


def model_rows(bundle: Any, pairs: Sequence[SentencePair], golds: Sequence[GoldAlignment | None] | None,
               opts: CompareOptions, model_index: int) -> Iterable[dict[str, Any]]:
    """The rows of one model for `pairs` (in their order): three passes per chunk of pairs.

    1. the model translates the sources (BLEU/chrF and triage read its translations);
    2. a teacher-forced pass over the references: counts per layer x head against gold, Seq-Logprob;
    3. a teacher-forced pass over the translations, reduced at once to the triage layer: triage signals.

    With `opts.translate` False only pass 2 runs (translation, BLEU/chrF and triage fields are None).
    """
    if any(p.tgt_words is None for p in pairs):
        raise ValueError("every pair needs its reference (target side): compare scores against it")
    sources = [p.src_words for p in pairs]
    refs = [p.tgt_words for p in pairs]
    ref_text = [" ".join(w) for w in refs]
    if opts.translate:
        # translate's own batch size (32), as `score` and `triage` translate: generation costs less per
        # sentence in larger batches (measured: 3.7 s against 4.6 s at 16 for Bicici on the embedded model)
        hyps = translate(bundle, sources, beam=opts.beam)
        bleu_stats, chrf_stats = translation_stats(hyps, ref_text)
    else:
        hyps = bleu_stats = chrf_stats = [None] * len(pairs)
    rows: list[dict[str, Any]] = [
        {"kind": "row", "model": model_index, "index": p.index, "line": p.line, "translation": h,
         "bleu_stats": b, "chrf_stats": c, "signals": None}
        for p, h, b, c in zip(pairs, hyps, bleu_stats, chrf_stats)]
    for i, rec in iter_extract(bundle, sources, refs, batch_size=opts.batch_size, keep=("cross",)):
        gold = golds[pairs[i].index] if golds is not None and pairs[i].index < len(golds) else None
        rows[i]["seq_logprob_ref"] = _finite_or_none(seq_logprob(rec.token_logprobs, logprob_positions(rec.tgt_word_ids)))
        rows[i]["shape"] = list(rec.cross.shape[:2])
        rows[i]["grid"] = None if gold is None else grid_counts(rec, gold, opts.method)
    if not opts.translate:
        return rows
    reduce, read_layer = signal_reducer(opts.triage_layer), 0  # the reducer keeps one layer (or the mean)
    for i, rec in iter_extract(bundle, sources, hyps, batch_size=opts.batch_size, keep=("cross",), reduce=reduce):
        sig = signal_row(rec, pairs[i].index, pairs[i].source, ref_text[i], layer=read_layer, head="mean",
                         method=opts.method)
        rows[i]["signals"] = json_safe(sig)
    return rows


def _finite_or_none(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


# --------------------------------------------------------------------------------------- streaming

@dataclass
class RowsFile:
    """What a compare rows file holds: its settings line, finished models, and the sentences already done."""

    settings: dict[str, Any] | None = None
    finished: dict[int, dict[str, Any]] = field(default_factory=dict)  # model index -> its "model" line
    done: dict[int, set[int]] = field(default_factory=dict)  # model index -> sentence indices written


def read_rows_file(path: Path) -> RowsFile:
    """Scan a rows file (cutting off a torn last line left by a kill) without holding its rows."""
    state = RowsFile()
    if not path.exists():
        return state
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        # find the end of the last complete line, reading backwards in blocks
        end, block = size, 1 << 16
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            k = chunk.rfind(b"\n")
            if k >= 0:
                end = start + k + 1
                break
            end = start
        if end < size:
            f.truncate(end)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(path, lineno, f"not a JSON line ({exc.msg})", "a rows file written by aligndebug compare") from None
            kind = row.get("kind")
            if kind == "settings":
                state.settings = row
            elif kind == "row":
                state.done.setdefault(row["model"], set()).add(row["index"])
            elif kind == "model":
                state.finished[row["model"]] = row
    return state


def iter_rows(path: Path) -> Iterable[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _settings_line(models: Sequence[str], n: int, gold: str | None, opts: CompareOptions) -> dict[str, Any]:
    return {"kind": "settings", "models": list(models), "sentences": n, "gold": gold, **opts.run_settings()}


def run_compare(models: Sequence[str], pairs: Sequence[SentencePair], golds: Sequence[GoldAlignment | None] | None,
                opts: CompareOptions, out: Path, *, resume: bool = False, gold_name: str | None = None,
                load: Callable[[str], Any] | None = None,
                on_progress: Callable[[str, int], None] | None = None) -> RowsFile:
    """Measure every model on `pairs`, appending rows to `out` model by model; returns the file's state.

    `load(spec)` gives a ModelBundle (default: `models.load_model`); each model is loaded only when it
    has work left and dropped before the next, so one model is in memory at a time. Rows are flushed
    and synced per chunk; with `resume`, finished models are not loaded and an unfinished model does
    only the sentences not yet written. A file made with other models, sentences or settings is refused.
    """
    if len(models) < 2:
        raise ValueError(f"compare needs at least two models, got {len(models)}")
    if load is None:
        load = load_model
    out = Path(out)
    settings = _settings_line(models, len(pairs), gold_name, opts)
    state = read_rows_file(out) if resume else RowsFile()
    if resume and state.settings is not None:
        there = {**LEGACY_SETTINGS, **state.settings}
        clash = {k: (there.get(k), v) for k, v in settings.items() if there.get(k) != v}
        if clash:
            raise InputError(out, 1, "this rows file was made with other settings: " + "; ".join(
                f"{k} {a!r} there, {b!r} now" for k, (a, b) in clash.items()), "the same models, test set and options, or no --resume")
    if not resume and out.exists():
        out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as f:
        if state.settings is None:
            f.write(json.dumps(settings, ensure_ascii=False) + "\n")
            state.settings = settings
        for k, spec in enumerate(models):
            if k in state.finished:
                if on_progress:
                    on_progress(spec, len(pairs))
                continue
            done = state.done.setdefault(k, set())
            todo = [p for p in pairs if p.index not in done]
            t0 = time.perf_counter()
            bundle = load(spec)
            try:
                check_model(bundle, opts, spec)
                if on_progress and done:
                    on_progress(spec, len(done))
                for start in range(0, len(todo), opts.chunk_size):
                    chunk = todo[start: start + opts.chunk_size]
                    try:
                        rows = model_rows(bundle, chunk, golds, opts, k)
                    except SentenceError as exc:
                        raise InputError(None, chunk[exc.index].line, f"model {spec}: {exc.reason}") from exc
                    for row in rows:
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
                        done.add(row["index"])
                    f.flush()
                    os.fsync(f.fileno())
                    if on_progress:
                        on_progress(spec, len(chunk))
                line = {"kind": "model", "model": k, "spec": spec, "name": bundle.name, "family": bundle.family,
                        "n_layers": int(bundle.num_layers)}
                if k == 0 and opts.translate and opts.combine == "learned":
                    line["combiner"] = fit_triage(bundle, out, opts)
                line["seconds"] = round(time.perf_counter() - t0, 3)
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
                state.finished[k] = line
            finally:
                device, alive = str(getattr(bundle, "device", "cpu")), _weak_model(bundle)
                bundle = None
                _release(device, alive)
    return state


def fit_triage(bundle: Any, out: Path, opts: CompareOptions, model_index: int = 0) -> dict[str, Any] | None:
    """The learned combination (`combine.fit_with_model`, as a JSON dict) fitted on one model's triage rows in
    `out` and synthetic errors made from them, forced through `bundle` (that model) as pass 3 of `model_rows`
    makes its rows; every model is then scored with it, on one scale, as Fisher's method scores them against the
    first model's calibration. None, with a warning, when too few rows allow no fit (Fisher's method then ranks)."""
    from .combine import fit_with_model
    from .runner import SignalRows, local_execute, variant_rows

    by_index = {r["index"]: r["signals"] for r in iter_rows(out)
                if r.get("kind") == "row" and r["model"] == model_index and r.get("signals")}
    # a variant the model cannot take (too long for its positions) keeps the signals that need no forward pass
    compute = variant_rows(local_execute(bundle, opts.batch_size, opts.beam),
                           SignalRows(opts.triage_layer, "mean", opts.method, alti=False, prior=False), opts.chunk_size)
    try:
        comb = fit_with_model(bundle, [by_index[i] for i in sorted(by_index)], alti=False, batch_size=opts.batch_size,
                              compute_rows=lambda _b, items, **_: compute(items))
    except ValueError as exc:
        warnings.warn(f"no learned combination could be fitted ({exc}); triage scores by Fisher's method",
                      stacklevel=2)
        return None
    return comb.to_dict()


def model_heads(bundle: Any) -> int | None:
    cfg = bundle.model.config
    n = getattr(cfg, "decoder_attention_heads", None) or getattr(cfg, "num_heads", None)
    return None if n is None else int(n)


def check_model(bundle: Any, opts: CompareOptions, spec: str) -> None:
    """Refuse a layer or head the model does not have before any of its work (InputError)."""
    n_layers = int(bundle.num_layers)
    if isinstance(opts.layer, (int, np.integer)) and not -n_layers <= opts.layer < n_layers:
        raise InputError(None, None, f"--layer {opts.layer} does not exist: model {spec} has {n_layers} decoder layers",
                         f"0..{n_layers - 1}, negative from the end, or 'best'")
    n_heads = model_heads(bundle)
    if isinstance(opts.head, (int, np.integer)) and n_heads is not None and not -n_heads <= opts.head < n_heads:
        raise InputError(None, None, f"--head {opts.head} does not exist: model {spec} has {n_heads} heads",
                         f"0..{n_heads - 1} or 'mean'")


def _weak_model(bundle: Any) -> Callable[[], Any]:
    model = getattr(bundle, "model", None)
    try:
        return weakref.ref(model)
    except TypeError:
        return lambda: None


def _release(device: str, alive: Callable[[], Any]) -> None:
    """Free the model just dropped before the next is loaded (the point of going one model at a time).

    Reference counting frees a Hugging Face model as soon as the last reference goes (checked on the
    embedded model), so the full garbage collection (about 1 s with transformers imported) runs only
    when something still holds it through a reference cycle (or a caller keeps it, as tests do)."""
    if alive() is not None:
        gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------ summary (pure)

@dataclass
class ModelScores:
    """One model's rows as arrays, in sentence order (sentences without gold have zero counts)."""

    spec: str
    name: str
    grid: np.ndarray  # [N, L, H+1, 4] int64; head index H is the layer's head mean
    has_gold: np.ndarray  # [N] bool
    seq_logprob_ref: np.ndarray  # [N] float (NaN when undefined)
    bleu_stats: np.ndarray  # [N, 10]
    chrf_stats: np.ndarray  # [N, k]
    translations: list[str | None]
    signals: list[dict[str, Any] | None]
    sent_bleu: np.ndarray
    sent_chrf: np.ndarray
    triage_score: np.ndarray | None = None  # set by `score_triage` (NaN without translations)
    suspect: np.ndarray | None = None
    combiner: dict[str, Any] | None = None  # the learned combination fitted on this model's rows (`fit_triage`)

    def __post_init__(self) -> None:
        n = len(self.translations)
        if self.triage_score is None:
            self.triage_score = np.full(n, np.nan)
        if self.suspect is None:
            self.suspect = np.zeros(n, dtype=bool)

    @property
    def translated(self) -> bool:
        return all(s is not None for s in self.signals)

    @property
    def n_layers(self) -> int:
        return self.grid.shape[1]

    @property
    def n_heads(self) -> int:
        return self.grid.shape[2] - 1


def load_scores(path: Path, n_models: int | None = None) -> tuple[dict[str, Any], list[ModelScores]]:
    """(settings line, one ModelScores per model) from a finished rows file; a duplicate row (a resumed
    chunk written twice) counts once."""
    settings: dict[str, Any] | None = None
    meta: dict[int, dict[str, Any]] = {}
    by_model: dict[int, dict[int, dict[str, Any]]] = {}
    for row in iter_rows(Path(path)):
        kind = row.get("kind")
        if kind == "settings":
            settings = row
        elif kind == "model":
            meta[row["model"]] = row
        elif kind == "row":
            if row.get("grid") is not None:  # compact at once: a list of Python ints costs ~10x the array
                row["grid"] = np.asarray(row["grid"], dtype=np.int32)
            by_model.setdefault(row["model"], {}).setdefault(row["index"], row)
    if settings is None:
        raise InputError(path, 1, "no settings line", "a rows file written by aligndebug compare")
    n_models = len(settings["models"]) if n_models is None else n_models
    missing = [settings["models"][k] for k in range(n_models) if k not in meta]
    if missing:
        raise InputError(path, None, f"model(s) {', '.join(missing)} not finished", "a completed run (rerun with --resume)")
    n = settings["sentences"]
    out = []
    for k in range(n_models):
        rows = by_model.get(k, {})
        if len(rows) != n:
            raise InputError(path, None, f"model {settings['models'][k]} has {len(rows)} rows for {n} sentences",
                             "a completed run (rerun with --resume)")
        ordered = [rows[i] for i in sorted(rows)]
        shape = next((r["shape"] for r in ordered if r.get("shape")), [meta[k]["n_layers"], 1])
        grid = np.zeros((n, shape[0], shape[1] + 1, 4), dtype=np.int64)
        has_gold = np.zeros(n, dtype=bool)
        for j, r in enumerate(ordered):
            if r.get("grid") is not None:
                grid[j] = np.asarray(r["grid"], dtype=np.int64)
                has_gold[j] = True
        sig = [r.get("signals") for r in ordered]
        out.append(ModelScores(
            spec=settings["models"][k], name=meta[k]["name"], grid=grid, has_gold=has_gold,
            seq_logprob_ref=np.array([np.nan if r.get("seq_logprob_ref") is None else r["seq_logprob_ref"] for r in ordered]),
            bleu_stats=_stats_array([r.get("bleu_stats") for r in ordered]),
            chrf_stats=_stats_array([r.get("chrf_stats") for r in ordered]),
            translations=[r.get("translation") for r in ordered], signals=sig, combiner=meta[k].get("combiner"),
            sent_bleu=np.array([_nan(s.get("bleu") if s else None) for s in sig]),
            sent_chrf=np.array([_nan(s.get("chrf") if s else None) for s in sig])))
    return settings, out


def _stats_array(stats: list[list[int] | None]) -> np.ndarray:
    """[N, k] sufficient statistics; [N, 0] when the rows have none (alignment only)."""
    if not stats or any(s is None for s in stats):
        return np.zeros((len(stats), 0))
    return np.asarray(stats, dtype=np.float64)


def _nan(x: Any) -> float:
    return float("nan") if x is None else float(x)


def score_triage(models: list[ModelScores], opts: CompareOptions) -> Any:
    """Triage scores of every model on one scale, returned with the Calibration behind them (None without
    translations: nothing was triaged): the first model's. With its learned combination (`fit_triage`) every
    model's rows are scored by it and a row is suspect above the first model's q-th percentile score; else by
    Fisher's method against the first model's calibration."""
    if not all(m.translated for m in models):
        return None

    settings = triage_settings(models[0].name, method=opts.method, layer=opts.triage_layer, head="mean")
    cal = calibrate(models[0].signals, percentile=opts.percentile, source=f"model {models[0].spec}",
                    settings=settings)
    comb = None
    if opts.combine == "learned" and models[0].combiner is not None:
        from .combine import Combiner

        comb = Combiner.from_dict(models[0].combiner)
        cal.combine, cal.combiner = "learned", models[0].combiner
    for m in models:
        if comb is not None:
            scores = comb.logit(m.signals)
        else:
            scores = np.array([triage_row(s, cal)[0] for s in m.signals], dtype=np.float64)
        m.triage_score = scores
    if comb is not None:
        cal.combine_threshold = float(np.percentile(models[0].triage_score, opts.percentile))
    threshold = cal.combine_threshold if comb is not None else cal.score_threshold
    for m in models:
        m.suspect = m.triage_score > threshold if threshold is not None else np.zeros(len(m.triage_score), bool)
    return cal


def aer_from_counts(c: np.ndarray) -> np.ndarray:
    """AER from count arrays [..., 4] (|A|, |S|, |A∩S|, |A∩P|); 0 where |A| + |S| = 0 (metrics' rule)."""
    c = np.asarray(c, dtype=np.float64)
    denom = c[..., 0] + c[..., 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 1.0 - (c[..., 2] + c[..., 3]) / np.where(denom > 0, denom, 1.0), 0.0)


def resolve_layer(m: ModelScores, opts: CompareOptions) -> int:
    """The layer read for `m`: the given index (negative from the end), the default middle-upper layer,
    or "best": the lowest corpus AER for the chosen head (ties: the lower layer)."""
    L = m.n_layers
    if opts.layer is None:
        return default_layer(L)
    if opts.layer == "best":
        col = _head_col(m, opts.head)
        return int(np.argmin(aer_from_counts(m.grid.sum(axis=0)[:, col])))
    layer = int(opts.layer)
    if not -L <= layer < L:
        raise ValueError(f"layer {layer} does not exist: model {m.spec} has {L} decoder layers")
    return layer % L


def _head_col(m: ModelScores, head: int | str) -> int:
    if head == "mean":
        return m.n_heads
    if not -m.n_heads <= int(head) < m.n_heads:
        raise ValueError(f"head {head} does not exist: model {m.spec} has {m.n_heads} heads")
    return int(head) % m.n_heads


def chosen_counts(m: ModelScores, opts: CompareOptions) -> np.ndarray:
    """[N, 4] counts at the model's chosen layer and head."""
    return m.grid[:, resolve_layer(m, opts), _head_col(m, opts.head)]


def _bleu_scores(sums: np.ndarray) -> np.ndarray:
    bleu, _ = _bleu_chrf()
    return np.array([bleu._compute_score_from_stats(list(s)).score for s in sums])


def _chrf_scores(sums: np.ndarray) -> np.ndarray:
    _, chrf = _bleu_chrf()
    return np.array([chrf._compute_score_from_stats(list(s)).score for s in sums])


def _mean_scores(sums: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums[:, 1] > 0, sums[:, 0] / np.where(sums[:, 1] > 0, sums[:, 1], 1), np.nan)


def _mean_stats(values: np.ndarray) -> np.ndarray:
    """[value, 1] per sentence ([0, 0] when undefined), so a resample's mean is sum / count."""
    ok = np.isfinite(values)
    return np.stack([np.where(ok, values, 0.0), ok.astype(np.float64)], axis=1)


# name -> (score from summed statistics [B, k] -> [B], higher is better?)
METRICS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], bool]] = {
    "aer": (aer_from_counts, False),
    "bleu": (_bleu_scores, True),
    "chrf": (_chrf_scores, True),
    "seq_logprob": (_mean_scores, True),
}


def metric_stats(m: ModelScores, opts: CompareOptions) -> dict[str, np.ndarray]:
    """Per-sentence sufficient statistics [N, k] of every compared metric (BLEU and chrF only with translations)."""
    out = {"seq_logprob": _mean_stats(m.seq_logprob_ref)}
    if m.has_gold.any():
        out["aer"] = chosen_counts(m, opts).astype(np.float64)
    if m.bleu_stats.shape[1]:
        out.update({"bleu": m.bleu_stats, "chrf": m.chrf_stats})
    return out


def resample_indices(n: int, n_samples: int = 1000, seed: int | None = DEFAULT_SEED) -> np.ndarray:
    """[n_samples, n] sentence indices drawn with replacement, exactly as sacreBLEU's paired bootstrap draws them."""
    rng = np.random.default_rng(seed)
    return rng.choice(n, size=(n_samples, n), replace=True)


def resampled_sums(stats: np.ndarray, idx: np.ndarray, block: int = 100) -> np.ndarray:
    """[B, k] sums of `stats` [N, k] over each resample's sentences, a block of resamples at a time
    (how often each sentence was drawn, a [block, N] matrix, times the statistics), so memory stays at
    block x N."""
    B, n = idx.shape
    out = np.empty((B, stats.shape[1]), dtype=np.float64)
    for b0 in range(0, B, block):
        part = idx[b0: b0 + block]
        flat = (np.arange(len(part))[:, None] * n + part).ravel()
        w = np.bincount(flat, minlength=len(part) * n).reshape(len(part), n).astype(np.float64)
        out[b0: b0 + block] = w @ stats
    return out


@dataclass(frozen=True)
class Difference:
    """A system's score minus the baseline's, with its paired-bootstrap mean, 95% interval and p-value."""

    baseline: float
    system: float
    delta: float
    mean: float
    low: float
    high: float
    p_value: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap(base_stats: np.ndarray, sys_stats: np.ndarray, score: Callable[[np.ndarray], np.ndarray],
                     idx: np.ndarray) -> Difference:
    """Paired bootstrap of `score(system) - score(baseline)` over the resamples `idx` (see the module notes)."""
    full = np.ones((1, base_stats.shape[0]), dtype=np.float64)
    b0, s0 = float(score(full @ base_stats)[0]), float(score(full @ sys_stats)[0])
    d = score(resampled_sums(sys_stats, idx)) - score(resampled_sums(base_stats, idx))
    obs = s0 - b0
    ad = np.abs(d)
    p = (1 + int(np.sum(ad - ad.mean() >= abs(obs)))) / (len(d) + 1)
    ds = np.sort(d)
    lo = len(ds) // 40
    return Difference(b0, s0, obs, float(d.mean()), float(ds[lo]), float(ds[len(ds) - lo - 1]), p)


def signature(settings: dict[str, Any], opts: CompareOptions, gold: Any = None) -> str:
    """Every setting behind the comparison, sacreBLEU-style: the alignment signature (all models), the
    bootstrap, the triage calibration and sacreBLEU's BLEU and chrF signatures."""
    bleu, chrf = _bleu_chrf()
    layer = "default" if opts.layer is None else str(opts.layer)
    kwargs = dict(model=",".join(settings["models"]), method=opts.method, layer=layer, heads=opts.head)
    sig = AlignmentSignature.for_gold(gold, **kwargs) if gold is not None else AlignmentSignature(
        gold=settings.get("gold"), **kwargs)
    parts = [sig.format(), f"bs:{opts.bootstrap}", f"seed:{opts.seed}", "ci:95"]
    if not opts.translate:
        return "|".join(parts + ["translate:no"])
    return "|".join(parts + [f"beam:{opts.beam}", f"triage:cal=model0,p{opts.percentile:g},layer={opts.triage_layer},"
                             f"combine={opts.combine}",
                             f"bleu:{bleu.get_signature()}", f"chrf:{chrf.get_signature()}"])


def sentence_aer(counts: np.ndarray, has_gold: np.ndarray) -> np.ndarray:
    """Per-sentence AER (NaN without gold)."""
    return np.where(has_gold, aer_from_counts(counts), np.nan)


def summarize(settings: dict[str, Any], models: list[ModelScores], opts: CompareOptions,
              gold: Any = None) -> dict[str, Any]:
    """Corpus scores per model and paired-bootstrap differences against the first (JSON-ready)."""
    cal = score_triage(models, opts)
    n = len(models[0].translations)
    idx = resample_indices(n, opts.bootstrap, opts.seed)
    base = metric_stats(models[0], opts)
    out_models = []
    for k, m in enumerate(models):
        layer = resolve_layer(m, opts)
        col = _head_col(m, opts.head)
        corpus_grid = m.grid.sum(axis=0)  # [L, H+1, 4]
        grid_aer = aer_from_counts(corpus_grid)
        c = AlignmentCounts(*[int(x) for x in corpus_grid[layer, col]])
        best_layer = int(np.argmin(grid_aer[:, m.n_heads]))
        stats = metric_stats(m, opts)
        translated = "bleu" in stats
        entry = {
            "model": m.spec, "name": m.name, "layer": layer, "head": opts.head,
            "aer": c.aer, "precision": c.precision, "recall": c.recall, "f1": c.f1,
            "best_layer": best_layer, "best_layer_aer": float(grid_aer[best_layer, m.n_heads]),
            "per_head_aer": grid_aer[:, : m.n_heads].tolist(), "per_layer_mean_aer": grid_aer[:, m.n_heads].tolist(),
            "bleu": float(_bleu_scores(m.bleu_stats.sum(axis=0, keepdims=True))[0]) if translated else None,
            "chrf": float(_chrf_scores(m.chrf_stats.sum(axis=0, keepdims=True))[0]) if translated else None,
            "seq_logprob": float(_mean_scores(stats["seq_logprob"].sum(axis=0, keepdims=True))[0]),
            "triage_mean": float(np.mean(m.triage_score)) if n and cal is not None else None,
            "suspects": int(m.suspect.sum()) if cal is not None else None, "scored_sentences": int(m.has_gold.sum()),
        }
        if not m.has_gold.any():  # no gold: no alignment score (not an AER of 0)
            entry.update({key: None for key in ("aer", "precision", "recall", "f1", "best_layer", "best_layer_aer",
                                                "per_head_aer", "per_layer_mean_aer")})
        if k > 0:
            entry["vs_first"] = {name: asdict(paired_bootstrap(base[name], stats[name], METRICS[name][0], idx))
                                 for name in METRICS if name in stats and name in base}
        out_models.append(entry)
    return json_safe({"sentences": n, "models": out_models, "bootstrap": opts.bootstrap, "seed": opts.seed,
                      "triage_ranking": None if cal is None else cal.combine,
                      "triage_score_threshold": None if cal is None else (
                          cal.combine_threshold if cal.combine == "learned" else cal.score_threshold),
                      "signature": signature(settings, opts, gold)})


def sentence_deltas(models: list[ModelScores], opts: CompareOptions, pairs: Sequence[SentencePair] | None = None
                    ) -> list[dict[str, Any]]:
    """Per sentence, each later model against the first: AER (chosen layer/head), triage score, sentence
    BLEU and Seq-Logprob, with ranks: `rank_aer` 1 = alignment got worse the most, `rank_triage` 1 = triage
    score rose the most. Rows come ordered by model, then `rank_aer`. Needs `score_triage` first."""
    base = models[0]
    a0 = sentence_aer(chosen_counts(base, opts), base.has_gold)
    out: list[dict[str, Any]] = []
    for k, m in enumerate(models[1:], start=1):
        ak = sentence_aer(chosen_counts(m, opts), m.has_gold)
        d_aer = ak - a0
        d_tri = m.triage_score - base.triage_score
        # worst first; sentences without gold (NaN) last; ties by triage rise, then input order
        order_aer = np.lexsort((np.arange(len(d_aer)), -np.nan_to_num(d_tri, nan=-np.inf),
                                -np.nan_to_num(d_aer, nan=-np.inf)))
        rank_tri = np.empty(len(d_tri), dtype=np.int64)
        rank_tri[np.lexsort((np.arange(len(d_tri)), -np.nan_to_num(d_tri, nan=-np.inf)))] = np.arange(1, len(d_tri) + 1)
        for r, j in enumerate(order_aer.tolist(), start=1):
            row = {"model": k, "name": m.spec, "baseline": base.spec, "index": j, "rank_aer": r,
                   "rank_triage": int(rank_tri[j]),
                   "delta_aer": d_aer[j], "aer": [a0[j], ak[j]],
                   "delta_triage": d_tri[j], "triage_score": [base.triage_score[j], m.triage_score[j]],
                   "suspect": [bool(base.suspect[j]), bool(m.suspect[j])],
                   "delta_bleu": m.sent_bleu[j] - base.sent_bleu[j], "bleu": [base.sent_bleu[j], m.sent_bleu[j]],
                   "delta_seq_logprob": m.seq_logprob_ref[j] - base.seq_logprob_ref[j],
                   "seq_logprob_ref": [base.seq_logprob_ref[j], m.seq_logprob_ref[j]],
                   "translation": [base.translations[j], m.translations[j]]}
            if pairs is not None:
                row.update({"line": pairs[j].line, "source": pairs[j].source, "reference": pairs[j].target})
            out.append(json_safe(row))
    return out


# ------------------------------------------------------------------------------------------ outputs

def format_table(summary: dict[str, Any]) -> str:
    """One plain-text table: corpus scores per model, then differences against the first model."""
    ms = summary["models"]
    labels = [_label(k, m) for k, m in enumerate(ms)]
    w = max(12, *(len(x) for x in labels)) + 1
    head = (f"{'model':<{w}} {'layer':>5} {'AER':>6} {'P':>6} {'R':>6} {'best':>10} {'BLEU':>6} {'chrF':>6} "
            f"{'SeqLogp':>8} {'suspects':>8}")
    lines = [head]
    for label, m in zip(labels, ms):
        best = "-" if m["best_layer_aer"] is None else f"{100 * m['best_layer_aer']:.2f}@{m['best_layer']}"
        lines.append(f"{label:<{w}} {m['layer']:>5} {_fmt(m['aer'], '6.2f', 100)} {_fmt(m['precision'], '6.2f', 100)} "
                     f"{_fmt(m['recall'], '6.2f', 100)} {best:>10} {_fmt(m['bleu'], '6.2f')} {_fmt(m['chrf'], '6.2f')} "
                     f"{_fmt(m['seq_logprob'], '8.3f')} {'-' if m['suspects'] is None else m['suspects']:>8}")
    lines.append(f"differences against {labels[0]} (paired bootstrap, {summary['bootstrap']} resamples, "
                 f"seed {summary['seed']}): delta [95% interval] p")
    for label, m in zip(labels[1:], ms[1:]):
        cells = []
        for name, what, scale in (("aer", "AER", 100), ("bleu", "BLEU", 1), ("chrf", "chrF", 1),
                                  ("seq_logprob", "SeqLogp", 1)):
            d = m["vs_first"].get(name)
            if d is None:
                continue
            cells.append(f"{what} {_signed(d['delta'], scale)} [{_signed(d['low'], scale)}, {_signed(d['high'], scale)}] "
                         f"p={d['p_value']:.3f}")
        lines.append(f"  {label}: " + " · ".join(cells))
    ranking = {"learned": "the learned combination", "fisher": "Fisher's method"}.get(summary.get("triage_ranking"))
    lines.append("(AER, P, R in percent; best = lowest layer AER with the head mean, @layer"
                 + (f"; suspects: triage score by {ranking} above the first model's calibration threshold)"
                    if ranking else ")"))
    lines.append(f"signature: {summary['signature']}")
    return "\n".join(lines)


def _label(k: int, m: dict[str, Any]) -> str:
    """'#k name' (the name's last 36 characters: checkpoint paths differ at the end)."""
    return f"#{k} {m['model'][-36:]}"


def _fmt(x: Any, spec: str, scale: float = 1.0) -> str:
    return format(scale * x, spec) if isinstance(x, (int, float)) and x == x else "-".rjust(int(spec.split(".")[0]))


def _signed(x: Any, scale: float) -> str:
    return "nan" if x is None or x != x else f"{scale * x:+.2f}"


def checkpoint_chart(summary: dict[str, Any]):
    """Altair chart of AER (best layer, and the chosen layer/head), BLEU and mean Seq-Logprob over the
    models in order (a checkpoint series): one small panel a metric, each with its own y scale, two a row;
    a metric that was not measured (BLEU with --alignment-only) gets no panel."""
    import altair as alt

    from .charts import vega_strings

    names = [m["model"] for m in summary["models"]]
    series = (("AER, best layer (head mean)", "best_layer_aer", 100.0, "AER (%)"),
              ("AER, chosen layer and head", "aer", 100.0, "AER (%)"), ("BLEU", "bleu", 1.0, "BLEU"),
              ("mean Seq-Logprob of the reference", "seq_logprob", 1.0, "nats per token"))
    labels = vega_strings([os.path.basename(n.rstrip("/")) or n for n in names])
    panels = []
    for title, key, scale, unit in series:
        values = [{"checkpoint": k, "name": m["model"], "value": scale * m[key]}
                  for k, m in enumerate(summary["models"]) if m.get(key) is not None]
        if not values:
            continue
        panels.append(alt.Chart(alt.Data(values=values)).mark_line(point=True).encode(
            x=alt.X("checkpoint:O", title="checkpoint",
                    axis=alt.Axis(labelExpr=f"{labels}[datum.value]", labelAngle=-30, labelLimit=120)),
            y=alt.Y("value:Q", title=unit, scale=alt.Scale(zero=False)),
            tooltip=[alt.Tooltip("name:N", title="model"), alt.Tooltip("value:Q", title=title, format=".3f")],
        ).properties(width=260, height=140, title=title))
    rows = [alt.hconcat(*panels[i: i + 2]) for i in range(0, len(panels), 2)]
    return alt.vconcat(*rows)


def write_chart(chart: Any, path: Path) -> Path:
    """PNG or SVG by the file's suffix (.png, .svg), through `export`; .json writes the Vega-Lite spec."""
    from .export import chart_to_png, chart_to_svg

    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        data = chart_to_png(chart)
    elif suffix == ".svg":
        data = chart_to_svg(chart)
    elif suffix == ".json":
        data = json.dumps(chart.to_dict(), ensure_ascii=False).encode("utf-8")
    else:
        raise InputError(path, None, f"unknown chart format {suffix!r}", "a .png, .svg or .json file name")
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return Path(path)


def top_changed(deltas: Sequence[dict[str, Any]], top: int) -> dict[int, list[dict[str, Any]]]:
    """model index -> its `top` sentences whose alignment got worse the most (those with gold)."""
    out: dict[int, list[dict[str, Any]]] = {}
    for d in deltas:
        if d["rank_aer"] <= top and d["delta_aer"] is not None:
            out.setdefault(d["model"], []).append(d)
    return out


def heatmap_svgs(spec: str, prefix: str, indices: Sequence[int], pairs: Sequence[SentencePair],
                 golds: Sequence[GoldAlignment | None] | None, layer: int, opts: CompareOptions,
                 load: Callable[[str], Any]) -> dict[int, str]:
    """Inline SVG heatmaps (cross-attention at `layer`/head, links marked against gold) of model `spec`
    on the reference of each sentence in `indices`; the model is loaded for this and dropped after.
    `prefix` keeps the SVG ids of different models apart in one page."""
    from .charts import alignment_heatmap
    from .export import chart_to_svg
    from .extract import extract
    from .report import unique_ids

    if not indices:
        return {}
    bundle = load(spec)
    device, alive = str(getattr(bundle, "device", "cpu")), _weak_model(bundle)
    try:
        recs = extract(bundle, [pairs[i].src_words for i in indices], [pairs[i].tgt_words for i in indices],
                       batch_size=opts.batch_size, keep=("cross",))
    finally:
        bundle = None
        _release(device, alive)
    out = {}
    for i, rec in zip(indices, recs):
        gold = golds[i] if golds is not None and i < len(golds) else None
        chart = alignment_heatmap(rec, layer=layer, head=opts.head, method=opts.method, gold=gold, cell=14,
                                  legend="bottom", title=f"{os.path.basename(spec.rstrip('/')) or spec} · layer {layer}")
        svg = chart_to_svg(chart).decode("utf-8")
        svg = svg[svg.find("<svg"):]
        out[i] = unique_ids(svg, f"{prefix}{i}_")
    return out


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{font-size:1.5rem} h2{font-size:1.2rem;margin-top:2rem} h3{font-size:1rem;margin:0 0 .4rem}
.meta{color:#555;font-size:.88rem;word-break:break-all}
table.scores{border-collapse:collapse;font-size:.9rem} table.scores td,table.scores th{border-bottom:1px solid #e3e3e3;padding:3px 8px;text-align:right}
table.scores td:first-child,table.scores th:first-child{text-align:left}
.worse{color:#a50f15} .better{color:#1a7f37}
.card{border:1px solid #ddd;border-radius:8px;padding:.8rem 1rem;margin:1rem 0}
.pair td{padding:1px 8px;vertical-align:top;font-size:.92rem} .pair td:first-child{color:#666;white-space:nowrap}
.side{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start} .side svg{max-width:100%;height:auto}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _pct(x: Any) -> str:
    return "–" if x is None or x != x else f"{100 * x:.2f}"


def _num(x: Any, digits: int = 2) -> str:
    return "–" if x is None or x != x else f"{x:.{digits}f}"


def render_html(summary: dict[str, Any], deltas: Sequence[dict[str, Any]], svgs: dict[tuple[int, int], str] | None = None,
                chart_svg: str | None = None, top: int = 5, title: str = "aligndebug model comparison") -> str:
    """The comparison as one self-contained HTML page (inline SVG, no scripts); every text is escaped."""
    svgs = svgs or {}
    ms = summary["models"]
    p = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         f"<title>{_e(title)}</title><style>{CSS}</style></head><body>", f"<h1>{_e(title)}</h1>",
         f'<p class="meta">{summary["sentences"]} sentences · paired bootstrap, {summary["bootstrap"]} resamples, '
         f'seed {summary["seed"]} · differences against the first model</p>',
         f'<p class="meta">signature: {_e(summary["signature"])}</p>', "<h2>Scores</h2>",
         '<table class="scores"><tr><th>model</th><th>layer</th><th>AER</th><th>P</th><th>R</th><th>best layer AER</th>'
         "<th>BLEU</th><th>chrF</th><th>Seq-Logprob</th><th>suspects</th></tr>"]
    for k, m in enumerate(ms):
        p.append(f"<tr><td>{_e(_label(k, m))}</td><td>{_e(m['layer'])}</td><td>{_pct(m['aer'])}</td>"
                 f"<td>{_pct(m['precision'])}</td><td>{_pct(m['recall'])}</td>"
                 f"<td>{_pct(m['best_layer_aer'])} (layer {_e(m['best_layer'])})</td><td>{_num(m['bleu'])}</td>"
                 f"<td>{_num(m['chrf'])}</td><td>{_num(m['seq_logprob'], 3)}</td><td>{_e(m['suspects'])}</td></tr>")
    p.append("</table>")
    if len(ms) > 1:
        p.append("<h2>Differences against the first model</h2>"
                 '<table class="scores"><tr><th>model</th><th>metric</th><th>delta</th><th>95% interval</th>'
                 "<th>p</th></tr>")
        for k, m in enumerate(ms[1:], start=1):
            for name, label, scale, lower_better in (("aer", "AER (points)", 100, True), ("bleu", "BLEU", 1, False),
                                                     ("chrf", "chrF", 1, False), ("seq_logprob", "Seq-Logprob", 1, False)):
                d = m["vs_first"].get(name)
                if d is None:
                    continue
                worse = d["delta"] is not None and ((d["delta"] > 0) == lower_better) and d["delta"] != 0
                cls = "worse" if worse else "better" if d["delta"] else ""
                p.append(f"<tr><td>{_e(_label(k, m))}</td><td>{_e(label)}</td><td class=\"{cls}\">{_signed(d['delta'], scale)}</td>"
                         f"<td>[{_signed(d['low'], scale)}, {_signed(d['high'], scale)}]</td><td>{_num(d['p_value'], 3)}</td></tr>")
        p.append("</table>")
    if chart_svg:
        p.append(f"<h2>Checkpoint series</h2><div>{chart_svg}</div>")
    from .report import unique_ids

    labels = [_label(k, m) for k, m in enumerate(ms)]
    if all(m["per_layer_mean_aer"] is not None for m in ms):
        p.append("<h2>AER per layer (head mean)</h2>" + '<table class="scores"><tr><th>model</th>' + "".join(
            f"<th>layer {l}</th>" for l in range(max(len(m["per_layer_mean_aer"]) for m in ms))) + "</tr>")
        for label, m in zip(labels, ms):
            p.append(f"<tr><td>{_e(label)}</td>" + "".join(f"<td>{_pct(x)}</td>" for x in m["per_layer_mean_aer"])
                     + "</tr>")
        p.append("</table>")
    tops = top_changed(deltas, top)
    for k in range(1, len(ms)):
        rows = [d for d in tops.get(k, []) if d["delta_aer"] > 0]
        p.append(f"<h2>Where alignment got worse the most: {_e(labels[k])} against {_e(labels[0])}</h2>")
        if not rows:
            p.append('<p class="meta">no sentence\'s alignment got worse (AER at the chosen layer and head).</p>')
        for d in rows:
            p.append('<div class="card">')
            p.append(f"<h3>#{d['rank_aer']} · sentence {_e(d['index'])}"
                     + (f" (line {_e(d['line'])})" if d.get("line") is not None else "")
                     + f" · AER {_pct(d['aer'][0])} → {_pct(d['aer'][1])} · triage score {_num(d['triage_score'][0])} → "
                     f"{_num(d['triage_score'][1])} · sentence BLEU {_num(d['bleu'][0], 1)} → {_num(d['bleu'][1], 1)}</h3>")
            pair = [("source", d.get("source")), ("reference", d.get("reference")),
                    (f"translation ({labels[0]})", d["translation"][0]),
                    (f"translation ({labels[k]})", d["translation"][1])]
            p.append('<table class="pair">' + "".join(f"<tr><td>{_e(a)}</td><td>{_e(b)}</td></tr>"
                                                      for a, b in pair if b is not None) + "</table>")
            # the same heatmap can appear in several cards: its SVG ids get this card's prefix
            left, right = (svgs.get((m, d["index"])) for m in (0, k))
            if left or right:
                prefix = f"k{k}r{d['rank_aer']}_"
                p.append('<div class="side">' + "".join(
                    f"<div>{unique_ids(x, prefix) if x else ''}</div>" for x in (left, right)) + "</div>")
            p.append("</div>")
        rises = sorted((d for d in deltas if d["model"] == k and d["delta_triage"] is not None and d["delta_triage"] > 0),
                       key=lambda d: d["rank_triage"])[:top]
        if rises:
            p.append(f"<h3>Triage score rose the most ({_e(labels[k])} against {_e(labels[0])})</h3>"
                     '<table class="scores"><tr><th>sentence</th><th>score</th><th>suspect</th><th>translation</th></tr>')
            for d in rises:
                p.append(f"<tr><td>{_e(d['index'])}</td><td>{_num(d['triage_score'][0])} → {_num(d['triage_score'][1])}</td>"
                         f"<td>{'yes' if d['suspect'][1] else 'no'}</td><td style=\"text-align:left\">{_e(d['translation'][1])}</td></tr>")
            p.append("</table>")
    p.append("</body></html>")
    return "\n".join(p)


def write_text_atomic(path: Path, text: str) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


@dataclass
class CompareResult:
    """What a finished comparison produced: the summary, the ranked deltas and the files written."""

    summary: dict[str, Any]
    deltas: list[dict[str, Any]]
    models: list[ModelScores]
    files: dict[str, Path] = field(default_factory=dict)


def finish_compare(out: Path, pairs: Sequence[SentencePair], golds: Sequence[GoldAlignment | None] | None,
                   opts: CompareOptions, *, gold: Any = None, deltas_path: Path | None = None,
                   summary_path: Path | None = None, html_path: Path | None = None, chart_path: Path | None = None,
                   top: int = 5, load: Callable[[str], Any] | None = None) -> CompareResult:
    """From a finished rows file: summary (JSON), ranked deltas (JSONL), and optionally the HTML report
    (heatmaps of the `top` changed sentences: each model is loaded once more, one at a time) and the
    checkpoint-series chart (with three or more models; PNG/SVG by suffix)."""
    settings, models = load_scores(out)
    summary = summarize(settings, models, opts, gold)
    deltas = sentence_deltas(models, opts, pairs)
    files: dict[str, Path] = {}
    if summary_path is not None:
        files["summary"] = write_text_atomic(summary_path, json.dumps(summary, indent=1, ensure_ascii=False))
    if deltas_path is not None:
        files["deltas"] = write_text_atomic(deltas_path, "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in deltas))
    chart = checkpoint_chart(summary) if len(models) >= 3 else None
    if chart is not None and chart_path is not None:
        files["chart"] = write_chart(chart, chart_path)
    if html_path is not None:
        if load is None:
            from .models import load_model

            load = load_model
        tops = top_changed(deltas, top)
        need: dict[int, set[int]] = {}
        for k, rows in tops.items():
            need.setdefault(0, set()).update(d["index"] for d in rows)
            need.setdefault(k, set()).update(d["index"] for d in rows)
        svgs: dict[tuple[int, int], str] = {}
        for k in sorted(need):
            got = heatmap_svgs(models[k].spec, f"m{k}_", sorted(need[k]), pairs, golds,
                               summary["models"][k]["layer"], opts, load)
            svgs.update({(k, i): s for i, s in got.items()})
        chart_svg = None
        if chart is not None:
            from .export import chart_to_svg
            from .report import unique_ids

            text = chart_to_svg(chart).decode("utf-8")
            chart_svg = unique_ids(text[text.find("<svg"):], "curve_")
        files["html"] = write_text_atomic(html_path, render_html(summary, deltas, svgs, chart_svg, top=top))
    return CompareResult(summary, deltas, models, files)


def grid_difference(a: dict[tuple[int, Any], float], b: dict[tuple[int, Any], float]
                    ) -> dict[tuple[int, Any], float] | None:
    """B minus A for every (layer, head) of two layer x head score grids (e.g. `views.layer_head_aer`);
    None when the models' grids do not have the same layers and heads."""
    if set(a) != set(b):
        return None
    return {k: b[k] - a[k] for k in a}
