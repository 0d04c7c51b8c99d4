"""store.py: the one resumable JSONL store and the atomic writes every output goes through."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from aligndebug.store import (JsonlStore, json_safe, parse_row, row_json, write_json_atomic, write_lines_atomic,
                              write_text_atomic)


def test_json_safe_values():
    row = {"a": float("nan"), "b": [1.5, float("inf")], "c": np.float32(0.25), "d": (np.int64(3), None)}
    assert json_safe(row) == {"a": None, "b": [1.5, None], "c": 0.25, "d": [3, None]}
    line = row_json({"x": float("nan"), "w": "Größe"})
    assert line == '{"x": null, "w": "Größe"}'  # valid JSON, non-ASCII kept
    back = parse_row(line, nan_fields={"x"})
    assert math.isnan(back["x"]) and parse_row(line)["x"] is None


def test_a_torn_line_is_cut_and_done_keys_are_read(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"index": 0, "v": 1}\n{"index": 1, "v": 2}\n{"index": 0, "v": 1}\n{"index": 2, "v"',
                    encoding="utf-8")
    seen = []
    store = JsonlStore(path, "index", on_row=seen.append)
    assert store.done == {0, 1} and [r["v"] for r in seen] == [1, 2]  # a row written twice counts once
    assert path.read_text(encoding="utf-8").endswith('"v": 1}\n')  # the torn line is gone
    store.append({"index": 2, "v": float("nan")})
    store.sync()
    store.close()
    assert [r["index"] for r in store] == [0, 1, 0, 2] and store.done == {0, 1, 2}
    offsets = dict((r["index"], o) for o, r in store.with_offsets())
    with open(path, "rb") as f:
        assert store.row_at(f, offsets[2]) == {"index": 2, "v": None}


def test_check_refuses_rows_of_another_run_and_no_resume_starts_afresh(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 0, "source": "a"}\n', encoding="utf-8")

    def check(row, lineno):
        if row["source"] != "b":
            raise ValueError("another input")

    with pytest.raises(ValueError, match="another input"):
        JsonlStore(path, "id", check=check)
    with JsonlStore(path, "id", resume=False) as store:
        assert store.done == set() and not path.exists()
        store.append({"id": 5, "source": "b"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"id": 5, "source": "b"}


def test_atomic_writes_leave_no_temporary_file(tmp_path):
    write_json_atomic(tmp_path / "s.json", {"aer": 0.5})
    write_text_atomic(tmp_path / "r.html", "<p>é</p>")
    write_lines_atomic(tmp_path / "a.txt", iter(["0-0", "1-1"]))
    assert json.loads((tmp_path / "s.json").read_text(encoding="utf-8")) == {"aer": 0.5}
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == "<p>é</p>"
    assert (tmp_path / "a.txt").read_bytes() == b"0-0\n1-1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "r.html", "s.json"]
