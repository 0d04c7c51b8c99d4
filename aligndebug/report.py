"""Self-contained HTML triage report: the top suspects, why they were flagged, and their
cross-attention heatmaps as inline SVG (no scripts, no CDN: it opens offline)."""

from __future__ import annotations

import heapq
import html
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .combine import describe, learned
from .extract import extract
from .signals import SIGNALS
from .store import write_text_atomic

SHOWN_SIGNALS = tuple(s.name for s in SIGNALS.values() if s.report)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.5rem} h2{font-size:1.15rem;margin:0 0 .4rem}
.meta{color:#555;font-size:.9rem}
.card{border:1px solid #ddd;border-radius:8px;padding:1rem 1.2rem;margin:1.2rem 0}
.flag{display:inline-block;background:#fde0dd;color:#a50f15;border-radius:4px;padding:1px 7px;margin:0 4px 2px 0;font-size:.85rem}
.noflag{background:#eee;color:#555}
.pair td{padding:2px 8px;vertical-align:top} .pair td:first-child{color:#666;white-space:nowrap}
.sig{display:flex;flex-wrap:wrap;gap:4px 6px;font-size:.82rem;margin:.5rem 0}
.sig span{border:1px solid #e3e3e3;border-radius:4px;padding:1px 6px} .sig b{font-weight:600;color:#555}
.suspect{background:#a50f15;color:#fff}
ul.reasons{margin:.4rem 0 .6rem 1.2rem;padding:0;font-size:.92rem}
.chart{overflow-x:auto;margin-top:.5rem} .chart svg{max-width:100%;height:auto}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any) -> str:
    return "–" if not isinstance(x, (int, float)) or x != x else f"{x:.3g}"


def _heatmaps(rows: Sequence[dict[str, Any]], bundle: Any, layer: Any, head: Any, method: str,
              batch_size: int = 8) -> list[str | None]:
    """Inline SVG heatmap per row, from one teacher-forced pass of the row's (source, translation)."""
    # Altair and vl-convert load only when a report is drawn (not on every `aligndebug` start); no cycle hides here.
    from .charts import alignment_heatmap
    from .export import chart_to_svg

    if not rows:
        return []
    usable = [r for r in rows if not r.get("unusable")]  # a sentence the model cannot take has no attention
    recs = iter(extract(bundle, [r["source"] for r in usable], [r["translation"] for r in usable],
                        batch_size=batch_size, keep=("cross",)) if usable else [])
    out: list[str | None] = []
    for r in rows:
        rec = None if r.get("unusable") else next(recs)
        if rec is None or not rec.tgt_words:
            out.append(None)  # unusable or empty translation: nothing to draw
            continue
        chart = alignment_heatmap(rec, layer=layer, head=head, method=method,
                                  title=f"cross-attention · layer {layer} · head {head} · {method}")
        # No ARIA label per cell: they were two thirds of each SVG's bytes (3.4 MB for 20 charts), and a screen
        # reader would read hundreds of cells one by one; the card's wrapper names the chart instead.
        svg = chart_to_svg(chart.configure(aria=False)).decode("utf-8")
        svg = svg[svg.find("<svg"):]  # drop any XML prolog so it embeds inline
        out.append(unique_ids(svg, f"c{len(out)}_"))
    return out


def unique_ids(svg: str, prefix: str) -> str:
    """Prefix every id in `svg` and the references to it: inline SVGs share one document, and
    each chart's legend gradient is called ``gradient_0``."""
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    if not ids:
        return svg
    alt = "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True))
    svg = re.sub(rf'\bid="({alt})"', lambda m: f'id="{prefix}{m.group(1)}"', svg)
    svg = re.sub(rf"url\(#({alt})\)", lambda m: f"url(#{prefix}{m.group(1)})", svg)
    return re.sub(rf'href="#({alt})"', lambda m: f'href="#{prefix}{m.group(1)}"', svg)


def render_report(rows: Iterable[dict[str, Any]], *, bundle: Any = None, calibration: Any = None, top: int = 20,
                  layer: Any = "mean", head: Any = "mean", method: str = "shift-att",
                  title: str = "aligndebug triage report") -> str:
    """The report as one HTML string. `rows` are triage rows (a list, or a RankedFile read as it goes);
    heatmaps need the model `bundle` (without it the report lists the suspects only). The rows shown are the
    first `top` by their `rank` (the ranking triage gave them: by the score, or by one error type's with
    `--rank-by`), or without ranks suspects first, most suspect first."""
    # sorted(...)[:top] in the rows' own order, holding only `top` rows
    shown = heapq.nsmallest(top, rows, key=lambda r: (r.get("rank", math.inf), not r.get("suspect"), -r["score"],
                                                      r["id"]))
    svgs = _heatmaps(shown, bundle, layer, head, method) if bundle is not None else [None] * len(shown)
    flag_counts: Counter[str] = Counter()
    n_rows = n_suspect = 0
    for r in rows:  # one pass: a RankedFile streams from disk
        n_rows += 1
        n_suspect += bool(r.get("suspect"))
        flag_counts.update(r.get("flags", []))
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>", f"<h1>{_esc(title)}</h1>"]
    meta = [f"{n_rows} sentences", f"top {len(shown)} shown"]
    if bundle is not None:
        meta.append(f"model {_esc(getattr(bundle, 'name', '?'))}")
    meta.append(f"attention: layer {_esc(layer)}, head {_esc(head)}, {_esc(method)}")
    if calibration is not None:
        meta.append(f"calibration: {_esc(calibration.source)}, n={calibration.n}, "
                    f"flags beyond the {calibration.percentile:g}th / {100 - calibration.percentile:g}th percentiles")
    parts.append(f'<p class="meta">{" · ".join(meta)}</p>')
    if calibration is not None:
        parts.append(f'<p class="meta">{n_suspect} suspects (score above the {calibration.percentile:g}th '
                     "percentile of the calibration sentences' own scores)</p>")
    if flag_counts:
        parts.append('<p class="meta">sentences with each flag: ' + ", ".join(
            f"{_esc(f)} {n}" for f, n in flag_counts.most_common()) + "</p>")
    comb = learned(calibration) if calibration is not None else None
    if comb is not None:
        what = ("that the sentence holds an error, at the error rates estimated on the calibration set"
                if comb.ranking == "mixture" else "that the sentence is an error (the largest over the error types)")
        parts.append(f'<p class="meta">score = learned log-odds {what}, from weights fitted without labels on '
                     "the calibration set against synthetic errors made from it; higher = more suspect. Error rates "
                     "and largest weights per kind of error:</p>")
        parts.append('<ul class="reasons weights">' + "".join(f"<li>{_esc(x)}</li>" for x in describe(comb)) + "</ul>")
    else:
        parts.append('<p class="meta">score = −log10 of the combined p-value of all signals against the calibration '
                     "(Fisher's method over signal families); higher = more suspect.</p>")
    for r, svg in zip(shown, svgs):
        badges = ['<span class="flag suspect">suspect</span>'] if r.get("suspect") else []
        badges += [f'<span class="flag">{_esc(f)}</span>' for f in r.get("flags", [])]
        flags = "".join(badges) or '<span class="flag noflag">no flag</span>'
        parts.append('<div class="card">')
        parts.append(f"<h2>#{_esc(r.get('rank', '?'))} · score {_num(r['score'])} · sentence {_esc(r['id'])}</h2>")
        parts.append(f"<div>{flags}</div>")
        pair = [("source", r["source"]), ("translation", r["translation"])]
        if r.get("reference") is not None:
            pair.append(("reference", r["reference"]))
        parts.append('<table class="pair">' + "".join(
            f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in pair) + "</table>")
        if r.get("reasons"):
            parts.append('<ul class="reasons">' + "".join(f"<li>{_esc(x)}</li>" for x in r["reasons"]) + "</ul>")
        sig = [s for s in SHOWN_SIGNALS if s in r]
        parts.append('<div class="sig">' + "".join(f"<span><b>{_esc(s)}</b> {_num(r.get(s))}</span>" for s in sig)
                     + "</div>")
        if svg:
            label = f"cross-attention heatmap of sentence {r['id']}: source words across, translation words down"
            parts.append(f'<div class="chart" role="img" aria-label="{_esc(label)}">{svg}</div>')
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(rows: Iterable[dict[str, Any]], path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Render (see `render_report`) and write atomically; returns the path."""
    return write_text_atomic(path, render_report(rows, **kwargs))
