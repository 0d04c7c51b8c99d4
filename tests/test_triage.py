"""Calibration, flagging, score combination, AUC, and a run on a tiny random Marian model."""

from __future__ import annotations

import html
import importlib.util
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from numeric import approx

from aligndebug.signals import ALIGNER_SIGNALS, repetition_stats
from aligndebug.triage import (
    FAMILIES,
    SIGNALS,
    Calibration,
    calibrate,
    combine_pvalues,
    fisher_logsf,
    roc_auc,
    suspect_values,
    triage_row,
)
from aligndebug.runner import calibration_path, run_triage

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- synthetic rows

def _row(i: int, **over) -> dict:
    """A plausible clean row; signal values vary with i so percentiles are easy to work out."""
    row = {
        "id": i, "source": "Ein Hund läuft", "src_words": ["Ein", "Hund", "läuft"],
        "entropy_mean": 0.3 + 0.001 * i, "wass_to_unif": 0.2, "sink_special": 0.1, "sink_punct": 0.05,
        "coverage_min": 0.5, "coverage_max": 1.5, "seq_logprob": -float(i) / 100, "min_logprob": -2.0,
        "repeat_share": 0.0, "longest_repeat": 1.0, "tandem_repeat": 0.0, "length_ratio": 1.0 + 0.001 * i,
        "word_entropy": [0.3, 0.4], "src_coverage": [0.5, 1.0, 1.5], "src_content": [False, True, True],
    }
    row.update(over)
    return row


def test_calibrate_percentiles_and_token_thresholds():
    rows = [_row(i) for i in range(101)]  # seq_logprob 0, -0.01, ..., -1.00
    cal = calibrate(rows, percentile=95)
    assert cal.n == 101 and cal.percentile == 95
    # low-suspect: 5th percentile of 0..-1 in steps of .01 is -0.95
    assert cal.thresholds["seq_logprob"] == {"low": pytest.approx(-0.95)}
    assert cal.thresholds["entropy_mean"] == {"high": pytest.approx(0.3 + 0.095)}
    lo, hi = cal.thresholds["length_ratio"]["low"], cal.thresholds["length_ratio"]["high"]
    assert lo == pytest.approx(1.005) and hi == pytest.approx(1.095)
    # token level, pooled over rows: word entropies are half .3, half .4 -> 95th pct .4; content-word
    # coverage half 1.0, half 1.5 -> 5th pct 1.0, 95th 1.5 (the uncovered function word is left out)
    assert cal.token_thresholds["entropy_high"] == pytest.approx(0.4)
    assert cal.token_thresholds["coverage_low"] == pytest.approx(1.0)
    assert cal.token_thresholds["coverage_high"] == pytest.approx(1.5)
    # derived signals were calibrated too: no word is beyond the thresholds in any row
    assert cal.samples["scattered_share"][-1] == 0.0 and cal.samples["omission_share"][-1] == 0.0
    assert "chrf" not in cal.samples  # no row had a reference
    with pytest.raises(ValueError, match="between 50 and 100"):
        calibrate(rows, percentile=5)
    with pytest.raises(ValueError, match="no rows"):
        calibrate([])


def test_calibration_json_round_trip_and_quantile_cap(tmp_path):
    rows = [_row(i) for i in range(3000)]
    cal = calibrate(rows, percentile=90, settings={"layer": "mean", "method": "shift-att"}, max_samples=101)
    assert len(cal.samples["seq_logprob"]) == 101  # large sets keep quantiles, not every value
    path = tmp_path / "cal.json"
    cal.save(path)
    back = Calibration.load(path)
    assert back == cal
    assert back.p_value("seq_logprob", -29.99) == cal.p_value("seq_logprob", -29.99)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json:1"):
        Calibration.load(tmp_path / "bad.json")


def test_p_values_by_direction():
    cal = Calibration(percentile=95, n=4, source="t", token_thresholds={}, thresholds={},
                      samples={"entropy_mean": [1, 2, 3, 4], "seq_logprob": [1, 2, 3, 4], "length_ratio": [1, 2, 3, 4]})
    # high: (1 + #{>= 3}) / (4 + 1) = 3/5; low: (1 + #{<= 3}) / 5 = 4/5; both: 2 * min, at most 1
    assert cal.p_value("entropy_mean", 3) == pytest.approx(0.6)
    assert cal.p_value("seq_logprob", 3) == pytest.approx(0.8)
    assert cal.p_value("length_ratio", 3) == pytest.approx(1.0)
    assert cal.p_value("length_ratio", 4) == pytest.approx(0.8)  # 2 * (1 + 1) / 5
    assert 0 < cal.p_value("entropy_mean", 10) < 0.2  # beyond the largest value: below 1/(n+1), never 0
    assert math.isnan(cal.p_value("entropy_mean", float("nan")))
    assert math.isnan(cal.p_value("chrf", 50.0))  # not calibrated


def test_p_value_tail_beyond_the_reference_keeps_falling():
    cal = Calibration(percentile=95, n=5, source="t", token_thresholds={}, thresholds={},
                      samples={"entropy_mean": [1, 2, 3, 4, 5], "seq_logprob": [1, 2, 3, 4, 5]})
    at_max = cal.p_value("entropy_mean", 5)
    assert at_max == pytest.approx(2 / 6)
    # just beyond the largest value: 1/(n+1) times the half-normal tail (IQR 2 -> scale 2/1.349)
    scale = 2 / 1.349
    from scipy import stats
    expected = (1 / 6) * 2 * stats.norm.sf(1 / scale)
    assert cal.p_value("entropy_mean", 6) == pytest.approx(expected)
    assert cal.p_value("entropy_mean", 6) > cal.p_value("entropy_mean", 8) > cal.p_value("entropy_mean", 50) > 0
    assert cal.log_p_value("entropy_mean", 1e6) < -1000  # no underflow to -inf
    assert cal.p_value("seq_logprob", -10) < cal.p_value("seq_logprob", 0) < 1 / 6


def test_combine_pvalues_fisher_over_bonferroni_families():
    ln = math.log
    # one family (confidence, 2 signals): p = min(1, 2 * .01) = .02; Fisher with one family is p itself
    assert combine_pvalues({"seq_logprob": ln(0.01), "min_logprob": ln(0.5)}) == pytest.approx(-math.log10(0.02))
    # two families at .1 each: X = -2 ln .01 = 9.21, chi2(4) survival = e^{-X/2}(1 + X/2) = .01 * (1 + 4.605)
    expected = -math.log10(0.01 * (1 + -ln(0.01)))
    assert combine_pvalues({"seq_logprob": ln(0.1), "entropy_mean": ln(0.1)}) == pytest.approx(expected)
    assert combine_pvalues({"seq_logprob": 0.0, "entropy_mean": 0.0}) == pytest.approx(0.0, abs=1e-12)
    assert combine_pvalues({"seq_logprob": float("nan")}) == 0.0
    # more evidence, higher score; astronomically small p-values stay finite
    assert combine_pvalues({"seq_logprob": ln(0.01)}) > combine_pvalues({"seq_logprob": ln(0.1)})
    assert combine_pvalues({"seq_logprob": -5000.0}) == pytest.approx(5000 / math.log(10))
    from scipy import stats
    for x, m in ((0.5, 1), (9.2, 2), (30.0, 7)):  # the closed form agrees with scipy where scipy is exact
        assert fisher_logsf(x, m) == pytest.approx(stats.chi2.logsf(x, 2 * m))
    assert set(FAMILIES) >= {"dispersion", "detachment", "omission", "confidence", "repetition", "length"}
    assert sorted(n for names in FAMILIES.values() for n in names) == sorted(SIGNALS)


def test_triage_row_flags_and_reasons():
    cal = calibrate([_row(i) for i in range(101)], percentile=95)
    clean = _row(50)
    score_clean, flags, reasons = triage_row(clean, cal)
    assert flags == [] and reasons == []
    assert cal.score_threshold is not None and score_clean <= cal.score_threshold
    bad = _row(50, seq_logprob=-3.0, tandem_repeat=2.0, repeat_share=0.5, src_coverage=[0.5, 0.1, 2.9],
               lowest_tokens=[{"position": 3, "token": "▁zebra", "logprob": -9.0}])
    score, flags, reasons = triage_row(bad, cal)
    assert score > score_clean
    assert "low_confidence" in flags and "repetition" in flags and "omission" in flags
    text = " | ".join(reasons)
    assert "Seq-Logprob (mean target log-probability) -3 is below the 5th-percentile threshold -0.95" in text
    assert "source words with almost no attention: Hund" in text
    assert "source words with far more than their share: läuft" in text
    assert "'▁zebra'" in text
    short = _row(50, length_ratio=0.5)
    assert triage_row(short, cal)[1] == ["too_short"]


def test_the_learned_aligners_words_are_named_when_its_signals_flag():
    """Rows with the aligner's signals: a source word no target word aligns to, and a target word with no source,
    are named in the reasons when the row is flagged as an omission / as detached; an unflagged row names none."""
    rows = [_row(i, unaligned_source=0.001 * i, unaligned_target=0.001 * i, unaligned_source_words=[],
                 unaligned_target_words=[]) for i in range(101)]
    cal = calibrate(rows, percentile=95)
    assert cal.thresholds["unaligned_source"] == {"high": pytest.approx(0.095)}
    flagged = _row(50, unaligned_source=0.5, unaligned_target=0.5, unaligned_source_words=["Hund"],
                   unaligned_target_words=["zebra"])
    _, flags, reasons = triage_row(flagged, cal)
    assert "omission" in flags and "detached" in flags
    text = " | ".join(reasons)
    assert "share of source content words no target word aligns to (learned aligner) 0.5 is above" in text
    assert "source words no target word aligns to (learned aligner): Hund" in text
    assert "target words the learned aligner finds no source word for: zebra" in text
    quiet = {**flagged, "unaligned_source": 0.01, "unaligned_target": 0.01}
    assert not any("learned aligner" in r for r in triage_row(quiet, cal)[2])


def test_roc_auc_hand_cases():
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    # positives .8 and .4, negatives .5 and .2: 3 of the 4 pairs are ordered right
    assert roc_auc([0.8, 0.4, 0.5, 0.2], [1, 1, 0, 0]) == pytest.approx(0.75)
    # a tie between a positive and a negative counts one half: (1 + .5) / 2
    assert roc_auc([0.7, 0.3, 0.3], [1, 1, 0]) == pytest.approx(0.75)
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1]))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0.1, float("nan")], [0, 1])


def test_suspect_values_orientation():
    rows = [_row(0, seq_logprob=-1.0), _row(1, seq_logprob=float("nan")), _row(2, seq_logprob=-3.0)]
    # low-suspect: negated; NaN gets the least suspect value
    np.testing.assert_allclose(suspect_values("seq_logprob", rows), [1.0, 1.0, 3.0])
    with pytest.raises(ValueError, match="two-sided"):
        suspect_values("length_ratio", rows)
    cal = calibrate([_row(i) for i in range(101)])
    lr = suspect_values("length_ratio", [_row(0, length_ratio=1.05), _row(0, length_ratio=3.0)], cal)
    assert lr[1] > lr[0]


# ----------------------------------------------------------------------------- tiny model

CORPUS = [
    "ein Hund läuft im Park .", "a dog runs in the park .", "zwei Männer spielen Fußball .",
    "two men play football .", "eine Frau liest ein Buch .", "a woman reads a book .",
    "Kinder spielen am Strand .", "children play on the beach .",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Marian model with a 50-piece SentencePiece vocabulary, saved to disk too."""
    spm = pytest.importorskip("sentencepiece")
    import torch

    # one intra-op thread: for a model this small, extra threads only spin (50x slower when the
    # machine is busy); restored after this module
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    from aligndebug.models import ModelBundle

    d = tmp_path_factory.mktemp("tiny_marian")
    (d / "corpus.txt").write_text("\n".join(CORPUS * 20), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(d / "corpus.txt"), model_prefix=str(d / "spm"), vocab_size=50, model_type="unigram",
        character_coverage=1.0, unk_id=1, bos_id=-1, eos_id=0, pad_id=-1, num_threads=1, minloglevel=2)
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(d / "spm.model"))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    vocab["</s>"], vocab["<unk>"] = 0, 1
    vocab["<pad>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tok = MarianTokenizer(source_spm=str(d / "spm.model"), target_spm=str(d / "spm.model"), vocab=str(d / "vocab.json"))
    torch.manual_seed(0)
    cfg = MarianConfig(
        vocab_size=len(vocab), decoder_vocab_size=len(vocab), d_model=16, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_position_embeddings=64, pad_token_id=tok.pad_token_id, eos_token_id=0,
        decoder_start_token_id=tok.pad_token_id, forced_eos_token_id=0, share_encoder_decoder_embeddings=True)
    model = MarianMTModel(cfg)
    model.generation_config.max_new_tokens = 12  # keep random-model translations short
    folder = d / "model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    yield ModelBundle.from_objects(model, tok, name="tiny"), folder
    torch.set_num_threads(threads)


SOURCES = ["ein Hund läuft im Park .", "zwei Männer spielen Fußball .", "eine Frau liest ein Buch .",
           "Kinder spielen am Strand .", "ein Hund spielen ."]
TARGETS = ["a dog runs in the park .", "two men play football .", "a woman reads a book .",
           "children play on the beach .", "a dog a dog a dog ."]


@pytest.fixture(scope="module")
def triaged(tiny, tmp_path_factory):
    """One self-calibrated run (layer 1, with references) written to disk, shared by the tests below."""
    bundle, _ = tiny
    out = tmp_path_factory.mktemp("triage") / "triage.jsonl"
    rows = run_triage(bundle, SOURCES, TARGETS, references=TARGETS, batch_size=2, out=out, layer=1, combine="fisher")
    return rows, out


def test_run_triage_writes_ranked_rows_and_calibration(tiny, triaged):
    bundle, _ = tiny
    rows, out = triaged
    assert len(rows) == 5 and sorted(r["id"] for r in rows) == list(range(5))
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    for r in rows:
        assert r["translation"] == TARGETS[r["id"]] and r["source"] == SOURCES[r["id"]]
        # a tiny model has no learned aligner: its rows hold every signal but the aligner's
        assert set(SIGNALS) - set(ALIGNER_SIGNALS) <= set(r) and not set(ALIGNER_SIGNALS) & set(r)
        assert r["chrf"] == pytest.approx(100.0)
        assert isinstance(r["flags"], list) and isinstance(r["reasons"], list)
        assert r["suspect"] == (r["score"] > rows.calibration.score_threshold + 1e-4) or \
            abs(r["score"] - rows.calibration.score_threshold) < 1e-4
    by_id = {r["id"]: r for r in rows}
    assert by_id[4]["tandem_repeat"] == 2.0 and "repetition" in by_id[4]["flags"]
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [w["id"] for w in written] == [r["id"] for r in rows]
    assert not Path(str(out) + ".partial").exists()
    cal = Calibration.load(calibration_path(out))
    assert cal == rows.calibration and cal.n == 5 and cal.settings["layer"] == 1
    # a fixed calibration scores a new run the same way, and refuses other settings. Same batching: the
    # calibration holds these very values, so a last-digit change from another batching could move a value
    # across its own reference value and change its empirical p-value by a step.
    again = run_triage(bundle, SOURCES, TARGETS, references=TARGETS, calibration=cal, layer=1, batch_size=2,
                       combine="fisher")
    scores = {r["id"]: r["score"] for r in rows}
    assert {r["id"]: r["score"] for r in again} == {k: approx(v, digits=5) for k, v in scores.items()}
    with pytest.raises(ValueError, match="other settings"):
        run_triage(bundle, SOURCES, TARGETS, calibration=cal, layer="mean", combine="fisher")
    with pytest.raises(ValueError, match="no learned combination"):  # a Fisher calibration cannot rank by learned weights
        run_triage(bundle, SOURCES, TARGETS, calibration=cal, layer=1)


def test_ranking_from_the_partial_file_equals_ranking_in_memory(tiny, triaged, tmp_path):
    """With --out the rows wait on disk and are ranked from there (scores and offsets in memory only):
    every row, float, flag and rank, and the calibration, are those of an in-memory run."""
    from aligndebug.runner import RankedFile, TriageRows
    from aligndebug.store import row_json

    bundle, _ = tiny
    on_disk, _ = triaged
    in_memory = run_triage(bundle, SOURCES, TARGETS, references=TARGETS, batch_size=2, layer=1, combine="fisher")
    assert isinstance(on_disk, RankedFile) and isinstance(in_memory, TriageRows)
    assert [row_json(r) for r in on_disk] == [row_json(r) for r in in_memory]
    assert on_disk.calibration == in_memory.calibration
    assert len(on_disk) == 5 and on_disk[0] == list(on_disk)[0] and on_disk[-1]["rank"] == 5
    assert [r["id"] for r in on_disk[1:3]] == [r["id"] for r in in_memory[1:3]]


def test_partial_file_cuts_a_torn_line_and_refuses_other_input(tmp_path):
    from aligndebug.runner import PartialRows
    from aligndebug.store import row_json

    out = tmp_path / "t.jsonl"
    partial = Path(str(out) + ".partial")
    rows = [_row(0, source=SOURCES[0], entropy_mean=float("nan")), _row(1, source=SOURCES[1])]
    partial.write_text("".join(row_json(r) + "\n" for r in rows) + '{"id": 2, "sou', encoding="utf-8")
    store = PartialRows(out, SOURCES)
    assert store.done == {0, 1} and partial.read_text(encoding="utf-8").endswith("}\n")  # the torn line is gone
    store.append(_row(2, source=SOURCES[2]))
    store.close()
    back = list(store)
    assert [r["id"] for r in back] == [0, 1, 2] and math.isnan(back[0]["entropy_mean"])
    assert [r["id"] for _, r in store.with_offsets()] == [0, 1, 2]
    with pytest.raises(ValueError, match="another input"):
        PartialRows(out, SOURCES[1:])


def test_run_triage_translates_and_resumes_from_partial(tiny, tmp_path):
    bundle, _ = tiny
    out = tmp_path / "t.jsonl"
    first = run_triage(bundle, SOURCES[:2], TARGETS[:2], out=out)
    # fake an interrupted run: the first row is done (marked), a torn second line follows
    done = dict(next(r for r in first if r["id"] == 0), marker="kept")
    partial = Path(str(out) + ".partial")
    partial.write_text(json.dumps(done) + "\n" + '{"id": 1, "sou', encoding="utf-8")
    rows = run_triage(bundle, SOURCES[:2], TARGETS[:2], out=out)
    assert {r["id"]: r.get("marker") for r in rows} == {0: "kept", 1: None}
    partial.write_text(json.dumps(dict(done, source="something else")) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="another input"):
        run_triage(bundle, SOURCES[:2], TARGETS[:2], out=out)
    partial.unlink()
    translated = run_triage(bundle, SOURCES[:2])  # no targets: the model translates
    assert all(isinstance(r["translation"], str) for r in translated)


def test_report_is_self_contained(tiny, triaged, tmp_path):
    from aligndebug.report import write_report

    bundle, _ = tiny
    rows, _ = triaged
    path = write_report(rows, tmp_path / "r.html", bundle=bundle, calibration=rows.calibration, top=2, layer=1)
    text = path.read_text(encoding="utf-8")
    assert text.count("<svg") == 2 and "<script" not in text and "http://cdn" not in text
    assert "src=\"http" not in text and "href=\"http" not in text
    assert "#1 · score" in text
    # one label per chart, none per heatmap cell (they made the charts three times as large)
    assert text.count('role="img" aria-label="cross-attention heatmap of sentence') == 2
    assert "attention: " not in " ".join(re.findall(r'aria-label="([^"]*)"', text))
    # each inline chart's ids are its own (two charts must not share one legend gradient id)
    ids = re.findall(r'\bid="([^"]+)"', text)
    assert len(ids) == len(set(ids)) and any(i.startswith("c1_") for i in ids)
    for ref in re.findall(r"url\(#([^)]+)\)", text):
        assert ref in ids
    no_model = write_report(rows, tmp_path / "r2.html", top=3).read_text(encoding="utf-8")
    assert "<svg" not in no_model and no_model.count('class="card"') == 3


def test_cli_triage(tiny, tmp_path, capsys):
    from aligndebug.cli import main

    _, folder = tiny
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    tgt.write_text("\n".join(TARGETS) + "\n", encoding="utf-8")
    out, html = tmp_path / "o.jsonl", tmp_path / "o.html"
    rc = main(["triage", "--model", str(folder), "--src", str(src), "--tgt", str(tgt), "--out", str(out),
               "--html", str(html), "--top", "1", "--layer", "0", "--no-progress"])
    assert rc == 0
    assert len(out.read_text().splitlines()) == 5 and calibration_path(out).exists()
    assert html.read_text(encoding="utf-8").count("<svg") == 1
    assert "rank" in capsys.readouterr().out
    # reuse the saved calibration; a short target file is an error naming the file
    rc = main(["triage", "--model", str(folder), "--src", str(src), "--tgt", str(tgt), "--out", str(tmp_path / "b.jsonl"),
               "--calibration", str(calibration_path(out)), "--layer", "0", "--no-progress"])
    assert rc == 0
    tgt.write_text("\n".join(TARGETS[:3]) + "\n\n", encoding="utf-8")
    assert main(["triage", "--model", str(folder), "--src", str(src), "--tgt", str(tgt), "--out", str(out),
                 "--no-progress"]) == 2
    assert f"{tgt}: 4 lines but" in capsys.readouterr().err

    # an overlong source and an empty translation do not stop the run: both rows are kept, flagged with
    # the reason, scored by the signals needing no forward pass, ranked among the suspects and counted
    limit = tiny[0].model.config.max_position_embeddings
    src.write_text("\n".join(SOURCES[:3] + [" ".join(["Hund"] * limit)] + SOURCES[4:]) + "\n", encoding="utf-8")
    tgt.write_text("\n".join(TARGETS[:2] + ["", TARGETS[3], TARGETS[4]]) + "\n", encoding="utf-8")
    out = tmp_path / "long.jsonl"
    for combine in ("learned", "fisher"):
        assert main(["triage", "--model", str(folder), "--src", str(src), "--tgt", str(tgt), "--out", str(out),
                     "--chunk-size", "3", "--combine", combine, "--no-progress"]) == 0
        printed = capsys.readouterr().out
        assert "could not take 2 (empty 1, too_long_for_model 1)" in printed
        rows = {r["id"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
        assert len(rows) == 5
        # the learned verdict's error type heads the printed table and is in every row; Fisher's ranking has none
        header = next(line for line in printed.splitlines() if line.lstrip().startswith("rank"))
        assert ("type" in header.split()) == (combine == "learned")
        assert all(("error_type" in r) == (combine == "learned") for r in rows.values())
        assert rows[3]["flags"][0] == "too_long_for_model" and f"{limit} positions" in rows[3]["reasons"][0]
        assert rows[2]["flags"][0] == "empty" and "target is empty" in rows[2]["reasons"][0]
        for k in (2, 3):
            assert rows[k]["suspect"] and rows[k]["rank"] <= sum(r["suspect"] for r in rows.values())
            assert math.isnan(rows[k]["seq_logprob"] if rows[k]["seq_logprob"] is not None else float("nan"))
        assert rows[3]["length_ratio"] == pytest.approx(1 / limit * len(TARGETS[3].split()))
        assert rows[2]["length_ratio"] == 0.0 and rows[3]["repeat_share"] == 0.0
        cal = Calibration.load(calibration_path(out))
        assert cal.n == 3 and cal.combine == combine  # the unusable rows calibrate nothing


def test_cli_triage_scores_its_ranking_against_labels(tiny, tmp_path, capsys):
    """--labels prints, per label, the ROC-AUC of the score and of the best single signal against the rows with
    no label (as the JSON of --labels-json holds them, recomputed here from the ranked rows); a row whose
    translation is not the labelled one is left out; a labels file of the wrong length fails before any work."""
    from aligndebug.cli import main
    from aligndebug.triage import roc_auc

    _, folder = tiny
    src, tgt, labels = tmp_path / "src.txt", tmp_path / "tgt.txt", tmp_path / "labels.tsv"
    src.write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    tgt.write_text("\n".join(TARGETS) + "\n", encoding="utf-8")
    texts = TARGETS[:3] + ["another text", TARGETS[4]]
    kinds = ["none", "omission", "none", "none", "repetition,omission"]
    labels.write_text("id\tlabels\ttranslation\n" + "".join(f"{i}\t{k}\t{t}\n" for i, (k, t) in enumerate(zip(kinds, texts))),
                      encoding="utf-8")
    out, js = tmp_path / "o.jsonl", tmp_path / "labels.json"
    assert main(["triage", "--model", str(folder), "--src", str(src), "--tgt", str(tgt), "--out", str(out),
                 "--labels", str(labels), "--labels-json", str(js), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "labelled rows: 4 (2 without a label); 1 left out" in printed
    got = json.loads(js.read_text(encoding="utf-8"))
    rows = {r["id"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    # omission: rows 1 and 4 against the clean rows 0 and 2 (row 3 is left out)
    expected = roc_auc([rows[i]["score"] for i in (1, 4, 0, 2)], [True, True, False, False])
    assert got["labels"]["omission"]["auc"]["score"] == approx(expected)
    assert got["labels"]["omission"]["n"] == 2 and got["labels"]["repetition"]["n"] == 1 and got["mismatched"] == [3]
    assert re.search(r"omission\s+2\s+" + f"{expected:.3f}", printed)
    labels.write_text("labels\nnone\n", encoding="utf-8")
    assert main(["triage", "--model", str(folder), "--src", str(src), "--tgt", str(tgt), "--out", str(tmp_path / "b.jsonl"),
                 "--labels", str(labels), "--no-progress"]) == 2
    assert f"{labels}: labels for 1 sentences but" in capsys.readouterr().err
    assert not (tmp_path / "b.jsonl").exists()


def test_cli_triage_seed_draws_the_synthetic_errors(tiny, tmp_path):
    """--seed is the seed of the synthetic errors the learned combination is fitted on: the same seed gives the
    same fitted weights, another one other weights."""
    from aligndebug.cli import main

    _, folder = tiny
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    tgt.write_text("\n".join(TARGETS) + "\n", encoding="utf-8")
    weights = {}
    for name, seed in (("a", "3"), ("b", "3"), ("c", "0")):
        out = tmp_path / f"{name}.jsonl"
        assert main(["triage", "--model", str(folder), "--src", str(src), "--tgt", str(tgt), "--out", str(out),
                     "--seed", seed, "--no-progress"]) == 0
        weights[name] = Calibration.load(calibration_path(out)).combiner["weights"]
    assert weights["a"] == weights["b"] and weights["a"] != weights["c"]


def test_cli_triage_keeps_lines_it_cannot_read(tiny, tmp_path, capsys):
    """Bytes that cannot be decoded (a translation, a reference) do not stop the run: the row is kept, flagged
    `undecodable` with the file and line, scored by the signals needing no forward pass (on the text with
    U+FFFD in place of the bad bytes), ranked among the suspects and counted; an empty reference line leaves
    its row without reference scores."""
    from aligndebug.cli import main

    _, folder = tiny
    src, tgt, ref = tmp_path / "src.txt", tmp_path / "tgt.txt", tmp_path / "ref.txt"
    src.write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    tgt.write_bytes("\n".join(TARGETS[:3] + ["children play \udcff on the beach .", TARGETS[4]]).encode(
        "utf-8", "surrogateescape") + b"\n")
    ref.write_bytes(b"a dog runs .\n\xc3(two men\n\na kid on the beach .\ndogs .\n")
    out = tmp_path / "o.jsonl"
    args = ["triage", "--model", str(folder), "--src", str(src), "--tgt", str(tgt), "--ref", str(ref),
            "--out", str(out), "--chunk-size", "2", "--no-progress"]
    assert main(args) == 0
    assert "could not take 2 (undecodable 2)" in capsys.readouterr().out
    rows = {r["id"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert len(rows) == 5
    assert rows[3]["flags"][0] == "undecodable" and f"{tgt}:4: bytes b'\\xff'" in rows[3]["reasons"][0]
    assert rows[3]["translation"] == "children play \ufffd on the beach ." and rows[3]["repeat_share"] == 0.0
    assert rows[3]["length_ratio"] == approx(7 / 5) and rows[3]["seq_logprob"] is None
    assert rows[1]["flags"][0] == "undecodable" and f"{ref}:2: bytes b'\\xc3'" in rows[1]["reasons"][0]
    for k in (1, 3):
        assert rows[k]["suspect"] and rows[k]["rank"] <= sum(r["suspect"] for r in rows.values())
    assert "chrf" not in rows[2] and rows[2].get("reference") is None  # the empty reference line
    assert rows[0]["chrf"] > 0 and rows[0]["seq_logprob"] is not None
    assert Calibration.load(calibration_path(out)).n == 3  # the unreadable rows calibrate nothing


# ----------------------------------------------------------------------------- error suite helpers

def _suite():
    spec = importlib.util.spec_from_file_location("error_suite", REPO / "scripts" / "error_suite.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_error_suite_edits():
    es = _suite()
    rng = np.random.default_rng(0)
    text = "A man in a blue shirt is riding a red bike down the street."
    words, punct = es.split_final_punct(text)
    assert punct == "." and words[-1] == "street"
    for _ in range(50):
        o = es.omit(text, rng)
        ow, op = es.split_final_punct(o)
        assert op == "." and len(words) - len(ow) >= math.ceil(len(words) / 3) and ow
        # the words left are the original with one contiguous gap
        gap = next(i for i in range(len(ow) + 1) if i == len(ow) or ow[i] != words[i])
        assert ow[gap:] == words[len(words) - (len(ow) - gap):]
        r = es.repeat_span(text, rng)
        rw, rp = es.split_final_punct(r)
        assert rp == "." and repetition_stats(rw)["tandem_repeat"] >= 1
        extra = len(rw) - len(words)
        assert 1 <= extra <= 4
    perm = es.derangement(7, rng)
    assert sorted(perm.tolist()) == list(range(7)) and not (perm == np.arange(7)).any()
    suite = es.build_suite(["a b c", "d e f", "a b c"], rng)
    assert all(d != c for d, c in zip(suite["detached"], ["a b c", "d e f", "a b c"]))


def test_triage_rows_read_typed_and_write_back_as_stored(triaged):
    from aligndebug.rows import TriageRow
    from aligndebug.store import row_json

    rows, out = triaged
    lines = out.read_text(encoding="utf-8").splitlines()
    for row, line in zip(rows, lines):
        typed = TriageRow.from_json(row)
        assert typed.rank == row["rank"] and typed.flags == row["flags"] and typed.reference == row["reference"]
        assert set(typed.signals) == {n for n in SIGNALS if n in row}
        assert row_json(typed.to_json()) == line  # same fields, order and values as the file
    unscored = {"id": 3, "source": "a", "translation": "b", "entropy_mean": None}
    t = TriageRow.from_json(unscored)
    assert t.rank is None and math.isnan(t.signals["entropy_mean"])
    assert row_json(t.to_json()) == row_json(unscored)


def test_learned_combination_ranks_and_round_trips(tiny, tmp_path):
    """The default triage fits the learned combination on its own rows (synthetic variants never shown),
    ranks by its log-odds, keeps the flags' reasons in words, and a saved calibration ranks the same way."""
    from aligndebug.alti import sentence_source_contribution
    from aligndebug.combine import KINDS, Combiner

    bundle, _ = tiny
    out = tmp_path / "learned.jsonl"
    rows = run_triage(bundle, SOURCES, TARGETS, batch_size=2, out=out, layer=1)
    cal = rows.calibration
    assert cal.combine == "learned" and Calibration.load(calibration_path(out)) == cal
    comb = Combiner.from_dict(cal.combiner)
    assert set(comb.weights) <= set(KINDS) and comb.weights
    assert sorted(r["id"] for r in rows) == list(range(5))  # the variants are not rows
    alti = sentence_source_contribution(bundle, list(zip(SOURCES, TARGETS)))
    for r in rows:
        assert r["score"] == pytest.approx(float(comb.logit([r])[0]), abs=1e-4)
        assert r["suspect"] == (r["score"] > cal.combine_threshold)
        assert r["reasons"][0].startswith("most like")
        # ALTI+ traced in the signal pass equals its own teacher-forced pass
        assert 0.0 <= r["alti_source"] <= 1.0 and r["alti_source"] == pytest.approx(alti[r["id"]], rel=1e-3)
    keys = [(not r["suspect"], -r["score"], r["id"]) for r in rows]
    assert keys == sorted(keys)
    again = run_triage(bundle, SOURCES, TARGETS, batch_size=2, layer=1, calibration=Calibration.load(calibration_path(out)))
    assert {r["id"]: r["score"] for r in again} == {r["id"]: approx(r["score"], digits=4) for r in rows}
    # the same calibration ranks by Fisher's method when asked
    fisher = run_triage(bundle, SOURCES, TARGETS, batch_size=2, layer=1, combine="fisher",
                        calibration=Calibration.load(calibration_path(out)))
    assert all(not r["reasons"] or not r["reasons"][0].startswith("most like") for r in fisher)
    with pytest.warns(UserWarning, match="Fisher"):  # one sentence: nothing to fit on
        single = run_triage(bundle, SOURCES[:1], TARGETS[:1], layer=1)
    assert single.calibration.combine == "fisher" and len(single) == 1


def test_rank_by_one_error_type(tiny, tmp_path, capsys):
    """`rank_by` orders the rows by one error type's own score (a sentence the model cannot take still first);
    the rows' scores, flags and calibration are those of the default ranking; the streamed ranking (with `out`)
    is the in-memory one; Fisher's method, which has no type scores, is refused before any pass."""
    bundle, model_dir = tiny
    sources = SOURCES + [" ".join(["Hund"] * bundle.model.config.max_position_embeddings)]
    targets = TARGETS + ["a dog ."]
    default = {r["id"]: r for r in run_triage(bundle, sources, targets, batch_size=2, layer=1)}
    for kind in ("omission", "repetition"):
        rows = run_triage(bundle, sources, targets, batch_size=2, layer=1, rank_by=kind)
        assert rows[0]["id"] == 5 and rows[0]["unusable"] == "too_long_for_model"
        keys = [(not r.get("unusable"), -r["type_scores"][kind], r["id"]) for r in rows]
        assert keys == sorted(keys) and [r["rank"] for r in rows] == list(range(1, 7))
        for r in rows:
            assert (r["score"], r["flags"], r["type_scores"]) == (default[r["id"]]["score"], default[r["id"]]["flags"],
                                                                 default[r["id"]]["type_scores"])
        streamed = run_triage(bundle, sources, targets, batch_size=2, layer=1, rank_by=kind, out=tmp_path / f"{kind}.jsonl")
        assert [r["id"] for r in streamed] == [r["id"] for r in rows]
        from aligndebug.report import render_report  # the report shows them in that order

        shown = re.findall(r"<h2>#(\d+) · score [^·]+ · sentence (\d+)</h2>", render_report(rows, top=4))
        assert [(int(a), int(b)) for a, b in shown] == [(r["rank"], r["id"]) for r in rows[:4]]
    with pytest.raises(ValueError, match="Fisher's method gives no score per error type"):
        run_triage(bundle, sources, targets, combine="fisher", rank_by="omission")
    with pytest.raises(ValueError, match="rank_by must be one of"):
        run_triage(bundle, sources, targets, rank_by="scattered")
    from aligndebug.cli import main

    common = ["triage", "--model", str(model_dir), "--src", str(tmp_path / "s.de"), "--tgt", str(tmp_path / "t.en"),
              "--no-progress", "--layer", "1", "--rank-by", "omission"]
    (tmp_path / "s.de").write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    (tmp_path / "t.en").write_text("\n".join(TARGETS) + "\n", encoding="utf-8")
    assert main(common + ["--out", str(tmp_path / "cli.jsonl")]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:4] == ["rank", "omis", "sc", "score"]
    assert main(common + ["--out", str(tmp_path / "f.jsonl"), "--combine", "fisher"]) == 2
    assert "gives no score per error type" in capsys.readouterr().err


def test_report_shows_the_learned_weights_and_keeps_unusable_rows(tiny, tmp_path):
    from aligndebug.combine import Combiner, describe
    from aligndebug.report import render_report

    bundle, _ = tiny
    limit = bundle.model.config.max_position_embeddings
    sources = SOURCES + [" ".join(["Hund"] * limit)]
    rows = run_triage(bundle, sources, TARGETS + ["a dog ."], batch_size=2, layer=1)
    text = render_report(rows, bundle=bundle, calibration=rows.calibration, top=6, layer=1)
    assert "learned log-odds that the sentence holds an error, at the error rates" in text
    assert "Fisher" not in text.split("<h2>")[0] and "error rates of the calibration rows (estimated): clean " in text
    for line in describe(Combiner.from_dict(rows.calibration.combiner)):
        assert html.escape(line) in text
    assert text.count('class="card"') == 6 and "too_long_for_model" in text
    assert text.count("<svg") == 5  # no heatmap for the sentence the model cannot take
    fisher = run_triage(bundle, SOURCES, TARGETS, batch_size=2, layer=1, combine="fisher")
    assert "Fisher&#x27;s method" in render_report(fisher, calibration=fisher.calibration) or \
        "Fisher's method" in render_report(fisher, calibration=fisher.calibration)


def test_unusable_sources_are_kept_when_the_model_translates(tiny):
    bundle, _ = tiny
    limit = bundle.model.config.max_position_embeddings
    sources = SOURCES[:3] + ["", " ".join(["Hund"] * limit)]
    rows = run_triage(bundle, sources, batch_size=2, layer=1)
    by_id = {r["id"]: r for r in rows}
    assert rows.unusable == {"empty": 1, "too_long_for_model": 1} and rows.calibration.n == 3
    assert by_id[3]["flags"][0] == "empty" and "source is empty" in by_id[3]["reasons"][0]
    assert by_id[4]["flags"][0] == "too_long_for_model" and by_id[4]["translation"] == ""
    assert by_id[3]["suspect"] and by_id[4]["suspect"] and by_id[4]["length_ratio"] == 0.0
    assert all("alti_source" in by_id[k] and not math.isnan(by_id[k]["alti_source"]) for k in range(3))


def test_triage_checks_each_source_once_before_the_model_translates(tiny, monkeypatch):
    """The usability check encodes each source; translate() is told so and does not encode them again (each
    encoding tokenizes word by word), while a caller that has not checked still gets the check."""
    import aligndebug.extract as extract_mod
    import aligndebug.runner as runner_mod
    from aligndebug.errors import SentenceError

    bundle, _ = tiny
    calls: list[str] = []
    real = extract_mod.encode_pair

    def counting(b, src, tgt, index=0):
        if not tgt:
            calls.append(src if isinstance(src, str) else " ".join(src))
        return real(b, src, tgt, index)

    monkeypatch.setattr(extract_mod, "encode_pair", counting)
    monkeypatch.setattr(runner_mod, "encode_pair", counting)
    rows = run_triage(bundle, SOURCES, batch_size=2, combine="fisher")
    assert len(rows) == len(SOURCES) and not any(r.get("unusable") for r in rows)
    assert sorted(calls) == sorted(SOURCES)  # the check's encodings, none from translate()
    with pytest.raises(SentenceError):
        extract_mod.translate(bundle, ["Hund " * 200])
