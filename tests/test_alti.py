"""ALTI+ source contribution: hand-computed cases, a loop-by-loop numpy reference, every family."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tiny_models
from aligndebug import alti
from aligndebug.alti import full_rollout, source_contribution, sublayer_contributions


def t(x) -> torch.Tensor:
    return torch.tensor(np.asarray(x, dtype=np.float32))


def test_hand_computed_self_attention():
    """Two tokens, one head, d = 2, pre-LN, no biases: every number below is worked out by hand.

    Residual x_0 = (1, 0), x_1 = (0, 1); W_O v_0 = (2, 0), W_O v_1 = (0, 2); uniform attention.
    Row 0: z_00 = 0.5 (2, 0) + x_0 = (2, 0), z_01 = 0.5 (0, 2) = (0, 1), y_0 = (2, 1), ||y_0|| = 3;
    ||y_0 - z_00|| = 1 -> 3 - 1 = 2, ||y_0 - z_01|| = 2 -> 1; normalised (2/3, 1/3). Row 1 mirrors it.
    """
    attn = t([[[[0.5, 0.5], [0.5, 0.5]]]])  # [B=1, H=1, Q=2, K=2]
    values = t([[[2, 0], [0, 2]]])  # v_j, with W_O = I
    c, y = sublayer_contributions(attn, values, torch.eye(2), None, t([[[1, 0], [0, 1]]]), cross=False)
    np.testing.assert_allclose(c[0].numpy(), [[2 / 3, 1 / 3], [1 / 3, 2 / 3]], rtol=1e-6)
    np.testing.assert_allclose(y[0].numpy(), [[2, 1], [1, 2]], rtol=1e-6)


def test_hand_computed_cross_attention_and_clamp():
    """Cross-attention: the residual is an extra column. Query residual x = (1, 1), two source
    values (3, 0) and (-1, 0) with weights 0.5 each: z = (1.5, 0), (-0.5, 0), residual (1, 1);
    y = (2, 1), ||y|| = 3; distances 1.5, 3.5, 1 -> contributions 1.5, 0 (clamped), 2 -> /3.5."""
    attn = t([[[[0.5, 0.5]]]])
    c, _ = sublayer_contributions(attn, t([[[3, 0], [-1, 0]]]), torch.eye(2), None, t([[[1, 1]]]), cross=True)
    np.testing.assert_allclose(c[0, 0].numpy(), [1.5 / 3.5, 0.0, 2 / 3.5], rtol=1e-6)


def test_hand_computed_rollout():
    """One encoder layer C_enc = [[2/3, 1/3], [1/3, 2/3]]; one decoder row with self C = [[1]] and
    cross (0.3, 0.2 | residual 0.5): total = (0.3 C_enc[0] + 0.2 C_enc[1], 0.5)."""
    enc = t([[[2 / 3, 1 / 3], [1 / 3, 2 / 3]]])
    total, r_enc = full_rollout([enc], [t([[[1.0]]])], [t([[[0.3, 0.2, 0.5]]])])
    np.testing.assert_allclose(total[0].numpy(), [[0.3 * 2 / 3 + 0.2 / 3, 0.3 / 3 + 0.2 * 2 / 3, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(r_enc[0].numpy(), enc[0].numpy())



def test_rollout_stays_on_the_contributions_device():
    """Every tensor the rollout makes lives where its inputs do (a GPU's in use; here the meta device, which
    fails the same way on a tensor made on the CPU)."""
    enc = torch.rand(2, 3, 3, device="meta")
    total, r_enc = full_rollout([enc, enc], [torch.rand(2, 4, 4, device="meta")], [torch.rand(2, 4, 4, device="meta")])
    assert total.device.type == r_enc.device.type == "meta" and total.shape == (2, 4, 7)


def _reference_sublayer(attn, vw, residual, bias, cross, ln=None):
    """Loop-by-loop numpy ALTI of one sublayer (float64): the definition written out."""
    h, q, k = attn.shape
    n_parts = k + 1 if cross else k
    c = np.zeros((q, n_parts))
    for i in range(q):
        parts = [sum(attn[hh, i, j] * vw[hh, j] for hh in range(h)) for j in range(k)]
        if cross:
            parts.append(residual[i].copy())
        else:
            parts[i] = parts[i] + residual[i]
        s = sum(parts) + bias
        if ln is not None:
            gamma, beta, eps = ln
            sigma = np.sqrt(s.var() + eps)
            parts = [gamma * (p - p.mean()) / sigma for p in parts]
            y = sum(parts) + gamma * (bias - bias.mean()) / sigma + beta
            np.testing.assert_allclose(y, gamma * (s - s.mean()) / sigma + beta, rtol=1e-9)  # = LayerNorm(s)
        else:
            y = s
        raw = np.array([max(0.0, np.abs(y).sum() - np.abs(y - p).sum()) for p in parts])
        c[i] = raw / raw.sum()
    return c


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("post_ln", [False, True])
def test_matches_loop_reference(cross, post_ln):
    rng = np.random.default_rng(0)
    h, q, dh, d = 2, 4, 3, 6
    k = 5 if cross else q
    logits = rng.normal(size=(h, q, k))
    attn = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    values = rng.normal(size=(k, h * dh))
    w_o, b_o = rng.normal(size=(d, h * dh)), rng.normal(size=d)
    residual = rng.normal(size=(q, d)) * 2
    ln = (rng.uniform(0.5, 1.5, d), rng.normal(size=d), 1e-5) if post_ln else None
    vw = np.stack([values[:, hh * dh:(hh + 1) * dh] @ w_o[:, hh * dh:(hh + 1) * dh].T for hh in range(h)])
    want = _reference_sublayer(attn, vw, residual, b_o, cross, ln)
    got, _ = sublayer_contributions(t(attn[None]), t(values[None]), t(w_o), t(b_o), t(residual[None]), cross,
                                    None if ln is None else (t(ln[0]), t(ln[1]), ln[2]))
    np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-4, atol=1e-6)
    # blocks of query rows give the same answer as one block
    small, _ = sublayer_contributions(t(attn[None]), t(values[None]), t(w_o), t(b_o), t(residual[None]), cross,
                                      None if ln is None else (t(ln[0]), t(ln[1]), ln[2]), max_elements=1)
    np.testing.assert_allclose(small.numpy(), got.numpy(), rtol=1e-6, atol=1e-7)


PAIRS = list(zip(tiny_models.DE[:6], tiny_models.EN[:6])) + [(tiny_models.DE[6], "Es Es Es Es Es Es .")]


@pytest.mark.parametrize("family", tiny_models.FAMILIES)
def test_every_family(tiny_bundle, family):
    b = tiny_bundle(family)
    batched = source_contribution(b, PAIRS, batch_size=4, keep_matrices=True)
    for (src, tgt), res in zip(PAIRS, batched):
        single = source_contribution(b, [(src, tgt)], keep_matrices=True)[0]
        s, tt = res.encoder.shape[0], res.source_share.shape[0]
        assert res.total.shape == (tt, s + tt)
        assert (res.total >= -1e-6).all() and (res.total <= 1 + 1e-6).all()
        np.testing.assert_allclose(res.total.sum(1), 1.0, rtol=1e-4)
        np.testing.assert_allclose(res.encoder.sum(1), 1.0, rtol=1e-4)
        np.testing.assert_allclose(res.source_share, res.total[:, :s].sum(1), rtol=1e-5)
        assert ((res.source_share >= -1e-6) & (res.source_share <= 1 + 1e-6)).all()
        # a decoder row never draws on later decoder inputs (causal)
        assert np.abs(np.triu(res.total[:, s:], 1)).max() < 1e-6
        np.testing.assert_allclose(res.source_share, single.source_share, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(res.total, single.total, rtol=1e-4, atol=1e-6)
        assert 0 <= res.sentence_score <= 1


def test_items_may_be_records_or_encoded(tiny_bundle):
    from aligndebug.extract import encode_pair, extract

    b = tiny_bundle("nllb")
    recs = extract(b, [p[0] for p in PAIRS[:3]], [p[1] for p in PAIRS[:3]], keep=())
    enc = [encode_pair(b, s, tg) for s, tg in PAIRS[:3]]
    a = [r.source_share for r in source_contribution(b, recs)]
    c = [r.source_share for r in source_contribution(b, enc)]
    d = [r.source_share for r in source_contribution(b, PAIRS[:3])]
    for x, y, z in zip(a, c, d):
        np.testing.assert_allclose(x, y, rtol=1e-5)
        np.testing.assert_allclose(x, z, rtol=1e-5)
    with pytest.raises(TypeError, match="item 0"):
        source_contribution(b, ["just a string"])


def test_layout_check_catches_a_wrong_norm_position(tiny_bundle, monkeypatch):
    """Treating a post-LN model (Marian) as pre-LN must fail loudly, not give plausible numbers."""
    monkeypatch.setitem(alti.PRE_LN, "marian", True)
    with pytest.raises(RuntimeError, match="ALTI"):
        source_contribution(tiny_bundle("marian"), PAIRS[:1])


def test_unknown_family_is_refused():
    class Cfg:
        model_type = "fsmt"

    class M:
        config = Cfg()

    with pytest.raises(ValueError, match="fsmt"):
        alti.AltiTracer(M())


@pytest.mark.slow
def test_detached_targets_draw_less_on_the_source(data_dir):
    """Embedded model, 30 held-out Europarl pairs: a reference takes more from its source than
    another sentence's reference does (the detachment ALTI+ is used to find)."""
    from aligndebug.models import load_model

    folder = data_dir / "heldout" / "europarl-deen-500"
    de = folder.joinpath("test.de").read_text(encoding="utf-8").splitlines()[:30]
    en = folder.joinpath("test.en").read_text(encoding="utf-8").splitlines()[:30]
    b = load_model("default")
    own = np.array([r.sentence_score for r in source_contribution(b, list(zip(de, en)))])
    other = np.array([r.sentence_score for r in source_contribution(b, list(zip(de, en[1:] + en[:1])))])
    # measured: 23 of 30 pairs, means 0.43 vs 0.40 (a 3-layer model separates less than the large
    # models of Dale et al.)
    assert (own > other).mean() >= 0.7
    assert own.mean() > other.mean() + 0.02


def test_row_the_rule_cannot_share_goes_by_norms():
    """Parts that cancel out (y = 0) leave every c at 0; the row is then shared by the parts' L1
    norms, and a masked key (zero weight, zero part) still gets nothing."""
    attn = t([[[[1.0, 0.0]]]])  # key 1 masked
    c, _ = sublayer_contributions(attn, t([[[-1, -2], [5, 5]]]), torch.eye(2), None, t([[[1, 2]]]), cross=True)
    np.testing.assert_allclose(c[0, 0].numpy(), [0.5, 0.0, 0.5], atol=1e-7)


@pytest.mark.parametrize("family", tiny_models.FAMILIES)
def test_traced_in_the_signal_pass_equals_its_own_pass(tiny_bundle, family):
    """Triage's signal rows carry ALTI+ traced in their own forward pass (batched, length-sorted): it equals
    a separate teacher-forced ALTI+ pass of each pair, forced or translated by the model first."""
    from aligndebug.runner import signal_rows

    b = tiny_bundle(family)
    src, tgt = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    for targets in (tgt, None):
        rows = signal_rows(b, src, targets, batch_size=3)
        got = np.array([r["alti_source"] for r in rows])
        want = alti.sentence_source_contribution(b, [(r["source"], r["translation"]) for r in rows])
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6)
        assert ((got >= 0) & (got <= 1)).all()


def test_app_view_rows_are_the_target_tokens(tiny_bundle):
    from aligndebug.extract import extract
    from aligndebug.views import alti_view

    b = tiny_bundle("marian")
    rec = extract(b, [PAIRS[0][0]], [PAIRS[0][1]], keep=("cross",))[0]
    view = alti_view(b, rec)
    res = source_contribution(b, [rec], keep_matrices=True)[0]
    pos = rec.target_positions
    assert view["matrix"].shape == (len(pos), len(rec.src_ids))
    np.testing.assert_allclose(view["matrix"].sum(1), view["source_share"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(view["source_share"], res.source_share[pos], rtol=1e-6)
    assert view["labels"] == [rec.label_tokens[p] for p in pos] and view["sentence"] == res.sentence_score
