"""The app's Compare page (two models, one sentence) through streamlit.testing.v1.AppTest, on tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit.testing.v1")
from streamlit.testing.v1 import AppTest  # noqa: E402

import tiny_models as tm  # noqa: E402
from aligndebug.align import align_record, default_layer  # noqa: E402
from aligndebug.extract import extract  # noqa: E402
from aligndebug.gold import parse_pharaoh_line  # noqa: E402
from aligndebug.metrics import count_links  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")
SRC, REF, GOLD = "Der Hund schläft .", "The dog sleeps .", "0-0 1-1 2-2 3-3"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    return {f: str(tm.save(f, root / f"tiny-{f}")) for f in ("marian", "t5")}


@pytest.fixture
def app(models, monkeypatch):
    from streamlit import config

    monkeypatch.setenv("ALIGNDEBUG_MODEL", models["marian"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = config.get_option("server.address")
    config.set_option("server.address", "localhost")
    try:
        yield AppTest.from_file(APP, default_timeout=300)
    finally:
        config.set_option("server.address", before)


def charts(at: AppTest) -> int:
    return len(at.get("vega_lite_chart")) if hasattr(at, "get") else 0


def open_compare(at: AppTest, model_b: str, reference: str = REF, gold: str = GOLD) -> AppTest:
    at.run()
    at.sidebar.radio(key="page").set_value("Compare").run()
    at.text_input(key="model_b").set_value(model_b)
    at.text_area(key="src").set_value(SRC)
    at.text_input(key="ref").set_value(reference)
    at.text_input(key="gold").set_value(gold)
    next(b for b in at.button if b.label == "Analyse").click()
    return at.run()


def test_same_model_twice_gives_zero_difference(app, models):
    at = open_compare(app, models["marian"])
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == []
    assert charts(at) == 3  # two heatmaps and the grid difference
    rec = extract(tm.bundle("marian"), [SRC], [REF])[0]
    aer = count_links(align_record(rec, "shift-att", default_layer(2), "mean"), parse_pharaoh_line(GOLD, 0, (4, 4))).aer
    shown = [m for m in at.metric if m.label == "AER"]
    assert [m.value for m in shown] == [f"{aer:.2f}"] * 2
    assert shown[1].delta == "+0.00"
    assert any("AER difference" in str(c.proto.spec) for c in at.get("vega_lite_chart"))


def test_two_families_and_no_reference(app, models):
    at = open_compare(app, models["t5"])
    assert not at.exception and [e.value for e in at.error] == []
    assert charts(at) == 3
    at = open_compare(app, models["t5"], reference="", gold="")
    assert not at.exception
    assert any("reference translation" in i.value for i in at.info)
    assert charts(at) == 0
