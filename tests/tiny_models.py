"""Tiny random encoder-decoder models of every family, with tokenizers trained right here.

Nothing is downloaded: SentencePiece, byte-level BPE and WordPiece vocabularies are trained
on the ~30 sentence pairs below, in a temporary folder that lives for the test session, and
the models are built from configs (d_model 16, 2 encoder + 2 decoder layers, 2 heads) with
fixed seeds. Every builder is cached, so a session builds each family once.

Families and their decoder conventions (what tests/test_families.py pins):

- marian:  labels `y </s>`,            decoder input `<pad> y`           (start = pad)
- t5:      labels `y </s>`,            decoder input `<pad> y`           (start = pad)
- bart:    labels `<s> y </s>`,        decoder input `</s> <s> y`        (start = </s>, then <s>)
- mbart:   labels `y </s> en_XX`,      decoder input `en_XX y </s>`      (mBART-cc25/en-ro: the
           target language code is wrapped round to be the decoder start, as in facebook/mbart-large-en-ro)
- mbart50: labels `en_XX y </s>`,      decoder input `</s> en_XX y`      (start = </s>, then the language)
- m2m100:  labels `__en__ y </s>`,     decoder input `</s> __en__ y`
- nllb:    labels `eng_Latn y </s>`,   decoder input `</s> eng_Latn y`
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch

from aligndebug.models import ModelBundle

# Tiny models gain nothing from intra-op threads, and on a busy machine the thread hand-offs cost seconds
# per forward pass (measured: 6 s vs 0.13 s per extraction with a training job on both cores).
torch.set_num_threads(1)

DE = [
    "Der Hund schläft .", "Die Katze trinkt Milch .", "Ich sehe den Hund .", "Das Haus ist groß .",
    "Wir gehen nach Hause .", "Der Mann liest ein Buch .", "Die Frau singt ein Lied .",
    "Das Kind spielt im Garten .", "Es regnet heute .", "Ich habe keine Zeit .", "Der Zug kommt spät .",
    "Sie trinkt gern Kaffee .", "Der Hund bellt laut .", "Die Sonne scheint .", "Wir essen Brot und Käse .",
    "Er kauft einen Apfel .", "Das Wetter ist schön , oder ?", "Ich mag keine Katzen .",
    "Der Lehrer erklärt die Aufgabe .", "Die Kinder lachen .", "Wo ist der Bahnhof ?",
    "Ich wohne in Berlin .", "Der Hund spielt mit dem Ball .", "Sie schreibt einen Brief .",
    "Das Buch liegt auf dem Tisch .", "Wir fahren morgen nach Hamburg .", "Der Kaffee ist heiß .",
    "Ich verstehe das nicht .", "Die Straße ist nass .", "Der Vogel singt im Baum .",
]
EN = [
    "The dog sleeps .", "The cat drinks milk .", "I see the dog .", "The house is big .",
    "We go home .", "The man reads a book .", "The woman sings a song .",
    "The child plays in the garden .", "It is raining today .", "I don't have time .", "The train is late .",
    "She likes coffee .", "The dog barks loudly .", "The sun is shining .", "We eat bread and cheese .",
    "He buys an apple .", "The weather is nice , isn't it ?", "I don't like cats .",
    "The teacher explains the task .", "The children laugh .", "Where is the station ?",
    "I live in Berlin .", "The dog plays with the ball .", "She writes a letter .",
    "The book lies on the table .", "We're driving to Hamburg tomorrow .", "The coffee is hot .",
    "I don't understand that .", "The street is wet .", "The bird sings in the tree .",
]

FAMILIES = ("marian", "bart", "mbart", "mbart50", "m2m100", "nllb", "t5")
LANGS = {  # (src_lang, tgt_lang) each family's tokenizer names them by
    "mbart": ("de_DE", "en_XX"), "mbart50": ("de_DE", "en_XX"), "m2m100": ("de", "en"),
    "nllb": ("deu_Latn", "eng_Latn"),
}
LANG_TOKENS = {  # (source, target) language-code tokens as they appear in the token streams
    **LANGS, "m2m100": ("__de__", "__en__"),
}
SIZE = dict(d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=256, dropout=0.0, attention_dropout=0.0,
            activation_dropout=0.0, init_std=0.5)  # a large init gives peaked, distinguishable attention rows


@functools.lru_cache(maxsize=None)
def workdir() -> Path:
    """One temporary folder per test session; removed when the interpreter exits."""
    path = Path(tempfile.mkdtemp(prefix="aligndebug-tiny-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def _fresh(name: str) -> Path:
    path = workdir() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.lru_cache(maxsize=None)
def spm_model(style: str = "fairseq") -> Path:
    """A SentencePiece unigram model trained on DE+EN.

    'fairseq' keeps SentencePiece's own ids (<unk>=0, <s>=1, </s>=2), which the mBART/NLLB converters
    expect; 't5' puts <pad>=0, </s>=1, <unk>=2 as T5's tokenizer reads the ids straight from the model.
    """
    ids = {"fairseq": {}, "t5": dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1)}[style]
    prefix = workdir() / f"spm-{style}"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(DE + EN), model_prefix=str(prefix), vocab_size=240, hard_vocab_limit=False,
        character_coverage=1.0, model_type="unigram", seed_sentencepiece_size=10000, num_threads=1,
        minloglevel=2, **ids)
    return prefix.with_suffix(".model")


def spm_pieces(style: str = "fairseq") -> list[str]:
    sp = spm.SentencePieceProcessor(model_file=str(spm_model(style)))
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


@functools.lru_cache(maxsize=None)
def tokenizer(family: str) -> Any:
    """The trained tokenizer of a family (marian, bart, mbart, mbart50, m2m100, nllb, t5), or 'wordpiece'."""
    from transformers import (BartTokenizer, BertTokenizer, M2M100Tokenizer, MarianTokenizer, MBart50Tokenizer,
                              MBartTokenizer, NllbTokenizer, T5Tokenizer)

    d = _fresh(f"tok-{family}")
    if family == "marian":
        shutil.copy(spm_model(), d / "source.spm")
        shutil.copy(spm_model(), d / "target.spm")
        vocab = {"</s>": 0, "<unk>": 1}
        for piece in spm_pieces():
            if piece != "<s>":  # Marian has no <s>
                vocab.setdefault(piece, len(vocab))
        vocab["<pad>"] = len(vocab)  # Marian keeps <pad> last
        (d / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        return MarianTokenizer(str(d / "source.spm"), str(d / "target.spm"), str(d / "vocab.json"))
    if family == "t5":
        shutil.copy(spm_model("t5"), d / "spiece.model")
        return T5Tokenizer.from_pretrained(str(d), extra_ids=0)
    if family in ("mbart", "mbart50", "nllb"):
        shutil.copy(spm_model(), d / "sentencepiece.bpe.model")
        src, tgt = LANGS[family]
        cls = {"mbart": MBartTokenizer, "mbart50": MBart50Tokenizer, "nllb": NllbTokenizer}[family]
        tok = cls.from_pretrained(str(d), src_lang=src, tgt_lang=tgt)
        if family == "nllb":
            # Built from a bare SentencePiece model, NLLB's language codes are not in the vocabulary and map
            # to <unk>; add the two this test set uses and re-apply the languages so the templates see them.
            from tokenizers import AddedToken
            tok.add_tokens([AddedToken(src, special=True), AddedToken(tgt, special=True)], special_tokens=True)
            tok.src_lang, tok.tgt_lang = src, tgt
            tok.set_src_lang_special_tokens(src)
        for code in (src, tgt):
            if tok.convert_tokens_to_ids(code) == tok.unk_token_id:
                raise AssertionError(f"{family}: language code {code} maps to <unk>")
        return tok
    if family == "m2m100":
        shutil.copy(spm_model(), d / "sentencepiece.bpe.model")
        vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
        for piece in spm_pieces():
            vocab.setdefault(piece, len(vocab))
        (d / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        return M2M100Tokenizer(vocab_file=str(d / "vocab.json"), spm_file=str(d / "sentencepiece.bpe.model"),
                               src_lang="de", tgt_lang="en")
    if family == "bart":
        from tokenizers import ByteLevelBPETokenizer
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(DE + EN, vocab_size=400, min_frequency=2, show_progress=False,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        bpe.save_model(str(d))
        merges = [tuple(line.split(" ")) for line in (d / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
                  if line]
        vocab = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
        return BartTokenizer(vocab=vocab, merges=merges)
    if family == "wordpiece":
        from tokenizers import BertWordPieceTokenizer
        wp = BertWordPieceTokenizer(lowercase=False)
        wp.train_from_iterator(DE + EN, vocab_size=300, min_frequency=2, show_progress=False)
        wp.save_model(str(d))
        return BertTokenizer.from_pretrained(str(d), do_lower_case=False)
    raise ValueError(f"unknown family {family!r}: expected one of {FAMILIES + ('wordpiece',)}")


def vocab_size(tok: Any) -> int:
    """Embedding rows a model needs: every id the tokenizer can emit, language codes included."""
    ids = list(tok.get_vocab().values())
    ids += list(getattr(tok, "lang_token_to_id", {}).values())  # M2M100 numbers its codes past the vocabulary
    return max(len(tok), max(ids) + 1)


def _model(family: str, tok: Any) -> Any:
    from transformers import (BartConfig, BartForConditionalGeneration, M2M100Config, M2M100ForConditionalGeneration,
                              MarianConfig, MarianMTModel, MBartConfig, MBartForConditionalGeneration, T5Config,
                              T5ForConditionalGeneration)

    n = vocab_size(tok)
    ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, forced_eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    if family == "marian":
        model = MarianMTModel(MarianConfig(vocab_size=n, decoder_vocab_size=n, decoder_start_token_id=tok.pad_token_id,
                                           **ids, **SIZE))
    elif family == "t5":
        model = T5ForConditionalGeneration(T5Config(
            vocab_size=n, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2, num_heads=2,
            relative_attention_num_buckets=8, dropout_rate=0.0, initializer_factor=2.0,
            decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    elif family == "bart":
        # As facebook/bart-large: decoding starts with </s>, then <s> is forced.
        model = BartForConditionalGeneration(BartConfig(vocab_size=n, bos_token_id=tok.bos_token_id,
                                                        decoder_start_token_id=tok.eos_token_id,
                                                        forced_bos_token_id=tok.bos_token_id, **ids, **SIZE))
    elif family == "mbart":
        # As facebook/mbart-large-en-ro: the target language code is the decoder start token.
        start = tok.convert_tokens_to_ids(LANGS[family][1])
        model = MBartForConditionalGeneration(MBartConfig(vocab_size=n, bos_token_id=tok.bos_token_id,
                                                          decoder_start_token_id=start, **ids, **SIZE))
    elif family == "mbart50":
        # As facebook/mbart-large-50-*: start with </s>, then the target language is forced.
        model = MBartForConditionalGeneration(MBartConfig(vocab_size=n, bos_token_id=tok.bos_token_id,
                                                          decoder_start_token_id=tok.eos_token_id, **ids, **SIZE))
    elif family in ("m2m100", "nllb"):
        model = M2M100ForConditionalGeneration(M2M100Config(vocab_size=n, bos_token_id=tok.bos_token_id,
                                                            decoder_start_token_id=tok.eos_token_id, **ids, **SIZE))
    else:
        raise ValueError(f"unknown family {family!r}: expected one of {FAMILIES}")
    if family == "bart":  # transformers 5 keeps generation settings out of the model config
        model.generation_config.forced_bos_token_id = tok.bos_token_id
    return model.eval()


@functools.lru_cache(maxsize=None)
def bundle(family: str) -> ModelBundle:
    """A ModelBundle of the family's tiny random model (shared within the session: do not mutate)."""
    tok = tokenizer(family)
    src, tgt = LANGS.get(family, (None, None))
    return ModelBundle.from_objects(_model(family, tok), tok, name=f"tiny-{family}", src_lang=src, tgt_lang=tgt)


def save(family: str, dest: Path) -> Path:
    """Write the family's tiny model and tokenizer as a local model folder (safetensors), for load_model."""
    b = bundle(family)
    b.model.save_pretrained(str(dest))
    b.tokenizer.save_pretrained(str(dest))
    return dest
