"""Which attention row aligns which target token, for every model family (naive and Shift-Att).

Design notes, part 2: row t of a decoder-side matrix belongs to decoder input t and predicts
label t. Naive aligns a target token from the row where it is the output (row t), Shift-Att
from the row where it is the input (row t+1). Start tokens and forced language codes are rows
to skip (word id -1). These tests run on tiny random models built in tests/tiny_models.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tiny_models as tm
from aligndebug import align
from aligndebug.extract import extract
from aligndebug.models import ModelBundle, ModelLoadError, load_model

SRC = "Der Hund schläft im Garten ."
TGT = "The dog sleeps in the garden ."

# The short pair whose rows are written out literally: every target word is one token in every family.
SHORT_SRC, SHORT_TGT = "Wir singen .", "We sing ."
SP = ["▁We", "▁sing", "▁."]  # SentencePiece tokens of SHORT_TGT
EXPECTED = {  # family: (decoder input tokens, label tokens, target word ids, naive rows, Shift-Att rows)
    "marian": (["<pad>"] + SP, SP + ["</s>"], [0, 1, 2, -1], [0, 1, 2], [1, 2, 3]),
    "t5": (["<pad>"] + SP, SP + ["</s>"], [0, 1, 2, -1], [0, 1, 2], [1, 2, 3]),
    "bart": (["</s>", "<s>", "We", "Ġsing", "Ġ."], ["<s>", "We", "Ġsing", "Ġ.", "</s>"], [-1, 0, 1, 2, -1],
             [1, 2, 3], [2, 3, 4]),
    "mbart": (["en_XX"] + SP + ["</s>"], SP + ["</s>", "en_XX"], [0, 1, 2, -1, -1], [0, 1, 2], [1, 2, 3]),
    "mbart50": (["</s>", "en_XX"] + SP, ["en_XX"] + SP + ["</s>"], [-1, 0, 1, 2, -1], [1, 2, 3], [2, 3, 4]),
    "m2m100": (["</s>", "__en__"] + SP, ["__en__"] + SP + ["</s>"], [-1, 0, 1, 2, -1], [1, 2, 3], [2, 3, 4]),
    "nllb": (["</s>", "eng_Latn"] + SP, ["eng_Latn"] + SP + ["</s>"], [-1, 0, 1, 2, -1], [1, 2, 3], [2, 3, 4]),
}
# Where the forced target-language token sits: (index in dec_tokens, index in label_tokens).
LANG_SLOT = {"mbart": (0, -1), "mbart50": (1, 0), "m2m100": (1, 0), "nllb": (1, 0)}


@pytest.fixture(scope="module", params=tm.FAMILIES)
def fam(request):
    """(family, bundle, Record of the SRC/TGT pair)."""
    b = tm.bundle(request.param)
    return request.param, b, extract(b, [SRC], [TGT])[0]


def test_decoder_start_and_language_token(fam):
    family, b, rec = fam
    cfg = b.model.config
    assert rec.dec_ids[0] == cfg.decoder_start_token_id
    assert rec.dec_tokens[0] == b.tokenizer.convert_ids_to_tokens(cfg.decoder_start_token_id)
    # Teacher forcing: the decoder reads the labels shifted right by one.
    assert rec.dec_ids[1:].tolist() == rec.label_ids[:-1].tolist()
    assert rec.label_tokens[-1 if family != "mbart" else -2] == "</s>"
    if family in LANG_SLOT:
        lang = tm.LANG_TOKENS[family][1]
        d, lab = LANG_SLOT[family]
        assert b.tokenizer.convert_tokens_to_ids(lang) != b.tokenizer.unk_token_id
        assert rec.dec_tokens[d] == lang and rec.label_tokens[lab] == lang
        assert rec.tgt_word_ids[lab] == -1  # the language row is skipped by both methods
        assert lang not in [rec.label_tokens[t] for t in rec.target_positions]
    else:
        assert not any(t.endswith(("_XX", "_Latn")) or t.startswith("__") for t in rec.dec_tokens)


def test_rows_of_every_target_token(fam):
    family, b, rec = fam
    pos = rec.target_positions
    assert len(pos) >= len(rec.tgt_words)  # every target word has at least one token
    assert sorted(set(rec.tgt_word_ids[pos].tolist())) == list(range(len(rec.tgt_words)))
    for t in pos:
        assert rec.label_tokens[t] == rec.dec_tokens[t + 1]  # Shift-Att row t+1 reads the token as input
    np.testing.assert_array_equal(rec.rows_for("naive"), pos)
    np.testing.assert_array_equal(rec.rows_for("shift-att"), pos + 1)
    for layer in (0, -1):
        mean = rec.cross[layer].mean(axis=0)
        np.testing.assert_allclose(align.attention_matrix(rec, layer, "mean", "naive"), mean[pos], atol=1e-6)
        np.testing.assert_allclose(align.attention_matrix(rec, layer, "mean", "shift-att"), mean[pos + 1], atol=1e-6)


def test_literal_rows_on_a_short_pair(fam):
    family = fam[0]
    rec = extract(fam[1], [SHORT_SRC], [SHORT_TGT])[0]
    dec, labels, word_ids, naive, shift = EXPECTED[family]
    assert rec.dec_tokens == dec
    assert rec.label_tokens == labels
    assert rec.tgt_word_ids.tolist() == word_ids
    assert rec.rows_for("naive").tolist() == naive
    assert rec.rows_for("shift-att").tolist() == shift
    # The matrices the alignment methods read are exactly those rows of the layer's head mean.
    mean = rec.cross[1].mean(axis=0)
    np.testing.assert_allclose(align.attention_matrix(rec, 1, "mean", "naive"), mean[naive], atol=1e-6)
    np.testing.assert_allclose(align.attention_matrix(rec, 1, "mean", "shift-att"), mean[shift], atol=1e-6)


def test_attention_rows_sum_to_one(fam):
    _, b, rec = fam
    T, S = len(rec.dec_tokens), len(rec.src_tokens)
    assert rec.cross.shape == (2, 2, T, S)
    assert rec.enc_self.shape == (2, 2, S, S)
    assert rec.dec_self.shape == (2, 2, T, T)
    for m in (rec.cross, rec.enc_self, rec.dec_self):
        np.testing.assert_allclose(m.sum(-1), 1.0, atol=1e-5)
    assert np.allclose(np.triu(rec.dec_self, k=1), 0.0)  # the decoder is causal: no row sees a later input


def test_source_specials_are_excluded(fam):
    family, b, rec = fam
    tok = b.tokenizer
    special_ids = set(tok.all_special_ids)
    src_lang = tm.LANG_TOKENS.get(family, (None,))[0]
    if src_lang:
        special_ids.add(tok.convert_tokens_to_ids(src_lang))
    is_special = np.array([i in special_ids for i in rec.src_ids.tolist()])
    assert is_special.any()  # every family wraps the source in at least </s>
    assert (rec.src_word_ids[is_special] == -1).all()
    assert (rec.src_word_ids[~is_special] >= 0).all()
    assert "</s>" in [rec.src_tokens[i] for i in np.flatnonzero(is_special)]
    if src_lang:
        assert src_lang in rec.src_tokens and rec.src_word_ids[rec.src_tokens.index(src_lang)] == -1
    for method in ("naive", "shift-att"):
        for layer in range(2):
            for head in (0, 1, "mean"):
                mat = align.attention_matrix(rec, layer, head, method)
                rows, cols = align.token_links(mat, rec.src_word_ids)
                assert len(rows) == len(rec.target_positions)
                assert not is_special[cols].any()
                # Still the best non-special column: nothing larger was skipped except specials.
                best = np.where(is_special, -np.inf, mat).max(-1)
                np.testing.assert_allclose(mat[rows, cols], best)
    links = align.align_record(rec, "shift-att", layer=1)
    assert all(0 <= s < len(rec.src_words) and 0 <= t < len(rec.tgt_words) for s, t in links)


def test_logprobs_match_the_models_own_loss(fam):
    """Mean of -log p over label positions equals the model's cross-entropy loss on the same labels."""
    family, b, rec = fam
    with torch.inference_mode():
        out = b.model(input_ids=torch.as_tensor(rec.src_ids)[None], labels=torch.as_tensor(rec.label_ids)[None])
    np.testing.assert_allclose(-rec.token_logprobs.mean(), out.loss.item(), rtol=1e-5, atol=1e-5)
    # And each entry is the log-softmax at naive row t of the recorded label.
    with torch.inference_mode():
        logits = b.model(input_ids=torch.as_tensor(rec.src_ids)[None],
                         decoder_input_ids=torch.as_tensor(rec.dec_ids)[None]).logits[0]
    expected = torch.log_softmax(logits, -1)[torch.arange(len(rec.label_ids)), torch.as_tensor(rec.label_ids)]
    np.testing.assert_allclose(rec.token_logprobs, expected.numpy(), atol=1e-5)


def test_generation_starts_like_teacher_forcing(fam):
    """translate() must feed the decoder the same prefix the teacher-forced pass does, and force nothing after it.

    Otherwise the pass that explains a translation reads a different decoder context from the one that
    produced it (e.g. a language code forced a second time where the first word should be).
    """
    family, b, rec = fam
    k = int(rec.target_positions[0]) + 1  # decoder inputs up to the row that predicts the first target word
    enc = b.tokenizer([b.source_prefix + SRC], return_tensors="pt")
    with torch.inference_mode():
        gen = b.model.generate(**enc, max_new_tokens=k + 1, num_beams=1, do_sample=False, **b.generate_kwargs)
        logits = b.model(**enc, decoder_input_ids=torch.as_tensor(rec.dec_ids[:k])[None]).logits[0, -1]
    assert gen[0, :k].tolist() == rec.dec_ids[:k].tolist()
    assert gen[0, k].item() == logits.argmax().item()  # the first free step is the model's own choice


# --------------------------------------------------------------------------------------------- loading


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel
    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2))


def _bert():
    from transformers import BertConfig, BertForMaskedLM
    return BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32, max_position_embeddings=32))


@pytest.mark.parametrize("build, kind", [(_gpt2, "decoder-only"), (_bert, "encoder-only")])
def test_non_seq2seq_models_are_refused_with_the_reason(build, kind, tmp_path):
    model = build()
    with pytest.raises(ModelLoadError, match=f"encoder-decoder.*{kind}"):
        ModelBundle.from_objects(model, tm.tokenizer("wordpiece"), name="tiny")
    model.save_pretrained(str(tmp_path))
    tm.tokenizer("wordpiece").save_pretrained(str(tmp_path))
    with pytest.raises(ModelLoadError, match=f"encoder-decoder.*{kind}") as err:
        load_model(str(tmp_path))
    assert str(tmp_path) in str(err.value)


def test_a_language_code_missing_from_the_vocabulary_is_refused():
    """NLLB built from a bare SentencePiece model lacks its language codes: they would be forced as <unk>."""
    from transformers import NllbTokenizer
    tm.tokenizer("nllb")  # writes the SentencePiece model into tok-nllb/
    bare = NllbTokenizer.from_pretrained(str(tm.workdir() / "tok-nllb"), src_lang="deu_Latn", tgt_lang="eng_Latn")
    assert bare.convert_tokens_to_ids("eng_Latn") == bare.unk_token_id
    with pytest.raises(ModelLoadError, match="not in the tokenizer's vocabulary"):
        ModelBundle.from_objects(tm.bundle("nllb").model, bare, name="bare-nllb", src_lang="deu_Latn",
                                 tgt_lang="eng_Latn")


def test_a_multilingual_model_without_target_language_is_refused():
    from transformers import M2M100Tokenizer
    tm.tokenizer("m2m100")  # writes vocab.json and the SentencePiece model into tok-m2m100/
    d = tm.workdir() / "tok-m2m100"
    tok = M2M100Tokenizer(vocab_file=str(d / "vocab.json"), spm_file=str(d / "sentencepiece.bpe.model"), src_lang="de")
    with pytest.raises(ModelLoadError, match="needs tgt_lang"):
        ModelBundle.from_objects(tm.bundle("m2m100").model, tok, name="no-target-language")


def test_missing_model_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="could not be loaded") as err:
        load_model(str(missing))
    assert str(missing) in str(err.value)


@pytest.mark.parametrize("family", ["marian", "nllb"])
def test_load_model_from_a_saved_folder_gives_the_same_record(family, tmp_path):
    saved = tm.save(family, tmp_path / family)
    src, tgt = tm.LANGS.get(family, (None, None))
    loaded = load_model(str(saved), src_lang=src, tgt_lang=tgt)
    assert loaded.family == family and loaded.model.config._attn_implementation == "eager"
    a = extract(tm.bundle(family), [SRC], [TGT])[0]
    c = extract(loaded, [SRC], [TGT])[0]
    assert a.src_tokens == c.src_tokens and a.dec_tokens == c.dec_tokens and a.label_tokens == c.label_tokens
    np.testing.assert_allclose(a.cross, c.cross, atol=1e-6)
    np.testing.assert_allclose(a.token_logprobs, c.token_logprobs, atol=1e-5)
