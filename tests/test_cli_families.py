"""Every CLI command and option runs on every model family: `score --per-head`, `score --compare`,
`inspect` and `triage` on the tiny model of each family, read from a model folder as a user gives it."""

from __future__ import annotations

import json

import pytest

import tiny_models as tm
from aligndebug import cli

SRC = ["Der Hund schläft .", "Die Katze trinkt Milch ."]
TGT = ["The dog sleeps .", "The cat drinks milk ."]
GOLD = ["0-0 1-1 2-2 3-3", "0-0 1-1 2-2 3-3 4-4"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-families")
    for name, lines in (("src", SRC), ("tgt", TGT), ("gold", GOLD)):
        (d / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


@pytest.fixture(scope="module", params=tm.FAMILIES)
def model_args(request, tmp_path_factory):
    family = request.param
    path = tm.save(family, tmp_path_factory.mktemp("model") / family)
    args = ["--model", str(path)]
    if family in tm.LANGS:
        src, tgt = tm.LANGS[family]
        args += ["--src-lang", src, "--tgt-lang", tgt]
    return family, args


def _run(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def test_score_per_head(files, model_args, capsys):
    family, margs = model_args
    b = tm.bundle(family)
    summary = files / f"{family}-ph.json"
    _run(["score", *margs, "--src", str(files / "src"), "--tgt", str(files / "tgt"), "--gold", str(files / "gold"),
          "--per-head", "--no-progress", "--summary-json", str(summary)], capsys)
    result = json.loads(summary.read_text())
    assert result["sentences"] == 2 and 0.0 <= result["aer"] <= 1.0
    assert len(result["per_head"]) == b.num_layers and all(len(r) == b.num_heads for r in result["per_head"])
    assert len(result["per_layer_mean"]) == b.num_layers


def test_score_compare(files, model_args, capsys):
    family, margs = model_args
    summary = files / f"{family}-cmp.json"
    out = _run(["score", *margs, "--src", str(files / "src"), "--tgt", str(files / "tgt"), "--gold",
                str(files / "gold"), "--compare", "--ig-steps", "2", "--no-progress", "--summary-json", str(summary)],
               capsys)
    cmp = json.loads(summary.read_text())["compare"]
    assert set(cmp) >= {"rollout", "ig", "agreement_rho_mean"}
    assert all(0.0 <= cmp[k]["aer"] <= 1.0 for k in ("rollout", "ig"))
    assert "rollout" in out and "ig" in out


def test_inspect(model_args, capsys):
    family, margs = model_args
    out = _run(["inspect", *margs, "--source", SRC[0], "--target", TGT[0], "--json"], capsys)
    data = json.loads(out)
    assert data["source_words"] == SRC[0].split() and data["target_words"] == TGT[0].split()
    assert len(data["word_attention"]) == len(TGT[0].split())
    assert all(len(row) == len(SRC[0].split()) for row in data["word_attention"])


def test_triage(files, model_args, capsys, tmp_path):
    family, margs = model_args
    out = tmp_path / "rows.jsonl"
    _run(["triage", *margs, "--src", str(files / "src"), "--tgt", str(files / "tgt"), "--out", str(out),
          "--no-progress"], capsys)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == [0, 1]
    assert [r["rank"] for r in rows] == [1, 2]
    assert [r["translation"] for r in sorted(rows, key=lambda r: r["id"])] == TGT
