"""Sentence-pair readers: parallel files, ||| files, word splitting, and every error with file:line."""

from __future__ import annotations

import pickle
import types

import pytest

from aligndebug.errors import InputError
from aligndebug.pairs import (SentencePair, count_lines, iter_lines, iter_pairs, pair_lengths, read_lines_keeping_bad,
                              split_words)


def write(path, data: bytes | str):
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# ------------------------------------------------------------------------------------- errors

def test_input_error_str_and_fields():
    err = InputError("a/b.txt", 7, "bad token 'x'", "i-j tokens")
    assert str(err) == "a/b.txt:7: bad token 'x' (expected i-j tokens)"
    assert (err.path, err.line, err.message, err.expected) == ("a/b.txt", 7, "bad token 'x'", "i-j tokens")
    assert isinstance(err, ValueError)
    assert str(InputError("f", None, "empty")) == "f: empty"
    assert str(InputError(None, 3, "m", "e")) == "<input>:3: m (expected e)"
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.line, str(back)) == ("a/b.txt", 7, str(err))


# ----------------------------------------------------------------------------------- splitting

def test_split_words_ascii_space_only():
    # runs of spaces and edge spaces make no empty words; U+3000, tabs and NBSP stay inside/as words
    assert split_words("  a  b ") == ["a", "b"]
    assert split_words("a \u3000 b") == ["a", "\u3000", "b"]
    assert split_words("a\tb c\u00a0d") == ["a\tb", "c\u00a0d"]
    assert split_words("   ") == []


def test_iter_lines_only_newline_ends_a_line(tmp_path):
    # U+0085 and U+2028 would split under str.splitlines(); CRLF loses its \r
    p = write(tmp_path / "x.txt", "a\u0085b\r\nc\u2028d\nlast")
    assert list(iter_lines(p)) == [(1, "a\u0085b"), (2, "c\u2028d"), (3, "last")]


# -------------------------------------------------------------------------------- parallel files

def test_parallel_files_with_bom_and_crlf(tmp_path):
    src = write(tmp_path / "s.de", b"\xef\xbb\xbfherr pr\xc3\xa4sident !\r\nja .\r\n")
    tgt = write(tmp_path / "t.en", "mr president !\nyes .\n")
    pairs = list(iter_pairs(src, tgt))
    assert pairs == [
        SentencePair(0, 1, ["herr", "präsident", "!"], ["mr", "president", "!"]),
        SentencePair(1, 2, ["ja", "."], ["yes", "."]),
    ]
    assert pairs[0].source == "herr präsident !" and pairs[0].target == "mr president !"


def test_source_only_and_require_target(tmp_path):
    src = write(tmp_path / "s.txt", "a b\nc\n")
    assert [(p.src_words, p.tgt_words) for p in iter_pairs(src)] == [(["a", "b"], None), (["c"], None)]
    with pytest.raises(InputError, match=r"s\.txt: no target file given"):
        list(iter_pairs(src, require_target=True))


def test_mismatched_line_counts_name_both_files_and_line(tmp_path):
    src = write(tmp_path / "s.txt", "a\nb\nc\n")
    tgt = write(tmp_path / "t.txt", "x\ny\n")
    got = []
    with pytest.raises(InputError) as info:
        for p in iter_pairs(src, tgt):
            got.append(p.index)
    assert got == [0, 1]  # pairs before the mismatch were already streamed
    err = info.value
    assert err.line == 3 and err.path.endswith("s.txt")
    assert "t.txt" in str(err) and "s.txt:3:" in str(err) and "after 2 lines" in str(err)
    # the other way round
    with pytest.raises(InputError) as info:
        list(iter_pairs(tgt, src))
    assert info.value.line == 3 and info.value.path.endswith("s.txt") and "t.txt ended after 2 lines" in str(info.value)


def test_undecodable_bytes_name_file_and_line(tmp_path):
    src = write(tmp_path / "s.txt", b"ok\nbad \xff byte\n")
    tgt = write(tmp_path / "t.txt", "ok\nok\n")
    with pytest.raises(InputError) as info:
        list(iter_pairs(src, tgt))
    assert info.value.line == 2 and info.value.path.endswith("s.txt")
    assert "\\xff" in str(info.value) and "utf-8" in str(info.value)


def test_lines_kept_with_their_errors_for_triage(tmp_path):
    """Triage keeps every line: one it cannot read comes back with U+FFFD where the bad bytes were, and the
    error `iter_lines` would have raised, naming file and line; good lines, the first line's BOM and CRLF
    read as `iter_lines` reads them, gzipped files too."""
    import gzip

    data = b"\xef\xbb\xbfok\r\nbad \xff byte\nnul\x00here\n\xef\xbb\xbfstray bom\n\nlast"
    p = write(tmp_path / "t.en", data)
    texts, bad = read_lines_keeping_bad(p)
    assert texts == ["ok", "bad \ufffd byte", "nul\ufffdhere", "stray bom", "", "last"]
    assert sorted(bad) == [1, 2, 3]
    assert bad[1].startswith(f"{p}:2: bytes b'\\xff' at byte 5") and "utf-8" in bad[1]
    assert bad[2].startswith(f"{p}:3: a NUL byte") and bad[3].startswith(f"{p}:4: a byte-order mark")
    for k, (lineno, text) in enumerate(iter_lines(write(tmp_path / "good.txt", b"\xef\xbb\xbfok\r\n\nlast"))):
        assert text == texts[[0, 4, 5][k]]
    gz = tmp_path / "t.en.gz"
    gz.write_bytes(gzip.compress(data))
    assert read_lines_keeping_bad(gz) == (texts, {k: v.replace(str(p), str(gz)) for k, v in bad.items()})


def test_pairs_with_unreadable_lines_kept_for_a_run_that_skips_them(tmp_path):
    """`keep_unreadable`: a pair with a line that cannot be decoded is kept, `unreadable` naming file and line
    (both files' when both are bad); a bad pairs-file line without its '|||' is all source."""
    src = write(tmp_path / "s.txt", b"ok\nbad \xff byte\nfine\nalso \xfe\n")
    tgt = write(tmp_path / "t.txt", b"ok\nok\nnot \xc3( ok\nno \xff\n")
    with pytest.raises(InputError):
        list(iter_pairs(src, tgt, allow_empty=True))
    pairs = list(iter_pairs(src, tgt, keep_unreadable=True))
    assert [p.unreadable is None for p in pairs] == [True, False, False, False]
    assert pairs[1].unreadable.startswith(f"{src}:2: bytes b'\\xff'") and pairs[1].src_words == ["bad", "\ufffd", "byte"]
    assert pairs[2].unreadable.startswith(f"{tgt}:3: ") and pairs[2].tgt_words == ["not", "\ufffd(", "ok"]
    assert pairs[3].unreadable.startswith(f"{src}:4: ") and f"; {tgt}:4: " in pairs[3].unreadable
    pf = write(tmp_path / "p.txt", b"a ||| b\nbad \xff no bar\n\xff ||| c\n")
    got = list(iter_pairs(pairs_path=pf, keep_unreadable=True))
    assert [(p.src_words, p.tgt_words, p.unreadable is not None) for p in got] == [
        (["a"], ["b"], False), (["bad", "\ufffd", "no", "bar"], [], True), (["\ufffd"], ["c"], True)]


def test_empty_lines_error_unless_allowed(tmp_path):
    src = write(tmp_path / "s.txt", "a\n  \nc\n")
    tgt = write(tmp_path / "t.txt", "x\ny\nz\n")
    with pytest.raises(InputError, match=r"s\.txt:2: empty source sentence"):
        list(iter_pairs(src, tgt))
    pairs = list(iter_pairs(src, tgt, allow_empty=True))
    assert pairs[1].src_words == [] and pairs[1].tgt_words == ["y"]


def test_missing_file_is_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot open"):
        list(iter_pairs(tmp_path / "nope.txt"))


# ------------------------------------------------------------------------------------ pairs file

def test_pairs_file_runs_of_spaces_and_u3000(tmp_path):
    p = write(tmp_path / "x.src-tgt", "a  b   |||  c d \n京都 \u3000 大学 ||| kyoto university\n")
    pairs = list(iter_pairs(pairs_path=p))
    assert [(q.src_words, q.tgt_words, q.line) for q in pairs] == [
        (["a", "b"], ["c", "d"], 1),
        (["京都", "\u3000", "大学"], ["kyoto", "university"], 2),
    ]


def test_pairs_file_errors(tmp_path):
    p = write(tmp_path / "x.src-tgt", "a ||| b\nno separator here\n")
    with pytest.raises(InputError) as info:
        list(iter_pairs(pairs_path=p))
    assert info.value.line == 2 and "no '|||'" in str(info.value) and "x.src-tgt:2:" in str(info.value)
    p2 = write(tmp_path / "y.src-tgt", "a ||| b ||| c\n")
    with pytest.raises(InputError, match=r"y\.src-tgt:1: found 2 '\|\|\|' separators"):
        list(iter_pairs(pairs_path=p2))
    p3 = write(tmp_path / "z.src-tgt", "a ||| \n")
    with pytest.raises(InputError, match=r"z\.src-tgt:1: empty target sentence"):
        list(iter_pairs(pairs_path=p3))
    assert list(iter_pairs(pairs_path=p3, allow_empty=True))[0].tgt_words == []
    with pytest.raises(InputError, match="together with"):
        list(iter_pairs(p, p, pairs_path=p))


# --------------------------------------------------------------------------------- streaming/count

def test_iter_pairs_is_lazy(tmp_path):
    # a generator that reads nothing before the first next(); a later bad line does not stop earlier pairs
    p = write(tmp_path / "x.src-tgt", "a ||| b\n" * 3 + "broken\n")
    gen = iter_pairs(pairs_path=p)
    assert isinstance(gen, types.GeneratorType)
    assert next(gen).line == 1


@pytest.mark.parametrize("data, n", [(b"", 0), (b"a", 1), (b"a\n", 1), (b"a\nb", 2), (b"\n\n", 2), (b"x\n" * 70000, 70000)])
def test_count_lines(tmp_path, data, n):
    assert count_lines(write(tmp_path / "c.txt", data)) == n


def test_count_lines_matches_reader_on_data_dir(data_dir):
    d = data_dir / "gold" / "bicici-deen-gold"
    assert count_lines(d / "test.de") == count_lines(d / "test.en") == len(list(iter_pairs(d / "test.de", d / "test.en"))) == 100


def test_shared_pairs_files(data_dir):
    g = data_dir / "gold"
    counts = {name: len(list(iter_pairs(pairs_path=g / folder / f"{name}.src-tgt")))
              for folder, name in [("hansards-enfr-gold", "enfr"), ("wpt-roen-gold", "roen"),
                                   ("kftt-jaen-gold", "jaen"), ("tsinghua-zhen-gold", "zhen")]}
    assert counts == {"enfr": 447, "roen": 248, "jaen": 582, "zhen": 450}
    ja = list(iter_pairs(pairs_path=g / "kftt-jaen-gold" / "jaen.src-tgt"))
    # five lines hold U+3000 as a word; SOURCE.txt names the four where str.split() breaks the gold
    # (line 352 stays in range under str.split(), but its links past the U+3000 would point at the wrong words)
    assert sorted(p.line for p in ja if "\u3000" in p.src_words) == [351, 352, 354, 355, 356]
    de = list(iter_pairs(g / "bicici-deen-gold" / "test.de", g / "bicici-deen-gold" / "test.en"))
    assert de[0].src_words[0] == "herr"  # the BOM is gone
    lengths = pair_lengths(de)
    assert lengths[62] == (len(de[62].src_words), 13)  # sentence 63: English has 13 tokens (SOURCE.txt)


def test_gzipped_files_stream_like_plain_ones(tmp_path):
    import gzip

    with gzip.open(tmp_path / "a.de.gz", "wt", encoding="utf-8") as f:
        f.write("Der Hund .\nDie Katze .\n")
    with gzip.open(tmp_path / "a.en.gz", "wt", encoding="utf-8") as f:
        f.write("The dog .\nThe cat .\n")
    pairs = list(iter_pairs(tmp_path / "a.de.gz", tmp_path / "a.en.gz"))
    assert [p.tgt_words for p in pairs] == [["The", "dog", "."], ["The", "cat", "."]]
    assert count_lines(tmp_path / "a.de.gz") == 2
