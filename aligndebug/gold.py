"""Gold word alignments: readers for the common formats, index-base detection, Pharaoh writers.

A link is ``(source_word, target_word)``, 0-based, whatever the file used.

Formats read by :func:`read_gold` (``fmt=``):

``"pharaoh"``
    One line per sentence, whitespace-separated tokens ``i-j`` (Sure) and ``ipj`` or ``i?j``
    (Possible). An empty line is a sentence without links. This is what awesome-align,
    eflomal, fast_align and GIZA++ post-processing write.
``"sp"``
    One link a line: ``S i j`` or ``P i j``. Sentences are separated by blank lines: each
    blank line ends one sentence (so two blank lines in a row hold an empty sentence
    between them), and link lines left at the end of the file form the last sentence.
    A file ending in a blank line therefore has no extra empty sentence.
``"naacl"``
    The HLT-NAACL 2003 / WPT format: ``sentno i j [S|P] [confidence]`` a line, sentence
    numbers 1-based. A missing S/P means Sure; the confidence is read and ignored.
    Sentences with no lines have an empty alignment; blank lines are ignored.

Word indices are 0- or 1-based (``base=``); the reader detects which when not told and
says how sure it is (:attr:`GoldSet.base_source`, :meth:`GoldSet.describe`, warnings).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

from .errors import InputError, PathLike
from .pairs import iter_lines

Link = tuple[int, int]

FORMATS = ("pharaoh", "sp", "naacl")
_PHARAOH_TOKEN = re.compile(r"([0-9]+)([-p?])([0-9]+)")
_INT = re.compile(r"[0-9]+")
_EXPECTED = {
    "pharaoh": "whitespace-separated 'i-j' (sure) or 'ipj' / 'i?j' (possible) tokens",
    "sp": "'S i j' or 'P i j' (one link a line, blank line between sentences)",
    "naacl": "'sentno i j [S|P] [confidence]' with non-negative integers",
}


@dataclass(frozen=True)
class GoldAlignment:
    """Sure and possible links of one sentence; `possible` always contains `sure`."""

    sure: frozenset[Link]
    possible: frozenset[Link]

    def __post_init__(self) -> None:
        sure = frozenset((int(i), int(j)) for i, j in self.sure)
        possible = frozenset((int(i), int(j)) for i, j in self.possible)
        if not sure <= possible:
            missing = sorted(sure - possible)[:5]
            raise ValueError(f"sure links must be a subset of possible links; not in possible: {missing}")
        object.__setattr__(self, "sure", sure)
        object.__setattr__(self, "possible", possible)

    @classmethod
    def from_links(cls, sure: Iterable[Link] = (), possible: Iterable[Link] = ()) -> GoldAlignment:
        """Build from sure links and possible-only links (the union is taken for `possible`)."""
        sure = frozenset(sure)
        return cls(sure, sure | frozenset(possible))

    @property
    def possible_only(self) -> frozenset[Link]:
        return self.possible - self.sure


@dataclass
class GoldSet:
    """A gold file as read: one entry per sentence (None = skipped as invalid)."""

    alignments: list[GoldAlignment | None]
    path: str | None
    fmt: str
    fmt_detected: bool
    base: int
    base_detected: bool  # True when the base was not given (detected or guessed)
    base_source: str = "given"  # "given" | "detected" (from evidence) | "guessed" (no decisive evidence)
    base_reason: str = ""
    warnings: list[str] = field(default_factory=list)
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.alignments)

    def __iter__(self):
        return iter(self.alignments)

    def __getitem__(self, index):
        return self.alignments[index]

    @property
    def n_sure(self) -> int:
        return sum(len(a.sure) for a in self.alignments if a is not None)

    @property
    def n_possible_only(self) -> int:
        """Possible links that are not also Sure (what ``ipj`` tokens count in a Pharaoh file)."""
        return sum(len(a.possible) - len(a.sure) for a in self.alignments if a is not None)

    def describe(self) -> str:
        name = os.path.basename(self.path) if self.path else "<gold>"
        skipped = f" ({self.skipped} skipped)" if self.skipped else ""
        fmt_how = "detected" if self.fmt_detected else "given"
        base_how = self.base_source + (f": {self.base_reason}" if self.base_reason else "")
        return (
            f"{name}: {len(self.alignments)} sentences{skipped}, {self.n_sure} sure + {self.n_possible_only} possible-only links; "
            f"format {self.fmt} ({fmt_how}); indices {self.base}-based ({base_how})"
        )


# ----------------------------------------------------------------------------------------- parsing

@dataclass
class _Raw:
    """Links of one sentence as written in the file (base not applied yet)."""

    line: int | None  # first line of the sentence (None: sentence has no line in a NAACL file)
    links: list[tuple[int, int, bool, int]] = field(default_factory=list)  # (i, j, sure, line)
    error: InputError | None = None


def _detect_format(path: str, lines: list[tuple[int, str]]) -> str:
    for lineno, text in lines:
        fields = text.split()
        if not fields:
            continue
        if _PHARAOH_TOKEN.fullmatch(fields[0]):  # a bad token later on the line is reported by the parser
            return "pharaoh"
        if len(fields) == 3 and fields[0] in ("S", "P", "s", "p") and all(_INT.fullmatch(f) for f in fields[1:]):
            return "sp"
        if 3 <= len(fields) <= 5 and all(_INT.fullmatch(f) for f in fields[:3]):
            return "naacl"
        raise InputError(
            path, lineno, f"cannot tell the gold alignment format from {text.strip()[:60]!r}",
            "Pharaoh 'i-j ipj' tokens, 'S i j'/'P i j' lines, or 'sentno i j [S|P]' lines",
        )
    return "pharaoh"  # only blank lines: every sentence is empty, which Pharaoh reads as is


def _fail(raw: _Raw, err: InputError, skip_invalid: bool) -> None:
    """Raise `err`, or (skip_invalid) mark the sentence invalid, keeping its first error."""
    if not skip_invalid:
        raise err
    if raw.error is None:
        raw.error = err


def _parse_pharaoh(path: str, lines, skip_invalid: bool) -> list[_Raw]:
    raws = []
    for lineno, text in lines:
        raw = _Raw(lineno)
        raws.append(raw)
        for tok in text.split():
            m = _PHARAOH_TOKEN.fullmatch(tok)
            if m is None:
                _fail(raw, InputError(path, lineno, f"malformed link {tok!r}", _EXPECTED["pharaoh"]), skip_invalid)
                continue
            raw.links.append((int(m.group(1)), int(m.group(3)), m.group(2) == "-", lineno))
    return raws


def _parse_sp(path: str, lines, skip_invalid: bool) -> list[_Raw]:
    raws: list[_Raw] = []
    current: _Raw | None = None
    for lineno, text in lines:
        fields = text.split()
        if not fields:  # a blank line ends one sentence (an empty one if no link lines came before)
            raws.append(current if current is not None else _Raw(lineno))
            current = None
            continue
        if current is None:
            current = _Raw(lineno)
        if len(fields) != 3 or fields[0] not in ("S", "P", "s", "p") or not all(_INT.fullmatch(f) for f in fields[1:]):
            _fail(current, InputError(path, lineno, f"malformed line {text.strip()[:60]!r}", _EXPECTED["sp"]), skip_invalid)
            continue
        current.links.append((int(fields[1]), int(fields[2]), fields[0] in ("S", "s"), lineno))
    if current is not None:
        raws.append(current)
    return raws


def _parse_naacl(path: str, lines, skip_invalid: bool, n_sentences: int | None) -> list[_Raw]:
    by_sent: dict[int, _Raw] = {}
    for lineno, text in lines:
        fields = text.split()
        if not fields:
            continue
        if not (3 <= len(fields) <= 5) or not _INT.fullmatch(fields[0]):
            raise InputError(path, lineno, f"malformed line {text.strip()[:60]!r}", _EXPECTED["naacl"])
        sentno = int(fields[0])
        if sentno < 1:
            raise InputError(path, lineno, "sentence number 0", "1-based sentence numbers")
        if n_sentences is not None and sentno > n_sentences:
            raise InputError(path, lineno, f"sentence number {sentno} but only {n_sentences} sentence pairs were given",
                             f"sentence numbers 1..{n_sentences}")
        raw = by_sent.setdefault(sentno, _Raw(lineno))
        sure = True
        ok = all(_INT.fullmatch(f) for f in fields[1:3])
        rest = fields[3:]
        if ok and rest and rest[0] in ("S", "P", "s", "p"):
            sure = rest[0] in ("S", "s")
            rest = rest[1:]
        if ok and rest:
            ok = len(rest) == 1 and _is_float(rest[0])
        if not ok:
            _fail(raw, InputError(path, lineno, f"malformed line {text.strip()[:60]!r}", _EXPECTED["naacl"]), skip_invalid)
            continue
        raw.links.append((int(fields[1]), int(fields[2]), sure, lineno))
    n = n_sentences if n_sentences is not None else max(by_sent, default=0)
    return [by_sent.get(k, _Raw(None)) for k in range(1, n + 1)]


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------ index base

def _detect_base(raws: list[_Raw], sentences: list[tuple[int, int]] | None) -> tuple[int, str, str]:
    """Return (base, "detected"|"guessed", reason)."""
    n_links = zero = equal = bad0 = bad1 = 0
    for k, raw in enumerate(raws):
        # sentences already marked invalid (a malformed token) still count: their parsed links are evidence
        lens = sentences[k] if sentences is not None and k < len(sentences) else None
        for i, j, _, _ in raw.links:
            n_links += 1
            zero += i == 0 or j == 0
            if lens is not None:
                ns, nt = lens
                equal += i == ns or j == nt
                bad0 += i >= ns or j >= nt
                bad1 += i < 1 or j < 1 or i > ns or j > nt
    if n_links == 0:
        return 0, "guessed", "no links to tell from; 0 assumed"
    if zero and not equal:
        return 0, "detected", "index 0 occurs"
    if equal and not zero:
        return 1, "detected", "an index equals the sentence length"
    if zero and equal:
        base = 0 if bad0 <= bad1 else 1
        return base, "guessed", (
            f"both index 0 and indices equal to the sentence length occur; {bad0} links are out of range read 0-based, "
            f"{bad1} read 1-based")
    if sentences is None:
        return 1, "guessed", f"no index 0 among {n_links} links; pass sentences (or base) to check"
    return 1, "guessed", f"no index 0 among {n_links} links and every link is in range either way"


# ------------------------------------------------------------------------------------------ reader

def read_gold(
    path: PathLike,
    base: int | None = None,
    fmt: str | None = None,
    sentences: list[tuple[int, int]] | None = None,
    skip_invalid: bool = False,
) -> GoldSet:
    """Read a gold (or predicted) alignment file into a GoldSet of 0-based links.

    `base` 0 or 1 (None: detect), `fmt` one of "pharaoh", "sp", "naacl" (None: detect from
    the first non-blank line). `sentences` gives (n_src_words, n_tgt_words) per sentence:
    with it, the number of sentences and every index are checked, and base detection can use
    the sentence lengths. Errors raise InputError naming the file, the line and what was
    expected; with `skip_invalid`, sentences holding malformed or out-of-range links become
    None instead and one warning lists them. A wrong number of sentences always raises.
    """
    path = os.fspath(path)
    if base not in (None, 0, 1):
        raise InputError(path, None, f"index base {base!r}", "0 or 1 (or None to detect)")
    if fmt is not None and fmt not in FORMATS:
        raise InputError(path, None, f"unknown gold format {fmt!r}", " or ".join(FORMATS))
    lines = list(iter_lines(path))
    warnings: list[str] = []
    fmt_detected = fmt is None
    if fmt is None:
        fmt = _detect_format(path, lines)

    n_sent = None if sentences is None else len(sentences)
    if fmt == "pharaoh":
        raws = _parse_pharaoh(path, lines, skip_invalid)
        if n_sent is not None and len(raws) > n_sent and all(not r.links and r.error is None for r in raws[n_sent:]):
            warnings.append(f"ignored {len(raws) - n_sent} blank line(s) after the last of {n_sent} sentences")
            raws = raws[:n_sent]
    elif fmt == "sp":
        raws = _parse_sp(path, lines, skip_invalid)
    else:
        raws = _parse_naacl(path, lines, skip_invalid, n_sent)
        last = max((k for k, r in enumerate(raws) if r.line is not None), default=-1)
        if n_sent is not None and last + 1 < n_sent:
            warnings.append(f"no lines for sentences {last + 2}..{n_sent}: read as empty alignments")
    if n_sent is not None and len(raws) != n_sent:
        unit = "lines" if fmt == "pharaoh" else "sentences"
        if len(raws) < n_sent:
            line = (lines[-1][0] + 1) if lines else 1
            msg = f"gold ends after {len(raws)} {unit} but {n_sent} sentence pairs were given"
        else:
            line = raws[n_sent].line
            msg = f"gold has more than {n_sent} {unit} ({len(raws)}) but {n_sent} sentence pairs were given"
        raise InputError(path, line, msg, f"one gold {'line' if fmt == 'pharaoh' else 'sentence'} per sentence pair")

    if base is None:
        base, base_source, base_reason = _detect_base(raws, sentences)
        if base_source == "guessed":
            warnings.append(f"index base guessed as {base}-based ({base_reason}); pass base= to be sure")
    else:
        base_source, base_reason = "given", ""

    alignments: list[GoldAlignment | None] = []
    for k, raw in enumerate(raws):
        if raw.error is None:
            _convert(path, raw, base, sentences[k] if sentences is not None else None, skip_invalid)
        if raw.error is not None:
            alignments.append(None)
            continue
        sure = frozenset((i - base, j - base) for i, j, s, _ in raw.links if s)
        alignments.append(GoldAlignment(sure, sure | frozenset((i - base, j - base) for i, j, _, _ in raw.links)))

    errors = [r.error for r in raws if r.error is not None]
    if errors:
        unit = "line" if fmt == "pharaoh" else "sentence"
        shown = "; ".join(str(e) for e in errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        warnings.append(f"skipped {len(errors)} {unit}{'s' if len(errors) != 1 else ''} with invalid links (alignment None): {shown}")
    return GoldSet(alignments, path, fmt, fmt_detected, base, base_source != "given", base_source, base_reason, warnings, len(errors))


def _convert(path: str, raw: _Raw, base: int, lens: tuple[int, int] | None, skip_invalid: bool) -> None:
    """Check one sentence's links under `base` (and its lengths); raise or mark it invalid."""
    for i, j, sure, lineno in raw.links:
        tok = f"{i}{'-' if sure else 'p'}{j}"
        problem = expected = None
        if base == 1 and (i == 0 or j == 0):
            problem, expected = f"link {tok} has index 0 in a 1-based file", "indices from 1"
        elif lens is not None:
            ns, nt = lens
            hi_s, hi_t = ns - 1 + base, nt - 1 + base
            if i - base >= ns:
                problem = f"link {tok}: source index {i} is past the end of a {ns}-word source sentence"
                expected = f"{base}-based source indices {base}..{hi_s}"
            elif j - base >= nt:
                problem = f"link {tok}: target index {j} is past the end of a {nt}-word target sentence"
                expected = f"{base}-based target indices {base}..{hi_t}"
        if problem is not None:
            err = InputError(path, lineno, problem, expected)
            if not skip_invalid:
                raise err
            raw.error = err
            return


def parse_pharaoh_line(text: str, base: int = 0, lengths: tuple[int, int] | None = None,
                       path: PathLike | None = None, line: int | None = None) -> GoldAlignment:
    """One Pharaoh line (e.g. typed into the app) -> GoldAlignment, with the same checks as read_gold.

    `lengths` is (n_src_words, n_tgt_words) for range checks; `path`/`line` only label errors.
    """
    if base not in (0, 1):
        raise InputError(path, line, f"index base {base!r}", "0 or 1")
    where = None if path is None else os.fspath(path)
    raw = _parse_pharaoh(where, [(line, text)], skip_invalid=False)[0]
    _convert(where, raw, base, lengths, skip_invalid=False)
    sure = frozenset((i - base, j - base) for i, j, s, _ in raw.links if s)
    return GoldAlignment(sure, sure | frozenset((i - base, j - base) for i, j, _, _ in raw.links))


# ------------------------------------------------------------------------------------------ writers

def format_pharaoh(links: Iterable[Link] | GoldAlignment, possible: Iterable[Link] = (), base: int = 0) -> str:
    """One Pharaoh line: links sorted by (source, target); `possible` links not in `links` get ``p``.

    A GoldAlignment may be passed as `links`: its sure links become ``i-j``, the rest ``ipj``.
    """
    if base not in (0, 1):
        raise ValueError(f"base must be 0 or 1, got {base!r}")
    if isinstance(links, GoldAlignment):
        sure, possible = links.sure, links.possible
    else:
        sure = frozenset((int(i), int(j)) for i, j in links)
        possible = frozenset((int(i), int(j)) for i, j in possible)
    out = []
    for i, j in sorted(sure | possible):
        if i < 0 or j < 0:
            raise ValueError(f"negative index in link ({i}, {j})")
        out.append(f"{i + base}{'-' if (i, j) in sure else 'p'}{j + base}")
    return " ".join(out)


def write_pharaoh(lines: Iterable[Iterable[Link] | GoldAlignment], path_or_file: PathLike | IO[str], base: int = 0) -> int:
    """Write one Pharaoh line per sentence; returns the number of lines written.

    A None entry raises ValueError: Pharaoh has no way to mark a missing sentence, and an
    empty line would silently read back as "no links".
    """
    def _write(handle) -> int:
        n = 0
        for n, item in enumerate(lines, start=1):
            if item is None:
                raise ValueError(f"sentence {n} has no alignment (None); Pharaoh cannot represent a missing sentence")
            handle.write(format_pharaoh(item, base=base) + "\n")
        return n

    if hasattr(path_or_file, "write"):
        return _write(path_or_file)
    with open(os.fspath(path_or_file), "w", encoding="utf-8", newline="\n") as handle:
        return _write(handle)
