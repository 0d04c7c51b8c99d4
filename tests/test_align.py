"""Alignment methods on hand-made Records (no model): rows, layers, heads, argmax, threshold, the grid."""

from __future__ import annotations

import numpy as np
import pytest

from aligndebug import align
from aligndebug.record import Record

# Source: words A B C as tokens ▁A ▁B b ▁C </s>  -> word ids 0 1 1 2 -1
# Target: words X Y; the decoder reads <pad> ▁X ▁Y y and predicts ▁X ▁Y y </s> (Marian/T5 layout)
SRC_WIDS = [0, 1, 1, 2, -1]
TGT_WIDS = [0, 1, 1, -1]
# (primary, secondary) source column of each row, per layer and head: the primary gets 0.6, the secondary 0.2,
# the three others 0.2/3 each. Column 4 is </s>: where it is the primary, the argmax must take the secondary.
PEAKS = [
    [[(0, 1), (1, 0), (3, 2), (4, 2)], [(1, 2), (2, 3), (0, 1), (3, 0)]],  # layer 0: head 0, head 1
    [[(3, 2), (0, 1), (2, 4), (1, 0)], [(0, 3), (3, 1), (1, 0), (2, 3)]],  # layer 1
    [[(4, 1), (4, 2), (4, 3), (4, 0)], [(2, 0), (2, 1), (0, 3), (3, 2)]],  # layer 2
]


def make_cross(peaks=PEAKS, n_src: int = 5) -> np.ndarray:
    L, H, T = len(peaks), len(peaks[0]), len(peaks[0][0])
    cross = np.full((L, H, T, n_src), 0.2 / (n_src - 2), dtype=np.float32)
    for l, layer in enumerate(peaks):
        for h, head in enumerate(layer):
            for r, (p, s) in enumerate(head):
                cross[l, h, r, p], cross[l, h, r, s] = 0.6, 0.2
    return cross


def make_record(cross=None, src_wids=SRC_WIDS, tgt_wids=TGT_WIDS, n_src_words=3, n_tgt_words=2) -> Record:
    cross = make_cross() if cross is None else cross
    S, T = len(src_wids), len(tgt_wids)
    return Record(
        source=" ".join("ABCDEFG"[:n_src_words]), target=" ".join("XYZ"[:n_tgt_words]),
        src_words=list("ABCDEFG"[:n_src_words]), tgt_words=list("XYZ"[:n_tgt_words]),
        src_tokens=["▁A", "▁B", "b", "▁C", "</s>"][:S], dec_tokens=["<pad>", "▁X", "▁Y", "y"][:T],
        label_tokens=["▁X", "▁Y", "y", "</s>"][:T], src_ids=np.arange(S), dec_ids=np.arange(T),
        label_ids=np.arange(1, T + 1), src_word_ids=np.array(src_wids), tgt_word_ids=np.array(tgt_wids),
        token_logprobs=np.zeros(T, np.float32), cross=cross)


def test_fixture_rows_are_distributions():
    np.testing.assert_allclose(make_cross().sum(-1), 1.0, atol=1e-6)


# ------------------------------------------------------------------------------------------------- select

def test_select_layers_and_heads():
    cross = make_cross()
    np.testing.assert_array_equal(align.select(cross, 1, 0), cross[1, 0])
    np.testing.assert_array_equal(align.select(cross, -1, -1), cross[2, 1])
    np.testing.assert_allclose(align.select(cross, 2, "mean"), cross[2].mean(0), atol=1e-6)
    np.testing.assert_allclose(align.select(cross, "mean", 1), cross[:, 1].mean(0), atol=1e-6)
    np.testing.assert_allclose(align.select(cross, "mean", "mean"), cross.mean((0, 1)), atol=1e-6)
    np.testing.assert_allclose(align.select(cross, [0, 2], [1]), (cross[0, 1] + cross[2, 1]) / 2, atol=1e-6)
    np.testing.assert_allclose(align.select(cross, None, "mean"), cross[1].mean(0))  # default: middle-upper layer
    assert align.default_layer(6) == 3 and align.default_layer(2) == 1


@pytest.mark.parametrize("layer, head, match", [
    (3, 0, "layer 3 does not exist"), (-4, 0, "layer -4 does not exist"), (0, 2, "head 2 does not exist"),
    ([0, 5], 0, "layer 5"), ("last", 0, "layer must be an index"), (0, "max", "head must be an index"),
])
def test_select_refuses_what_does_not_exist(layer, head, match):
    with pytest.raises(ValueError, match=match):
        align.select(make_cross(), layer, head)


def test_select_needs_four_axes():
    with pytest.raises(ValueError, match=r"\[layers, heads, rows, cols\]"):
        align.select(make_cross()[0], 0, 0)


# ------------------------------------------------------------------------------------------- rows/methods

def test_naive_and_shift_att_rows_differ_by_one():
    rec = make_record()
    assert rec.rows_for("naive").tolist() == [0, 1, 2]
    assert rec.rows_for("shift-att").tolist() == [1, 2, 3]
    for layer in (0, 1, 2, "mean"):
        for head in (0, 1, "mean"):
            full = align.select(rec.cross, layer, head)
            naive = align.attention_matrix(rec, layer, head, "naive")
            shift = align.attention_matrix(rec, layer, head, "shift-att")
            np.testing.assert_array_equal(naive, full[[0, 1, 2]])
            np.testing.assert_array_equal(shift, full[[1, 2, 3]])
            np.testing.assert_array_equal(naive[1:], shift[:-1])


def test_unknown_method_and_missing_rows():
    rec = make_record()
    with pytest.raises(ValueError, match="unknown method"):
        align.align_record(rec, "shifted")
    # A target with no </s> row after its last token: Shift-Att has no row to read for it.
    short = make_record(cross=make_cross()[:, :, :2], tgt_wids=[0, 1])
    assert align.align_record(short, "naive", layer=0, head=0) == {(0, 0), (1, 1)}
    with pytest.raises(ValueError, match="Shift-Att needs the row after the last target token"):
        align.align_record(short, "shift-att")


def test_no_cross_attention_is_a_clear_error():
    rec = make_record()
    rec.cross = None
    for call in (align.attention_matrix, align.align_record, align.align_grid):
        with pytest.raises(ValueError, match="no cross-attention"):
            call(rec)


# -------------------------------------------------------------------------------------------- argmax links

# (method, layer, head) -> links (source word, target word); worked out by hand from PEAKS:
# target tokens ▁X ▁Y y belong to words 0 1 1; source columns 0 1 2 3 to words 0 1 1 2; column 4 is </s>.
EXPECTED_ARGMAX = {
    ("naive", 0, 0): {(0, 0), (1, 1), (2, 1)},  # rows 0,1,2 -> cols 0,1,3
    ("shift-att", 0, 0): {(1, 0), (2, 1), (1, 1)},  # rows 1,2,3 -> cols 1,3, and </s> -> secondary col 2
    ("naive", 0, 1): {(1, 0), (1, 1), (0, 1)},  # cols 1,2,0
    ("shift-att", 0, 1): {(1, 0), (0, 1), (2, 1)},  # cols 2,0,3
    ("naive", 1, 0): {(2, 0), (0, 1), (1, 1)},  # cols 3,0,2
    ("shift-att", 1, 0): {(0, 0), (1, 1)},  # cols 0,2,1
    ("naive", 2, 0): {(1, 0), (1, 1), (2, 1)},  # </s> everywhere -> secondaries 1,2,3
    ("shift-att", 2, 0): {(1, 0), (2, 1), (0, 1)},  # secondaries 2,3,0
    ("naive", -1, 0): {(1, 0), (1, 1), (2, 1)},  # negative layer = last layer
    ("shift-att", 2, -1): {(1, 0), (0, 1), (2, 1)},  # negative head = last head: cols 2,0,3
}


@pytest.mark.parametrize("key", list(EXPECTED_ARGMAX), ids=[f"{m}-L{l}-H{h}" for m, l, h in EXPECTED_ARGMAX])
def test_argmax_links_by_hand(key):
    method, layer, head = key
    assert align.align_record(make_record(), method, layer=layer, head=head) == EXPECTED_ARGMAX[key]


def _reference_links(rec, method, layer, head, threshold=None):
    """An independent, loop-by-loop reading of the definitions, to check the vectorised code against."""
    att = rec.cross
    att = att.mean(0) if layer == "mean" else att[layer]
    att = att.mean(0) if head == "mean" else att[head]
    links = set()
    for k, t in enumerate(np.flatnonzero(rec.tgt_word_ids >= 0)):
        row = att[t if method == "naive" else t + 1]
        cols = [c for c in range(len(row)) if rec.src_word_ids[c] >= 0]
        picked = [max(cols, key=lambda c: row[c])] if threshold is None else [c for c in cols if row[c] >= threshold]
        links |= {(int(rec.src_word_ids[c]), int(rec.tgt_word_ids[t])) for c in picked}
    return links


@pytest.mark.parametrize("method", ["naive", "shift-att"])
@pytest.mark.parametrize("threshold", [None, 0.15, 0.3])
def test_mean_layers_and_heads_match_the_definition(method, threshold):
    rec = make_record()
    for layer in (0, 1, 2, "mean"):
        for head in (0, 1, "mean"):
            got = align.align_record(rec, method, layer=layer, head=head, threshold=threshold)
            assert got == _reference_links(rec, method, layer, head, threshold), (layer, head)


def test_threshold_links_by_hand():
    rec = make_record()
    # >= 0.5: only the primaries (0.6), </s> excluded -> the same as argmax where no </s> is primary
    assert align.align_record(rec, "naive", layer=0, head=0, threshold=0.5) == {(0, 0), (1, 1), (2, 1)}
    assert align.align_record(rec, "shift-att", layer=0, head=0, threshold=0.5) == {(1, 0), (2, 1)}
    # >= 0.15: primaries and secondaries. naive rows 0,1,2 -> cols {0,1}, {1,0}, {3,2}
    links = {(0, 0), (1, 0), (1, 1), (0, 1), (2, 1)}
    assert align.align_record(rec, "naive", layer=0, head=0, threshold=0.15) == links
    # a threshold nothing reaches gives no links, and </s> at 0.6 never counts
    assert align.align_record(rec, "naive", layer=0, head=0, threshold=0.7) == set()
    assert align.align_record(rec, "naive", layer=2, head=0, threshold=0.5) == set()


def test_special_source_tokens_are_never_chosen():
    rec = make_record()
    # Layer 2 head 0 puts 0.6 on </s> in every row: the raw argmax is always the special column ...
    assert (align.attention_matrix(rec, 2, 0, "naive").argmax(-1) == 4).all()
    # ... and the chosen columns never are.
    rows, cols = align.token_links(align.attention_matrix(rec, 2, 0, "naive"), rec.src_word_ids)
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [1, 2, 3]
    # Language codes at the front (M2M100/NLLB source layout) are skipped the same way.
    front = make_record(cross=make_cross()[:, :, :, [4, 0, 1, 2, 3]], src_wids=[-1, 0, 1, 1, 2])
    assert align.align_record(front, "naive", 2, 0) == {(1, 0), (1, 1), (2, 1)}
    # A source made only of specials gives no links rather than a special one.
    empty = make_record(src_wids=[-1] * 5, n_src_words=0)
    assert align.align_record(empty) == set()
    assert all(v == set() for v in align.align_grid(empty).values())


def test_word_matrix_pools_the_rows_it_aligns_from():
    rec = make_record()
    m = align.word_matrix(rec, "naive", layer=0, head=0)
    a = rec.cross[0, 0]
    expected = np.array([
        [a[0, 0], a[0, 1] + a[0, 2], a[0, 3]],  # target word X = row 0
        [(a[1, 0] + a[2, 0]) / 2, (a[1, 1] + a[1, 2] + a[2, 1] + a[2, 2]) / 2, (a[1, 3] + a[2, 3]) / 2],
    ])
    np.testing.assert_allclose(m, expected, atol=1e-6)
    e = 0.2 / 3  # the three background cells of each row
    np.testing.assert_allclose(m, [[0.6, 0.2 + e, e],
                                   [(0.2 + e) / 2, ((0.6 + e) + (e + 0.2)) / 2, (e + 0.6) / 2]], atol=1e-6)


# --------------------------------------------------------------------------------------------------- grid

@pytest.mark.parametrize("method", ["naive", "shift-att"])
@pytest.mark.parametrize("threshold", [None, 0.15])
def test_grid_agrees_with_align_record_everywhere(method, threshold):
    rec = make_record()
    grid = align.align_grid(rec, method, threshold=threshold)
    L, H = rec.cross.shape[:2]
    assert set(grid) == {(l, h) for l in range(L) for h in list(range(H)) + ["mean"]}
    for (l, h), links in grid.items():
        assert links == align.align_record(rec, method, layer=l, head=h, threshold=threshold), (l, h)
    if threshold is None:
        assert grid[(0, 0)] == EXPECTED_ARGMAX[(method, 0, 0)]


def test_grid_on_random_records_with_many_subwords():
    rng = np.random.default_rng(0)
    for _ in range(5):
        S, T = 9, 8
        src_wids = np.array([-1, 0, 0, 1, 2, 2, 2, 3, -1])
        tgt_wids = np.array([-1, 0, 1, 1, 2, 3, 3, -1])
        cross = rng.dirichlet(np.full(S, 0.3), size=(3, 4, T)).astype(np.float32)
        rec = make_record(cross=cross, src_wids=src_wids, tgt_wids=tgt_wids, n_src_words=4, n_tgt_words=4)
        rec.src_tokens = [f"s{i}" for i in range(S)]
        rec.dec_tokens, rec.label_tokens = [f"d{i}" for i in range(T)], [f"l{i}" for i in range(T)]
        for method in ("naive", "shift-att"):
            for threshold in (None, 0.2):
                grid = align.align_grid(rec, method, threshold=threshold)
                for (l, h), links in grid.items():
                    assert links == _reference_links(rec, method, l, h, threshold), (method, threshold, l, h)
