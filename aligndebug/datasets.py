"""Named test sets, the way sacrebleu names WMT sets: `--testset bicici-deen` instead of four file options.

The registry is data: `testsets.json` beside this module lists the sets shipped in the repository's
`datasets/` folder (and those that cannot be shipped, with where to get them); a user's own sets are
added by `add_testset` (`aligndebug datasets add`) to `testsets.json` in the cache folder
(`$ALIGNDEBUG_CACHE`, default `~/.cache/aligndebug`), which holds a copy of their files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import InputError, PathLike
from .gold import scan_gold
from .pairs import iter_lines, iter_pair_lengths, iter_pairs, split_pair, split_words

REGISTRY_FILE = Path(__file__).with_name("testsets.json")
# A clone (or editable install) keeps the shipped sets next to the package.
SHIPPED_ROOT = Path(__file__).resolve().parents[1] / "datasets"
FILE_ROLES = ("src", "tgt", "pairs", "gold")


@dataclass(frozen=True)
class TestSet:
    """One registry entry: where a set's files are and how to read them."""

    __test__ = False  # not a pytest test class

    name: str
    direction: str
    description: str = ""
    folder: str | None = None  # relative to the shipped root, or absolute for a user's set
    src: str | None = None
    tgt: str | None = None
    pairs: str | None = None
    gold: str | None = None
    gold_format: str | None = None
    gold_base: int | None = None
    links: str = ""
    sentences: int | None = None
    skip_invalid: bool = False
    notes: str = ""
    licence: str = ""
    use: str = ""
    shipped: bool = True
    get: str = ""  # where to get a set that is not shipped
    sha256: dict[str, str] = field(default_factory=dict)
    user: bool = False  # added with `aligndebug datasets add`

    @property
    def root(self) -> Path:
        if self.folder is None:
            raise InputError(None, None, f"test set {self.name!r} is not on this machine",
                             f"a local copy: get it from {self.get}" if self.get else "a local copy")
        folder = Path(self.folder)
        return folder if folder.is_absolute() else SHIPPED_ROOT / folder

    def path(self, role: str) -> Path | None:
        """The file playing `role` ('src', 'tgt', 'pairs' or 'gold'), or None if the set has none."""
        name = getattr(self, role)
        return None if name is None else self.root / name

    @property
    def available(self) -> bool:
        return self.folder is not None and all(
            p.is_file() for p in (self.path(r) for r in FILE_ROLES) if p is not None)


def cache_dir() -> Path:
    """Where user-registered sets live: $ALIGNDEBUG_CACHE, else ~/.cache/aligndebug."""
    env = os.environ.get("ALIGNDEBUG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "aligndebug"


def _user_registry_file() -> Path:
    return cache_dir() / "testsets.json"


def _read_registry(path: Path, user: bool) -> dict[str, TestSet]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, getattr(exc, "lineno", None), f"cannot read the test-set registry: {exc}",
                         "a JSON object of test sets") from exc
    known = {f.name for f in fields(TestSet)}
    out = {}
    for name, entry in data.items():
        unknown = set(entry) - known
        if unknown:
            raise InputError(path, None, f"test set {name!r} has unknown keys {sorted(unknown)}",
                             f"keys among {sorted(known - {'name'})}")
        out[name] = TestSet(**{**entry, "name": name, "user": user})
    return out


def registry() -> dict[str, TestSet]:
    """Every known set: the built-in ones, then the user's (a user's local copy of an unshipped set
    replaces its built-in entry)."""
    sets = _read_registry(REGISTRY_FILE, user=False)
    sets.update(_read_registry(_user_registry_file(), user=True))
    return dict(sorted(sets.items()))


def get_testset(name: str) -> TestSet:
    """The registry entry `name`, with a clear error when it is unknown or not on this machine."""
    sets = registry()
    if name not in sets:
        raise InputError(None, None, f"unknown test set {name!r}", "one of: " + ", ".join(sets))
    ts = sets[name]
    if not ts.shipped and ts.folder is None:
        raise InputError(None, None, f"test set {name!r} is not shipped with aligndebug",
                         f"a local copy registered first; get it from {ts.get}")
    if not ts.available:
        missing = [str(p) for p in (ts.path(r) for r in FILE_ROLES) if p is not None and not p.is_file()]
        where = ("the repository's datasets/ folder (a clone has it; a pip-installed package does not)"
                 if not ts.user else f"the copy made by `aligndebug datasets add` in {ts.root}")
        raise InputError(missing[0] if missing else None, None, f"test set {name!r} has missing files", where)
    return ts


def load_testset(name: str) -> TestSet:
    """The named set, checked to be on this machine; its `path(role)` gives each file."""
    return get_testset(name)


def echo(name: str, what: str) -> Iterator[str]:
    """The lines of a set's source ('src'), target ('tgt') or gold alignment ('gold') file, as
    `sacrebleu --echo` prints a WMT set's; a pairs file is split on ' ||| ' for src/tgt."""
    if what not in ("src", "tgt", "gold"):
        raise InputError(None, None, f"cannot echo {what!r}", "src, tgt or gold")
    ts = load_testset(name)
    path = ts.path(what)
    if path is not None:
        for _, text in iter_lines(path):
            yield text
        return
    if what == "gold" or ts.pairs is None:
        raise InputError(None, None, f"test set {name!r} has no {what} file", "a role the set has")
    pairs_path = ts.path("pairs")
    for lineno, text in iter_lines(pairs_path):
        side = split_pair(str(pairs_path), lineno, text)[0 if what == "src" else 1]
        yield " ".join(split_words(side))


def file_sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def count_file_lines(path: PathLike) -> int:
    return sum(1 for _ in iter_lines(path))


def add_testset(name: str, *, src: PathLike | None = None, tgt: PathLike | None = None,
                pairs: PathLike | None = None, gold: PathLike | None = None, gold_base: int | None = None,
                gold_format: str | None = None, direction: str | None = None,
                description: str = "") -> TestSet:
    """Copy a set's files into the cache and register them under `name`.

    A name the registry already ships refuses to be replaced; a name registered as not shipped
    (e.g. 'rwth-deen') takes the user's copy after its line counts (and checksums, where the
    registry gives them) match. Files are checked before anything is written, and copied to a
    temporary folder first, so a failure keeps nothing.
    """
    if pairs is None and src is None:
        raise InputError(None, None, "no input files given", "--src FILE (with --tgt) or --pairs FILE")
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise InputError(None, None, f"bad test-set name {name!r}", "a name without spaces or slashes, e.g. my-deen")
    known = registry()
    template = known.get(name)
    if template is not None and template.shipped and not template.user:
        raise InputError(None, None, f"test set {name!r} is shipped with aligndebug already", "another name")
    files = {role: Path(p) for role, p in (("src", src), ("tgt", tgt), ("pairs", pairs), ("gold", gold))
             if p is not None}
    for role, p in files.items():
        if not p.is_file():
            raise InputError(p, None, f"the {role} file does not exist", "a readable file")
    counts = {role: count_file_lines(p) for role, p in files.items() if role != "gold"}
    n = next(iter(counts.values()))
    for role, c in counts.items():
        if c != n:
            raise InputError(files[role], None, f"{c} lines but {next(iter(files.values()))} has {n}",
                             "one line per sentence in every file")
    if template is not None and template.sentences is not None and n != template.sentences:
        raise InputError(next(iter(files.values())), None,
                         f"{n} sentences, but the registered {name!r} has {template.sentences}",
                         f"the files of {template.get or name}")
    sums = {role: file_sha256(p) for role, p in files.items()}
    expected = template.sha256 if template is not None else {}
    for role, p in files.items():
        want = expected.get(role) or expected.get(p.name)
        if want and want != sums[role]:
            raise InputError(p, None, f"checksum mismatch: sha256 {sums[role][:12]}..., registered {want[:12]}...",
                             f"the file registered for {name!r}; nothing was kept")
    if gold is not None:
        scan_gold(gold, base=gold_base, fmt=gold_format,
                  sentences=iter_pair_lengths(iter_pairs(src_path=src, tgt_path=tgt, pairs_path=pairs)),
                  skip_invalid=True)
    sets_dir = cache_dir() / "sets"
    sets_dir.mkdir(parents=True, exist_ok=True)
    final = sets_dir / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=sets_dir))
    try:
        names = {role: role + (".gz" if p.suffix == ".gz" else "") for role, p in files.items()}
        for role, p in files.items():
            shutil.copyfile(p, tmp / names[role])
        base_entry = asdict(template) if template is not None else {}
        entry = {**{k: v for k, v in base_entry.items() if k not in ("name", "user", "sha256", "folder", "shipped")
                    and k not in FILE_ROLES},
                 "direction": direction or base_entry.get("direction") or "",
                 "description": description or base_entry.get("description") or f"registered from {', '.join(map(str, files.values()))}",
                 "folder": str(final), **names, "sentences": n, "sha256": {names[r]: s for r, s in sums.items()},
                 "gold_base": gold_base, "gold_format": gold_format}
        entry["shipped"] = True  # the user's copy is on this machine now
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    reg_file = _user_registry_file()
    try:
        data = json.loads(reg_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = {}
    data[name] = entry
    tmp_reg = reg_file.with_name(reg_file.name + ".tmp")
    tmp_reg.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp_reg.replace(reg_file)
    return registry()[name]


def verify(ts: TestSet) -> list[str]:
    """Files of `ts` whose sha256 differs from the registry's (empty: all match)."""
    return [n for n, want in ts.sha256.items() if want and file_sha256(ts.root / n) != want]


def table(sets: dict[str, TestSet] | None = None) -> list[dict[str, Any]]:
    """One row a set for `aligndebug datasets`: name, direction, sentences, format, licence, where."""
    rows = []
    for ts in (registry() if sets is None else sets).values():
        rows.append({"name": ts.name, "direction": ts.direction, "sentences": ts.sentences,
                     "gold": (f"{ts.gold_format or 'detect'}, {ts.gold_base if ts.gold_base is not None else '?'}-based, {ts.links}"
                              if ts.gold or ts.links else "none"),
                     "licence": ts.licence,
                     "status": "here" if ts.available else ("not shipped" if not ts.shipped else "missing"),
                     "use": ts.use})
    return rows
