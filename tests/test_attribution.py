"""Integrated Gradients: closed form on a toy model, completeness and cross-checks on a tiny Marian."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from numeric import assert_close
from torch import nn

from aligndebug.attribution import (
    IGResult,
    ig_for_record,
    ig_prefix_word_matrix,
    ig_token_matrix,
    ig_word_matrix,
    integrated_gradients,
    integration_points,
)
from aligndebug.record import Record


# ---------------------------------------------------------------------------------------------
# A toy encoder-decoder small enough for IG in closed form.
#   h_t = scale · Σ_s C[t, s] e_s + Σ_{p<=t} d_p          (linear in the token embeddings)
#   logits_t = W h_t  with two output classes, so  log p(y_t) = g(u_t) = −softplus(−u_t)
#   where u_t = (W[y_t] − W[1 − y_t]) · h_t is linear in the embeddings.
# For f = g(a·x) along the straight path, IG_i = a_i (x_i − x'_i) · (g(u) − g(u')) / (u − u').
# ---------------------------------------------------------------------------------------------
class _Stack(nn.Module):
    def __init__(self, vocab: int, dim: int):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim)

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens


class ToySeq2Seq(nn.Module):
    def __init__(self, vocab: int = 10, dim: int = 3, max_len: int = 6, pad: int = 9, scale: float = 2.0,
                 seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.config = SimpleNamespace(pad_token_id=pad)
        self.encoder, self.decoder = _Stack(vocab, dim), _Stack(vocab, dim)
        for stack in (self.encoder, self.decoder):
            stack.embed_tokens.weight.data = torch.randn(vocab, dim, generator=g)
        self.C = torch.randn(max_len, max_len, generator=g)
        self.scale = scale  # like Marian's embed_scale, applied after the embedding layer
        self.lm_head = nn.Linear(dim, 2, bias=False)
        self.lm_head.weight.data = torch.randn(2, dim, generator=g)

    def get_encoder(self):
        return self.encoder

    def get_decoder(self):
        return self.decoder

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids, decoder_input_ids, **_):
        e = self.encoder.embed_tokens(input_ids) * self.scale  # [B, S, D]
        d = self.decoder.embed_tokens(decoder_input_ids)  # [B, T, D]
        S, T = e.shape[1], d.shape[1]
        h = torch.einsum("ts,bsd->btd", self.C[:T, :S], e) + torch.cumsum(d, dim=1)
        return SimpleNamespace(logits=self.lm_head(h))


def _toy_closed_form(model: ToySeq2Seq, src, dec, lab, baseline: str):
    """Exact IG of the toy model (source [T,S], prefix [T,T]), all embeddings moving together."""
    x_s = model.encoder.embed_tokens.weight[torch.as_tensor(src)].double().detach()
    x_d = model.decoder.embed_tokens.weight[torch.as_tensor(dec)].double().detach()
    if baseline == "pad":
        b_s = model.encoder.embed_tokens.weight[model.config.pad_token_id].double().detach().expand_as(x_s)
        b_d = model.decoder.embed_tokens.weight[model.config.pad_token_id].double().detach().expand_as(x_d)
    else:
        b_s, b_d = torch.zeros_like(x_s), torch.zeros_like(x_d)
    T, S = len(dec), len(src)
    W = model.lm_head.weight.double().detach()
    C = model.C[:T, :S].double()
    src_out, dec_out = np.zeros((T, S)), np.zeros((T, T))
    for t in range(T):  # closed form written out per token: clarity over speed in a test
        w = W[lab[t]] - W[1 - lab[t]]
        a_src = model.scale * C[t][:, None] * w[None, :]  # ∂u/∂e_s
        a_dec = (torch.arange(T) <= t).double()[:, None] * w[None, :]  # ∂u/∂d_p
        u = (a_src * x_s).sum() + (a_dec * x_d).sum()
        u0 = (a_src * b_s).sum() + (a_dec * b_d).sum()
        g = lambda v: -torch.nn.functional.softplus(-v)  # noqa: E731
        ratio = (g(u) - g(u0)) / (u - u0)
        src_out[t] = (ratio * (a_src * (x_s - b_s)).sum(-1)).numpy()
        dec_out[t] = (ratio * (a_dec * (x_d - b_d)).sum(-1)).numpy()
    return src_out, dec_out


@pytest.mark.parametrize("baseline", ["pad", "zeros"])
@pytest.mark.parametrize("strategy", ["vmap", "expanded", "per-token"])
def test_closed_form_on_toy_model(baseline, strategy):
    model = ToySeq2Seq()
    src, dec, lab = np.array([1, 4, 2, 7]), np.array([9, 3, 5]), np.array([1, 0, 1])
    want_src, want_dec = _toy_closed_form(model, src, dec, lab, baseline)
    got = integrated_gradients(model, src, dec, lab, steps=16, baseline=baseline, target_prefix=True,
                               strategy=strategy, internal_batch_size=7)
    assert got.strategy == strategy
    np.testing.assert_allclose(got.source, want_src, atol=1e-5)
    np.testing.assert_allclose(got.target_prefix, want_dec, atol=1e-5)
    assert got.delta.max() < 1e-5
    # source only: the decoder inputs stay at their real embeddings, so the closed form changes;
    # completeness still holds for the source part alone
    only_src = integrated_gradients(model, src, dec, lab, steps=16, baseline=baseline, strategy=strategy)
    assert only_src.target_prefix is None
    assert only_src.delta.max() < 1e-5


def test_integration_points_integrate_polynomials():
    for method, steps, tol in (("gausslegendre", 4, 1e-12), ("riemann_middle", 200, 1e-4)):
        a, w = integration_points(steps, method)
        assert np.isclose(w.sum(), 1.0)
        assert abs((w * a**5).sum() - 1 / 6) < tol  # ∫_0^1 α^5 dα
    with pytest.raises(ValueError, match="steps"):
        integration_points(0)
    with pytest.raises(ValueError, match="method"):
        integration_points(4, "simpson")


# ---------------------------------------------------------------------------------------------
# A tiny random MarianMTModel. init_std 0.3 makes its outputs depend on the input (the default
# 0.02 gives near-uniform predictions and attributions of ~1e-6, which test nothing).
# ---------------------------------------------------------------------------------------------
PAD = 49
SRC = np.array([5, 9, 13, 7, 0])
LAB = np.array([3, 8, 21, 0])
DEC = np.array([PAD, 3, 8, 21])


@pytest.fixture(scope="module")
def marian():
    from transformers import MarianConfig, MarianMTModel

    cfg = MarianConfig(vocab_size=50, decoder_vocab_size=50, d_model=16, encoder_layers=2, decoder_layers=2,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                       max_position_embeddings=64, pad_token_id=PAD, eos_token_id=0, decoder_start_token_id=PAD,
                       init_std=0.3, scale_embedding=True)
    torch.manual_seed(0)
    return MarianMTModel(cfg).eval()


def _plain_logprobs(model, src, dec, lab) -> np.ndarray:
    with torch.no_grad():
        logits = model(input_ids=torch.as_tensor(src)[None], decoder_input_ids=torch.as_tensor(dec)[None]).logits
    return torch.log_softmax(logits[0], -1)[torch.arange(len(lab)), torch.as_tensor(lab)].numpy()


def test_marian_f_x_is_the_teacher_forced_logprob_and_completeness_holds(marian):
    res = integrated_gradients(marian, SRC, DEC, LAB, steps=32)
    assert res.source.shape == (len(DEC), len(SRC)) and res.target_prefix is None
    np.testing.assert_allclose(res.f_x, _plain_logprobs(marian, SRC, DEC, LAB), atol=1e-5)
    # the model is not trivially flat: there is something to explain
    assert np.abs(res.f_x - res.f_baseline).max() > 0.1
    np.testing.assert_allclose(res.delta, np.abs(res.total - (res.f_x - res.f_baseline)))
    assert res.delta.max() < 1e-4
    assert np.nanmax(res.relative_delta) < 1e-3
    # few steps leave a visible gap, which is why it is reported
    coarse = integrated_gradients(marian, SRC, DEC, LAB, steps=4)
    assert coarse.delta.max() > 10 * res.delta.max()


def test_marian_target_prefix_is_causal_and_complete(marian):
    res = integrated_gradients(marian, SRC, DEC, LAB, steps=32, target_prefix=True, baseline="zeros")
    T = len(DEC)
    assert res.target_prefix.shape == (T, T)
    assert np.all(res.target_prefix[np.triu_indices(T, k=1)] == 0)  # row t cannot see inputs after t
    assert np.abs(res.target_prefix[np.tril_indices(T, k=-1)]).max() > 1e-3
    assert res.delta.max() < 1e-4


def test_marian_strategies_agree_and_rows_subset(marian):
    results = {s: integrated_gradients(marian, SRC, DEC, LAB, steps=12, target_prefix=True, strategy=s,
                                       internal_batch_size=10) for s in ("vmap", "expanded", "per-token")}
    for s in ("expanded", "per-token"):
        assert_close(results[s].source, results["vmap"].source)
        assert_close(results[s].target_prefix, results["vmap"].target_prefix)
    sub = integrated_gradients(marian, SRC, DEC, LAB, steps=12, target_prefix=True, rows=[2, 0])
    assert_close(sub.source, results["vmap"].source[[2, 0]])
    np.testing.assert_allclose(sub.f_x, results["vmap"].f_x[[2, 0]])
    assert sub.rows.tolist() == [2, 0]


def test_marian_matches_captum_layer_integrated_gradients(marian):
    from captum.attr import LayerIntegratedGradients

    dec = torch.as_tensor(DEC)[None]
    t = 2

    def forward(src_ids):
        logits = marian(input_ids=src_ids, decoder_input_ids=dec.expand(len(src_ids), -1)).logits
        return torch.log_softmax(logits[:, t], -1)[:, LAB[t]]

    lig = LayerIntegratedGradients(forward, marian.model.encoder.embed_tokens)
    src = torch.as_tensor(SRC)[None]
    want = lig.attribute(src, baselines=torch.full_like(src, PAD), n_steps=20, method="gausslegendre")
    got = integrated_gradients(marian, SRC, DEC, LAB, steps=20, rows=[t])
    assert_close(got.source[0], want.sum(-1)[0].detach().numpy())


def test_bad_inputs_raise(marian):
    with pytest.raises(ValueError, match="baseline"):
        integrated_gradients(marian, SRC, DEC, LAB, baseline="unk")
    with pytest.raises(ValueError, match="rows"):
        integrated_gradients(marian, SRC, DEC, LAB, rows=[4])
    with pytest.raises(ValueError, match="label_ids"):
        integrated_gradients(marian, SRC, DEC, LAB[:-1])
    with pytest.raises(ValueError, match="strategy"):
        integrated_gradients(marian, SRC, DEC, LAB, strategy="magic")


def test_model_state_is_restored(marian):
    marian.train()
    flags = [p.requires_grad for p in marian.parameters()]
    assert any(flags)  # trainable weights (the sinusoidal positions are frozen from the start)
    try:
        res = integrated_gradients(marian, SRC, DEC, LAB, steps=16)
        assert marian.training
        assert [p.requires_grad for p in marian.parameters()] == flags
        assert all(p.grad is None for p in marian.parameters())
        # dropout was off during IG: the result is the eval-mode one
        assert res.delta.max() < 1e-4
    finally:
        marian.eval()


# ---------------------------------------------------------------------------------------------
# Records and word pooling
# ---------------------------------------------------------------------------------------------
def _record() -> Record:
    # source words: "ab"=tokens 0,1  "c"=token 2, then </s>; target: "x"=label 0, "yz"=labels 1,2, then </s>
    return Record(
        source="ab c", target="x yz", src_words=["ab", "c"], tgt_words=["x", "yz"],
        src_tokens=["a", "b", "c", "</s>"], dec_tokens=["<pad>", "x", "y", "z"], label_tokens=["x", "y", "z", "</s>"],
        src_ids=np.array([5, 9, 13, 0]), dec_ids=np.array([PAD, 3, 8, 21]), label_ids=np.array([3, 8, 21, 0]),
        src_word_ids=np.array([0, 0, 1, -1]), tgt_word_ids=np.array([0, 1, 1, -1]), token_logprobs=np.zeros(4),
    )


def test_ig_for_record_and_word_pooling(marian):
    rec = _record()
    res = ig_for_record(SimpleNamespace(model=marian), rec, steps=16, target_prefix=True)
    direct = integrated_gradients(marian, rec.src_ids, rec.dec_ids, rec.label_ids, steps=16, target_prefix=True)
    np.testing.assert_allclose(res.source, direct.source)
    tok = ig_token_matrix(rec, res)
    np.testing.assert_allclose(tok, res.source[:3])  # label positions 0, 1, 2 hold word tokens
    words = ig_word_matrix(rec, res)
    s = res.source
    # target word 0 = row 0; target word 1 = mean of rows 1, 2; source word 0 = tokens 0+1; word 1 = token 2
    want = np.array([[s[0, 0] + s[0, 1], s[0, 2]],
                     [(s[1, 0] + s[1, 1] + s[2, 0] + s[2, 1]) / 2, (s[1, 2] + s[2, 2]) / 2]])
    np.testing.assert_allclose(words, want, rtol=1e-5, atol=1e-7)
    # decoder inputs: position 1 holds "x" (word 0), positions 2, 3 hold "y", "z" (word 1)
    p = res.target_prefix
    want_prefix = np.array([[0.0, 0.0],  # row 0 sees only the start token
                            [(p[1, 1] + p[2, 1]) / 2, (p[1, 2] + p[1, 3] + p[2, 2] + p[2, 3]) / 2]])
    np.testing.assert_allclose(ig_prefix_word_matrix(rec, res), want_prefix, rtol=1e-5, atol=1e-7)


def test_word_pooling_needs_the_rows(marian):
    rec = _record()
    res = ig_for_record(marian, rec, steps=4, rows=[0])
    with pytest.raises(ValueError, match="not attributed"):
        ig_word_matrix(rec, res)
    with pytest.raises(ValueError, match="target_prefix"):
        ig_prefix_word_matrix(rec, ig_for_record(marian, rec, steps=4))


def test_result_to_dict_round_trips_shapes():
    res = IGResult(source=np.ones((2, 3)), target_prefix=None, f_x=np.zeros(2), f_baseline=np.zeros(2),
                   delta=np.zeros(2), steps=4, baseline="pad", rows=np.arange(2))
    d = res.to_dict()
    assert np.asarray(d["source"]).shape == (2, 3) and d["target_prefix"] is None and d["steps"] == 4
    assert np.isnan(res.relative_delta).all()  # nothing to explain: the relative gap is undefined


# ---------------------------------------------------------------------------------------------
# Every model family: the embedding hooks must reproduce the model's own passes at both ends of
# the path. α = 1: the Record's log-probs. α = 0 with the pad baseline: a plain pass on the real
# ids through a *copy* of the embedding layer whose rows all hold the pad embedding, so positions
# stay those of the real sentence (M2M100/NLLB derive positions from the ids: a pass on pad ids
# would move them, which the IG path deliberately does not).
# ---------------------------------------------------------------------------------------------
FAMILIES = ("marian", "bart", "mbart", "mbart50", "m2m100", "nllb", "t5")


def _logprobs_with_pad_embeddings(model, rec, sides) -> np.ndarray:
    """Log-probs of a copy of `model` whose `sides` embedding layers map every id to the pad embedding."""
    import copy

    model = copy.deepcopy(model)  # the bundle is shared between tests: change a copy only
    stacks = {"encoder": model.get_encoder(), "decoder": model.get_decoder()}
    for side in sides:
        padded = copy.deepcopy(stacks[side].embed_tokens)  # a separate layer even where weights are tied
        padded.weight.data[:] = padded.weight.data[model.config.pad_token_id]
        stacks[side].embed_tokens = padded
    return _plain_logprobs(model, rec.src_ids, rec.dec_ids, rec.label_ids)


@pytest.mark.parametrize("family", FAMILIES)
def test_path_ends_match_plain_passes_for_every_family(tiny_bundle, family):
    from aligndebug.extract import extract

    bundle = tiny_bundle(family)
    rec = extract(bundle, ["Der Hund schläft ."], ["The dog sleeps ."])[0]
    res = ig_for_record(bundle, rec, steps=4, target_prefix=True)
    assert_close(res.f_x, rec.token_logprobs)
    assert_close(res.f_baseline, _logprobs_with_pad_embeddings(bundle.model, rec, ("encoder", "decoder")))
    src_only = ig_for_record(bundle, rec, steps=4)
    assert_close(src_only.f_baseline, _logprobs_with_pad_embeddings(bundle.model, rec, ("encoder",)))
    assert np.isfinite(res.source).all() and np.abs(res.source).max() > 0
    # the expanded batch (LM head fed one position per row) gives the same numbers as the vmapped one
    expanded = ig_for_record(bundle, rec, steps=4, target_prefix=True, strategy="expanded")
    assert_close(expanded.source, res.source)
    assert_close(expanded.target_prefix, res.target_prefix)
