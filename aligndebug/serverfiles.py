"""Which files on the server the app may read when a user types a path.

The app reads uploads in a temporary folder; typing a server path is a convenience for the person
running it on their own machine. It is limited to folders the person allows (default: the working
directory and the repository's `datasets/`; `$ALIGNDEBUG_APP_ROOTS`, a `os.pathsep`-separated list,
replaces them), and it is off when the app listens on an address other hosts can reach.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .datasets import SHIPPED_ROOT
from .errors import InputError

LOCAL_ADDRESSES = ("localhost", "127.0.0.1", "::1")


def allowed_roots() -> list[Path]:
    """Folders whose files the app may read by path."""
    env = os.environ.get("ALIGNDEBUG_APP_ROOTS")
    roots = [Path(p) for p in env.split(os.pathsep) if p] if env else [Path.cwd(), SHIPPED_ROOT]
    return [r.expanduser().resolve() for r in roots]


def server_paths_allowed(address: str | None) -> bool:
    """True when the app listens on a loopback address only (Streamlit's `server.address`)."""
    return (address or "").strip() in LOCAL_ADDRESSES


def resolve_server_path(text: str, roots: Sequence[Path]) -> Path:
    """The real path of `text` (symlinks and `..` resolved), refused unless it lies inside one of `roots`."""
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    real = path.resolve()
    if not any(real == r or real.is_relative_to(r) for r in roots):
        raise InputError(text, None, "this path is outside the folders the app may read",
                         "a file under " + ", ".join(map(str, roots))
                         + " (set ALIGNDEBUG_APP_ROOTS to allow others, or upload the file)")
    return real
