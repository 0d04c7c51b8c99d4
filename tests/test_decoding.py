"""Decoding rules on hand-computed matrices, and the signature field that names them."""

import numpy as np
import pytest

from aligndebug import __version__
from aligndebug.decoding import DECODERS, decode, decode_argmax, decode_bidir, decode_threshold
from aligndebug.metrics import AlignmentSignature

# rows = target tokens, cols = source tokens; column 3 is a special token (e.g. </s>)
M = np.array([
    [0.70, 0.20, 0.05, 0.05],
    [0.10, 0.45, 0.40, 0.05],
    [0.05, 0.05, 0.10, 0.80],  # mostly on the special column
])
ALLOWED = np.array([True, True, True, False])


def pairs(links):
    return sorted(zip(links[0].tolist(), links[1].tolist()))


def test_registry_names_every_rule():
    assert set(DECODERS) == {"argmax", "threshold", "bidir"}
    with pytest.raises(ValueError, match="unknown decoding rule 'nope'"):
        decode(M, "nope")


def test_argmax_skips_disallowed_columns():
    # row 2's maximum (0.80) is on the special column; among allowed columns 0.10 at column 2 wins
    assert pairs(decode_argmax(M, ALLOWED)) == [(0, 0), (1, 1), (2, 2)]
    assert pairs(decode_argmax(M)) == [(0, 0), (1, 1), (2, 3)]


def test_argmax_with_threshold_leaves_weak_rows_unaligned():
    # row maxima over allowed columns: 0.70, 0.45, 0.10 -> with 0.3 the last row gets no link
    assert pairs(decode_argmax(M, ALLOWED, threshold=0.3)) == [(0, 0), (1, 1)]
    assert pairs(decode_argmax(M, ALLOWED, threshold=0.5)) == [(0, 0)]


def test_threshold_links_every_cell_above():
    assert pairs(decode_threshold(M, ALLOWED, threshold=0.2)) == [(0, 0), (0, 1), (1, 1), (1, 2)]
    assert pairs(decode_threshold(M, ALLOWED, threshold=0.41)) == [(0, 0), (1, 1)]
    with pytest.raises(ValueError, match="needs a threshold"):
        decode_threshold(M, ALLOWED, threshold=None)


def test_bidir_by_hand():
    # allowed part: [[.70 .20 .05] [.10 .45 .40] [.05 .05 .10]]
    # row shares:   [[.7368 .2105 .0526] [.1053 .4737 .4211] [.25 .25 .50]]
    # column shares: col0 sum .85 -> [.8235 .1176 .0588]; col1 .70 -> [.2857 .6429 .0714];
    #                col2 .55 -> [.0909 .7273 .1818]
    # both >= 0.2: (0,0) .7368/.8235, (0,1) .2105/.2857, (1,1), (1,2); (2,2) has .50 but only .1818 of its column
    assert pairs(decode_bidir(M, ALLOWED, threshold=0.2)) == [(0, 0), (0, 1), (1, 1), (1, 2)]
    # at 0.25 (0,1) drops out (.2105 of its row) and (2,2) still fails its column share
    assert pairs(decode_bidir(M, ALLOWED, threshold=0.25)) == [(0, 0), (1, 1), (1, 2)]
    # at 0.15 (2,2) joins: .50 of its row, .1818 of its column
    assert pairs(decode_bidir(M, ALLOWED, threshold=0.15)) == [(0, 0), (0, 1), (1, 1), (1, 2), (2, 2)]


def test_bidir_is_scale_free_and_symmetric():
    rng = np.random.default_rng(0)
    m = rng.random((5, 7))
    base = pairs(decode_bidir(m, threshold=0.2))
    assert pairs(decode_bidir(m * 37.0, threshold=0.2)) == base
    flipped = decode_bidir(m.T, threshold=0.2)
    assert pairs((flipped[1], flipped[0])) == base


def test_decode_uses_rule_defaults_and_empty_inputs():
    assert pairs(decode(M, "argmax", ALLOWED)) == pairs(decode_argmax(M, ALLOWED))
    assert pairs(decode(M, "threshold", ALLOWED)) == pairs(decode_threshold(M, ALLOWED, threshold=0.1))
    assert pairs(decode(np.zeros((0, 4)), "argmax")) == []
    assert pairs(decode(M, "argmax", np.zeros(4, bool))) == []
    assert pairs(decode(np.zeros((2, 3)), "bidir")) == []  # no weight anywhere: no link


def test_bad_matrices_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        decode(-M)
    with pytest.raises(ValueError, match="column mask"):
        decode(M, allowed=np.ones(3, bool))
    with pytest.raises(ValueError, match="matrix"):
        decode(np.ones(3))


def test_signature_names_the_rule_only_when_given():
    old = AlignmentSignature(model="m", method="naive", layer=1, threshold=0.05)
    assert old.format() == f"model:m|method:naive|layer:1|heads:mean|thr:0.05|gold:none|v:{__version__}"
    new = AlignmentSignature(model="m", method="learned", layer=1, threshold=0.1, decode="bidir")
    assert new.format() == f"model:m|method:learned|layer:1|heads:mean|thr:0.1|decode:bidir|gold:none|v:{__version__}"


def test_null_columns_compete_but_are_never_linked():
    null = ~ALLOWED  # column 3 as the "no source" slot
    # row 2 puts 0.80 on the null column: it stays unaligned instead of falling back to column 2
    assert pairs(decode_argmax(M, ALLOWED, null=null)) == [(0, 0), (1, 1)]
    assert pairs(decode_threshold(M, threshold=0.5, null=null)) == [(0, 0)]
    # bidir with the null column in the row shares: row 2 shares .05/.05/.10/.80 -> (2,2) is .10 of its row
    # column 2 shares (rows .05,.40,.10 of .55): (1,2) .7273; row 1 share .40 -> linked
    assert pairs(decode_bidir(M, threshold=0.2, null=null)) == [(0, 0), (0, 1), (1, 1), (1, 2)]
    assert pairs(decode_bidir(M, threshold=0.15, null=null)) == [(0, 0), (0, 1), (1, 1), (1, 2)]
