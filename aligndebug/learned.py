"""Learned alignment: a small module on top of a frozen encoder-decoder gives one source distribution per target token.

The module reads what one teacher-forced pass of the frozen model already computes (`extract.teacher_forced_pass`
with hidden states): the encoder output (what cross-attention reads) and the decoder hidden states of the chosen
layers. Queries are built per target token from a learned mix of those states; keys from the encoder output;
a scaled dot product and a softmax over the source tokens give the distribution. Special source tokens
(`</s>`, language codes, a T5 prefix) stay in the softmax as the "no source" slot, so a target word can be left
unaligned; they are never linked.

Context (Garg et al. 2019 read alignments from a decoder that sees the whole target):

- ``full``: row t (label position t, the token the decoder predicts there) is built from decoder state t (read
  y_<t) and state t+1 (read y_t), then one bidirectional self-attention layer over all target positions, so the
  query sees the whole target. Used by the supervised objective.
- ``causal``: state t only, causal self-attention (the query has read y_<t); the self-supervised objective needs
  this, since a query that has seen y_t could predict it without looking at the source.

Objectives:

- ``supervised``: cross-entropy to silver links (Pharaoh) normalised per target token: mass spread uniformly over
  the subwords of the linked source words, or over the special tokens when the word has no link.
- ``self`` (Shift-AET-like, Chen et al. 2020): the context vector sum_s p(s|t) V(enc_s) must predict y_t through
  the frozen model's output projection; no links needed. Alignment runs causal.
- ``both``: the two losses added; the supervised one on the full-context pass, the self one on a causal pass of
  the same weights. Alignment runs full-context.

Saved as `aligner.safetensors` + `aligner.json` (the card: base model name and fingerprint, layers, objective,
data, steps, AER curve). Loading on another model is refused with a message naming both.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .decoding import decode
from .extract import Encoded, encode_pair, length_batches, teacher_forced_pass, translate
from .models import DEFAULT_MODEL_DIR, ModelBundle, ModelLoadError
from .words import pool_to_words

WEIGHTS, CARD = "aligner.safetensors", "aligner.json"
OBJECTIVES = ("supervised", "self", "both")
DEFAULT_ALIGNER_DIR = DEFAULT_MODEL_DIR / "aligner"
Links = set[tuple[int, int]]


class AlignerMismatchError(ModelLoadError):
    """An aligner was asked to run on a model it was not trained for."""


# ------------------------------------------------------------------------------------ config and module

@dataclass
class AlignerConfig:
    """Shape and reading of the module; stored in the card."""

    d_model: int  # the base model's hidden size
    layers: list[int]  # indices into decoder_hidden_states: 0 = embeddings, l + 1 = output of decoder layer l
    objective: str = "supervised"
    dim: int = 192
    heads: int = 4
    ffn: int = 384
    dropout: float = 0.1
    enc_layers: list[int] | None = None  # encoder_hidden_states the keys mix (0 = embeddings); None: the output only

    @property
    def context(self) -> str:
        return "causal" if self.objective == "self" else "full"


def resolve_layers(spec: int | str | Sequence[int], n_layers: int) -> list[int]:
    """'all' (embeddings and every decoder layer), one decoder layer (0-based, negative from the end) or a list,
    as indices into decoder_hidden_states (embeddings at 0)."""
    if spec == "all" or spec == "mean":
        return list(range(n_layers + 1))
    items = [spec] if isinstance(spec, (int, np.integer)) else list(spec)
    out = []
    for l in items:
        if not -n_layers <= int(l) < n_layers:
            raise ValueError(f"decoder layer {l} does not exist: the model has {n_layers} (0-based; negative counts from the end)")
        out.append(int(l) % n_layers + 1)
    return sorted(set(out))


class AlignerModule(nn.Module):
    """Query mix over decoder states, optional full-target self-attention, key MLP over the encoder output."""

    def __init__(self, cfg: AlignerConfig, vocab_out: int | None = None):
        super().__init__()
        self.cfg = cfg
        d, k = cfg.d_model, cfg.dim
        self.mix = nn.Parameter(torch.zeros(len(cfg.layers)))
        self.state_norm = nn.LayerNorm(d)
        self.query_in = nn.Linear(2 * d, k)  # [state t ; state t+1]; the causal pass zeroes the second half
        self.context = nn.TransformerEncoderLayer(k, cfg.heads, cfg.ffn, cfg.dropout, batch_first=True, norm_first=True)
        self.query_out = nn.Sequential(nn.LayerNorm(k), nn.Linear(k, k))
        if cfg.enc_layers is not None:
            self.enc_mix = nn.Parameter(torch.zeros(len(cfg.enc_layers)))
        self.key = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, k), nn.GELU(), nn.Linear(k, k))
        if cfg.objective in ("self", "both"):
            self.value = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d))  # context vector -> the output projection's input

    def logits(self, enc: torch.Tensor, enc_mask: torch.Tensor, states: torch.Tensor, tgt_mask: torch.Tensor,
               causal: bool) -> torch.Tensor:
        """[B, T, S] alignment scores (padding columns at -inf). `states` is [K, B, T, d]; `enc` is [B, S, d] or,
        with `enc_layers`, [K', B, S, d] (mixed here); masks are bool."""
        if enc.dim() == 4:
            enc = torch.einsum("k,kbsd->bsd", torch.softmax(self.enc_mix, 0), enc)
        w = torch.softmax(self.mix, 0)
        x = torch.einsum("k,kbtd->btd", w, self.state_norm(states))
        nxt = torch.zeros_like(x)
        if not causal:
            nxt[:, :-1] = x[:, 1:] * tgt_mask[:, 1:, None]
        h = self.query_in(torch.cat([x, nxt], dim=-1))
        t = h.shape[1]
        attn_mask = torch.triu(torch.ones(t, t, dtype=torch.bool, device=h.device), 1) if causal else None
        h = self.context(h, src_mask=attn_mask, src_key_padding_mask=~tgt_mask)
        q, k = self.query_out(h), self.key(enc)
        scores = torch.einsum("btk,bsk->bts", q, k) / math.sqrt(self.cfg.dim)
        return scores.masked_fill(~enc_mask[:, None, :], float("-inf"))


def n_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------ fingerprint

def model_fingerprint(model: Any) -> str:
    """A short hash of the model's config and weights (names, shapes and per-tensor sums and edge values),
    cheap enough to compute on every load, that changes when any weight tensor does by more than half
    precision's rounding. The weights are read in half precision, so the model loaded on a GPU
    (`load_model(..., device="cuda")` halves it) has the fingerprint of the same model in float32."""
    h = hashlib.sha256()
    cfg = model.config.to_dict()
    for key in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "_attn_implementation",
                "_attn_implementation_autoset", "architectures"):
        cfg.pop(key, None)
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in sorted(model.state_dict().items()):
            q = p.detach().cpu()
            flat = (q.half() if q.is_floating_point() else q).float().flatten()
            h.update(name.encode())
            h.update(str(tuple(p.shape)).encode())
            edge = torch.cat([flat[:8], flat[-8:]]) if flat.numel() else flat
            h.update(np.asarray([flat.double().sum().item(), flat.abs().double().sum().item()]).round(4).tobytes())
            h.update(edge.numpy().round(5).tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------ targets and batches

def _one_teacher(enc: Encoded, ls: Links) -> tuple[np.ndarray, np.ndarray]:
    """[label positions, source tokens] distribution of one teacher's links and the rows that carry a loss."""
    w = np.zeros((len(enc.tgt_words), len(enc.src_words)), dtype=np.float32)
    if ls:
        i, j = np.asarray(sorted(ls)).T
        w[j, i] = 1.0
    tw, sw = enc.tgt_word_ids, enc.src_word_ids
    m = w[np.ix_(np.clip(tw, 0, None), np.clip(sw, 0, None))] * (tw >= 0)[:, None] * (sw >= 0)[None, :]
    unaligned = (tw >= 0) & (m.sum(1) == 0)
    m[unaligned] = (sw < 0).astype(np.float32)
    total = m.sum(1, keepdims=True)
    return np.divide(m, total, out=np.zeros_like(m), where=total > 0), (tw >= 0) & (total[:, 0] > 0)


def silver_targets(batch: Sequence[Encoded], links: Sequence[Links | Sequence[Links | None]], t_len: int, s_len: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """([B, T, S] target distributions, [B, T] rows that carry a loss) from word links (source word, target word).

    A target word token spreads its mass uniformly over the subwords of its linked source words; a word with no
    link puts it on the special source tokens (the "no source" slot). Special target tokens carry no loss.
    A pair's links may also be a tuple or list of link sets, one per teacher (None: that teacher has no links for
    the pair): the target is then the mean of the teachers' distributions, so the cross-entropy is the mean of the
    cross-entropies to each teacher (per row, over the teachers that give that row a distribution).
    """
    q = np.zeros((len(batch), t_len, s_len), dtype=np.float32)
    rows = np.zeros((len(batch), t_len), dtype=bool)
    for b, (enc, ls) in enumerate(zip(batch, links)):
        teachers = [t for t in ls if t is not None] if isinstance(ls, (tuple, list)) else [ls]
        if not teachers:
            continue
        dists = [_one_teacher(enc, t) for t in teachers]
        n = np.sum([r for _, r in dists], axis=0)  # teachers that give the row a distribution
        total = np.sum([d for d, _ in dists], axis=0)
        q[b, :len(enc.label_ids), :len(enc.src_ids)] = total / np.maximum(n, 1)[:, None]
        rows[b, :len(enc.label_ids)] = n > 0
    return q, rows


def _states(out: Any, layers: Sequence[int]) -> torch.Tensor:
    hs = out.decoder_hidden_states
    if hs is None or out.encoder_last_hidden_state is None:
        raise RuntimeError("the model returned no hidden states; it must support output_hidden_states")
    return torch.stack([hs[i] for i in layers]).float()


def _n_encoder_layers(bundle: ModelBundle) -> int:
    cfg = bundle.model.config
    return int(getattr(cfg, "encoder_layers", None) or getattr(cfg, "num_layers"))


def _output_projection(model: Any) -> tuple[nn.Module, torch.Tensor | None]:
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output projection: the 'self' objective needs one")
    return head, getattr(model, "final_logits_bias", None)


# ------------------------------------------------------------------------------------ the aligner

@dataclass
class LearnedAligner:
    """A trained module plus its card; `align` and `matrices` run it over sentence pairs on a bundle."""

    module: AlignerModule
    card: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None  # where it was loaded from (None: made in this process)

    @property
    def config(self) -> AlignerConfig:
        return self.module.cfg

    @classmethod
    def new(cls, bundle: ModelBundle, layers: int | str | Sequence[int] = "all", objective: str = "supervised",
            dim: int | None = None, seed: int = 0, enc_layers: str | None = "all") -> "LearnedAligner":
        """A fresh module for `bundle`. `enc_layers` 'all': keys mix the encoder's embeddings and every encoder
        layer (token identity survives there better than in the last layer alone); None: the encoder output only."""
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}: expected one of {OBJECTIVES}")
        d = int(bundle.model.config.d_model)
        dim = dim or min(192, d)
        heads = next(h for h in (4, 2, 1) if dim % h == 0)
        cfg = AlignerConfig(d_model=d, layers=resolve_layers(layers, bundle.num_layers), objective=objective,
                            dim=dim, heads=heads, ffn=2 * dim,
                            enc_layers=None if enc_layers is None else list(range(_n_encoder_layers(bundle) + 1)))
        torch.manual_seed(seed)
        card = {"base_model": bundle.name, "base_family": bundle.family, "fingerprint": model_fingerprint(bundle.model)}
        return cls(AlignerModule(cfg).to(bundle.device), card)

    # -- model passes

    def _pass(self, bundle: ModelBundle, batch: Sequence[Encoded]):
        with torch.no_grad():
            out, (src, src_mask, labels, lab_mask, dec) = teacher_forced_pass(bundle, batch, attentions=False,
                                                                              hidden_states=True, logits=False)
            return self._inputs(out, src_mask, lab_mask, labels)

    def _inputs(self, out: Any, src_mask: torch.Tensor, lab_mask: torch.Tensor, labels: torch.Tensor):
        """What the module reads of a pass made with hidden states (`teacher_forced_pass`'s output and masks)."""
        enc = out.encoder_last_hidden_state.float()
        states = _states(out, self.config.layers)
        keys_in = enc if self.config.enc_layers is None else \
            torch.stack([out.encoder_hidden_states[i] for i in self.config.enc_layers]).float()
        dev = enc.device
        self.module.to(dev)  # an aligner loaded on its own (or shipped to a Ray actor) meets the model's device
        return keys_in, enc, src_mask.to(dev), states, lab_mask.to(dev), labels.to(dev)

    def losses(self, bundle: ModelBundle, batch: Sequence[Encoded], links: Sequence[Links] | None) -> dict[str, torch.Tensor]:
        """The objective's losses on one batch (mean over target tokens); 'loss' is their sum."""
        keys_in, enc, src_mask, states, lab_mask, labels = self._pass(bundle, batch)
        obj, out = self.config.objective, {}
        if obj in ("supervised", "both"):
            if links is None:
                raise ValueError(f"the {obj!r} objective needs silver links")
            q, rows = silver_targets(batch, links, states.shape[2], enc.shape[1])
            q, rows = torch.from_numpy(q).to(enc.device), torch.from_numpy(rows).to(enc.device)
            logp = torch.log_softmax(self.module.logits(keys_in, src_mask, states, lab_mask, causal=False), -1)
            ce = -(q * logp.masked_fill(q == 0, 0.0)).sum(-1)
            out["supervised"] = ce[rows].mean() if rows.any() else ce.sum() * 0
        if obj in ("self", "both"):
            p = torch.softmax(self.module.logits(keys_in, src_mask, states, lab_mask, causal=True), -1)
            ctx = self.module.value(torch.einsum("bts,bsd->btd", p, enc))
            head, bias = _output_projection(bundle.model)
            # detached weights: the loss trains the module, never the frozen model (nor fills its .grad);
            # in float32 like the module, also when the model is in half precision on a GPU
            logits = nn.functional.linear(ctx, head.weight.detach().float(),
                                          None if getattr(head, "bias", None) is None else head.bias.detach().float())
            if bias is not None:
                logits = logits + bias.detach().float()
            keep = lab_mask & (labels >= 0)
            out["self"] = nn.functional.cross_entropy(logits[keep].float(), labels[keep])
        out["loss"] = sum(out.values())
        return out

    @torch.no_grad()
    def token_distributions(self, bundle: ModelBundle, batch: Sequence[Encoded],
                            passed: tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
                            ) -> list[np.ndarray]:
        """Per pair, [T label positions, S source tokens] distributions (rows of special targets included).
        `passed`: (output, source mask, label mask, labels) of a pass over `batch` already made with hidden
        states (`extract.forward_batch` with an aligner), read instead of a pass of its own."""
        keys_in, _, src_mask, states, lab_mask, _ = (self._pass(bundle, batch) if passed is None
                                                     else self._inputs(*passed))
        was_training = self.module.training
        self.module.eval()  # no dropout in what it aligns, also mid-training (the dev AER) or in a triage pass
        try:
            logits = self.module.logits(keys_in, src_mask, states, lab_mask, causal=self.config.context == "causal")
        finally:
            self.module.train(was_training)
        p = torch.softmax(logits, -1)
        p = p.cpu().numpy()
        return [p[b, :len(e.label_ids), :len(e.src_ids)] for b, e in enumerate(batch)]

    # -- alignment

    def word_matrices(self, bundle: ModelBundle, batch: Sequence[Encoded],
                      passed: tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> list[np.ndarray]:
        """Per pair, [target words, source words + 1]: sum over a source word's subwords, mean over a target
        word's; the last column is the mass on the special tokens (no source). `passed`: as `token_distributions`."""
        out = []
        for e, p in zip(batch, self.token_distributions(bundle, batch, passed)):
            nulls = np.where(e.src_word_ids < 0, len(e.src_words), e.src_word_ids)
            out.append(pool_to_words(p, nulls, e.tgt_word_ids, len(e.src_words) + 1, len(e.tgt_words)))
        return out

    def iter_word_matrices(self, bundle: ModelBundle, sources: Sequence[str | Sequence[str]],
                           targets: Sequence[str | Sequence[str]] | None = None, batch_size: int = 32, beam: int = 1
                           ) -> Iterator[tuple[int, "LearnedView"]]:
        """(index, LearnedView) for every pair, batch by batch in length-sorted order, one forward pass a batch (as
        `extract.iter_extract` yields Records). Without targets the model translates first. A pair that cannot be
        used raises SentenceError with its index before any pass."""
        forced = targets is not None
        if targets is None:
            targets = translate(bundle, sources, beam=beam)
        encoded = [encode_pair(bundle, s, t, i) for i, (s, t) in enumerate(zip(sources, targets, strict=True))]
        for idx in length_batches([len(e.src_ids) + len(e.label_ids) for e in encoded], batch_size):
            for i, mat in zip(idx, self.word_matrices(bundle, [encoded[i] for i in idx])):
                yield i, LearnedView(encoded[i], mat, forced)

    def align_encoded(self, bundle: ModelBundle, encoded: Sequence[Encoded], rule: str = "argmax",
                      threshold: float | None = None, batch_size: int = 32,
                      on_progress: Callable[[int], None] | None = None) -> list[Links]:
        """Word links (source word, target word) for every pre-encoded pair, in input order."""
        result: list[Links] = [set()] * len(encoded)
        for idx in length_batches([len(e.src_ids) + len(e.label_ids) for e in encoded], batch_size):
            for i, mat in zip(idx, self.word_matrices(bundle, [encoded[i] for i in idx])):
                result[i] = links_from_word_matrix(mat, rule, threshold)
            if on_progress is not None:
                on_progress(len(idx))
        return result

    def align(self, bundle: ModelBundle, sources: Sequence[str | Sequence[str]], targets: Sequence[str | Sequence[str]],
              rule: str = "argmax", threshold: float | None = None, batch_size: int = 32) -> list[Links]:
        """Word links for every (source, target) pair; raises SentenceError naming a pair that cannot be used."""
        self.check_model(bundle)
        encoded = [encode_pair(bundle, s, t, i) for i, (s, t) in enumerate(zip(sources, targets, strict=True))]
        return self.align_encoded(bundle, encoded, rule, threshold, batch_size)

    # -- saving and loading

    def check_model(self, bundle: ModelBundle, where: str = "this aligner") -> None:
        want, got = self.card.get("fingerprint"), model_fingerprint(bundle.model)
        if want != got:
            raise AlignerMismatchError(
                f"{where} was trained for model {self.card.get('base_model')!r} (fingerprint {want}), but the loaded "
                f"model is {bundle.name!r} (fingerprint {got}); train an aligner for this model with "
                "`aligndebug train-aligner --model ...`")

    def save(self, out_dir: Path | str, **card_updates: Any) -> Path:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.card.update(card_updates)
        self.card.update({"config": asdict(self.config), "parameters": n_parameters(self.module)})
        state = {k: v.detach().contiguous().cpu() for k, v in self.module.state_dict().items()}
        save_file(state, str(out / (WEIGHTS + ".tmp")))
        (out / (WEIGHTS + ".tmp")).replace(out / WEIGHTS)
        tmp = out / (CARD + ".tmp")
        tmp.write_text(json.dumps(self.card, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(out / CARD)
        return out


@dataclass
class LearnedView:
    """What the aligner gives for one pair: its encoding, the [target words, source words + 1] matrix (last column:
    no source) and whether the target was given (else the model's translation)."""

    encoded: Encoded
    matrix: np.ndarray
    forced: bool = True

    def links(self, rule: str = "argmax", threshold: float | None = None) -> Links:
        return links_from_word_matrix(self.matrix, rule, threshold)


def load_aligner(path: Path | str | None, bundle: ModelBundle | None = None) -> LearnedAligner:
    """Load an aligner folder (None or 'default': the embedded model's); with `bundle`, refuse a model it was not
    trained for (AlignerMismatchError naming both)."""
    from safetensors.torch import load_file

    folder = DEFAULT_ALIGNER_DIR if path in (None, "", "default") else Path(path)
    if not (folder / CARD).exists() or not (folder / WEIGHTS).exists():
        raise ModelLoadError(f"{folder} is not an aligner folder: expected {CARD} and {WEIGHTS} "
                             "(made by `aligndebug train-aligner`)")
    card = json.loads((folder / CARD).read_text(encoding="utf-8"))
    cfg = AlignerConfig(**card["config"])
    module = AlignerModule(cfg)
    module.load_state_dict(load_file(str(folder / WEIGHTS)))
    module.eval()
    aligner = LearnedAligner(module, card, folder)
    if bundle is not None:
        aligner.check_model(bundle, where=f"aligner {folder}")
        module.to(bundle.device)  # before any optimizer state is loaded for it (a resumed training)
    return aligner


def links_from_word_matrix(mat: np.ndarray, rule: str = "argmax", threshold: float | None = None) -> Links:
    """(source word, target word) links from a [target words, source words + null] matrix; the null column is
    the "no source" slot that competes but is never linked."""
    n = mat.shape[1] - 1
    null = np.zeros(n + 1, dtype=bool)
    null[n] = True
    rows, cols = decode(mat, rule, threshold=threshold, null=null)
    return set(zip(cols.tolist(), rows.tolist()))


def triage_aligner(bundle: ModelBundle, path: Path | str | None = None) -> LearnedAligner | None:
    """The aligner whose links triage reads (`signals.aligner_signals`): the one at `path` (refused on a model it
    was not trained for), "none" for none, or by default the embedded model's aligner when `bundle` is the model
    it was trained for (same fingerprint), else none: an aligner trained for another model would align noise."""
    if path is not None and str(path) != "default":
        return None if str(path) == "none" else load_aligner(path, bundle)
    try:
        aligner = load_aligner(None)
    except ModelLoadError:  # an install without the embedded aligner
        return None
    # a model of another width or depth is not its model: no need to hash every weight of a large one to know
    if getattr(bundle.model.config, "d_model", None) != aligner.config.d_model \
            or max(aligner.config.layers) > bundle.num_layers \
            or aligner.card.get("fingerprint") != model_fingerprint(bundle.model):
        return None
    aligner.module.to(bundle.device)
    return aligner


def aligner_id(aligner: LearnedAligner | None) -> str | None:
    """What names an aligner in a calibration's settings: a hash of its weights (None: no aligner)."""
    if aligner is None:
        return None
    h = hashlib.sha256()
    for k, v in sorted(aligner.module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
