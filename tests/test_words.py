"""Subword -> word mapping for SentencePiece (slow and fast), byte-level BPE and WordPiece, and word pooling."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import tiny_models as tm
from aligndebug.words import encode_words, pool_to_words, pooling_matrix, token_links_to_words

# marian and m2m100: slow (Python SentencePiece, word by word); t5, mbart, nllb: fast SentencePiece-derived
# (offsets); bart: byte-level BPE (offsets); wordpiece: BERT WordPiece (offsets).
TOKENIZERS = ["marian", "m2m100", "t5", "mbart", "nllb", "bart", "wordpiece"]
SENTENCES = [
    "Der Hund schläft .",
    "I don't like cats .",  # gold keeps "don't" whole; every tokenizer here splits it
    "Der Hund.",  # punctuation glued to the word in the gold tokenization
    "Das Wetter ist schön , oder ?",  # punctuation words
    "We're driving to Hamburg tomorrow .",
    "ß , ? '",  # words that are one character, some of them punctuation
    "Die Straße ist nass , isn't it ?",
]


def _specials(tok) -> set[int]:
    ids = set(tok.all_special_ids)
    ids |= set(getattr(tok, "lang_token_to_id", {}).values())  # M2M100's codes are not in all_special_ids
    ids |= {i for i, t in tok.added_tokens_decoder.items() if t.special}  # nor are NLLB's added codes
    return ids


def _text(tok, tokens: list[str]) -> str:
    """The characters a run of tokens spells, spaces dropped (each family marks spaces its own way)."""
    return tok.convert_tokens_to_string(tokens).replace(" ", "").replace("\u2581", "")


@pytest.mark.parametrize("family", TOKENIZERS)
@pytest.mark.parametrize("target", [False, True], ids=["source", "target"])
def test_every_word_gets_its_own_tokens_in_order(family, target):
    tok = tm.tokenizer(family)
    for sentence in SENTENCES:
        words = sentence.split(" ")
        ids, word_ids = encode_words(tok, words, target=target)
        assert len(ids) == len(word_ids)
        tokens = tok.convert_ids_to_tokens(ids)
        special = np.array([i in _specials(tok) for i in ids])
        assert special.any(), "every tokenizer here adds at least one special token"
        assert (word_ids[special] == -1).all(), f"{family}: a special token got a word in {sentence!r}"
        assert (word_ids[~special] >= 0).all(), f"{family}: a content token got no word in {sentence!r}: " \
                                                f"{list(zip(tokens, word_ids.tolist()))}"
        content = word_ids[~special]
        assert (np.diff(content) >= 0).all(), "tokens must map back in order"
        assert np.unique(content).tolist() == list(range(len(words))), "every word needs at least one token"
        for w, word in enumerate(words):  # each word's tokens spell exactly that word
            assert _text(tok, [t for t, i in zip(tokens, word_ids) if i == w]) == word, (family, word)


def test_slow_and_fast_sentencepiece_agree_on_the_same_model():
    """M2M100 (slow, word by word) and mBART (fast, offsets) read the same SentencePiece file."""
    slow, fast = tm.tokenizer("m2m100"), tm.tokenizer("mbart")
    for sentence in SENTENCES:
        words = sentence.split(" ")
        results = []
        for tok in (slow, fast):
            ids, word_ids = encode_words(tok, words)
            keep = word_ids >= 0
            results.append((np.array(tok.convert_ids_to_tokens(ids))[keep].tolist(), word_ids[keep].tolist()))
        assert results[0] == results[1], sentence


def test_gold_words_the_tokenizer_splits_or_glues():
    tok = tm.tokenizer("t5")
    ids, word_ids = encode_words(tok, ["I", "don't", "like", "cats", "."])
    tokens = tok.convert_ids_to_tokens(ids)
    assert [t for t, w in zip(tokens, word_ids) if w == 1] == ["▁do", "n", "'", "t"]
    ids, word_ids = encode_words(tok, ["Der", "Hund."])
    assert list(zip(tok.convert_ids_to_tokens(ids), word_ids.tolist())) == [
        ("▁D", 0), ("er", 0), ("▁H", 1), ("und", 1), (".", 1), ("</s>", -1)]
    # WordPiece splits punctuation off inside a gold word; the pieces still belong to it.
    wp = tm.tokenizer("wordpiece")
    ids, word_ids = encode_words(wp, ["Der", "Hund."])
    assert list(zip(wp.convert_ids_to_tokens(ids), word_ids.tolist())) == [
        ("[CLS]", -1), ("Der", 0), ("Hund", 1), (".", 1), ("[SEP]", -1)]


def test_lone_space_tokens_belong_to_the_next_word():
    """SentencePiece's lone '▁' and byte-level BPE's lone 'Ġ' (whose offsets are trimmed to an empty span)."""
    bart = tm.tokenizer("bart")
    ids, word_ids = encode_words(bart, ["Der", "Hund", "schläft", "im", "Garten", "."])
    pairs = list(zip(bart.convert_ids_to_tokens(ids), word_ids.tolist()))
    assert ("Ġ", 4) in pairs and ("G", 4) in pairs, pairs
    nllb = tm.tokenizer("nllb")
    ids, word_ids = encode_words(nllb, ["Ich", "mag", "Katze", "."], target=True)
    pairs = list(zip(nllb.convert_ids_to_tokens(ids), word_ids.tolist()))
    assert pairs[:5] == [("eng_Latn", -1), ("▁I", 0), ("ch", 0), ("▁", 1), ("m", 1)], pairs


@pytest.mark.parametrize("family", ["marian", "t5", "nllb", "wordpiece", "bart"])
def test_ideographic_space_word_keeps_the_other_words_indices(family):
    """U+3000 is a token of the ja-en gold set. NFKC SentencePiece and WordPiece read it as whitespace, so it
    gets no token at all; byte-level BPE keeps its bytes. Either way the words after it keep their gold index."""
    tok = tm.tokenizer(family)
    words = ["Der", "Hund", "\u3000", "schläft", "."]
    ids, word_ids = encode_words(tok, words)
    tokens = tok.convert_ids_to_tokens(ids)
    for w in (0, 1, 3, 4):
        assert _text(tok, [t for t, i in zip(tokens, word_ids) if i == w]) == words[w]
    n_space = int((word_ids == 2).sum())
    assert n_space == (4 if family == "bart" else 0)  # bart: 'Ġ' and the three UTF-8 bytes of U+3000


@pytest.mark.parametrize("family", ["t5", "marian"])
def test_a_source_prefix_gets_no_word(family):
    tok = tm.tokenizer(family)
    prefix = "translate German to English: "
    words = ["Der", "Hund", "schläft", "."]
    ids, word_ids = encode_words(tok, words, prefix=prefix)
    plain_ids, plain_word_ids = encode_words(tok, words)
    n_prefix = len(tok(prefix, add_special_tokens=False)["input_ids"])
    assert n_prefix >= 4
    assert (word_ids[:n_prefix] == -1).all()
    assert len(ids) == n_prefix + len(plain_ids)
    # Behind the prefix, the sentence reads exactly as without it.
    assert ids[n_prefix:] == plain_ids
    assert word_ids[n_prefix:].tolist() == plain_word_ids.tolist()


def test_empty_sentence_is_refused():
    with pytest.raises(ValueError, match="empty"):
        encode_words(tm.tokenizer("t5"), [])


# ------------------------------------------------------------------------------------------------ pooling

# 3 target tokens x 6 source tokens; source tokens: word 0, word 0, word 1, </s>-like special, word 2, word 2
MAT = np.array([
    [0.10, 0.20, 0.30, 0.05, 0.15, 0.20],
    [0.50, 0.10, 0.00, 0.10, 0.20, 0.10],
    [0.00, 0.30, 0.40, 0.20, 0.00, 0.10],
], dtype=np.float32)
SRC_IDS = np.array([0, 0, 1, -1, 2, 2])
TGT_IDS = np.array([0, 1, 1])  # target word 1 has two subwords


def test_pooling_sums_source_subwords_and_averages_target_subwords():
    words = pool_to_words(MAT, SRC_IDS, TGT_IDS, n_src_words=3, n_tgt_words=2)
    expected = np.array([
        [0.10 + 0.20, 0.30, 0.15 + 0.20],  # target word 0 = its single token's row, source subwords summed
        [((0.50 + 0.10) + (0.00 + 0.30)) / 2, (0.00 + 0.40) / 2, ((0.20 + 0.10) + (0.00 + 0.10)) / 2],
    ])
    np.testing.assert_allclose(words, expected, atol=1e-6)
    # The special column's mass (0.05, 0.10, 0.20) is dropped, nothing else is.
    np.testing.assert_allclose(words.sum(1), [1 - 0.05, 1 - (0.10 + 0.20) / 2], atol=1e-6)


def test_pooling_on_a_batch_of_matrices_and_words_without_tokens():
    batch = np.stack([MAT, 2 * MAT])
    words = pool_to_words(batch, SRC_IDS, TGT_IDS, 3, 2)
    np.testing.assert_allclose(words[1], 2 * words[0], atol=1e-6)
    # A word with no token (U+3000 under SentencePiece) pools to zeros, never to NaN.
    wider = pool_to_words(MAT, np.array([0, 0, 2, -1, 3, 3]), np.array([0, 2, 2]), 4, 3)
    assert np.isfinite(wider).all()
    np.testing.assert_array_equal(wider[:, 1], 0.0)
    np.testing.assert_array_equal(wider[1, :], 0.0)


def test_pooling_matrix_rows():
    np.testing.assert_array_equal(pooling_matrix(np.array([0, 0, -1, 1]), 2, "sum"),
                                  [[1, 1, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(pooling_matrix(np.array([0, 0, -1, 1]), 2, "mean"),
                               [[0.5, 0.5, 0, 0], [0, 0, 0, 1]])
    with pytest.raises(ValueError, match="pooling mode"):
        pooling_matrix(np.array([0]), 1, "max")


def test_token_links_to_words_drops_specials():
    links = token_links_to_words(np.array([0, 1, 2, 2]), np.array([1, 3, 2, 4]), SRC_IDS, TGT_IDS)
    # (tgt 0, src tok 1 -> word 0); (tgt 1, src tok 3 special) dropped; (tgt 2 -> word 1: src 1 and src 2)
    assert links == {(0, 0), (1, 1), (2, 1)}


@pytest.mark.parametrize("family", ["marian", "bart"])
def test_a_sentence_beyond_the_models_positions_is_encoded_without_the_tokenizers_warning(family, caplog):
    """Such a sentence is the runner's to flag or refuse, by line: the tokenizer's own warning ("will result
    in indexing errors") would tell the user it goes through the model anyway."""
    from transformers.utils import logging as hf_logging

    tok = copy.deepcopy(tm.tokenizer(family))  # a copy: its limit is set here, and its warned-once state used
    tok.model_max_length = 64
    words = ["Hund"] * 70
    key = "sequence-length-is-longer-than-the-specified-maximum"
    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            tok.deprecation_warnings.pop(key, None)  # the tokenizer warns once: forget an earlier warning
            ids, _ = encode_words(tok, words)
            assert len(ids) > tok.model_max_length and not caplog.records
            tok.deprecation_warnings.pop(key, None)
            tok(" ".join(words))  # the same text through the tokenizer's default call does warn
            assert any("indexing errors" in r.getMessage() for r in caplog.records)
    finally:
        hf_logging.disable_propagation()
