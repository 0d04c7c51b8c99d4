"""One batched, teacher-forced forward pass per batch -> Records.

The model is touched here and nowhere else. Sentences are length-sorted into batches so
padding stays small; padding never reaches a Record because each sentence's matrices are
cut to its own lengths, and the decoder is causal, so trailing padding cannot affect
earlier rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from .errors import SentenceError  # noqa: F401  (re-exported)
from .models import ModelBundle, decoder_inputs  # noqa: F401  (decoder_inputs re-exported)
from .record import Record
from .words import NoTokensError, encode_words, split_words

ATTENTIONS = ("cross", "enc_self", "dec_self")
Words = Sequence[str]


@dataclass
class Encoded:
    """Token ids and word maps of one sentence pair, ready for batching."""

    src_words: list[str]
    tgt_words: list[str]
    src_ids: list[int]
    src_word_ids: np.ndarray
    label_ids: list[int]
    tgt_word_ids: np.ndarray


def as_words(text: str | Words) -> list[str]:
    return split_words(text) if isinstance(text, str) else list(text)


def encode_pair(bundle: ModelBundle, src: str | Words, tgt: str | Words, index: int = 0) -> Encoded:
    """Tokenize one pair with word maps; raises SentenceError naming the sentence when it cannot be used."""
    src_words, tgt_words = as_words(src), as_words(tgt)
    if not src_words:
        raise SentenceError(index, "the source is empty; expected at least one word", "empty")
    tok = bundle.tokenizer
    side = "source"
    try:
        src_ids, src_wids = encode_words(tok, src_words, target=False, prefix=bundle.source_prefix)
        side = "target"
        if tgt_words:
            label_ids, tgt_wids = encode_words(tok, tgt_words, target=True)
        else:  # an empty translation still has its special tokens, so its log-prob can be scored
            label_ids = list(tok(text_target="")["input_ids"])
            tgt_wids = np.full(len(label_ids), -1, dtype=np.int64)
    except NoTokensError as exc:  # e.g. a line that is only a special token's text, such as "</s>"
        raise SentenceError(index, f"the {side} gives no token: {exc}", "no_tokens") from None
    limit = bundle.max_positions
    for side, n in (("source", len(src_ids)), ("target", len(label_ids))):
        if limit and n > limit:
            raise SentenceError(index, f"the {side} has {n} tokens, more than the {limit} positions "
                                       f"model {bundle.name} can attend over; split the sentence or use another model",
                                "too_long_for_model")
    return Encoded(src_words, tgt_words, src_ids, src_wids, label_ids, tgt_wids)


def _pad(seqs: Sequence[Sequence[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs])
    out = torch.full((len(seqs), int(lengths.max())), value, dtype=torch.long)
    mask = torch.arange(out.shape[1])[None, :] < lengths[:, None]
    out[mask] = torch.tensor([t for s in seqs for t in s], dtype=torch.long)
    return out, mask


def teacher_forced_pass(bundle: ModelBundle, batch: Sequence[Encoded], attentions: bool = True,
                        hidden_states: bool = False, logits: bool = True) -> tuple[Any, tuple[torch.Tensor, ...]]:
    """The model's raw output for one padded, teacher-forced batch, and (src, src_mask, labels, label_mask,
    decoder_input) as CPU tensors (labels padded with -100). The caller picks the grad mode; with
    `hidden_states` the output holds encoder_last_hidden_state and decoder_hidden_states (embeddings first).
    `logits=False` runs the base model without the output projection where the family has one apart (the
    vocabulary projection is a quarter of a small model's cost); the output then has no `logits`."""
    model, tok, dev = bundle.model, bundle.tokenizer, bundle.device
    src, src_mask = _pad([e.src_ids for e in batch], tok.pad_token_id)
    labels, lab_mask = _pad([e.label_ids for e in batch], -100)
    dec = decoder_inputs(model, labels)
    if not logits:
        model = getattr(model, "base_model", model)  # T5's base_model is the model itself
    out = model(input_ids=src.to(dev), attention_mask=src_mask.long().to(dev), decoder_input_ids=dec.to(dev),
                decoder_attention_mask=lab_mask.long().to(dev), output_attentions=attentions,
                output_hidden_states=hidden_states, return_dict=True)
    return out, (src, src_mask, labels, lab_mask, dec)


def label_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """[B, T] log-probability of each label under `logits` [B, T, vocabulary], as float32 numpy (padding
    labels, -100, read token 0: the caller cuts them off)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, labels.clamp(min=0).to(logp.device)[..., None])[..., 0].cpu().numpy()


def forward_batch(bundle: ModelBundle, batch: Sequence[Encoded], keep: Iterable[str] = ATTENTIONS,
                  reduce: Callable[[str, np.ndarray], np.ndarray] | None = None, aligner: Any = None) -> list[Record]:
    """One teacher-forced pass over a batch; returns one Record per pair, in batch order.

    `keep` names the attention kinds to store; `reduce(kind, array[L,H,T,S])` may shrink each
    sentence's matrix as it is produced (e.g. to one layer), so large runs never hold L×H×T×S.
    With `aligner` (a `learned.LearnedAligner` for this model) the pass also returns hidden states and each
    Record gets the aligner's [target words, source words + 1] matrix as ``meta["aligner_words"]``.
    """
    keep = tuple(keep)
    unknown = set(keep) - set(ATTENTIONS)
    if unknown:
        raise ValueError(f"unknown attention kind(s) {sorted(unknown)}: expected some of {ATTENTIONS}")
    tok, dev = bundle.tokenizer, bundle.device
    with torch.inference_mode():
        out, (src, src_mask, labels, lab_mask, dec) = teacher_forced_pass(bundle, batch, attentions=bool(keep),
                                                                          hidden_states=aligner is not None)
        token_logp = label_logprobs(out.logits, labels)
        aligned = aligner.word_matrices(bundle, batch, (out, src_mask, lab_mask, labels)) if aligner is not None \
            else None
        stacked = {}
        for kind, attr in (("cross", "cross_attentions"), ("enc_self", "encoder_attentions"),
                           ("dec_self", "decoder_attentions")):
            if kind in keep:
                layers = getattr(out, attr, None)
                if not layers or layers[0] is None:
                    raise RuntimeError(f"model {bundle.name} returned no {attr}: it must run with eager attention")
                stacked[kind] = torch.stack(layers, dim=1).float()  # [B, L, H, rows, cols]
        if "cross" in stacked:
            _check_rows_sum_to_one(stacked["cross"], lab_mask.to(dev), bundle.name)
        arrays = {k: v.cpu().numpy() for k, v in stacked.items()}
    src_np, dec_np, lab_np = src.numpy(), dec.numpy(), labels.numpy()
    records = []
    for b, enc in enumerate(batch):
        s, t = len(enc.src_ids), len(enc.label_ids)
        cut = {"cross": (t, s), "enc_self": (s, s), "dec_self": (t, t)}
        mats = {}
        for kind, arr in arrays.items():
            r, c = cut[kind]
            m = np.ascontiguousarray(arr[b, :, :, :r, :c])
            mats[kind] = reduce(kind, m) if reduce is not None else m
        records.append(Record(
            source=" ".join(enc.src_words), target=" ".join(enc.tgt_words), src_words=enc.src_words,
            tgt_words=enc.tgt_words, src_tokens=tok.convert_ids_to_tokens(enc.src_ids),
            dec_tokens=tok.convert_ids_to_tokens(dec_np[b, :t].tolist()),
            label_tokens=tok.convert_ids_to_tokens(enc.label_ids), src_ids=src_np[b, :s].copy(),
            dec_ids=dec_np[b, :t].copy(), label_ids=lab_np[b, :t].copy(), src_word_ids=enc.src_word_ids,
            tgt_word_ids=enc.tgt_word_ids, token_logprobs=token_logp[b, :t].astype(np.float32),
            cross=mats.get("cross"), enc_self=mats.get("enc_self"), dec_self=mats.get("dec_self"),
            meta={"model": bundle.name, "family": bundle.family}))
        if aligned is not None:
            records[-1].meta["aligner_words"] = aligned[b]
    return records


def _check_rows_sum_to_one(cross: torch.Tensor, row_mask: torch.Tensor, name: str) -> None:
    sums = cross.sum(-1)  # [B, L, H, T]
    valid = row_mask[:, None, None, :].expand_as(sums)
    worst = (sums[valid] - 1).abs().max().item() if valid.any() else 0.0
    if worst > 1e-2:
        raise RuntimeError(f"model {name}: cross-attention rows sum to 1±{worst:.3f}, not to 1; "
                           "the attention implementation is not returning softmax weights")


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so padding stays small."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i: i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def translate(bundle: ModelBundle, sources: Sequence[str | Words], beam: int = 1, batch_size: int = 32,
              max_new_tokens: int | None = None, check: bool = True) -> list[str]:
    """Translate sources (greedy when beam == 1) in length-sorted batches; returns detokenized strings.

    Every source is checked first (an empty one, or one past the model's positions, raises SentenceError
    with its index) rather than truncated, so nothing is decoded for a set that cannot be used; `check=False`
    for sources the caller has checked already (each check tokenizes the source word by word).
    """
    if beam < 1:
        raise ValueError(f"beam must be 1 (greedy) or more, not {beam}")
    for i, src in enumerate(sources if check else ()):
        encode_pair(bundle, src, [], i)
    texts = [bundle.source_prefix + (" ".join(s) if not isinstance(s, str) else s) for s in sources]
    tok, model = bundle.tokenizer, bundle.model
    results: list[str] = [""] * len(texts)
    for idx in length_batches([len(t) for t in texts], batch_size):
        enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True).to(bundle.device)
        limit = max_new_tokens or int(enc["input_ids"].shape[1] * 1.5) + 10
        positions = bundle.max_positions
        if positions:  # the decoder start takes one position; past the table generation fails with an IndexError
            limit = min(limit, positions - 1)
        with torch.inference_mode():
            gen = model.generate(**enc, num_beams=beam, do_sample=False, max_new_tokens=limit,
                                 **bundle.generate_kwargs)
        for i, text in zip(idx, tok.batch_decode(gen, skip_special_tokens=True)):
            results[i] = text.strip()
    return results


def iter_extract(bundle: ModelBundle, sources: Sequence[str | Words], targets: Sequence[str | Words] | None = None,
                 batch_size: int = 16, beam: int = 1, keep: Iterable[str] = ATTENTIONS,
                 reduce: Callable[[str, np.ndarray], np.ndarray] | None = None, aligner: Any = None
                 ) -> Iterator[tuple[int, Record]]:
    """Yield (index, Record) batch by batch (length-sorted order). Without targets the model translates first.
    `aligner`: as `forward_batch`."""
    for what, given in (("sources", sources), ("targets", targets)):
        if isinstance(given, str):  # a lone string would be read as one sentence per character
            raise TypeError(f"{what} must be a list of sentences, not one string: use [{given[:30]!r}]")
    if targets is None:
        targets = translate(bundle, sources, beam=beam)
        forced = False
    else:
        forced = True
        if len(targets) != len(sources):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets: expected one target per source")
    encoded = [encode_pair(bundle, s, t, i) for i, (s, t) in enumerate(zip(sources, targets))]
    yield from iter_forward(bundle, encoded, batch_size, keep, reduce, forced=forced, beam=beam, aligner=aligner)


def iter_forward(bundle: ModelBundle, encoded: Sequence[Encoded], batch_size: int = 16,
                 keep: Iterable[str] = ATTENTIONS, reduce: Callable[[str, np.ndarray], np.ndarray] | None = None,
                 *, forced: bool = True, beam: int | None = None, aligner: Any = None) -> Iterator[tuple[int, Record]]:
    """Yield (index, Record) of already encoded pairs, one teacher-forced pass per batch (length-sorted);
    `aligner` as `forward_batch`."""
    for idx in length_batches([len(e.src_ids) + len(e.label_ids) for e in encoded], batch_size):
        for i, rec in zip(idx, forward_batch(bundle, [encoded[i] for i in idx], keep=keep, reduce=reduce,
                                             aligner=aligner)):
            rec.meta.update({"index": i, "forced_target": forced, "beam": None if forced else beam})
            yield i, rec


def extract(bundle: ModelBundle, sources: Sequence[str | Words], targets: Sequence[str | Words] | None = None,
            batch_size: int = 16, beam: int = 1, keep: Iterable[str] = ATTENTIONS,
            reduce: Callable[[str, np.ndarray], np.ndarray] | None = None) -> list[Record]:
    """Records for every pair, in input order. See `iter_extract` for streaming."""
    out: list[Record | None] = [None] * len(sources)
    for i, rec in iter_extract(bundle, sources, targets, batch_size=batch_size, beam=beam, keep=keep, reduce=reduce):
        out[i] = rec
    return out  # type: ignore[return-value]
