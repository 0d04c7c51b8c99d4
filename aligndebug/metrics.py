"""Alignment scores (precision, recall, AER, F1 with Sure/Possible gold) and sacrebleu wrappers.

AER follows Och & Ney (2003). With A the predicted links, S the Sure and P the Possible gold
links (S is a subset of P):

    precision = |A∩P| / |A|        recall = |A∩S| / |S|
    AER       = 1 − (|A∩S| + |A∩P|) / (|A| + |S|)
    F1        = 2·precision·recall / (precision + recall)

Corpus scores sum the four counts over all sentences first and divide once (they are not
means of per-sentence scores); :class:`AlignmentCounts` is addable for that reason.

Empty cases (0/0), chosen so that AER = 1 − F1 still holds whenever S = P:
  * precision with no predicted links is 1.0 (no prediction was wrong);
  * recall with no Sure links is 1.0 (nothing was missed);
  * AER with no predicted and no Sure links is 0.0;
  * F1 is 0.0 when precision + recall is 0.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import __version__
from .gold import GoldAlignment, Link


@dataclass(frozen=True)
class AlignmentCounts:
    """The four counts behind every alignment score; add them up over a corpus."""

    predicted: int = 0  # |A|
    sure: int = 0  # |S|
    pred_and_sure: int = 0  # |A∩S|
    pred_and_possible: int = 0  # |A∩P|

    def __post_init__(self) -> None:
        a, s, a_s, a_p = self.predicted, self.sure, self.pred_and_sure, self.pred_and_possible
        if min(a, s, a_s, a_p) < 0 or not (a_s <= a_p <= a and a_s <= s):
            raise ValueError(
                f"inconsistent counts {self}: need 0 <= |A∩S| <= |A∩P| <= |A| and |A∩S| <= |S| (S is a subset of P)")

    def __add__(self, other: AlignmentCounts) -> AlignmentCounts:
        if not isinstance(other, AlignmentCounts):
            return NotImplemented
        return AlignmentCounts(
            self.predicted + other.predicted, self.sure + other.sure,
            self.pred_and_sure + other.pred_and_sure, self.pred_and_possible + other.pred_and_possible)

    def __radd__(self, other):
        # sum() starts from the int 0
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    @property
    def precision(self) -> float:
        return self.pred_and_possible / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        return self.pred_and_sure / self.sure if self.sure else 1.0

    @property
    def aer(self) -> float:
        denom = self.predicted + self.sure
        return 1.0 - (self.pred_and_sure + self.pred_and_possible) / denom if denom else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "precision": self.precision, "recall": self.recall, "aer": self.aer, "f1": self.f1,
            "predicted": self.predicted, "sure": self.sure,
            "pred_and_sure": self.pred_and_sure, "pred_and_possible": self.pred_and_possible,
        }


def count_links(pred: Iterable[Link], gold: GoldAlignment | Iterable[Link]) -> AlignmentCounts:
    """Counts for one sentence. `gold` is a GoldAlignment, or plain links read as all Sure.

    Duplicate predicted links count once (an alignment is a set).
    """
    a = {(int(i), int(j)) for i, j in pred}
    if not isinstance(gold, GoldAlignment):
        gold = GoldAlignment.from_links(gold)
    return AlignmentCounts(len(a), len(gold.sure), len(a & gold.sure), len(a & gold.possible))


def corpus_counts(preds: Iterable[Iterable[Link]], golds: Iterable[GoldAlignment | None]) -> AlignmentCounts:
    """Summed counts over sentences; sentences whose gold is None (skipped as invalid) are left out.

    `preds` and `golds` must have the same length; a None prediction is an error (score it as
    an empty set if that is what it means).
    """
    total = AlignmentCounts()
    for k, (pred, gold) in enumerate(zip(preds, golds, strict=True)):
        if gold is None:
            continue
        if pred is None:
            raise ValueError(f"prediction {k} is None but its gold alignment is not")
        total = total + count_links(pred, gold)
    return total


# ------------------------------------------------------------------------------------ signature

@dataclass(frozen=True)
class AlignmentSignature:
    """Every setting behind an alignment score, formatted like a sacrebleu signature."""

    model: str
    method: str
    layer: int | str
    heads: int | str | Sequence[int] = "mean"
    gold: str | None = None
    fmt: str | None = None
    base: int | None = None
    base_source: str = "given"  # "given" | "detected" | "guessed", as in GoldSet.base_source
    threshold: float | None = None
    version: str = __version__
    decode: str | None = None  # decoding rule (aligndebug.decoding); None: the legacy argmax/threshold reading

    @classmethod
    def for_gold(cls, gold_set, **kwargs) -> AlignmentSignature:
        """Fill gold path, format and base from a gold.GoldSet."""
        return cls(gold=gold_set.path, fmt=gold_set.fmt, base=gold_set.base, base_source=gold_set.base_source, **kwargs)

    @property
    def base_detected(self) -> bool:
        return self.base_source != "given"

    def format(self) -> str:
        heads = self.heads if isinstance(self.heads, (int, str)) else ",".join(str(h) for h in self.heads)
        parts = [f"model:{self.model}", f"method:{self.method}", f"layer:{self.layer}", f"heads:{heads}"]
        if self.threshold is not None:
            parts.append(f"thr:{self.threshold:g}")
        if self.decode is not None:
            parts.append(f"decode:{self.decode}")
        parts.append(f"gold:{os.path.basename(self.gold) if self.gold else 'none'}")
        if self.fmt is not None:
            parts.append(f"fmt:{self.fmt}")
        if self.base is not None:
            parts.append(f"base:{self.base}({self.base_source})")
        parts.append(f"v:{self.version}")
        return "|".join(parts)

    def __str__(self) -> str:
        return self.format()


# ------------------------------------------------------------------------------------ sacrebleu

def _streams(refs: Sequence[str] | Sequence[Sequence[str]], n: int) -> list[list[str]]:
    """sacrebleu wants reference *streams*; accept one reference per hypothesis or several."""
    if len(refs) != n:
        raise ValueError(f"{n} hypotheses but {len(refs)} references")
    if all(isinstance(r, str) for r in refs):
        return [list(refs)]
    widths = {len(r) for r in refs}
    if len(widths) != 1:
        raise ValueError("every hypothesis needs the same number of references")
    return [list(stream) for stream in zip(*refs)]


def corpus_translation_scores(hyps: Sequence[str], refs: Sequence[str] | Sequence[Sequence[str]]) -> dict:
    """Corpus BLEU, chrF and TER with sacrebleu defaults, each with its signature.

    `refs` holds one reference string per hypothesis, or a list of references per hypothesis.
    """
    from sacrebleu.metrics import BLEU, CHRF, TER

    streams = _streams(refs, len(hyps))
    out: dict = {}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF()), ("ter", TER())):
        out[name] = metric.corpus_score(list(hyps), streams).score
        out[f"{name}_signature"] = str(metric.get_signature())
    return out


_SENTENCE_METRICS: dict = {}


def _sentence_metric(name: str):
    if name not in _SENTENCE_METRICS:
        from sacrebleu.metrics import BLEU, CHRF

        _SENTENCE_METRICS[name] = BLEU(effective_order=True) if name == "bleu" else CHRF()
    return _SENTENCE_METRICS[name]


def sentence_bleu(hyp: str, ref: str | Sequence[str]) -> float:
    """Sentence BLEU (sacrebleu, effective order, exp smoothing), 0–100."""
    refs = [ref] if isinstance(ref, str) else list(ref)
    return _sentence_metric("bleu").sentence_score(hyp, refs).score


def sentence_chrf(hyp: str, ref: str | Sequence[str]) -> float:
    """Sentence chrF (sacrebleu defaults), 0–100."""
    refs = [ref] if isinstance(ref, str) else list(ref)
    return _sentence_metric("chrf").sentence_score(hyp, refs).score
