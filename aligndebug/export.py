"""Exports: charts to PNG/SVG (vl-convert, no browser needed), Records to JSON, result rows to JSONL/CSV."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from typing import Any, Iterable, Mapping

import numpy as np

from .record import Record

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# C0 and C1 control characters, DEL, and the line and paragraph separators
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _picture(match: re.Match) -> str:
    code = ord(match.group())
    return chr(0x2400 + code) if code < 0x20 else "\u2421" if code == 0x7F else "\ufffd"


def printable_text(text: str) -> str:
    """`text` as an image can show it: a C0 control character as its control picture (NUL as ␀, DEL as ␡), any
    other control character and a line or paragraph separator as U+FFFD; printable text unchanged. vl-convert
    aborts the whole process on a NUL in an image's text and writes SVG that is not XML with one in an ARIA
    label, and Vega's expression parser fails on a line separator inside a string."""
    return _UNPRINTABLE.sub(_picture, text) if _UNPRINTABLE.search(text) else text


def _printable_data(node: Any) -> Any:
    """`node` (a spec) with every string in its inline data rows made `printable_text`."""
    def rows(values: list) -> list:
        return [{k: printable_text(v) if isinstance(v, str) else v for k, v in r.items()} if isinstance(r, dict)
                else r for r in values]

    if isinstance(node, list):
        return [_printable_data(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k == "datasets" and isinstance(v, dict):
            out[k] = {name: rows(vals) if isinstance(vals, list) else vals for name, vals in v.items()}
        elif k == "values" and isinstance(v, list):
            out[k] = rows(v)
        else:
            out[k] = _printable_data(v)
    return out


def _spec(chart: Any) -> dict[str, Any]:
    """A Vega-Lite spec dict from an Altair chart (or a spec dict passed through), its data printable."""
    return _printable_data(chart if isinstance(chart, dict) else chart.to_dict())


def chart_to_png(chart: Any, scale: float = 2.0) -> bytes:
    """PNG bytes of an Altair chart; ``scale`` 2 gives crisp images on high-DPI screens and in papers."""
    import vl_convert as vlc

    return vlc.vegalite_to_png(_spec(chart), scale=scale)


def chart_to_svg(chart: Any) -> bytes:
    """SVG (UTF-8 bytes) of an Altair chart."""
    import vl_convert as vlc

    return vlc.vegalite_to_svg(_spec(chart)).encode("utf-8")


def record_to_json(rec: Record, arrays: bool = True) -> bytes:
    """The Record as UTF-8 JSON (arrays base64-encoded; `Record.from_json` reads it back)."""
    return rec.to_json(arrays=arrays).encode("utf-8")


def _plain(value: Any) -> Any:
    """JSON-safe value: numpy scalars/arrays to Python, NaN/inf to None, sets to sorted lists."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return [_plain(v) for v in sorted(value)]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def rows_to_jsonl(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """One JSON object per line (UTF-8, non-ASCII kept); NaN becomes null so every line is strict JSON."""
    return "".join(json.dumps(_plain(dict(r)), ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def rows_to_csv(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """CSV with the union of the rows' keys as columns (first-seen order); lists and dicts are JSON in a cell."""
    rows = [dict(r) for r in rows]
    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        out = {}
        for k, v in r.items():
            v = _plain(v)
            out[k] = json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else ("" if v is None else v)
        writer.writerow(out)
    return buf.getvalue().encode("utf-8")
