"""Load any Hugging Face encoder-decoder translation model, with the quirks each family needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
DEFAULT_NAMES = ("default", "", None)


class ModelLoadError(RuntimeError):
    """The model cannot be used: missing, unreadable, or not an encoder-decoder."""


@dataclass
class ModelBundle:
    """A model, its tokenizer and what extraction needs to know about them."""

    model: Any
    tokenizer: Any
    name: str
    family: str
    device: str = "cpu"
    src_lang: str | None = None
    tgt_lang: str | None = None
    source_prefix: str = ""  # e.g. T5's "translate German to English: "; never counted as source words
    generate_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_objects(cls, model: Any, tokenizer: Any, name: str = "in-memory", device: str = "cpu",
                     src_lang: str | None = None, tgt_lang: str | None = None, source_prefix: str = "") -> "ModelBundle":
        """Wrap an already-built model (e.g. a tiny test model) the same way `load_model` does."""
        config = model.config
        if not getattr(config, "is_encoder_decoder", False):
            kind = "decoder-only" if getattr(config, "is_decoder", False) or _looks_causal(model) else "encoder-only"
            raise ModelLoadError(
                f"{name}: aligndebug needs an encoder-decoder (seq2seq) translation model with cross-attention; "
                f"this is a {kind} model ({config.model_type})")
        _use_eager_attention(model)
        model.to(device).eval()
        family = model_family(config, tokenizer)
        if src_lang and hasattr(tokenizer, "src_lang"):
            tokenizer.src_lang = src_lang
        if tgt_lang and hasattr(tokenizer, "tgt_lang"):
            tokenizer.tgt_lang = tgt_lang
        gen: dict[str, Any] = {}
        if tgt_lang and family in ("mbart", "m2m100", "nllb"):
            gen["forced_bos_token_id"] = tokenizer.convert_tokens_to_ids(tgt_lang)
        return cls(model=model, tokenizer=tokenizer, name=name, family=family, device=device,
                   src_lang=src_lang, tgt_lang=tgt_lang, source_prefix=source_prefix, generate_kwargs=gen)

    @property
    def num_layers(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "decoder_layers", None) or getattr(cfg, "num_decoder_layers", None) or cfg.num_layers)


def model_family(config: Any, tokenizer: Any = None) -> str:
    """A short family name: marian, bart, mbart, m2m100, nllb, t5, or the config's model_type."""
    mt = config.model_type
    if mt == "m2m_100":
        return "nllb" if tokenizer is not None and "Nllb" in type(tokenizer).__name__ else "m2m100"
    if mt in ("t5", "mt5", "umt5"):
        return "t5"
    return mt


def load_model(name_or_path: str | None = "default", device: str = "cpu", src_lang: str | None = None,
               tgt_lang: str | None = None, source_prefix: str = "") -> ModelBundle:
    """Load a seq2seq model by Hugging Face id or local path ("default": the embedded de->en model).

    Weights come from safetensors only and remote code is never trusted. Attention runs in the eager
    implementation because fused kernels return no attention weights.
    """
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the weight-loading bar is noise on a CLI and in the app

    if name_or_path in DEFAULT_NAMES:
        path: str = str(DEFAULT_MODEL_DIR)
        name = "default"
        if not (DEFAULT_MODEL_DIR / "config.json").exists():
            raise ModelLoadError(f"the embedded default model is missing from {DEFAULT_MODEL_DIR}; "
                                 "reinstall aligndebug or train it with scripts/train_default_model.py")
    else:
        path, name = str(name_or_path), str(name_or_path)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device} was asked for, but no CUDA GPU is available")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model {name!r} could not be loaded: not a local model folder, and not a "
                             f"Hugging Face id that can be fetched here ({type(exc).__name__}: {exc})") from exc
    if not getattr(config, "is_encoder_decoder", False):
        raise ModelLoadError(
            f"{name}: aligndebug needs an encoder-decoder (seq2seq) translation model with cross-attention; "
            f"'{config.model_type}' is {'decoder-only' if getattr(config, 'is_decoder', True) else 'encoder-only'}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        model = AutoModelForSeq2SeqLM.from_pretrained(path, attn_implementation="eager", use_safetensors=True,
                                                      trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model {name!r} could not be loaded ({type(exc).__name__}: {exc})") from exc
    if device.startswith("cuda"):
        model = model.half()  # attention weights in half precision are plenty for alignment and halve memory
    return ModelBundle.from_objects(model, tokenizer, name=name, device=device, src_lang=src_lang,
                                    tgt_lang=tgt_lang, source_prefix=source_prefix)


def _use_eager_attention(model: Any) -> None:
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter("eager")
    else:
        model.config._attn_implementation = "eager"


def _looks_causal(model: Any) -> bool:
    return any(name.endswith("ForCausalLM") for name in getattr(model.config, "architectures", None) or [])
