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

import itertools
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import IO

from .errors import InputError, PathLike
from .pairs import iter_lines, iter_lines_at

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


@dataclass(frozen=True)
class GoldPosition:
    """Where sentence `index` starts in a gold file: its first line and that line's byte offset."""

    index: int = 0
    line: int = 1
    offset: int = 0


@dataclass
class GoldStream:
    """A gold file checked in one streaming pass, read again sentence by sentence on demand.

    `scan_gold` makes it: format and index base are settled, every link is checked against the
    sentence lengths, and the counts and warnings are known, yet no alignment is held, so memory
    does not grow with the file. Iterating yields one GoldAlignment per sentence (None for a
    sentence skipped as invalid); `positions` and `iter_from` let workers start mid-file.
    """

    path: str
    fmt: str
    fmt_detected: bool
    base: int
    base_detected: bool  # True when the base was not given (detected or guessed)
    base_source: str = "given"  # "given" | "detected" (from evidence) | "guessed" (no decisive evidence)
    base_reason: str = ""
    warnings: list[str] = field(default_factory=list)
    skipped: int = 0
    n_sentences: int = 0
    n_sure: int = 0
    n_possible_only: int = 0  # possible links that are not also sure (what ``ipj`` tokens count in Pharaoh)
    invalid: frozenset[int] = frozenset()  # sentences read as None (skip_invalid)
    in_order: bool = True  # NAACL only: sentence numbers never go down, so the file can be read from a position

    def __iter__(self) -> Iterator[GoldAlignment | None]:
        return self.iter_from()

    def __len__(self) -> int:
        return self.n_sentences

    def iter_from(self, start: GoldPosition = GoldPosition(), count: int | None = None) -> Iterator[GoldAlignment | None]:
        """The alignments of `count` sentences (default: all that follow) from `start` (see `positions`)."""
        stop = self.n_sentences if count is None else min(self.n_sentences, start.index + count)
        for k, raw in enumerate(self._raws(start), start=start.index):
            if k >= stop:
                return
            if k in self.invalid:
                yield None
                continue
            sure = frozenset((i - self.base, j - self.base) for i, j, s, _ in raw.links if s)
            yield GoldAlignment(sure, sure | frozenset((i - self.base, j - self.base) for i, j, _, _ in raw.links))

    def positions(self, every: int) -> list[GoldPosition]:
        """Where sentences 0, every, 2*every, ... start (one streaming pass)."""
        return [GoldPosition(k, raw.line, raw.offset) for k, raw in enumerate(self._raws(GoldPosition()))
                if k < self.n_sentences and k % every == 0]

    def _raws(self, start: GoldPosition) -> Iterator[_Raw]:
        """Raw sentences from `start`; NAACL sentences past the last line are padded as empty."""
        k = start.index
        if self.fmt == "naacl" and not self.in_order:  # cannot seek: read the sorted file and skip to `start`
            raws = itertools.islice(_parse(self.path, self.fmt, _sorted_naacl_lines(self.path), True), start.index, None)
        else:
            raws = _parse(self.path, self.fmt, iter_lines_at(self.path, start.offset, start.line), True, first=k + 1)
        for raw in raws:
            yield raw
            k += 1
        while self.fmt == "naacl" and k < self.n_sentences:
            yield _Raw(start.line, start.offset)
            k += 1

    def describe(self) -> str:
        name = os.path.basename(self.path) if self.path else "<gold>"
        skipped = f" ({self.skipped} skipped)" if self.skipped else ""
        fmt_how = "detected" if self.fmt_detected else "given"
        base_how = self.base_source + (f": {self.base_reason}" if self.base_reason else "")
        return (
            f"{name}: {self.n_sentences} sentences{skipped}, {self.n_sure} sure + {self.n_possible_only} possible-only "
            f"links; format {self.fmt} ({fmt_how}); indices {self.base}-based ({base_how})"
        )


@dataclass
class GoldSet(GoldStream):
    """A gold file read whole: the GoldStream facts plus one entry per sentence (None = skipped as invalid)."""

    alignments: list[GoldAlignment | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.alignments)

    def __iter__(self):
        return iter(self.alignments)

    def __getitem__(self, index):
        return self.alignments[index]


# ----------------------------------------------------------------------------------------- parsing

@dataclass
class _Raw:
    """Links of one sentence as written in the file (base not applied yet)."""

    line: int  # first line of the sentence (NAACL sentence without lines: the line after it)
    offset: int  # byte offset of that line
    links: list[tuple[int, int, bool, int]] = field(default_factory=list)  # (i, j, sure, line)
    error: InputError | None = None
    has_lines: bool = True


def _detect_format(path: str, lines: Iterable[tuple[int, str]]) -> str:
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


Lines = Iterable[tuple[int, int, str]]  # (line number, byte offset, text)


def _parse(path: str, fmt: str, lines: Lines, skip_invalid: bool, first: int = 1) -> Iterator[_Raw]:
    """Raw sentences of a gold file in `fmt`, one at a time (`first`: NAACL number of the first sentence)."""
    if fmt == "pharaoh":
        return _parse_pharaoh(path, lines, skip_invalid)
    if fmt == "sp":
        return _parse_sp(path, lines, skip_invalid)
    return _parse_naacl(path, lines, skip_invalid, first)


def _parse_pharaoh(path: str, lines: Lines, skip_invalid: bool) -> Iterator[_Raw]:
    for lineno, offset, text in lines:
        raw = _Raw(lineno, offset)
        for tok in text.split():
            m = _PHARAOH_TOKEN.fullmatch(tok)
            if m is None:
                _fail(raw, InputError(path, lineno, f"malformed link {tok!r}", _EXPECTED["pharaoh"]), skip_invalid)
                continue
            raw.links.append((int(m.group(1)), int(m.group(3)), m.group(2) == "-", lineno))
        yield raw


def _parse_sp(path: str, lines: Lines, skip_invalid: bool) -> Iterator[_Raw]:
    current: _Raw | None = None
    for lineno, offset, text in lines:
        fields = text.split()
        if not fields:  # a blank line ends one sentence (an empty one if no link lines came before)
            yield current if current is not None else _Raw(lineno, offset)
            current = None
            continue
        if current is None:
            current = _Raw(lineno, offset)
        if len(fields) != 3 or fields[0] not in ("S", "P", "s", "p") or not all(_INT.fullmatch(f) for f in fields[1:]):
            _fail(current, InputError(path, lineno, f"malformed line {text.strip()[:60]!r}", _EXPECTED["sp"]), skip_invalid)
            continue
        current.links.append((int(fields[1]), int(fields[2]), fields[0] in ("S", "s"), lineno))
    if current is not None:
        yield current


def _naacl_number(path: str, lineno: int, fields: list[str]) -> int:
    if not (3 <= len(fields) <= 5) or not _INT.fullmatch(fields[0]):
        raise InputError(path, lineno, f"malformed line {' '.join(fields)[:60]!r}", _EXPECTED["naacl"])
    sentno = int(fields[0])
    if sentno < 1:
        raise InputError(path, lineno, "sentence number 0", "1-based sentence numbers")
    return sentno


def _parse_naacl(path: str, lines: Lines, skip_invalid: bool, first: int = 1) -> Iterator[_Raw]:
    """Sentences `first`, `first`+1, ... from lines sorted by sentence number; numbers without lines are empty.

    Lines of sentences before `first` are passed over, so reading may start at any earlier line.
    """
    current: _Raw | None = None
    number = first - 1  # the sentence in `current`, or the last one yielded
    for lineno, offset, text in lines:
        fields = text.split()
        if not fields:
            continue
        sentno = _naacl_number(path, lineno, fields)
        if sentno < first:
            continue
        if sentno < number:  # callers sort unsorted files first; this one changed since it was checked
            raise InputError(path, lineno, f"sentence number {sentno} after {number}", "lines sorted by sentence number")
        if sentno > number:
            if current is not None:
                yield current
            for _ in range(number + 1, sentno):
                yield _Raw(lineno, offset, has_lines=False)
            current, number = _Raw(lineno, offset), sentno
        sure = True
        ok = all(_INT.fullmatch(f) for f in fields[1:3])
        rest = fields[3:]
        if ok and rest and rest[0] in ("S", "P", "s", "p"):
            sure = rest[0] in ("S", "s")
            rest = rest[1:]
        if ok and rest:
            ok = len(rest) == 1 and _is_float(rest[0])
        if not ok:
            _fail(current, InputError(path, lineno, f"malformed line {text.strip()[:60]!r}", _EXPECTED["naacl"]), skip_invalid)
            continue
        current.links.append((int(fields[1]), int(fields[2]), sure, lineno))
    if current is not None:
        yield current


def _naacl_in_order(path: str) -> bool:
    last = 0
    for lineno, text in iter_lines(path):
        fields = text.split()
        if fields:
            sentno = _naacl_number(path, lineno, fields)
            if sentno < last:
                return False
            last = sentno
    return True


def _sorted_naacl_lines(path: str) -> list[tuple[int, int, str]]:
    """All lines of an unsorted NAACL file, stably sorted by sentence number (blank lines dropped)."""
    lines = [(lineno, offset, text) for lineno, offset, text in iter_lines_at(path) if text.split()]
    return sorted(lines, key=lambda x: _naacl_number(path, x[0], x[2].split()))


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------ index base

@dataclass
class _BaseEvidence:
    """What the links say about the index base, counted as they stream past."""

    links: int = 0
    zero: int = 0  # links with an index 0
    equal: int = 0  # links with an index equal to the sentence length
    bad0: int = 0  # links out of range when read 0-based
    bad1: int = 0  # ... 1-based

    def add(self, raw: _Raw, lens: tuple[int, int] | None) -> None:
        # sentences already marked invalid (a malformed token) still count: their parsed links are evidence
        for i, j, _, _ in raw.links:
            self.links += 1
            self.zero += i == 0 or j == 0
            if lens is not None:
                ns, nt = lens
                self.equal += i == ns or j == nt
                self.bad0 += i >= ns or j >= nt
                self.bad1 += i < 1 or j < 1 or i > ns or j > nt

    def decide(self, have_lengths: bool) -> tuple[int, str, str]:
        """(base, "detected"|"guessed", reason)."""
        if self.links == 0:
            return 0, "guessed", "no links to tell from; 0 assumed"
        if self.zero and not self.equal:
            return 0, "detected", "index 0 occurs"
        if self.equal and not self.zero:
            return 1, "detected", "an index equals the sentence length"
        if self.zero and self.equal:
            base = 0 if self.bad0 <= self.bad1 else 1
            return base, "guessed", (
                f"both index 0 and indices equal to the sentence length occur; {self.bad0} links are out of range "
                f"read 0-based, {self.bad1} read 1-based")
        if not have_lengths:
            return 1, "guessed", f"no index 0 among {self.links} links; pass sentences (or base) to check"
        return 1, "guessed", f"no index 0 among {self.links} links and every link is in range either way"


@dataclass
class _Tally:
    """Per index base: the sentences that are invalid read that way, their first errors, and the link counts."""

    invalid: set[int] = field(default_factory=set)
    errors: list[tuple[int, InputError]] = field(default_factory=list)  # the first few (sentence, error)
    sure: int = 0
    possible_only: int = 0


# ------------------------------------------------------------------------------------------ reader

def scan_gold(
    path: PathLike,
    base: int | None = None,
    fmt: str | None = None,
    sentences: Iterable[tuple[int, int]] | None = None,
    skip_invalid: bool = False,
) -> GoldStream:
    """Check a gold (or predicted) alignment file in one streaming pass; returns a GoldStream to read it by.

    `base` 0 or 1 (None: detect), `fmt` one of "pharaoh", "sp", "naacl" (None: detect from
    the first non-blank line). `sentences` gives (n_src_words, n_tgt_words) per sentence, and may
    be a generator (e.g. `pairs.iter_pair_lengths`): with it, the number of sentences and every
    index are checked, and base detection can use the sentence lengths. Errors raise InputError
    naming the file, the line and what was expected; with `skip_invalid`, sentences holding
    malformed or out-of-range links are read as None instead and one warning lists them. A wrong
    number of sentences always raises. Memory does not grow with the file.
    """
    path = os.fspath(path)
    if base not in (None, 0, 1):
        raise InputError(path, None, f"index base {base!r}", "0 or 1 (or None to detect)")
    if fmt is not None and fmt not in FORMATS:
        raise InputError(path, None, f"unknown gold format {fmt!r}", " or ".join(FORMATS))
    fmt_detected = fmt is None
    if fmt is None:
        fmt = _detect_format(path, iter_lines(path))
    in_order = fmt != "naacl" or _naacl_in_order(path)
    lines = iter_lines_at(path) if in_order else _sorted_naacl_lines(path)
    raws = _parse(path, fmt, lines, skip_invalid)
    lengths = None if sentences is None else iter(sentences)
    unit = "lines" if fmt == "pharaoh" else "sentences"
    bases = (0, 1) if base is None else (base,)
    tally = {b: _Tally() for b in bases}
    evidence = _BaseEvidence()
    n = 0  # raw sentences that have a sentence pair (all of them without `sentences`)
    last_line = 0
    warnings: list[str] = []
    gaps: list[int] = []  # NAACL sentence numbers with no line before the last sentence that has one
    for raw in raws:
        last_line = raw.line
        lens = None
        if lengths is not None:
            lens = next(lengths, None)
            if lens is None:  # more gold than sentence pairs
                blank = _past_the_end(path, fmt, raw, raws, n)
                warnings.append(f"ignored {blank} blank line(s) after the last of {n} sentences")
                break
        evidence.add(raw, lens)
        pairs = {(i, j, s) for i, j, s, _ in raw.links}
        sure = len({(i, j) for i, j, s in pairs if s})
        possible_only = len({(i, j) for i, j, _ in pairs}) - sure
        for b in bases:
            err = raw.error or _check_links(path, raw, b, lens)
            t = tally[b]
            if err is None:
                t.sure += sure
                t.possible_only += possible_only
                continue
            t.invalid.add(n)
            if len(t.errors) < 5:
                t.errors.append((n, err))
        if fmt == "naacl" and not raw.has_lines and not raw.links:
            gaps.append(n + 1)
        n += 1
    if gaps:
        shown = ", ".join(map(str, gaps[:10])) + (f" and {len(gaps) - 10} more" if len(gaps) > 10 else "")
        warnings.append(f"{path}: no lines for sentence{'s' if len(gaps) > 1 else ''} {shown} in the middle of the "
                        "file: read as sentences without links (check that none was lost)")
    if lengths is not None:
        missing = sum(1 for _ in lengths)
        if missing and fmt == "naacl":
            warnings.append(f"no lines for sentences {n + 1}..{n + missing}: read as empty alignments")
        elif missing:
            raise InputError(path, last_line + 1, f"gold ends after {n} {unit} but {n + missing} sentence pairs were given",
                             f"one gold {'line' if fmt == 'pharaoh' else 'sentence'} per sentence pair")
        n += missing if fmt == "naacl" else 0

    if base is None:
        base, base_source, base_reason = evidence.decide(sentences is not None)
        if base_source == "guessed":
            warnings.append(f"index base guessed as {base}-based ({base_reason}); pass base= to be sure")
    else:
        base_source, base_reason = "given", ""
    t = tally[base]
    # When the base was not given and a sentence fails read either way, blame its words, not the base.
    either = t.invalid & tally[1 - base].invalid if len(bases) == 2 else set()
    errors = [_either_base(e) if k in either else e for k, e in t.errors]
    if errors and not skip_invalid:
        raise errors[0]
    if t.invalid:
        n_bad = len(t.invalid)
        word = "line" if fmt == "pharaoh" else "sentence"
        shown = "; ".join(str(e) for e in errors) + (f"; and {n_bad - len(errors)} more" if n_bad > len(errors) else "")
        warnings.append(f"skipped {n_bad} {word}{'s' if n_bad != 1 else ''} with invalid links (alignment None): {shown}")
    return GoldStream(path, fmt, fmt_detected, base, base_source != "given", base_source, base_reason, warnings,
                      len(t.invalid), n, t.sure, t.possible_only, frozenset(t.invalid), in_order)


def _either_base(err: InputError) -> InputError:
    """The same error, saying it holds 0- and 1-based alike: the sentence's word count is the suspect."""
    if "past the end" not in err.message:
        return err
    return InputError(err.path, err.line, err.message + " read 0- or 1-based alike",
                      "as many words as the gold indexes: words are split on ASCII spaces only, so a tab or "
                      "another space character inside a 'word' joins two words; check that sentence")


def _past_the_end(path: str, fmt: str, raw: _Raw, rest: Iterator[_Raw], n_sent: int) -> int:
    """Gold goes on after the last sentence pair (`raw` is the first sentence too many). Blank Pharaoh lines
    there are returned as a count (ignored, with a warning); anything else raises at the first sentence too many."""
    seen = blank = 0
    first_with_lines = None
    for r in itertools.chain([raw], rest):
        seen += 1
        blank += blank == seen - 1 and not r.links and r.error is None
        if first_with_lines is None and r.has_lines:
            first_with_lines = (seen, r.line)
    if fmt == "pharaoh" and blank == seen:
        return blank
    if fmt == "naacl":
        k, line = first_with_lines
        raise InputError(path, line, f"sentence number {n_sent + k} but only {n_sent} sentence pairs were given",
                         f"sentence numbers 1..{n_sent}")
    unit = "lines" if fmt == "pharaoh" else "sentences"
    raise InputError(path, raw.line, f"gold has more than {n_sent} {unit} ({n_sent + seen}) but {n_sent} sentence "
                     "pairs were given", f"one gold {'line' if fmt == 'pharaoh' else 'sentence'} per sentence pair")


def read_gold(
    path: PathLike,
    base: int | None = None,
    fmt: str | None = None,
    sentences: Iterable[tuple[int, int]] | None = None,
    skip_invalid: bool = False,
) -> GoldSet:
    """Read a gold (or predicted) alignment file into a GoldSet of 0-based links held in memory.

    The arguments, checks and errors are those of `scan_gold`; use that for files too big to hold.
    """
    stream = scan_gold(path, base, fmt, sentences, skip_invalid)
    return GoldSet(**{f.name: getattr(stream, f.name) for f in fields(GoldStream)}, alignments=list(stream))


def _check_links(path: str, raw: _Raw, base: int, lens: tuple[int, int] | None) -> InputError | None:
    """The first link of one sentence that is invalid under `base` (and its lengths), as an error, or None."""
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
            return InputError(path, lineno, problem, expected)
    return None


def parse_pharaoh_line(text: str, base: int = 0, lengths: tuple[int, int] | None = None,
                       path: PathLike | None = None, line: int | None = None) -> GoldAlignment:
    """One Pharaoh line (e.g. typed into the app) -> GoldAlignment, with the same checks as read_gold.

    `lengths` is (n_src_words, n_tgt_words) for range checks; `path`/`line` only label errors.
    """
    if base not in (0, 1):
        raise InputError(path, line, f"index base {base!r}", "0 or 1")
    where = None if path is None else os.fspath(path)
    raw = next(_parse_pharaoh(where, [(line, 0, text)], skip_invalid=False))
    err = _check_links(where, raw, base, lengths)
    if err is not None:
        raise err
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
