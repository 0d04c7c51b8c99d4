"""A catalogue of bad command lines: every one ends with exit code 2 and one line that says what is wrong,
before any work is done, and never with a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tiny_models as tm
from aligndebug.cli import build_parser, main


@pytest.fixture()
def files(tmp_path) -> dict[str, Path]:
    out = {"src": tmp_path / "src.txt", "tgt": tmp_path / "tgt.txt", "gold": tmp_path / "gold.wa",
           "a_file": tmp_path / "plain.txt", "a_dir": tmp_path / "folder"}
    out["src"].write_text("".join(s + "\n" for s in tm.DE[:3]), encoding="utf-8")
    out["tgt"].write_text("".join(t + "\n" for t in tm.EN[:3]), encoding="utf-8")
    out["gold"].write_text("0-0\n0-0\n0-0\n", encoding="utf-8")
    out["a_file"].write_text("not a folder\n", encoding="utf-8")
    out["a_dir"].mkdir()
    return out


SCORE = ["score", "--src", "{src}", "--tgt", "{tgt}", "--gold", "{gold}", "--no-progress"]
TRIAGE = ["triage", "--src", "{src}", "--out", "{a_dir}/t.jsonl", "--no-progress"]
INSPECT = ["inspect", "--source", "Der Hund schläft ."]

# (case id, argv, a fragment the message must hold)
CASES = [
    ("score-beam-0", SCORE + ["--beam", "0"], "--beam: expected a positive integer"),
    ("score-beam-neg", SCORE + ["--beam", "-1"], "--beam: expected a positive integer"),
    ("score-beam-text", SCORE + ["--beam", "two"], "--beam: expected a positive integer"),
    ("score-threshold-2", SCORE + ["--threshold", "2"], "--threshold: expected a probability"),
    ("score-threshold-nan", SCORE + ["--threshold", "nan"], "--threshold: expected a probability"),
    ("score-threshold-neg", SCORE + ["--threshold", "-1"], "--threshold: expected a probability"),
    ("score-batch-0", SCORE + ["--batch-size", "0"], "--batch-size: expected a positive integer"),
    ("score-chunk-0", SCORE + ["--chunk-size", "0"], "--chunk-size: expected a positive integer"),
    ("score-ig-steps-0", SCORE + ["--ig-steps", "0"], "--ig-steps: expected a positive integer"),
    ("score-layer-text", SCORE + ["--layer", "top"], "--layer: expected 'mean'"),
    ("score-head-text", SCORE + ["--head", "1,x"], "--head: expected 'mean'"),
    ("score-layer-missing", SCORE + ["--layer", "7"], "--layer 7 does not exist: the model has 2 decoder layers"),
    ("score-layer-list-missing", SCORE + ["--layer", "0,-3"], "--layer -3 does not exist"),
    ("score-method", SCORE + ["--method", "best"], "--method: invalid choice"),
    ("score-decode", SCORE + ["--decode", "best"], "--decode: invalid choice"),
    ("score-learned-per-head", SCORE + ["--method", "learned", "--per-head"],
     "--per-head is not available with --method learned"),
    ("score-learned-compare", SCORE + ["--method", "learned", "--compare"],
     "--compare is not available with --method learned"),
    ("score-learned-layer", SCORE + ["--method", "learned", "--layer", "0"],
     "--layer is not available with --method learned"),
    ("score-aligner-not-learned", SCORE + ["--method", "naive", "--aligner", "{a_dir}"],
     "--aligner is only read by --method learned"),
    ("score-aligner-missing", SCORE + ["--method", "learned", "--aligner", "{a_dir}"], "is not an aligner folder"),
    ("score-gold-base", SCORE + ["--gold-base", "2"], "--gold-base: invalid choice"),
    ("score-gold-format", SCORE + ["--gold-format", "xml"], "--gold-format: invalid choice"),
    ("score-out-dir", SCORE + ["--out", "{a_dir}"], "this output path is a folder"),
    ("score-summary-under-file", SCORE + ["--summary-json", "{a_file}/s.json"], "is not a folder"),
    ("score-alignments-dir", SCORE + ["--alignments-out", "{a_dir}"], "this output path is a folder"),
    ("score-resume-no-out", SCORE + ["--resume"], "--resume was given without --out"),
    ("score-no-input", ["score", "--no-progress"], "no input given"),
    ("score-missing-src", ["score", "--src", "{a_dir}/nope.txt", "--no-progress"], "nope.txt"),
    ("score-testset-unknown", ["score", "--testset", "nope", "--no-progress"], "unknown test set 'nope'"),
    ("score-ray-actors-0", SCORE + ["--ray-actors", "0"], "--ray-actors: expected a positive integer"),
    ("score-ray-gpus-neg", SCORE + ["--ray-gpus-per-actor", "-1"], "--ray-gpus-per-actor: expected a number >= 0"),
    ("score-unknown-option", SCORE + ["--bogus"], "unrecognized arguments: --bogus"),
    ("inspect-beam-0", INSPECT + ["--beam", "0"], "--beam: expected a positive integer"),
    ("inspect-threshold", INSPECT + ["--threshold", "1.5"], "--threshold: expected a probability"),
    ("inspect-decode", INSPECT + ["--decode", "max"], "--decode: invalid choice"),
    ("inspect-learned-layer", INSPECT + ["--method", "learned", "--layer", "1"],
     "--layer is not available with --method learned"),
    ("inspect-record-dir", INSPECT + ["--record", "{a_dir}"], "this output path is a folder"),
    ("inspect-layer-missing", INSPECT + ["--layer", "2"], "--layer 2 does not exist"),
    ("inspect-no-source", ["inspect"], "the following arguments are required: --source"),
    ("triage-top-0", TRIAGE + ["--top", "0"], "--top: expected a positive integer"),
    ("triage-percentile-100", TRIAGE + ["--percentile", "100"], "--percentile: expected a percentile"),
    ("triage-percentile-0", TRIAGE + ["--percentile", "0"], "--percentile: expected a percentile"),
    ("triage-beam-0", TRIAGE + ["--beam", "0"], "--beam: expected a positive integer"),
    ("triage-out-dir", ["triage", "--src", "{src}", "--out", "{a_dir}", "--no-progress"], "this output path is a folder"),
    ("triage-html-under-file", TRIAGE + ["--html", "{a_file}/r.html"], "is not a folder"),
    ("triage-layer-missing", TRIAGE + ["--layer", "5"], "--layer 5 does not exist"),
    ("triage-layer-list", TRIAGE + ["--layer", "0,1"], "lists of layers or heads are not supported"),
    ("triage-no-src", ["triage", "--out", "{a_dir}/t.jsonl"], "no source sentences given"),
    ("triage-calibration-missing", TRIAGE + ["--calibration", "{a_dir}/none.json"], "none.json"),
    ("datasets-echo-what", ["datasets", "--echo", "links", "bicici-deen"], "cannot echo 'links'"),
    ("datasets-echo-unknown", ["datasets", "--echo", "src", "nope"], "unknown test set 'nope'"),
    ("datasets-add-missing-file", ["datasets", "add", "x", "--src", "{a_dir}/nope.de"], "does not exist"),
    ("datasets-add-bad-name", ["datasets", "add", "a/b", "--src", "{src}"], "bad test-set name"),
    ("no-command", [], "the following arguments are required: command"),
]


@pytest.mark.parametrize("argv, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_command_line_exits_2_with_one_line(argv, fragment, files, model_dir, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNDEBUG_CACHE", str(tmp_path / "cache"))
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]
    if argv and argv[0] in ("score", "inspect", "triage"):
        argv += ["--model", str(model_dir)]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    out, err = capsys.readouterr()
    assert rc == 2
    assert "Traceback" not in err and out == ""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("aligndebug: warning:")]
    assert len(lines) == 1, err
    assert fragment in lines[0], lines[0]
    assert not (files["a_dir"] / "t.jsonl").exists()  # nothing was started


def test_every_subcommand_and_option_documents_itself():
    """Each subcommand has a description; every option has help text, shown with its default."""
    parser = build_parser()
    stack = [("aligndebug", parser)]
    seen = 0
    while stack:
        name, p = stack.pop()
        assert p.description, f"{name} has no description"
        for action in p._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):  # subcommands
                stack += [(f"{name} {k}", sub) for k, sub in action.choices.items()]
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"
            seen += 1
        text = p.format_help()
        assert "(default:" in text or name == "aligndebug", name
    assert seen > 60


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_refused_before_work(files, model_dir, capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc = main(["score", "--src", str(files["src"]), "--out", str(ro / "rows.jsonl"), "--model", str(model_dir),
                   "--no-progress"])
    finally:
        ro.chmod(0o700)
    assert rc == 2 and "permission denied" in capsys.readouterr().err


def test_every_checked_option_of_every_subcommand_refuses_a_bad_value(capsys):
    """Walks the parser: every option with a ranged number type or a fixed set of choices, in every
    subcommand, given a value outside it, exits 2 with one line naming the option (before any work)."""
    from aligndebug import cli

    bad_value = {cli.positive_int: "0", cli.probability: "1.5", cli.percentile: "100",
                 cli.non_negative_float: "-1"}
    parser = build_parser()
    stack, tried = [((), parser)], 0
    while stack:
        path, p = stack.pop()
        for action in p._actions:
            if isinstance(action.choices, dict):  # subcommands
                stack += [((*path, k), sub) for k, sub in action.choices.items()]
                continue
            if not action.option_strings:
                continue
            value = bad_value.get(action.type) or ("not-a-choice" if action.choices else None)
            if value is None:
                continue
            opt = action.option_strings[-1]
            with pytest.raises(SystemExit) as exc:
                main([*path, opt, value] + ([value] if action.nargs == 2 else []))
            err = capsys.readouterr().err
            assert exc.value.code == 2 and "Traceback" not in err, (path, opt)
            lines = err.strip().splitlines()
            assert len(lines) == 1 and opt in lines[0], (path, opt, err)
            tried += 1
    assert tried >= 40
