"""--decode for every method: the rules of `decoding` read raw attention (at subword level, lifted to words),
rollout and IG (at word level), in `score`, `inspect` and the Python API; without --decode the links are the
ones the methods always gave, and a resumed run must use the rule it started with."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tiny_models as tm
from aligndebug.align import align_grid, align_record, attention_matrix, target_token_word_ids
from aligndebug.attribution import ig_for_record, ig_word_matrix
from aligndebug.cli import main
from aligndebug.decoding import resolve, word_links
from aligndebug.extract import extract
from aligndebug.methods import ALIGNERS
from aligndebug.rollout import rollout_word_matrix
from aligndebug.words import token_links_to_words

DE, EN = tm.DE[:6], tm.EN[:6]


@pytest.fixture(scope="module")
def records(bundle):
    return extract(bundle, DE, EN)


def _bidir_by_hand(rec, layer, t):
    """awesome-align's rule written out: shares over the non-special source tokens (row) and over the target
    rows (column), both >= t, then lifted to words."""
    mat = attention_matrix(rec, layer, "mean", "naive")
    ok = rec.src_word_ids >= 0
    m = np.where(ok[None, :], mat, 0.0)
    row = m / m.sum(1, keepdims=True)
    total = m.sum(0, keepdims=True)
    col = np.divide(m, total, out=np.zeros_like(m), where=total > 0)
    r, c = np.nonzero((row >= t) & (col >= t) & ok[None, :] & (m > 0))
    return token_links_to_words(r, c, rec.src_word_ids, target_token_word_ids(rec))


def test_resolve_keeps_the_plain_reading_and_fills_rule_defaults():
    assert resolve(None, None) == ("argmax", None)
    assert resolve(None, 0.3) == ("threshold", 0.3)
    assert resolve(None, None, ("bidir", 0.3)) == ("bidir", 0.3)  # a learned aligner's card
    assert resolve(None, 0.2, ("bidir", 0.3)) == ("threshold", 0.2)
    assert resolve("bidir", None) == ("bidir", 0.1) and resolve("argmax", 0.4) == ("argmax", 0.4)
    with pytest.raises(ValueError, match="unknown decoding rule 'best'"):
        resolve("best")


def test_attention_rules_on_records(records):
    for rec in records:
        for layer in (0, 1):
            plain = align_record(rec, "naive", layer)
            assert align_record(rec, "naive", layer, decode="argmax") == plain
            assert align_record(rec, "naive", layer, threshold=0.2, decode="threshold") == \
                align_record(rec, "naive", layer, threshold=0.2)
            assert align_record(rec, "naive", layer, threshold=0.15, decode="bidir") == _bidir_by_hand(rec, layer, 0.15)
            # argmax with a floor links a subset of plain argmax's words (rows below it stay unaligned)
            assert align_record(rec, "naive", layer, threshold=0.5, decode="argmax") <= plain
        grid = align_grid(rec, "naive", 0.15, "bidir")
        assert grid[(1, "mean")] == _bidir_by_hand(rec, 1, 0.15)
        assert align_grid(rec, "naive", None, "argmax") == align_grid(rec, "naive")


def test_rollout_and_ig_read_the_rule_on_their_word_matrices(records, bundle):
    rec = records[0]
    roll = rollout_word_matrix(rec, method="naive")
    got = ALIGNERS["rollout"].links(rec, None, {"decode": "threshold", "threshold": 0.2})
    assert got == {(i, j) for j, i in zip(*np.nonzero(roll >= 0.2))}
    assert ALIGNERS["rollout"].links(rec, None, {}) == ALIGNERS["rollout"].links(rec, None, {"decode": None})
    ig = ig_for_record(bundle, rec, steps=4, rows=rec.target_positions)
    words = ig_word_matrix(rec, ig)
    pos = np.clip(words, 0, None)
    got = ALIGNERS["ig"].links(rec, ig, {"decode": "argmax"})
    # positive part's argmax per target word; a word with no positive attribution stays unaligned
    want = {(int(pos[j].argmax()), j) for j in range(len(pos)) if pos[j].max() > 0}
    assert got == want
    assert word_links(-np.ones((2, 3)), "argmax") == set()


def _score(tmp_path, model_dir, name, *extra):
    src, tgt, gold = tmp_path / "s.de", tmp_path / "t.en", tmp_path / "g.wa"
    src.write_text("".join(s + "\n" for s in DE), encoding="utf-8")
    tgt.write_text("".join(s + "\n" for s in EN), encoding="utf-8")
    gold.write_text("0-0 1-1\n" * len(DE), encoding="utf-8")
    out, summ = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.json"
    rc = main(["score", "--model", str(model_dir), "--src", str(src), "--tgt", str(tgt), "--gold", str(gold),
               "--gold-base", "0", "--method", "naive", "--layer", "1", "--no-progress", "--out", str(out),
               "--summary-json", str(summ), *extra])
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()] if out.exists() else []
    return rc, rows, json.loads(summ.read_text()) if summ.exists() else None


def test_score_decode_names_the_rule_and_keeps_default_rows(tmp_path, model_dir, records, capsys):
    rc, plain, s_plain = _score(tmp_path, model_dir, "plain")
    assert rc == 0 and "decode:" not in s_plain["signature"] and "thr:" not in s_plain["signature"]
    rc, arg, s_arg = _score(tmp_path, model_dir, "argmax", "--decode", "argmax")
    assert rc == 0 and [r["links"] for r in arg] == [r["links"] for r in plain]
    assert "|decode:argmax|" in s_arg["signature"]
    assert s_arg["signature"].replace("|decode:argmax", "") == s_plain["signature"]
    rc, bi, s_bi = _score(tmp_path, model_dir, "bidir", "--decode", "bidir", "--threshold", "0.15", "--per-head")
    assert rc == 0 and "|thr:0.15|decode:bidir|" in s_bi["signature"]
    for row, rec in zip(bi, records):
        assert {tuple(map(int, x.split("-"))) for x in row["links"].split()} == _bidir_by_hand(rec, 1, 0.15)
    # the per-head grid uses the rule too: its layer-1 mean equals the chosen reading's AER
    assert abs(s_bi["per_layer_mean"][1] - s_bi["aer"]) <= 1e-12
    capsys.readouterr()


def test_resume_with_another_rule_is_refused(tmp_path, model_dir, capsys):
    assert _score(tmp_path, model_dir, "r", "--decode", "bidir")[0] == 0
    out = tmp_path / "r.jsonl"
    before = out.read_bytes()
    for extra, says in ((["--decode", "argmax"], "decode: 'bidir' then, 'argmax' now"),
                        ([], "decode: 'bidir' then, None now"),
                        (["--decode", "bidir", "--threshold", "0.3"], "threshold: 0.1 then, 0.3 now")):
        capsys.readouterr()
        assert _score(tmp_path, model_dir, "r", "--resume", *extra)[0] == 2
        assert says in capsys.readouterr().err
        assert out.read_bytes() == before
    assert _score(tmp_path, model_dir, "r", "--resume", "--decode", "bidir")[0] == 0


def test_inspect_decode(model_dir, records, capsys):
    args = ["inspect", "--model", str(model_dir), "--method", "naive", "--layer", "1", "--source", DE[0],
            "--target", EN[0], "--json"]
    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out)
    assert "decode" not in plain
    assert main(args + ["--decode", "bidir", "--threshold", "0.15"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["decode"] == "bidir" and shown["threshold"] == 0.15
    assert {tuple(x) for x in shown["links"]} == _bidir_by_hand(records[0], 1, 0.15)
    assert main(args[:-1] + ["--decode", "threshold"]) == 0
    assert "decode: threshold @ 0.1" in capsys.readouterr().out
