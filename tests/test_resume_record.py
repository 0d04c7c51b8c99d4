"""--resume cannot be fooled: a rows file is resumed only by the run that wrote it (recorded in
``<out>.run.json``), it is checked before anything is written to it, and a file it does not recognise is
left byte for byte as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tiny_models as tm
from aligndebug.cli import main
from aligndebug.errors import InputError
from aligndebug.store import claim_run, run_record_path


@pytest.fixture()
def inputs(tmp_path) -> dict[str, Path]:
    files = {}
    for name, lines in (("src", tm.DE[:5]), ("tgt", tm.EN[:5]), ("src3", tm.DE[5:8]), ("tgt3", tm.EN[5:8]),
                        ("other", tm.DE[1:6])):
        files[name] = tmp_path / f"{name}.txt"
        files[name].write_text("".join(s + "\n" for s in lines), encoding="utf-8")
    return files


def score(capsys, model_dir, src, tgt, out, *extra) -> tuple[int, str]:
    rc = main(["score", "--model", str(model_dir), "--src", str(src), "--tgt", str(tgt), "--out", str(out),
               "--no-progress", *map(str, extra), *(() if "--layer" in extra else ("--layer", "0"))])
    return rc, capsys.readouterr().err


def test_a_finished_run_resumes_and_records_itself(capsys, model_dir, inputs, tmp_path):
    out = tmp_path / "rows.jsonl"
    assert score(capsys, model_dir, inputs["src"], inputs["tgt"], out)[0] == 0
    record = json.loads(run_record_path(out).read_text(encoding="utf-8"))
    assert record["text"]["src"]["bytes"] == inputs["src"].stat().st_size and record["method"]
    before = out.read_bytes()
    assert score(capsys, model_dir, inputs["src"], inputs["tgt"], out, "--resume")[0] == 0
    assert out.read_bytes() == before  # nothing left to do, nothing rewritten


@pytest.mark.parametrize("src, tgt, settings, says", [
    ("src3", "tgt3", ["--layer", "0"], "row index 3 is past the 3 sentences of the input"),  # a shorter input
    ("other", "tgt", ["--layer", "0"], "row index 0 holds another sentence than input sentence 1"),
    ("src", "tgt", ["--layer", "0", "--method", "naive"], "written by another run; method: 'shift-att' then"),
    ("src", "tgt", ["--layer", "1"], "written by another run; layer: 0 then, 1 now"),
])
def test_another_run_is_refused_and_the_file_is_untouched(capsys, model_dir, inputs, tmp_path, src, tgt, settings,
                                                          says):
    out = tmp_path / "rows.jsonl"
    assert score(capsys, model_dir, inputs["src"], inputs["tgt"], out)[0] == 0
    before = out.read_bytes()
    rc = main(["score", "--model", str(model_dir), "--src", str(inputs[src]), "--tgt", str(inputs[tgt]),
               "--out", str(out), "--no-progress", "--resume", *settings])
    err = capsys.readouterr().err
    assert rc == 2 and says in err, err
    assert out.read_bytes() == before


def test_a_fixed_input_line_keeps_the_rows_already_done(capsys, model_dir, inputs, tmp_path):
    """Row by row: a run stopped by a bad last line resumes once that line is fixed, keeping its rows."""
    out = tmp_path / "rows.jsonl"
    assert score(capsys, model_dir, inputs["src"], inputs["tgt"], out)[0] == 0
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[:3]), encoding="utf-8")
    inputs["tgt"].write_text("".join(t + "\n" for t in tm.EN[:4]) + "A fixed last line .\n", encoding="utf-8")
    assert score(capsys, model_dir, inputs["src"], inputs["tgt"], out, "--resume")[0] == 0
    assert out.read_text(encoding="utf-8").splitlines(keepends=True)[:3] == lines[:3]


def test_a_foreign_file_is_never_written_to(capsys, model_dir, inputs, tmp_path):
    foreign = tmp_path / "notes.txt"
    foreign.write_bytes(b"my notes\nfirst line\nlast line without newline")  # the kill-cut rule would eat this
    before = foreign.read_bytes()
    rc, err = score(capsys, model_dir, inputs["src"], inputs["tgt"], foreign, "--resume")
    assert rc == 2 and "no record of the run" in err
    assert foreign.read_bytes() == before and not run_record_path(foreign).exists()


def test_corrupt_rows_name_file_and_line_and_a_torn_last_line_is_cut(capsys, model_dir, inputs, tmp_path):
    out = tmp_path / "rows.jsonl"
    assert score(capsys, model_dir, inputs["src"], inputs["tgt"], out)[0] == 0
    good = out.read_text(encoding="utf-8").splitlines(keepends=True)
    for lines, says in ((good[:2] + ["{not json\n"] + good[2:], f"{out}:3: not a JSON row"),
                        (good[:1] + ['{"links": ""}\n'] + good[1:], f"{out}:2: a row without an integer 'index'"),
                        (good + ['{"index": 7}\n'], f"{out}:6: row index 7 is past the 5 sentences")):
        out.write_text("".join(lines), encoding="utf-8")
        rc, err = score(capsys, model_dir, inputs["src"], inputs["tgt"], out, "--resume")
        assert rc == 2 and says in err, err
        assert out.read_text(encoding="utf-8") == "".join(lines)
    out.write_text("".join(good[:3]) + good[3][:20], encoding="utf-8")  # killed mid-write
    assert score(capsys, model_dir, inputs["src"], inputs["tgt"], out, "--resume")[0] == 0
    assert sorted(json.loads(x)["index"] for x in out.read_text(encoding="utf-8").splitlines()) == list(range(5))


def test_a_run_begun_on_a_gpu_is_not_resumed_on_the_cpu(capsys, model_dir, inputs, tmp_path):
    """A GPU runs the model in half precision: its rows differ in the last digits, so the record names the device
    (a CPU run's record has no such key, as before it existed) and a resume elsewhere is refused naming it."""
    out = tmp_path / "rows.jsonl"
    assert score(capsys, model_dir, inputs["src"], inputs["tgt"], out)[0] == 0
    record = json.loads(run_record_path(out).read_text(encoding="utf-8"))
    assert "device" not in record
    run_record_path(out).write_text(json.dumps({**record, "device": "cuda"}), encoding="utf-8")
    before = out.read_bytes()
    rc, err = score(capsys, model_dir, inputs["src"], inputs["tgt"], out, "--resume")
    assert rc == 2 and "device: 'cuda' then, None now" in err, err
    assert out.read_bytes() == before


def test_claim_run_lists_what_differs(tmp_path):
    out = tmp_path / "rows.jsonl"
    claim_run(out, {"model": "a", "layer": 1}, resume=False, key="index")
    out.write_text('{"index": 0}\n', encoding="utf-8")
    with pytest.raises(InputError, match="layer: 1 then, 2 now; model: 'a' then, 'b' now"):
        claim_run(out, {"model": "b", "layer": 2}, resume=True, key="index")
    claim_run(out, {"model": "a", "layer": 1}, resume=True, key="index", n_items=1)


def test_triage_partial_of_another_run_is_refused(capsys, model_dir, inputs, tmp_path):
    out = tmp_path / "triage.jsonl"
    partial = Path(str(out) + ".partial")
    common = ["triage", "--model", str(model_dir), "--src", str(inputs["src"]), "--tgt", str(inputs["tgt"]),
              "--out", str(out), "--no-progress"]
    # a partial file left by a run with other settings (here: its record says layer 0)
    partial.write_text('{"id": 0, "source": "x"}\n', encoding="utf-8")
    claim_run(partial, {"command": "triage", "layer": 0}, resume=False, key="id")
    before = partial.read_bytes()
    rc = main(common + ["--layer", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "written by another run" in err and partial.read_bytes() == before
    partial.unlink()
    run_record_path(partial).unlink()
    assert main(common + ["--layer", "1"]) == 0
    capsys.readouterr()
    assert out.exists() and not partial.exists() and not run_record_path(partial).exists()


def test_skip_invalid_keeps_going_past_bad_sentences_and_lists_them(capsys, model_dir, inputs, tmp_path, bundle):
    """A sentence too long for the model and an empty one: without --skip-invalid the run stops naming the
    line; with it every other sentence is scored and the two are listed with file, line and reason."""
    long = " ".join(["Hund"] * (bundle.max_positions + 5))
    src = tmp_path / "bad.de"
    src.write_text(f"{tm.DE[0]}\n{long}\n\n{tm.DE[3]}\n", encoding="utf-8")
    rc = main(["score", "--model", str(model_dir), "--src", str(src), "--no-progress", "--layer", "0"])
    assert rc == 2 and f"{src}:3: empty source sentence" in capsys.readouterr().err  # the reader finds it first
    out, summ = tmp_path / "rows.jsonl", tmp_path / "summary.json"
    rc = main(["score", "--model", str(model_dir), "--src", str(src), "--no-progress", "--layer", "0",
               "--skip-invalid", "--out", str(out), "--summary-json", str(summ)])
    printed = capsys.readouterr().out
    assert rc == 0 and "skipped" in printed and "2 sentence(s)" in printed
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2, 3] and [bool(r.get("skipped")) for r in rows] == [0, 1, 1, 0]
    skipped = json.loads(summ.read_text(encoding="utf-8"))["skipped_sentences"]
    assert [(s["index"], s["line"], s["skipped"], s["file"]) for s in skipped] == [
        (1, 2, "too_long_for_model", str(src)), (2, 3, "empty", str(src))]


def test_skip_invalid_skips_a_line_it_cannot_decode(capsys, model_dir, inputs, tmp_path):
    """Bytes that cannot be decoded stop `score` naming the file they are in (here the target file); with
    --skip-invalid the pair is skipped and listed with that file, its line and the reason."""
    src, tgt = tmp_path / "s.de", tmp_path / "t.en"
    src.write_text("".join(d + "\n" for d in tm.DE[:3]), encoding="utf-8")
    tgt.write_bytes(b"".join((e.encode() if k != 1 else e.encode().replace(b" ", b" \xff ", 1)) + b"\n"
                             for k, e in enumerate(tm.EN[:3])))
    common = ["score", "--model", str(model_dir), "--src", str(src), "--tgt", str(tgt), "--no-progress", "--layer", "0"]
    assert main(common) == 2 and f"{tgt}:2: bytes b'\\xff'" in capsys.readouterr().err
    out, summ = tmp_path / "rows.jsonl", tmp_path / "summary.json"
    assert main(common + ["--skip-invalid", "--out", str(out), "--summary-json", str(summ)]) == 0
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r.get("skipped") for r in rows] == [None, "undecodable", None] and rows[0]["links"]
    skipped = json.loads(summ.read_text(encoding="utf-8"))["skipped_sentences"]
    assert [(s["index"], s["line"], s["skipped"], s["file"]) for s in skipped] == [(1, 2, "undecodable", str(tgt))]


def test_progress_moves_a_sentence_at_a_time_within_a_chunk(bundle):
    """A 256-sentence chunk used to report once at its end; now every sentence reports when its row is built."""
    from aligndebug.pairs import SentencePair
    from aligndebug.rows import ScoreOptions
    from aligndebug.runner import run_triage, score_stream

    pairs = [SentencePair(i, i + 1, s.split(), t.split()) for i, (s, t) in enumerate(zip(tm.DE[:5], tm.EN[:5]))]
    seen: list[int] = []
    score_stream(bundle, pairs, None, ScoreOptions(layer=0, chunk_size=256, batch_size=2), on_progress=seen.append)
    assert seen == [1] * 5
    seen.clear()
    run_triage(bundle, tm.DE[:5], tm.EN[:5], layer=0, chunk_size=256, combine="fisher", on_progress=seen.append)
    assert seen == [1] * 5


def test_triage_with_an_aligner_records_it_and_refuses_a_calibration_without(capsys, model_dir, inputs, tmp_path,
                                                                              bundle):
    """`triage --aligner DIR` adds the aligner's signals to every row and names the aligner in the calibration and
    the run record; that calibration is refused by a run without the aligner, and an aligner for another model
    is refused before any work."""
    from aligndebug.learned import aligner_id, load_aligner
    from aligndebug.learned_train import train_aligner
    from aligndebug.runner import calibration_path

    de, en = [s.split() for s in tm.DE[:6]], [s.split() for s in tm.EN[:6]]
    train_aligner(bundle, de, en, [{(0, 0)}] * 6, tmp_path / "al", epochs=1, batch_size=4, progress=False,
                  log=lambda m: None)
    out = tmp_path / "triage.jsonl"
    common = ["triage", "--model", str(model_dir), "--src", str(inputs["src"]), "--tgt", str(inputs["tgt"]),
              "--no-progress", "--combine", "fisher"]
    assert main(common + ["--out", str(out), "--aligner", str(tmp_path / "al")]) == 0
    capsys.readouterr()
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert all(0 <= r["unaligned_target"] <= 1 and 0 <= r["unaligned_source"] <= 1 for r in rows)
    cal = json.loads(calibration_path(out).read_text(encoding="utf-8"))
    assert cal["settings"]["aligner"] == aligner_id(load_aligner(tmp_path / "al")) is not None
    rc = main(common + ["--out", str(tmp_path / "again.jsonl"), "--aligner", "none",
                        "--calibration", str(calibration_path(out))])
    assert rc == 2 and "aligner '" in capsys.readouterr().err
    train_aligner(tm.bundle("t5"), de, en, [{(0, 0)}] * 6, tmp_path / "t5al", epochs=1, batch_size=4,
                  progress=False, log=lambda m: None)
    rc = main(common + ["--out", str(tmp_path / "foreign.jsonl"), "--aligner", str(tmp_path / "t5al")])
    assert rc == 2 and "trained for model" in capsys.readouterr().err
    assert not (tmp_path / "foreign.jsonl").exists()
