"""One pass for both the alignment scores and the triage of a test set (the app's test-set page)."""

from __future__ import annotations

import numpy as np
import pytest

import tiny_models as tm
from aligndebug.rows import ScoreOptions
from aligndebug.gold import GoldAlignment
from aligndebug.pairs import SentencePair, split_words
from aligndebug.runner import run_triage, score_and_triage, score_stream
from aligndebug.store import row_json


def _pairs(m: int) -> list[SentencePair]:
    return [SentencePair(k, k + 1, split_words(tm.DE[k % len(tm.DE)]), split_words(tm.EN[k % len(tm.EN)]))
            for k in range(m)]


@pytest.mark.parametrize("per_head", [False, True])
def test_one_pass_gives_the_rows_of_score_and_of_triage(bundle, per_head):
    pairs = _pairs(9)
    golds = [GoldAlignment.from_links({(i, min(i, len(p.tgt_words) - 1)) for i in range(len(p.src_words))})
             for p in pairs]
    refs = [p.target for p in pairs]
    opts = ScoreOptions(method="naive", layer=0, head="mean", per_head=per_head, batch_size=4)
    calls = []
    ranked, aligned, totals = score_and_triage(bundle, pairs, golds, refs, opts, triage_layer=0,
                                               on_progress=calls.append)
    assert sum(calls) == 9
    want_totals, want = score_stream(bundle, pairs, golds, opts)
    want = list(want)
    assert [aligned[r["index"]] for r in want] == want  # the very rows of `aligndebug score`
    assert (totals.sentences, totals.scored, totals.counts) == (9, 9, want_totals.counts)
    assert totals.grid == want_totals.grid and bool(totals.grid) == per_head
    # and those of `aligndebug triage`, with the learned combination (default) and with Fisher's method
    fisher, _, _ = score_and_triage(bundle, pairs, golds, refs, opts, triage_layer=0, combine="fisher")
    local_fisher = run_triage(bundle, [p.source for p in pairs], [p.target for p in pairs], refs, batch_size=4,
                              layer=0, method="naive", combine="fisher")
    assert [row_json(r) for r in fisher] == [row_json(r) for r in local_fisher]
    local = run_triage(bundle, [p.source for p in pairs], [p.target for p in pairs], refs, batch_size=4, layer=0,
                       method="naive")
    assert ranked.calibration.combine == "learned"
    assert [row_json(r) for r in ranked] == [row_json(r) for r in local]
    assert ranked.calibration.thresholds == local.calibration.thresholds


def test_every_pair_needs_a_target(bundle):
    with pytest.raises(ValueError, match="translate the sources first"):
        score_and_triage(bundle, [SentencePair(0, 1, ["Hund"], None)], None, None, ScoreOptions())


def _files(tmp_path, m: int, gold: bool = True) -> dict:
    pairs = _pairs(m)
    files = {"src": tmp_path / "src.txt", "tgt": tmp_path / "tgt.txt", "ref": tmp_path / "ref.txt"}
    files["src"].write_text("".join(p.source + "\n" for p in pairs), encoding="utf-8")
    files["tgt"].write_text("".join(p.target + "\n" for p in pairs), encoding="utf-8")
    files["ref"].write_text("".join(p.target + "\n" for p in pairs), encoding="utf-8")
    if gold:
        files["gold"] = tmp_path / "gold.txt"
        files["gold"].write_text("".join(" ".join(f"{i}-{min(i, len(p.tgt_words) - 1)}" for i in range(len(p.src_words)))
                                         + "\n" for p in pairs), encoding="utf-8")
    return files


def test_the_test_set_page_runs_without_streamlit(bundle, tmp_path):
    """`testset.run_testset` (what the app's page calls): rows merged with their alignment scores, corpus AER
    equal to `aligndebug score`'s, a layer x head grid, and progress that ends at 1."""
    from aligndebug.gold import read_gold
    from aligndebug.pairs import iter_pairs
    from aligndebug.testset import run_testset

    f = _files(tmp_path, 6)
    seen = []
    res = run_testset(bundle, f["src"], f["tgt"], f["gold"], f["ref"], base=0, limit=5, method="naive", layer=0,
                      on_progress=lambda frac, text: seen.append(frac))
    assert sorted(r["id"] for r in res.rows) == list(range(5)) and [r["rank"] for r in res.rows] == [1, 2, 3, 4, 5]
    totals, rows = score_stream(bundle, list(iter_pairs(f["src"], f["tgt"]))[:5],
                                read_gold(f["gold"], base=0).alignments, ScoreOptions(method="naive", layer=0))
    by_index = {r["index"]: r for r in rows}
    assert all(r["links"] == by_index[r["id"]]["links"] and r["aer"] == by_index[r["id"]]["aer"] for r in res.rows)
    assert res.corpus["aer"] == pytest.approx(totals.counts.aer, rel=1e-12) and res.corpus["sentences"] == 5
    assert "bleu" in res.corpus and "chrf" in res.corpus
    assert set(res.grid) >= {(0, 0), (0, "mean"), (1, 1)} and res.gold_lines[0].startswith("0-0")
    assert seen[-1] == 1.0 and seen == sorted(seen)


def test_the_test_set_page_reads_the_aligner_it_is_given(bundle, tmp_path):
    """The page's triage reads the signals of the aligner the app's sidebar chose (any method), names it in
    the settings line, and records it in the calibration; with none the rows hold no aligner signal."""
    from aligndebug.learned import LearnedAligner, aligner_id
    from aligndebug.testset import run_testset

    f = _files(tmp_path, 6, gold=False)
    aligner = LearnedAligner.new(bundle, seed=1)
    with_it = run_testset(bundle, f["src"], f["tgt"], limit=6, aligner=aligner, aligner_name="mine")
    without = run_testset(bundle, f["src"], f["tgt"], limit=6, aligner=None)
    assert all(np.isfinite(r["unaligned_source"]) for r in with_it.rows)
    assert all("unaligned_source" not in r for r in without.rows)
    assert with_it.calibration.settings["aligner"] == aligner_id(aligner)
    assert without.calibration.settings.get("aligner") is None
    assert with_it.corpus["settings"].endswith("learned aligner's signals: mine")
    assert without.corpus["settings"].endswith("learned aligner's signals: none")
    # by name, as `aligndebug triage --aligner`: the tiny model is not the embedded aligner's, so none is read
    assert run_testset(bundle, f["src"], f["tgt"], limit=2).corpus["settings"].endswith("signals: none")


def test_the_test_set_page_translates_and_names_bad_files(bundle, tmp_path):
    from aligndebug.errors import InputError
    from aligndebug.testset import run_testset

    f = _files(tmp_path, 3, gold=False)
    res = run_testset(bundle, f["src"], limit=3)
    assert len(res.rows) == 3 and all(isinstance(r["translation"], str) for r in res.rows)
    assert res.grid is None and "aer" not in res.corpus
    with pytest.raises(InputError, match="no translations were given"):
        run_testset(bundle, f["src"], gold=f["ref"])
    f["ref"].write_text("one\n", encoding="utf-8")
    with pytest.raises(InputError, match="1 references for 3 sentences"):
        run_testset(bundle, f["src"], f["tgt"], ref=f["ref"])


def test_the_test_set_page_keeps_sentences_the_model_cannot_take(bundle, tmp_path):
    """An empty source, one beyond the model's positions and a reference line that cannot be decoded do not
    stop the page (as they do not stop `aligndebug triage`): none is aligned (nor translated), each row is
    flagged with the reason, ranked among the suspects and counted; an empty reference line leaves its row
    without reference scores; the other sentences are scored as without them."""
    from aligndebug.testset import run_testset

    f = _files(tmp_path, 6)
    lines = f["src"].read_text(encoding="utf-8").splitlines()
    lines[1], lines[4] = "", " ".join(["Hund"] * (bundle.max_positions + 5))
    f["src"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    refs = f["ref"].read_bytes().split(b"\n")
    refs[2], refs[5] = refs[2].replace(b" ", b" \xff ", 1), b""
    f["ref"].write_bytes(b"\n".join(refs))
    for tgt, gold in ((None, None), (f["tgt"], f["gold"])):
        res = run_testset(bundle, f["src"], tgt, gold, f["ref"], base=0, limit=6, method="naive", layer=0)
        by_id = {r["id"]: r for r in res.rows}
        assert sorted(by_id) == list(range(6))
        assert res.corpus["unusable"] == {"empty": 1, "too_long_for_model": 1, "undecodable": 1}
        assert by_id[1]["flags"][0] == "empty" and by_id[4]["flags"][0] == "too_long_for_model"
        assert by_id[2]["flags"][0] == "undecodable" and f"{f['ref']}:3: bytes" in by_id[2]["reasons"][0]
        assert "chrf" not in by_id[5] and "chrf" in by_id[0] and "bleu" in res.corpus
        n_suspects = sum(r["suspect"] for r in res.rows)
        for k in (1, 2, 4):
            assert by_id[k]["suspect"] and by_id[k]["rank"] <= n_suspects
            assert not by_id[k]["links"] and by_id[k]["aer"] is None  # not aligned
        assert all(by_id[k]["links"] for k in (0, 3, 5))
        assert all((by_id[k]["aer"] is not None) == (gold is not None) for k in (0, 3, 5))
        if tgt is None:
            assert by_id[4]["translation"] == "" and all(by_id[k]["translation"] for k in (0, 3, 5))
        else:
            kept = [0, 3, 5]
            want = run_testset(bundle, *_subset(tmp_path, f, kept), base=0, method="naive", layer=0)
            assert res.corpus["aer"] == pytest.approx(want.corpus["aer"], rel=1e-9)


def _subset(tmp_path, f: dict, keep: list[int]) -> tuple:
    """Copies of the src, tgt, gold and ref files holding only the lines `keep`."""
    out = []
    for key in ("src", "tgt", "gold", "ref"):
        lines = f[key].read_bytes().split(b"\n")
        path = tmp_path / f"kept_{key}.txt"
        path.write_bytes(b"".join(lines[k] + b"\n" for k in keep))
        out.append(path)
    return tuple(out)


def test_default_layer_reads_the_same_signals_reduced_or_not(bundle):
    """Layer None (the model's default view) keeps the layer `align.select` reads, so the learned combination's
    variants (one builder: reduced) are scored as the set's own rows (two builders: not reduced)."""
    import warnings

    pairs = _pairs(6)
    opts = ScoreOptions(method="naive", layer=None, head="mean", batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fall-back to Fisher
        ranked, _, _ = score_and_triage(bundle, pairs, None, None, opts, triage_layer=None)
    assert ranked.calibration.combine == "learned"
    local = run_triage(bundle, [p.source for p in pairs], [p.target for p in pairs], batch_size=4, layer=None,
                       method="naive")
    assert [row_json(r) for r in ranked] == [row_json(r) for r in local]
