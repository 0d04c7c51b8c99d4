"""Altair chart builders: pure functions, a Record (or arrays) in, a chart out.

Conventions shared by every chart here:

* Cells are placed by *position* (integer fields ``src`` / ``tgt`` on ordinal axes) and
  the axis text is looked up from the position with a ``labelExpr``. Words therefore keep
  sentence order (never alphabetical) and a word that occurs twice gets two cells.
* Data is inlined as plain Python values (``alt.InlineData``), so charts of any size pass
  Altair's row limit and serialise to JSON without pandas dtypes; it is attached last
  (:func:`_attach`), because Altair copies and validates data on every method call.
* Matrices are ``[rows, cols]`` = ``[target side (y), source side (x)]``; links and gold
  pairs are ``(source index, target index)``, 0-based, as in Pharaoh lines.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import altair as alt
import numpy as np

from .align import attention_matrix, default_layer, target_token_word_ids
from .export import printable_text
from .record import Record
from .views import (check_gold_range, check_level, layer_head_values, marked_labels, self_attention_matrix,
                    source_target)

# Legend placement: beside the chart, or under it (narrow columns), where vertical legends sit side by side.
_LEGENDS = {"right": {"orient": "right"}, "bottom": {"orient": "bottom", "direction": "vertical", "gradientLength": 80}}

# Link status against gold alignments; the order is the legend order.
CORRECT, CORRECT_POSSIBLE, MISSED, SPURIOUS, POSSIBLE, ALIGNED = (
    "correct", "correct (possible)", "missed", "spurious", "possible, not predicted", "aligned")
STATUS_STYLE: dict[str, tuple[str, str]] = {  # status -> (colour, shape)
    ALIGNED: ("#d62728", "circle"),
    CORRECT: ("#1a9850", "circle"),
    CORRECT_POSSIBLE: ("#91cf60", "circle"),
    MISSED: ("#fd8d3c", "triangle-up"),
    SPURIOUS: ("#d62728", "cross"),
    POSSIBLE: ("#bdbdbd", "diamond"),
}
FLAG_COLOURS = {"ok": "#4c78a8", "scattered": "#d62728", "low confidence": "#d62728",
                "unattended": "#d62728", "over-attended": "#9467bd", "function word": "#bdbdbd"}


# ----------------------------------------------------------------------------- helpers

def vega_strings(values: Sequence[Any]) -> str:
    """A Vega expression array literal of `values` as labels (`printable_text`; JSON strings are valid literals).
    The word "if" is written as "i" + "f": Vega's expression parser (Vega 6.2, in vl-convert 1.9) fails on the
    string literal "if" ("Unrecognized signal name"), and with it every exported chart of a sentence that says
    "if"."""
    labels = [printable_text(str(v)) for v in values]
    return "[" + ", ".join('"i" + "f"' if t == "if" else json.dumps(t, ensure_ascii=False) for t in labels) + "]"


def _labels_expr(labels: Sequence[str]) -> str:
    """A Vega expression mapping an integer axis value to its label."""
    return f"{vega_strings(labels)}[datum.value]"


def _axis(labels: Sequence[str], title: str | None, orient: str | None = None, angle: int = 0) -> alt.Axis:
    kwargs: dict[str, Any] = {"labelExpr": _labels_expr(labels), "title": title, "labelAngle": angle,
                              "ticks": False, "domain": False, "labelLimit": 160,
                              "labelOverlap": False}  # every word is labelled, even when labels crowd
    if orient:
        kwargs["orient"] = orient
    return alt.Axis(**kwargs)


def _cell_size(n: int, cell: int | None, span: int = 520, lo: int = 12, hi: int = 34) -> int:
    """Pixel size of a cell: given, or fit `n` cells into about `span` pixels within [lo, hi]."""
    if cell:
        return int(cell)
    return int(max(lo, min(hi, span // max(n, 1))))


def _round(values: np.ndarray, digits: int = 5) -> list[float]:
    return [None if not np.isfinite(v) else round(float(v), digits) for v in np.asarray(values, dtype=np.float64).ravel()]


def link_status(pred: Iterable[tuple[int, int]], gold: Any | None) -> dict[tuple[int, int], str]:
    """Status of every cell worth marking: predicted links, and gold links nobody predicted.

    Without gold every predicted link is ``aligned``. With gold (an object with ``sure`` and
    ``possible`` sets of (source, target) pairs, possible ⊇ sure): a predicted link in Sure is
    ``correct``, in Possible only ``correct (possible)``, outside Possible ``spurious``; an
    unpredicted Sure link is ``missed``, an unpredicted Possible-only link ``possible, not predicted``.
    """
    pred = {(int(s), int(t)) for s, t in pred}
    if gold is None:
        return {p: ALIGNED for p in pred}
    sure = set(gold.sure)
    possible = set(gold.possible) | sure
    out: dict[tuple[int, int], str] = {}
    for p in pred:
        out[p] = CORRECT if p in sure else CORRECT_POSSIBLE if p in possible else SPURIOUS
    for p in sure - pred:
        out[p] = MISSED
    for p in possible - sure - pred:
        out[p] = POSSIBLE
    return out


def _cells(matrix: np.ndarray, x_labels: Sequence[str], y_labels: Sequence[str]) -> list[dict[str, Any]]:
    """One dict per cell (row-major: target y outer, source x inner)."""
    n_y, n_x = matrix.shape
    ys, xs = np.divmod(np.arange(n_y * n_x), n_x)
    vals = _round(matrix)
    xl = [str(x) for x in x_labels]
    yl = [str(y) for y in y_labels]
    return [{"src": int(x), "tgt": int(y), "source": xl[x], "target": yl[y], "value": v}
            for x, y, v in zip(xs.tolist(), ys.tolist(), vals)]


# ----------------------------------------------------------------------------- generic heatmap

def matrix_heatmap(
    matrix: np.ndarray,
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    *,
    title: str = "",
    value_title: str = "attention",
    x_title: str | None = "source",
    y_title: str | None = "target",
    links: Iterable[tuple[int, int]] | None = None,
    gold: Any | None = None,
    cell: int | None = None,
    diverging: bool | None = None,
    legend: str = "right",
) -> alt.Chart | alt.LayerChart:
    """Heatmap of ``matrix`` [len(y_labels), len(x_labels)] with optional link marks.

    ``legend`` "right" or "bottom" (for narrow places such as side-by-side columns).

    ``links``: (x, y) cells to mark as predicted alignments; ``gold`` (``sure``/``possible`` sets
    of (x, y)) turns the marks into correct / missed / spurious (see :func:`link_status`).
    ``diverging`` picks a red-blue scale centred on 0 (default: when the matrix has negative values,
    as Integrated Gradients does).
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape != (len(y_labels), len(x_labels)):
        raise ValueError(f"matrix shape {m.shape} does not match {len(y_labels)} y labels x {len(x_labels)} x labels")
    size = _cell_size(max(m.shape), cell)
    if diverging is None:
        diverging = bool(m.size) and float(np.nanmin(m)) < 0
    if diverging:
        bound = float(np.nanmax(np.abs(m))) if m.size else 1.0
        scale = alt.Scale(scheme="redblue", domain=[-bound, bound], reverse=True)
    else:
        scale = alt.Scale(scheme="blues", domainMin=0)
    x_enc = alt.X("src:O", axis=_axis(x_labels, x_title, "top", -45), sort="ascending")
    y_enc = alt.Y("tgt:O", axis=_axis(y_labels, y_title), sort="ascending")
    tooltip = [alt.Tooltip("source:N", title=x_title or "x"), alt.Tooltip("target:N", title=y_title or "y"),
               alt.Tooltip("value:Q", title=value_title, format=".3f"),
               alt.Tooltip("src:O", title=f"{x_title or 'x'} #"), alt.Tooltip("tgt:O", title=f"{y_title or 'y'} #")]
    cells = _cells(m, x_labels, y_labels)
    heat = alt.Chart().mark_rect().encode(
        x=x_enc, y=y_enc, color=alt.Color("value:Q", title=value_title, scale=scale), tooltip=tooltip)
    props = {"width": alt.Step(size), "height": alt.Step(size)}
    if title:
        props["title"] = title
    if legend not in _LEGENDS:
        raise ValueError(f"legend must be 'right' or 'bottom', not {legend!r}")
    if links is None and gold is None:
        return _attach(alt.layer(heat).properties(**props).configure_legend(**_LEGENDS[legend]), cells)
    status = link_status(links or (), gold)
    n_y, n_x = m.shape
    for (x, y), st in status.items():
        if not (0 <= x < n_x and 0 <= y < n_y):
            raise ValueError(f"link ({x}, {y}) is outside the {n_x} x {n_y} matrix "
                             f"(expected source index < {n_x} and target index < {n_y})")
        cells[y * n_x + x]["status"] = st  # cells are row-major
    used = [s for s in STATUS_STYLE if s in set(status.values())] or [ALIGNED]
    legend_title = "alignment" if gold is None else "vs gold"
    dots = alt.Chart().mark_point(filled=True, stroke="white", strokeWidth=0.8, opacity=1).encode(
        x=x_enc, y=y_enc,
        fill=alt.Fill("status:N", title=legend_title,
                      scale=alt.Scale(domain=used, range=[STATUS_STYLE[s][0] for s in used])),
        shape=alt.Shape("status:N", title=legend_title,
                        scale=alt.Scale(domain=used, range=[STATUS_STYLE[s][1] for s in used])),
        size=alt.value(max(20, int(size * size * 0.35))),
        tooltip=tooltip + [alt.Tooltip("status:N", title="link")]).transform_filter("isValid(datum.status)")
    return _attach(alt.layer(heat, dots).properties(**props).configure_legend(**_LEGENDS[legend]), cells)


def _attach(chart: Any, values: list[dict[str, Any]]) -> Any:
    """Give a finished chart its data in one step.

    Every Altair method call deep-copies and validates the chart's data, which for a few
    thousand cells costs seconds; attaching the data last (a plain attribute) costs nothing.
    """
    chart.data = {"values": values}  # a plain dict: alt.InlineData(...) would validate every row
    return chart


# ----------------------------------------------------------------------------- source x target views

class _CellGold:
    """Gold pairs moved into subword cell space, keeping the word-level verdict of each cell."""

    def __init__(self, sure: set, possible: set):
        self.sure, self.possible = sure, possible


def _subword_status_gold(rec: Record, token_mat: np.ndarray, gold: Any, links_tok: set[tuple[int, int]],
                         to_cells: Any) -> _CellGold:
    """Gold in token-cell space such that a token link is judged by its *word* pair.

    A missed word pair marks all its token cells as missed only when no token link lands in it.
    """
    tgt_ids = target_token_word_ids(rec)
    word_pred = {(int(rec.src_word_ids[x]), int(tgt_ids[y])) for x, y in links_tok}
    sure_w, poss_w = set(gold.sure), set(gold.possible) | set(gold.sure)
    sure_cells = to_cells(sure_w - word_pred) | {c for c in links_tok
                                                if (int(rec.src_word_ids[c[0]]), int(tgt_ids[c[1]])) in sure_w}
    poss_cells = to_cells(poss_w - word_pred) | {c for c in links_tok
                                                if (int(rec.src_word_ids[c[0]]), int(tgt_ids[c[1]])) in poss_w}
    return _CellGold(sure_cells, poss_cells | sure_cells)


def source_target_heatmap(
    rec: Record,
    matrix: np.ndarray,
    *,
    level: str = "word",
    method: str = "shift-att",
    title: str = "",
    value_title: str = "attention",
    show_links: bool = True,
    gold: Any | None = None,
    threshold: float | None = None,
    cell: int | None = None,
    legend: str = "right",
    decode: str | None = None,
    marked: Iterable[int] = (),
) -> alt.Chart | alt.LayerChart:
    """Heatmap of any target x source matrix of a Record (attention, rollout, Integrated Gradients).

    ``matrix`` is either ``[T, S]`` over all decoder rows (rows chosen with ``rec.rows_for(method)``)
    or ``[n target word tokens, S]`` already in target-token order. Word level pools it as the
    design says (sum over source subwords, mean over target subwords). Links are the argmax
    source word per target token (or cells >= ``threshold``), specials excluded, or those of the decoding
    rule ``decode``. ``marked``: target words (word level) whose label gets a "≠" mark.
    """
    m = np.asarray(matrix, dtype=np.float64)
    n_targets = len(rec.target_positions)
    if m.ndim != 2 or m.shape[1] != len(rec.src_tokens):
        raise ValueError(f"matrix shape {m.shape}: expected [rows, {len(rec.src_tokens)} source tokens]")
    if m.shape[0] == len(rec.dec_tokens) and m.shape[0] != n_targets:
        m = m[rec.rows_for(method)]
    elif m.shape[0] != n_targets:
        raise ValueError(f"matrix has {m.shape[0]} rows: expected {len(rec.dec_tokens)} decoder rows "
                         f"or {n_targets} target word tokens")
    mat, xl, yl, links, to_cells = source_target(rec, m, level, threshold, decode)
    if level == "word":
        yl = marked_labels(yl, marked)
    if gold is not None:
        check_gold_range(gold, len(rec.src_words), len(rec.tgt_words))
        if level == "subword":
            gold = _subword_status_gold(rec, m, gold, links, to_cells)
    return matrix_heatmap(mat, xl, yl, title=title, value_title=value_title,
                          x_title="source", y_title="target",
                          links=links if show_links else (set() if gold is not None else None),
                          gold=gold, cell=cell, legend=legend)


def alignment_heatmap(
    rec: Record,
    *,
    layer: int | str | None = None,
    head: int | str = "mean",
    method: str = "shift-att",
    level: str = "word",
    gold: Any | None = None,
    threshold: float | None = None,
    cell: int | None = None,
    title: str | None = None,
    legend: str = "right",
    decode: str | None = None,
    marked: Iterable[int] = (),
) -> alt.Chart | alt.LayerChart:
    """Cross-attention heatmap (source on x, target on y) with the extracted alignment marked (links of the
    decoding rule ``decode``; None: argmax, or cells >= ``threshold``).

    With ``gold`` every marked cell says correct / missed / spurious against Sure/Possible; ``marked``
    target words (word level) get a "≠" after their label.
    """
    mat = attention_matrix(rec, layer, head, method)
    if title is None:
        title = f"cross-attention · layer {_sel(layer, rec.cross.shape[0])} · head {head} · {method}"
    return source_target_heatmap(rec, mat, level=level, method=method, title=title, gold=gold,
                                 threshold=threshold, cell=cell, legend=legend, decode=decode, marked=marked)


def learned_heatmap(matrix: np.ndarray, src_words: Sequence[str], tgt_words: Sequence[str],
                    links: Iterable[tuple[int, int]], *, gold: Any | None = None, marked: Iterable[int] = (),
                    title: str = "learned aligner", cell: int | None = None, legend: str = "right"
                    ) -> alt.Chart | alt.LayerChart:
    """A learned aligner's [target words, source words + 1] matrix (last column: no source, not drawn) with its
    links, judged against ``gold``; ``marked`` target words get a "≠" after their label."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (len(tgt_words), len(src_words) + 1):
        raise ValueError(f"learned matrix shape {m.shape}: expected ({len(tgt_words)}, {len(src_words) + 1}) "
                         "(target words, source words + no source)")
    if gold is not None:
        check_gold_range(gold, len(src_words), len(tgt_words))
    return matrix_heatmap(m[:, :-1], list(src_words), marked_labels(tgt_words, marked), title=title,
                          value_title="p(source)", links=links, gold=gold, cell=cell, legend=legend)


def _sel(layer: int | str | None, n_layers: int) -> str:
    if layer is None:
        return str(default_layer(n_layers))
    return str(layer)


# ----------------------------------------------------------------------------- layer x head grid

def layer_head_grid(rec: Record, *, method: str = "shift-att", level: str = "word", panel: int = 90
                    ) -> alt.FacetChart:
    """Small multiples of cross-attention: one panel per layer (rows) x head (columns), plus the
    per-layer mean over heads in the last column. Dots mark each target's argmax source.
    (Scores per panel, e.g. AER against gold, are drawn by :func:`layer_head_scores`.)
    """
    check_level(level)
    att, xl, yl = layer_head_values(rec, method, level)
    n_l, n_h1, n_y, n_x = att.shape
    heads = [f"head {h}" for h in range(n_h1 - 1)] + ["mean"]
    special = np.zeros(n_x, bool) if level == "word" else np.asarray(rec.src_word_ids) < 0
    masked = np.where(special, -np.inf, att)
    argmax = masked.argmax(axis=-1) if n_x and not special.all() else np.full(att.shape[:-1], -1)
    l_idx, h_idx, y_idx, x_idx = np.indices(att.shape).reshape(4, -1)
    aligned = (argmax[l_idx, h_idx, y_idx] == x_idx)
    vals = _round(att, 4)
    # Panels repeat the same words L x (H+1) times: rows carry indices only and the words are looked
    # up from two small tables, which keeps the spec a fraction of the size for long sentences.
    data = [{"layer": int(l), "head": heads[h], "src": int(x), "tgt": int(y), "value": v, "aligned": bool(a)}
            for l, h, y, x, v, a in zip(l_idx.tolist(), h_idx.tolist(), y_idx.tolist(), x_idx.tolist(), vals,
                                         aligned.tolist())]
    src_table = alt.LookupData(data=alt.InlineData(values=[{"src": i, "source": w} for i, w in enumerate(xl)]),
                               key="src", fields=["source"])
    tgt_table = alt.LookupData(data=alt.InlineData(values=[{"tgt": i, "target": w} for i, w in enumerate(yl)]),
                               key="tgt", fields=["target"])
    step = max(2.0, panel / max(n_x, n_y, 1))
    tooltip = [alt.Tooltip("layer:O"), alt.Tooltip("head:N"), alt.Tooltip("source:N"), alt.Tooltip("target:N"),
               alt.Tooltip("value:Q", format=".3f")]
    x_enc = alt.X("src:O", axis=None, sort="ascending")
    y_enc = alt.Y("tgt:O", axis=None, sort="ascending")
    base = alt.Chart()
    heat = base.mark_rect().encode(x=x_enc, y=y_enc, tooltip=tooltip,
                                   color=alt.Color("value:Q", title="attention", scale=alt.Scale(scheme="blues", domainMin=0)))
    dots = base.mark_point(filled=True, color="#d62728", size=max(4, int(step * step * 0.3))).encode(
        x=x_enc, y=y_enc, tooltip=tooltip).transform_filter("datum.aligned")
    layered = alt.layer(heat, dots).transform_lookup(
        lookup="src", from_=src_table).transform_lookup(lookup="tgt", from_=tgt_table).properties(
        width=alt.Step(step), height=alt.Step(step))
    return _attach(alt.FacetChart(
        spec=layered,
        facet=alt.FacetMapping(
            row=alt.FacetFieldDef(field="layer", type="ordinal", sort="ascending",
                                  header=alt.Header(labelExpr="'layer ' + datum.value", title=None)),
            column=alt.FacetFieldDef(field="head", type="nominal", sort=heads, header=alt.Header(title=None))),
        spacing=6,
        title=f"every layer x head ({method}, {level} level; last column = mean over heads)"), data)


def layer_head_scores(scores: dict[tuple[int, Any], float], *, value_title: str = "AER", lower_is_better: bool = True,
                      title: str | None = None) -> alt.LayerChart:
    """Heatmap of one score per (layer, head|'mean') with the numbers written in; best cell outlined."""
    if not scores:
        raise ValueError("no scores to chart: expected {(layer, head): value}")
    n_heads = max((h for _, h in scores if not isinstance(h, str)), default=-1) + 1
    heads = [f"head {h}" for h in range(n_heads)] + (["mean"] if any(isinstance(h, str) for _, h in scores) else [])
    finite = {k: v for k, v in scores.items() if v is not None and np.isfinite(v)}
    best = (min if lower_is_better else max)(finite, key=finite.get) if finite else None
    vals = list(finite.values())
    mid = (min(vals) + max(vals)) / 2 if vals else 0.0

    def dark(v: float | None) -> bool:  # cells the scale paints dark get white text
        return v is not None and np.isfinite(v) and (v < mid if lower_is_better else v > mid)

    data = [{"layer": int(l), "head": "mean" if isinstance(h, str) else f"head {h}",
             "value": None if v is None or not np.isfinite(v) else round(float(v), 4), "best": (l, h) == best,
             "dark": bool(dark(v))}
            for (l, h), v in sorted(scores.items(), key=lambda kv: (kv[0][0], str(kv[0][1])))]
    base = alt.Chart(alt.InlineData(values=data)).encode(
        x=alt.X("head:N", sort=heads, title=None, axis=alt.Axis(orient="top", labelAngle=0)),
        y=alt.Y("layer:O", sort="ascending", title="layer"))
    scheme = alt.Scale(scheme="blues", reverse=lower_is_better)
    heat = base.mark_rect().encode(color=alt.Color("value:Q", title=value_title, scale=scheme),
                                   tooltip=["layer:O", "head:N", alt.Tooltip("value:Q", title=value_title, format=".3f")])
    text = base.mark_text(fontSize=11).encode(
        text=alt.Text("value:Q", format=".2f"),
        color=alt.condition("datum.dark", alt.value("white"), alt.value("black")))
    box = base.mark_rect(fill=None, stroke="#d62728", strokeWidth=2.5).transform_filter("datum.best")
    return alt.layer(heat, text, box).properties(
        width=alt.Step(56), height=alt.Step(26),
        title=title or f"{value_title} per layer x head ({'lower' if lower_is_better else 'higher'} is better)")


# ----------------------------------------------------------------------------- self-attention

def self_attention_heatmap(rec: Record, side: str = "encoder", *, layer: int | str | None = None,
                           head: int | str = "mean", level: str = "subword", cell: int | None = None,
                           legend: str = "right") -> alt.Chart:
    """Self-attention heatmap: each row is a token attending (query), each column a token attended to (key)."""
    mat, labels = self_attention_matrix(rec, side, layer=layer, head=head, level=level)
    n_layers = (rec.enc_self if side == "encoder" else rec.dec_self).shape[0]
    return matrix_heatmap(mat, labels, labels, title=f"{side} self-attention · layer {_sel(layer, n_layers)} · head {head}",
                          x_title="attended to", y_title="attending", cell=cell, legend=legend)


# ----------------------------------------------------------------------------- per-token signals

def token_chart(labels: Sequence[str], logprob: Sequence[float], entropy: Sequence[float], *,
                entropy_threshold: float | None = 0.8, logprob_threshold: float | None = None,
                cell: int | None = None, title: str = "per target token") -> alt.VConcatChart:
    """Two aligned bar charts over the target: log-probability (top) and attention entropy (bottom).

    Bars above ``entropy_threshold`` are red and labelled *scattered* (attention spread over the
    source); log-probs below ``logprob_threshold`` are red (*low confidence*). Dashed rules mark
    the thresholds.
    """
    n = len(labels)
    if not (len(logprob) == len(entropy) == n):
        raise ValueError(f"{n} labels, {len(logprob)} log-probs and {len(entropy)} entropies: expected equal lengths")
    lp, ent = _round(logprob, 4), _round(entropy, 4)
    data = []
    for i in range(n):
        scattered = entropy_threshold is not None and ent[i] is not None and ent[i] > entropy_threshold
        low = logprob_threshold is not None and lp[i] is not None and lp[i] < logprob_threshold
        data.append({"pos": i, "token": str(labels[i]), "logprob": lp[i], "prob": None if lp[i] is None else round(float(np.exp(lp[i])), 4),
                     "entropy": ent[i], "attention": "scattered" if scattered else "ok",
                     "confidence": "low confidence" if low else "ok"})
    step = _cell_size(n, cell, span=640, lo=18, hi=48)
    domain = list(range(n))  # explicit, so rows with no entropy (</s>) keep both bar charts aligned
    x = alt.X("pos:O", sort="ascending", axis=_axis(labels, None, "bottom", -45), scale=alt.Scale(domain=domain))
    tip = [alt.Tooltip("token:N"), alt.Tooltip("logprob:Q", format=".2f", title="log-prob"),
           alt.Tooltip("prob:Q", format=".3f", title="probability"),
           alt.Tooltip("entropy:Q", format=".2f", title="entropy (0-1)"), alt.Tooltip("attention:N")]
    base = alt.Chart(alt.InlineData(values=data))
    conf_scale = alt.Scale(domain=["ok", "low confidence"], range=[FLAG_COLOURS["ok"], FLAG_COLOURS["low confidence"]])
    top = base.mark_bar().encode(
        x=alt.X("pos:O", sort="ascending", axis=None, scale=alt.Scale(domain=domain)),
        y=alt.Y("logprob:Q", title="log-prob"),
        color=alt.Color("confidence:N", scale=conf_scale, title="confidence"), tooltip=tip)
    layers_top: list[Any] = [top]
    if logprob_threshold is not None:
        layers_top.append(alt.Chart(alt.InlineData(values=[{"y": float(logprob_threshold)}])).mark_rule(
            strokeDash=[4, 3], color="#555").encode(y="y:Q"))
    att_scale = alt.Scale(domain=["ok", "scattered"], range=[FLAG_COLOURS["ok"], FLAG_COLOURS["scattered"]])
    bottom = base.mark_bar().encode(
        x=x, y=alt.Y("entropy:Q", title="attention entropy", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("attention:N", scale=att_scale, title="attention"), tooltip=tip)
    flags = base.mark_text(dy=-6, fontSize=10, color=FLAG_COLOURS["scattered"], text="scattered").encode(
        x=x, y="entropy:Q").transform_filter("datum.attention == 'scattered'")
    layers_bottom: list[Any] = [bottom, flags]
    if entropy_threshold is not None:
        layers_bottom.append(alt.Chart(alt.InlineData(values=[{"y": float(entropy_threshold)}])).mark_rule(
            strokeDash=[4, 3], color="#555").encode(y="y:Q"))
    upper = alt.layer(*layers_top).properties(width=alt.Step(step), height=110)
    lower = alt.layer(*layers_bottom).properties(width=alt.Step(step), height=110)
    return alt.vconcat(upper, lower, spacing=4).resolve_scale(color="independent").properties(title=title)


def coverage_chart(src_words: Sequence[str], coverage: Sequence[float], content: Sequence[bool] | None = None, *,
                   low: float | None = 0.2, high: float | None = None, cell: int | None = None,
                   title: str = "source coverage") -> alt.LayerChart:
    """Attention each source word receives (relative: 1 = fair share), in sentence order.

    Content words under ``low`` are red (*unattended: possible omission*), above ``high`` purple
    (*over-attended*); function words are grey (they are not flagged).
    """
    n = len(src_words)
    if len(coverage) != n:
        raise ValueError(f"{n} source words but {len(coverage)} coverage values")
    content = [True] * n if content is None else [bool(c) for c in content]
    cov = _round(coverage, 4)
    data = []
    for i in range(n):
        if not content[i]:
            flag = "function word"
        elif low is not None and cov[i] is not None and cov[i] < low:
            flag = "unattended"
        elif high is not None and cov[i] is not None and cov[i] > high:
            flag = "over-attended"
        else:
            flag = "ok"
        data.append({"pos": i, "word": str(src_words[i]), "coverage": cov[i], "flag": flag})
    domain = ["ok", "unattended", "over-attended", "function word"]
    step = _cell_size(n, cell, span=640, lo=18, hi=48)
    x = alt.X("pos:O", sort="ascending", axis=_axis(src_words, None, "bottom", -45))
    base = alt.Chart(alt.InlineData(values=data))
    bars = base.mark_bar().encode(
        x=x, y=alt.Y("coverage:Q", title="coverage (1 = fair share)"),
        color=alt.Color("flag:N", scale=alt.Scale(domain=domain, range=[FLAG_COLOURS[d] for d in domain]), title=None),
        tooltip=[alt.Tooltip("word:N"), alt.Tooltip("coverage:Q", format=".2f"), alt.Tooltip("flag:N")])
    marks = base.mark_text(dy=-6, fontSize=10, color=FLAG_COLOURS["unattended"], text="omitted?").encode(
        x=x, y="coverage:Q").transform_filter("datum.flag == 'unattended'")
    rules = [{"y": 1.0, "what": "fair share"}] + ([{"y": float(low), "what": "unattended below"}] if low is not None else [])
    rule = alt.Chart(alt.InlineData(values=rules)).mark_rule(strokeDash=[4, 3], color="#555").encode(
        y="y:Q", tooltip=["what:N", "y:Q"])
    return alt.layer(bars, marks, rule).properties(width=alt.Step(step), height=160, title=title)


def contrast_heatmaps(view: dict[str, Any], *, target: str = "target", contrast: str = "contrast",
                      cell: int | None = None, legend: str = "bottom") -> tuple[Any, Any]:
    """(contrastive attribution, attention) heatmaps of `views.contrast_view`: differing positions (rows) x
    source words (columns); either is None when the view holds no such matrix.

    The attribution is IG of log p(target) − log p(contrast) on a red-blue scale centred on 0 (red: toward
    the target); the attention is the cross-attention of the target's step at that position.
    """
    words, labels = view["source_words"], view["labels"]
    attr = att = None
    if view.get("attribution") is not None:
        attr = matrix_heatmap(view["attribution"], words, labels, value_title=f"IG Δ {target}−{contrast}",
                              y_title="position", cell=cell, diverging=True, legend=legend)
    if view.get("attention") is not None:
        att = matrix_heatmap(view["attention"], words, labels, value_title="attention", y_title="position",
                             cell=cell, diverging=False, legend=legend)
    return attr, att
