"""Shared fixtures. Shared data is read from $ALIGNDEBUG_DATA or ../shared/data beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = Path(os.environ.get("ALIGNDEBUG_DATA", REPO.parent / "shared" / "data"))
    if not (path / "gold").is_dir():
        pytest.fail(f"shared data not found at {path}: set ALIGNDEBUG_DATA to the folder holding gold/ and train/")
    return path
