"""Chart builders and exports on a hand-made Record whose attention is known cell by cell."""

from __future__ import annotations

import ast
import csv
import io
import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from aligndebug import charts, export, views
from aligndebug.align import align_record, word_matrix
from aligndebug.gold import GoldAlignment
from aligndebug.metrics import count_links
from aligndebug.record import Record

# source words "das Haus das" (a repeated word), tokens ▁das ▁Ha us ▁das </s>
SRC_TOKENS = ["▁das", "▁Ha", "us", "▁das", "</s>"]
SRC_WIDS = np.array([0, 1, 1, 2, -1])
# target words "the house the"; labels ▁the ▁house ▁the </s>; decoder input <pad> ▁the ▁house ▁the
LABELS = ["▁the", "▁house", "▁the", "</s>"]
DEC = ["<pad>", "▁the", "▁house", "▁the"]
TGT_WIDS = np.array([0, 1, 2, -1])


def _row(peak: int, s: int = 5, mass: float = 0.6) -> np.ndarray:
    r = np.full(s, (1 - mass) / (s - 1))
    r[peak] = mass
    return r


def make_record() -> Record:
    """Shift-Att rows 1, 2, 3 peak at tokens 0 (das#0), 1 (Ha), 3 (das#2) in every layer/head, so the
    predicted word links are {(0,0), (1,1), (2,2)}; head 1 of layer 0 instead peaks at token 2 ('us')
    for target 0, which moves nothing at word level for the mean but does for that head."""
    L, H, T, S = 2, 2, 4, 5
    base = np.stack([_row(4), _row(0), _row(1), _row(3)])  # row 0 (naive for target 0) looks at </s>
    cross = np.broadcast_to(base, (L, H, T, S)).copy()
    cross[0, 1, 1] = _row(2, mass=0.9)  # layer 0, head 1: target 'the'#0 read from 'us' (word 1)
    enc = np.broadcast_to(np.eye(S) * 0.5 + 0.5 / S, (L, H, S, S)).copy()
    dec = np.tril(np.ones((T, T)))
    dec = dec / dec.sum(axis=1, keepdims=True)
    dec = np.broadcast_to(dec, (L, H, T, T)).copy()
    logp = np.log(np.array([0.5, 0.25, 0.8, 0.9]))
    return Record(
        source="das Haus das", target="the house the", src_words=["das", "Haus", "das"],
        tgt_words=["the", "house", "the"], src_tokens=SRC_TOKENS, dec_tokens=DEC, label_tokens=LABELS,
        src_ids=np.arange(5), dec_ids=np.array([9, 5, 6, 5]), label_ids=np.array([5, 6, 5, 0]),
        src_word_ids=SRC_WIDS, tgt_word_ids=TGT_WIDS, token_logprobs=logp.astype(np.float32),
        cross=cross.astype(np.float32), enc_self=enc.astype(np.float32), dec_self=dec.astype(np.float32))


# predicted {(0,0),(1,1),(2,2)}; gold: (0,0) sure, (1,1) possible, (1,2) sure -> correct, correct (possible),
# spurious (2,2), missed (1,2)
GOLD = GoldAlignment.from_links(sure=[(0, 0), (1, 2)], possible=[(1, 1)])


def datasets(chart) -> tuple[dict, dict[str, list[dict]]]:
    spec = chart.to_dict()
    return spec, spec.get("datasets", {})


def layer_values(spec: dict, data: dict, mark: str) -> list[list[dict]]:
    """Inline values of every layer (or the chart) whose mark type is `mark`."""
    out = []
    for layer in spec.get("layer", [spec]):
        m = layer.get("mark")
        mtype = m["type"] if isinstance(m, dict) else m
        if mtype == mark:
            out.append(data[(layer.get("data") or spec["data"])["name"]])
    return out


def marked(spec: dict, data: dict) -> list[dict]:
    """Cells the point layer draws: it shares the cells' data and keeps those with a link status."""
    (cells,) = layer_values(spec, data, "point")
    assert spec["layer"][1]["transform"] == [{"filter": "isValid(datum.status)"}]
    return [c for c in cells if c.get("status")]


def axis_labels(spec: dict, channel: str) -> list[str]:
    enc = spec["layer"][0]["encoding"] if "layer" in spec else spec["encoding"]
    expr = enc[channel]["axis"]["labelExpr"]
    return json.loads(expr[: expr.rindex("[datum.value]")])


@pytest.fixture(scope="module")
def rec() -> Record:
    return make_record()


def test_link_status_against_sure_and_possible():
    pred = {(0, 0), (1, 1), (2, 2)}
    assert charts.link_status(pred, GOLD) == {
        (0, 0): charts.CORRECT, (1, 1): charts.CORRECT_POSSIBLE, (2, 2): charts.SPURIOUS, (1, 2): charts.MISSED}
    assert charts.link_status(pred, None) == {p: charts.ALIGNED for p in pred}
    only_possible = GoldAlignment.from_links(sure=[], possible=[(0, 1)])
    assert charts.link_status(set(), only_possible) == {(0, 1): charts.POSSIBLE}


def test_word_heatmap_cells_order_and_gold_marks(rec):
    spec, data = datasets(charts.alignment_heatmap(rec, layer=1, head="mean", gold=GOLD))
    (cells,) = layer_values(spec, data, "rect")
    assert len(cells) == 3 * 3
    # sentence order and both 'das' kept apart: labels by position, not by text
    assert axis_labels(spec, "x") == ["das", "Haus", "das"]
    assert axis_labels(spec, "y") == ["the", "house", "the"]
    assert spec["layer"][0]["encoding"]["x"]["sort"] == "ascending"
    assert {(c["src"], c["tgt"]) for c in cells} == {(x, y) for x in range(3) for y in range(3)}
    # values are the pooled word matrix (sum over 'Ha'+'us' for Haus)
    wm = word_matrix(rec, "shift-att", 1, "mean")
    for c in cells:
        assert c["value"] == pytest.approx(wm[c["tgt"], c["src"]], abs=1e-4)
    assert next(c for c in cells if (c["src"], c["tgt"]) == (1, 1))["value"] == pytest.approx(0.6 + 0.1, abs=1e-4)
    marks = marked(spec, data)
    got = {(m["src"], m["tgt"]): m["status"] for m in marks}
    assert got == {(0, 0): "correct", (1, 1): "correct (possible)", (2, 2): "spurious", (1, 2): "missed"}
    assert {m["source"] for m in marks if m["src"] in (0, 2)} == {"das"}


def test_heatmap_without_gold_marks_the_extracted_alignment(rec):
    spec, data = datasets(charts.alignment_heatmap(rec, layer=0, head=1))
    marks = marked(spec, data)
    links = align_record(rec, layer=0, head=1)
    assert links == {(1, 0), (1, 1), (2, 2)}  # the head that reads 'the'#0 from 'us'
    assert {(m["src"], m["tgt"]) for m in marks} == links
    assert {m["status"] for m in marks} == {"aligned"}


def test_subword_heatmap_uses_tokens_and_judges_by_word_pairs(rec):
    spec, data = datasets(charts.alignment_heatmap(rec, layer=1, level="subword", gold=GOLD))
    (cells,) = layer_values(spec, data, "rect")
    assert len(cells) == 3 * 5  # target word tokens x all encoder tokens (</s> included)
    assert axis_labels(spec, "x") == SRC_TOKENS
    assert axis_labels(spec, "y") == ["▁the", "▁house", "▁the"]
    marks = marked(spec, data)
    got = {(m["src"], m["tgt"]): m["status"] for m in marks}
    # token links: (0,0) das-the correct, (1,1) Ha-house possible, (3,2) das#2-the#2 spurious;
    # the missed word pair Haus-the#2 covers both of its token cells
    assert got == {(0, 0): "correct", (1, 1): "correct (possible)", (3, 2): "spurious",
                   (1, 2): "missed", (2, 2): "missed"}


def test_gold_out_of_range_is_a_clear_error(rec):
    bad = GoldAlignment.from_links(sure=[(5, 0)])
    with pytest.raises(ValueError, match="out of range"):
        charts.alignment_heatmap(rec, gold=bad)


def test_generic_matrix_rows_and_diverging_scale(rec):
    full = np.zeros((4, 5))
    full[:, 1:3] = -1.0  # Ha, us
    full[:, 0] = 2.0
    spec, data = datasets(charts.source_target_heatmap(rec, full, value_title="IG", method="naive"))
    assert spec["layer"][0]["encoding"]["color"]["scale"]["scheme"] == "redblue"
    (cells,) = layer_values(spec, data, "rect")
    assert len(cells) == 9
    assert next(c for c in cells if (c["src"], c["tgt"]) == (1, 0))["value"] == pytest.approx(-2.0)  # Ha + us
    already = full[rec.target_positions]
    spec2, data2 = datasets(charts.source_target_heatmap(rec, already, value_title="IG"))
    assert layer_values(spec2, data2, "rect")[0] == cells
    with pytest.raises(ValueError, match="rows"):
        charts.source_target_heatmap(rec, np.zeros((2, 5)))
    with pytest.raises(ValueError, match="source tokens"):
        charts.source_target_heatmap(rec, np.zeros((4, 3)))


def test_matrix_heatmap_checks_shapes():
    with pytest.raises(ValueError, match="does not match"):
        charts.matrix_heatmap(np.zeros((2, 3)), ["a", "b"], ["x", "y"])
    spec, data = datasets(charts.matrix_heatmap(np.ones((2, 3)), ["a", "b", "a"], ["x", "y"], links={(2, 1)}))
    marks = marked(spec, data)
    assert [(m["src"], m["tgt"], m["source"]) for m in marks] == [(2, 1, "a")]
    with pytest.raises(ValueError, match="outside"):
        charts.matrix_heatmap(np.ones((2, 3)), ["a", "b", "c"], ["x", "y"], links={(3, 0)})


def test_layer_head_grid_has_every_panel(rec):
    chart = charts.layer_head_grid(rec)
    spec = chart.to_dict()
    values = spec["datasets"][spec["data"]["name"]]
    assert len(values) == 2 * 3 * 3 * 3  # layers x (heads + mean) x target words x source words
    assert spec["facet"]["column"]["sort"] == ["head 0", "head 1", "mean"]
    assert spec["facet"]["row"]["sort"] == "ascending"
    aligned = [(v["layer"], v["head"], v["src"], v["tgt"]) for v in values if v["aligned"]]
    assert len(aligned) == 2 * 3 * 3  # one argmax per target word per panel
    assert (0, "head 1", 1, 0) in aligned and (0, "head 0", 0, 0) in aligned
    sub = charts.layer_head_grid(rec, level="subword").to_dict()
    sub_vals = sub["datasets"][sub["data"]["name"]]
    assert len(sub_vals) == 2 * 3 * 3 * 5
    assert not any(v["aligned"] and v["src"] == 4 for v in sub_vals)  # </s> is never an alignment


def test_layer_head_aer_matches_single_head_alignments(rec):
    scores = views.layer_head_aer(rec, GOLD)
    assert set(scores) == {(l, h) for l in range(2) for h in (0, 1, "mean")}
    for (l, h), aer in scores.items():
        assert aer == pytest.approx(count_links(align_record(rec, layer=l, head=h), GOLD).aer)
    spec, data = datasets(charts.layer_head_scores(scores))
    (cells,) = layer_values(spec, data, "rect")[:1]
    best = [c for c in cells if c["best"]]
    assert len(best) == 1 and best[0]["value"] == pytest.approx(min(scores.values()), abs=1e-4)


def test_self_attention_views(rec):
    spec, data = datasets(charts.self_attention_heatmap(rec, "encoder", layer=0))
    assert len(data[spec["data"]["name"]]) == 25 and axis_labels(spec, "x") == SRC_TOKENS
    mat, labels = views.self_attention_matrix(rec, "decoder", layer=0, level="word")
    assert labels == ["the", "house", "the"]
    # decoder input rows: <pad> ▁the ▁house ▁the -> words the, house, the are inputs at rows 1, 2, 3
    assert mat.shape == (3, 3)
    assert mat[0] == pytest.approx([1 / 2, 0, 0])  # row 1 attends to <pad> and ▁the equally; <pad> drops
    assert mat[2] == pytest.approx([1 / 4, 1 / 4, 1 / 4])
    with pytest.raises(ValueError, match="side"):
        views.self_attention_matrix(rec, "cross")


def test_token_signals_and_chart(rec):
    ts = views.token_signals(rec, layer=1, level="word")
    assert ts["labels"] == ["the", "house", "the", "</s>"]
    assert ts["logprob"][:3] == pytest.approx(np.log([0.5, 0.25, 0.8]), abs=1e-5)
    assert ts["logprob"][3] == pytest.approx(math.log(0.9), abs=1e-5)
    assert math.isnan(ts["entropy"][3])
    # row over words: the#0 = [0.6, 0.2, 0.1] of 0.9 total -> renormalised entropy / log 3
    p = np.array([0.6, 0.2, 0.1]) / 0.9
    assert ts["entropy"][0] == pytest.approx(-(p * np.log(p)).sum() / math.log(3), abs=1e-4)
    sub = views.token_signals(rec, layer=1, level="subword")
    assert sub["labels"] == ["▁the", "▁house", "▁the", "</s>"]
    chart = charts.token_chart(ts["labels"], ts["logprob"], [0.9, 0.1, 0.85, float("nan")],
                               entropy_threshold=0.8, logprob_threshold=-1.0)
    spec = chart.to_dict()
    values = spec["datasets"][spec["vconcat"][0]["layer"][0]["data"]["name"]]
    assert [v["token"] for v in values] == ["the", "house", "the", "</s>"]
    assert [v["attention"] for v in values] == ["scattered", "ok", "scattered", "ok"]
    assert [v["confidence"] for v in values] == ["ok", "low confidence", "ok", "ok"]
    assert values[3]["entropy"] is None
    # the two panels share one x domain, so </s> (no entropy) keeps them aligned
    top_x = spec["vconcat"][0]["layer"][0]["encoding"]["x"]["scale"]["domain"]
    bottom_x = spec["vconcat"][1]["layer"][0]["encoding"]["x"]["scale"]["domain"]
    assert top_x == bottom_x == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="equal lengths"):
        charts.token_chart(["a"], [0.0, 1.0], [0.5])


def test_coverage_values_and_flags(rec):
    cov, content = views.coverage_values(rec, layer=1)
    assert cov.shape == (3,) and content.tolist() == [False, True, False]  # 'das' is a function word
    chart = charts.coverage_chart(["Hund", "der", "Ball", "rot"], [0.05, 0.0, 1.2, 3.0], [True, False, True, True],
                                  low=0.2, high=2.5)
    spec = chart.to_dict()
    values = spec["datasets"][spec["layer"][0]["data"]["name"]]
    assert [v["word"] for v in values] == ["Hund", "der", "Ball", "rot"]
    assert [v["flag"] for v in values] == ["unattended", "function word", "ok", "over-attended"]


# ----------------------------------------------------------------------------- exports

def test_png_and_svg_export(rec):
    chart = charts.alignment_heatmap(rec, layer=1, gold=GOLD)
    png = export.chart_to_png(chart, scale=1)
    assert png[:8] == export.PNG_MAGIC
    svg = export.chart_to_svg(chart)
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    texts = [t.text for t in root.iter() if t.tag.endswith("text") and t.text]
    # the label expression resolved to words in the image, the repeated word twice, in order
    axis = [t for t in texts if t in ("das", "Haus", "the", "house")]
    assert axis.count("das") == 2 and axis.count("the") == 2 and "Haus" in axis
    assert axis.index("das") < axis.index("Haus")


def test_a_word_vega_cannot_take_as_a_string_is_still_drawn():
    # Vega's expression parser fails on the string literal "if": before, no chart of such a sentence rendered
    words = ["if", "it", "rains", "if"]
    assert charts.vega_strings(words) == '["i" + "f", "it", "rains", "i" + "f"]'
    assert charts.vega_strings(["\"if\"", "If", 3]) == '["\\"if\\"", "If", "3"]'
    svg = ET.fromstring(export.chart_to_svg(charts.coverage_chart(words, [1.0, 0.1, 2.0, 0.5])))
    texts = [t.text for t in svg.iter() if t.tag.endswith("text") and t.text]
    assert texts.count("if") == 2 and texts.index("it") < texts.index("rains")
    grid = charts.learned_heatmap(np.full((4, 5), 0.2), words, ["when", "if", "it", "rains"], [(0, 1)])
    assert export.chart_to_png(grid, scale=1)[:8] == export.PNG_MAGIC


def test_words_with_control_characters_are_drawn_as_visible_signs():
    assert export.printable_text("a\x00b\tc\x7f") == "a\u2400b\u2409c\u2421"
    assert export.printable_text("a\u2028b\u2029c\x85") == "a\ufffdb\ufffdc\ufffd"
    assert export.printable_text("quo\"te \u200fرت 😀") == "quo\"te \u200fرت 😀"  # printable text as it is
    # vl-convert aborts the process (a Rust panic) on a NUL in an image's text: try it in a child process
    code = ("import xml.etree.ElementTree as ET; from aligndebug import charts, export\n"
            "words = ['a\\x00b', 'x\\u2028y', 'back\\\\slash', 'it\\'s', 'if']\n"
            "svg = ET.fromstring(export.chart_to_svg(charts.coverage_chart(words, [1.0, 2.0, 0.5, 1.5, 1.0])))\n"
            "print([t.text for t in svg.iter() if t.tag.endswith('text') and t.text])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    shown = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert {"a\u2400b", "x\ufffdy", "back\\slash", "it's", "if"} <= set(shown)


def test_every_chart_renders(rec):
    built = [charts.layer_head_grid(rec), charts.self_attention_heatmap(rec, "decoder"),
             charts.token_chart(**views.token_signals(rec)), charts.coverage_chart(rec.src_words, [1, 0.1, 2])]
    for chart in built:
        assert export.chart_to_png(chart, scale=1)[:8] == export.PNG_MAGIC


def test_record_json_roundtrip(rec):
    back = Record.from_json(export.record_to_json(rec).decode("utf-8"))
    assert back.src_words == rec.src_words
    np.testing.assert_array_equal(back.cross, rec.cross)


def test_rows_to_jsonl_and_csv():
    rows = [{"id": 0, "score": float("nan"), "flags": ["scattered", "omission"], "source": "ein , Test"},
            {"id": 1, "score": np.float32(2.5), "extra": {"a": 1}, "source": "zwei"}]
    lines = export.rows_to_jsonl(rows).decode("utf-8").splitlines()
    assert [json.loads(x) for x in lines] == [
        {"id": 0, "score": None, "flags": ["scattered", "omission"], "source": "ein , Test"},
        {"id": 1, "score": 2.5, "extra": {"a": 1}, "source": "zwei"}]
    table = list(csv.DictReader(io.StringIO(export.rows_to_csv(rows).decode("utf-8"))))
    assert list(table[0]) == ["id", "score", "flags", "source", "extra"]
    assert table[0]["score"] == "" and json.loads(table[0]["flags"]) == ["scattered", "omission"]
    assert table[0]["source"] == "ein , Test" and json.loads(table[1]["extra"]) == {"a": 1}
