"""Streaming readers of pre-tokenized sentence pairs.

Two layouts are read:
  * two parallel files (``--src`` / ``--tgt``), one sentence a line, or a source file alone;
  * one pairs file, ``source words ||| target words`` a line (runs of spaces around ``|||``
    are allowed, as in the WPT/awesome-align gold sets).

Words are split on the ASCII space U+0020 only, and runs of spaces count as one separator.
Other whitespace is part of a word on purpose: the KFTT ja-en gold set uses U+3000
IDEOGRAPHIC SPACE as a token, and its gold indices are only right when that token survives.
Lines end at ``\\n`` only (a trailing ``\\r`` is dropped); a UTF-8 byte-order mark at the
start of a file is skipped. Everything streams, so files of millions of lines are fine.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import zip_longest

from .errors import InputError, PathLike

_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class SentencePair:
    """One sentence pair: `index` 0-based, `line` the 1-based line it came from."""

    index: int
    line: int
    src_words: list[str]
    tgt_words: list[str] | None
    unreadable: str | None = None  # why a line of it could not be read (``PATH:LINE: ...``; kept, see `iter_pairs`)

    @property
    def source(self) -> str:
        return " ".join(self.src_words)

    @property
    def target(self) -> str | None:
        return None if self.tgt_words is None else " ".join(self.tgt_words)


def split_words(text: str) -> list[str]:
    """Split on ASCII spaces only; runs of spaces and leading/trailing spaces make no empty words."""
    return [w for w in text.split(" ") if w]


def open_bytes(path: str):
    """A binary handle on `path`; `.gz` files (as Multi30k ships) are decompressed as they stream."""
    try:
        return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")
    except OSError as exc:
        raise InputError(path, None, f"cannot open file: {exc.strerror or exc}", "a readable file") from exc


def iter_lines(path: PathLike, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text without its line end) for each line of `path`.

    Reads bytes and decodes line by line so that a bad byte is reported with its line,
    and so that only ``\\n`` ends a line (str.splitlines would also split on U+0085, U+2028, ...).
    """
    for lineno, _, text in iter_lines_at(path, encoding=encoding):
        yield lineno, text


def iter_lines_at(path: PathLike, offset: int = 0, first_line: int = 1,
                  encoding: str = "utf-8") -> Iterator[tuple[int, int, str]]:
    """(line number, byte offset where the line starts, text) of each line from byte `offset` on.

    `first_line` is the number of the line at `offset`; lines are decoded as `iter_lines` decodes
    them, so a reader can note where a sentence starts and come back to it later (Ray workers do).
    """
    for lineno, pos, text, error in iter_lines_kept(path, offset, first_line, encoding):
        if error is not None:
            raise error
        yield lineno, pos, text


def iter_lines_kept(path: PathLike, offset: int = 0, first_line: int = 1,
                    encoding: str = "utf-8") -> Iterator[tuple[int, int, str, InputError | None]]:
    """`iter_lines_at`, keeping the lines it would refuse: (line number, offset, text, error or None). A line
    `decode_line` refuses (bytes that cannot be decoded, a NUL byte, a stray byte-order mark) comes with its
    error, as text with U+FFFD in place of what could not be read (a stray byte-order mark dropped)."""
    path = os.fspath(path)
    with open_bytes(path) as handle:
        if offset:
            handle.seek(offset)
        pos = offset
        for lineno, raw in enumerate(handle, start=first_line):
            try:
                yield lineno, pos, decode_line(path, lineno, raw, encoding), None
            except InputError as exc:
                text = _line_bytes(lineno, raw).decode(encoding, errors="replace")
                yield lineno, pos, text.replace("\x00", "\ufffd").replace("\ufeff", ""), exc
            pos += len(raw)


def iter_lines_flagged(path: PathLike, offset: int = 0, first_line: int = 1, encoding: str = "utf-8",
                       keep: bool = False) -> Iterator[tuple[int, str, str | None]]:
    """(line number, text, why it could not be read or None) of each line from `offset` on, read as
    `iter_lines_kept` reads them; a line it cannot read raises its InputError unless `keep` (then the why is
    ``PATH:LINE: message``)."""
    for lineno, _, text, error in iter_lines_kept(path, offset, first_line, encoding):
        if error is not None and not keep:
            raise error
        yield lineno, text, None if error is None else f"{error.path}:{error.line}: {error.message}"


def _line_bytes(lineno: int, raw: bytes) -> bytes:
    """A raw line without its BOM (first line only), ``\\n`` and trailing ``\\r``."""
    if lineno == 1 and raw.startswith(_BOM):
        raw = raw[len(_BOM):]
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw


def decode_line(path: str, lineno: int, raw: bytes, encoding: str = "utf-8") -> str:
    """One raw line as text: BOM (first line only), ``\\n`` and a trailing ``\\r`` dropped; bad bytes name the line."""
    raw = _line_bytes(lineno, raw)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        bad = raw[exc.start:exc.end]
        raise InputError(
            path, lineno, f"bytes {bad!r} at byte {exc.start + 1} of the line cannot be decoded as {encoding}",
            f"{encoding} text",
        ) from None
    # Both are invisible in a terminal and would become part of a word: say so rather than align them.
    for char, what in (("\x00", "a NUL byte"), ("\ufeff", "a byte-order mark (U+FEFF) after the start of the file")):
        at = text.find(char)
        if at >= 0:
            raise InputError(path, lineno, f"{what} at character {at + 1} of the line",
                             "plain text (a file joined from others may carry one; remove it)")
    return text


def count_lines(path: PathLike) -> int:
    """Number of lines in `path` (a last line without a newline counts), read in chunks."""
    path = os.fspath(path)
    handle = open_bytes(path)
    n = 0
    last = b""
    with handle:
        while chunk := handle.read(_CHUNK):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    if last and last != b"\n":
        n += 1
    return n


def line_words(path: str, lineno: int, text: str, side: str, allow_empty: bool) -> list[str]:
    """The words of one line's `side` ("source"/"target"); an empty one raises InputError unless `allow_empty`."""
    words = split_words(text)
    if not words and not allow_empty:
        raise InputError(path, lineno, f"empty {side} sentence", "at least one word separated by ASCII spaces; remove the line or give it a word")
    return words


def split_pair(path: str, lineno: int, text: str) -> tuple[str, str]:
    """Source and target text of one ``src ||| tgt`` line; anything but one separator raises InputError."""
    parts = text.split("|||")
    if len(parts) != 2:
        found = "no '|||'" if len(parts) == 1 else f"{len(parts) - 1} '|||' separators"
        raise InputError(path, lineno, f"found {found}", "one 'source words ||| target words' pair a line")
    return parts[0], parts[1]


def iter_pairs(
    src_path: PathLike | None = None,
    tgt_path: PathLike | None = None,
    pairs_path: PathLike | None = None,
    require_target: bool = False,
    allow_empty: bool = False,
    encoding: str = "utf-8",
    keep_unreadable: bool = False,
) -> Iterator[SentencePair]:
    """Stream sentence pairs from parallel files or from one ``src ||| tgt`` file.

    Give either `pairs_path`, or `src_path` with an optional `tgt_path`. Without a target
    file `tgt_words` is None, unless `require_target` is set, which makes it an error.
    Raises InputError (with file and line) for undecodable bytes (unless `keep_unreadable`: the pair is
    kept with `unreadable` set and the line read as `iter_lines_kept` reads it), empty sentences (unless
    `allow_empty`), a pairs line without exactly one ``|||`` (unless the line was unreadable and kept: then
    it is all source), and parallel files whose line counts differ (raised when the shorter file runs out,
    after the pairs before it were yielded).
    """
    if pairs_path is not None:
        if src_path is not None or tgt_path is not None:
            raise InputError(pairs_path, None, "a pairs file was given together with --src/--tgt files", "either one 'src ||| tgt' file or parallel source/target files")
        path = os.fspath(pairs_path)
        for index, (lineno, text, why) in enumerate(iter_lines_flagged(path, encoding=encoding, keep=keep_unreadable)):
            yield pair_of_line(path, index, lineno, text, allow_empty, why)
        return
    if src_path is None:
        raise InputError(tgt_path, None, "no source file given", "a source file (--src) or a pairs file")
    src = os.fspath(src_path)
    if tgt_path is None:
        if require_target:
            raise InputError(src, None, "no target file given", "a target file (--tgt) or a 'src ||| tgt' pairs file")
        for index, (lineno, text, why) in enumerate(iter_lines_flagged(src, encoding=encoding, keep=keep_unreadable)):
            yield pair_of_lines(src, None, index, lineno, text, None, allow_empty, why)
        return
    tgt = os.fspath(tgt_path)
    for index, (s, t) in enumerate(zip_longest(iter_lines_flagged(src, encoding=encoding, keep=keep_unreadable),
                                               iter_lines_flagged(tgt, encoding=encoding, keep=keep_unreadable))):
        if s is None or t is None:
            short, long_ = (src, tgt) if s is None else (tgt, src)
            lineno = (t or s)[0]
            raise InputError(
                long_, lineno,
                f"{short} ended after {lineno - 1} lines but {long_} has a line {lineno}",
                "parallel files with the same number of lines",
            )
        yield pair_of_lines(src, tgt, index, s[0], s[1], t[1], allow_empty, join_reasons(s[2], t[2]))


def join_reasons(*reasons: str | None) -> str | None:
    """Why a sentence's lines could not be read, the given reasons joined ("; "), or None without any."""
    return "; ".join(r for r in reasons if r) or None


def pair_of_lines(src: str, tgt: str | None, index: int, lineno: int, src_text: str, tgt_text: str | None,
                  allow_empty: bool, unreadable: str | None = None) -> SentencePair:
    """The pair of one line of a source file and (maybe) of a target file, split as `iter_pairs` splits."""
    keep = allow_empty or unreadable is not None  # an unreadable line is kept (and flagged), whatever it holds
    return SentencePair(index, lineno, line_words(src, lineno, src_text, "source", keep),
                        None if tgt is None else line_words(tgt, lineno, tgt_text or "", "target", keep), unreadable)


def pair_of_line(path: str, index: int, lineno: int, text: str, allow_empty: bool,
                 unreadable: str | None = None) -> SentencePair:
    """The pair of one ``source ||| target`` line, split as `iter_pairs` splits."""
    if not text.strip(" ") and allow_empty:
        return SentencePair(index, lineno, [], [], unreadable)
    if unreadable is not None and text.count("|||") != 1:
        return SentencePair(index, lineno, split_words(text), [], unreadable)
    src_text, tgt_text = split_pair(path, lineno, text)
    return pair_of_lines(path, path, index, lineno, src_text, tgt_text, allow_empty, unreadable)


def iter_pair_lengths(pairs) -> Iterator[tuple[int, int]]:
    """(n_src_words, n_tgt_words) per pair, streaming: the `sentences` argument of gold.scan_gold."""
    for p in pairs:
        if p.tgt_words is None:
            raise InputError(None, p.line, "sentence pair has no target side", "pairs with targets to check gold alignments against")
        yield len(p.src_words), len(p.tgt_words)


def pair_lengths(pairs) -> list[tuple[int, int]]:
    """(n_src_words, n_tgt_words) per pair, as a list: the `sentences` argument of gold.read_gold."""
    return list(iter_pair_lengths(pairs))


def blank_as_none(lines: Sequence[str]) -> list[str | None]:
    """`lines` with each blank one (spaces only) as None: an empty reference line means no reference."""
    return [t if t.strip(" ") else None for t in lines]


def read_lines_keeping_bad(path: str | os.PathLike[str], encoding: str = "utf-8") -> tuple[list[str], dict[int, str]]:
    """Every line of a text file for a run that keeps bad lines (triage): (texts, bad), each line read as
    `iter_lines_kept` reads it, `bad` mapping the 0-based index of a line it could not read to why
    (``PATH:LINE: message``)."""
    texts: list[str] = []
    bad: dict[int, str] = {}
    for lineno, text, why in iter_lines_flagged(path, encoding=encoding, keep=True):
        if why is not None:
            bad[lineno - 1] = why
        texts.append(text)
    return texts, bad
