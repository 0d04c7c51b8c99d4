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


def assert_same_to_digits(actual, desired, digits: int = 5, where: str = "") -> None:
    """Two JSON-like values (rows, calibrations) equal in structure, strings, ints and flags, and in every
    float to `digits` significant digits of max(|value|, 1): what two processes with other thread counts
    (a Ray actor and the driver) compute alike."""
    if isinstance(desired, float) or isinstance(actual, float):
        assert isinstance(actual, (int, float)) and isinstance(desired, (int, float)), (where, actual, desired)
        if desired != desired:  # NaN
            assert actual != actual, (where, actual)
            return
        assert abs(actual - desired) <= 10.0 ** -digits * max(abs(desired), 1.0), (where, actual, desired)
    elif isinstance(desired, dict):
        assert isinstance(actual, dict) and set(actual) == set(desired), (where, sorted(set(actual) ^ set(desired)))
        for k in desired:
            assert_same_to_digits(actual[k], desired[k], digits, f"{where}.{k}")
    elif isinstance(desired, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(actual) == len(desired), (where, actual, desired)
        for i, (a, d) in enumerate(zip(actual, desired)):
            assert_same_to_digits(a, d, digits, f"{where}[{i}]")
    else:
        assert actual == desired, (where, actual, desired)
