"""Gold alignment readers: every shared gold set, every format, base detection, every error with file:line."""

from __future__ import annotations

import io

import pytest

from aligndebug.errors import InputError
from aligndebug.gold import GoldAlignment, GoldSet, format_pharaoh, parse_pharaoh_line, read_gold, scan_gold, write_pharaoh
from aligndebug.pairs import iter_pair_lengths, iter_pairs, pair_lengths

# (folder, stem, sure links, possible-only links, sentences), counts as stated in each SOURCE.txt
PIPE_SETS = [
    ("hansards-enfr-gold", "enfr", 4038, 13400, 447),
    ("wpt-roen-gold", "roen", 6198, 0, 248),
    ("kftt-jaen-gold", "jaen", 13562, 0, 582),
    ("tsinghua-zhen-gold", "zhen", 11238, 178, 450),
]


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def lengths_of(pairs_path):
    return pair_lengths(iter_pairs(pairs_path=pairs_path))


# ------------------------------------------------------------------------------ shared gold sets

@pytest.mark.parametrize("folder, stem, n_sure, n_possible, n_sent", PIPE_SETS)
def test_shared_pipe_sets(data_dir, folder, stem, n_sure, n_possible, n_sent):
    d = data_dir / "gold" / folder
    lengths = lengths_of(d / f"{stem}.src-tgt")
    gold = read_gold(d / f"{stem}.gold", sentences=lengths)
    assert (len(gold), gold.n_sure, gold.n_possible_only) == (n_sent, n_sure, n_possible)
    # every one of these files has a link to the last word of some sentence: proof of 1-based
    assert (gold.fmt, gold.fmt_detected, gold.base, gold.base_source) == ("pharaoh", True, 1, "detected")
    assert gold.warnings == [] and gold.skipped == 0 and None not in gold.alignments
    assert "1-based (detected" in gold.describe()
    for (ns, nt), a in zip(lengths, gold):  # 0-based and inside each sentence
        assert all(0 <= i < ns and 0 <= j < nt for i, j in a.possible)
    # without sentence lengths the base can only be guessed, and the reader says so
    guessed = read_gold(d / f"{stem}.gold")
    assert (guessed.base, guessed.base_source, guessed.base_detected) == (1, "guessed", True)
    assert any("guessed" in w for w in guessed.warnings)
    assert guessed.alignments == gold.alignments
    # read as 0-based, the links to the last word fall off the end
    with pytest.raises(InputError, match=rf"{stem}\.gold:\d+: .*past the end"):
        read_gold(d / f"{stem}.gold", base=0, sentences=lengths)


def test_hansards_first_line_sure_and_possible(data_dir):
    # line 1 of enfr.gold is "2-2 1-1" -> 0-based sure {(1,1),(0,0)}; a line with p tokens has possible-only links
    gold = read_gold(data_dir / "gold" / "hansards-enfr-gold" / "enfr.gold", base=1)
    assert gold[0] == GoldAlignment.from_links({(1, 1), (0, 0)})
    assert any(a.possible_only for a in gold)


def test_jaen_u3000_needs_ascii_space_split(data_dir):
    d = data_dir / "gold" / "kftt-jaen-gold"
    good = lengths_of(d / "jaen.src-tgt")
    gold = read_gold(d / "jaen.gold", sentences=good)
    assert gold.n_sure == 13562 and gold.skipped == 0
    # splitting on any whitespace drops the U+3000 tokens and breaks exactly the four lines SOURCE.txt names
    naive = []
    for line in (d / "jaen.src-tgt").read_text(encoding="utf-8").split("\n")[:-1]:
        src, tgt = line.split("|||")
        naive.append((len(src.split()), len(tgt.split())))
    assert naive != good
    with pytest.raises(InputError, match=r"jaen\.gold:351: .*source index"):
        read_gold(d / "jaen.gold", base=1, sentences=naive)
    broken = read_gold(d / "jaen.gold", base=1, sentences=naive, skip_invalid=True)
    assert [k + 1 for k, a in enumerate(broken) if a is None] == [351, 354, 355, 356]
    assert broken.skipped == 4 and "skipped 4 lines" in broken.warnings[0]


def test_bicici_formats_agree_and_base_detected(data_dir):
    d = data_dir / "gold" / "bicici-deen-gold"
    wa = read_gold(d / "de-en.wa")
    ref = read_gold(d / "de-en.ref.wa")
    assert (wa.fmt, wa.base, wa.base_source) == ("pharaoh", 0, "detected")
    assert (ref.fmt, ref.base, ref.base_source) == ("naacl", 0, "detected")
    assert len(wa) == len(ref) == 100
    assert wa.n_sure == ref.n_sure == 1233 and wa.n_possible_only == ref.n_possible_only == 0
    assert wa.alignments == ref.alignments
    assert wa[0].sure >= {(0, 0), (1, 1), (19, 16)}  # "0-0 1-1 ... 19-16" on line 1


def test_bicici_out_of_range_link_line_63(data_dir):
    d = data_dir / "gold" / "bicici-deen-gold"
    lengths = pair_lengths(iter_pairs(d / "test.de", d / "test.en"))
    with pytest.raises(InputError) as info:
        read_gold(d / "de-en.wa", sentences=lengths)
    err = info.value
    assert err.path.endswith("de-en.wa") and err.line == 63
    assert "12-16" in str(err) and "13-word target" in str(err) and "de-en.wa:63:" in str(err)

    gold = read_gold(d / "de-en.wa", sentences=lengths, skip_invalid=True)
    assert len(gold) == 100 and gold[62] is None and sum(a is not None for a in gold) == 99
    assert gold.skipped == 1 and len(gold.warnings) == 1 and "skipped 1 line " in gold.warnings[0]
    assert "de-en.wa:63" in gold.warnings[0]
    assert "(1 skipped)" in gold.describe()

    # the NAACL copy reports the file line of the offending "63 12 16 S" entry
    ref_lines = (d / "de-en.ref.wa").read_text().split("\n")
    expected_line = 1 + next(k for k, t in enumerate(ref_lines) if t.split()[:3] == ["63", "12", "16"])
    with pytest.raises(InputError) as info:
        read_gold(d / "de-en.ref.wa", sentences=lengths)
    assert info.value.line == expected_line and info.value.path.endswith("de-en.ref.wa")
    ref = read_gold(d / "de-en.ref.wa", sentences=lengths, skip_invalid=True)
    assert ref.alignments == gold.alignments and "skipped 1 sentence " in ref.warnings[0]


# ------------------------------------------------------------------------------- formats by hand

def test_pharaoh_sure_possible_and_question_mark(tmp_path):
    p = write(tmp_path / "g.txt", "0-0 1p1 2?1\n\n1-0  0p0\n")
    g = read_gold(p)
    assert (g.fmt, g.base) == ("pharaoh", 0)
    assert g[0] == GoldAlignment(frozenset({(0, 0)}), frozenset({(0, 0), (1, 1), (2, 1)}))
    assert g[1] == GoldAlignment(frozenset(), frozenset())  # empty line = no links
    assert g[2].sure == {(1, 0)} and g[2].possible == {(1, 0), (0, 0)}
    assert (g.n_sure, g.n_possible_only) == (2, 3)


def test_pharaoh_sure_wins_over_possible_duplicate(tmp_path):
    g = read_gold(write(tmp_path / "g.txt", "1-1 1p1\n"), base=1)
    assert g[0].sure == {(0, 0)} and g[0].possible_only == frozenset()


def test_sp_format_blank_line_rules(tmp_path):
    # sentence 1: two links; the blank ends it. Sentence 2 is empty (second blank in a row).
    # sentence 3: the lines up to EOF. A trailing blank line would not add a fourth sentence.
    text = "S 0 0\nP 1 2\n\n\nS 2 1\nP 0 1\n"
    g = read_gold(write(tmp_path / "g.sp", text))
    assert (g.fmt, g.fmt_detected, g.base, len(g)) == ("sp", True, 0, 3)
    assert g[0] == GoldAlignment.from_links({(0, 0)}, {(1, 2)})
    assert g[1] == GoldAlignment.from_links()
    assert g[2] == GoldAlignment.from_links({(2, 1)}, {(0, 1)})
    assert len(read_gold(write(tmp_path / "h.sp", text + "\n"))) == 3


def test_naacl_missing_sentences_labels_and_confidence(tmp_path):
    # sentence 2 has no lines -> empty; "1 2 2" has no label -> Sure; the confidence is ignored
    text = "1 1 1 S\n1 2 3 P 0.8\n3 1 2\n1 2 2\n3 2 2 0.5\n"
    g = read_gold(write(tmp_path / "g.naacl", text), base=1)
    assert (g.fmt, len(g)) == ("naacl", 3)
    assert g[0] == GoldAlignment.from_links({(0, 0), (1, 1)}, {(1, 2)})
    assert g[1] == GoldAlignment.from_links()
    assert g[2] == GoldAlignment.from_links({(0, 1), (1, 1)})
    # with five sentences given, sentences 4-5 are empty and a warning says so
    g5 = read_gold(write(tmp_path / "g.naacl", text), base=1, sentences=[(3, 3)] * 5)
    assert len(g5) == 5 and g5[4] == GoldAlignment.from_links()
    assert any("sentences 4..5" in w for w in g5.warnings)


def test_explicit_format_is_used_and_wrong_format_fails(tmp_path):
    p = write(tmp_path / "g.txt", "0-1 1-0\n")
    g = read_gold(p, fmt="pharaoh", base=0)
    assert (g.fmt_detected, g.base_detected, g.base_source) == (False, False, "given")
    assert g[0].sure == {(0, 1), (1, 0)}
    with pytest.raises(InputError, match=r"g\.txt:1: malformed line"):
        read_gold(p, fmt="naacl")
    with pytest.raises(InputError, match="unknown gold format 'giza'"):
        read_gold(p, fmt="giza")
    with pytest.raises(InputError, match="index base 2"):
        read_gold(p, base=2)


def test_undetectable_format(tmp_path):
    p = write(tmp_path / "g.txt", "\n0:1 1:0\n")
    with pytest.raises(InputError) as info:
        read_gold(p)
    assert info.value.line == 2 and "cannot tell the gold alignment format" in str(info.value)


def test_detected_pharaoh_reports_the_bad_token(tmp_path):
    with pytest.raises(InputError, match=r"g\.txt:1: malformed link 'x'"):
        read_gold(write(tmp_path / "g.txt", "0-0 x\n"))


def test_blank_only_file_reads_as_empty_pharaoh_sentences(tmp_path):
    g = read_gold(write(tmp_path / "g.txt", "\n\n"), sentences=[(1, 1), (2, 2)])
    assert len(g) == 2 and all(a == GoldAlignment.from_links() for a in g)
    assert g.base_source == "guessed"


# -------------------------------------------------------------------------------- base detection

def test_base_zero_index_means_0_based(tmp_path):
    g = read_gold(write(tmp_path / "g.txt", "1-1 2-0\n"))
    assert (g.base, g.base_source) == (0, "detected") and g[0].sure == {(1, 1), (2, 0)}
    assert "index 0 occurs" in g.describe()


def test_base_index_equal_to_length_means_1_based(tmp_path):
    # sentence lengths (3, 2): the index 3 can only be the last source word of a 1-based file
    g = read_gold(write(tmp_path / "g.txt", "3-2 1-1\n"), sentences=[(3, 2)])
    assert (g.base, g.base_source) == (1, "detected") and g[0].sure == {(2, 1), (0, 0)}
    assert g.warnings == []


def test_base_ambiguous_is_a_guess_with_warning(tmp_path):
    # indices 1..2 in sentences of 3 words: in range read either way -> guessed 1-based, said in a warning
    g = read_gold(write(tmp_path / "g.txt", "1-1 2-2\n"), sentences=[(3, 3)])
    assert (g.base, g.base_source) == (1, "guessed")
    assert len(g.warnings) == 1 and "guessed" in g.warnings[0] and "base=" in g.warnings[0]
    assert "1-based (guessed" in g.describe()


def test_base_conflicting_evidence_picks_reading_with_fewer_bad_links(tmp_path):
    # index 0 (only valid 0-based) and index == length (only valid 1-based) both occur.
    # Read 0-based: 3-0, 3-1 are out of range (2 bad); read 1-based: 0-2 is out (1 bad) -> 1-based guess.
    p = write(tmp_path / "g.txt", "0-2 3-1 3-2\n")
    g = read_gold(p, sentences=[(3, 3)], skip_invalid=True)
    assert (g.base, g.base_source) == (1, "guessed") and g[0] is None
    assert any("both index 0" in w for w in g.warnings)
    with pytest.raises(InputError, match="index 0 in a 1-based file"):
        read_gold(p, sentences=[(3, 3)])


def test_base_given_overrides_detection(tmp_path):
    g = read_gold(write(tmp_path / "g.txt", "1-1\n"), base=0)
    assert g[0].sure == {(1, 1)} and g.base_source == "given" and g.warnings == []


# ------------------------------------------------------------------------------------- errors

def test_malformed_token_names_file_line_and_expectation(tmp_path):
    p = write(tmp_path / "g.txt", "0-0\n1-1 2x2\n")
    with pytest.raises(InputError) as info:
        read_gold(p)
    err = info.value
    assert err.line == 2 and err.path.endswith("g.txt")
    assert "'2x2'" in str(err) and "expected" in str(err) and "i-j" in str(err)
    g = read_gold(p, skip_invalid=True)
    assert g[0].sure == {(0, 0)} and g[1] is None and g.skipped == 1


def test_undecodable_gold_bytes(tmp_path):
    p = tmp_path / "g.txt"
    p.write_bytes(b"0-0\n1-1 \xe9\n")
    with pytest.raises(InputError, match=r"g\.txt:2: bytes b'\\xe9'"):
        read_gold(p)


def test_index_zero_in_1_based_file(tmp_path):
    with pytest.raises(InputError, match=r"g\.txt:2: link 0-1 has index 0 in a 1-based file"):
        read_gold(write(tmp_path / "g.txt", "1-1\n0-1\n"), base=1)


def test_source_index_out_of_range(tmp_path):
    with pytest.raises(InputError) as info:
        read_gold(write(tmp_path / "g.txt", "0-0\n5-0\n"), base=0, sentences=[(2, 2), (4, 2)])
    assert info.value.line == 2 and "source index 5" in str(info.value) and "0..3" in str(info.value)


def test_line_count_mismatch(tmp_path):
    p = write(tmp_path / "g.txt", "0-0\n1-1\n")
    with pytest.raises(InputError) as info:
        read_gold(p, sentences=[(2, 2)] * 3)
    assert info.value.line == 3 and "ends after 2 lines but 3 sentence pairs" in str(info.value)
    with pytest.raises(InputError) as info:
        read_gold(p, sentences=[(2, 2)])
    assert info.value.line == 2 and "more than 1 lines" in str(info.value)
    # skip_invalid does not excuse a wrong number of sentences
    with pytest.raises(InputError):
        read_gold(p, sentences=[(2, 2)], skip_invalid=True)


def test_trailing_blank_lines_beyond_sentences_are_ignored_with_warning(tmp_path):
    g = read_gold(write(tmp_path / "g.txt", "0-0\n\n\n"), sentences=[(1, 1)])
    assert len(g) == 1 and any("ignored 2 blank line" in w for w in g.warnings)


def test_sp_count_mismatch_and_malformed(tmp_path):
    p = write(tmp_path / "g.sp", "S 0 0\n\nS 1 1\n")
    with pytest.raises(InputError, match=r"g\.sp:\d+: gold ends after 2 sentences but 3"):
        read_gold(p, sentences=[(2, 2)] * 3)
    bad = write(tmp_path / "b.sp", "S 0 0\nS 1\n\nS 1 1\n")
    with pytest.raises(InputError, match=r"b\.sp:2: malformed line 'S 1'"):
        read_gold(bad, fmt="sp")
    g = read_gold(bad, fmt="sp", skip_invalid=True)
    assert g[0] is None and g[1].sure == {(1, 1)} and "skipped 1 sentence" in g.warnings[0]


def test_naacl_errors(tmp_path):
    p = write(tmp_path / "g.naacl", "1 0 0 S\n4 1 1 S\n")
    with pytest.raises(InputError, match=r"g\.naacl:2: sentence number 4 but only 3"):
        read_gold(p, sentences=[(2, 2)] * 3)
    with pytest.raises(InputError, match=r"z\.naacl:1: sentence number 0"):
        read_gold(write(tmp_path / "z.naacl", "0 1 1 S\n"))
    with pytest.raises(InputError, match=r"q\.naacl:2: malformed line '1 1 1 Q'"):
        read_gold(write(tmp_path / "q.naacl", "1 0 0 S\n1 1 1 Q\n"))


def test_gold_alignment_enforces_sure_subset_of_possible():
    with pytest.raises(ValueError, match="subset"):
        GoldAlignment(frozenset({(0, 0)}), frozenset({(1, 1)}))
    g = GoldAlignment.from_links([(0, 0)], [(1, 1)])
    assert g.possible == {(0, 0), (1, 1)} and g.possible_only == {(1, 1)}
    with pytest.raises(Exception):
        g.sure = frozenset()  # frozen


# -------------------------------------------------------------------------------------- writers

def test_format_pharaoh():
    assert format_pharaoh({(1, 0), (0, 1)}) == "0-1 1-0"
    assert format_pharaoh({(0, 0)}, possible={(0, 0), (2, 1)}, base=1) == "1-1 3p2"
    assert format_pharaoh(GoldAlignment.from_links({(1, 1)}, {(0, 0)})) == "0p0 1-1"
    assert format_pharaoh(set()) == ""
    with pytest.raises(ValueError):
        format_pharaoh({(-1, 0)})


def test_write_then_read_round_trip(tmp_path, data_dir):
    gold = read_gold(data_dir / "gold" / "tsinghua-zhen-gold" / "zhen.gold", base=1)
    out = tmp_path / "zhen0.txt"
    assert write_pharaoh(gold, out, base=0) == 450
    back = read_gold(out, base=0)
    assert back.alignments == gold.alignments
    buf = io.StringIO()
    write_pharaoh([{(0, 1)}, set()], buf, base=1)
    assert buf.getvalue() == "1-2\n\n"
    with pytest.raises(ValueError, match="sentence 2"):
        write_pharaoh([{(0, 0)}, None], io.StringIO())


def test_parse_pharaoh_line():
    assert parse_pharaoh_line("1-2 2p2", base=1) == GoldAlignment.from_links({(0, 1)}, {(1, 1)})
    assert parse_pharaoh_line("  ") == GoldAlignment.from_links()
    with pytest.raises(InputError) as info:
        parse_pharaoh_line("0-0 0-3", lengths=(1, 3))
    assert str(info.value) == "<input>: link 0-3: target index 3 is past the end of a 3-word target sentence (expected 0-based target indices 0..2)"
    with pytest.raises(InputError, match=r"^<input>: malformed link '0_0'"):
        parse_pharaoh_line("0_0")


# ------------------------------------------------------------------------------ streaming reader

def _by_positions(stream, every: int) -> list:
    """The whole file read back chunk by chunk from `positions`, as Ray workers read it."""
    return [a for pos in stream.positions(every) for a in stream.iter_from(pos, every)]


GOLD_FILES = [(folder, f"{stem}.gold", f"{stem}.src-tgt") for folder, stem, *_ in PIPE_SETS] + [
    ("bicici-deen-gold", "de-en.wa", None), ("bicici-deen-gold", "de-en.ref.wa", None)]


@pytest.mark.parametrize("folder, gold_name, pairs_name", GOLD_FILES)
def test_scan_gold_streams_every_shared_set_as_read_gold_reads_it(data_dir, folder, gold_name, pairs_name):
    d = data_dir / "gold" / folder
    pairs = (lambda: iter_pairs(pairs_path=d / pairs_name)) if pairs_name else (lambda: iter_pairs(d / "test.de", d / "test.en"))
    whole = read_gold(d / gold_name, sentences=pair_lengths(pairs()), skip_invalid=True)
    stream = scan_gold(d / gold_name, sentences=iter_pair_lengths(pairs()), skip_invalid=True)  # lengths from a generator
    assert not isinstance(stream, GoldSet) and not hasattr(stream, "alignments")
    assert (stream.fmt, stream.base, stream.base_source, stream.n_sure, stream.n_possible_only, stream.skipped) == (
        whole.fmt, whole.base, whole.base_source, whole.n_sure, whole.n_possible_only, whole.skipped)
    assert stream.warnings == whole.warnings and stream.describe() == whole.describe()
    assert len(stream) == len(whole) and list(stream) == whole.alignments
    assert list(stream) == whole.alignments  # a stream can be read again: it re-reads the file
    for every in (1, 7, 64):
        assert _by_positions(stream, every) == whole.alignments


def test_streamed_sp_and_naacl_start_mid_file(tmp_path):
    # SP: an empty sentence between blank lines; NAACL: sentence 2 has no lines, 5-6 are past the last line
    sp = write(tmp_path / "g.sp", "S 0 0\nP 1 2\n\n\nS 2 1\n\nS 1 1\n")
    naacl = write(tmp_path / "g.naacl", "1 1 1 S\n1 2 3 P\n3 1 2\n4 2 2\n")
    for path, lengths in ((sp, [(3, 3)] * 4), (naacl, [(3, 3)] * 6)):
        whole = read_gold(path, base=0 if path == sp else 1, sentences=lengths)
        stream = scan_gold(path, base=whole.base, sentences=iter(lengths))
        assert len(stream) == len(lengths) and list(stream) == whole.alignments
        for every in (1, 2, 3, 4):
            assert _by_positions(stream, every) == whole.alignments
    positions = scan_gold(naacl, base=1, sentences=[(3, 3)] * 6).positions(1)
    assert [(p.index, p.line) for p in positions[:4]] == [(0, 1), (1, 3), (2, 3), (3, 4)]  # 2 starts where 3 does


def test_unsorted_naacl_streams_in_sentence_order(tmp_path):
    text = "3 1 2\n1 1 1 S\n\n2 2 3 P\n1 2 2\n"
    p = write(tmp_path / "g.naacl", text)
    stream = scan_gold(p, base=1, sentences=[(3, 3)] * 3)
    assert not stream.in_order
    want = [GoldAlignment.from_links({(0, 0), (1, 1)}), GoldAlignment.from_links(set(), {(1, 2)}),
            GoldAlignment.from_links({(0, 1)})]
    assert list(stream) == want and _by_positions(stream, 2) == want and _by_positions(stream, 1) == want


def test_streamed_invalid_sentences_are_none_and_errors_come_before_any_read(tmp_path):
    p = write(tmp_path / "g.txt", "0-0\n0-5 x\n1-1\n9-0\n")
    lengths = [(2, 2)] * 4
    with pytest.raises(InputError, match=r"g\.txt:2: malformed link 'x'"):
        scan_gold(p, base=0, sentences=lengths)
    stream = scan_gold(p, base=0, sentences=iter(lengths), skip_invalid=True)
    assert stream.invalid == {1, 3} and stream.skipped == 2 and "skipped 2 lines" in stream.warnings[-1]
    assert [a is None for a in stream] == [False, True, False, True]
    assert [a is None for a in _by_positions(stream, 3)] == [False, True, False, True]
    with pytest.raises(InputError, match=r"g\.txt:\d+: gold ends after 4 lines but 5"):
        scan_gold(p, base=0, sentences=iter(lengths + [(1, 1)]), skip_invalid=True)
