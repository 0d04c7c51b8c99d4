"""Symmetrization of two directional word alignments (grow-diag-final-and).

The standard heuristic of Koehn et al. (2003) as written in the Moses manual
(https://www.statmt.org/moses/?n=FactoredTraining.AlignWords):

    start from the intersection of both directions;
    GROW-DIAG: repeat until nothing changes: for every aligned point, in order of source
      then target word, add each of its 8 neighbours that is in the union and whose source
      word or target word is still unaligned;
    FINAL-AND(forward), FINAL-AND(reverse): add each point of that direction whose source
      word AND target word are both still unaligned.

Both inputs are given as (source_word, target_word) links, i.e. the reverse direction
already flipped into the source-target orientation.
"""

from __future__ import annotations

from collections.abc import Iterable

Link = tuple[int, int]

_NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


def grow_diag_final_and(forward: Iterable[Link], reverse: Iterable[Link]) -> set[Link]:
    """Symmetrize two alignments of one sentence pair with grow-diag-final-and."""
    fwd = {(int(i), int(j)) for i, j in forward}
    rev = {(int(i), int(j)) for i, j in reverse}
    union = fwd | rev
    links = fwd & rev
    src_aligned = {i for i, _ in links}
    tgt_aligned = {j for _, j in links}
    if not union:
        return set()
    n_src = max(i for i, _ in union) + 1
    n_tgt = max(j for _, j in union) + 1

    def add(i: int, j: int) -> None:
        links.add((i, j))
        src_aligned.add(i)
        tgt_aligned.add(j)

    # GROW-DIAG: scan the grid like the reference pseudo-code, so points added during a pass
    # are themselves grown from later in the same pass.
    changed = True
    while changed:
        changed = False
        for i in range(n_src):
            for j in range(n_tgt):
                if (i, j) not in links:
                    continue
                for di, dj in _NEIGHBOURS:
                    p = (i + di, j + dj)
                    if p in union and p not in links and (p[0] not in src_aligned or p[1] not in tgt_aligned):
                        add(*p)
                        changed = True
    # FINAL-AND for each direction, forward first.
    for direction in (fwd, rev):
        for i, j in sorted(direction):
            if i not in src_aligned and j not in tgt_aligned:
                add(i, j)
    return links
