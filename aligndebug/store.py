"""Where rows and results go on disk: one resumable JSONL store, atomic file writes, JSON-safe values.

A JSONL store is appended to as rows come (a kill loses at most the rows not yet flushed) and opened
again by a rerun: a line torn by a kill is cut off, the keys already written are the ones done, and
every row can be read back (streamed, or by byte offset). Undefined values (NaN, inf) are written as
null; a reader names which fields to turn back into NaN.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
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
    if isinstance(x, np.ndarray):
        return json_safe(x.tolist())
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


# ------------------------------------------------------------------------------------- run records

def run_record_path(path: str | os.PathLike[str]) -> Path:
    """Where the record of the run that writes rows file `path` is kept: ``<path>.run.json``."""
    return Path(str(path) + ".run.json")


def file_fingerprint(path: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """Name, size and sha256 of an input file (None for no file): what a resumed run must read again."""
    if path is None:
        return None
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return {"name": Path(path).name, "bytes": size, "sha256": h.hexdigest()}


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict) and "sha256" in a and "sha256" in b:
            what = "other content" if a.get("name") == b.get("name") else f"{a.get('name')} then, {b.get('name')} now"
            out.append(f"{key}: {what} ({a.get('bytes')} bytes then, {b.get('bytes')} now)")
        else:
            out.append(f"{key}: {a!r} then, {b!r} now")
    return out


def claim_run(path: str | os.PathLike[str], run: dict[str, Any], *, resume: bool, key: str,
              n_items: int | None = None, fields: Sequence[str] = (),
              expected: Callable[[], Iterable[tuple[int, tuple]]] | None = None) -> None:
    """Check that rows file `path` may be written by the run described by `run`, then record the run beside it.

    Resuming, an existing rows file must carry the record of this very run (model, settings, and the inputs
    under `run["inputs"]`): a file without one, or from another run, is refused with what differs, and nothing
    is written to it. The sentences themselves (`run["text"]`, informative only) are checked row by row
    instead, so that fixing a bad line after a failed run keeps the rows already done: `expected()` yields
    (key, values of `fields`) for every input sentence, and each kept row must hold those values. Every row is
    read first: a line that is not a JSON row, a row without an integer `key`, a `key` past the `n_items`
    inputs or a row of another sentence is an error naming file and line (only a torn last line, left by a
    kill, is allowed; the store cuts it off when it opens). Starting afresh replaces any record.
    """
    path = Path(path)
    record = run_record_path(path)
    if resume and path.exists() and path.stat().st_size > 0:
        if not record.exists():
            raise InputError(path, None, f"--resume found no record of the run that wrote this file ({record.name}): "
                             "it may be another program's file or from an older aligndebug, so it is left untouched",
                             "the rows file of an earlier run of this command, or no --resume to start afresh")
        try:
            old = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(record, None, f"unreadable run record ({exc})", "the JSON aligndebug wrote") from None
        diff = _differences({k: v for k, v in old.items() if k != "text"}, {k: v for k, v in run.items() if k != "text"})
        if diff:
            raise InputError(path, None, "--resume: this rows file was written by another run; " + "; ".join(diff),
                             "the same inputs, model and settings, or another --out")
        digests = _check_rows(path, key, n_items, fields)
        if expected is not None and digests:
            for k, values in expected():
                kept = digests.pop(k, None)
                if kept is not None and kept[1] != _digest(values):
                    raise InputError(path, kept[0], f"row {key} {k} holds another sentence than input sentence "
                                     f"{k + 1}: this rows file is from another input",
                                     "the rows file of this input, or another --out")
                if not digests:
                    break
    record.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record, run)


def _digest(values: Sequence[Any]) -> str:
    return hashlib.sha1(json.dumps(list(values), ensure_ascii=False).encode("utf-8")).hexdigest()


def _check_rows(path: Path, key: str, n_items: int | None, fields: Sequence[str]) -> dict[int, tuple[int, str]]:
    """Every complete line of `path` is a JSON row with an integer `key` in range (InputError otherwise);
    returns {key: (line, digest of the row's `fields`)}."""
    out: dict[int, tuple[int, str]] = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.endswith(b"\n") or not line.strip():
                continue  # a torn last line (cut off when the store opens) or a blank one
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InputError(path, lineno, f"not a JSON row ({getattr(exc, 'msg', exc)})",
                                 "one JSON object a line, as aligndebug writes") from None
            value = row.get(key) if isinstance(row, dict) else None
            if not isinstance(value, int) or isinstance(value, bool):
                raise InputError(path, lineno, f"a row without an integer {key!r}", "rows that aligndebug wrote")
            if n_items is not None and not 0 <= value < n_items:
                raise InputError(path, lineno, f"row {key} {value} is past the {n_items} sentences of the input",
                                 "the rows file of this input")
            if fields:
                out[value] = (lineno, _digest(row.get(f) for f in fields))
    return out
