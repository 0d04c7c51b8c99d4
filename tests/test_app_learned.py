"""The one-sentence page's learned aligner: offered for the embedded model, drawn beside raw attention with the gold,
with the target words where their argmax source words disagree marked and counted (the numbers are the package's);
the link rule selector reaches raw attention too. Plus the plain functions behind it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("streamlit.testing.v1")
from streamlit.testing.v1 import AppTest  # noqa: E402

from aligndebug import charts, views  # noqa: E402
from aligndebug.gold import parse_pharaoh_line  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")
SRC, REF, GOLD = "Der Hund schläft auf dem Sofa .", "The dog sleeps on the sofa .", "0-0 1-1 2-2 3-3 4-4 5-5 6-6"


def charts_under(node) -> list[dict]:
    """The Vega-Lite specs under a node of the AppTest element tree, in page order."""
    out = []
    for child in getattr(node, "children", {}).values():
        if getattr(child, "type", None) == "vega_lite_chart":
            out.append(json.loads(child.proto.spec))
        out += charts_under(child)
    return out


def y_labels(spec: dict) -> list[str] | None:
    """The y axis labels of a heatmap (None for charts of another shape, e.g. the faceted grid)."""
    for layer in spec.get("layer", [spec]):
        axis = layer.get("encoding", {}).get("y", {}).get("axis", {})
        if "labelExpr" in axis:
            return json.loads(axis["labelExpr"].rsplit("[datum.value]", 1)[0])
    return None


# ------------------------------------------------------------------------------------ plain functions

def test_argmax_sources_and_disagreements_by_hand():
    att = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.0, 0.0, 0.0]])
    # learned: last column is "no source"
    lea = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1], [0.1, 0.1, 0.1, 0.7], [0.1, 0.6, 0.2, 0.1]])
    assert views.argmax_sources(att).tolist() == [0, 1, 2, -1]  # an all-zero row has no argmax
    assert views.argmax_sources(lea, null=True).tolist() == [0, 2, -1, 1]  # row 2: no source wins
    gold = SimpleNamespace(sure={(2, 1)}, possible={(2, 1)})
    dis = views.disagreements(att, lea, ["a", "b", "c"], ["w", "x", "y", "z"], gold)
    # only target 1: 0 agrees, 2 has no learned source, 3 has no attention
    assert [(d["target"], d["attention looks at"], d["learned links"]) for d in dis] == [(1, "b", "c")]
    assert dis[0]["learned in gold"] is True and dis[0]["attention in gold"] is False
    assert views.marked_labels(["w", "x", "y"], [1]) == ["w", "x ≠", "y"]
    with pytest.raises(ValueError, match="do not fit"):
        views.disagreements(att, att, ["a", "b", "c"], ["w", "x", "y", "z"])


def test_learned_vs_attention_on_a_tiny_model(bundle, tmp_path):
    from aligndebug.extract import extract
    from aligndebug.learned_train import train_aligner

    de, en = "Der Hund schläft .", "The dog sleeps ."
    aligner = train_aligner(bundle, [de.split()] * 4, [en.split()] * 4, [{(i, i) for i in range(4)}] * 4,
                            tmp_path / "al", epochs=1, batch_size=2, progress=False, log=lambda m: None)
    rec = extract(bundle, [de], [en])[0]
    gold = parse_pharaoh_line("0-0 1-1 2-2 3-3", 0, (4, 4))
    v = views.learned_vs_attention(bundle, aligner, rec, layer=0, method="naive", decode="bidir", threshold=0.2,
                                   gold=gold)
    assert v["rule"] == "bidir" and v["threshold"] == 0.2 and v["matrix"].shape == (4, 5)
    np.testing.assert_allclose(v["matrix"].sum(1), 1.0, rtol=1e-4)
    assert v["links"] == aligner.align(bundle, [de], [en], rule="bidir", threshold=0.2)[0]
    assert v["marked"] == [d["target"] for d in v["disagreements"]]
    chart = charts.learned_heatmap(v["matrix"], rec.src_words, rec.tgt_words, v["links"], gold=gold, marked=[1])
    assert y_labels(chart.to_dict())[1] == "dog ≠"


# ------------------------------------------------------------------------------------ the app

@pytest.fixture
def embedded(monkeypatch):
    from aligndebug.learned import DEFAULT_ALIGNER_DIR
    from aligndebug.models import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "config.json").exists() or not (DEFAULT_ALIGNER_DIR / "aligner.json").exists():
        pytest.skip("the embedded model or its aligner is not in this checkout")
    monkeypatch.setenv("ALIGNDEBUG_MODEL", "default")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return AppTest.from_file(APP, default_timeout=300)


def test_learned_beside_raw_attention_with_disagreements_marked(embedded):
    from aligndebug.extract import extract
    from aligndebug.learned import load_aligner
    from aligndebug.models import load_model

    at = embedded.run()
    assert not at.exception
    assert "learned" in at.radio(key="method-default").options  # the embedded model ships an aligner
    at.radio(key="method-default").set_value("learned")
    at.text_area(key="src").set_value(SRC)
    at.text_input(key="ref").set_value(REF)
    at.text_input(key="gold").set_value(GOLD)
    next(b for b in at.button if b.label == "Analyse").click()
    at = at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == []
    assert any(h.value == "Learned aligner beside raw attention" for h in at.subheader)
    # the package's numbers: raw attention read with the model's own view (naive, layer 1), the shipped aligner
    bundle = load_model("default")
    rec = extract(bundle, [SRC], [REF])[0]
    gold = parse_pharaoh_line(GOLD, 0, (7, 7))
    v = views.learned_vs_attention(bundle, load_aligner(None, bundle), rec, layer=1, method="naive", gold=gold)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Target words where they disagree"] == f"{len(v['disagreements'])} of 7"
    from aligndebug.metrics import count_links

    assert shown["AER"] == f"{count_links(v['links'], gold).aer:.2f}"  # the page scores the learned links
    specs = charts_under(at.tabs[0])
    marked = [w + " ≠" if j in v["marked"] else w for j, w in enumerate(rec.tgt_words)]
    side_by_side = [s for s in specs if y_labels(s) == marked]
    assert len(side_by_side) == 2  # raw attention and learned, both with the marks
    assert any(s.get("title") == f"{v['rule']}" + ("" if v["threshold"] is None else f" @ {v['threshold']:g}")
               for s in side_by_side)
    if v["disagreements"]:
        table = at.dataframe[0].value
        assert list(table["target word"]) == [d["target word"] for d in v["disagreements"]]
    sig = next(c.value for c in at.caption if c.value.startswith("Alignment settings"))
    assert "method:learned:default" in sig and f"decode:{v['rule']}" in sig


def test_link_rule_reaches_raw_attention(embedded):
    from aligndebug.align import align_record
    from aligndebug.extract import extract
    from aligndebug.models import load_model

    at = embedded.run()
    at.selectbox(key="decode").set_value("bidir")
    at.run()
    at.slider(key="threshold-bidir").set_value(0.2)
    at.text_area(key="src").set_value(SRC)
    at.text_input(key="ref").set_value(REF)
    next(b for b in at.button if b.label == "Analyse").click()
    at = at.run()
    assert not at.exception and [e.value for e in at.error] == []
    rec = extract(load_model("default"), [SRC], [REF])[0]
    links = align_record(rec, "naive", 1, "mean", 0.2, "bidir")
    assert any(c.value.strip() == " ".join(f"{s}-{t}" for s, t in sorted(links)) for c in at.code)
    sig = next(c.value for c in at.caption if c.value.startswith("Alignment settings"))
    assert "thr:0.2|decode:bidir" in sig


def test_typed_aligner_folder_follows_the_server_path_policy(model_dir, bundle, tmp_path, tmp_path_factory,
                                                           monkeypatch):
    from streamlit import config

    from aligndebug.learned_train import train_aligner

    words = [s.split() for s in ("Der Hund schläft .", "Die Katze sitzt .")]
    outside = tmp_path_factory.mktemp("elsewhere") / "al"  # not under ALIGNDEBUG_APP_ROOTS
    for folder in (tmp_path / "al", outside):
        train_aligner(bundle, words, words, [{(i, i) for i in range(4)}] * 2, folder, epochs=1, batch_size=2,
                      progress=False, log=lambda m: None)
    monkeypatch.setenv("ALIGNDEBUG_MODEL", str(model_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ALIGNDEBUG_APP_ROOTS", str(tmp_path))
    before = config.get_option("server.address")
    config.set_option("server.address", "localhost")
    try:
        at = AppTest.from_file(APP, default_timeout=300).run()
        method = next(r.key for r in at.radio if r.key.startswith("method-"))
        assert "learned" not in at.radio(key=method).options  # a model folder ships no aligner
        at.radio(key="al_how").set_value("folder").run()
        at.text_input(key="al_path").set_value(str(outside)).run()
        assert "learned" not in at.radio(key=method).options
        assert any("outside the folders the app may read" in c.value for c in at.sidebar.caption)
        at.text_input(key="al_path").set_value(str(tmp_path / "al")).run()
        assert "learned" in at.radio(key=method).options
        at.radio(key=method).set_value("learned").run()
        assert not at.exception and [e.value for e in at.error] == []
        assert any(h.value == "Learned aligner beside raw attention" for h in at.subheader)
        assert "Target words where they disagree" in {m.label for m in at.metric}
        # the test set's triage reads the sidebar's aligner too
        (tmp_path / "s.de").write_text("Der Hund schläft .\nDie Katze sitzt .\nDer Hund sitzt .\n", encoding="utf-8")
        (tmp_path / "s.en").write_text("The dog sleeps .\nThe cat sits .\nThe dog sits .\n", encoding="utf-8")
        at.radio(key="page").set_value("Test set").run()
        at.radio(key="ts_how").set_value("Path on the server").run()
        at.text_input(key="path-src").set_value(str(tmp_path / "s.de"))
        at.text_input(key="path-tgt").set_value(str(tmp_path / "s.en"))
        at.button(key="ts_go").click()
        at = at.run()
        assert not at.exception and [e.value for e in at.error] == []
        assert any("learned aligner's signals: al" in c.value for c in at.caption)
    finally:
        config.set_option("server.address", before)
