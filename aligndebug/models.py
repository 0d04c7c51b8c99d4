"""Load any Hugging Face encoder-decoder translation model, with the quirks each family needs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ModelLoadError  # noqa: F401  (re-exported: callers import it from here too)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
DEFAULT_NAMES = ("default", "", None)
SETTINGS_FILE = "aligndebug.json"  # beside a model's weights: what aligndebug knows about the model


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
    view: dict[str, Any] = field(default_factory=dict)  # the model's best alignment view: method, layer (if known)

    @classmethod
    def from_objects(cls, model: Any, tokenizer: Any, name: str = "in-memory", device: str = "cpu",
                     src_lang: str | None = None, tgt_lang: str | None = None, source_prefix: str = "") -> "ModelBundle":
        """Wrap an already-built model (e.g. a tiny test model) the same way `load_model` does."""
        config = model.config
        if not getattr(config, "is_encoder_decoder", False):
            kind = _kind(config, model)
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
        gen = _generation_prefix(model, tokenizer, name)
        return cls(model=model, tokenizer=tokenizer, name=name, family=family, device=device,
                   src_lang=src_lang, tgt_lang=tgt_lang, source_prefix=source_prefix, generate_kwargs=gen)

    def fingerprint(self) -> str:
        """A short hash of the model's configuration, its parameter shapes and a sample of its weights: two models,
        or one retrained in place, differ here (a resumed run checks it). Cheap: it reads a few tensors only."""
        h = hashlib.sha256(self.model.config.to_json_string(use_diff=False).encode("utf-8"))
        params = list(self.model.named_parameters())
        for name, p in params:
            h.update(f"{name}{tuple(p.shape)}".encode("utf-8"))
        for _, p in params[:: max(1, len(params) // 8)]:
            h.update(p.detach().to("cpu", torch.float64).sum().numpy().tobytes())
        return h.hexdigest()[:16]

    @property
    def num_layers(self) -> int:
        """Decoder layers (the layers cross-attention has)."""
        cfg = self.model.config
        return int(getattr(cfg, "decoder_layers", None) or getattr(cfg, "num_decoder_layers", None) or cfg.num_layers)

    @property
    def num_heads(self) -> int:
        """Cross-attention heads per decoder layer (BART-likes: decoder_attention_heads; T5: num_heads)."""
        cfg = self.model.config
        return int(getattr(cfg, "decoder_attention_heads", None) or cfg.num_heads)

    @property
    def max_positions(self) -> int | None:
        """Most tokens a side may have (learned/sinusoidal positions), or None for relative positions (T5)."""
        n = getattr(self.model.config, "max_position_embeddings", None)
        return None if n is None else int(n)


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
        raise ModelLoadError(f"device {device!r} was asked for (--device, or $ALIGNDEBUG_DEVICE in the app), "
                             "but no CUDA GPU is available")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model {name!r} could not be loaded: not a local model folder, and not a "
                             f"Hugging Face id that can be fetched here ({type(exc).__name__}: {exc})") from exc
    if not getattr(config, "is_encoder_decoder", False):
        raise ModelLoadError(
            f"{name}: aligndebug needs an encoder-decoder (seq2seq) translation model with cross-attention; "
            f"'{config.model_type}' is {_kind(config)}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        model = AutoModelForSeq2SeqLM.from_pretrained(path, attn_implementation="eager", use_safetensors=True,
                                                      trust_remote_code=False)
    except (OSError, ValueError) as exc:
        if Path(path).is_dir() and not any(Path(path).glob("*.safetensors")) and any(
                Path(path).glob(pat) for pat in ("*.bin", "*.pt", "*.pth", "*.ckpt")):
            raise ModelLoadError(
                f"model {name!r} has its weights only as pickle files (.bin/.pt): aligndebug loads safetensors only, "
                "because unpickling can run arbitrary code. Convert it once where you trust it: "
                "AutoModelForSeq2SeqLM.from_pretrained(path).save_pretrained(path, safe_serialization=True)") from exc
        raise ModelLoadError(f"model {name!r} could not be loaded ({type(exc).__name__}: {exc})") from exc
    if device.startswith("cuda"):
        model = model.half()  # attention weights in half precision are plenty for alignment and halve memory
    bundle = ModelBundle.from_objects(model, tokenizer, name=name, device=device, src_lang=src_lang,
                                      tgt_lang=tgt_lang, source_prefix=source_prefix)
    bundle.view = model_view(path)
    return bundle


def model_view(path: str | Path) -> dict[str, Any]:
    """The best alignment view (row rule `method`, decoder `layer`) a model folder records in its
    ``aligndebug.json`` (the embedded model does: it was measured against gold), else {}."""
    settings = Path(path) / SETTINGS_FILE
    if not settings.is_file():
        return {}
    try:
        view = json.loads(settings.read_text(encoding="utf-8")).get("view", {})
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelLoadError(f"{settings}: not a readable aligndebug settings file ({exc})") from exc
    return {k: view[k] for k in ("method", "layer") if k in view}


def _use_eager_attention(model: Any) -> None:
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter("eager")
    else:
        model.config._attn_implementation = "eager"


def _kind(config: Any, model: Any = None) -> str:
    """'decoder-only' or 'encoder-only': what a model without cross-attention is, for the error that refuses it."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    names = list(getattr(config, "architectures", None) or []) + ([type(model).__name__] if model is not None else [])
    if getattr(config, "is_decoder", False) or any(n.endswith(("ForCausalLM", "LMHeadModel")) for n in names):
        return "decoder-only"
    # GPT-2-like configs say neither (is_decoder is False); a type with a causal LM head and no masked one is a decoder.
    mt = config.model_type
    if mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "decoder-only"
    return "encoder-only"


def _generation_prefix(model: Any, tokenizer: Any, name: str) -> dict[str, Any]:
    """Generation settings that open every translation exactly as the teacher-forced pass opens its decoder input.

    The pass reads `decoder_inputs(labels)`; the tokens before the first target word there (the start token, then
    BART's <s> or a forced target-language code) must also start generation, or the pass that explains a
    translation reads another context than the one that produced it. Reading them off the tokenizer's own target
    encoding covers mBART-cc25 (language code wrapped round as the start), mBART-50/M2M100/NLLB (</s>, then the
    code: M2M100 spells it '__en__', so `convert_tokens_to_ids('en')` would be <unk>) and BART (</s>, then <s>).
    """
    try:
        full = list(tokenizer(text_target="a")["input_ids"])
        body = list(tokenizer(text_target="a", add_special_tokens=False)["input_ids"])
    except (KeyError, ValueError, TypeError) as exc:  # e.g. M2M100 with no target language set
        raise ModelLoadError(f"{name}: the tokenizer cannot encode a target sentence ({type(exc).__name__}: {exc}); "
                             "a multilingual model needs tgt_lang (e.g. 'en', 'eng_Latn', 'en_XX')") from exc
    lead = next((i for i in range(len(full) - len(body) + 1) if body and full[i:i + len(body)] == body), None)
    if lead is None:
        return {}
    prefix = decoder_inputs(model, torch.tensor([full]))[0, :lead + 1].tolist()
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in prefix:
        raise ModelLoadError(f"{name}: the decoder would start with <unk>: the target language code is not in the "
                             f"tokenizer's vocabulary (tokens {tokenizer.convert_ids_to_tokens(prefix)}); "
                             "check tgt_lang")
    if len(prefix) > 2:
        raise ModelLoadError(f"{name}: the decoder starts with {len(prefix)} special tokens "
                             f"{tokenizer.convert_ids_to_tokens(prefix)}; at most a start token and one forced "
                             "token are supported")
    return {"decoder_start_token_id": prefix[0], "forced_bos_token_id": prefix[1] if len(prefix) == 2 else None}


def decoder_inputs(model: Any, labels: torch.Tensor) -> torch.Tensor:
    """Teacher-forcing decoder input for `labels` (padded with -100), by the model's own rule.

    Models that define `prepare_decoder_input_ids_from_labels` (Marian, BART, mBART, T5) use it, so
    family quirks such as mBART's wrapped language code hold by construction; others shift right
    behind `decoder_start_token_id` (M2M100/NLLB: `</s>`, then the forced language code).
    """
    prepare = getattr(model, "prepare_decoder_input_ids_from_labels", None)
    if prepare is not None:
        return prepare(labels=labels)
    cfg = model.config
    out = labels.new_full(labels.shape, cfg.pad_token_id)
    out[:, 1:] = labels[:, :-1]
    out[:, 0] = cfg.decoder_start_token_id
    return out.masked_fill(out == -100, cfg.pad_token_id)
