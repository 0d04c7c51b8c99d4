"""Where rows and results go on disk: one resumable JSONL store, atomic file writes, JSON-safe values.

A JSONL store is appended to as rows come (a kill loses at most the rows not yet flushed) and opened
again by a rerun: a line torn by a kill is cut off, the keys already written are the ones done, and
every row can be read back (streamed, or by byte offset). Undefined values (NaN, inf) are written as
null; a reader names which fields to turn back into NaN.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError


def json_safe(x: Any) -> Any:
    """`x` with NaN/inf floats as None and numpy scalars as Python ones, through dicts, lists and tuples."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.generic):
        return json_safe(x.item())
    return x


def row_json(row: dict[str, Any]) -> str:
    """One JSONL line (without its newline); undefined values (NaN) become null."""
    return json.dumps(json_safe(row), ensure_ascii=False)


def parse_row(line: bytes | str, nan_fields: Collection[str] = ()) -> dict[str, Any]:
    """A row as written by `row_json`: null values of `nan_fields` are NaN again."""
    return {k: (float("nan") if v is None and k in nan_fields else v) for k, v in json.loads(line).items()}


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` to `path` through a temporary file beside it, so a kill never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def write_lines_atomic(path: str | os.PathLike[str], lines: Iterable[str]) -> Path:
    """Write `lines` (each without its newline), streamed, through a temporary file beside `path`."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in lines)
    tmp.replace(path)
    return path


def write_json_atomic(path: str | os.PathLike[str], data: Any, indent: int | None = 2) -> Path:
    """`data` as (indented) JSON, written atomically."""
    return write_text_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False))


class JsonlStore:
    """A resumable JSONL file of rows keyed by one integer field (`key`).

    Opening an existing file cuts off a torn last line and notes the keys done; a line that is not JSON
    raises InputError naming file and line, and `check(row, lineno)` may raise on a row that does not
    belong to this run. Without `resume` an existing file is replaced. `nan_fields`: the fields whose
    null is read back as NaN.
    """

    def __init__(self, path: str | os.PathLike[str], key: str, *, resume: bool = True,
                 check: Callable[[dict[str, Any], int], None] | None = None, nan_fields: Collection[str] = (),
                 on_row: Callable[[dict[str, Any]], None] | None = None):
        self.path, self.key, self.nan_fields = Path(path), key, frozenset(nan_fields)
        self.done: set[int] = set()
        self._sink = None
        if not resume:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            with open(self.path, "rb+") as f:
                end = 0
                for lineno, line in enumerate(f, start=1):
                    if not line.endswith(b"\n"):
                        break  # killed mid-write
                    end += len(line)
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise InputError(self.path, lineno, f"not a JSON row ({exc.msg})",
                                         "one JSON object a line, as aligndebug writes") from None
                    if check is not None:
                        check(row, lineno)
                    if row[key] not in self.done:  # a row written twice (e.g. by hand) counts once
                        self.done.add(row[key])
                        if on_row is not None:
                            on_row(row)
                f.truncate(end)

    def __len__(self) -> int:
        return len(self.done)

    def append(self, row: dict[str, Any], line: str | None = None) -> None:
        """Write `row` (as `line` when its JSON is at hand) and flush it."""
        if self._sink is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._sink = open(self.path, "a", encoding="utf-8")
        self._sink.write((line if line is not None else row_json(row)) + "\n")
        self._sink.flush()
        self.done.add(row[self.key])

    def sync(self) -> None:
        """Make what was appended durable (called once a chunk of rows is written)."""
        if self._sink is not None:
            os.fsync(self._sink.fileno())

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def __enter__(self) -> "JsonlStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def parse(self, line: bytes | str) -> dict[str, Any]:
        return parse_row(line, self.nan_fields)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (row for _, row in self.with_offsets())

    def with_offsets(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(byte offset, row) of every row, in file order."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            offset = 0
            for line in f:
                if line.strip():
                    yield offset, self.parse(line)
                offset += len(line)

    def row_at(self, handle: Any, offset: int) -> dict[str, Any]:
        """The row at byte `offset` of an open binary handle on the file."""
        handle.seek(offset)
        return self.parse(handle.readline())


def row_at(handle: Any, offset: int, nan_fields: Collection[str] = ()) -> dict[str, Any]:
    """The row at byte `offset` of an open binary handle on a JSONL file."""
    handle.seek(offset)
    return parse_row(handle.readline(), nan_fields)
