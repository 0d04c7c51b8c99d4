"""Contrastive explanations (aligndebug.contrast) and contrastive suites (aligndebug.suite), on tiny models.

The contrastive attribution is checked against an independent computation: plain Integrated Gradients of
each side (attribution.integrated_gradients, the public function) subtracted, which IG's linearity says it
must equal; log-probs against the Records of a separate extraction.
"""

from __future__ import annotations

import numpy as np
import pytest

from aligndebug.attribution import integrated_gradients
from aligndebug.contrast import contrast, contrastive_ig, differing_spans, span_rows
from aligndebug.extract import extract

SRC = "Der Hund schläft ."


# ------------------------------------------------------------------------------ plain functions

def test_differing_spans_are_found_anywhere_not_assumed_at_the_end():
    a = "The dog sleeps in the big garden .".split()
    b = "The cat sleeps in the garden today .".split()
    assert differing_spans(a, b) == [("replace", 1, 2, 1, 2), ("delete", 5, 6, 5, 5), ("insert", 7, 7, 6, 7)]
    assert differing_spans(a, a) == []


def test_span_rows_of_words_and_of_empty_spans():
    ids = np.array([-1, 0, 1, 1, 2, -1])  # e.g. BART: <s> w0 w1 w1 w2 </s>
    assert span_rows(ids, 1, 2).tolist() == [2, 3]
    assert span_rows(ids, 0, 3).tolist() == [1, 2, 3, 4]
    assert span_rows(ids, 2, 2).tolist() == [4]  # empty span before word 2: the row after word 1
    assert span_rows(ids, 3, 3).tolist() == [5]  # at the end: </s>
    assert span_rows(ids, 0, 0).tolist() == [1]


# ------------------------------------------------------------------------------ contrast on tiny models

def test_contrast_of_a_target_with_itself_is_zero_everywhere(tiny_bundle):
    b = tiny_bundle("marian")
    res = contrast(b, SRC, "The dog sleeps .", "The dog sleeps .", steps=8)
    assert res.positions == [] and res.difference == 0.0
    # forced to explain every row anyway, the contrastive IG of a target against itself is zero
    rec = extract(b, [SRC], ["The dog sleeps ."])[0]
    rows = [([t], [t]) for t in range(len(rec.label_ids))]
    ig = contrastive_ig(b, rec.src_ids, (rec.dec_ids, rec.label_ids), (rec.dec_ids, rec.label_ids), rows, steps=8)
    assert np.all(ig.f_x == 0) and np.all(ig.f_baseline == 0)
    assert np.abs(ig.source).max() <= 1e-9 and ig.delta.max() <= 1e-9


@pytest.mark.parametrize("family", ["marian", "bart"])
def test_contrastive_attribution_is_the_difference_of_the_two_attributions(tiny_bundle, family):
    b = tiny_bundle(family)
    good, bad = "The dog sleeps .", "The cat sleeps ."
    res = contrast(b, SRC, good, bad, steps=16)
    assert len(res.positions) == 1
    pos = res.positions[0]
    assert (pos.kind, pos.target_span, pos.contrast_span) == ("replace", (1, 2), (1, 2))
    rg, rb = extract(b, [SRC, SRC], [good, bad])
    assert [rg.tgt_word_ids[t] for t in pos.target_rows] == [1] * len(pos.target_rows)
    # log-probs of the span, from an independent extraction
    assert pos.logprob_target == pytest.approx(float(rg.token_logprobs[pos.target_rows].sum()), rel=1e-4, abs=1e-5)
    assert pos.logprob_contrast == pytest.approx(float(rb.token_logprobs[pos.contrast_rows].sum()), rel=1e-4, abs=1e-5)
    assert pos.difference == pytest.approx(pos.logprob_target - pos.logprob_contrast)
    assert res.difference == pytest.approx(float(rg.token_logprobs.sum() - rb.token_logprobs.sum()), rel=1e-4, abs=1e-5)
    # plain IG of each side (public function), rows summed, then subtracted
    ig_g = integrated_gradients(b.model, rg.src_ids, rg.dec_ids, rg.label_ids, steps=16, rows=pos.target_rows)
    ig_b = integrated_gradients(b.model, rb.src_ids, rb.dec_ids, rb.label_ids, steps=16, rows=pos.contrast_rows)
    diff = ig_g.source.sum(0) - ig_b.source.sum(0)
    tol = pos.delta + ig_g.delta.sum() + ig_b.delta.sum() + 1e-4 * np.abs(diff).max()
    assert np.abs(np.asarray(pos.attribution_tokens) - diff).max() <= tol
    # completeness of the difference, and the word pooling keeps the sum of the non-special tokens
    total = float(np.sum(pos.attribution_tokens))
    # (the batched extraction and IG's own pass agree to float precision, not bit for bit)
    assert abs(total - (pos.difference - pos.f_baseline)) <= pos.delta + 1e-5 * max(1.0, abs(pos.difference))
    words = np.asarray(rg.src_word_ids) >= 0
    assert np.sum(pos.attribution) == pytest.approx(float(np.asarray(pos.attribution_tokens)[words].sum()), rel=1e-6)
    assert len(pos.attribution) == len(res.source_words) == len(pos.attention_target)
    assert sum(pos.attention_target) <= 1.0 + 1e-5 and min(pos.attention_target) >= 0


def test_several_differing_positions_match_one_at_a_time(tiny_bundle):
    """The vmapped backward over positions gives each position what a lone run of it gives."""
    b = tiny_bundle("marian")
    good, bad = "The dog sleeps in the garden .", "The cat sleeps in garden today ."
    res = contrast(b, SRC, good, bad, steps=8)
    assert [p.kind for p in res.positions] == ["replace", "delete", "insert"]
    rg, rb = extract(b, [SRC, SRC], [good, bad])
    for p in res.positions:
        lone = contrastive_ig(b, rg.src_ids, (rg.dec_ids, rg.label_ids), (rb.dec_ids, rb.label_ids),
                              [(p.target_rows, p.contrast_rows)], steps=8)
        scale = np.abs(lone.source).max()
        assert np.abs(np.asarray(p.attribution_tokens) - lone.source[0]).max() <= 1e-4 * scale + 1e-7
        assert p.delta == pytest.approx(float(lone.delta[0]), rel=1e-3, abs=1e-6)


def test_more_steps_close_the_completeness_gap(tiny_bundle):
    b = tiny_bundle("marian")
    gaps = [contrast(b, SRC, "The dog sleeps .", "The cat sleeps .", steps=s).positions[0].relative_delta
            for s in (2, 32)]
    assert gaps[1] < 0.05 and gaps[1] <= gaps[0]


def test_to_dict_is_json(tiny_bundle):
    import json

    res = contrast(tiny_bundle("marian"), SRC, "The dog sleeps .", "The cat sleeps .", steps=4)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["positions"][0]["target_text"] == "dog" and d["positions"][0]["contrast_text"] == "cat"
    assert d["difference"] == pytest.approx(res.difference)
