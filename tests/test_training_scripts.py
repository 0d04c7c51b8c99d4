"""The training scripts build their Transformers with one function; the embedded model's own configuration is
what `scripts/train_default_model.py` builds with its default options."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("train_default_model", REPO / "scripts" / "train_default_model.py")
train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train)


def test_marian_config_rebuilds_the_embedded_models():
    from transformers import MarianTokenizer

    folder = REPO / "aligndebug" / "default_model"
    tok = MarianTokenizer.from_pretrained(folder)
    cfg = train.marian_config(tok, 256, 3, 3, 4, 1024, dropout=0.1, attention_dropout=0.0,
                              activation_function="swish").to_dict()
    shipped = json.loads((folder / "config.json").read_text())
    keys = ["d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
            "encoder_ffn_dim", "decoder_ffn_dim", "vocab_size", "decoder_vocab_size", "pad_token_id",
            "decoder_start_token_id", "eos_token_id", "forced_eos_token_id", "max_position_embeddings",
            "scale_embedding", "share_encoder_decoder_embeddings", "tie_word_embeddings", "dropout",
            "attention_dropout", "activation_function"]
    assert {k: cfg[k] for k in keys} == {k: shipped[k] for k in keys}


def test_marian_config_takes_other_depths_and_settings():
    from transformers import MarianTokenizer

    tok = MarianTokenizer.from_pretrained(REPO / "aligndebug" / "default_model")
    cfg = train.marian_config(tok, 128, 4, 2, 2, 512, dropout=0.2, activation_function="relu")
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.encoder_attention_heads) == (128, 4, 2, 2)
    assert (cfg.decoder_ffn_dim, cfg.dropout, cfg.activation_function) == (512, 0.2, "relu")
    assert cfg.decoder_start_token_id == tok.pad_token_id


def test_train_step_learns_a_batch_and_counts_its_target_tokens():
    import torch
    from transformers import MarianMTModel, MarianTokenizer

    torch.manual_seed(0)
    tok = MarianTokenizer.from_pretrained(REPO / "aligndebug" / "default_model")
    model = MarianMTModel(train.marian_config(tok, 32, 1, 1, 2, 64, dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100)
    src = [tok("der Hund schläft .")["input_ids"], tok("ein Haus")["input_ids"]]
    tgt = [tok(text_target="the dog sleeps .")["input_ids"], tok(text_target="a house")["input_ids"]]
    losses = []
    for _ in range(15):
        loss, n_tokens = train.train_step(model, opt, loss_fn, src, tgt, tok.pad_token_id, "cpu")
        losses.append(loss)
    assert n_tokens == sum(map(len, tgt))  # padding is no target token
    assert losses[-1] < 0.5 * losses[0]
