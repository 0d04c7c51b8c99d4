"""Contrastive test suites: does the model prefer the correct target over a minimally different wrong one?

A suite is a TSV file, one item a line: ``source <TAB> correct <TAB> wrong [<TAB> tags]`` (blank lines
and lines starting with ``#`` are skipped). Tags are space-separated, free text or ``key=value``; the
tag ``marker=I,J`` names 0-based source words that carry the signal the choice should rest on (the
gender probe marks the article and the occupation noun), so the report can say how often they are
among the top-attributed source words at the differing position.

An item *passes* when the correct target's total log-probability (teacher forcing, ``</s>``
included) is higher than the wrong one's, as in LingEval97 / ContraPro. Accuracy comes with a
percentile bootstrap interval (fixed seed), overall and per tag. Rows go to a JSONL file in item
order as they are scored; a rerun with ``resume`` cuts a torn last line off and scores only the
items not yet there.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .align import Selector, default_layer, select
from .contrast import contrast_records
from .errors import InputError, PathLike
from .store import JsonlStore, write_text_atomic
from .extract import SentenceError, encode_pair, forward_batch, length_batches
from .models import ModelBundle
from .words import split_words

DATASETS = Path(__file__).resolve().parents[1] / "datasets"
BUILTIN = {"gender-de-en": "probes/gender-de-en.tsv"}  # name -> path under datasets/
EXPECTED = "source<TAB>correct target<TAB>wrong target[<TAB>space-separated tags]"


@dataclass
class SuiteItem:
    index: int  # 0-based item number
    line: int  # 1-based line in the suite file
    source: str
    correct: str
    wrong: str
    tags: list[str] = field(default_factory=list)

    @property
    def markers(self) -> list[int]:
        """Source word indices named by a ``marker=`` tag (empty when none)."""
        out: list[int] = []
        for t in self.tags:
            if t.startswith("marker="):
                out += [int(x) for x in t[len("marker="):].split(",") if x]
        return out


def resolve_suite(name_or_path: str | PathLike) -> Path:
    """A built-in suite name (see BUILTIN) or a path to a TSV file."""
    key = os.fspath(name_or_path)
    if key in BUILTIN:
        path = DATASETS / BUILTIN[key]
        if not path.exists():
            raise InputError(path, None, f"the built-in suite {key!r} is missing from this checkout",
                             "the repository's datasets/probes/ (scripts/make_gender_probe.py writes it)")
        return path
    path = Path(key)
    if not path.exists():
        raise InputError(path, None, "no such suite file", f"a TSV file ({EXPECTED}) or one of {sorted(BUILTIN)}")
    return path


def read_suite(path: PathLike) -> list[SuiteItem]:
    """Read a suite TSV; any bad line raises InputError naming the file, the line and what was expected."""
    items: list[SuiteItem] = []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) < 3 or len(cols) > 4:
                raise InputError(path, lineno, f"found {len(cols)} tab-separated column(s)", EXPECTED)
            names = ("source", "correct target", "wrong target")
            for name, col in zip(names, cols):
                if not split_words(col):
                    raise InputError(path, lineno, f"the {name} is empty", EXPECTED)
            src, good, bad = (" ".join(split_words(c)) for c in cols[:3])
            if good == bad:
                raise InputError(path, lineno, "the correct and the wrong target are the same words",
                                 "two targets that differ somewhere")
            item = SuiteItem(len(items), lineno, src, good, bad, cols[3].split() if len(cols) == 4 else [])
            try:
                markers = item.markers
            except ValueError:
                raise InputError(path, lineno, f"bad marker tag in {cols[3]!r}",
                                 "marker=I[,J...] with 0-based source word indices") from None
            n_src = len(split_words(src))
            if any(m < 0 or m >= n_src for m in markers):
                raise InputError(path, lineno, f"marker word(s) {markers} outside the source's {n_src} words",
                                 f"0-based indices below {n_src}")
            items.append(item)
    if not items:
        raise InputError(path, None, "the suite has no items", EXPECTED)
    return items


@dataclass
class SuiteOptions:
    steps: int = 16  # IG steps for the contrastive attribution
    attribute: str = "all"  # all / failing / none: which items get the contrastive attribution
    layer: Selector | None = None  # cross-attention layer shown beside the attribution (default: middle-upper)
    head: Selector = "mean"
    batch_size: int = 16
    chunk_size: int = 64  # items scored, then appended and synced, at a time


ATTRIBUTE = ("all", "failing", "none")


def item_row(item: SuiteItem, res) -> dict[str, Any]:
    """One JSONL row from an item and its ContrastResult (attributions at the differing positions)."""
    row: dict[str, Any] = {
        "index": item.index, "line": item.line, "source": item.source, "correct": item.correct, "wrong": item.wrong,
        "tags": item.tags, "logprob_correct": res.logprob_target, "logprob_wrong": res.logprob_contrast,
        "difference": res.difference, "pass": bool(res.difference > 0), "source_words": res.source_words,
        "positions": [{
            "kind": p.kind, "correct_span": list(p.target_span), "wrong_span": list(p.contrast_span),
            "correct_text": p.target_text, "wrong_text": p.contrast_text, "logprob_correct": p.logprob_target,
            "logprob_wrong": p.logprob_contrast, "difference": p.difference, "attribution": p.attribution,
            "delta": None if math.isnan(p.delta) else p.delta,
            "relative_delta": None if math.isnan(p.relative_delta) else p.relative_delta,
            "attention": p.attention_target} for p in res.positions],
    }
    first = res.positions[0] if res.positions else None
    if first is not None and first.attribution:
        attr = np.asarray(first.attribution)
        row["ranking"] = np.argsort(-np.abs(attr), kind="stable").tolist()  # source words by |attribution|
        markers = item.markers
        if markers:
            row["markers"] = markers
            row["marker_attribution"] = float(attr[markers].sum())  # > 0: the markers push toward the correct target
    return row


def top_chance(n: int, m: int, k: int) -> float:
    """P(at least one of m marked words among k drawn at random from n): what a uniform ranking gives."""
    return 1.0 - math.comb(n - m, k) / math.comb(n, k) if n - m >= k else 1.0


def read_rows(path: Path, items: Sequence[SuiteItem] | None = None) -> list[dict]:
    """Rows already in a rows file, cutting off a torn last line (a kill mid-write).

    With ``items``, every row must belong to this suite (same index, source and targets), else an InputError
    names the rows file and line: resuming into another suite's rows would mix two runs.
    """
    rows: list[dict] = []
    JsonlStore(path, "index", check=_suite_check(path, items), on_row=rows.append).close()
    return rows


def _suite_check(path: Path, items: Sequence[SuiteItem] | None):
    """A `store.JsonlStore` check: every row must be the item of this suite its index says."""
    def check(row: dict, lineno: int) -> None:
        if items is None:
            return
        i = row.get("index")
        if not isinstance(i, int) or not 0 <= i < len(items) or \
                (row.get("source"), row.get("correct"), row.get("wrong")) != \
                (items[i].source, items[i].correct, items[i].wrong):
            raise InputError(path, lineno, f"this row is not item {i} of the suite being resumed",
                             "the rows file of the same suite (or run without --resume to start afresh)")
    return check


def score_items(bundle: ModelBundle, items: Sequence[SuiteItem], opts: SuiteOptions,
                source: PathLike | None = None) -> list[dict]:
    """Rows for ``items`` (in their order): both targets of every item in length-sorted batches (one forward
    pass a batch), then the contrastive attribution per item as ``opts.attribute`` asks."""
    if opts.attribute not in ATTRIBUTE:
        raise ValueError(f"unknown attribute mode {opts.attribute!r}; expected one of {ATTRIBUTE}")
    encoded = []
    for it in items:
        try:
            encoded += [encode_pair(bundle, it.source, it.correct, it.index), encode_pair(bundle, it.source, it.wrong, it.index)]
        except SentenceError as exc:
            raise InputError(source, it.line, exc.reason) from None
    layer = default_layer(bundle.num_layers) if opts.layer is None else opts.layer

    def reduce(kind: str, att: np.ndarray) -> np.ndarray:  # keep only the layer/heads shown
        return select(att, layer, opts.head)[None, None]

    recs: list[Any] = [None] * len(encoded)
    for idx in length_batches([len(e.src_ids) + len(e.label_ids) for e in encoded], opts.batch_size):
        for i, rec in zip(idx, forward_batch(bundle, [encoded[i] for i in idx], keep=("cross",), reduce=reduce)):
            recs[i] = rec
    rows = []
    for k, it in enumerate(items):
        good, bad = recs[2 * k], recs[2 * k + 1]
        passed = float(good.token_logprobs.sum(dtype=np.float64)) > float(bad.token_logprobs.sum(dtype=np.float64))
        attribute = opts.attribute == "all" or (opts.attribute == "failing" and not passed)
        res = contrast_records(bundle, good, bad, steps=opts.steps, layer=layer, head=opts.head, attribute=attribute)
        rows.append(item_row(it, res))
    return rows


def run_suite(bundle: ModelBundle, items: Sequence[SuiteItem], opts: SuiteOptions, rows_path: Path | None = None,
              resume: bool = False, source: PathLike | None = None,
              on_progress: Callable[[int], None] | None = None) -> list[dict]:
    """Score every item; rows are appended to ``rows_path`` (flushed and synced per chunk) and returned, all of
    them (those found on resume included), in item order. Without ``resume`` an existing rows file is replaced."""
    by_index: dict[int, dict] = {}
    store = None
    if rows_path is not None:  # the one resumable store (torn line cut, rows checked against this suite)
        store = JsonlStore(rows_path, "index", resume=resume, check=_suite_check(rows_path, items),
                           on_row=lambda row: by_index.setdefault(row["index"], row))
    done = set(by_index)
    if on_progress and done:
        on_progress(len(done))
    try:
        todo = iter([it for it in items if it.index not in done])
        while chunk := list(itertools.islice(todo, opts.chunk_size)):
            rows = score_items(bundle, chunk, opts, source)
            for row in rows:
                by_index[row["index"]] = row
                if store is not None:  # as json.dumps writes it (NaN kept): the rows format `suite` has always had
                    store.append(row, json.dumps(row, ensure_ascii=False))
            if store is not None:
                store.sync()
            if on_progress:
                on_progress(len(chunk))
    finally:
        if store is not None:
            store.close()
    return [by_index[i] for i in sorted(by_index)]


# ------------------------------------------------------------------------------------------- summary

def bootstrap_ci(values: Sequence[float] | np.ndarray, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (fixed seed, so a report is reproducible)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_gap_ci(a: Sequence[float], b: Sequence[float], n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) − mean(b), each group resampled on its own."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) == 0 or len(y) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    gaps = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(1) - y[rng.integers(0, len(y), (n_boot, len(y)))].mean(1)
    lo, hi = np.quantile(gaps, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _acc(rows: Sequence[dict], n_boot: int, seed: int) -> dict[str, Any]:
    passes = [float(r["pass"]) for r in rows]
    lo, hi = bootstrap_ci(passes, n_boot, seed)
    return {"n": len(rows), "accuracy": float(np.mean(passes)) if passes else float("nan"), "ci": [lo, hi]}


def _tag_value(row: dict, key: str) -> str | None:
    for t in row.get("tags", []):
        if t.startswith(key + "="):
            return t[len(key) + 1:]
    return None


def _marker_stats(rows: Sequence[dict], top_k: int, n_boot: int, seed: int) -> dict[str, Any] | None:
    """How often a marker word is among the top_k source words by |contrastive attribution|, against the rate
    a random ranking gives, and how often the markers' summed attribution favours the correct target."""
    with_markers = [r for r in rows if r.get("markers") and "ranking" in r]
    if not with_markers:
        return None
    hits = [float(bool(set(r["markers"]) & set(r["ranking"][:top_k]))) for r in with_markers]
    chance = [top_chance(len(r["ranking"]), len(set(r["markers"])), min(top_k, len(r["ranking"]))) for r in with_markers]
    lo, hi = bootstrap_ci(hits, n_boot, seed)
    return {"n": len(with_markers), "top_k": top_k, "rate": float(np.mean(hits)), "ci": [lo, hi],
            "chance": float(np.mean(chance)),
            "supports_correct": float(np.mean([r["marker_attribution"] > 0 for r in with_markers]))}


def summarize(rows: Sequence[dict], n_boot: int = 1000, seed: int = 0, top_k: int = 2) -> dict[str, Any]:
    """Accuracy overall and per tag (marker tags aside) with bootstrap intervals; with gender tags
    (``gender=fem|masc``, optional ``stereotype=female|male``), the gender section of the probe report."""
    out: dict[str, Any] = {"overall": _acc(rows, n_boot, seed), "n_boot": n_boot, "seed": seed, "top_k": top_k}
    tags = sorted({t for r in rows for t in r.get("tags", []) if not t.startswith("marker=")})
    out["per_tag"] = {t: _acc([r for r in rows if t in r.get("tags", [])], n_boot, seed) for t in tags}
    markers = _marker_stats(rows, top_k, n_boot, seed)
    if markers:
        out["markers"] = markers
    deltas = [p["relative_delta"] for r in rows for p in r["positions"][:1] if p.get("relative_delta") is not None]
    if deltas:
        out["relative_delta_median"] = float(np.median(deltas))
    fem = [r for r in rows if _tag_value(r, "gender") == "fem"]
    masc = [r for r in rows if _tag_value(r, "gender") == "masc"]
    if fem and masc:
        out["gender"] = gender_report(fem, masc, n_boot, seed, top_k)
    return out


def gender_report(fem: Sequence[dict], masc: Sequence[dict], n_boot: int, seed: int, top_k: int = 2) -> dict[str, Any]:
    """Accuracy of feminine and masculine items, the gap (masc − fem), the same split by stereotype
    (pro: the form matches the occupation's stereotype, anti: it does not), and the marker rates."""
    def passes(rs):
        return [float(r["pass"]) for r in rs]

    rep: dict[str, Any] = {"fem": _acc(fem, n_boot, seed), "masc": _acc(masc, n_boot, seed)}
    rep["gap"] = {"value": rep["masc"]["accuracy"] - rep["fem"]["accuracy"],
                  "ci": list(bootstrap_gap_ci(passes(masc), passes(fem), n_boot, seed))}
    stereo = {"fem": "female", "masc": "male"}
    cells: dict[str, Any] = {}
    for g, rs in (("fem", fem), ("masc", masc)):
        for s in ("female", "male"):
            sub = [r for r in rs if _tag_value(r, "stereotype") == s]
            if sub:
                cells[f"{g}/{s}"] = _acc(sub, n_boot, seed)
    if cells:
        rep["by_stereotype"] = cells
        pro = [r for g, rs in (("fem", fem), ("masc", masc)) for r in rs if _tag_value(r, "stereotype") == stereo[g]]
        anti = [r for g, rs in (("fem", fem), ("masc", masc)) for r in rs
                if _tag_value(r, "stereotype") not in (None, stereo[g])]
        if pro and anti:
            rep["pro"], rep["anti"] = _acc(pro, n_boot, seed), _acc(anti, n_boot, seed)
            rep["pro_anti_gap"] = {"value": rep["pro"]["accuracy"] - rep["anti"]["accuracy"],
                                   "ci": list(bootstrap_gap_ci(passes(pro), passes(anti), n_boot, seed))}
    for g, rs in (("fem", fem), ("masc", masc)):
        m = _marker_stats(rs, top_k, n_boot, seed)
        if m:
            rep[f"markers_{g}"] = m
            rep[f"markers_{g}_top1"] = _marker_stats(rs, 1, n_boot, seed)
    kinds = sorted({k for r in list(fem) + list(masc) if (k := _tag_value(r, "kind"))})
    for k in kinds:
        rep[f"kind={k}"] = {g: _acc([r for r in rs if _tag_value(r, "kind") == k], n_boot, seed)
                            for g, rs in (("fem", fem), ("masc", masc))}
        m = _marker_stats([r for r in list(fem) + list(masc) if _tag_value(r, "kind") == k], top_k, n_boot, seed)
        if m:
            rep[f"kind={k}"]["markers"] = m
    return rep


def format_summary(summary: dict[str, Any], max_values: int = 12) -> str:
    """Plain-text tables; per-tag lines only for tag keys with at most ``max_values`` values."""
    def acc(a: dict) -> str:
        return f"{100 * a['accuracy']:6.1f}%  [{100 * a['ci'][0]:.1f}, {100 * a['ci'][1]:.1f}]  n={a['n']}"

    lines = [f"{'overall':>28} {acc(summary['overall'])}"]
    keys: dict[str, int] = {}
    for t in summary["per_tag"]:
        keys[t.split("=")[0]] = keys.get(t.split("=")[0], 0) + 1
    for t, a in summary["per_tag"].items():
        if keys[t.split("=")[0]] <= max_values:
            lines.append(f"{t[:28]:>28} {acc(a)}")
    g = summary.get("gender")
    if g:
        lines.append("gender probe (accuracy = correct pronoun preferred):")
        for k in ("fem", "masc", "pro", "anti"):
            if k in g:
                lines.append(f"{k:>28} {acc(g[k])}")
        gap = g["gap"]
        lines.append(f"{'gap masc - fem':>28} {100 * gap['value']:+6.1f} pts [{100 * gap['ci'][0]:+.1f}, {100 * gap['ci'][1]:+.1f}]")
        if "pro_anti_gap" in g:
            pg = g["pro_anti_gap"]
            lines.append(f"{'gap pro - anti':>28} {100 * pg['value']:+6.1f} pts [{100 * pg['ci'][0]:+.1f}, {100 * pg['ci'][1]:+.1f}]")
        for cell, a in g.get("by_stereotype", {}).items():
            lines.append(f"{'form/stereotype ' + cell:>28} {acc(a)}")
        for key, val in g.items():
            if key.startswith("kind="):
                for form in ("fem", "masc"):
                    lines.append(f"{key[5:] + ', ' + form:>28} {acc(val[form])}")
    m = summary.get("markers")
    if m:
        lines.append(f"marker words among the top-{summary.get('top_k')} attributed source words: "
                     f"{100 * m['rate']:.1f}% [{100 * m['ci'][0]:.1f}, {100 * m['ci'][1]:.1f}] of {m['n']} items "
                     f"(chance {100 * m['chance']:.1f}%); their attribution favours the correct target in "
                     f"{100 * m['supports_correct']:.1f}%")
        if g:
            for k in ("fem", "masc"):
                for mk in (g.get(f"markers_{k}"), g.get(f"markers_{k}_top1")):
                    if mk:
                        label = f"markers in top-{mk['top_k']}, {k}"
                        lines.append(f"{label:>28} {100 * mk['rate']:6.1f}%  (chance {100 * mk['chance']:.1f}%; "
                                     f"favour the correct target {100 * mk['supports_correct']:.1f}%)")
            for key, val in g.items():
                if key.startswith("kind=") and "markers" in val:
                    mk = val["markers"]
                    label = f"markers in top-{mk['top_k']}, {key[5:]}"
                    lines.append(f"{label:>28} {100 * mk['rate']:6.1f}%  (chance {100 * mk['chance']:.1f}%)")
    return "\n".join(lines)


def iter_failing(rows: Iterable[dict]) -> Iterator[dict]:
    return (r for r in rows if not r["pass"])


# ---------------------------------------------------------------------------------------- HTML report

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.5rem} h2{font-size:1.15rem;margin:1.4rem 0 .4rem} h3{font-size:1rem;margin:0 0 .4rem}
.meta{color:#555;font-size:.9rem}
table.acc{border-collapse:collapse;font-size:.92rem} table.acc td,table.acc th{border-bottom:1px solid #eee;padding:3px 10px;text-align:right}
table.acc td:first-child,table.acc th:first-child{text-align:left}
.card{border:1px solid #ddd;border-radius:8px;padding:.8rem 1.1rem;margin:1rem 0}
.pair td{padding:2px 8px;vertical-align:top} .pair td:first-child{color:#666;white-space:nowrap}
table.heat{border-collapse:collapse;font-size:.85rem;margin-top:.5rem} table.heat td,table.heat th{padding:3px 6px;text-align:center;border:1px solid #fff}
table.heat th{font-weight:500} table.heat td:first-child{text-align:left;color:#555;white-space:nowrap}
.mark{text-decoration:underline;text-decoration-thickness:2px}
"""


def _esc(x: Any) -> str:
    import html

    return html.escape(str(x), quote=True)


def _pct(a: dict) -> str:
    if a["n"] == 0 or a["accuracy"] != a["accuracy"]:
        return "<td>–</td><td>–</td><td>0</td>"
    return (f"<td>{100 * a['accuracy']:.1f}%</td><td>[{100 * a['ci'][0]:.1f}, {100 * a['ci'][1]:.1f}]</td>"
            f"<td>{a['n']}</td>")


def _diverging(v: float, vmax: float) -> str:
    """Blue for attribution toward the correct target, red toward the wrong one; white at 0."""
    t = 0.0 if vmax <= 0 else max(-1.0, min(1.0, v / vmax))
    fade = int(round(255 * (1 - abs(t))))
    return f"rgb({fade},{fade},255)" if t >= 0 else f"rgb(255,{fade},{fade})"


def _grey(v: float, vmax: float) -> str:
    t = 0.0 if vmax <= 0 else max(0.0, min(1.0, v / vmax))
    g = int(round(255 * (1 - 0.75 * t)))
    return f"rgb({g},{g},{g})"


def _ink(strength: float) -> str:
    """White text on the darkest cells, so every value stays readable."""
    return "#fff" if strength > 0.6 else "#222"


def heat_table(row: dict, position: int = 0) -> str:
    """The contrastive attribution and the attention of one differing position as an HTML table heatmap
    (one column per source word; marker words underlined; values in the cells)."""
    pos = row["positions"][position]
    words, markers = row["source_words"], set(row.get("markers", []))
    head = "".join(f'<th class="{"mark" if i in markers else ""}">{_esc(w)}</th>' for i, w in enumerate(words))
    lines = [f"<tr><td></td>{head}</tr>"]
    attr = pos.get("attribution") or []
    if attr:
        vmax = max(abs(v) for v in attr) or 1.0
        cells = "".join(f'<td style="background:{_diverging(v, vmax)};color:{_ink(abs(v) / vmax)}">{v:+.2f}</td>'
                        for v in attr)
        lines.append(f"<tr><td>contrastive IG</td>{cells}</tr>")
    att = pos.get("attention") or []
    if att:
        amax = max(att) or 1.0
        cells = "".join(f'<td style="background:{_grey(v, amax)};color:{_ink(0.75 * v / amax)}">{v:.2f}</td>'
                        for v in att)
        lines.append(f"<tr><td>attention</td>{cells}</tr>")
    return '<table class="heat">' + "".join(lines) + "</table>"


def render_html(rows: Sequence[dict], summary: dict[str, Any], *, title: str = "aligndebug contrastive suite",
                meta: Sequence[str] = (), max_failing: int = 200) -> str:
    """Self-contained HTML (no scripts, no CDN): accuracy tables and the failing items with the contrastive
    attribution heatmap at their first differing position. All text is escaped."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{_esc(title)}</h1>"]
    if meta:
        parts.append('<p class="meta">' + " · ".join(_esc(m) for m in meta) + "</p>")
    parts.append('<p class="meta">An item passes when the correct target has the higher total log-probability. '
                 f"Intervals: 95% percentile bootstrap, {summary['n_boot']} resamples, seed {summary['seed']}.</p>")
    hdr = "<tr><th></th><th>accuracy</th><th>95% CI</th><th>n</th></tr>"
    parts.append("<h2>Accuracy</h2><table class=\"acc\">" + hdr
                 + f"<tr><td>overall</td>{_pct(summary['overall'])}</tr>"
                 + "".join(f"<tr><td>{_esc(t)}</td>{_pct(a)}</tr>" for t, a in summary["per_tag"].items())
                 + "</table>")
    g = summary.get("gender")
    if g:
        parts.append("<h2>Gender</h2><table class=\"acc\">" + hdr)
        for k, label in (("fem", "feminine forms"), ("masc", "masculine forms"), ("pro", "pro-stereotypical"),
                         ("anti", "anti-stereotypical")):
            if k in g:
                parts.append(f"<tr><td>{label}</td>{_pct(g[k])}</tr>")
        for cell, a in g.get("by_stereotype", {}).items():
            parts.append(f"<tr><td>form / stereotype {_esc(cell)}</td>{_pct(a)}</tr>")
        for key, val in g.items():
            if key.startswith("kind="):
                parts += [f"<tr><td>{_esc(key)}, {form}</td>{_pct(val[form])}</tr>" for form in ("fem", "masc")]
        parts.append("</table>")
        for key, label in (("gap", "masculine − feminine"), ("pro_anti_gap", "pro − anti-stereotypical")):
            if key in g:
                v = g[key]
                parts.append(f'<p>Gap {label}: <b>{100 * v["value"]:+.1f}</b> points '
                             f'[{100 * v["ci"][0]:+.1f}, {100 * v["ci"][1]:+.1f}]</p>')
    m = summary.get("markers")
    if m:
        parts.append(f"<h2>Right for the right reason?</h2><p>Marker words (tag <code>marker=</code>) are among the "
                     f"top-{_esc(summary.get('top_k'))} source words by |contrastive attribution| in "
                     f"<b>{100 * m['rate']:.1f}%</b> [{100 * m['ci'][0]:.1f}, {100 * m['ci'][1]:.1f}] of {m['n']} "
                     f"items (a random ranking: {100 * m['chance']:.1f}%); their summed attribution favours the "
                     f"correct target in {100 * m['supports_correct']:.1f}%.</p>")
        if g:
            rates = [(k, g.get(f"markers_{k}{s}")) for k in ("fem", "masc") for s in ("", "_top1")]
            rates += [(k[5:], v["markers"]) for k, v in g.items() if k.startswith("kind=") and "markers" in v]
            parts.append("<p>" + "; ".join(f"{_esc(k)}, top-{x['top_k']}: {100 * x['rate']:.1f}% "
                                           f"(chance {100 * x['chance']:.1f}%)" for k, x in rates if x) + "</p>")
    failing = [r for r in rows if not r["pass"]]
    parts.append(f"<h2>Failing items ({len(failing)})</h2>")
    if len(failing) > max_failing:
        parts.append(f'<p class="meta">the first {max_failing} shown</p>')
    parts.append('<p class="meta">Contrastive IG: attribution of log p(correct) − log p(wrong) at the first '
                 "differing position (blue: toward the correct target, red: toward the wrong one). Attention: "
                 "cross-attention of that decoder step on the correct target. Underlined: marker words.</p>")
    for r in failing[:max_failing]:
        parts.append('<div class="card">')
        parts.append(f"<h3>item {_esc(r['index'])} (line {_esc(r['line'])}) · Δ log p = {r['difference']:+.3f}</h3>")
        pair = [("source", r["source"]), ("correct", r["correct"]), ("wrong", r["wrong"])]
        if r.get("tags"):
            pair.append(("tags", " ".join(r["tags"])))
        parts.append('<table class="pair">' + "".join(
            f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in pair) + "</table>")
        if r["positions"]:
            p = r["positions"][0]
            gap = "" if p.get("relative_delta") is None else f" · completeness gap {100 * p['relative_delta']:.1f}%"
            parts.append(f'<p class="meta">“{_esc(p["correct_text"])}” vs “{_esc(p["wrong_text"])}”: '
                         f"{p['logprob_correct']:.3f} vs {p['logprob_wrong']:.3f}{gap}</p>")
            parts.append(heat_table(r, 0))
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(path: PathLike, rows: Sequence[dict], summary: dict[str, Any], **kwargs: Any) -> Path:
    """Render (see `render_html`) and write atomically."""
    return write_text_atomic(path, render_html(rows, summary, **kwargs))
