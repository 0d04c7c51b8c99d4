"""The rules scripts/learned_decode_sweep.py scores for the README (tried on learned matrices, not registered),
on hand-computed [target words, source words + no-source] matrices."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("learned_decode_sweep", REPO / "scripts" / "learned_decode_sweep.py")
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)

# 3 target words x (2 source words + no-source); rows are distributions
MAT = np.array([[0.8, 0.1, 0.1],
                [0.5, 0.4, 0.1],
                [0.1, 0.2, 0.7]])


def test_intersection_keeps_links_that_are_best_both_ways():
    # row argmax: t0->s0, t1->s0, t2->no-source; column shares: s0 = [.8,.5,.1]/1.4 -> t0, s1 = [.1,.4,.2]/.7 -> t1
    assert sweep.intersection_rule(MAT) == {(0, 0)}


def test_gdfa_grows_from_the_intersection_into_the_union():
    # forward {(0,0),(0,1)}; reverse (share >= 0.5): s0->t0 (.571), s1->t1 (.571): {(0,0),(1,1)}
    # intersection {(0,0)}; grow-diag adds the neighbours (0,1) and (1,1) (t1 and s1 still unaligned)
    assert sweep.gdfa_rule(MAT, 0.5) == {(0, 0), (0, 1), (1, 1)}
    # a reverse share threshold above every column's best leaves only the forward direction, grown from nothing
    # (empty intersection) and then added by final-and where both words are unaligned: just (0,0)
    assert sweep.gdfa_rule(MAT, 0.6) == {(0, 0)}
    assert sweep.gdfa_rule(np.zeros((0, 3))) == set()


def test_geometric_mix_renormalises_rows():
    other = np.array([[0.1, 0.8, 0.1], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7]])
    mixed = sweep.geometric_mix([MAT], [other], 0.5)[0]
    np.testing.assert_allclose(mixed.sum(1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(mixed[0, 0] / mixed[0, 1], np.sqrt(0.8 * 0.1) / np.sqrt(0.1 * 0.8), rtol=1e-6)
    np.testing.assert_allclose(mixed[1:], MAT[1:], rtol=1e-6)  # equal rows stay as they are
    np.testing.assert_allclose(sweep.geometric_mix([MAT], [other], 0.0)[0], MAT, rtol=1e-6)
