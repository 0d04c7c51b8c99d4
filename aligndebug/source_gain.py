"""Source gain: how much a translation's source raises its log-probability under the model.

Source gain = Seq-Logprob of the target given its source minus Seq-Logprob of the same target given an
*empty* source (only the special tokens, and the task prefix of families that have one), over the same
label positions. It is the sentence-level pointwise mutual information between source and target under
the model, the quantity source-contrastive decoding subtracts (Sennrich et al., EACL 2024). A translation
that does not depend on its source, such as a detached hallucination or another sentence's translation,
gains little or nothing from it, even when its plain Seq-Logprob is high because the model finds that
sentence likely whatever the source (generic, formulaic sentences). Low = suspect.

The cost is one extra teacher-forced pass per batch with a one-token (or prefix-only) source and no
attention outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from .extract import Encoded, Words, encode_pair, label_logprobs, length_batches, teacher_forced_pass
from .models import ModelBundle
from .signals import logprob_positions, seq_logprob


def empty_source_ids(bundle: ModelBundle) -> list[int]:
    """Token ids of an empty source: the tokenizer's special tokens around nothing (language codes
    included), after the family's task prefix where it has one (T5)."""
    return list(bundle.tokenizer(bundle.source_prefix.rstrip())["input_ids"])


def prior_seq_logprobs(bundle: ModelBundle, encoded: Sequence[Encoded], batch_size: int = 16) -> np.ndarray:
    """Seq-Logprob of each encoded pair's target given an empty source (the positions Seq-Logprob reads),
    one batched pass per batch of similar lengths."""
    empty = empty_source_ids(bundle)
    no_words = np.full(len(empty), -1, dtype=np.int64)
    out = np.full(len(encoded), np.nan)
    for idx in length_batches([len(e.label_ids) for e in encoded], batch_size):
        batch = [replace(encoded[i], src_ids=empty, src_word_ids=no_words) for i in idx]
        with torch.inference_mode():
            res, (_, _, labels, _, _) = teacher_forced_pass(bundle, batch, attentions=False)
            token_logp = label_logprobs(res.logits, labels)
        for b, i in enumerate(idx):
            e = encoded[i]
            out[i] = seq_logprob(token_logp[b, :len(e.label_ids)], logprob_positions(e.tgt_word_ids))
    return out


def prior_seq_logprobs_of(bundle: ModelBundle, sources: Sequence[str | Words], targets: Sequence[str | Words],
                          batch_size: int = 16) -> np.ndarray:
    """`prior_seq_logprobs` of (source, target) pairs, encoded as the main pass encodes them."""
    encoded = [encode_pair(bundle, s, t, i) for i, (s, t) in enumerate(zip(sources, targets))]
    return prior_seq_logprobs(bundle, encoded, batch_size)


def source_gain(seq_logprob_value: float, prior: float) -> float:
    """Seq-Logprob with the source minus Seq-Logprob with an empty source (NaN when either is undefined)."""
    return float(seq_logprob_value) - float(prior)
