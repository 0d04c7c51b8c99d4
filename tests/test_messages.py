"""Messages a user understands: inputs that used to pass silently or blame the wrong thing."""

from __future__ import annotations

import pytest

import tiny_models as tm
from aligndebug.errors import InputError
from aligndebug.extract import extract, translate
from aligndebug.gold import read_gold, scan_gold
from aligndebug.models import ModelLoadError, load_model
from aligndebug.pairs import iter_pairs


def test_nul_byte_and_mid_file_bom_name_their_line(tmp_path):
    for raw, what in ((b"ein Hund\nzwei\x00 Katzen\n", "a NUL byte at character 5"),
                      (b"ein Hund\n\xef\xbb\xbfzwei Katzen\n", "a byte-order mark")):
        path = tmp_path / "src.txt"
        path.write_bytes(raw)
        with pytest.raises(InputError, match=what) as err:
            list(iter_pairs(src_path=path))
        assert err.value.path == str(path) and err.value.line == 2
    path.write_bytes(b"\xef\xbb\xbfein Hund\n")  # at the very start it is the usual Windows BOM: skipped
    assert next(iter(iter_pairs(src_path=path))).src_words == ["ein", "Hund"]


def test_empty_line_hint_names_no_api_argument(tmp_path):
    path = tmp_path / "src.txt"
    path.write_text("ein Hund\n\nzwei\n", encoding="utf-8")
    with pytest.raises(InputError, match="empty source sentence") as err:
        list(iter_pairs(src_path=path))
    assert "allow_empty" not in str(err.value) and err.value.line == 2


def test_naacl_sentence_missing_in_the_middle_is_warned(tmp_path):
    gold = tmp_path / "gold.naacl"
    gold.write_text("1 0 0 S\n3 0 0 S\n4 1 1 P\n", encoding="utf-8")
    g = read_gold(gold, base=0, sentences=[(2, 2)] * 4)
    assert g.n_sentences == 4 and g.alignments[1].sure == set()
    assert any("no lines for sentence 2 in the middle" in w for w in g.warnings), g.warnings
    whole = tmp_path / "whole.naacl"
    whole.write_text("1 0 0 S\n2 0 0 S\n", encoding="utf-8")
    assert not any("middle" in w for w in read_gold(whole, base=0, sentences=[(2, 2)] * 2).warnings)


def test_gold_that_fails_under_either_base_blames_the_words_not_the_base(tmp_path):
    """A tab inside a 'word' joins two words: the gold's last index is past the end read 0- or 1-based."""
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("der\tHund schläft ||| the dog sleeps\n", encoding="utf-8")  # 2 source words, not 3
    gold = tmp_path / "gold.wa"
    gold.write_text("0-0 1-1 2-2\n", encoding="utf-8")
    lengths = [(len(p.src_words), len(p.tgt_words)) for p in iter_pairs(pairs_path=pairs)]
    with pytest.raises(InputError, match="read 0- or 1-based alike") as err:
        scan_gold(gold, sentences=lengths)
    assert "tab" in str(err.value) and err.value.line == 1
    with pytest.raises(InputError) as given:  # a base the user gave is not second-guessed
        scan_gold(gold, base=0, sentences=lengths)
    assert "alike" not in str(given.value) and "0-based source indices 0..1" in str(given.value)


def test_plain_strings_instead_of_lists_are_refused():
    bundle = tm.bundle("marian")
    with pytest.raises(TypeError, match="list of sentences, not one string"):
        extract(bundle, "Der Hund schläft .", None)
    with pytest.raises(TypeError, match="targets must be a list"):
        extract(bundle, ["Der Hund schläft ."], "The dog sleeps .")


def test_beam_below_one_is_refused_in_the_api():
    with pytest.raises(ValueError, match="beam must be 1"):
        translate(tm.bundle("marian"), ["Der Hund ."], beam=0)


def test_pickle_only_model_folder_says_why(tmp_path):
    folder = tm.save("marian", tmp_path / "m")
    model = folder / "model.safetensors"
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(model), folder / "pytorch_model.bin")
    model.unlink()
    with pytest.raises(ModelLoadError, match="pickle files.*safetensors only.*save_pretrained"):
        load_model(str(folder))
