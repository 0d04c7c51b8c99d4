"""The app's parts of issue 17 through AppTest on the tiny Marian: the "Why not …?" field under the sentence
views and the Suite page (upload or built-in probe, accuracy table, failing items, JSONL rows, bad TSVs)."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest

pytest.importorskip("streamlit.testing.v1")

import tiny_models as tm  # noqa: E402
from test_app import analyse, app, charts_in, errors, no_crash, tiny_marian  # noqa: E402,F401 - fixtures

from aligndebug import suite  # noqa: E402
from aligndebug.contrast import contrast  # noqa: E402

SRC, TGT, FOIL = "Der Hund schläft .", "The dog sleeps .", "The cat sleeps ."


def why_not(at, foil: str, steps: int = 4):
    at.select_slider(key="whynot_steps").set_value(steps)
    at.text_input(key="whynot").set_value(foil)
    return at.run()


def test_why_not_shows_the_difference_and_the_contrastive_heatmap(app):
    at = analyse(app.run(), SRC, TGT)
    before = sum(charts_in(c) for c in at.main.children.values())
    at = why_not(at, FOIL)
    no_crash(at)
    assert errors(at) == []
    # the numbers shown are the package's for the same model and settings (default layer, mean heads)
    want = contrast(tm.bundle("marian"), SRC, TGT, FOIL, steps=4)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Δ log p (sentence)"] == f"{want.difference:.3f}"
    table = next(d.value for d in at.dataframe if "difference" in d.value.columns)
    assert list(table["target"]) == ["dog"] and list(table["contrast"]) == ["cat"]
    np.testing.assert_allclose(table["difference"], [want.positions[0].difference], rtol=1e-4, atol=1e-6)
    assert table["difference"].iloc[0] != 0
    # contrastive attribution beside the attention of that step
    assert sum(charts_in(c) for c in at.main.children.values()) == before + 2
    assert any("Completeness gap" in c.value for c in at.caption)


def test_why_not_with_the_same_target_is_zero(app):
    at = why_not(analyse(app.run(), SRC, TGT), TGT)
    no_crash(at)
    assert errors(at) == []
    assert float({m.label: m.value for m in at.metric}["Δ log p (sentence)"]) == 0.0
    assert any("difference is 0" in i.value for i in at.info)
    assert not any("difference" in d.value.columns for d in at.dataframe)


def test_why_not_with_an_unusable_target_is_an_error(app):
    at = why_not(analyse(app.run(), SRC, TGT), " " + "Hund " * 600)
    no_crash(at)
    assert any(e.startswith("Cannot contrast these targets") for e in errors(at)), errors(at)


SUITE = ("# a tiny suite\n"
         "Der Hund schläft .\tThe dog sleeps .\tThe cat sleeps .\tanimal\n"
         "Die Katze trinkt .\tThe cat drinks .\tThe dog drinks .\tanimal\n"
         "Das Haus ist groß .\tThe house is big .\tThe house is small .\tsize\n")


def upload_suite(at, text: str, name: str = "my-suite.tsv", **settings):
    at.radio(key="page").set_value("Suite").run()
    at.radio(key="su_how").set_value("Upload").run()
    at.file_uploader(key="su_up").upload(name, text.encode("utf-8"), "text/tab-separated-values")
    at.run()
    at.select_slider(key="su_steps").set_value(settings.get("steps", 4))
    at.selectbox(key="su_attr").set_value(settings.get("attribute", "all"))
    at.button(key="su_go").click()
    return at.run()


def test_suite_upload_shows_accuracy_and_failing_items(app, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    at = upload_suite(app.run(), SUITE)
    no_crash(at)
    assert errors(at) == []
    assert list(scratch.iterdir()) == []  # the upload's temporary copy is gone
    path = tmp_path / "s.tsv"
    path.write_text(SUITE, encoding="utf-8")
    want = suite.run_suite(tm.bundle("marian"), suite.read_suite(path), suite.SuiteOptions(steps=4))
    passed = [r["pass"] for r in want]
    shown = {m.label: m.value for m in at.metric}
    assert shown["Items"] == "3"
    assert shown["Accuracy"] == f"{np.mean(passed):.1%}"
    assert shown["Failing"] == str(passed.count(False))
    acc = next(d.value for d in at.dataframe if "accuracy" in d.value.columns)
    assert list(acc[""]) == ["overall", "animal", "size"]
    assert list(acc["n"]) == [3, 2, 1]
    assert (acc["95% CI low"] <= acc["accuracy"]).all() and (acc["accuracy"] <= acc["95% CI high"]).all()
    assert len(at.expander) == passed.count(False)  # one card per failing item, each with its two heatmaps
    assert all(charts_in(e) == 2 for e in at.expander)
    assert any(b.label == "Rows (JSONL)" for b in at.get("download_button"))


@pytest.mark.parametrize("text, line, message", [
    ("Der Hund schläft .\tThe dog sleeps .\tThe cat sleeps .\n"
     "Die Katze trinkt .\tThe cat drinks .\n", 2, "found 2 tab-separated column(s)"),
    ("# header\n\nDer Hund .\tThe dog .\tThe dog .\n", 3, "the correct and the wrong target are the same words"),
])
def test_suite_bad_tsv_names_the_file_and_line(app, text, line, message):
    at = upload_suite(app.run(), text, name="bad.tsv")
    no_crash(at)
    errs = errors(at)
    assert len(errs) == 1 and f"bad.tsv:{line}: {message}" in errs[0], errs
    assert "Traceback" not in errs[0] and "aligndebug-app-" not in errs[0]  # the user's name, not the temp copy
    assert not at.dataframe


def test_suite_builtin_gender_probe_with_a_limit(app):
    at = app.run()
    at.radio(key="page").set_value("Suite").run()
    assert at.radio(key="su_how").value == "Built-in probe"
    at.number_input(key="su_limit").set_value(4)
    at.select_slider(key="su_steps").set_value(4)
    at.selectbox(key="su_attr").set_value("none")
    at.button(key="su_go").click()
    at.run()
    no_crash(at)
    assert errors(at) == []
    shown = {m.label: m.value for m in at.metric}
    assert shown["Items"] == "4"
    assert {"Feminine forms", "Masculine forms", "Gap masc − fem"} <= set(shown)
    fem, masc = (float(shown[k].rstrip("%")) for k in ("Feminine forms", "Masculine forms"))
    assert shown["Gap masc − fem"] == f"{masc - fem:+.1f} pts"


def test_contrast_view_and_heatmaps_carry_the_results_numbers():
    from aligndebug import charts, views

    res = contrast(tm.bundle("marian"), "Der Hund schläft gut .", "The dog sleeps well .", "A cat sleeps badly .",
                   steps=4)
    assert len(res.positions) == 2  # "The dog" / "A cat" and "well" / "badly"
    view = views.contrast_view(res.to_dict()["positions"], res.source_words)
    np.testing.assert_array_equal(view["attribution"], [p.attribution for p in res.positions])
    np.testing.assert_array_equal(view["attention"], [p.attention_target for p in res.positions])
    assert view["labels"] == ["0: The dog / A cat", "1: well / badly"]
    assert [r["difference"] for r in view["table"]] == [p.difference for p in res.positions]
    attr, att = charts.contrast_heatmaps(view)
    for chart, mat in ((attr, view["attribution"]), (att, view["attention"])):
        (cells,) = chart.to_dict()["datasets"].values()
        got = np.zeros(mat.shape)
        for c in cells:
            got[c["tgt"], c["src"]] = c["value"]
        np.testing.assert_allclose(got, mat, rtol=1e-4, atol=1e-5 * np.abs(mat).max())
    # a suite row without attribution: the attention heatmap only
    item = suite.SuiteItem(0, 1, "Der Hund schläft gut .", "The dog sleeps well .", "A cat sleeps badly .")
    row = suite.score_items(tm.bundle("marian"), [item], suite.SuiteOptions(attribute="none"))[0]
    view = views.contrast_view(row["positions"], row["source_words"], target_key="correct", contrast_key="wrong")
    assert view["attribution"] is None and view["attention"].shape == (2, 5)
    attr, att = charts.contrast_heatmaps(view, target="correct", contrast="wrong")
    assert attr is None and att is not None
