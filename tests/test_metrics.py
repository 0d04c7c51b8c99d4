"""Alignment metrics against hand-computed values; signatures; sacrebleu wrappers."""

from __future__ import annotations

import pytest
import sacrebleu

from aligndebug import __version__
from aligndebug.gold import GoldAlignment, read_gold
from aligndebug.metrics import (
    AlignmentCounts,
    AlignmentSignature,
    corpus_counts,
    corpus_translation_scores,
    count_links,
    sentence_bleu,
    sentence_chrf,
)


def test_sure_possible_example_where_aer_differs_from_1_minus_f1():
    # S = {0-0, 1-1}; P = S + {1-2, 2-2}; A = {0-0, 1-2, 2-0}
    # |A| = 3, |S| = 2, A∩S = {0-0} -> 1, A∩P = {0-0, 1-2} -> 2
    # precision = 2/3, recall = 1/2
    # AER = 1 - (1 + 2) / (3 + 2) = 1 - 3/5 = 2/5
    # F1 = 2 * (2/3) * (1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7, so 1 - F1 = 3/7 != 2/5
    gold = GoldAlignment.from_links({(0, 0), (1, 1)}, {(1, 2), (2, 2)})
    c = count_links({(0, 0), (1, 2), (2, 0)}, gold)
    assert (c.predicted, c.sure, c.pred_and_sure, c.pred_and_possible) == (3, 2, 1, 2)
    assert c.precision == pytest.approx(2 / 3)
    assert c.recall == pytest.approx(1 / 2)
    assert c.aer == pytest.approx(2 / 5)
    assert c.f1 == pytest.approx(4 / 7)
    assert c.aer != pytest.approx(1 - c.f1)


def test_sure_only_example_aer_equals_1_minus_f1():
    # S = P = {0-0, 1-1, 2-2}; A = {0-0, 1-1, 2-1, 3-3}
    # |A| = 4, |S| = 3, |A∩S| = |A∩P| = 2
    # precision = 2/4, recall = 2/3, AER = 1 - 4/7 = 3/7
    # F1 = 2 * (1/2) * (2/3) / (1/2 + 2/3) = (2/3) / (7/6) = 4/7 -> 1 - F1 = 3/7 = AER
    c = count_links([(0, 0), (1, 1), (2, 1), (3, 3)], {(0, 0), (1, 1), (2, 2)})  # plain links = all Sure
    assert (c.precision, c.recall) == (pytest.approx(0.5), pytest.approx(2 / 3))
    assert c.aer == pytest.approx(3 / 7) == pytest.approx(1 - c.f1)


def test_corpus_sums_counts_instead_of_averaging_sentences():
    # sentence 1: A = {0-0}, S = {0-0}: AER 0, precision 1
    # sentence 2: A = {1-1, 1-2, 2-2} all wrong, S = {0-0}: AER 1, precision 0
    # averaged: AER 0.5, precision 0.5.  Summed: |A| = 4, |S| = 2, |A∩S| = |A∩P| = 1
    # -> AER = 1 - (1 + 1) / (4 + 2) = 2/3, precision = 1/4, recall = 1/2
    preds = [{(0, 0)}, {(1, 1), (1, 2), (2, 2)}]
    golds = [GoldAlignment.from_links({(0, 0)}), GoldAlignment.from_links({(0, 0)})]
    total = corpus_counts(preds, golds)
    assert total == AlignmentCounts(4, 2, 1, 1)
    assert total.aer == pytest.approx(2 / 3)
    assert total.precision == pytest.approx(1 / 4) and total.recall == pytest.approx(1 / 2)
    # the same numbers from + and sum()
    per = [count_links(p, g) for p, g in zip(preds, golds)]
    assert per[0] + per[1] == total == sum(per)
    assert [c.aer for c in per] == [0.0, 1.0]


def test_corpus_counts_skips_none_gold_and_checks_lengths():
    golds = [GoldAlignment.from_links({(0, 0)}), None, GoldAlignment.from_links({(1, 1)})]
    preds = [{(0, 0)}, {(5, 5), (6, 6)}, {(1, 1)}]  # the skipped sentence's wrong links must not count
    assert corpus_counts(preds, golds) == AlignmentCounts(2, 2, 2, 2)
    with pytest.raises(ValueError):
        corpus_counts(preds[:2], golds)
    with pytest.raises(ValueError, match="prediction 2 is None"):
        corpus_counts([{(0, 0)}, set(), None], golds)


def test_edge_cases_0_over_0():
    # nothing predicted, nothing to find: no error at all
    c = count_links(set(), GoldAlignment.from_links())
    assert (c.precision, c.recall, c.aer, c.f1) == (1.0, 1.0, 0.0, 1.0)
    # nothing predicted, 2 sure links: precision 0/0 -> 1, recall 0/2, AER = 1 - 0/2 = 1
    c = count_links(set(), {(0, 0), (1, 1)})
    assert (c.precision, c.recall, c.aer, c.f1) == (1.0, 0.0, 1.0, 0.0)
    # 2 predicted, empty gold: precision 0/2, recall 0/0 -> 1, AER = 1 - 0/2 = 1, F1 = 0
    c = count_links({(0, 0), (1, 1)}, set())
    assert (c.precision, c.recall, c.aer, c.f1) == (0.0, 1.0, 1.0, 0.0)
    # no Sure links but the prediction sits in Possible: precision 1/1, AER = 1 - (0 + 1) / (1 + 0) = 0
    c = count_links({(0, 0)}, GoldAlignment.from_links((), {(0, 0)}))
    assert (c.precision, c.recall, c.aer) == (1.0, 1.0, 0.0)


def test_duplicate_predictions_count_once():
    # a list with a repeated link is still the set {0-0, 1-1}: |A| = 2
    c = count_links([(0, 0), (0, 0), (1, 1)], {(0, 0)})
    assert c.predicted == 2 and c.precision == pytest.approx(1 / 2)


def test_counts_validation_and_arithmetic():
    with pytest.raises(ValueError, match="inconsistent"):
        AlignmentCounts(predicted=1, sure=5, pred_and_sure=2, pred_and_possible=2)  # |A∩S| > |A|
    with pytest.raises(ValueError):
        AlignmentCounts(predicted=3, sure=3, pred_and_sure=2, pred_and_possible=1)  # |A∩S| > |A∩P|
    with pytest.raises(TypeError):
        AlignmentCounts() + 1
    assert sum([], AlignmentCounts()) == AlignmentCounts()
    d = AlignmentCounts(4, 2, 1, 1).as_dict()
    assert d["aer"] == pytest.approx(2 / 3) and d["predicted"] == 4


def test_metrics_on_a_gold_file_against_itself(tmp_path):
    # predicting exactly the Sure links of a file with Possible links: recall 1, precision 1, AER 0
    p = tmp_path / "g.txt"
    p.write_text("0-0 1p1\n1-0 0p1 2-2\n")
    gold = read_gold(p, base=0)
    total = corpus_counts([a.sure for a in gold], gold)
    assert (total.precision, total.recall, total.aer) == (1.0, 1.0, 0.0)
    # predicting all Possible links: precision 1; AER = 1 - (3 + 5) / (5 + 3) = 0 as well
    total = corpus_counts([a.possible for a in gold], gold)
    assert total == AlignmentCounts(5, 3, 3, 5) and total.aer == 0.0


# ------------------------------------------------------------------------------------ signature

def test_signature_format():
    sig = AlignmentSignature(model="NAME", method="shift-att", layer=2, heads="mean", gold="/x/y/de-en.wa",
                             fmt="pharaoh", base=0, base_source="detected", version="0.1.0")
    assert sig.format() == "model:NAME|method:shift-att|layer:2|heads:mean|gold:de-en.wa|fmt:pharaoh|base:0(detected)|v:0.1.0"
    assert str(sig) == sig.format() and sig.base_detected
    sig2 = AlignmentSignature(model="m", method="naive", layer="mean", heads=[0, 3], threshold=0.05)
    assert sig2.format() == f"model:m|method:naive|layer:mean|heads:0,3|thr:0.05|gold:none|v:{__version__}"


def test_signature_for_gold(tmp_path):
    p = tmp_path / "g.wa"
    p.write_text("1-1 2-2\n")
    gold = read_gold(p)  # no index 0 and no lengths: base guessed 1
    sig = AlignmentSignature.for_gold(gold, model="m", method="shift-att", layer=3)
    assert sig.format().endswith(f"|gold:g.wa|fmt:pharaoh|base:1(guessed)|v:{__version__}")


# ------------------------------------------------------------------------------------ sacrebleu

def test_corpus_translation_scores_match_sacrebleu():
    hyps = ["the cat sat on the mat .", "a dog barked loudly ."]
    refs = ["the cat sat on a mat .", "the dog barked ."]
    out = corpus_translation_scores(hyps, refs)
    assert out["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert out["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert out["ter"] == pytest.approx(sacrebleu.corpus_ter(hyps, [refs]).score)
    for name in ("bleu", "chrf", "ter"):
        assert "nrefs:1" in out[f"{name}_signature"] and "version:" in out[f"{name}_signature"]
    perfect = corpus_translation_scores(refs, refs)
    assert perfect["bleu"] == pytest.approx(100) and perfect["chrf"] == pytest.approx(100) and perfect["ter"] == 0


def test_corpus_translation_scores_multiple_references():
    hyps = ["a b c d", "e f g h"]
    refs = [["x y z w", "a b c d"], ["e f g h", "q r s t"]]  # each hypothesis matches one of its two references
    out = corpus_translation_scores(hyps, refs)
    assert "nrefs:2" in out["bleu_signature"] and out["bleu"] == pytest.approx(100)
    with pytest.raises(ValueError):
        corpus_translation_scores(hyps, refs[:1])


def test_sentence_scores_match_sacrebleu():
    hyp, ref = "the cat sat on the mat", "the cat sat on a mat"
    assert sentence_bleu(hyp, ref) == pytest.approx(sacrebleu.sentence_bleu(hyp, [ref]).score)
    assert sentence_chrf(hyp, ref) == pytest.approx(sacrebleu.sentence_chrf(hyp, [ref]).score)
    assert sentence_bleu(ref, ref) == pytest.approx(100) and sentence_chrf(ref, [ref, hyp]) == pytest.approx(100)
    assert sentence_bleu("x y z", ref) < 10
