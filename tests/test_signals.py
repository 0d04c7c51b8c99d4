"""Error signals on hand-made matrices whose values are worked out in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aligndebug.record import Record
from aligndebug.signals import (
    aligner_signals,
    content_mask,
    coverage,
    coverage_suspects,
    is_punctuation,
    logprob_positions,
    lowest_tokens,
    normalised_entropy,
    record_signals,
    reference_scores,
    relative_coverage,
    repetition_stats,
    scattered_share,
    seq_logprob,
    sink_shares,
    wass_to_unif,
    word_signals,
)


def test_entropy_uniform_is_one_and_one_hot_is_zero():
    w = np.array([[0.25, 0.25, 0.25, 0.25], [0.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    # row 3: H = log 2, normalised by log 4 -> 0.5
    np.testing.assert_allclose(normalised_entropy(w), [1.0, 0.0, 0.5])


def test_entropy_renormalises_rows_that_lost_mass_to_specials():
    # 0.3 / 0.3 on two words (0.4 went to </s>): renormalised to 0.5 / 0.5 -> log 2 / log 2 = 1
    np.testing.assert_allclose(normalised_entropy(np.array([[0.3, 0.3]])), [1.0])
    # a row with no mass on any source word looks nowhere: counts as uniform
    np.testing.assert_allclose(normalised_entropy(np.zeros((1, 3))), [1.0])


def test_entropy_single_source_word_and_empty_source():
    np.testing.assert_allclose(normalised_entropy(np.array([[0.7], [1.0]])), [0.0, 0.0])
    assert np.isnan(normalised_entropy(np.zeros((2, 0)))).all()
    with pytest.raises(ValueError, match="non-negative"):
        normalised_entropy(np.array([[0.5, -0.5]]))


def test_scattered_share_counts_strictly_above_threshold():
    assert scattered_share(np.array([0.2, 0.8, 0.9, 0.8]), 0.8) == 0.25
    assert math.isnan(scattered_share(np.array([]), 0.5))


def test_wass_to_unif_hand_values():
    # mean of one-hot rows on column 0 = [1, 0, 0, 0]; TV to [.25]*4 = .5*(.75 + 3*.25) = 0.75 = 1 - 1/S
    one_hot = np.array([[1.0, 0, 0, 0], [1.0, 0, 0, 0]])
    assert wass_to_unif(one_hot) == pytest.approx(0.75)
    # rows one-hot on different columns average to uniform: distance 0
    assert wass_to_unif(np.eye(4)) == pytest.approx(0.0)
    # mean of [.5,.5,0,0] and [.5,0,.5,0] = [.5,.25,.25,0]: TV = .5*(.25 + 0 + 0 + .25) = 0.25
    assert wass_to_unif(np.array([[0.5, 0.5, 0, 0], [0.5, 0, 0.5, 0]])) == pytest.approx(0.25)
    assert math.isnan(wass_to_unif(np.zeros((0, 3))))


def test_coverage_and_relative_coverage():
    # rows renormalised: [.5,.5,0] and [0,.2,.2]->[0,.5,.5]; column sums [.5, 1, .5]
    w = np.array([[0.5, 0.5, 0.0], [0.0, 0.2, 0.2]])
    np.testing.assert_allclose(coverage(w), [0.5, 1.0, 0.5])
    # fair share 2 target / 3 source words: relative = coverage * 3 / 2
    np.testing.assert_allclose(relative_coverage(w), [0.75, 1.5, 0.75])
    np.testing.assert_allclose(relative_coverage(np.zeros((0, 3))), [0, 0, 0])


def test_coverage_suspects_only_among_content_words():
    rel = np.array([0.05, 0.02, 2.5, 1.0])
    content = np.array([True, False, True, True])
    omitted, repeated = coverage_suspects(rel, content, low=0.1, high=2.0)
    assert omitted.tolist() == [0] and repeated.tolist() == [2]
    assert coverage_suspects(rel, content, None, None)[0].size == 0


def test_content_words_and_punctuation():
    words = ["Ein", "Hund", "läuft", ",", "im", "Park", "und", "3", "Kinder", "...", "über"]
    assert content_mask(words).tolist() == [False, True, True, False, False, True, False, False, True, False, False]
    # another list replaces the built-in one
    assert content_mask(["Ein", "Hund"], function_words=["hund"]).tolist() == [True, False]
    assert is_punctuation("...") and is_punctuation("„") and not is_punctuation("a.") and not is_punctuation("")


def test_sink_shares():
    att = np.array([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]])  # columns: word, punctuation, </s>
    special = np.array([False, False, True])
    punct = np.array([False, True, False])
    s, p = sink_shares(att, special, punct)
    assert s == pytest.approx((0.3 + 0.8) / 2) and p == pytest.approx((0.2 + 0.1) / 2)


def test_seq_logprob_includes_final_eos_and_skips_other_specials():
    # labels: [lang code, w0, w0, w1, </s>]
    word_ids = np.array([-1, 0, 0, 1, -1])
    lp = np.array([-9.0, -1.0, -2.0, -3.0, -4.0])
    pos = logprob_positions(word_ids)
    assert pos.tolist() == [1, 2, 3, 4]
    assert seq_logprob(lp, pos) == pytest.approx(-2.5)
    low = lowest_tokens(lp, ["<2en>", "▁a", "b", "▁c", "</s>"], pos, k=2)
    assert [(d["position"], d["token"]) for d in low] == [(4, "</s>"), (3, "▁c")]


def test_repetition_stats():
    clean = repetition_stats("a man rides a bike".split())
    # "a" repeats (longest 1) but no bigram repeats and nothing is immediately repeated
    assert clean == {"repeat_share": 0.0, "longest_repeat": 1.0, "tandem_repeat": 0.0, "repeated_words": 0.0}
    rep = repetition_stats("the man the man walks".split())
    # "the man" twice, back to back: 4 of 5 words are inside a repeated bigram ("man" is a German function word)
    assert rep == {"repeat_share": 0.8, "longest_repeat": 2.0, "tandem_repeat": 2.0, "repeated_words": 0.0}
    stutter = repetition_stats("a dog is is running".split())
    assert stutter["tandem_repeat"] == 1.0 and stutter["repeat_share"] == 0.0
    far = repetition_stats("a red car and a red car".split())
    # "a red car" occurs twice but not back to back; 6 of 7 words lie in a repeated bigram
    assert far["longest_repeat"] == 3.0 and far["tandem_repeat"] == 0.0
    assert far["repeat_share"] == pytest.approx(6 / 7)
    # case-folded; an overlapping run "x x x" holds "x x" twice
    assert repetition_stats("X x x".split())["longest_repeat"] == 2.0
    assert repetition_stats([])["longest_repeat"] == 0.0
    # raw text: punctuation attached to a word does not hide a repeat
    raw = repetition_stats("A dog on the grass on the grass.".split())
    assert raw["tandem_repeat"] == 3.0 and raw["longest_repeat"] == 3.0
    # a repeat of punctuation alone is ordinary text (nested brackets), not the model repeating itself
    assert repetition_stats('"Hi," he said , , ok'.split())["tandem_repeat"] == 0.0
    assert repetition_stats("( Parliament approved the position ( as amended ) )".split()) == {
        "repeat_share": 0.0, "longest_repeat": 0.0, "tandem_repeat": 0.0, "repeated_words": 0.0}
    # ... but punctuation inside a repeated span still belongs to it
    assert repetition_stats("of the people , of the people , too".split())["tandem_repeat"] == 4.0
    assert repetition_stats("he said ( yes ( yes".split())["tandem_repeat"] == 2.0
    # a spaced ellipsis is text; the same mark on and on (a degenerate output's dots) is a repeat like any other
    assert repetition_stats("and so on . . .".split())["tandem_repeat"] == 0.0
    assert repetition_stats("wait . . . . no".split())["tandem_repeat"] == 0.0
    dots = repetition_stats(["the", "employer"] + ["."] * 300)
    assert dots["tandem_repeat"] == 150.0 and dots["longest_repeat"] == 299.0
    assert dots["repeat_share"] == pytest.approx(300 / 302)


def test_repeated_words_counts_content_words_said_again_anywhere():
    # a single content word said again further on, which no n-gram signal sees ("a" and "in" do not count)
    one = repetition_stats("Two boys cross a street in a city street.".split())
    assert one["repeated_words"] == 1.0 and one["repeat_share"] == 0.0 and one["tandem_repeat"] == 0.0
    # every occurrence beyond a word's first counts; case and attached punctuation do not hide one
    assert repetition_stats("Green shirt, green green SHIRT".split())["repeated_words"] == 3.0
    # function words, words of two letters or less and punctuation never count
    assert repetition_stats("the cat and the dog of the of the ; ; ok ok".split())["repeated_words"] == 0.0
    # another language's function words can be given
    assert repetition_stats("le chat et le chien et".split())["repeated_words"] == 0.0
    assert repetition_stats("chat pour chien pour".split(), function_words={"pour"})["repeated_words"] == 0.0
    assert repetition_stats("chat pour chien pour".split())["repeated_words"] == 1.0


def test_reference_scores_perfect_and_disjoint():
    same = reference_scores("a dog runs on the grass", "a dog runs on the grass")
    assert same["chrf"] == pytest.approx(100.0) and same["bleu"] == pytest.approx(100.0)
    other = reference_scores("zzz qqq", "a dog runs on the grass")
    assert other["bleu"] < 5 and other["chrf"] < 5


def test_word_signals_thresholds_and_shape_check():
    src = ["Ein", "Hund", "rennt", "."]
    tgt = ["a", "dog", "dog"]
    w = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 1.0, 0, 0]])
    sig = word_signals(w, src, tgt, entropy_threshold=0.5, coverage_low=0.1, coverage_high=2.0)
    assert sig["entropy_mean"] == 0.0 and sig["scattered_share"] == 0.0
    # content words Hund, rennt; rennt gets nothing -> omission; Hund gets 2 of 3 units: 2*4/3 = 2.67
    assert sig["omission_suspects"] == ["rennt"] and sig["repetition_suspects"] == ["Hund"]
    assert sig["omission_share"] == 0.5 and sig["coverage_min"] == 0.0
    assert sig["coverage_max"] == pytest.approx(8 / 3)
    assert sig["length_ratio"] == 0.75
    without = word_signals(w, src, tgt)
    assert math.isnan(without["scattered_share"]) and without["omission_suspects"] == []
    with pytest.raises(ValueError, match="does not match"):
        word_signals(w, src[:3], tgt)


def _record(cross: np.ndarray) -> Record:
    # source "Hund läuft ." + </s>; target "dog runs" + </s>; Marian-style: decoder starts with <pad>
    src_words, tgt_words = ["Hund", "läuft", "."], ["dog", "runs"]
    return Record(
        source="Hund läuft .", target="dog runs", src_words=src_words, tgt_words=tgt_words,
        src_tokens=["▁Hund", "▁läuft", "▁.", "</s>"], dec_tokens=["<pad>", "▁dog", "▁runs"],
        label_tokens=["▁dog", "▁runs", "</s>"], src_ids=np.arange(4), dec_ids=np.arange(3), label_ids=np.arange(3),
        src_word_ids=np.array([0, 1, 2, -1]), tgt_word_ids=np.array([0, 1, -1]),
        token_logprobs=np.array([-0.5, -1.0, -3.0], dtype=np.float32), cross=cross,
    )


def test_record_signals_on_hand_record():
    # one layer, one head; Shift-Att reads rows 1 ("dog" as input) and 2 ("runs" as input)
    rows = np.array([
        [0.25, 0.25, 0.25, 0.25],  # row 0: unused by Shift-Att
        [0.6, 0.0, 0.2, 0.2],  # dog
        [0.0, 0.4, 0.0, 0.6],  # runs
    ])
    rec = _record(rows[None, None].astype(np.float32))
    sig = record_signals(rec, layer=0, head=0, reference="dog runs")
    # sinks: </s> share (.2 + .6)/2 = .4; punctuation '.' (.2 + 0)/2 = .1
    assert sig["sink_special"] == pytest.approx(0.4) and sig["sink_punct"] == pytest.approx(0.1)
    # mean row [.3, .2, .1, .4] vs uniform .25: TV = .5*(.05+.05+.15+.15) = 0.2
    assert sig["wass_to_unif"] == pytest.approx(0.2)
    # word rows renormalised: dog [.75, 0, .25], runs [0, 1, 0]; entropies H([.75,.25])/log 3 and 0
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(3)
    np.testing.assert_allclose(sig["word_entropy"], [h, 0.0], atol=1e-5)
    # Seq-Logprob over dog, runs and the final </s>
    assert sig["seq_logprob"] == pytest.approx(-1.5)
    assert sig["min_logprob"] == pytest.approx(-3.0) and sig["lowest_tokens"][0]["token"] == "</s>"
    assert sig["chrf"] == pytest.approx(100.0)
    # naive reads rows 0 and 1 instead: the uniform row 0 changes the sink share
    naive = record_signals(rec, layer=0, head=0, method="naive")
    assert naive["sink_special"] == pytest.approx((0.25 + 0.2) / 2)
    assert "chrf" not in naive


def test_record_signals_needs_cross_attention():
    rec = _record(np.zeros((1, 1, 3, 4), dtype=np.float32))
    rec.cross = None
    with pytest.raises(ValueError, match="cross-attention"):
        record_signals(rec)


def test_aligner_signals_by_hand():
    # source "Hund läuft" (both content words), target "The dog runs" ("The" a function word); columns: Hund,
    # läuft, no source. Argmax per target word: no source, Hund, Hund -> läuft is nobody's: unaligned_source 1/2.
    # No-source mass over the content words dog and runs: (0.1 + 0.3) / 2 = 0.2 ("The"'s 0.8 is not counted).
    m = np.array([[0.1, 0.1, 0.8], [0.7, 0.2, 0.1], [0.6, 0.1, 0.3]])
    got = aligner_signals(m, ["Hund", "läuft"], ["The", "dog", "runs"])
    assert got["unaligned_target"] == pytest.approx(0.2, rel=1e-12) and got["unaligned_source"] == 0.5
    # the reasons' words: läuft is nobody's choice; "The" chose no source, but it is no content word
    assert got["unaligned_source_words"] == ["läuft"] and got["unaligned_target_words"] == []
    # every source word some target word's choice; "runs" leans to no source (0.4) but chooses läuft (0.6)
    got = aligner_signals(np.array([[0.9, 0.0, 0.1], [0.0, 0.6, 0.4]]), ["Hund", "läuft"], ["dog", "runs"])
    assert got["unaligned_target"] == pytest.approx(0.25, rel=1e-12) and got["unaligned_source"] == 0.0
    assert got["unaligned_source_words"] == [] and got["unaligned_target_words"] == []
    got = aligner_signals(np.array([[0.9, 0.0, 0.1], [0.1, 0.2, 0.7]]), ["Hund", "läuft"], ["dog", "barks"])
    assert got["unaligned_target_words"] == ["barks"] and got["unaligned_source_words"] == ["läuft"]
    # no content word on a side: undefined
    got = aligner_signals(np.array([[0.5, 0.5]]), ["und"], ["the"])
    assert math.isnan(got["unaligned_target"]) and math.isnan(got["unaligned_source"])
    with pytest.raises(ValueError, match="does not match 3 target x 2 source words"):
        aligner_signals(np.ones((3, 2)) / 2, ["Hund", "läuft"], ["The", "dog", "runs"])
