"""Attention rollout on hand-made matrices whose products are worked out in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from aligndebug.record import Record
from aligndebug.rollout import (
    attention_rollout,
    decoder_flow,
    decoder_rollout,
    fuse_heads,
    rollout_for_record,
    source_share,
)


def _one_head(*layers: list[list[float]]) -> np.ndarray:
    """[L, 1, N, M] from per-layer matrices."""
    return np.array(layers, dtype=float)[:, None]


def _random_attention(rng: np.random.Generator, L: int, H: int, N: int, M: int) -> np.ndarray:
    logits = rng.normal(size=(L, H, N, M))
    e = np.exp(logits)
    return e / e.sum(-1, keepdims=True)


def test_identity_attention_rolls_out_to_identity():
    att = np.tile(np.eye(4), (3, 2, 1, 1))  # [3 layers, 2 heads, 4, 4]
    for residual in (0.0, 0.5, 0.9):
        np.testing.assert_allclose(attention_rollout(att, residual=residual), np.eye(4))


def test_two_layer_product_in_the_right_order():
    a1 = [[1.0, 0.0], [0.5, 0.5]]
    a2 = [[0.0, 1.0], [0.0, 1.0]]
    # residual 0.5: Â1 = [[1, 0], [.25, .75]], Â2 = [[.5, .5], [0, 1]]
    # R = Â2 · Â1 = [[.5*1 + .5*.25, .5*0 + .5*.75], [0*1 + 1*.25, 0*0 + 1*.75]]
    expected = np.array([[0.625, 0.375], [0.25, 0.75]])
    got = attention_rollout(_one_head(a1, a2), residual=0.5)
    np.testing.assert_allclose(got, expected)
    # the other order (Â1 · Â2 = [[.5, .5], [.125, .875]]) would be wrong
    assert not np.allclose(got, np.array([[0.5, 0.5], [0.125, 0.875]]))


def test_residual_zero_is_plain_product_and_one_is_identity():
    a1 = [[1.0, 0.0], [0.5, 0.5]]
    a2 = [[0.0, 1.0], [0.0, 1.0]]
    # residual 0: R = A2 · A1 = [[0*1 + 1*.5, 0*0 + 1*.5], [.5, .5]]
    np.testing.assert_allclose(attention_rollout(_one_head(a1, a2), residual=0.0), [[0.5, 0.5], [0.5, 0.5]])
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(attention_rollout(_random_attention(rng, 3, 4, 5, 5), residual=1.0), np.eye(5))


def test_rows_sum_to_one_for_every_fusion():
    rng = np.random.default_rng(1)
    att = _random_attention(rng, 4, 3, 6, 6)
    for fusion in ("mean", "max", "min"):
        r = attention_rollout(att, fusion=fusion, residual=0.3)
        np.testing.assert_allclose(r.sum(axis=1), 1.0)
        assert (r >= 0).all()


def test_head_fusion_max_min_mean():
    h1 = [[0.6, 0.3, 0.1], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    h2 = [[0.2, 0.2, 0.6], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    att = np.array([[h1, h2]])  # [1 layer, 2 heads, 3, 3]
    np.testing.assert_allclose(fuse_heads(att, "mean")[0, 0], [0.4, 0.25, 0.35])
    np.testing.assert_allclose(fuse_heads(att, "max")[0, 0], [0.6, 0.3, 0.6])
    np.testing.assert_allclose(fuse_heads(att, "min")[0, 0], [0.2, 0.2, 0.1])
    # one layer, residual 0: the fused row renormalised; max: [.6,.3,.6]/1.5, min: [.2,.2,.1]/.5
    np.testing.assert_allclose(attention_rollout(att, "max", residual=0.0)[0], [0.4, 0.2, 0.4])
    np.testing.assert_allclose(attention_rollout(att, "min", residual=0.0)[0], [0.4, 0.4, 0.2])
    # residual 0.5 mixes in exactly half identity after renormalising: .5*[1,0,0] + .5*[.4,.2,.4]
    np.testing.assert_allclose(attention_rollout(att, "max", residual=0.5)[0], [0.7, 0.1, 0.2])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="fusion"):
        fuse_heads(np.ones((1, 1, 2, 2)), "median")
    with pytest.raises(ValueError, match="shape"):
        fuse_heads(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="residual"):
        attention_rollout(np.ones((1, 1, 2, 2)) / 2, residual=1.5)
    with pytest.raises(ValueError, match="square"):
        attention_rollout(np.ones((1, 1, 2, 3)) / 3)


# Hand example for the decoder: 1 encoder layer, 2 decoder layers, T = S = 2, one head, residual 0.5.
ENC = _one_head([[0.5, 0.5], [0.0, 1.0]])  # R_enc = [[.75, .25], [0, 1]]
DEC = _one_head([[1.0, 0.0], [0.5, 0.5]], [[1.0, 0.0], [1.0, 0.0]])  # Ŝ1 = [[1,0],[.25,.75]], Ŝ2 = [[1,0],[.5,.5]]
# C1·R_enc = [[.75, .25], [0, 1]], C2·R_enc = [[0, 1], [0, 1]]
CROSS = _one_head([[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]])
# Layer 1: self: [[1,0|0,0],[.25,.75|0,0]]; cross: .5*that + .5*[0|C1 R_enc] = [[.5,0|.375,.125],[.125,.375|0,.5]]
# Layer 2: self: row0 unchanged, row1 = .5*row0 + .5*row1 = [.3125,.1875|.1875,.3125]
#          cross: .5*that + .5*[0,0|0,1] = [[.25,0|.1875,.5625],[.15625,.09375|.09375,.65625]]
FLOW = np.array([[0.25, 0.0, 0.1875, 0.5625], [0.15625, 0.09375, 0.09375, 0.65625]])


def test_decoder_flow_hand_example():
    flow = decoder_flow(ENC, DEC, CROSS, residual=0.5)
    np.testing.assert_allclose(flow, FLOW)
    np.testing.assert_allclose(flow.sum(axis=1), 1.0)
    np.testing.assert_allclose(source_share(flow, 2), [0.75, 0.75])


def test_decoder_rollout_hand_example():
    # source block divided by its share .75: [.1875, .5625]/.75 and [.09375, .65625]/.75
    got = decoder_rollout(ENC, DEC, CROSS, residual=0.5)
    np.testing.assert_allclose(got, [[0.25, 0.75], [0.125, 0.875]])


def test_decoder_rollout_one_layer_with_identity_encoder_is_cross_attention():
    rng = np.random.default_rng(2)
    cross = _random_attention(rng, 1, 3, 4, 5)
    enc = np.tile(np.eye(5), (2, 3, 1, 1))
    dec = _random_attention(rng, 1, 3, 4, 4)
    np.testing.assert_allclose(decoder_rollout(enc, dec, cross, residual=0.5), cross.mean(axis=1)[0])


def test_decoder_rollout_rows_sum_to_one_and_reject_residual_one():
    rng = np.random.default_rng(3)
    enc, dec, cross = (_random_attention(rng, 3, 2, 7, 7), _random_attention(rng, 2, 2, 5, 5),
                       _random_attention(rng, 2, 2, 5, 7))
    for fusion in ("mean", "max", "min"):
        r = decoder_rollout(enc, dec, cross, fusion=fusion, residual=0.2)
        assert r.shape == (5, 7)
        np.testing.assert_allclose(r.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="residual < 1"):
        decoder_rollout(enc, dec, cross, residual=1.0)
    with pytest.raises(ValueError, match="disagree"):
        decoder_rollout(enc, dec, cross[..., :6])


def _record(**arrays) -> Record:
    S, T = 2, 2
    return Record(
        source="a b", target="x y", src_words=["a", "b"], tgt_words=["x", "y"],
        src_tokens=["a", "b"], dec_tokens=["<pad>", "x"], label_tokens=["x", "y"],
        src_ids=np.arange(S), dec_ids=np.arange(T), label_ids=np.arange(T),
        src_word_ids=np.arange(S), tgt_word_ids=np.arange(T), token_logprobs=np.zeros(T), **arrays,
    )


def test_rollout_for_record_uses_the_records_attention():
    rec = _record(enc_self=ENC.astype(np.float32), dec_self=DEC.astype(np.float32), cross=CROSS.astype(np.float32))
    np.testing.assert_allclose(rollout_for_record(rec), [[0.25, 0.75], [0.125, 0.875]], rtol=1e-6)
    with pytest.raises(ValueError, match="enc_self"):
        rollout_for_record(_record(cross=CROSS))


def test_rollout_word_matrix_pools_subwords():
    from aligndebug.rollout import rollout_word_matrix

    rng = np.random.default_rng(4)
    # source: word 0 = tokens 0,1; word 1 = token 2; token 3 = </s>. target: word 0 = labels 0,1; label 2 = </s>
    rec = _record(enc_self=_random_attention(rng, 2, 2, 4, 4), dec_self=_random_attention(rng, 2, 2, 3, 3),
                  cross=_random_attention(rng, 2, 2, 3, 4))
    rec.src_words, rec.tgt_words = ["ab", "c"], ["xy"]
    rec.src_word_ids, rec.tgt_word_ids = np.array([0, 0, 1, -1]), np.array([0, 0, -1])
    rec.dec_tokens, rec.label_tokens = ["<pad>", "x", "y"], ["x", "y", "</s>"]
    r = rollout_for_record(rec)
    naive = rollout_word_matrix(rec, "naive")
    np.testing.assert_allclose(naive, [[(r[0, 0] + r[0, 1] + r[1, 0] + r[1, 1]) / 2, (r[0, 2] + r[1, 2]) / 2]])
    shifted = rollout_word_matrix(rec, "shift-att")  # rows 1, 2
    np.testing.assert_allclose(shifted, [[(r[1, 0] + r[1, 1] + r[2, 0] + r[2, 1]) / 2, (r[1, 2] + r[2, 2]) / 2]])
