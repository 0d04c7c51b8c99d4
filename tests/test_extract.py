"""Batched teacher-forced extraction: padding never leaks, Records round-trip, options and errors."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
import torch

import tiny_models as tm
from aligndebug.extract import SentenceError, extract, iter_extract, translate
from aligndebug.models import ModelBundle
from aligndebug.record import Record

SOURCES = [
    "Der Hund schläft .",
    "Das Kind spielt im Garten mit dem Ball und lacht laut .",
    "Ja .",
    "Die Katze trinkt Milch , oder ?",
    "Wir fahren morgen nach Hamburg .",
]
TARGETS = [
    "The dog sleeps .",
    "The child plays in the garden with the ball and laughs loudly .",
    "Yes .",
    "The cat drinks milk , doesn't it ?",
    "We're driving to Hamburg tomorrow .",
]
ARRAYS = ("src_ids", "dec_ids", "label_ids", "src_word_ids", "tgt_word_ids", "token_logprobs", "cross", "enc_self",
          "dec_self")


# marian: slow tokenizer, start = pad; bart: byte-level BPE, </s> <s>; mbart: the language code is wrapped round
# from the end of each (padded) label row; m2m100: slow, shift behind </s>; t5: relative positions.
@pytest.mark.parametrize("family", ["marian", "bart", "mbart", "m2m100", "t5"])
def test_batched_equals_one_by_one(family):
    b = tm.bundle(family)
    batched = extract(b, SOURCES, TARGETS, batch_size=len(SOURCES))
    single = [extract(b, [s], [t], batch_size=1)[0] for s, t in zip(SOURCES, TARGETS)]
    lengths = {len(r.src_ids) for r in batched}
    assert len(lengths) == len(SOURCES), "the test needs sentences of different lengths in one batch"
    for i, (x, y) in enumerate(zip(batched, single)):
        assert x.source == SOURCES[i] and x.target == TARGETS[i] and x.meta["index"] == i
        assert (x.src_tokens, x.dec_tokens, x.label_tokens) == (y.src_tokens, y.dec_tokens, y.label_tokens)
        S, T = len(x.src_tokens), len(x.dec_tokens)
        assert x.cross.shape[2:] == (T, S) and x.enc_self.shape[2:] == (S, S) and x.dec_self.shape[2:] == (T, T)
        for name in ARRAYS:  # rtol: float32 sums in another order move a log-prob of -9 by ~2e-5
            np.testing.assert_allclose(getattr(x, name), getattr(y, name), atol=1e-5, rtol=1e-5,
                                       err_msg=f"{family} sentence {i}: {name} differs between batched and single")
        # Nothing of the padding survives: every kept row is a full distribution over this sentence's tokens.
        for m in (x.cross, x.enc_self, x.dec_self):
            np.testing.assert_allclose(m.sum(-1), 1.0, atol=1e-5)
        pad = b.tokenizer.pad_token_id
        assert pad not in x.src_ids.tolist() and pad not in x.label_ids.tolist() and pad not in x.dec_ids[1:]


@pytest.mark.parametrize("family", ["marian", "t5"])
def test_batched_equals_one_by_one_exactly_in_double_precision(family):
    """In float64 the float32 rounding noise is gone, so any leak of padding would stand out."""
    b = tm.bundle(family)
    double = ModelBundle.from_objects(copy.deepcopy(b.model).double(), b.tokenizer, name="double")
    batched = extract(double, SOURCES, TARGETS, batch_size=len(SOURCES), keep=("cross", "dec_self"))
    for x, s, t in zip(batched, SOURCES, TARGETS):
        y = extract(double, [s], [t], keep=("cross", "dec_self"))[0]
        for name in ("cross", "dec_self", "token_logprobs"):
            np.testing.assert_allclose(getattr(x, name), getattr(y, name), atol=1e-7, rtol=0, err_msg=name)


def test_batches_are_length_sorted_but_results_come_back_in_input_order():
    b = tm.bundle("marian")
    seen = [i for i, _ in iter_extract(b, SOURCES, TARGETS, batch_size=2)]
    assert sorted(seen) == list(range(len(SOURCES)))
    assert seen[0] == 1  # the longest pair goes first
    recs = extract(b, SOURCES, TARGETS, batch_size=2)
    assert [r.source for r in recs] == SOURCES and [r.meta["index"] for r in recs] == list(range(len(SOURCES)))


def test_record_json_round_trip():
    rec = extract(tm.bundle("bart"), SOURCES[:1], TARGETS[:1])[0]
    back = Record.from_json(rec.to_json())
    for name, value in rec.__dict__.items():
        other = getattr(back, name)
        if isinstance(value, np.ndarray):
            assert other.dtype == value.dtype and other.shape == value.shape, name
            np.testing.assert_array_equal(other, value, err_msg=name)
        else:
            assert other == value, name
    assert back.rows_for("shift-att").tolist() == rec.rows_for("shift-att").tolist()
    light = json.loads(rec.to_json(arrays=False))
    assert light["cross"] is None and light["enc_self"] is None and light["dec_self"] is None
    assert light["token_logprobs"] is not None  # the small arrays stay
    assert Record.from_dict(light).cross is None


def test_keep_only_cross_attention():
    rec = extract(tm.bundle("marian"), SOURCES[:2], TARGETS[:2], keep=("cross",))[1]
    assert rec.cross is not None and rec.enc_self is None and rec.dec_self is None
    full = extract(tm.bundle("marian"), SOURCES[:2], TARGETS[:2])[1]
    np.testing.assert_allclose(rec.cross, full.cross, atol=1e-6)
    with pytest.raises(ValueError, match="unknown attention kind"):
        extract(tm.bundle("marian"), SOURCES[:1], TARGETS[:1], keep=("cross", "self"))


def test_reduce_callback_shrinks_each_array_as_it_is_made():
    calls = []

    def last_layer_head_mean(kind, a):
        calls.append((kind, a.shape))
        return a[-1].mean(axis=0)

    b = tm.bundle("t5")
    recs = extract(b, SOURCES[:3], TARGETS[:3], reduce=last_layer_head_mean)
    full = extract(b, SOURCES[:3], TARGETS[:3])
    assert sorted({k for k, _ in calls}) == ["cross", "dec_self", "enc_self"] and len(calls) == 9
    for r, f in zip(recs, full):
        T, S = len(r.dec_tokens), len(r.src_tokens)
        assert r.cross.shape == (T, S) and r.enc_self.shape == (S, S) and r.dec_self.shape == (T, T)
        np.testing.assert_allclose(r.cross, f.cross[-1].mean(0), atol=1e-6)
    assert all(shape[:2] == (2, 2) for _, shape in calls)  # the callback saw [L, H, rows, cols] per sentence


def test_empty_source_names_the_sentence():
    with pytest.raises(ValueError, match=r"sentence 1\b.*source is empty"):
        extract(tm.bundle("marian"), ["Der Hund .", "   ", "Ja ."], ["The dog .", "Nothing .", "Yes ."])


def test_too_long_source_names_the_positions():
    b = tm.bundle("marian")
    limit = b.model.config.max_position_embeddings
    long_source = " ".join(["Hund"] * limit)  # two tokens a word: twice the limit
    with pytest.raises(ValueError, match=rf"sentence 1\b.*source has \d+ tokens, more than the {limit} positions"):
        extract(b, ["Der Hund .", long_source], ["The dog .", "Dogs ."])
    # translating refuses it too (nothing decoded), where a tokenizer's truncation would drop words unsaid
    with pytest.raises(SentenceError, match=rf"sentence 1\b.*more than the {limit} positions") as info:
        translate(b, ["Der Hund .", long_source])
    assert info.value.index == 1


def test_a_sentence_its_tokenizer_makes_no_token_of_is_named_with_its_side():
    """Marian's SentencePiece tokenizer drops a special token's text ("</s>"): nothing is left to align, which
    is a SentenceError coded `no_tokens` naming the side (so triage keeps and flags the row), not a bare
    ValueError that stops the run; the same pair in a triage is kept and flagged."""
    from aligndebug.runner import run_triage

    b = tm.bundle("marian")
    for src, tgt, side in (("</s>", "The dog .", "source"), ("Der Hund .", "</s>", "target")):
        with pytest.raises(SentenceError, match=rf"the {side} gives no token: .*'</s>'") as info:
            extract(b, ["Der Hund .", src], ["The dog .", tgt])
        assert (info.value.index, info.value.code) == (1, "no_tokens")
        assert pickle.loads(pickle.dumps(info.value)).code == "no_tokens"  # through a Ray worker
    rows = {r["id"]: r for r in run_triage(b, ["Der Hund .", "</s>", "Die Katze ."], ["The dog .", "A cat .", "</s>"],
                                           combine="fisher")}
    assert [rows[k].get("unusable") for k in range(3)] == [None, "no_tokens", "no_tokens"]
    assert "source gives no token" in rows[1]["reasons"][0] and "target gives no token" in rows[2]["reasons"][0]


def test_mismatched_source_and_target_counts():
    with pytest.raises(ValueError, match="2 sources but 1 targets"):
        extract(tm.bundle("marian"), SOURCES[:2], TARGETS[:1])


@pytest.mark.parametrize("family", ["marian", "nllb"])
def test_translate_then_extract_without_targets(family):
    b = tm.bundle(family)
    out = translate(b, SOURCES[2:4])
    assert len(out) == 2 and all(isinstance(s, str) for s in out)
    recs = extract(b, SOURCES[2:4])
    assert [r.meta["forced_target"] for r in recs] == [False] * 2
    assert [r.target for r in recs] == [" ".join(w for w in s.split(" ") if w) for s in out]
    forced = extract(b, SOURCES[:1], TARGETS[:1])[0]
    assert forced.meta["forced_target"] is True


def test_translate_stays_within_the_models_positions():
    """A source that fits must not make generation run past the position table (1.5 x its length would)."""
    from transformers import MarianConfig, MarianMTModel

    tok = tm.tokenizer("marian")
    size = dict(tm.SIZE, max_position_embeddings=32)
    torch.manual_seed(0)
    model = MarianMTModel(MarianConfig(vocab_size=tm.vocab_size(tok), decoder_start_token_id=tok.pad_token_id,
                                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **size))
    model.generation_config.eos_token_id = None  # a random model might stop early; run to the limit
    b = ModelBundle.from_objects(model, tok, name="tiny-marian-32")
    source = " ".join(["Hund"] * 12)  # 25 tokens: fits in 32, but 25 * 1.5 + 10 = 47 new tokens would not
    assert len(tok(source)["input_ids"]) == 25
    out = translate(b, [source])
    assert isinstance(out[0], str)


def test_t5_source_prefix_is_read_but_never_a_word():
    t5 = tm.bundle("t5")
    prefix = "translate German to English: "
    b = ModelBundle.from_objects(t5.model, t5.tokenizer, name="tiny-t5-prefixed", source_prefix=prefix)
    rec = extract(b, SOURCES[:1], TARGETS[:1])[0]
    plain = extract(t5, SOURCES[:1], TARGETS[:1])[0]
    n = len(t5.tokenizer(prefix, add_special_tokens=False)["input_ids"])
    assert rec.src_ids[n:].tolist() == plain.src_ids.tolist()
    assert (rec.src_word_ids[:n] == -1).all() and rec.src_word_ids[n:].tolist() == plain.src_word_ids.tolist()
    assert rec.src_words == plain.src_words and rec.source == SOURCES[0]
    assert not np.allclose(rec.token_logprobs, plain.token_logprobs)  # the model did read the prefix
