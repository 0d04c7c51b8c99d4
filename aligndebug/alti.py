"""ALTI+ source contribution (Ferrando et al., 2022, "Towards Opening the Black Box of Neural Machine
Translation: Source and Target Contributions to the Model's Predictions"), the hallucination detector
of Dale et al. (ACL 2023).

**Per attention sublayer** (every encoder self-attention, decoder self- and cross-attention), the
output at query position i is decomposed into one vector per input token j (ALTI, Ferrando et al.,
2022a, "Measuring the Mixing of Contextual Information in the Transformer"):

    z_ij = sum_h A^h_ij · W_O^h v^h_j            (v^h_j: the value vector, bias included)
         + x_i  when j is the residual           (self-attention: j = i; cross-attention: an extra
                                                  column, the decoder's own residual stream)

* pre-LN blocks (mBART, M2M100, NLLB, T5): the block output is y_i = sum_j z_ij + b_O; the norm
  before the attention acts on each token alone, so it belongs to v_j and needs no treatment.
* post-LN blocks (Marian, BART): the block output is LN(sum_j z_ij + b_O). LayerNorm is linear in
  its input once the token's standard deviation sigma_i is fixed, so each part is carried through
  it as z'_ij = gamma ⊙ (z_ij − mean(z_ij)) / sigma_i, and y_i = sum_j z'_ij + gamma ⊙ (b_O −
  mean(b_O)) / sigma_i + beta (the biases belong to no token).

The contribution of j to i is the L1-distance rule of ALTI, c_ij = max(0, ||y_i||_1 − ||y_i −
z_ij||_1), normalised so each row sums to 1. The feed-forward blocks and final norms act on each
token alone and mix nothing, so they are the identity here (as in ALTI).

**Rollout through the model.** Encoder: R_enc = C_L ··· C_1 ([S, S]). Decoder: a [T, S+T] matrix
whose rows say how much of decoder position t comes from each source token and each decoder input
token, starting at R = [0 | I]; each decoder layer applies its self-attention contributions,
R ← C_self R, then its cross-attention ones, R ← C_cross[:, :S] [R_enc | 0] + C_cross[:, S] ⊙ R
(column S of C_cross is the residual). Every row of R sums to 1; **source contribution** of row t
(which predicts label t) is the sum of its first S entries. Low source contribution means the
prediction leans on the target prefix rather than the source: the pattern of detached output.

Contribution is not causation: it measures how much of a vector's L1 geometry a token accounts for,
not what would change if the token were removed.

Everything comes from ONE forward pass per batch with hooks on every attention module (its
weights and output), its value projection and the residual stream (`AltiTracer`); padding keys get
zero attention, hence zero contribution, so a batched pass equals single passes up to float error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .signals import logprob_positions

# model_type -> whether the attention blocks normalise before (pre-LN) or after (post-LN)
PRE_LN = {"marian": False, "bart": False, "mbart": True, "m2m_100": True, "t5": True, "mt5": True, "umt5": True}
MAX_ELEMENTS = 1 << 20  # largest [B, q, K, d] block of decomposed vectors held at once (4 MB in float32: cache-sized)
SELF_BLOCK = 8  # query rows per block in causal self-attention


@dataclass
class AltiResult:
    """ALTI+ of one sentence pair. Row t of the decoder side predicts label t (design notes)."""

    source_share: np.ndarray  # [T] share of row t's prediction that comes from the source tokens
    positions: np.ndarray  # label positions that hold target word tokens and the closing </s>
    total: np.ndarray | None = None  # [T, S+T] full rollout (source tokens, then decoder inputs)
    encoder: np.ndarray | None = None  # [S, S] encoder rollout

    @property
    def sentence_score(self) -> float:
        """Mean source contribution over the scored label positions (low = suspect); NaN if none."""
        s = self.source_share[self.positions]
        return float(s.mean()) if s.size else float("nan")


# --------------------------------------------------------------------------- the math (torch, batched)

def sublayer_contributions(attn: torch.Tensor, values: torch.Tensor, w_o: torch.Tensor, b_o: torch.Tensor | None,
                           residual: torch.Tensor, cross: bool,
                           ln: tuple[torch.Tensor, torch.Tensor, float] | None = None,
                           max_elements: int = MAX_ELEMENTS, out: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """ALTI contributions of one attention sublayer (see the module docstring), in float32.

    attn [B, H, Q, K] attention weights, values [B, K, H*dh] value vectors (bias included), w_o
    [d, H*dh], b_o [d] or None, residual [B, Q, d] the residual stream entering the block, `ln`
    (gamma, beta, eps) for a post-LN block. Returns (c [B, Q, K(+1)], y [B, Q, d]): the
    contributions, rows summing to 1 (self-attention: the residual is on the diagonal;
    cross-attention: it is column K), and the block output.

    The rule c_ij = max(0, ||y_i||_1 − ||y_i − z_ij||_1), normalised over j. A row where every c is
    0 (the parts cancel out) cannot be shared out by the rule; it is shared in proportion to the
    parts' L1 norms instead, so masked positions (zero parts) still get nothing.

    LayerNorm's centring and gamma are linear, so they are folded into W_O and applied to the
    residual before the parts are formed, and 1/sigma_i to the attention rows: only the parts
    themselves, [B, q, K, d] for a block of q query rows under `max_elements`, are ever held.
    `out`, the attention module's output (W_O and its bias applied), saves rebuilding the block's sum.
    """
    attn, values, residual, w_o = attn.float(), values.float(), residual.float(), w_o.float()
    b, h, q, k = attn.shape
    d = w_o.shape[0]
    w = w_o.reshape(d, h, -1)  # W_O split by head: [d, H, dh]
    if out is not None:  # the module's own output (W_O applied, bias included): the sum need not be rebuilt
        s = residual + out.float()
    else:
        vw = torch.einsum("bkhc,dhc->bhkd", values.reshape(b, k, h, -1), w)  # W_O^h v^h_j: [B, H, K, d]
        bias = b_o.float() if b_o is not None else vw.new_zeros(d)
        s = torch.einsum("bhqk,bhkd->bqd", attn, vw) + residual + bias  # the block's sum, before any norm
    if ln is None:
        y, res, a = s, residual, attn
    else:
        gamma, beta, eps = ln[0].float(), ln[1].float(), ln[2]
        sigma = torch.sqrt(s.var(-1, unbiased=False, keepdim=True) + eps)  # [B, Q, 1]: LayerNorm's own scale
        y = (s - s.mean(-1, keepdim=True)) * gamma / sigma + beta
        w = (w - w.mean(0, keepdim=True)) * gamma[:, None, None]  # centring and gamma folded into W_O
        res = (residual - residual.mean(-1, keepdim=True)) * gamma / sigma
        a = attn / sigma[:, None]
    # the parts W_O^h v^h_j, one product per head over all (batch, key) rows, laid out [B, K, H, d]
    parts = torch.bmm(values.reshape(b * k, h, -1).transpose(0, 1), w.permute(1, 2, 0))
    parts = parts.transpose(0, 1).reshape(b, k, h, d)
    step = max(1, max_elements // max(1, b * k * d))
    if not cross:  # causal self-attention: a block of rows attends to no key past its last row, so
        step = min(step, SELF_BLOCK)  # smaller blocks skip most of the unattended future
    cs = []
    for lo in range(0, q, step):  # blocks of query rows, not tokens
        hi = min(q, lo + step)
        kend = k
        if not cross:  # keys past the last one any row of the block attends to have zero parts
            attended = torch.nonzero(attn[:, :, lo:hi].sum((0, 1, 2)) > 0)
            kend = min(k, max(hi, int(attended[-1]) + 1 if len(attended) else hi))
        # parts laid out [B, K, q, d]: one batched product over the heads writes them once
        z = torch.matmul(a[:, :, lo:hi, :kend].permute(0, 3, 2, 1), parts[:, :kend])
        yb, rb = y[:, lo:hi], res[:, lo:hi]
        rows = torch.arange(hi - lo, device=z.device)
        if not cross:  # the residual belongs to the diagonal part
            z[:, rows + lo, rows] += rb
        dist = (z - yb[:, None]).abs_().sum(-1).transpose(1, 2)  # [B, q, kend]
        if cross:
            dist = torch.cat([dist, (yb - rb).abs().sum(-1, keepdim=True)], dim=-1)
        c = (yb.abs().sum(-1, keepdim=True) - dist).clamp(min=0)
        # a key no head attends to (padding, the future) has a zero part; float error in the distances
        # must not hand it a sliver
        seen = attn[:, :, lo:hi, :kend].sum(1) > 0
        if cross:
            seen = torch.cat([seen, seen.new_ones(b, hi - lo, 1)], dim=-1)
        else:
            seen[:, rows, rows + lo] = True
        c = c * seen
        total = c.sum(-1, keepdim=True)
        if bool((total <= 0).any()):
            norms = z.abs().sum(-1).transpose(1, 2)
            if cross:
                norms = torch.cat([norms, rb.abs().sum(-1, keepdim=True)], dim=-1)
            c = torch.where(total > 0, c, norms)
            total = c.sum(-1, keepdim=True)
        c = c / total.clamp(min=torch.finfo(c.dtype).tiny)
        cs.append(torch.nn.functional.pad(c, (0, k - kend)) if kend < k else c)
    return torch.cat(cs, 1), y


def encoder_rollout(enc: Sequence[torch.Tensor]) -> torch.Tensor:
    """R_enc = C_L ··· C_1 for per-layer contributions [B, S, S] (later layers on the left)."""
    r = enc[0]
    for c in enc[1:]:
        r = c @ r
    return r


def full_rollout(enc: Sequence[torch.Tensor], dec_self: Sequence[torch.Tensor], dec_cross: Sequence[torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(total [B, T, S+T], encoder rollout [B, S, S]) from per-layer contributions: encoder [B, S, S],
    decoder self [B, T, T], cross [B, T, S+1] (column S: the residual)."""
    r_enc = encoder_rollout(enc)
    b, s = r_enc.shape[:2]
    t = dec_self[0].shape[1]
    eye = torch.eye(t, dtype=r_enc.dtype, device=r_enc.device)
    r = torch.cat([r_enc.new_zeros(b, t, s), eye.expand(b, t, t)], dim=2)
    enc_part = torch.cat([r_enc, r_enc.new_zeros(b, s, t)], dim=2)  # source tokens reach nothing on the target side
    for c_self, c_cross in zip(dec_self, dec_cross):
        r = c_self @ r
        r = c_cross[:, :, :s] @ enc_part + c_cross[:, :, s:] * r
    return r, r_enc


# --------------------------------------------------------------------------- hooks on a model

def _stacks(model: Any) -> tuple[list[tuple[Any, Any, bool]], list[tuple[Any, Any, bool]]]:
    """The model's attention modules with the norm that sits beside each, per stack, in call order:
    (attention, layer norm, is_cross)."""
    enc, dec = model.get_encoder(), model.get_decoder()
    if hasattr(enc, "block"):  # T5: block[i].layer = [self-attention, (cross-attention,) feed-forward]
        e = [(blk.layer[0].SelfAttention, blk.layer[0].layer_norm, False) for blk in enc.block]
        d = []
        for blk in dec.block:
            d += [(blk.layer[0].SelfAttention, blk.layer[0].layer_norm, False),
                  (blk.layer[1].EncDecAttention, blk.layer[1].layer_norm, True)]
        return e, d
    e = [(lay.self_attn, lay.self_attn_layer_norm, False) for lay in enc.layers]
    d = []
    for lay in dec.layers:
        d += [(lay.self_attn, lay.self_attn_layer_norm, False), (lay.encoder_attn, lay.encoder_attn_layer_norm, True)]
    return e, d


def _projections(attn: Any) -> tuple[Any, Any]:
    """(value projection, output projection) of an attention module (BART-like or T5 naming)."""
    if hasattr(attn, "v_proj"):
        return attn.v_proj, attn.out_proj
    return attn.v, attn.o


class AltiTracer:
    """Hooks that compute every sublayer's ALTI contributions during any forward pass of `model`.

    Use as a context manager around one forward pass (eager attention: the weights must be
    returned); then `rollout()` gives the rollouts. The contributions are computed inside the hooks
    as each layer runs, so only [B, Q, K] matrices are kept, never the per-token vectors.
    """

    def __init__(self, model: Any, check: bool = True, encoder: bool = True):
        mt = model.config.model_type
        if mt not in PRE_LN:
            raise ValueError(f"ALTI+ knows the block layout of {sorted(PRE_LN)} models, not {mt!r}")
        self.model, self.pre_ln, self.check, self.with_encoder = model, PRE_LN[mt], check, encoder
        self.enc: list[torch.Tensor] = []
        self.dec_self: list[torch.Tensor] = []
        self.dec_cross: list[torch.Tensor] = []
        self._handles: list[Any] = []
        self._state: dict[str, Any] = {}

    def __enter__(self) -> "AltiTracer":
        enc, dec = _stacks(self.model)
        for stack, mods in (("enc", enc if self.with_encoder else []), ("dec", dec)):
            for attn, norm, cross in mods:
                self._attach(stack, attn, norm, cross)
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _attach(self, stack: str, attn: Any, norm: Any, cross: bool) -> None:
        v_proj, o_proj = _projections(attn)
        st = self._state

        def norm_pre(_m, args):  # pre-LN: the norm's input is the residual stream
            st["norm_in"] = args[0]

        def norm_post(_m, _args, out):
            st["norm_out"] = out

        def attn_pre(_m, args, kwargs):
            st["query_in"] = args[0] if args else kwargs["hidden_states"]

        def v_out(_m, _args, out):
            st["values"] = out

        def attn_post(_m, _args, out):
            weights = out[-1]
            if weights is None:
                raise RuntimeError("the attention returned no weights: load the model with eager attention")
            attn_out = out[0]
            if self.pre_ln:
                if "norm_in" not in st:
                    raise RuntimeError("ALTI+: the norm beside the attention did not run before it; "
                                       "this block is not pre-LN")
                residual = st.pop("norm_in")
                if self.check:
                    _close(st.pop("norm_out"), st["query_in"], "the norm's output is not the attention's input")
                ln = None
            else:
                residual = st["query_in"]
                ln = (norm.weight, norm.bias, norm.eps)
            # checked, the sum is rebuilt from the parts, so the check below tests the decomposition;
            # unchecked, the module's own output saves that product
            c, y = sublayer_contributions(weights, st.pop("values"), o_proj.weight, o_proj.bias, residual, cross, ln,
                                          out=None if self.check else attn_out)
            if self.check:
                want = residual.float() + attn_out.float()
                if ln is not None:
                    want = torch.nn.functional.layer_norm(want, want.shape[-1:], ln[0].float(), ln[1].float(), ln[2])
                _close(y, want, "the decomposed parts do not add up to the block output")
            (self.enc if stack == "enc" else self.dec_cross if cross else self.dec_self).append(c)

        if self.pre_ln:
            self._handles += [norm.register_forward_pre_hook(norm_pre), norm.register_forward_hook(norm_post)]
        self._handles += [attn.register_forward_pre_hook(attn_pre, with_kwargs=True),
                          v_proj.register_forward_hook(v_out), attn.register_forward_hook(attn_post)]

    def reset(self) -> None:
        """Forget the contributions traced so far (before the next pass)."""
        self.enc.clear()
        self.dec_self.clear()
        self.dec_cross.clear()

    def source_share(self) -> torch.Tensor:
        """[B, T] source contribution of every decoder row, from the decoder's contributions alone:
        every row of R_enc sums to 1, so the source columns of C_cross R_enc sum to those of C_cross,
        and the encoder need not be traced (`encoder=False`)."""
        if not self.dec_self or len(self.dec_self) != len(self.dec_cross):
            raise RuntimeError("no complete decoder pass was traced")
        share = self.dec_self[0].new_zeros(self.dec_self[0].shape[:2])
        for c_self, c_cross in zip(self.dec_self, self.dec_cross):
            share = (c_self @ share[..., None])[..., 0]
            share = c_cross[:, :, :-1].sum(-1) + c_cross[:, :, -1] * share
        return share

    def rollout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(total [B, T, S+T], encoder rollout [B, S, S]) of the traced pass."""
        if not self.enc or not self.dec_self or len(self.dec_self) != len(self.dec_cross):
            raise RuntimeError("no complete encoder-decoder pass was traced")
        return full_rollout(self.enc, self.dec_self, self.dec_cross)


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """Relative agreement check of the decomposition against what the model computed."""
    got, want = got.float(), want.float()
    err = (got - want).abs().max().item()
    scale = want.abs().max().item() + 1e-6
    if err > 1e-3 * scale:
        raise RuntimeError(f"ALTI+: {what} (max difference {err:.3g} against magnitude {scale:.3g})")


# --------------------------------------------------------------------------- sentence pairs in, shares out

def _as_pair(bundle: Any, item: Any, index: int) -> tuple[list[int], list[int], np.ndarray]:
    """(source ids, label ids, target word id per label) of an Encoded, a Record or a (source, target) pair."""
    from .extract import Encoded, encode_pair

    if isinstance(item, tuple):
        item = encode_pair(bundle, item[0], item[1], index)
    if isinstance(item, Encoded):
        return list(item.src_ids), list(item.label_ids), np.asarray(item.tgt_word_ids)
    if hasattr(item, "label_ids") and hasattr(item, "src_ids"):  # a Record
        return [int(x) for x in item.src_ids], [int(x) for x in item.label_ids], np.asarray(item.tgt_word_ids)
    raise TypeError(f"item {index}: expected an Encoded, a Record or a (source, target) pair, not {type(item).__name__}")


def alti_batch(bundle: Any, pairs: Sequence[tuple[list[int], list[int], np.ndarray]], keep_matrices: bool = False
               ) -> list[AltiResult]:
    """ALTI+ of a batch of (source ids, label ids, target word ids) in one teacher-forced pass."""
    from .extract import _pad, decoder_inputs

    model, tok, dev = bundle.model, bundle.tokenizer, bundle.device
    src, src_mask = _pad([p[0] for p in pairs], tok.pad_token_id)
    labels, lab_mask = _pad([p[1] for p in pairs], -100)
    dec = decoder_inputs(model, labels)
    with torch.inference_mode(), AltiTracer(model, encoder=keep_matrices) as tracer:
        # encoder and decoder stacks only: the output projection to the vocabulary mixes no tokens
        enc_mask = src_mask.long().to(dev)
        hidden = model.get_encoder()(input_ids=src.to(dev), attention_mask=enc_mask, output_attentions=True,
                                     return_dict=True).last_hidden_state
        model.get_decoder()(input_ids=dec.to(dev), attention_mask=lab_mask.long().to(dev),
                            encoder_hidden_states=hidden, encoder_attention_mask=enc_mask, output_attentions=True,
                            use_cache=False, return_dict=True)
        if keep_matrices:
            total, r_enc = tracer.rollout()
            share_t = total[:, :, :src.shape[1]].sum(-1)
            total_np, enc_np = total.cpu().numpy(), r_enc.cpu().numpy()
        else:
            share_t = tracer.source_share()
    s_max = src.shape[1]
    # clipped: float32 rounding can put a row's sum a hair above 1
    share = share_t.cpu().numpy().astype(np.float64).clip(0.0, 1.0)
    out = []
    for b, (s_ids, l_ids, wids) in enumerate(pairs):
        s, t = len(s_ids), len(l_ids)
        res = AltiResult(source_share=share[b, :t].copy(), positions=logprob_positions(wids))
        if keep_matrices:  # cut the padding away: source columns 0..s, decoder columns s_max..s_max+t
            res.total = np.concatenate([total_np[b, :t, :s], total_np[b, :t, s_max:s_max + t]], axis=1)
            res.encoder = enc_np[b, :s, :s].copy()
        out.append(res)
    return out


def source_contribution(bundle: Any, items: Sequence[Any], batch_size: int = 16,
                        keep_matrices: bool = False) -> list[AltiResult]:
    """ALTI+ source contribution of every item (an `extract.Encoded`, a `Record`, or a (source,
    target) pair of strings or word lists), in input order; one forward pass per length-sorted batch.
    `keep_matrices` keeps each pair's full [T, S+T] rollout and [S, S] encoder rollout."""
    from .extract import length_batches

    pairs = [_as_pair(bundle, it, i) for i, it in enumerate(items)]
    out: list[AltiResult | None] = [None] * len(pairs)
    for idx in length_batches([len(p[0]) + len(p[1]) for p in pairs], batch_size):
        for i, res in zip(idx, alti_batch(bundle, [pairs[i] for i in idx], keep_matrices)):
            out[i] = res
    return out  # type: ignore[return-value]


def sentence_source_contribution(bundle: Any, items: Sequence[Any], batch_size: int = 16) -> np.ndarray:
    """The sentence-level signal: mean ALTI+ source contribution over each target's word tokens and
    closing </s> (the label positions Seq-Logprob scores); low = suspect."""
    return np.array([r.sentence_score for r in source_contribution(bundle, items, batch_size)])


# --------------------------------------------------------------------------- inside another run's passes

def supports(model: Any) -> bool:
    """Whether ALTI+ knows the block layout of `model` (see PRE_LN)."""
    return getattr(getattr(model, "config", None), "model_type", None) in PRE_LN


def traced_records(model: Any, records: Any) -> Any:
    """Yield the (index, Record) of `records` (a teacher-forced `extract.iter_extract` run, not yet
    started) with ``rec.meta["alti_source"]``, the sentence's mean ALTI+ source contribution, traced
    in the very pass that made the Record (no second pass). `iter_extract` runs one pass per batch and
    then yields that batch's Records in batch order, so a new traced pass marks a new batch."""
    share, k = None, 0
    with AltiTracer(model, check=False, encoder=False) as tracer:
        for i, rec in records:
            if tracer.dec_self:  # the pass of a new batch
                # clipped: float32 rounding can put a row's sum a hair above 1
                share, k = tracer.source_share().float().cpu().numpy().astype(np.float64).clip(0.0, 1.0), 0
                tracer.reset()
            pos = logprob_positions(rec.tgt_word_ids)
            rec.meta["alti_source"] = float(share[k, pos].mean()) if share is not None and len(pos) else float("nan")
            k += 1
            yield i, rec
