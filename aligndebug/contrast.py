"""Why this word and not that one: contrastive explanations of two targets for one source.

Two targets for the same source (``target``, the one to explain, and ``contrast``, the foil) are
word-aligned to each other with difflib's opcodes; every non-equal opcode is a *differing
position* (anywhere in the sentence, several allowed). For each one:

- the log-probability of each side's span under teacher forcing (the sum of its subword
  log-probs, i.e. log p(span | source, that side's own prefix)), and their difference;
- the contrastive attribution to every source token: Integrated Gradients of
  ``log p(target span) − log p(contrast span)`` (Yin & Neubig, 2022, "Interpreting Language Models
  with Contrastive Explanations"), with its completeness gap;
- the plain cross-attention of that step (the decoder row that emits the span's first token,
  chosen layer, heads averaged) on each side, pooled to source words.

An empty span (an insertion on one side) is represented by the token that side emits instead at
that point: the row right after the previous word (the next word's first token, or ``</s>``), so
"why 'big' and not nothing" reads as "why 'big' and not 'dog' after 'the'", the same decoder step.

IG is linear in the function explained, so on the same path points the contrastive attribution is
exactly IG(target span) − IG(contrast span); computing it as one objective halves the gradients and
gives one completeness gap for the difference. Batching as in ``attribution.integrated_gradients``:
per chunk of path points one forward pass per side (all rows at once), then one vmapped backward
(``is_grads_batched``) gives every differing position its own gradient.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .align import Selector, default_layer, select
from .attribution import _eval_no_param_grads, _model_of, _Path, integration_points
from .extract import encode_pair, forward_batch
from .models import ModelBundle
from .record import Record
from .words import pooling_matrix

Span = tuple[str, int, int, int, int]  # difflib opcode: (tag, i1, i2, j1, j2) over target / contrast words


def differing_spans(target_words: Sequence[str], contrast_words: Sequence[str]) -> list[Span]:
    """difflib opcodes of the two word sequences that are not 'equal' (replace, insert, delete)."""
    sm = difflib.SequenceMatcher(a=list(target_words), b=list(contrast_words), autojunk=False)
    return [op for op in sm.get_opcodes() if op[0] != "equal"]


def span_rows(tgt_word_ids: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Decoder rows (label positions) of target words ``start:stop``.

    An empty span stands for the token emitted instead at that point: the row right after word
    ``start − 1`` (or the first word's first row when ``start`` is 0).
    """
    ids = np.asarray(tgt_word_ids)
    if stop > start:
        rows = np.flatnonzero((ids >= start) & (ids < stop))
        if len(rows) == 0:
            raise ValueError(f"target words {start}:{stop} have no tokens")
        return rows
    if start > 0:
        prev = np.flatnonzero(ids == start - 1)
        if len(prev) == 0:
            raise ValueError(f"target word {start - 1} has no tokens")
        row = int(prev.max()) + 1
        if row >= len(ids):
            raise ValueError("no decoder row follows the last target word")
        return np.array([row])
    first = np.flatnonzero(ids == 0)
    if len(first) == 0:
        raise ValueError("the target has no words")
    return first[:1]


@dataclass
class ContrastIG:
    """IG of ``Σ log p(good rows) − Σ log p(bad rows)`` for each differing position d."""

    source: np.ndarray  # [D, S] attribution to each encoder token
    f_x: np.ndarray  # [D] the log-prob difference at the input
    f_baseline: np.ndarray  # [D] the same at the baseline
    delta: np.ndarray  # [D] |Σ_s source[d, s] − (f_x − f_baseline)|
    steps: int
    baseline: str
    method: str


def contrastive_ig(model: Any, src_ids: np.ndarray, good: tuple[np.ndarray, np.ndarray],
                   bad: tuple[np.ndarray, np.ndarray], rows: Sequence[tuple[Sequence[int], Sequence[int]]],
                   steps: int = 32, baseline: str = "pad", method: str = "gausslegendre",
                   internal_batch_size: int = 64) -> ContrastIG:
    """Contrastive Integrated Gradients over the source token embeddings.

    ``good``/``bad``: (decoder input ids, label ids) of the two teacher-forced targets; ``rows[d]``:
    (rows of good, rows of bad) whose log-probs are summed into position d's objective. Source,
    path, baseline and integration rule are those of ``attribution.integrated_gradients``.
    """
    model = _model_of(model)
    if not rows:
        raise ValueError("contrastive_ig needs at least one position to explain")
    alphas_np, weights_np = integration_points(steps, method)
    pg = _Path(model, src_ids, good[0], good[1], baseline, target_prefix=False)
    pb = _Path(model, src_ids, bad[0], bad[1], baseline, target_prefix=False)
    dev = pg.x_src.device
    D, S = len(rows), len(pg.src)
    sel_g = torch.zeros(D, len(pg.dec), device=dev)
    sel_b = torch.zeros(D, len(pb.dec), device=dev)
    for d, (rg, rb) in enumerate(rows):
        rg, rb = np.asarray(rg, dtype=np.int64), np.asarray(rb, dtype=np.int64)
        for name, r, n in (("good", rg, len(pg.dec)), ("bad", rb, len(pb.dec))):
            if len(r) == 0 or r.min() < 0 or r.max() >= n:
                raise ValueError(f"position {d}: {name} rows {r.tolist()} must be non-empty and lie in [0, {n})")
        sel_g[d, torch.as_tensor(rg, device=dev)] = 1.0
        sel_b[d, torch.as_tensor(rb, device=dev)] = 1.0

    def objective(e_src: torch.Tensor) -> torch.Tensor:  # [B, S, dim] -> [B, D]
        B = e_src.shape[0]
        fg, _ = pg.logprobs(e_src, pg.x_dec.expand(B, -1, -1), None)
        fb, _ = pb.logprobs(e_src, pb.x_dec.expand(B, -1, -1), None)
        return fg @ sel_g.T - fb @ sel_b.T

    alphas = torch.as_tensor(alphas_np, dtype=torch.float32, device=dev)
    weights = torch.as_tensor(weights_np, dtype=torch.float64, device=dev)
    attr = torch.zeros(D, S, dtype=torch.float64, device=dev)
    d_src = pg.d_src.double()
    chunk = max(1, internal_batch_size // D)  # the vmapped backward holds D copies of each point
    with _eval_no_param_grads(model):
        with torch.no_grad():
            ends = objective(pg.points(torch.tensor([1.0, 0.0], device=dev))[0].detach())
        for j in range(0, len(alphas), chunk):
            e_src = pg.points(alphas[j: j + chunk])[0]
            F = objective(e_src)  # [B, D]
            grads = _per_position_grads(F, e_src)  # [D, B, S, dim]
            attr += ((grads.double() * d_src).sum(-1) * weights[None, j: j + chunk, None]).sum(1)
    src = attr.cpu().numpy()
    f_x, f_b = ends[0].double().cpu().numpy(), ends[1].double().cpu().numpy()
    delta = np.abs(src.sum(axis=1) - (f_x - f_b))
    return ContrastIG(source=src, f_x=f_x, f_baseline=f_b, delta=delta, steps=steps, baseline=baseline, method=method)


def _per_position_grads(F: torch.Tensor, leaf: torch.Tensor) -> torch.Tensor:
    """∂F[:, d]/∂leaf for every column d: [D, *leaf.shape]; one vmapped backward when D > 1."""
    D = F.shape[1]
    if D == 1:
        return torch.autograd.grad(F.sum(), leaf)[0][None]
    eye = torch.eye(D, dtype=F.dtype, device=F.device)[:, None, :].expand(D, F.shape[0], D)
    try:
        return torch.autograd.grad(F, leaf, grad_outputs=eye, is_grads_batched=True)[0]
    except RuntimeError as exc:  # an op without a batching rule: one backward per position
        warnings.warn(f"contrastive_ig: vmapped backward failed ({exc}); one backward per position",
                      RuntimeWarning, stacklevel=3)
        return torch.stack([torch.autograd.grad(F[:, d].sum(), leaf, retain_graph=d < D - 1)[0] for d in range(D)])


@dataclass
class ContrastPosition:
    """One place where the two targets differ."""

    kind: str  # difflib tag: replace / insert / delete
    target_span: tuple[int, int]  # target words [start, stop)
    contrast_span: tuple[int, int]  # contrast words [start, stop)
    target_text: str
    contrast_text: str
    target_rows: list[int]  # decoder rows whose log-probs make up each side's span
    contrast_rows: list[int]
    logprob_target: float  # log p(target span | source, target prefix)
    logprob_contrast: float
    difference: float  # logprob_target − logprob_contrast (> 0: the target is preferred here)
    attribution: list[float]  # per source word: IG of the difference (sum over the word's subwords)
    attribution_tokens: list[float]  # per encoder token, specials included
    f_baseline: float  # the difference at the IG baseline
    delta: float  # completeness gap |Σ attribution_tokens − (difference − f_baseline)|
    attention_target: list[float]  # per source word: cross-attention of the target's step
    attention_contrast: list[float]  # the same on the contrast side

    @property
    def relative_delta(self) -> float:
        diff = abs(self.difference - self.f_baseline)
        return self.delta / diff if diff > 0 else float("nan")


@dataclass
class ContrastResult:
    """Everything `contrast` finds for one source and two targets; `to_dict` is its JSON."""

    model: str
    source_words: list[str]
    target_words: list[str]
    contrast_words: list[str]
    source_tokens: list[str]
    source_token_words: list[int]
    logprob_target: float  # whole-sentence log-probs (</s> included)
    logprob_contrast: float
    positions: list[ContrastPosition]
    steps: int
    baseline: str
    layer: Any
    head: Any
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def difference(self) -> float:
        return self.logprob_target - self.logprob_contrast

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["difference"] = self.difference
        for p, pos in zip(out["positions"], self.positions):
            p["relative_delta"] = None if np.isnan(pos.relative_delta) else pos.relative_delta
        return out


def contrast_records(bundle: ModelBundle | Any, rec: Record, foil: Record, steps: int = 32, baseline: str = "pad",
                     layer: Selector | None = None, head: Selector = "mean", attribute: bool = True,
                     internal_batch_size: int = 64, method: str = "gausslegendre") -> ContrastResult:
    """Contrast two teacher-forced Records of the same source (see the module docstring).

    Their cross-attention may be full ([L, H, T, S]) or already reduced to one layer/head mix
    ([1, 1, T, S]); ``attribute=False`` skips IG (attributions are then empty lists).
    """
    if list(rec.src_ids) != list(foil.src_ids):
        raise ValueError("the two Records do not share a source: a contrast needs one source and two targets")
    spans = differing_spans(rec.tgt_words, foil.tgt_words)
    rows = [(span_rows(rec.tgt_word_ids, i1, i2), span_rows(foil.tgt_word_ids, j1, j2)) for _, i1, i2, j1, j2 in spans]
    n_src = len(rec.src_words)
    pool = pooling_matrix(rec.src_word_ids, n_src, "sum")
    ig = None
    if attribute and spans:
        ig = contrastive_ig(bundle, rec.src_ids, (rec.dec_ids, rec.label_ids), (foil.dec_ids, foil.label_ids), rows,
                            steps=steps, baseline=baseline, method=method, internal_batch_size=internal_batch_size)
    n_layers = None if rec.cross is None else rec.cross.shape[0]
    lay = (default_layer(n_layers) if n_layers else None) if layer is None else layer

    def attention(r: Record, row: int) -> list[float]:
        if r.cross is None:
            return []
        # [1, 1, T, S]: already reduced to the chosen layer/heads as it was extracted (or a 1x1 model)
        mat = r.cross[0, 0] if r.cross.shape[:2] == (1, 1) else select(r.cross, lay, head)
        return (pool @ mat[row]).astype(float).tolist()

    positions = []
    for d, ((kind, i1, i2, j1, j2), (rg, rb)) in enumerate(zip(spans, rows)):
        lp_g = float(np.sum(rec.token_logprobs[rg], dtype=np.float64))
        lp_b = float(np.sum(foil.token_logprobs[rb], dtype=np.float64))
        positions.append(ContrastPosition(
            kind=kind, target_span=(i1, i2), contrast_span=(j1, j2),
            target_text=" ".join(rec.tgt_words[i1:i2]), contrast_text=" ".join(foil.tgt_words[j1:j2]),
            target_rows=rg.tolist(), contrast_rows=rb.tolist(), logprob_target=lp_g, logprob_contrast=lp_b,
            difference=lp_g - lp_b,
            attribution=[] if ig is None else (pool @ ig.source[d]).tolist(),
            attribution_tokens=[] if ig is None else ig.source[d].tolist(),
            f_baseline=float("nan") if ig is None else float(ig.f_baseline[d]),
            delta=float("nan") if ig is None else float(ig.delta[d]),
            attention_target=attention(rec, int(rg[0])), attention_contrast=attention(foil, int(rb[0]))))
    return ContrastResult(
        model=rec.meta.get("model", getattr(bundle, "name", "")), source_words=list(rec.src_words),
        target_words=list(rec.tgt_words), contrast_words=list(foil.tgt_words), source_tokens=list(rec.src_tokens),
        source_token_words=np.asarray(rec.src_word_ids).tolist(),
        logprob_target=float(np.sum(rec.token_logprobs, dtype=np.float64)),
        logprob_contrast=float(np.sum(foil.token_logprobs, dtype=np.float64)), positions=positions,
        steps=steps, baseline=baseline, layer=lay, head=head)


def contrast(bundle: ModelBundle, source: str | Sequence[str], target: str | Sequence[str],
             contrast_target: str | Sequence[str], steps: int = 32, baseline: str = "pad",
             layer: Selector | None = None, head: Selector = "mean", attribute: bool = True,
             internal_batch_size: int = 64) -> ContrastResult:
    """Why ``target`` and not ``contrast_target`` for ``source``: both forced in one batched pass, then
    `contrast_records`. Words are split on ASCII spaces (as everywhere in aligndebug)."""
    encoded = [encode_pair(bundle, source, target, 0), encode_pair(bundle, source, contrast_target, 1)]
    if not encoded[0].tgt_words or not encoded[1].tgt_words:
        raise ValueError("both targets need at least one word")
    rec, foil = forward_batch(bundle, encoded, keep=("cross",))
    return contrast_records(bundle, rec, foil, steps=steps, baseline=baseline, layer=layer, head=head,
                            attribute=attribute, internal_batch_size=internal_batch_size)
