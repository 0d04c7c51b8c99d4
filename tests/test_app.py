"""The Streamlit app through streamlit.testing.v1.AppTest, on a tiny Marian model built here.

Every tab is drawn, the numbers it shows match the package's, and every kind of bad input
ends in a clear st.error (never an exception or a stack trace).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit.testing.v1")
from streamlit.testing.v1 import AppTest  # noqa: E402

import tiny_models as tm  # noqa: E402
from aligndebug.align import align_record, default_layer  # noqa: E402
from aligndebug.extract import extract  # noqa: E402
from aligndebug.gold import parse_pharaoh_line  # noqa: E402
from aligndebug.metrics import count_links  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TABS = ["Alignment", "Self-attention", "Rollout & IG", "Tokens"]


@pytest.fixture(scope="module")
def tiny_marian(tmp_path_factory) -> str:
    return str(tm.save("marian", tmp_path_factory.mktemp("models") / "tiny-marian"))


@pytest.fixture(scope="module")
def decoder_only(tmp_path_factory) -> str:
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("models") / "tiny-gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=1, n_embd=8, vocab_size=16, n_positions=16)).save_pretrained(path)
    return str(path)


@pytest.fixture
def app(tiny_marian, monkeypatch, tmp_path) -> AppTest:
    monkeypatch.setenv("ALIGNDEBUG_MODEL", tiny_marian)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ALIGNDEBUG_APP_ROOTS", str(tmp_path))  # the test's own files may be read by path
    with listening_on("localhost"):  # as .streamlit/config.toml has it
        yield AppTest.from_file(APP, default_timeout=300)


@contextmanager
def listening_on(address: str | None) -> Iterator[None]:
    """Streamlit's server.address for the in-process AppTest run, restored afterwards."""
    from streamlit import config

    before = config.get_option("server.address")
    config.set_option("server.address", address)
    try:
        yield
    finally:
        config.set_option("server.address", before)


def charts_in(node) -> int:
    """Number of Vega-Lite charts under a node of the AppTest element tree."""
    n = 0
    for child in getattr(node, "children", {}).values():
        if getattr(child, "type", None) == "vega_lite_chart":
            n += 1
        n += charts_in(child)
    return n


def no_crash(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def analyse(at: AppTest, source: str, reference: str = "", gold: str = "") -> AppTest:
    at.text_area(key="src").set_value(source)
    at.text_input(key="ref").set_value(reference)
    at.text_input(key="gold").set_value(gold)
    next(b for b in at.button if b.label == "Analyse").click()
    return at.run()


def test_opens_on_the_model_and_draws_every_tab(app):
    at = app.run()
    no_crash(at)
    assert errors(at) == []
    assert [t.label for t in at.tabs] == TABS
    per_tab = {t.label: charts_in(t) for t in at.tabs}
    assert per_tab["Alignment"] >= 2  # heatmap + layer x head grid
    assert per_tab["Self-attention"] == 2  # encoder and decoder
    assert per_tab["Rollout & IG"] >= 2  # attention beside rollout
    assert per_tab["Tokens"] == 2  # log-prob/entropy and coverage
    assert any(m.label == "Seq-Logprob" for m in at.metric)
    labels = {b.label for b in at.get("download_button")}
    assert {"PNG", "SVG", "Record JSON"} <= labels


def test_forced_reference_with_gold_shows_sentence_scores(app):
    src, ref, gold = "Der Hund schläft .", "The dog sleeps .", "0-0 1-1 2-2 3p3"
    at = analyse(app.run(), src, ref, gold)
    no_crash(at)
    assert errors(at) == []
    assert "Reference (forced)" in " ".join(m.value for m in at.markdown)
    # the page's numbers are the package's: same model, default layer, mean heads, Shift-Att
    rec = extract(tm.bundle("marian"), [src], [ref])[0]
    links = align_record(rec, method="shift-att", layer=default_layer(rec.cross.shape[0]), head="mean")
    c = count_links(links, parse_pharaoh_line(gold, 0, (4, 4)))
    shown = {m.label: m.value for m in at.metric}
    assert shown["AER"] == f"{c.aer:.2f}"
    assert shown["Precision"] == f"{c.precision:.2f}" and shown["Recall"] == f"{c.recall:.2f}"
    assert any(code.value.strip() == " ".join(f"{s}-{t}" for s, t in sorted(links)) for code in at.code)
    assert charts_in(at.tabs[0]) == 3  # + AER per layer x head once gold is given


def test_sidebar_selectors_change_the_view(app):
    at = app.run()
    at.radio(key="level").set_value("subword")
    at.radio(key=next(r.key for r in at.radio if r.key.startswith("method-"))).set_value("naive")
    at.selectbox(key=next(s.key for s in at.selectbox if s.key.startswith("head-"))).set_value(1)
    at.run()
    no_crash(at)
    assert errors(at) == []
    assert charts_in(at.tabs[0]) >= 2


@pytest.mark.parametrize("source, message", [
    ("   ", "empty"),
    ("too long", "positions"),  # built below: more words than the model has positions
])
def test_bad_source_is_a_clear_error(app, source, message):
    if source == "too long":
        source = " ".join(["Hund"] * (tm.bundle("marian").model.config.max_position_embeddings + 5))
    at = analyse(app.run(), source)
    no_crash(at)
    assert any(message in e for e in errors(at)), errors(at)
    assert at.tabs == [] or not at.tabs  # no half-drawn views


@pytest.mark.parametrize("gold, message", [
    ("0-0 1-x", "malformed"),
    ("0-0 7-1", "past the end"),
])
def test_bad_gold_line_is_reported_and_views_still_shown(app, gold, message):
    at = analyse(app.run(), "Der Hund schläft .", "The dog sleeps .", gold)
    no_crash(at)
    assert any("Gold alignment ignored" in e and message in e for e in errors(at)), errors(at)
    assert [t.label for t in at.tabs] == TABS
    assert not any(m.label == "AER" for m in at.metric)


def test_model_that_cannot_be_loaded(app):
    at = app.run()
    at.text_input(key="model").set_value("/nonexistent/aligndebug-model").run()
    no_crash(at)
    assert any("cannot be used" in e and "could not be loaded" in e for e in errors(at)), errors(at)
    assert not at.tabs


def test_the_model_runs_on_the_device_the_server_names(app, monkeypatch):
    """$ALIGNDEBUG_DEVICE puts every model of the app on that device; one the machine lacks is a clear error."""
    import torch

    at = app.run()
    assert any(c.value.endswith("· cpu") for c in at.sidebar.caption), [c.value for c in at.sidebar.caption]
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: the refusal below cannot be shown")
    monkeypatch.setenv("ALIGNDEBUG_DEVICE", "cuda")
    at = at.run()
    no_crash(at)
    said = errors(at)
    assert any("cannot be used" in e and "no CUDA GPU" in e and "ALIGNDEBUG_DEVICE" in e for e in said), said
    assert not at.tabs


def test_decoder_only_model_is_refused(app, decoder_only):
    at = app.run()
    at.text_input(key="model").set_value(decoder_only).run()
    no_crash(at)
    assert any("decoder-only" in e for e in errors(at)), errors(at)


@pytest.fixture
def testset(tmp_path) -> dict[str, Path]:
    src = ["Der Hund schläft .", "Die Katze trinkt Milch .", "Ich sehe den Hund .", "Das Haus ist groß ."]
    tgt = ["The dog sleeps .", "The cat drinks milk .", "I see the dog .", "The house is big ."]
    gold = ["0-0 1-1 2-2 3-3", "0-0 1-1 2-2 3-3 4-4", "0-0 1-1 2-2 3-3 4-4", "0-0 1-1 2-2 3-3 4-4"]
    files = {}
    for name, lines in (("src", src), ("tgt", tgt), ("ref", tgt), ("gold", gold)):
        files[name] = tmp_path / f"test.{name}"
        files[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return files


def _run_testset(at: AppTest, files: dict[str, Path]) -> AppTest:
    at.radio(key="page").set_value("Test set").run()
    at.radio(key="ts_how").set_value("Path on the server").run()
    for key in ("src", "tgt", "ref", "gold"):
        at.text_input(key=f"path-{key}").set_value(str(files[key]) if key in files else "")
    at.button(key="ts_go").click()
    return at.run()


def test_testset_scores_triages_and_opens_a_row(app, testset):
    at = _run_testset(app.run(), testset)
    no_crash(at)
    assert errors(at) == []
    shown = {m.label: m.value for m in at.metric}
    assert shown["Sentences"] == "4"
    assert {"AER", "Precision", "Recall", "BLEU", "chrF"} <= set(shown)
    assert 0.0 <= float(shown["AER"]) <= 1.0
    assert float(shown["BLEU"]) == pytest.approx(100.0)  # references equal the forced translations
    table = at.dataframe[0].value
    assert len(table) == 4 and {"rank", "score", "flags", "source", "aer"} <= set(table.columns)
    assert list(table["rank"]) == [1, 2, 3, 4]
    assert charts_in(at.main) >= 1  # corpus AER per layer x head
    # open the third sentence in the sentence views, with its forced translation and gold
    at.selectbox(key="ts_open").set_value(2)
    at.button(key="ts_open_go").click()
    at.run()
    no_crash(at)
    assert at.radio(key="page").value == "One sentence"
    assert at.text_area(key="src").value == "Ich sehe den Hund ."
    assert at.text_input(key="ref").value == "I see the dog ."
    assert at.text_input(key="gold").value == "0-0 1-1 2-2 3-3 4-4"
    assert [t.label for t in at.tabs] == TABS and any(m.label == "AER" for m in at.metric)


@pytest.mark.parametrize("ranking", ["learned", "fisher"])
def test_testset_ranking_is_chosen_and_named(app, testset, ranking):
    at = app.run()
    at.radio(key="page").set_value("Test set").run()
    at.radio(key="ts_how").set_value("Path on the server").run()
    assert at.selectbox(key="ts_combine").value == "learned"  # the default, as `aligndebug triage`
    at.selectbox(key="ts_combine").set_value(ranking)
    at = _run_testset(at, testset)
    no_crash(at)
    caption = " ".join(c.value for c in at.caption)
    named = {"learned": "ranked by the learned combination", "fisher": "ranked by Fisher's method"}
    assert named[ranking] in caption and named[{"learned": "fisher", "fisher": "learned"}[ranking]] not in caption
    assert "learned aligner's signals: none" in caption  # a model folder ships no aligner
    table = at.dataframe[0].value
    assert list(table["rank"]) == [1, 2, 3, 4]
    typed = ["detached score", "omission score", "repetition score"]
    if ranking == "learned":  # each error type's own score, to sort by; the score is the odds of any of them
        assert set(table["error_type"]) <= {"detached", "omission", "repetition"}
        assert np.allclose(np.logaddexp.reduce(table[typed].to_numpy(), axis=1), table["score"], atol=1e-3)
        assert (table[typed].idxmax(axis=1).str.removesuffix(" score") == table["error_type"]).all()
        learned = [e for e in at.expander if e.label.startswith("How the score was learned")]
        assert len(learned) == 1 and "error rates of the calibration rows (estimated): clean" in learned[0].markdown[0].value
    else:
        assert not {"error_type", *typed} & set(table.columns)
        assert not [e for e in at.expander if e.label.startswith("How the score was learned")]


def test_testset_flag_filter_and_downloads(app, testset):
    at = _run_testset(app.run(), testset)
    table = at.dataframe[0].value
    flagged = [f for f in table["flags"] if f]
    labels = {b.label for b in at.get("download_button")}
    assert {"JSONL", "CSV"} <= labels
    options = at.multiselect(key="ts_flags").options
    if options:  # filter by the first flag: only rows carrying it remain
        flag = options[0]
        at.multiselect(key="ts_flags").set_value([flag]).run()
        kept = at.dataframe[0].value
        assert 0 < len(kept) <= len(table) and all(flag in f for f in kept["flags"])
    else:
        assert flagged == []
    at.text_input(key="ts_search").set_value("Katze").run()
    assert list(at.dataframe[0].value["source"]) in ([], ["Die Katze trinkt Milch ."])


def test_testset_bad_inputs(app, testset, tmp_path):
    missing = dict(testset, src=tmp_path / "nope.txt")
    at = _run_testset(app.run(), missing)
    no_crash(at)
    assert any("nope.txt" in e for e in errors(at)), errors(at)
    bad_gold = tmp_path / "bad.gold"
    bad_gold.write_text("0-0\n0-0\n0-0\n", encoding="utf-8")  # 3 lines for 4 sentences
    at = _run_testset(app.run(), dict(testset, gold=bad_gold))
    no_crash(at)
    assert any("bad.gold" in e and "4 sentence pairs" in e for e in errors(at)), errors(at)
    no_tgt = {k: v for k, v in testset.items() if k != "tgt"}
    at = _run_testset(app.run(), no_tgt)
    no_crash(at)
    assert any("no translations were given" in e for e in errors(at)), errors(at)


def test_record_json_download_is_the_record(app):
    from aligndebug import export

    at = analyse(app.run(), "Der Hund schläft .", "The dog sleeps .")
    rec = extract(tm.bundle("marian"), ["Der Hund schläft ."], ["The dog sleeps ."])[0]
    data = json.loads(export.record_to_json(rec))
    assert data["src_words"] == ["Der", "Hund", "schläft", "."]
    assert any(b.label == "Record JSON" for b in at.get("download_button"))


def test_integrated_gradients_on_demand_with_agreement(app):
    at = analyse(app.run(), "Der Hund schläft .", "The dog sleeps .", "0-0 1-1 2-2 3-3")
    before = charts_in(at.tabs[2])
    assert not any(m.label.startswith("ρ") for m in at.metric)  # IG runs only when asked
    at.button(key="ig_go").click()
    at.run()
    no_crash(at)
    assert errors(at) == []
    assert charts_in(at.tabs[2]) == before + 1
    assert any("Completeness gap" in c.value for c in at.caption)
    rho = {m.label: float(m.value) for m in at.metric if m.label.startswith("ρ")}
    assert set(rho) == {"ρ attention ↔ IG", "ρ rollout ↔ IG"}
    assert all(-1.0 <= v <= 1.0 for v in rho.values())
    scores = next(d.value for d in at.dataframe if "alignment from" in d.value.columns)
    assert list(scores["alignment from"]) == ["attention", "rollout", "IG"]
    assert scores["aer"].between(0, 1).all()
    per_word = next(d.value for d in at.dataframe if "target word" in d.value.columns)
    assert list(per_word["target word"]) == ["The", "dog", "sleeps", "."]


def test_opens_on_the_embedded_default_model(monkeypatch):
    from aligndebug.models import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "config.json").exists():
        pytest.skip("the embedded default model is not in this checkout")
    monkeypatch.delenv("ALIGNDEBUG_MODEL", raising=False)
    at = AppTest.from_file(APP, default_timeout=300).run()
    no_crash(at)
    assert errors(at) == []
    assert at.text_input(key="model").value == "default"
    # the view it opens on is the one measured best for this model (naive rows of layer 1)
    assert at.radio(key="method-default").value == "naive"
    assert at.selectbox(key="layer-default").value == 1
    assert "Model translation" in " ".join(m.value for m in at.markdown)
    assert [t.label for t in at.tabs] == TABS and charts_in(at.tabs[0]) >= 2


def test_testset_without_translations_is_translated(app, testset):
    at = _run_testset(app.run(), {"src": testset["src"], "ref": testset["ref"]})
    no_crash(at)
    assert errors(at) == []
    shown = {m.label: m.value for m in at.metric}
    assert shown["Sentences"] == "4" and "BLEU" in shown and "AER" not in shown
    table = at.dataframe[0].value
    assert sorted(table["source"]) == sorted(testset["src"].read_text(encoding="utf-8").splitlines())


def test_testset_keeps_a_source_too_long_for_the_model(app, testset, tmp_path):
    """As `aligndebug triage`, the page does not stop at a sentence the model cannot take: it says how many
    there were, and the row is in the table, flagged with the reason."""
    lines = testset["src"].read_text(encoding="utf-8").splitlines()
    lines[1] = " ".join(["Hund"] * (tm.bundle("marian").model.config.max_position_embeddings + 5))
    src = tmp_path / "long.src"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    at = _run_testset(app.run(), {"src": src})
    no_crash(at)
    assert errors(at) == []
    assert any("could not take 1 sentence(s) (too_long_for_model 1)" in w.value for w in at.warning)
    table = at.dataframe[0].value
    assert len(table) == len(lines)
    assert list(table.loc[table["id"] == 1, "flags"])[0].startswith("too_long_for_model")


def test_testset_from_uploads(app, testset):
    at = app.run()
    at.radio(key="page").set_value("Test set").run()
    assert at.radio(key="ts_how").value == "Upload"
    for key in ("src", "tgt", "gold"):
        at.file_uploader(key=f"up-{key}").upload(testset[key].name, testset[key].read_bytes(), "text/plain")
    at.run()
    at.button(key="ts_go").click()
    at.run()
    no_crash(at)
    assert errors(at) == []
    shown = {m.label: m.value for m in at.metric}
    assert shown["Sentences"] == "4" and 0.0 <= float(shown["AER"]) <= 1.0
    assert any("test.gold" in c.value for c in at.caption)  # the gold is described by the uploaded name


def test_testset_from_the_registry(app):
    """A named set brings its own files, format and index base (WPT ro-en: a pairs file, 1-based gold)."""
    at = app.run()
    at.radio(key="page").set_value("Test set").run()
    at.radio(key="ts_how").set_value("Named test set").run()
    at.selectbox(key="ts_name").set_value("wpt-roen").run()
    at.number_input(key="ts_limit").set_value(3)
    at.button(key="ts_go").click()
    at.run()
    no_crash(at)
    assert errors(at) == []
    shown = {m.label: m.value for m in at.metric}
    assert shown["Sentences"] == "3" and 0.0 <= float(shown["AER"]) <= 1.0
    assert any("roen.gold" in c.value and "1-based (given)" in c.value for c in at.caption)


@pytest.mark.parametrize("path", ["/etc/passwd", "{tmp}/../outside.txt", "~/.bashrc", "{tmp}/link"])
def test_server_paths_outside_the_allowed_folders_are_refused(app, tmp_path, path):
    (tmp_path.parent / "outside.txt").write_text("secret\n", encoding="utf-8")
    (tmp_path / "link").symlink_to("/etc/passwd")  # a link inside an allowed folder may not lead out
    at = _run_testset(app.run(), {"src": path.format(tmp=tmp_path)})
    no_crash(at)
    assert any("outside the folders the app may read" in e for e in errors(at)), errors(at)
    assert "root:" not in " ".join(str(getattr(x, "value", "")) for x in at.main.children.values())
    assert not at.dataframe


def test_server_paths_are_off_when_the_app_listens_beyond_this_machine(tiny_marian, monkeypatch):
    monkeypatch.setenv("ALIGNDEBUG_MODEL", tiny_marian)
    with listening_on("0.0.0.0"):
        at = AppTest.from_file(APP, default_timeout=300).run()
        at.radio(key="page").set_value("Test set").run()
    no_crash(at)
    assert "Path on the server" not in at.radio(key="ts_how").options
    assert any("Reading files by server path is off" in c.value for c in at.caption)


def test_uploads_leave_no_files_behind(app, testset, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    at = app.run()
    at.radio(key="page").set_value("Test set").run()
    for key in ("src", "tgt"):
        at.file_uploader(key=f"up-{key}").upload(testset[key].name, testset[key].read_bytes(), "text/plain")
    at.run()
    at.button(key="ts_go").click()
    at.run()
    no_crash(at)
    assert {m.label: m.value for m in at.metric}["Sentences"] == "4"
    assert list(scratch.iterdir()) == []


def test_user_text_is_not_read_as_markdown(app):
    at = analyse(app.run(), "Der Hund * kostet $5 _ .", "The dog * costs $5 _ .")
    no_crash(at)
    shown = next(m.value for m in at.markdown if m.value.startswith("**Source**"))
    assert "Hund \\* kostet \\$5 \\_ \\." in shown and "costs \\$5" in shown


def test_alti_view_beside_rollout_with_its_caution(app):
    at = analyse(app.run(), "Der Hund schläft .", "The dog sleeps .", "0-0 1-1 2-2 3-3")
    no_crash(at)
    assert errors(at) == []
    tab = at.tabs[2]
    assert any(m.value == "**ALTI+ source contribution**" for m in tab.markdown)
    assert charts_in(tab) >= 3  # attention, rollout and ALTI+ before any IG
    captions = [c.value for c in tab.caption]
    assert any("Contribution is not causation" in c for c in captions)
    share = next(c for c in captions if "comes from the source" in c)
    assert re.search(r"\d+% on average", share)
