"""The `aligndebug` command line, run in-process through `cli.main` (and once through the console script).

Every score is checked against an independent computation: the links a run writes are compared
with the Python API's alignment of the same sentences, and AER/precision/recall are recomputed here
with plain set arithmetic from the gold built in this file (not from what the CLI read back).
The model is the tiny random Marian of tests/tiny_models.py, saved to a folder (safetensors) so the
CLI loads it by path like any user model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tiny_models as tm
from aligndebug.align import align_record
from aligndebug.cli import main
from aligndebug.extract import extract, translate
from aligndebug.gold import read_gold

N = 10
SRC, TGT = tm.DE[:N], tm.EN[:N]
LAYER = 0  # the tiny model's layer 0 has varied attention (its last layer looks mostly at one word)

Links = set[tuple[int, int]]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # for the console-script runs (see one_thread)


# ------------------------------------------------------------------------------------------ fixtures

def make_gold(k: int, ns: int, nt: int) -> tuple[Links, Links]:
    """(sure, possible-only) links of sentence k: a shifted diagonal, the final words sure."""
    sure = {(i, min(nt - 1, (i + k) % (nt - 1))) for i in range(0, ns - 1, 2)} | {(ns - 1, nt - 1)}
    possible = {(i, i) for i in range(1, min(ns, nt) - 1, 2)} - sure
    return sure, possible


GOLD = [make_gold(k, len(s.split()), len(t.split())) for k, (s, t) in enumerate(zip(SRC, TGT))]


def gold_text(fmt: str, gold=GOLD) -> str:
    """The gold above in one of the formats `score --gold` reads."""
    lines = []
    for k, (sure, poss) in enumerate(gold):
        links = [(i, j, True) for i, j in sorted(sure)] + [(i, j, False) for i, j in sorted(poss)]
        if fmt.startswith("pharaoh"):  # pharaoh0, pharaoh1, pharaoh1? ('?' for possible)
            b, p = int(fmt[7]), fmt[8:] or "p"
            lines.append(" ".join(f"{i + b}{'-' if s else p}{j + b}" for i, j, s in links))
        elif fmt.startswith("sp"):
            b = int(fmt[2])
            lines += [f"{'S' if s else 'P'} {i + b} {j + b}" for i, j, s in links] + [""]
        else:  # naacl0, naacl1
            b = int(fmt[5])
            lines += [f"{k + 1} {i + b} {j + b} {'S' if s else 'P'}" for i, j, s in links]
    return "\n".join(lines) + "\n"


@pytest.fixture()
def data(tmp_path) -> dict[str, Path]:
    paths = {"src": tmp_path / "src.txt", "tgt": tmp_path / "tgt.txt", "pairs": tmp_path / "pairs.txt",
             "gold": tmp_path / "gold.wa"}
    paths["src"].write_text("\n".join(SRC) + "\n", encoding="utf-8")
    paths["tgt"].write_text("\n".join(TGT) + "\n", encoding="utf-8")
    paths["pairs"].write_text("".join(f"{s}   |||  {t}\n" for s, t in zip(SRC, TGT)), encoding="utf-8")
    paths["gold"].write_text(gold_text("pharaoh0"), encoding="utf-8")
    return paths


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv] + ["--no-progress"] * (argv[0] == "score"))
    out, err = capsys.readouterr()
    return rc, out, err


def parse_links(text: str) -> Links:
    return {tuple(map(int, tok.split("-"))) for tok in text.split()}


def counts(pred: Links, sure: Links, possible_only: Links) -> tuple[int, int, int, int]:
    poss = sure | possible_only
    return len(pred), len(sure), len(pred & sure), len(pred & poss)


def scores(c) -> dict[str, float]:
    a, s, a_s, a_p = c
    p = a_p / a if a else 1.0
    r = a_s / s if s else 1.0
    return {"precision": p, "recall": r, "aer": 1 - (a_s + a_p) / (a + s), "f1": 2 * p * r / (p + r) if p + r else 0.0}


def corpus(preds: list[Links], gold=GOLD, skip=()) -> dict[str, float]:
    total = [0, 0, 0, 0]
    for k, (pred, (sure, poss)) in enumerate(zip(preds, gold)):
        if k not in skip:
            total = [x + y for x, y in zip(total, counts(pred, sure, poss))]
    return scores(total)


def api_links(bundle, layer=LAYER, head="mean", targets=TGT) -> list[Links]:
    """The Python API's alignment of the same sentences: what every CLI row must say."""
    return [align_record(rec, "shift-att", layer, head) for rec in extract(bundle, SRC, targets)]


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------------------------------- score

@pytest.mark.parametrize("fmt", ["pharaoh0", "pharaoh1", "pharaoh1?", "sp0", "sp1", "naacl0", "naacl1"])
def test_every_gold_format_gives_the_independent_aer(capsys, tmp_path, data, model_dir, bundle, fmt):
    data["gold"].write_text(gold_text(fmt), encoding="utf-8")
    summ = tmp_path / "summary.json"
    rc, out, _ = run(capsys, "score", "--model", model_dir, "--src", data["src"], "--tgt", data["tgt"],
                     "--gold", data["gold"], "--layer", LAYER, "--summary-json", summ)
    assert rc == 0
    result = json.loads(summ.read_text(encoding="utf-8"))
    expected = corpus(api_links(bundle))
    for key in ("aer", "precision", "recall", "f1"):
        assert result[key] == pytest.approx(expected[key], abs=1e-12), key
        assert 0.0 <= result[key] <= 1.0  # fractions, not percent
    assert result["sentences"] == result["scored_sentences"] == N
    base = int(fmt[-1] if fmt[-1].isdigit() else fmt[-2])
    assert f"indices {base}-based (detected" in out  # the base was not given: it is detected and said so
    assert f"base:{base}(detected)" in result["signature"]
    assert f"{'AER':>12} {100 * expected['aer']:.2f}" in out  # the printed table, in percent


def test_gold_base_given_is_obeyed_and_stated(capsys, tmp_path, data, model_dir):
    data["gold"].write_text(gold_text("pharaoh1"), encoding="utf-8")
    common = ["score", "--model", model_dir, "--src", data["src"], "--tgt", data["tgt"], "--gold", data["gold"]]
    rc, given, _ = run(capsys, *common, "--gold-base", "1", "--summary-json", tmp_path / "given.json")
    assert rc == 0
    assert "indices 1-based (given)" in given and "base:1(given)" in given
    rc, detected, _ = run(capsys, *common, "--summary-json", tmp_path / "detected.json")
    assert rc == 0 and "base:1(detected)" in detected
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("given", "detected"))
    assert a["aer"] == b["aer"] and a["signature"] != b["signature"]
    # Told 0-based, the same file has links one past the end of a sentence: an error, not a silent shift.
    rc, _, err = run(capsys, *common, "--gold-base", "0")
    assert rc != 0
    assert re.search(rf"{re.escape(str(data['gold']))}:\d+: link \d+-\d+: (source|target) index \d+ is past the end", err)


def test_pairs_file_and_parallel_files_give_the_same_rows(capsys, tmp_path, data, model_dir):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert run(capsys, "score", "--model", model_dir, "--src", data["src"], "--tgt", data["tgt"],
               "--gold", data["gold"], "--out", a)[0] == 0
    assert run(capsys, "score", "--model", model_dir, "--pairs", data["pairs"], "--gold", data["gold"], "--out", b)[0] == 0
    assert read_rows(a) == read_rows(b)
    assert [r["index"] for r in read_rows(a)] == list(range(N))


def test_rows_hold_words_links_gold_and_sentence_scores(capsys, tmp_path, data, model_dir, bundle):
    rows_path = tmp_path / "rows.jsonl"
    rc, out, _ = run(capsys, "score", "--model", model_dir, "--pairs", data["pairs"], "--gold", data["gold"],
                     "--layer", LAYER, "--out", rows_path)
    assert rc == 0
    rows = read_rows(rows_path)
    expected_links = api_links(bundle)
    assert len({frozenset(x) for x in expected_links}) > 1  # the check below can tell sentences apart
    for k, row in enumerate(rows):
        assert row["index"] == k and row["line"] == k + 1
        assert row["source_words"] == SRC[k].split() and row["target_words"] == TGT[k].split()
        assert row["translated"] is False
        links = parse_links(row["links"])
        assert links == expected_links[k]
        sure, poss = GOLD[k]
        gold_tokens = set(row["gold"].split())
        assert gold_tokens == {f"{i}-{j}" for i, j in sure} | {f"{i}p{j}" for i, j in poss}
        expected = scores(counts(links, sure, poss))
        for key in ("precision", "recall", "aer"):
            assert row[key] == pytest.approx(expected[key], abs=1e-12)
    # The printed corpus AER is the one recomputed from the rows' own links and gold.
    from_rows = corpus([parse_links(r["links"]) for r in rows],
                       [({tuple(map(int, t.split("-"))) for t in r["gold"].split() if "-" in t},
                         {tuple(map(int, t.split("p"))) for t in r["gold"].split() if "p" in t}) for r in rows])
    printed = float(re.search(r"^\s+AER (\S+)$", out, re.M).group(1))
    assert printed == pytest.approx(100 * from_rows["aer"], abs=0.006)


def test_alignments_out_reads_back_as_pharaoh(capsys, tmp_path, data, model_dir):
    rows_path, ali = tmp_path / "rows.jsonl", tmp_path / "pred.wa"
    assert run(capsys, "score", "--model", model_dir, "--src", data["src"], "--tgt", data["tgt"],
               "--gold", data["gold"], "--out", rows_path, "--alignments-out", ali)[0] == 0
    lines = ali.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == N  # one line per sentence, newline-terminated
    lengths = [(len(s.split()), len(t.split())) for s, t in zip(SRC, TGT)]
    back = read_gold(ali, base=0, fmt="pharaoh", sentences=lengths)
    assert [set(a.sure) for a in back] == [parse_links(r["links"]) for r in read_rows(rows_path)]


def test_per_head_grid_matches_the_api(capsys, tmp_path, data, model_dir, bundle):
    summ = tmp_path / "summary.json"
    rc, out, _ = run(capsys, "score", "--model", model_dir, "--src", data["src"], "--tgt", data["tgt"],
                     "--gold", data["gold"], "--per-head", "--layer", LAYER, "--summary-json", summ)
    assert rc == 0
    result = json.loads(summ.read_text(encoding="utf-8"))
    cfg = bundle.model.config
    assert len(result["per_head"]) == cfg.decoder_layers
    assert all(len(row) == cfg.decoder_attention_heads for row in result["per_head"])
    assert len(result["per_layer_mean"]) == cfg.decoder_layers
    recs = extract(bundle, SRC, TGT)
    for l in range(cfg.decoder_layers):
        for h in list(range(cfg.decoder_attention_heads)) + ["mean"]:
            expected = corpus([align_record(r, "shift-att", l, h) for r in recs])["aer"]
            got = result["per_layer_mean"][l] if h == "mean" else result["per_head"][l][h]
            assert got == pytest.approx(expected, abs=1e-12), (l, h)
    assert result["per_layer_mean"][LAYER] == pytest.approx(result["aer"], abs=1e-12)
    assert len(set(x for row in result["per_head"] for x in row)) > 1  # the grid is not one repeated value
    assert "AER per layer" in out


def test_without_target_the_model_translates(capsys, tmp_path, data, model_dir, bundle):
    rows_path, ali, summ = tmp_path / "rows.jsonl", tmp_path / "pred.wa", tmp_path / "s.json"
    rc, _, _ = run(capsys, "score", "--model", model_dir, "--src", data["src"], "--out", rows_path,
                   "--alignments-out", ali, "--summary-json", summ)
    assert rc == 0
    rows = read_rows(rows_path)
    hyps = translate(bundle, SRC)
    assert [r["target_words"] for r in rows] == [[w for w in h.split(" ") if w] for h in hyps]
    assert all(r["translated"] is True for r in rows)
    assert all("aer" not in r and "gold" not in r for r in rows)
    assert len(ali.read_text(encoding="utf-8").split("\n")) - 1 == N
    result = json.loads(summ.read_text(encoding="utf-8"))
    assert result["sentences"] == N and "aer" not in result and result["gold"] is None
    # A gold alignment needs a target to index: asking for one without --tgt is an input error.
    rc, _, err = run(capsys, "score", "--model", model_dir, "--src", data["src"], "--gold", data["gold"])
    assert rc != 0 and str(data["gold"]) in err and "--tgt" in err


def test_without_gold_rows_and_alignments_but_no_aer(capsys, tmp_path, data, model_dir, bundle):
    rows_path, ali, summ = tmp_path / "rows.jsonl", tmp_path / "pred.wa", tmp_path / "s.json"
    rc, out, _ = run(capsys, "score", "--model", model_dir, "--src", data["src"], "--tgt", data["tgt"],
                     "--layer", LAYER, "--out", rows_path, "--alignments-out", ali, "--summary-json", summ)
    assert rc == 0
    rows = read_rows(rows_path)
    assert [parse_links(r["links"]) for r in rows] == api_links(bundle)
    assert all(not {"gold", "aer", "precision", "recall", "counts"} & r.keys() for r in rows)
    result = json.loads(summ.read_text(encoding="utf-8"))
    assert not {"aer", "precision", "recall", "f1"} & result.keys()
    assert result["links"] == sum(len(parse_links(r["links"])) for r in rows)
    assert "AER" not in out
    assert [parse_links(x) for x in ali.read_text(encoding="utf-8").splitlines()] == api_links(bundle)


# -------------------------------------------------------------------------------------- bad input

def _expect_error(capsys, argv, *fragments) -> str:
    rc, _, err = run(capsys, *argv)
    assert rc != 0
    for frag in fragments:
        assert frag in err, (frag, err)
    return err


def test_mismatched_line_counts_name_the_file_and_keep_finished_rows(capsys, tmp_path, data, model_dir):
    data["tgt"].write_text("\n".join(TGT[:-1]) + "\n", encoding="utf-8")
    rows_path = tmp_path / "rows.jsonl"
    base = ["score", "--model", model_dir, "--src", data["src"], "--tgt", data["tgt"]]
    # With a gold file the pairs are counted before anything runs.
    _expect_error(capsys, base + ["--gold", data["gold"]], f"{data['src']}:{N}:", "same number of lines")
    # Without one the error comes mid-stream: the chunks scored before it stay in --out ...
    _expect_error(capsys, base + ["--out", rows_path, "--chunk-size", "3"], f"{data['src']}:{N}:")
    assert [r["index"] for r in read_rows(rows_path)] == list(range(N - 1))
    # ... and once the file is fixed, --resume adds only what is missing.
    data["tgt"].write_text("\n".join(TGT) + "\n", encoding="utf-8")
    assert run(capsys, *base, "--out", rows_path, "--resume")[0] == 0
    assert [r["index"] for r in read_rows(rows_path)] == list(range(N))


def test_gold_link_out_of_range(capsys, data, model_dir):
    lines = gold_text("pharaoh0").splitlines()
    lines[2] += " 40-1"
    data["gold"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    _expect_error(capsys, ["score", "--model", model_dir, "--pairs", data["pairs"], "--gold", data["gold"]],
                  f"{data['gold']}:3: link 40-1: source index 40 is past the end", "expected")


def test_gold_malformed_token_and_skip_invalid(capsys, tmp_path, data, model_dir, bundle):
    lines = gold_text("pharaoh0").splitlines()
    lines[3] += " 1x2"
    data["gold"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    argv = ["score", "--model", model_dir, "--pairs", data["pairs"], "--gold", data["gold"], "--layer", LAYER]
    _expect_error(capsys, argv, f"{data['gold']}:4: malformed link '1x2'", "expected")
    summ, rows_path = tmp_path / "s.json", tmp_path / "rows.jsonl"
    rc, _, err = run(capsys, *argv, "--skip-invalid", "--summary-json", summ, "--out", rows_path)
    assert rc == 0
    assert re.search(r"warning: skipped 1 line\b", err) and f"{data['gold']}:4" in err
    result = json.loads(summ.read_text(encoding="utf-8"))
    assert result["sentences"] == N and result["scored_sentences"] == N - 1 and result["gold_skipped"] == 1
    assert result["aer"] == pytest.approx(corpus(api_links(bundle), skip={3})["aer"], abs=1e-12)
    rows = read_rows(rows_path)
    assert "aer" not in rows[3] and all("aer" in r for k, r in enumerate(rows) if k != 3)


def test_empty_line_and_undecodable_bytes(capsys, data, model_dir):
    src = SRC.copy()
    src[4] = ""
    data["src"].write_text("\n".join(src) + "\n", encoding="utf-8")
    argv = ["score", "--model", model_dir, "--src", data["src"], "--tgt", data["tgt"]]
    _expect_error(capsys, argv, f"{data['src']}:5: empty source sentence")
    data["src"].write_text("\n".join(SRC) + "\n", encoding="utf-8")
    data["tgt"].write_bytes(("\n".join(TGT[:1]) + "\n").encode() + b"The \xff dog .\n"
                            + ("\n".join(TGT[2:]) + "\n").encode())
    _expect_error(capsys, argv, f"{data['tgt']}:2: bytes b'\\xff'", "utf-8")


def test_overlong_sentence_names_its_line(capsys, data, model_dir, bundle):
    limit = bundle.model.config.max_position_embeddings
    src = SRC.copy()
    src[6] = " ".join(["Hund"] * limit)  # every word is at least one token, and </s> comes on top
    data["src"].write_text("\n".join(src) + "\n", encoding="utf-8")
    # Line 7 sits third in the second chunk: the error must name the input line, not a position in a batch.
    _expect_error(capsys, ["score", "--model", model_dir, "--src", data["src"], "--tgt", data["tgt"],
                           "--chunk-size", "4"], f"{data['src']}:7: the source has", f"{limit} positions")
    # a target too long for the model: the error names the TARGET file, not the source
    data["src"].write_text("\n".join(SRC) + "\n", encoding="utf-8")
    tgt = TGT.copy()
    tgt[2] = " ".join(["dog"] * limit)
    data["tgt"].write_text("\n".join(tgt) + "\n", encoding="utf-8")
    err = _expect_error(capsys, ["score", "--model", model_dir, "--src", data["src"], "--tgt", data["tgt"]],
                        f"{data['tgt']}:3: the target has", f"{limit} positions")
    assert str(data["src"]) + ":" not in err


def test_missing_and_decoder_only_models(capsys, tmp_path, data):
    missing = tmp_path / "no-such-model"
    _expect_error(capsys, ["score", "--model", missing, "--src", data["src"]], str(missing), "could not be loaded")
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=64, n_positions=16, bos_token_id=0,
                               eos_token_id=0)).save_pretrained(gpt2)
    _expect_error(capsys, ["score", "--model", gpt2, "--src", data["src"]], str(gpt2), "encoder-decoder",
                  "decoder-only")


def test_argument_errors(capsys, data, model_dir):
    _expect_error(capsys, ["score", "--model", model_dir, "--src", data["src"], "--resume"], "--resume", "--out")
    with pytest.raises(SystemExit) as exc:
        main(["score", "--model", str(model_dir), "--src", str(data["src"]), "--batch-size", "0"])
    assert exc.value.code != 0 and "positive integer" in capsys.readouterr().err


def test_shared_gold_set_reads_with_bom_and_skips_its_bad_link(capsys, tmp_path, data_dir):
    """Bicici de-en: a BOM in test.de, and sentence 63 links past the end of its English sentence."""
    from transformers import MarianConfig, MarianMTModel

    tok = tm.tokenizer("marian")  # the Europarl sentences are long in this tiny vocabulary: give it room
    size = dict(tm.SIZE, max_position_embeddings=512)
    cfg = MarianConfig(vocab_size=tm.vocab_size(tok), decoder_vocab_size=tm.vocab_size(tok), pad_token_id=tok.pad_token_id,
                       eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id, **size)
    folder = tmp_path / "marian512"
    MarianMTModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    d = data_dir / "gold" / "bicici-deen-gold"
    argv = ["score", "--model", folder, "--src", d / "test.de", "--tgt", d / "test.en", "--batch-size", "32"]
    _expect_error(capsys, argv + ["--gold", d / "de-en.wa"], f"{d / 'de-en.wa'}:63:", "target index 16 is past the end")
    results = []
    for gold in ("de-en.wa", "de-en.ref.wa"):  # Pharaoh and 'sentno i j S': the same links
        summ, rows = tmp_path / f"{gold}.json", tmp_path / f"{gold}.jsonl"
        rc, _, err = run(capsys, *argv, "--gold", d / gold, "--skip-invalid", "--summary-json", summ, "--out", rows)
        assert rc == 0 and "skipped 1" in err
        results.append(json.loads(summ.read_text(encoding="utf-8")))
        first = read_rows(rows)[0]
        assert not first["source_words"][0].startswith("\ufeff")  # the BOM is not part of the first word
    assert results[0]["sentences"] == 100 and results[0]["scored_sentences"] == 99
    assert results[0]["aer"] == results[1]["aer"]


# ------------------------------------------------------------------------------------------ inspect

def test_inspect_json_with_and_without_target(capsys, model_dir, bundle):
    src, tgt = SRC[2], TGT[2]
    rc, out, _ = run(capsys, "inspect", "--model", model_dir, "--source", src, "--target", tgt, "--layer", LAYER, "--json")
    assert rc == 0
    got = json.loads(out)
    rec = extract(bundle, [src], [tgt])[0]
    assert got["translated"] is False
    assert got["source_words"] == src.split() and got["target_words"] == tgt.split()
    assert got["source_tokens"] == rec.src_tokens and got["target_tokens"] == rec.label_tokens
    assert len(got["source_token_words"]) == len(got["source_tokens"])
    assert {tuple(x) for x in got["links"]} == align_record(rec, "shift-att", LAYER, "mean")
    att = got["word_attention"]
    assert len(att) == len(tgt.split()) and all(len(row) == len(src.split()) for row in att)
    assert got["layer"] == LAYER and got["method"] == "shift-att"

    rc, out, _ = run(capsys, "inspect", "--model", model_dir, "--source", src, "--json")
    assert rc == 0
    free = json.loads(out)
    assert free["translated"] is True and free["target_words"] == [w for w in translate(bundle, [src])[0].split(" ") if w]


def test_inspect_table(capsys, model_dir, bundle):
    src, tgt = SRC[1], TGT[1]
    rc, out, _ = run(capsys, "inspect", "--model", model_dir, "--source", src, "--target", tgt, "--layer", LAYER)
    assert rc == 0
    rec = extract(bundle, [src], [tgt])[0]
    links = align_record(rec, "shift-att", LAYER, "mean")
    assert "target (forced): " + tgt in out
    assert "links (source-target, 0-based): " + " ".join(f"{i}-{j}" for i, j in sorted(links)) in out
    table = out.splitlines()[-len(tgt.split()):]
    assert [row.split()[0] for row in table] == tgt.split()
    assert sum(row.count("*") for row in table) == len(links)  # every link is starred, nothing else


# ------------------------------------------------------------------------------------ console script

def test_console_script(tmp_path, data, model_dir, capsys):
    exe = shutil.which("aligndebug", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    assert exe is not None, "the aligndebug console script is not installed (pip install -e .)"
    summ = tmp_path / "script.json"
    proc = subprocess.run([exe, "score", "--model", str(model_dir), "--pairs", str(data["pairs"]), "--gold",
                           str(data["gold"]), "--summary-json", str(summ), "--no-progress"],
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert run(capsys, "score", "--model", model_dir, "--pairs", data["pairs"], "--gold", data["gold"],
               "--summary-json", tmp_path / "inproc.json")[0] == 0
    assert json.loads(summ.read_text()) == json.loads((tmp_path / "inproc.json").read_text())
    assert "signature: model:" in proc.stdout
    bad = subprocess.run([exe, "score", "--model", str(model_dir), "--src", str(tmp_path / "missing.txt")],
                         capture_output=True, text=True, timeout=300, env=ENV)
    assert bad.returncode != 0 and "missing.txt" in bad.stderr and "cannot open" in bad.stderr


def test_compare_scores_rollout_and_ig_alignments_with_the_same_machinery(capsys, tmp_path, data, model_dir, bundle):
    """--compare: IG and rollout links per row, scored against gold exactly like attention's, plus agreement."""
    from aligndebug.agreement import ig_links, record_agreement, rollout_links, sentence_agreement
    from aligndebug.attribution import ig_for_record

    data["gold"].write_text(gold_text("pharaoh0"), encoding="utf-8")
    summ, rows_path = tmp_path / "summary.json", tmp_path / "rows.jsonl"
    rc, out, _ = run(capsys, "score", "--model", model_dir, "--src", data["src"], "--tgt", data["tgt"],
                     "--gold", data["gold"], "--gold-base", "0", "--layer", LAYER, "--compare", "--ig-steps", "4",
                     "--summary-json", summ, "--out", rows_path)
    assert rc == 0 and "rollout" in out and "ig" in out
    rows, result = read_rows(rows_path), json.loads(summ.read_text(encoding="utf-8"))
    recs = extract(bundle, SRC, TGT)
    igs = [ig_for_record(bundle, rec, steps=4, rows=rec.target_positions) for rec in recs]
    for name, links in (("rollout", [rollout_links(rec) for rec in recs]),
                        ("ig", [ig_links(rec, ig) for rec, ig in zip(recs, igs)])):
        assert [parse_links(r[f"{name}_links"]) for r in rows] == links
        expected = corpus(links)
        for key in ("aer", "precision", "recall", "f1"):
            assert result["compare"][name][key] == pytest.approx(expected[key], abs=1e-12), (name, key)
    rhos = [sentence_agreement(record_agreement(rec, ig, "cross", int(LAYER))) for rec, ig in zip(recs, igs)]
    defined = [r for r in rhos if r == r]
    assert result["compare"]["agreement_rho_mean"] == pytest.approx(sum(defined) / len(defined), abs=1e-9)
