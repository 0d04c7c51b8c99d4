"""Alignment methods by name: how a target token is matched to an attention row, and where word links come from.

* `ROW_RULES`: which decoder row of a cross-attention matrix aligns a target token (design notes, part 2):
  ``naive`` the row where the token is the output, ``shift-att`` the row where it is the decoder input.
* `ALIGNERS`: the sources of word links a sentence can be aligned with: raw cross-attention (read with a
  row rule, a layer and heads), attention rollout through every layer, and Integrated Gradients.
  `aligndebug score --compare` scores every aligner marked `compared` against gold beside attention.
* Every aligner reads its links with the decoding rule named in its settings (`decode`, see `decoding`);
  without one, attention keeps its argmax (or `threshold`) reading and rollout and IG their word argmax.

The CLI's choices, the app's select boxes and the compare columns read these; adding a method is one entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .agreement import ig_links, rollout_links
from .align import align_record
from .attribution import ig_word_matrix
from .decoding import word_links
from .rollout import rollout_word_matrix
from .record import Record

Link = tuple[int, int]

ROW_RULES: dict[str, str] = {
    "shift-att": "row where the target token is the decoder input (Shift-Att)",
    "naive": "row where the target token is the output",
}
DEFAULT_ROW_RULE = "shift-att"


@dataclass(frozen=True)
class Aligner:
    """One source of word links. `links(rec, ig, settings)`: `ig` the sentence's IGResult when `needs_ig`,
    `settings` the row rule, layer, head and threshold of raw attention (method, layer, head, threshold) and
    the decoding rule (decode; None: the aligner's own argmax reading)."""

    name: str
    label: str
    description: str
    links: Callable[[Record, Any, dict[str, Any]], set[Link]]
    keep: tuple[str, ...] = ("cross",)  # attention kinds the Record must hold
    needs_ig: bool = False  # needs the sentence's Integrated Gradients (about ig_steps forward passes)
    compared: bool = False  # scored beside attention by `score --compare`


def _attention(rec: Record, ig: Any, s: dict[str, Any]) -> set[Link]:
    return align_record(rec, s.get("method", DEFAULT_ROW_RULE), s.get("layer"), s.get("head", "mean"),
                        s.get("threshold"), s.get("decode"))


def _rollout(rec: Record, ig: Any, s: dict[str, Any]) -> set[Link]:
    # `score --compare` reads rollout's naive rows whatever --method says; the app passes its row rule
    method = s.get("rollout_method", "naive")
    if s.get("decode") is None:
        return rollout_links(rec, method=method)
    return word_links(rollout_word_matrix(rec, method=method), s["decode"], s.get("threshold"))


def _ig(rec: Record, ig: Any, s: dict[str, Any]) -> set[Link]:
    if s.get("decode") is None:
        return ig_links(rec, ig)
    return word_links(ig_word_matrix(rec, ig), s["decode"], s.get("threshold"))


ALIGNERS: dict[str, Aligner] = {a.name: a for a in (
    Aligner("attention", "attention", "cross-attention of one layer (or layer mean) and head (or head mean)", _attention),
    Aligner("rollout", "rollout", "attention rollout: the flow through every encoder and decoder layer", _rollout,
            keep=("cross", "enc_self", "dec_self"), compared=True),
    Aligner("ig", "IG", "Integrated Gradients of each target token's log-probability w.r.t. the source embeddings",
            _ig, needs_ig=True, compared=True),
)}


def compared_aligners() -> list[Aligner]:
    """The aligners `score --compare` scores beside attention, in registry order."""
    return [a for a in ALIGNERS.values() if a.compared]
