"""Every exception aligndebug raises on purpose: bad user input (naming file, line and what was expected),
a sentence the model cannot take, a model that cannot be used."""

from __future__ import annotations

import os
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


class InputError(ValueError):
    """Bad user input (a file, a line, an argument).

    `path` is the offending file (or None when the input did not come from a file),
    `line` its 1-based line number (or None when the problem is not on one line),
    `message` what is wrong and `expected` what would have been right.
    str() reads ``PATH:LINE: message (expected ...)``.
    A ValueError subclass, so callers that catch ValueError keep working.
    """

    def __init__(self, path: PathLike | None, line: int | None, message: str, expected: str | None = None):
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.message = message
        self.expected = expected
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = self.path if self.path is not None else "<input>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        text = f"{where}: {self.message}"
        if self.expected:
            text += f" (expected {self.expected})"
        return text

    def __reduce__(self):
        # Keep the structured fields through pickling (multiprocessing, Ray workers).
        return (type(self), (self.path, self.line, self.message, self.expected))


class SentenceError(ValueError):
    """One sentence cannot be used; `index` is its position in the caller's list, `reason` what is wrong and
    `code` the kind, as rows flag it: ``empty``, ``too_long_for_model`` or ``no_tokens``."""

    def __init__(self, index: int, reason: str, code: str):
        self.index, self.reason, self.code = index, reason, code
        super().__init__(f"sentence {index}: {reason}")

    def __reduce__(self):  # keep the fields through pickling (Ray workers)
        return (type(self), (self.index, self.reason, self.code))


class ModelLoadError(RuntimeError):
    """The model cannot be used: missing, unreadable, or not an encoder-decoder."""
