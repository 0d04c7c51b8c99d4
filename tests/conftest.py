"""Shared fixtures. The project's data is read from its own datasets/ folder."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The repository's datasets/ folder (gold/ and train/), as a clone has it."""
    path = REPO / "datasets"
    if not (path / "gold").is_dir():
        pytest.fail(f"the project's data is missing from {path}: datasets/gold and datasets/train belong to the clone")
    return path


# --- tiny random models of every family, tokenizers trained in the session (tests/tiny_models.py) ---


@pytest.fixture(scope="session")
def tiny_bundle():
    """Factory: tiny_bundle(family) -> cached ModelBundle; family in tiny_models.FAMILIES
    ("marian", "bart", "mbart", "mbart50", "m2m100", "nllb", "t5"). Shared: do not mutate it."""
    import tiny_models

    return tiny_models.bundle


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine OpenMP waits on descheduled threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """The tiny Marian saved as a model folder, so the CLI and load_model read it by path."""
    import tiny_models

    return tiny_models.save("marian", tmp_path_factory.mktemp("model") / "tiny-marian")


@pytest.fixture(scope="session")
def bundle(model_dir):
    from aligndebug.models import load_model

    return load_model(str(model_dir))


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with two CPUs for one test module (the Ray tests), shut down after it."""
    import ray

    last = None
    for _ in range(2):  # a heavily loaded machine can miss Ray's start-up deadline once
        try:
            # actors compute with one thread, as the driver does (one_thread): the Ray tests compare the runner's
            # rows across processes, and rank-based p-values and fits amplify thread-count rounding
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}})
            break
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception on start-up timeouts
            last = exc
            ray.shutdown()
    else:
        pytest.fail(f"a local Ray instance did not start: {last}")
    yield ray
    ray.shutdown()
