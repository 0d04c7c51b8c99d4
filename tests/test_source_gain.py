"""Source gain: Seq-Logprob with the source minus with an empty source, from one extra batched pass."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from aligndebug.extract import encode_pair
from aligndebug.runner import run_triage
from aligndebug.signals import SIGNALS, logprob_positions
from aligndebug.source_gain import empty_source_ids, prior_seq_logprobs_of
from numeric import assert_close

PAIRS = [("das haus ist klein .", "the house is small ."), ("ein hund", "a dog barks at the moon and the cat sleeps"),
         ("wir gehen heute nach hause", "we go"), ("ja", "yes ."), ("der mann liest ein langes buch", "the man reads")]


def _direct_prior(bundle, src: str, tgt: str) -> float:
    """One sentence at a time, through the model's own `labels=` path (no padding, no batching)."""
    enc = encode_pair(bundle, src, tgt)
    empty = torch.tensor([empty_source_ids(bundle)])
    labels = torch.tensor([enc.label_ids])
    with torch.inference_mode():
        out = bundle.model(input_ids=empty, attention_mask=torch.ones_like(empty), labels=labels)
    logp = torch.log_softmax(out.logits.double(), -1)[0].gather(-1, labels[0][:, None])[:, 0].numpy()
    return float(logp[logprob_positions(enc.tgt_word_ids)].mean())


@pytest.mark.parametrize("family", ["marian", "bart", "mbart", "mbart50", "m2m100", "nllb", "t5"])
def test_batched_prior_matches_one_sentence_at_a_time(tiny_bundle, family):
    b = tiny_bundle(family)
    src, tgt = zip(*PAIRS)
    batched = prior_seq_logprobs_of(b, list(src), list(tgt), batch_size=3)  # padded, length-sorted batches
    direct = [_direct_prior(b, s, t) for s, t in PAIRS]
    assert_close(batched, direct, digits=4)


def test_empty_source_holds_only_specials_and_the_task_prefix(tiny_bundle):
    marian = tiny_bundle("marian")
    assert empty_source_ids(marian) == [marian.tokenizer.eos_token_id]
    mbart = tiny_bundle("mbart")  # the source language code stays: the prior is of this language pair
    assert mbart.tokenizer.convert_tokens_to_ids(mbart.src_lang) in empty_source_ids(mbart)
    t5 = tiny_bundle("t5")
    with_prefix = replace(t5, source_prefix="translate German to English: ")
    ids = empty_source_ids(with_prefix)
    assert len(ids) > len(empty_source_ids(t5)) and ids[-1] == t5.tokenizer.eos_token_id
    assert ids == t5.tokenizer("translate German to English:")["input_ids"]


def test_triage_rows_carry_the_source_gain(tiny_bundle):
    b = tiny_bundle("marian")
    src, tgt = zip(*PAIRS)
    rows = {r["id"]: r for r in run_triage(b, list(src), list(tgt), combine="fisher")}
    priors = [_direct_prior(b, s, t) for s, t in PAIRS]
    gains = [rows[i]["source_gain"] for i in range(len(PAIRS))]
    seq = [rows[i]["seq_logprob"] for i in range(len(PAIRS))]
    assert_close(gains, np.subtract(seq, priors), digits=4)
    assert "source_gain" in SIGNALS and SIGNALS["source_gain"].direction == "low"


def test_a_detached_target_gains_less_from_its_source(data_dir):
    """On the embedded model: a held-out sentence's own translation depends on its source far more than
    another sentence's translation forced in its place."""
    from aligndebug.extract import translate
    from aligndebug.models import load_model
    from aligndebug.runner import run_triage

    b = load_model("default")
    de = (data_dir / "heldout" / "europarl-deen-500" / "test.de").read_text(encoding="utf-8").splitlines()[:24]
    own = translate(b, de)
    swapped = own[1:] + own[:1]
    rows = run_triage(b, de + de, own + swapped, combine="fisher")
    gain = {r["id"]: r["source_gain"] for r in rows}
    own_gain = np.array([gain[i] for i in range(24)])
    swapped_gain = np.array([gain[24 + i] for i in range(24)])
    assert (own_gain > swapped_gain).mean() >= 0.9
    # any German source raises English text above the empty source's prior, its own source by far the most
    assert own_gain.mean() > 1.5 * swapped_gain.mean() > 0


def test_known_priors_spare_their_pass_and_give_the_same_gain(tiny_bundle, monkeypatch):
    """A detached variant's target is another row's translation: its prior (which depends on the target
    alone) comes from that row, and only unknown targets go through the empty-source pass."""
    from aligndebug import runner

    b = tiny_bundle("marian")
    builder = runner.SignalRows(alti=False)
    execute = runner.local_execute(b, batch_size=2)
    variants = [{"source": s, "translation": PAIRS[(k + 1) % len(PAIRS)][1]} for k, (s, _) in enumerate(PAIRS)]
    computed = runner.variant_rows(execute, builder, 8)(variants)
    known = {v["translation"]: r["seq_logprob"] - r["source_gain"] for v, r in zip(variants, computed)}
    passed: list[int] = []
    real = runner.prior_seq_logprobs
    monkeypatch.setattr(runner, "prior_seq_logprobs", lambda bundle, enc, bs: passed.append(len(enc)) or real(bundle, enc, bs))
    del known[variants[0]["translation"]]
    reused = runner.variant_rows(execute, builder, 8)(variants, known)
    assert passed == [1]  # the one target it did not know
    assert_close([r["source_gain"] for r in reused], [r["source_gain"] for r in computed], digits=6)
