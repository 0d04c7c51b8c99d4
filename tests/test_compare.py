"""`aligndebug compare`: rows, paired bootstrap, ranked deltas, resume, CLI and HTML, on tiny models of two families."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aligndebug.compare import (
    CompareOptions, ModelScores, aer_from_counts, finish_compare, load_scores, paired_bootstrap, resample_indices,
    resampled_sums, run_compare, sentence_deltas, summarize, translation_stats, _bleu_scores,
)
from aligndebug.errors import InputError
from aligndebug.gold import GoldAlignment
from aligndebug.metrics import AlignmentCounts
from aligndebug.pairs import SentencePair

import tiny_models


def _pairs(n: int) -> list[SentencePair]:
    return [SentencePair(i, i + 1, de.split(), en.split())
            for i, (de, en) in enumerate(zip(tiny_models.DE[:n], tiny_models.EN[:n]))]


def _golds(pairs: list[SentencePair]) -> list[GoldAlignment | None]:
    """A monotone diagonal gold (sure) per sentence; sentence 2 has none (skipped as invalid)."""
    out: list[GoldAlignment | None] = []
    for p in pairs:
        n, m = len(p.src_words), len(p.tgt_words)
        out.append(GoldAlignment.from_links({(min(n - 1, j * n // m), j) for j in range(m)}))
    out[2] = None
    return out


@pytest.fixture(scope="module")
def loader(tiny_bundle):
    """load(spec) for specs 'marian' / 't5' (tiny models), counting loads per spec."""
    counts: dict[str, int] = {}

    def load(spec: str):
        counts[spec] = counts.get(spec, 0) + 1
        return tiny_bundle(spec.split("#")[0])  # 'marian#2': the same model under another name

    load.counts = counts
    return load


# --------------------------------------------------------------------------------------------- pure

def test_aer_from_counts_matches_alignment_counts():
    rng = np.random.default_rng(0)
    for _ in range(50):
        s, extra = rng.integers(0, 6, 2)
        a_s = rng.integers(0, s + 1)
        a_p = a_s + rng.integers(0, extra + 1)
        a = a_p + rng.integers(0, 4)
        c = AlignmentCounts(int(a), int(s), int(a_s), int(a_p))
        assert aer_from_counts(np.array([a, s, a_s, a_p])) == pytest.approx(c.aer, rel=1e-12, abs=1e-15)
    assert aer_from_counts(np.zeros(4)) == 0.0  # metrics' rule for 0/0


def test_bootstrap_is_sacrebleus_paired_bs():
    """Same seed, same sufficient statistics: the BLEU p-value equals sacreBLEU's own paired bootstrap
    (sacrebleu.significance._paired_bs_test) for a non-zero difference."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import _paired_bs_test

    refs = tiny_models.EN
    base = [r.replace("The", "A") for r in refs]
    system = [r if i % 3 else r.replace(".", "") + " the the" for i, r in enumerate(refs)]
    bleu = BLEU()
    bl_stats = bleu._extract_corpus_statistics(base, [refs])
    ours_b, _ = translation_stats(base, refs)
    ours_s, _ = translation_stats(system, refs)
    assert ours_b == [list(map(int, s)) for s in bl_stats]
    _, theirs = _paired_bs_test({"BLEU": (bl_stats, bleu._aggregate_and_compute(bl_stats))}, "sys", system, [refs],
                                {"BLEU": BLEU()}, n_samples=300, seed=7)
    d = paired_bootstrap(np.asarray(ours_b, float), np.asarray(ours_s, float), _bleu_scores, resample_indices(len(refs), 300, 7))
    assert d.delta != 0
    assert d.p_value == pytest.approx(theirs["BLEU"].p_value, rel=1e-12)
    assert d.system == pytest.approx(theirs["BLEU"].score, rel=1e-9)
    assert d.low <= d.mean <= d.high


def test_bootstrap_deterministic_under_its_seed():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, size=(40, 4)).astype(float)
    a[:, 1] = a[:, 0] + 2
    a[:, 2] = np.minimum(a[:, 2], np.minimum(a[:, 0], a[:, 1]))
    a[:, 3] = np.minimum(a[:, 0], np.maximum(a[:, 3], a[:, 2]))
    b = a.copy()
    b[:10, 2:] = 0  # worse on ten sentences
    runs = [paired_bootstrap(a, b, aer_from_counts, resample_indices(40, 500, 99)) for _ in range(2)]
    assert runs[0] == runs[1]
    other = paired_bootstrap(a, b, aer_from_counts, resample_indices(40, 500, 100))
    assert (other.low, other.high, other.mean) != (runs[0].low, runs[0].high, runs[0].mean)
    assert np.array_equal(resample_indices(40, 500, 99), resample_indices(40, 500, 99))
    idx = resample_indices(40, 250, 3)
    assert np.array_equal(resampled_sums(a, idx, block=64), a[idx].sum(axis=1))  # blocks change nothing


def test_triage_rise_ranked_first():
    """rank_triage 1 = the sentence whose triage score rose the most; rank_aer orders by AER increase."""
    n = 5
    grid = np.zeros((n, 1, 2, 4), dtype=np.int64)
    grid[:, 0, :] = [4, 4, 4, 4]  # perfect
    worse = grid.copy()
    worse[3, 0, :] = [4, 4, 1, 1]
    worse[1, 0, :] = [4, 4, 3, 3]

    def ms(g, tri):
        m = ModelScores("m", "m", g, np.ones(n, bool), np.zeros(n), np.zeros((n, 0)), np.zeros((n, 0)),
                        [None] * n, [None] * n, np.full(n, np.nan), np.full(n, np.nan))
        m.triage_score = np.asarray(tri, float)
        return m

    rows = sentence_deltas([ms(grid, [1, 1, 1, 1, 1]), ms(worse, [1, 2, 9, 1, 0])], CompareOptions(layer=0))
    by_aer = sorted(rows, key=lambda r: r["rank_aer"])
    assert [r["index"] for r in by_aer[:2]] == [3, 1]
    assert by_aer[0]["delta_aer"] == pytest.approx(0.75, rel=1e-12)
    assert next(r for r in rows if r["rank_triage"] == 1)["index"] == 2
    assert next(r for r in rows if r["index"] == 4)["rank_triage"] == 5


# --------------------------------------------------------------------------------------- with models

def test_identical_models_difference_zero_p_one(tmp_path, loader):
    pairs = _pairs(8)
    golds = _golds(pairs)
    opts = CompareOptions(bootstrap=200)
    run_compare(["marian", "marian#2"], pairs, golds, opts, tmp_path / "rows.jsonl", load=loader)
    res = finish_compare(tmp_path / "rows.jsonl", pairs, golds, opts)
    first, second = res.summary["models"]
    for key in ("aer", "bleu", "chrf", "seq_logprob", "best_layer_aer"):
        assert second[key] == pytest.approx(first[key], rel=1e-9, abs=1e-12)
    assert set(second["vs_first"]) == {"aer", "bleu", "chrf", "seq_logprob"}
    for name, d in second["vs_first"].items():
        assert d["delta"] == pytest.approx(0.0, abs=1e-9), name
        assert d["low"] == pytest.approx(0.0, abs=1e-9) and d["high"] == pytest.approx(0.0, abs=1e-9), name
        assert d["p_value"] == pytest.approx(1.0, rel=1e-9), name
    assert first["scored_sentences"] == 7  # sentence 2 has no gold
    assert all(d["delta_aer"] in (None, 0.0) or abs(d["delta_aer"]) < 1e-12 for d in res.deltas)
    assert res.summary["signature"].startswith("model:marian,marian#2|method:shift-att|layer:default|heads:mean")
    assert "bs:200|seed:12345" in res.summary["signature"] and "bleu:nrefs:1" in res.summary["signature"]


def test_two_families_layer_and_grid_match_rows(tmp_path, loader):
    """Marian against T5: corpus AER at the chosen layer is the sum of the per-sentence counts, 'best'
    is the grid's argmin, and each row carries a [layers][heads + mean] grid."""
    pairs = _pairs(6)
    golds = _golds(pairs)
    opts = CompareOptions(bootstrap=50, layer="best")
    run_compare(["marian", "t5"], pairs, golds, opts, tmp_path / "rows.jsonl", load=loader)
    settings, models = load_scores(tmp_path / "rows.jsonl")
    summary = summarize(settings, models, opts)
    for m, entry in zip(models, summary["models"]):
        assert m.grid.shape[1:] == (2, 3, 4)  # tiny models: 2 layers, 2 heads (+ mean)
        per_layer = entry["per_layer_mean_aer"]
        assert entry["layer"] == int(np.argmin(per_layer))
        assert entry["aer"] == pytest.approx(min(per_layer), rel=1e-12)
        c = sum((AlignmentCounts(*map(int, m.grid[j, entry["layer"], 2])) for j in range(6)), AlignmentCounts())
        assert entry["aer"] == pytest.approx(c.aer, rel=1e-12)
        assert 0 <= entry["bleu"] <= 100 and entry["suspects"] >= 0


def test_worse_sentences_rank_first_and_interval_excludes_zero(tmp_path, loader):
    """Model 1 is model 0 with its alignments spoiled (no link right) on a known set of sentences:
    those rank first, and the AER difference's 95% interval lies above 0."""
    pairs = _pairs(30)
    golds = _golds(pairs)
    opts = CompareOptions(bootstrap=1000, layer=1, translate=False)
    out = tmp_path / "rows.jsonl"
    run_compare(["marian", "marian#2"], pairs, golds, opts, out, load=loader)
    spoiled = {4, 11, 17, 23, 29}
    lines = out.read_text(encoding="utf-8").splitlines()
    edited = []
    for line in lines:
        row = json.loads(line)
        if row.get("kind") == "row" and row["model"] == 1 and row["index"] in spoiled:
            for layer in row["grid"]:
                for c in layer:
                    c[2] = c[3] = 0  # |A∩S| = |A∩P| = 0: every predicted link wrong, every gold link missed
            line = json.dumps(row)
        edited.append(line)
    out.write_text("\n".join(edited) + "\n", encoding="utf-8")
    res = finish_compare(out, pairs, golds, opts)
    ranked = sorted(res.deltas, key=lambda r: r["rank_aer"])
    assert {r["index"] for r in ranked[: len(spoiled)]} == spoiled
    assert all(r["delta_aer"] > 0 for r in ranked[: len(spoiled)])
    assert all(r["delta_aer"] is None or abs(r["delta_aer"]) < 1e-12 for r in ranked[len(spoiled):])
    d = res.summary["models"][1]["vs_first"]["aer"]
    assert d["delta"] > 0 and d["low"] > 0 and d["p_value"] < 0.05
    assert d["low"] <= d["mean"] <= d["high"]
    assert res.summary["models"][1]["vs_first"]["seq_logprob"]["p_value"] == pytest.approx(1.0)
    assert "bleu" not in res.summary["models"][1]["vs_first"]  # alignment only


def test_resume_skips_finished_models_and_sentences(tmp_path, loader, monkeypatch):
    pairs = _pairs(7)
    golds = _golds(pairs)
    opts = CompareOptions(bootstrap=100, chunk_size=3)
    fresh = tmp_path / "fresh.jsonl"
    run_compare(["marian", "t5"], pairs, golds, opts, fresh, load=loader)
    want = summarize(*load_scores(fresh), opts)

    out = tmp_path / "rows.jsonl"
    lines = fresh.read_text(encoding="utf-8").splitlines()
    # a kill during model 1's second chunk: model 0 finished, model 1 has its first chunk, a torn line
    keep = [l for l in lines if json.loads(l).get("model") != 1 or (json.loads(l).get("kind") == "row"
                                                                    and json.loads(l)["index"] < 3)]
    out.write_text("\n".join(keep) + "\n" + lines[-2][: len(lines[-2]) // 2], encoding="utf-8")
    before = dict(loader.counts)
    seen: list[int] = []
    import aligndebug.compare as compare

    orig = compare.model_rows

    def spy(bundle, chunk, *args):
        seen.extend(p.index for p in chunk)
        return orig(bundle, chunk, *args)

    monkeypatch.setattr(compare, "model_rows", spy)
    run_compare(["marian", "t5"], pairs, golds, opts, out, resume=True, load=loader)
    assert loader.counts.get("marian", 0) == before.get("marian", 0)  # finished: not even loaded
    assert loader.counts["t5"] == before["t5"] + 1
    assert seen == [3, 4, 5, 6]
    rows = [json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["index"] for r in rows if r.get("kind") == "row" and r["model"] == 1) == list(range(7))
    got = summarize(*load_scores(out), opts)
    for a, b in zip(got["models"], want["models"]):
        for key in ("aer", "bleu", "chrf", "seq_logprob", "suspects"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key

    with pytest.raises(InputError, match="other settings"):
        run_compare(["marian", "t5"], pairs, golds, CompareOptions(method="naive"), out, resume=True, load=loader)


def test_cli_compare_with_html_and_curve(tmp_path, model_dir, capsys):
    from aligndebug.cli import main

    t5_dir = tiny_models.save("t5", tmp_path / "tiny-t5")
    pairs = _pairs(6)
    src, tgt, gold = tmp_path / "s.de", tmp_path / "t.en", tmp_path / "g.wa"
    # a word with markup, which the report must escape
    src.write_text("\n".join(p.source for p in pairs[:5]) + "\nDer <b>Hund</b> & Co .\n", encoding="utf-8")
    tgt.write_text("\n".join(p.target for p in pairs[:5]) + "\nThe <b>dog</b> & co .\n", encoding="utf-8")
    gold.write_text("0-0 1-1 2-2\n" * 6, encoding="utf-8")
    out = tmp_path / "cmp.jsonl"
    argv = ["compare", "--model", str(model_dir), str(t5_dir), "--model", str(model_dir), "--src", str(src),
            "--tgt", str(tgt), "--gold", str(gold), "--gold-base", "0", "--layer", "best", "--out", str(out),
            "--html", str(tmp_path / "cmp.html"), "--curve", str(tmp_path / "curve.svg"), "--bootstrap", "100",
            "--top", "2", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "differences against #0" in printed and "signature: model:" in printed
    page = (tmp_path / "cmp.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert "Der &lt;b&gt;Hund&lt;/b&gt; &amp; Co ." in page and "<b>Hund</b>" not in page
    assert page.count("<svg") >= 3  # curve + side-by-side heatmaps
    assert "Checkpoint series" in page
    assert (tmp_path / "curve.svg").read_bytes().lstrip().startswith((b"<svg", b"<?xml"))
    summary = json.loads((tmp_path / "cmp.summary.json").read_text(encoding="utf-8"))
    assert [m["model"] for m in summary["models"]] == [str(model_dir), str(t5_dir), str(model_dir)]
    assert summary["models"][2]["vs_first"]["aer"]["p_value"] == pytest.approx(1.0)
    deltas = [json.loads(l) for l in (tmp_path / "cmp.deltas.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(deltas) == 2 * 6 and {d["model"] for d in deltas} == {1, 2}
    # resume of a finished run loads nothing new and gives the same summary
    assert main(argv + ["--resume"]) == 0
    again = json.loads((tmp_path / "cmp.summary.json").read_text(encoding="utf-8"))
    assert again["models"] == summary["models"]


def test_cli_compare_refuses_bad_input(tmp_path, model_dir, capsys):
    from aligndebug.cli import main

    src = tmp_path / "s.de"
    src.write_text("Der Hund .\n", encoding="utf-8")
    assert main(["compare", "--model", str(model_dir), "--src", str(src), "--tgt", str(src), "--out",
                 str(tmp_path / "o.jsonl")]) == 2
    assert "at least two models" in capsys.readouterr().err
    assert main(["compare", "--model", str(model_dir), str(model_dir), "--src", str(src), "--out",
                 str(tmp_path / "o.jsonl")]) == 2
    assert "no sentence pairs" in capsys.readouterr().err
    assert main(["compare", "--model", str(model_dir), str(model_dir), "--src", str(src), "--tgt", str(src),
                 "--layer", "7", "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "--layer 7 does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "--model", "a", "b", "--layer", "top", "--out", str(tmp_path / "o.jsonl")])
    assert "layer index or 'best'" in capsys.readouterr().err


def test_one_model_in_memory_at_a_time(tmp_path, model_dir):
    """Each model is freed before the next is loaded (peak memory: the largest model, not the sum)."""
    import weakref

    from aligndebug.models import load_model

    alive: list[weakref.ref] = []
    held_at_load: list[int] = []

    def load(spec: str):
        held_at_load.append(sum(r() is not None for r in alive))
        bundle = load_model(str(model_dir))
        alive.append(weakref.ref(bundle.model))
        return bundle

    pairs = _pairs(4)
    run_compare(["a", "b", "c"], pairs, _golds(pairs), CompareOptions(bootstrap=10, translate=False),
                tmp_path / "rows.jsonl", load=load)
    assert held_at_load == [0, 0, 0]
    assert all(r() is None for r in alive)


def test_grid_difference():
    from aligndebug.compare import grid_difference

    a = {(0, 0): 0.5, (0, "mean"): 0.25}
    assert grid_difference(a, {(0, 0): 0.75, (0, "mean"): 0.25}) == {(0, 0): 0.25, (0, "mean"): 0.0}
    assert grid_difference(a, {(0, 0): 0.5}) is None


def test_without_gold_no_aer_is_reported(tmp_path, loader):
    """No gold: AER is None (not 0) and is not bootstrapped; Seq-Logprob still is."""
    from aligndebug.compare import format_table, render_html

    pairs = _pairs(4)
    opts = CompareOptions(bootstrap=20, translate=False)
    run_compare(["marian", "t5"], pairs, None, opts, tmp_path / "rows.jsonl", load=loader)
    res = finish_compare(tmp_path / "rows.jsonl", pairs, None, opts)
    for m in res.summary["models"]:
        assert m["aer"] is None and m["best_layer_aer"] is None and m["scored_sentences"] == 0
    assert set(res.summary["models"][1]["vs_first"]) == {"seq_logprob"}
    assert "#1 t5" in format_table(res.summary)
    assert "AER per layer" not in render_html(res.summary, res.deltas)


def test_triage_scores_every_model_with_the_first_models_learned_combination(tmp_path, loader):
    """The default, as `aligndebug triage`: the learned combination is fitted on model 0's rows while it is loaded
    (its synthetic errors forced through it), stored in its "model" line, and scores every model on that scale; a
    row is suspect above model 0's q-th percentile score. A kill before that line refits on resume."""
    from aligndebug.combine import Combiner

    pairs = _pairs(12)
    golds = _golds(pairs)
    opts = CompareOptions(bootstrap=50)
    out = tmp_path / "rows.jsonl"
    run_compare(["marian", "t5"], pairs, golds, opts, out, load=loader)
    lines = out.read_text(encoding="utf-8").splitlines()
    meta = {r["model"]: r for r in map(json.loads, lines) if r.get("kind") == "model"}
    assert "combiner" not in meta[1]
    comb = Combiner.from_dict(meta[0]["combiner"])
    assert comb.ranking == "mixture" and comb.rates["clean"] > 0 and comb.weights
    settings, models = load_scores(out)
    summary = summarize(settings, models, opts)
    assert summary["triage_ranking"] == "learned" and "combine=learned" in summary["signature"]
    from aligndebug.compare import format_table

    assert "suspects: triage score by the learned combination above" in format_table(summary)
    for m in models:
        np.testing.assert_allclose(m.triage_score, comb.logit(m.signals), rtol=1e-12)
    threshold = np.percentile(models[0].triage_score, 95.0)
    assert summary["triage_score_threshold"] == pytest.approx(threshold, rel=1e-12)
    assert [e["suspects"] for e in summary["models"]] == [int((m.triage_score > threshold).sum()) for m in models]

    cut = tmp_path / "cut.jsonl"  # killed while fitting: model 0's rows written, its "model" line not
    cut.write_text("\n".join(l for l in lines if json.loads(l).get("kind") == "settings"
                             or json.loads(l).get("model") == 0 and json.loads(l).get("kind") == "row") + "\n",
                   encoding="utf-8")
    run_compare(["marian", "t5"], pairs, golds, opts, cut, resume=True, load=loader)
    again = {r["model"]: r for r in map(json.loads, cut.read_text(encoding="utf-8").splitlines())
             if r.get("kind") == "model"}
    refit = Combiner.from_dict(again[0]["combiner"])
    assert refit.weights.keys() == comb.weights.keys()
    for kind in comb.weights:
        assert refit.weights[kind] == pytest.approx(comb.weights[kind], rel=1e-6, abs=1e-9)


def test_compare_by_fishers_method_and_older_rows_files(tmp_path, loader):
    """`combine="fisher"`: no fit, Fisher's method against model 0's calibration; a rows file written before the
    setting existed was ranked that way and resumes so, and refuses the learned combination."""
    from aligndebug.triage import triage_row

    pairs = _pairs(8)
    golds = _golds(pairs)
    opts = CompareOptions(bootstrap=50, combine="fisher")
    out = tmp_path / "rows.jsonl"
    run_compare(["marian", "t5"], pairs, golds, opts, out, load=loader)
    rows = [json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()]
    assert not any("combiner" in r for r in rows if r.get("kind") == "model")
    settings, models = load_scores(out)
    summary = summarize(settings, models, opts)
    assert summary["triage_ranking"] == "fisher" and "combine=fisher" in summary["signature"]
    from aligndebug.compare import format_table

    assert "suspects: triage score by Fisher's method above" in format_table(summary)
    from aligndebug.compare import score_triage

    cal = score_triage(models, opts)
    for m in models:
        np.testing.assert_allclose(m.triage_score, [triage_row(s, cal)[0] for s in m.signals], rtol=1e-12)
    old = tmp_path / "old.jsonl"
    rows[0].pop("combine")
    old.write_text("\n".join(json.dumps(r) for r in rows if r.get("kind") != "model" or r["model"] == 0) + "\n",
                   encoding="utf-8")
    run_compare(["marian", "t5"], pairs, golds, opts, old, resume=True, load=loader)
    with pytest.raises(InputError, match="combine 'fisher' there, 'learned' now"):
        run_compare(["marian", "t5"], pairs, golds, CompareOptions(bootstrap=50), old, resume=True, load=loader)
    with pytest.raises(ValueError, match="combine must be"):
        CompareOptions(combine="mean")


def test_too_few_rows_for_a_fit_fall_back_to_fishers_method(tmp_path, loader):
    pairs = _pairs(1)  # one row: a fit needs two clean ones
    opts = CompareOptions(bootstrap=20)
    with pytest.warns(UserWarning, match="no learned combination could be fitted"):
        run_compare(["marian", "marian#2"], pairs, None, opts, tmp_path / "rows.jsonl", load=loader)
    settings, models = load_scores(tmp_path / "rows.jsonl")
    assert models[0].combiner is None
    assert summarize(settings, models, opts)["triage_ranking"] == "fisher"
