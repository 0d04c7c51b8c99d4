"""The Record: everything one teacher-forced pass yields for one sentence pair.

Row convention (see design notes): the decoder reads `dec_tokens` (length T, starting
with the model's decoder start token) and row t of every decoder-side matrix predicts
`label_tokens[t]`. A target word token at label position t is therefore aligned from row
t by the naive method and from row t+1 (where it is the decoder *input*) by Shift-Att.
Special tokens (start, language codes, `</s>`) carry word id -1.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_ARRAYS = ("src_ids", "dec_ids", "label_ids", "src_word_ids", "tgt_word_ids", "cross", "enc_self", "dec_self", "token_logprobs")


@dataclass
class Record:
    """One sentence pair after extraction. Arrays are numpy; attention is float32."""

    source: str
    target: str
    src_words: list[str]
    tgt_words: list[str]
    src_tokens: list[str]  # encoder input tokens, specials included (length S)
    dec_tokens: list[str]  # decoder input tokens (length T)
    label_tokens: list[str]  # token predicted at each decoder row (length T)
    src_ids: np.ndarray  # [S] encoder input ids
    dec_ids: np.ndarray  # [T] decoder input ids (teacher forcing)
    label_ids: np.ndarray  # [T] ids predicted at each row
    src_word_ids: np.ndarray  # [S] int: source word index per encoder token, -1 for specials
    tgt_word_ids: np.ndarray  # [T] int: target word index of label_tokens[t], -1 for specials
    token_logprobs: np.ndarray  # [T] log p(label_t | source, labels_<t)
    cross: np.ndarray | None = None  # [L, H, T, S]
    enc_self: np.ndarray | None = None  # [L, H, S, S]
    dec_self: np.ndarray | None = None  # [L, H, T, T]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def target_positions(self) -> np.ndarray:
        """Label positions t that hold a target word's token (specials excluded)."""
        return np.flatnonzero(self.tgt_word_ids >= 0)

    @property
    def source_positions(self) -> np.ndarray:
        """Encoder positions that hold a source word's token (specials excluded)."""
        return np.flatnonzero(self.src_word_ids >= 0)

    def rows_for(self, method: str) -> np.ndarray:
        """Decoder rows that align each target word token, for 'naive' or 'shift-att'."""
        pos = self.target_positions
        if method == "naive":
            return pos
        if method == "shift-att":
            rows = pos + 1
            if len(rows) and rows[-1] >= len(self.dec_tokens):
                raise ValueError("Shift-Att needs the row after the last target token; the decoder input is too short")
            return rows
        raise ValueError(f"unknown method {method!r}: expected 'naive' or 'shift-att'")

    def to_dict(self, arrays: bool = True) -> dict[str, Any]:
        """JSON-ready dict; arrays become {dtype, shape, data(base64)} unless `arrays` is False."""
        out: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            if name in _ARRAYS:
                if value is None or not arrays and name in ("cross", "enc_self", "dec_self"):
                    out[name] = None
                else:
                    out[name] = _encode_array(np.asarray(value))
            else:
                out[name] = value
        return out

    def to_json(self, arrays: bool = True) -> str:
        return json.dumps(self.to_dict(arrays=arrays), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Record":
        kwargs = dict(data)
        for name in _ARRAYS:
            value = kwargs.get(name)
            kwargs[name] = None if value is None else _decode_array(value)
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> "Record":
        return cls.from_dict(json.loads(text))


def _encode_array(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a)
    return {"dtype": str(a.dtype), "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def _decode_array(d: dict[str, Any]) -> np.ndarray:
    raw = base64.b64decode(d["data"])
    return np.frombuffer(raw, dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()
