"""Attention rollout (Abnar & Zuidema, 2020) for encoders and across an encoder-decoder.

Index convention used throughout: in every matrix ``M[i, j]`` the row ``i`` is the
*output* (query) position and the column ``j`` the *input* (key) position it reads
from, exactly as attention weights come out of the model (``attn[l, h, query, key]``).
A rollout matrix ``R[i, j]`` is therefore "how much of the flow that reaches output
position ``i`` at the top layer starts at input token ``j``"; every row sums to 1.

Per layer the flow matrix is ``Â = residual·I + (1 − residual)·Ā`` where ``Ā`` is the
head-fused attention with its rows renormalised to sum to 1 (the renormalisation comes
*before* mixing in the identity so that ``residual`` is exactly the share kept by the
residual connection, also for max/min fusion whose rows do not sum to 1). Hidden states
mix as ``h_l = Â_l h_{l−1}``, so the rollout over layers ``1..L`` is
``R = Â_L · Â_{L−1} · … · Â_1`` (later layers on the left).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .words import pool_record

if TYPE_CHECKING:  # pragma: no cover
    from .record import Record

FUSIONS = ("mean", "max", "min")


def fuse_heads(att: np.ndarray, fusion: str = "mean") -> np.ndarray:
    """Fuse the head axis of attention ``[L, H, N, M]`` into ``[L, N, M]`` by mean, max or min."""
    att = np.asarray(att, dtype=np.float64)
    if att.ndim != 4:
        raise ValueError(f"fuse_heads: expected attention of shape [L, H, N, M], got shape {att.shape}")
    if fusion == "mean":
        return att.mean(axis=1)
    if fusion == "max":
        return att.max(axis=1)
    if fusion == "min":
        return att.min(axis=1)
    raise ValueError(f"fuse_heads: unknown fusion {fusion!r}; expected one of {FUSIONS}")


def _row_normalise(m: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1; an all-zero row stays zero (nothing to normalise)."""
    sums = m.sum(axis=-1, keepdims=True)
    return np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)


def _check_residual(residual: float) -> None:
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual must lie in [0, 1], got {residual}")


def layer_flows(att: np.ndarray, fusion: str = "mean", residual: float = 0.5) -> np.ndarray:
    """Per-layer flow matrices ``Â_l = residual·I + (1 − residual)·rownorm(fuse(A_l))``, shape [L, N, N]."""
    _check_residual(residual)
    fused = _row_normalise(fuse_heads(att, fusion))
    n, m = fused.shape[-2:]
    if n != m:
        raise ValueError(f"self-attention must be square per layer, got [{n}, {m}]")
    flows = residual * np.eye(n) + (1.0 - residual) * fused
    # rows whose attention was all zero (e.g. fully masked) keep only the residual: renormalise
    return _row_normalise(flows)


def attention_rollout(self_att: np.ndarray, fusion: str = "mean", residual: float = 0.5) -> np.ndarray:
    """Rollout of self-attention ``[L, H, N, N]`` over all layers: ``[N, N]``, rows sum to 1.

    Row ``i`` is output token ``i`` at the top layer, column ``j`` is input token ``j``.
    ``R = Â_L ··· Â_1``; ``residual=1`` gives the identity, ``residual=0`` the plain product
    of (renormalised) attention matrices.
    """
    flows = layer_flows(self_att, fusion, residual)
    out = np.eye(flows.shape[-1])
    for a in flows:  # loop over layers (a handful), not tokens
        out = a @ out
    return out


def decoder_flow(
    enc_self: np.ndarray,
    dec_self: np.ndarray,
    cross: np.ndarray,
    fusion: str = "mean",
    residual: float = 0.5,
) -> np.ndarray:
    """Joint flow of every decoder row over ``[decoder inputs (T) | source tokens (S)]``: ``[T, T+S]``.

    State ``D`` holds, for each decoder position, a distribution over where its content
    came from: the decoder input embeddings (first ``T`` columns) or the source token
    embeddings (last ``S``). It starts as ``[I | 0]``. Each decoder layer is self-attention,
    then cross-attention, then a position-wise FFN (which moves nothing between positions):

    - self-attention: ``D ← Ŝ_l D`` with ``Ŝ_l = r·I + (1−r)·Ā_self`` (Abnar & Zuidema per
      layer), so the target-to-source part is carried along by decoder self-attention as in
      Chefer et al. (2021), where self-attention updates both ``R^tt`` and ``R^ts``;
    - cross-attention: ``D ← r·D + (1−r)·[0 | Ā_cross · R_enc]``: a position keeps share ``r``
      of its state through the residual and takes ``1−r`` from the encoder outputs it
      attends to; an encoder output's provenance over source tokens is the encoder's own
      rollout ``R_enc`` (Chefer et al. likewise compose cross-attention with the encoder's
      self-relevance ``R^ss``).

    We follow *values*, as rollout does: attention weights are constants and flow moves
    along the value path. Chefer et al.'s cross-attention rule (their rule 10) also multiplies
    on the left by the transposed, normalised decoder self-relevance ``(R̄^tt)ᵀ``; here the
    decoder self-attention already carries source flow between rows through ``Ŝ`` (first
    rule), so that factor would move it a second time, and its transpose would break
    row-stochasticity: it is left out. Their attention-rollout baseline composes only the
    last layer's cross-attention; here every layer's cross-attention contributes through its
    residual branch. Every update is a convex combination of row-stochastic matrices, so
    rows sum to 1.
    """
    _check_residual(residual)
    enc_self = np.asarray(enc_self)
    dec_self = np.asarray(dec_self)
    cross = np.asarray(cross)
    if cross.ndim != 4 or dec_self.ndim != 4 or enc_self.ndim != 4:
        raise ValueError("decoder_flow: expected enc_self [L,H,S,S], dec_self [L,H,T,T], cross [L,H,T,S]")
    T, S = cross.shape[-2:]
    if dec_self.shape[-2:] != (T, T) or enc_self.shape[-2:] != (S, S):
        raise ValueError(
            f"decoder_flow: shapes disagree: cross {cross.shape}, dec_self {dec_self.shape}, enc_self {enc_self.shape}"
        )
    if dec_self.shape[0] != cross.shape[0]:
        raise ValueError(f"decoder_flow: {dec_self.shape[0]} decoder self-attention layers but {cross.shape[0]} cross")
    r_enc = attention_rollout(enc_self, fusion, residual)  # [S, S]: encoder output -> source token
    self_flows = layer_flows(dec_self, fusion, residual)  # [L, T, T]
    cross_fused = _row_normalise(fuse_heads(cross, fusion))  # [L, T, S]
    from_source = cross_fused @ r_enc  # [L, T, S]: what each layer's cross-attention brings in

    state = np.concatenate([np.eye(T), np.zeros((T, S))], axis=1)
    for s_hat, src in zip(self_flows, from_source):  # loop over layers only
        state = s_hat @ state
        state = residual * state
        state[:, T:] += (1.0 - residual) * src
    return state


def decoder_rollout(
    enc_self: np.ndarray,
    dec_self: np.ndarray,
    cross: np.ndarray,
    fusion: str = "mean",
    residual: float = 0.5,
) -> np.ndarray:
    """Rollout from each decoder row to the source tokens: ``[T, S]``, rows sum to 1.

    The source block of :func:`decoder_flow`, each row divided by its total (the share of
    that row's flow that comes from the source rather than the target prefix; get it from
    :func:`source_share`). ``residual`` must be below 1, otherwise no flow reaches the source.
    """
    if residual >= 1.0:
        raise ValueError("decoder_rollout needs residual < 1: with residual=1 no flow reaches the source")
    flow = decoder_flow(enc_self, dec_self, cross, fusion, residual)
    S = np.asarray(cross).shape[-1]
    return _row_normalise(flow[:, -S:])


def source_share(flow: np.ndarray, n_source: int) -> np.ndarray:
    """Per decoder row, the share of :func:`decoder_flow` that comes from the source: ``[T]``."""
    return np.asarray(flow)[:, -n_source:].sum(axis=1)


def rollout_for_record(rec: "Record", fusion: str = "mean", residual: float = 0.5) -> np.ndarray:
    """Decoder rollout ``[T, S]`` for all decoder rows of a Record (row t predicts ``label_tokens[t]``).

    Columns are all encoder tokens (specials included), as in ``rec.cross``. Select rows
    with ``rec.rows_for(method)`` as for cross-attention.
    """
    missing = [name for name in ("enc_self", "dec_self", "cross") if getattr(rec, name) is None]
    if missing:
        raise ValueError(
            f"rollout_for_record: the Record lacks {', '.join(missing)}; "
            "extract with keep=('cross', 'enc_self', 'dec_self')"
        )
    return decoder_rollout(rec.enc_self, rec.dec_self, rec.cross, fusion, residual)


def encoder_rollout_for_record(rec: "Record", fusion: str = "mean", residual: float = 0.5) -> np.ndarray:
    """Encoder self-attention rollout ``[S, S]`` of a Record."""
    if rec.enc_self is None:
        raise ValueError("encoder_rollout_for_record: the Record lacks enc_self; "
                         "extract with keep including 'enc_self'")
    return attention_rollout(rec.enc_self, fusion, residual)


def rollout_word_matrix(rec: "Record", method: str = "naive", fusion: str = "mean",
                        residual: float = 0.5) -> np.ndarray:
    """Decoder rollout pooled to ``[target words, source words]`` (sum over a source word's subwords,
    mean over a target word's), source specials excluded.

    ``method`` picks the decoder row of each target token: 'naive' (default; the row whose state
    predicts the token, the row Integrated Gradients explains too) or 'shift-att' (one row later).
    """
    return pool_record(rec, rollout_for_record(rec, fusion, residual)[rec.rows_for(method)])
