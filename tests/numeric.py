"""Float comparisons that hold on any machine: tolerances follow the size of the values compared.

Two code paths (another batching, thread count, CPU, or attribution strategy) sum float32 numbers in
another order, so their results agree to about six significant digits of the *largest* value involved,
not bit for bit and not digit for digit on the small ones. These helpers state that agreement.
"""

from __future__ import annotations

import numpy as np
import pytest


def tolerance(desired, digits: int, scale: float | None) -> float:
    size = float(np.max(np.abs(np.asarray(desired, dtype=np.float64)), initial=0.0))
    return float(10.0 ** -digits * max(size, scale or 0.0, float(np.finfo(np.float32).tiny)))


def assert_close(actual, desired, digits: int = 5, scale: float | None = None, err_msg: str = "") -> None:
    """Equal to `digits` significant digits of the largest |desired| (or of `scale`, a quantity's natural
    size, e.g. 1 for a normalised entropy in [0, 1])."""
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64),
                               rtol=0, atol=tolerance(desired, digits, scale), err_msg=err_msg)


def approx(desired: float, digits: int = 5, scale: float | None = None):
    """pytest.approx for one number, with the tolerance of `assert_close`."""
    return pytest.approx(desired, rel=0, abs=tolerance(desired, digits, scale))
