"""Attention-vs-IG agreement: Spearman per row on hand cases, summaries, argmax links."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from aligndebug.agreement import (
    argmax_links,
    attention_words,
    corpus_agreement,
    record_agreement,
    sentence_agreement,
    spearman_rows,
    token_agreement,
)
from aligndebug.attribution import IGResult
from aligndebug.record import Record


def test_perfect_reversed_and_hand_computed_rows():
    a = np.array([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0]])
    b = np.array([[1.0, 5.0, 7.0, 9.0],  # same order: ρ = 1
                  [4.0, 3.0, 2.0, 1.0],  # reversed: ρ = −1
                  [1.0, 3.0, 2.0, 4.0]])  # rank differences 0,1,1,0: ρ = 1 − 6·2 / (4·15) = 0.8
    np.testing.assert_allclose(spearman_rows(a, b), [1.0, -1.0, 0.8])


def test_ties_match_scipy():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, size=(5, 6)).astype(float)  # many ties
    b = rng.normal(size=(5, 6))
    a[:, 0] = [0, 1, 2, 0, 1]
    a[:, 1] = [2, 0, 1, 1, 0]  # no row constant
    want = [spearmanr(x, y).statistic for x, y in zip(a, b)]
    np.testing.assert_allclose(spearman_rows(a, b), want)


def test_undefined_rows_are_nan():
    a = np.array([[0.2, 0.2, 0.2], [0.1, 0.5, 0.4], [0.1, np.nan, 0.4]])
    b = np.array([[1.0, 2.0, 3.0], [3.0, 3.0, 3.0], [1.0, 2.0, 3.0]])
    assert np.isnan(spearman_rows(a, b)).all()  # constant attention, constant IG, a NaN entry
    assert np.isnan(spearman_rows(np.ones((2, 1)), np.ones((2, 1)))).all()  # one source word: no ranking
    assert spearman_rows(np.zeros((0, 3)), np.zeros((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match="shape"):
        spearman_rows(np.ones((2, 3)), np.ones((3, 2)))


def test_absolute_attribution_by_default():
    att = np.array([[0.6, 0.1, 0.3]])
    ig = np.array([[-3.0, 1.0, 2.0]])
    np.testing.assert_allclose(token_agreement(att, ig), [1.0])  # |IG| = [3, 1, 2] ranks like att
    # signed: ranks [1, 2, 3] vs [3, 1, 2], differences −2, 1, 1: ρ = 1 − 6·6 / (3·8) = −0.5
    np.testing.assert_allclose(token_agreement(att, ig, absolute=False), [-0.5])


def test_sentence_and_corpus_summaries():
    assert sentence_agreement(np.array([1.0, np.nan, 0.0])) == 0.5
    assert np.isnan(sentence_agreement(np.array([np.nan])))
    s = corpus_agreement([np.array([1.0, np.nan, 0.0]), np.array([-0.5]), np.array([np.nan])])
    assert (s.n_sentences, s.n_tokens, s.n_defined) == (3, 5, 3)
    assert s.token_mean == pytest.approx((1.0 + 0.0 - 0.5) / 3)
    assert s.token_median == pytest.approx(0.0)
    assert s.sentence_mean == pytest.approx((0.5 - 0.5) / 2)  # the all-NaN sentence drops out
    assert s.share_negative == pytest.approx(1 / 3)
    assert s.to_dict()["n_defined"] == 3
    empty = corpus_agreement([])
    assert empty.n_tokens == 0 and np.isnan(empty.token_mean)


def test_argmax_links():
    mat = np.array([[0.1, 0.7, 0.2],
                    [np.nan, np.nan, np.nan],  # no evidence: no link
                    [-5.0, 0.5, 1.0]])
    assert argmax_links(mat) == {(1, 0), (2, 2)}
    assert argmax_links(mat, absolute=True) == {(1, 0), (0, 2)}
    assert argmax_links(np.zeros((2, 0))) == set()
    with pytest.raises(ValueError, match="target words"):
        argmax_links(np.ones(3))


def _record() -> Record:
    # 3 single-token source words + </s>; target words x, y + </s>; one layer, one head
    cross = np.array([[[[0.7, 0.2, 0.05, 0.05],
                        [0.1, 0.3, 0.5, 0.1],
                        [0.2, 0.2, 0.2, 0.4]]]], dtype=np.float32)
    return Record(
        source="a b c", target="x y", src_words=["a", "b", "c"], tgt_words=["x", "y"],
        src_tokens=["a", "b", "c", "</s>"], dec_tokens=["<pad>", "x", "y"], label_tokens=["x", "y", "</s>"],
        src_ids=np.array([4, 5, 6, 0]), dec_ids=np.array([9, 7, 8]), label_ids=np.array([7, 8, 0]),
        src_word_ids=np.array([0, 1, 2, -1]), tgt_word_ids=np.array([0, 1, -1]), token_logprobs=np.zeros(3),
        cross=cross,
        enc_self=np.tile(np.eye(4, dtype=np.float32), (2, 1, 1, 1)),  # identity encoder: rollout = cross
        dec_self=np.array([[[[1, 0, 0], [0.5, 0.5, 0], [0.2, 0.3, 0.5]]]], dtype=np.float32),
    )


def _ig(source: np.ndarray) -> IGResult:
    T = source.shape[0]
    return IGResult(source=source, target_prefix=None, f_x=np.zeros(T), f_baseline=np.zeros(T), delta=np.zeros(T),
                    steps=8, baseline="pad", rows=np.arange(T))


def test_record_agreement_cross_and_rollout():
    rec = _record()
    att = attention_words(rec, "cross", layer=0, method="naive")
    np.testing.assert_allclose(att, [[0.7, 0.2, 0.05], [0.1, 0.3, 0.5]])
    # IG that ranks source words like the attention rows: ρ = 1; the mirror image: ρ = −1
    same = _ig(np.array([[3.0, 2.0, 1.0, 9.0], [1.0, 2.0, 3.0, 9.0], [0, 0, 0, 0]]))
    np.testing.assert_allclose(record_agreement(rec, same, layer=0), [1.0, 1.0])
    mirror = _ig(np.array([[-1.0, 2.0, 3.0, 0.0], [3.0, 2.0, -1.0, 0.0], [0, 0, 0, 0]]))
    np.testing.assert_allclose(record_agreement(rec, mirror, layer=0, absolute=False), [-1.0, -1.0])
    # |mirror| = [[1, 2, 3], [3, 2, 1]]: still reversed
    np.testing.assert_allclose(record_agreement(rec, mirror, layer=0), [-1.0, -1.0])
    # with an identity encoder and one decoder layer, rollout equals cross-attention
    np.testing.assert_allclose(attention_words(rec, "rollout"), att, rtol=1e-6)
    # Shift-Att reads the next rows
    np.testing.assert_allclose(attention_words(rec, "cross", layer=0, method="shift-att"),
                               [[0.1, 0.3, 0.5], [0.2, 0.2, 0.2]], rtol=1e-6)
    with pytest.raises(ValueError, match="attention"):
        attention_words(rec, "gradients")


def test_ig_and_rollout_links_are_word_pairs():
    from aligndebug.agreement import ig_links, rollout_links

    rec = _record()
    ig = _ig(np.array([[0.1, 3.0, -4.0, 9.0], [2.0, 0.0, 1.0, 9.0], [0, 0, 0, 0]]))  # </s> column never wins
    assert ig_links(rec, ig) == {(1, 0), (0, 1)}
    assert ig_links(rec, ig, absolute=True) == {(2, 0), (0, 1)}
    # rollout = cross here (identity encoder, one decoder layer): argmax of [.7,.2,.05] and [.1,.3,.5]
    assert rollout_links(rec) == {(0, 0), (2, 1)}


def test_end_to_end_on_a_tiny_marian(tiny_bundle):
    from aligndebug.agreement import ig_links, rollout_links
    from aligndebug.attribution import ig_for_record
    from aligndebug.extract import extract

    bundle = tiny_bundle("marian")
    recs = extract(bundle, ["Der Hund schläft .", "Ich sehe den Hund ."], ["The dog sleeps .", "I see the dog ."])
    per_sentence = []
    for rec in recs:
        ig = ig_for_record(bundle, rec, steps=8, rows=rec.target_positions)
        for attention in ("cross", "rollout"):
            rho = record_agreement(rec, ig, attention=attention)
            assert rho.shape == (len(rec.tgt_words),)
            defined = rho[~np.isnan(rho)]
            assert len(defined) and (np.abs(defined) <= 1).all()
        per_sentence.append(rho)
        n_src, n_tgt = len(rec.src_words), len(rec.tgt_words)
        for links in (ig_links(rec, ig), rollout_links(rec)):
            assert {t for _, t in links} == set(range(n_tgt))  # one link per target word
            assert all(0 <= s < n_src for s, _ in links)
    summary = corpus_agreement(per_sentence)
    assert summary.n_tokens == sum(len(r.tgt_words) for r in recs) and summary.n_defined > 0
