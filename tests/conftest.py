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


# --- tiny random models of every family, tokenizers trained in the session (tests/tiny_models.py) ---


@pytest.fixture(scope="session")
def tiny_bundle():
    """Factory: tiny_bundle(family) -> cached ModelBundle; family in tiny_models.FAMILIES
    ("marian", "bart", "mbart", "mbart50", "m2m100", "nllb", "t5"). Shared: do not mutate it."""
    import tiny_models

    return tiny_models.bundle
