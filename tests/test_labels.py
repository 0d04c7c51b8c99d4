"""Error labels people gave translations: the TSV reader, its errors, and per-label ROC-AUCs of a triage."""

from __future__ import annotations

import numpy as np
import pytest
from numeric import approx

from aligndebug.errors import InputError
from aligndebug.labels import LABEL_TYPES, ErrorLabels, format_label_aucs, label_aucs, read_error_labels


def _write(tmp_path, text: str):
    path = tmp_path / "labels.tsv"
    path.write_text(text, encoding="utf-8")
    return path


def test_read_error_labels_reads_names_clean_rows_and_the_labelled_translation(tmp_path):
    path = _write(tmp_path, "id\tlabels\tnote\ttranslation\n"
                            "0\tnone\t\ta dog runs .\n"
                            "1\tomission, repetition\tdrops 'park'\ta a dog .\n"
                            "2\t\t\ttwo men .\n"
                            "3\tNone\t\tx\n")
    got = read_error_labels(path)
    assert got == [ErrorLabels(frozenset(), "a dog runs ."), ErrorLabels(frozenset({"omission", "repetition"}), "a a dog ."),
                   ErrorLabels(frozenset(), "two men ."), ErrorLabels(frozenset(), "x")]
    # columns in any order, no id or translation column
    assert read_error_labels(_write(tmp_path, "note\tLabels\nfine\tnone\n\tfully_detached\n")) == [
        ErrorLabels(frozenset()), ErrorLabels(frozenset({"fully_detached"}))]


@pytest.mark.parametrize("text, line, words", [
    ("id\tnote\n0\tx\n", 1, "no 'labels' column"),
    ("id\tlabels\n0\tnone\n1\n", 3, "1 tab-separated fields, the header has 2"),
    ("id\tlabels\n0\tnone\n2\tnone\n", 3, "id '2' on the line of sentence 1"),
    ("labels\nnone\nOmission!\n", 3, "label 'Omission!' is not a name"),
    ("labels\nomission,,repetition\n", 2, "label '' is not a name"),
])
def test_a_bad_labels_file_names_its_line_and_what_was_expected(tmp_path, text, line, words):
    path = _write(tmp_path, text)
    with pytest.raises(InputError) as err:
        read_error_labels(path)
    assert err.value.line == line and words in err.value.message and err.value.expected
    assert str(err.value).startswith(f"{path}:{line}:")


def test_an_empty_labels_file_is_an_error(tmp_path):
    with pytest.raises(InputError, match="empty"):
        read_error_labels(_write(tmp_path, ""))


def _rows():
    # triage rows come ranked, not in input order; labels are matched by id
    return [
        {"id": 3, "score": 5.0, "translation": "d", "seq_logprob": -4.0, "repeat_share": 0.5},
        {"id": 0, "score": 3.0, "translation": "a", "seq_logprob": -1.0, "repeat_share": 0.0},
        {"id": 4, "score": 2.5, "translation": "e", "seq_logprob": -0.5, "repeat_share": 0.1},
        {"id": 1, "score": 2.0, "translation": "b", "seq_logprob": -3.0, "repeat_share": 0.0},
        {"id": 2, "score": 1.0, "translation": "c", "seq_logprob": -2.0, "repeat_share": None},
        {"id": 5, "score": 0.0, "translation": "f  g", "seq_logprob": -5.0, "repeat_share": 0.0},
    ]


def test_label_aucs_by_hand():
    labelled = [ErrorLabels(frozenset({"omission"}), "a"), ErrorLabels(frozenset()), ErrorLabels(frozenset(), "c"),
                ErrorLabels(frozenset({"repetition", "omission"}), "d"), ErrorLabels(frozenset(), "E (another)"),
                ErrorLabels(frozenset(), "f g")]
    got = label_aucs(_rows(), labelled)
    # row 4's translation is not the labelled one; row 5's differs only in spacing
    assert got["mismatched"] == [4] and got["n"] == 5 and got["clean"] == 3
    omission, repetition = got["labels"]["omission"], got["labels"]["repetition"]
    assert omission["n"] == 2 and repetition["n"] == 1
    # clean rows 1, 2, 5 score 2, 1, 0; omission rows 0 and 3 score 3 and 5: above all three
    assert omission["auc"]["score"] == approx(1.0)
    # Seq-Logprob (low = suspect) of the omission rows -1 and -4 against clean -3, -2, -5:
    # -1 is below none of them, -4 below -3 and -2: (0 + 2) / 6
    assert omission["auc"]["seq_logprob"] == approx(2 / 6)
    # repeat_share of row 3 (0.5) against clean 0, undefined (least suspect), 0
    assert repetition["auc"]["repeat_share"] == approx(1.0)
    assert repetition["auc"]["seq_logprob"] == approx(2 / 3)
    assert omission["best_signal"] in ("repeat_share", "seq_logprob") and omission["best_auc"] == approx(
        max(omission["auc"]["repeat_share"], omission["auc"]["seq_logprob"]))
    text = format_label_aucs(got)
    assert "1 left out" in text and "omission" in text and "repetition" in text
    assert "none of the categories" not in text
    # a label that is none of the WMT18 categories (here a misspelling) is scored, and said to be one of its own
    labelled[0] = ErrorLabels(frozenset({"omision"}), "a")
    text = format_label_aucs(label_aucs(_rows(), labelled))
    assert "note: omision is none of the categories fully_detached, strongly_detached, omission, repetition" in text


def test_label_aucs_without_a_clean_row_has_no_auc_to_give():
    labelled = [ErrorLabels(frozenset({"omission"}))] * 6
    got = label_aucs(_rows(), labelled)
    assert got["clean"] == 0 and got["labels"]["omission"]["best_signal"] is None
    assert np.isnan(got["labels"]["omission"]["auc"]["score"])
    assert "nan" in format_label_aucs(got)


def test_label_aucs_needs_one_label_per_row():
    with pytest.raises(ValueError, match="6 triage rows but 2 labelled"):
        label_aucs(_rows(), [ErrorLabels(frozenset())] * 2)


@pytest.mark.parametrize("target", ["reference", "own", "other", "beam5"])
def test_the_held_out_error_labels_in_datasets_read_and_match_their_set(data_dir, target):
    folder = data_dir / "heldout" / "europarl-deen-500"
    labelled = read_error_labels(folder / f"errors.{target}.tsv")
    sources = (folder / "test.de").read_text(encoding="utf-8").splitlines()
    assert len(labelled) == len(sources) == 500
    names = set().union(*(x.labels for x in labelled))
    assert names <= {"fully_detached", "strongly_detached", "omission", "repetition"}
    assert all(x.translation for x in labelled)
    if target == "reference":  # the labelled text is the set's reference, line for line
        assert [x.translation for x in labelled] == (folder / "test.en").read_text(encoding="utf-8").splitlines()
        assert sum(not x.labels for x in labelled) == 490
    elif target == "other":  # another system's output, shipped beside its labels, line for line
        assert [x.translation for x in labelled] == (folder / "other.en").read_text(encoding="utf-8").splitlines()
        assert sum(not x.labels for x in labelled) == 51 and names == set(LABEL_TYPES)
    elif target == "beam5":  # the embedded model's beam-5 output: where it is the greedy text, the greedy labels
        assert [x.translation for x in labelled] == (folder / "beam5.en").read_text(encoding="utf-8").splitlines()
        assert sum(not x.labels for x in labelled) == 140 and names == set(LABEL_TYPES)
        greedy = read_error_labels(folder / "errors.own.tsv")
        same = [(b, g) for b, g in zip(labelled, greedy) if b.translation == g.translation]
        assert len(same) == 49 and all(b.labels == g.labels for b, g in same)
    else:
        assert sum(not x.labels for x in labelled) == 128 and "repetition" in names


def test_the_multi30k_error_labels_in_datasets_read_and_match_their_set(data_dir):
    import gzip

    folder = data_dir / "train" / "multi30k-deen"
    labelled = read_error_labels(folder / "errors.test_2016_flickr.own.tsv")
    with gzip.open(folder / "test_2016_flickr.de.gz", "rt", encoding="utf-8") as f:
        assert len(labelled) == len(f.read().splitlines()) == 1000
    assert set().union(*(x.labels for x in labelled)) == {"fully_detached", "strongly_detached", "omission", "repetition"}
    assert sum(not x.labels for x in labelled) == 783 and all(x.translation for x in labelled)


def test_the_interval_of_an_auc_difference_resamples_each_class_apart_and_pairs_the_scores():
    from aligndebug.labels import auc_difference_interval
    from aligndebug.triage import roc_auc

    rng = np.random.default_rng(0)
    has = np.r_[np.ones(40, bool), np.zeros(160, bool)]
    strong = has * 2.0 + rng.normal(size=200)  # AUC about 0.92
    weak = has * 0.2 + rng.normal(size=200)  # about 0.56
    low, high = auc_difference_interval(strong, weak, has, resamples=500, seed=1)
    diff = roc_auc(strong, has) - roc_auc(weak, has)
    assert 0 < low < diff < high < 1  # a clear lead: the interval holds the difference and leaves out 0
    # one score against itself: every resample gives 0 (paired: both on the same rows)
    assert auc_difference_interval(strong, strong, has, resamples=200) == (0.0, 0.0)
    # each class keeps its size: a perfect score stays perfect on every resample
    assert auc_difference_interval(has * 1.0, weak * 0.0, has, resamples=200) == (0.5, 0.5)
    # the same seed, the same interval
    assert auc_difference_interval(strong, weak, has, resamples=300, seed=4) == auc_difference_interval(
        strong, weak, has, resamples=300, seed=4)
    # a near tie on few labelled rows: the interval holds 0
    few = np.r_[np.ones(4, bool), np.zeros(60, bool)]
    a, b = few * 0.5 + rng.normal(size=64), few * 0.5 + rng.normal(size=64)
    lo, hi = auc_difference_interval(a, b, few, resamples=500)
    assert lo < 0 < hi
    assert all(np.isnan(auc_difference_interval(a, b, np.zeros(64, bool))))


def test_label_aucs_give_the_score_against_the_best_signal_with_an_interval():
    labelled = [ErrorLabels(frozenset({"omission"}), "a"), ErrorLabels(frozenset()), ErrorLabels(frozenset(), "c"),
                ErrorLabels(frozenset({"omission"}), "d"), ErrorLabels(frozenset()), ErrorLabels(frozenset(), "f g")]
    got = label_aucs(_rows(), labelled, resamples=200)
    vs = got["labels"]["omission"]["score_vs_best"]
    om = got["labels"]["omission"]
    assert vs["difference"] == approx(om["auc"]["score"] - om["best_auc"])
    assert vs["low"] <= vs["difference"] <= vs["high"] and vs["resamples"] == 200
    assert "[" in format_label_aucs(got)
    assert "score_vs_best" not in label_aucs(_rows(), labelled, resamples=0)["labels"]["omission"]


def test_each_label_is_also_ranked_by_its_own_error_types_score():
    """Rows of a learned combination carry every error type's score: a label is also ranked by its own type's
    (repetition by the repetition score), by hand; a label of no known type, or rows without type scores, get none."""
    types = {3: (0.0, 9.0), 0: (4.0, 0.0), 4: (0.0, 0.0), 1: (1.0, 2.0), 2: (2.0, 1.0), 5: (3.0, 3.0)}
    rows = [{**r, "type_scores": {"omission": types[r["id"]][0], "repetition": types[r["id"]][1],
                                  "detached": 0.0}} for r in _rows()]
    labelled = [ErrorLabels(frozenset({"omission"}), "a"), ErrorLabels(frozenset()), ErrorLabels(frozenset(), "c"),
                ErrorLabels(frozenset({"repetition", "garbled"}), "d"), ErrorLabels(frozenset()),
                ErrorLabels(frozenset(), "f g")]
    got = label_aucs(rows, labelled, resamples=0)["labels"]
    # omission row 0 scores 4 on omission against clean rows 1, 2, 4, 5 at 1, 2, 0, 3: above all
    assert got["omission"]["type_auc"] == {"type": "omission", "auc": approx(1.0)}
    # repetition row 3 scores 9 on repetition against the clean rows' 2, 1, 0, 3: above all
    assert got["repetition"]["type_auc"] == {"type": "repetition", "auc": approx(1.0)}
    # at 0.5 it is above only row 4's 0, while its overall score (5) still ranks it first
    rows[0]["type_scores"]["repetition"] = 0.5
    got = label_aucs(rows, labelled, resamples=0)["labels"]
    assert got["repetition"]["type_auc"]["auc"] == approx(1 / 4) and got["repetition"]["auc"]["score"] == approx(1.0)
    assert "type_auc" not in got["garbled"]
    # with resamples, its lead over the best single signal comes with an interval, as the score's does
    vs = label_aucs(rows, labelled, resamples=200)["labels"]["omission"]
    assert vs["type_vs_best"]["difference"] == approx(vs["type_auc"]["auc"] - vs["best_auc"])
    assert vs["type_vs_best"]["low"] <= vs["type_vs_best"]["difference"] <= vs["type_vs_best"]["high"]
    assert "type_vs_best" not in label_aucs(_rows(), labelled, resamples=200)["labels"]["omission"]
    assert "0.250 (repetition)" in format_label_aucs(label_aucs(rows, labelled, resamples=0))
    assert "type_auc" not in label_aucs(_rows(), labelled, resamples=0)["labels"]["omission"]
