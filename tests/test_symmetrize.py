"""grow-diag-final-and on hand-worked examples."""

from __future__ import annotations

import random

from aligndebug.symmetrize import grow_diag_final_and


def test_grow_then_final_and_hand_example():
    # forward {0-0, 1-1, 3-3}, reverse {0-0, 0-5}: intersection {0-0}
    # GROW-DIAG: 1-1 is a diagonal neighbour of 0-0 in the union and source 1 is unaligned -> added.
    #   3-3 and 0-5 touch no aligned point -> not grown.
    # FINAL-AND(forward): 3-3 has source 3 and target 3 both unaligned -> added.
    # FINAL-AND(reverse): 0-5 has source 0 already aligned -> NOT added (plain "final" would add it).
    assert grow_diag_final_and({(0, 0), (1, 1), (3, 3)}, {(0, 0), (0, 5)}) == {(0, 0), (1, 1), (3, 3)}


def test_neighbour_with_both_words_aligned_is_not_grown():
    # intersection {0-0, 1-1}; 0-1 (forward only) neighbours both, but source 0 and target 1 are aligned -> left out
    assert grow_diag_final_and({(0, 0), (1, 1), (0, 1)}, {(0, 0), (1, 1)}) == {(0, 0), (1, 1)}


def test_growth_chains_through_added_points():
    # intersection {0-0}; union also has 1-1 (forward) and 1-2 (reverse).
    # 1-1 is grown from 0-0 (source 1 unaligned). 1-2 is not a neighbour of 0-0, only of 1-1, and
    # target 2 is unaligned -> grown from the newly added 1-1. FINAL-AND alone could not add it
    # (source 1 is aligned by then), so its presence shows growth continues from added points.
    assert grow_diag_final_and({(0, 0), (1, 1)}, {(0, 0), (1, 2)}) == {(0, 0), (1, 1), (1, 2)}


def test_identical_and_empty_inputs():
    links = {(0, 1), (2, 0)}
    assert grow_diag_final_and(links, links) == links
    assert grow_diag_final_and(set(), set()) == set()
    # no intersection at all: only final-and applies, forward first: 0-0 then reverse 0-1 (source 0 taken)
    assert grow_diag_final_and({(0, 0)}, {(0, 1)}) == {(0, 0)}


def test_result_between_intersection_and_union():
    rng = random.Random(0)
    for _ in range(200):
        fwd = {(rng.randrange(6), rng.randrange(6)) for _ in range(rng.randrange(10))}
        rev = {(rng.randrange(6), rng.randrange(6)) for _ in range(rng.randrange(10))}
        out = grow_diag_final_and(fwd, rev)
        assert fwd & rev <= out <= fwd | rev
