"""Methods and signals are registered by name in one place, and everything that lists them reads the registry:
adding an aligner or a signal is one entry."""

from __future__ import annotations

import argparse
import json

import pytest

from aligndebug import cli, methods, report, signals
from aligndebug.extract import extract
from aligndebug.gold import GoldAlignment
from aligndebug.models import load_model, model_view
from aligndebug.pairs import SentencePair
from aligndebug.rows import ScoreOptions, ScoreTotals, SentenceScore, score_row, summary
from aligndebug.triage import FAMILIES, SIGNALS


def _choices(parser: argparse.ArgumentParser, command: str, option: str):
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return next(a for a in sub._actions if option in a.option_strings).choices


def test_cli_method_choices_are_the_row_rules():
    parser = cli.build_parser()
    for command in ("score", "inspect"):  # these also read a learned aligner's matrix (--method learned)
        assert tuple(_choices(parser, command, "--method")) == (*methods.ROW_RULES, "learned")
    assert tuple(_choices(parser, "triage", "--method")) == tuple(methods.ROW_RULES)


def test_cli_decode_choices_are_the_decoding_registry(monkeypatch):
    """--decode lists `decoding.DECODERS`; a rule registered there is offered and used by raw attention."""
    import numpy as np

    from aligndebug import decoding

    parser = cli.build_parser()
    for command in ("score", "inspect"):
        assert tuple(_choices(parser, command, "--decode")) == tuple(decoding.DECODERS)
    # every target row linked to the first source column
    first = lambda mat, allowed=None, threshold=None, null=None: (np.arange(len(mat)),  # noqa: E731
                                                                  np.zeros(len(mat), np.int64))
    monkeypatch.setitem(decoding.DECODERS, "first", first)
    assert "first" in _choices(cli.build_parser(), "score", "--decode")
    assert decoding.word_links(np.ones((3, 2)), "first") == {(0, 0), (0, 1), (0, 2)}


def test_signal_registry_feeds_families_report_and_triage():
    assert SIGNALS is signals.SIGNALS
    assert sorted(n for names in FAMILIES.values() for n in names) == sorted(SIGNALS)
    assert report.SHOWN_SIGNALS == tuple(n for n, s in SIGNALS.items() if s.report)
    assert all(s.direction in ("high", "low", "both") for s in SIGNALS.values())
    assert all(isinstance(s.flag, tuple) == (s.direction == "both") for s in SIGNALS.values())


def test_a_registered_aligner_is_scored_totalled_and_printed(tiny_bundle, monkeypatch):
    """One more entry in ALIGNERS (compared): `score --compare` rows, totals and the summary table carry it."""
    bundle = tiny_bundle("marian")
    diagonal = methods.Aligner("diagonal", "diagonal", "source word j for target word j",
                               lambda rec, ig, s: {(j, j) for j in range(min(len(rec.src_words), len(rec.tgt_words)))},
                               compared=True)
    monkeypatch.setitem(methods.ALIGNERS, "diagonal", diagonal)
    src, tgt = "Der Hund schläft .", "The dog sleeps ."
    rec = extract(bundle, [src], [tgt])[0]
    gold = GoldAlignment.from_links({(0, 0), (1, 1), (2, 2), (3, 3)})
    row = score_row(rec, SentencePair(0, 1, src.split(), tgt.split()), gold,
                    ScoreOptions(layer=0, compare=True, ig_steps=2), bundle)
    assert row["diagonal_links"] == "0-0 1-1 2-2 3-3" and row["diagonal_counts"] == [4, 4, 4, 4]
    assert set(SentenceScore.from_json(json.loads(json.dumps(row))).compared) == {"rollout", "ig", "diagonal"}
    totals = ScoreTotals()
    totals.add_row(row)
    result = summary(totals, "sig")
    assert result["compare"]["diagonal"]["aer"] == 0.0
    assert "diagonal" in cli.format_summary(result)


def test_sentence_score_reads_and_writes_the_stored_row():
    row = {"index": 3, "links": "0-0 1-1", "counts": [2, 2, 1, 2], "per_head_counts": {"0:1": [2, 2, 1, 1],
           "1:mean": [2, 2, 2, 2]}, "rollout_counts": [2, 2, 0, 0], "agreement_rho": 0.5, "line": 4}
    s = SentenceScore.from_json(row)
    assert s.counts.aer == pytest.approx(1 - 3 / 4) and s.per_head[(1, "mean")].aer == 0.0
    assert set(s.per_head) == {(0, 1), (1, "mean")} and s.compared["rollout"].pred_and_sure == 0
    assert s.to_json() == row


def test_the_model_decides_its_default_view(tmp_path, model_dir):
    assert load_model("default").view == {"method": "naive", "layer": 1}
    assert load_model(str(model_dir)).view == {}
    (tmp_path / "aligndebug.json").write_text(json.dumps({"view": {"method": "shift-att", "layer": 0}}))
    assert model_view(tmp_path) == {"method": "shift-att", "layer": 0}
