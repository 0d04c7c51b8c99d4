"""Triage on Ray (aligndebug.ray_backend.triage_with_ray): the same ranked rows and calibration as a local run,
every float to 5 significant digits (a Ray actor may run other thread counts than the driver).

A local Ray instance (`ray.init(num_cpus=2)`) runs the tiny Marian: once translating (five chunks on two
actors, the model loaded by path), once resuming from a partial file (the model shipped in memory), and
once through `aligndebug triage --ray`. Skipped only when Ray is not installed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from numeric import approx, assert_same_to_digits

import tiny_models as tm
from aligndebug import cli
from aligndebug.runner import calibration_path, run_triage
from aligndebug.store import row_json
from aligndebug.triage import Calibration

HAVE_RAY = importlib.util.find_spec("ray") is not None
requires_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed: pip install 'aligndebug[ray]'")


def corpus(m: int) -> tuple[list[str], list[str]]:
    """Sentences of one and two clauses, so lengths (and batches) vary and ties occur."""
    src, tgt = [], []
    for k in range(m):
        a, b = k % len(tm.DE), (7 * k + 3) % len(tm.DE)
        src.append(tm.DE[a] if k % 3 else f"{tm.DE[a]} {tm.DE[b]}")
        tgt.append(tm.EN[a] if k % 3 else f"{tm.EN[a]} {tm.EN[b]}")
    return src, tgt


def rows_of(rows) -> list[dict]:
    """Rows as written (NaN as null), for comparison."""
    return [json.loads(row_json(r)) for r in rows]


def file_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@requires_ray
def test_translating_on_two_actors_gives_the_local_rows_and_calibration(tmp_path, model_dir, bundle, local_ray):
    """No targets: 40 sentences are five chunks, each translated and scored by one of two actors."""
    from aligndebug.ray_backend import triage_with_ray

    src, ref = corpus(40)
    want = run_triage(bundle, src, references=ref, batch_size=4, layer=1, out=tmp_path / "local.jsonl", chunk_size=8)
    seen = []
    got = triage_with_ray(str(model_dir), src, references=ref, batch_size=4, layer=1, out=tmp_path / "ray.jsonl",
                          chunk_size=8, num_actors=2, on_progress=seen.append)
    # every flag, reason and rank, and every float to 5 digits (actors may run other thread counts)
    assert_same_to_digits(rows_of(got), rows_of(want))
    assert_same_to_digits(got.calibration.to_dict(), want.calibration.to_dict())
    assert got.calibration.settings["model"] == str(model_dir)
    assert_same_to_digits(file_rows(tmp_path / "ray.jsonl"), file_rows(tmp_path / "local.jsonl"))
    assert_same_to_digits(Calibration.load(calibration_path(tmp_path / "ray.jsonl")).to_dict(), want.calibration.to_dict())
    assert not Path(str(tmp_path / "ray.jsonl") + ".partial").exists() and sum(seen) == 40


@requires_ray
def test_resume_completes_a_partial_file_as_a_local_run_does(tmp_path, bundle, local_ray):
    """A run killed after 5 rows and a torn line: the Ray rerun keeps those rows, does each other id once,
    and ends as a local rerun from the same partial file does (and, up to batching, as a fresh run)."""
    from aligndebug.ray_backend import triage_with_ray

    m = 14
    src, tgt = corpus(m)
    opts = dict(batch_size=4, layer="mean", combine="fisher")  # see test_cli_triage_on_ray_writes_the_local_files
    fresh = run_triage(bundle, src, tgt, **opts)
    kept = [dict(r, marker="kept") for r in fresh[:5]]  # rows of the killed run: they must not be redone
    torn = "".join(row_json(r) + "\n" for r in kept) + '{"id": 9, "sou'
    outs = {}
    for name in ("local", "ray"):
        outs[name] = tmp_path / f"{name}.jsonl"
        Path(str(outs[name]) + ".partial").write_text(torn, encoding="utf-8")
    seen = []
    got = triage_with_ray(bundle, src, tgt, **opts, out=outs["ray"], chunk_size=4, num_actors=1,
                          on_progress=seen.append)
    want = run_triage(bundle, src, tgt, **opts, out=outs["local"], chunk_size=4)
    assert_same_to_digits(rows_of(got), rows_of(want))
    assert_same_to_digits(got.calibration.to_dict(), want.calibration.to_dict())
    assert_same_to_digits(file_rows(outs["ray"]), file_rows(outs["local"]))
    assert sorted(r["id"] for r in got) == list(range(m)) and seen[0] == 5 and sum(seen) == m
    assert {r["id"] for r in got if r.get("marker") == "kept"} == {r["id"] for r in kept}
    by_id = {r["id"]: r for r in fresh}
    for r in got:  # redone rows were batched otherwise than in the fresh run: the same to 4-5 digits
        e = by_id[r["id"]]
        assert r["translation"] == e["translation"] and r["src_words"] == e["src_words"]
        assert r["word_entropy"] == approx(e["word_entropy"], digits=5, scale=1.0)  # in [0, 1]
        assert r["seq_logprob"] == approx(e["seq_logprob"], digits=4)


@requires_ray
def test_cli_triage_on_ray_writes_the_local_files(tmp_path, model_dir, local_ray, capsys):
    src, tgt = corpus(10)
    (tmp_path / "src.txt").write_text("\n".join(src) + "\n", encoding="utf-8")
    lines = [t.encode() for t in tgt]
    lines[4] = lines[4].replace(b" ", b" \xff ", 1)  # a line that cannot be decoded: kept and flagged by both
    (tmp_path / "tgt.txt").write_bytes(b"\n".join(lines) + b"\n")
    # Fisher's combination: the learned one is refitted on each run's own 10 rows, whose rank-based features
    # can move by a rank with the last digits of a float, and a refit on so few rows then
    # moves every score; these tests are about the runner giving the same rows, not about that fit.
    common = ["triage", "--combine", "fisher", "--model", str(model_dir), "--src", str(tmp_path / "src.txt"), "--tgt",
              str(tmp_path / "tgt.txt"), "--layer", "0", "--batch-size", "3", "--no-progress"]
    assert cli.main([*common, "--out", str(tmp_path / "local.jsonl")]) == 0
    assert cli.main([*common, "--out", str(tmp_path / "ray.jsonl"), "--ray", "--ray-actors", "1"]) == 0
    local = file_rows(tmp_path / "local.jsonl")
    assert_same_to_digits(file_rows(tmp_path / "ray.jsonl"), local) and len(local) == 10
    assert [r["id"] for r in local if r.get("unusable") == "undecodable"] == [4]
    assert_same_to_digits(json.loads(calibration_path(tmp_path / "ray.jsonl").read_text()),
                          json.loads(calibration_path(tmp_path / "local.jsonl").read_text()))
    assert "rank" in capsys.readouterr().out


def test_missing_ray_is_a_clear_error(capsys, tmp_path, model_dir, monkeypatch):
    from aligndebug import ray_backend

    def no_ray():
        raise ImportError("No module named 'ray'")

    monkeypatch.setattr(ray_backend, "require_ray", no_ray)
    (tmp_path / "src.txt").write_text("Der Hund schläft .\n", encoding="utf-8")
    rc = cli.main(["triage", "--model", str(model_dir), "--src", str(tmp_path / "src.txt"), "--out",
                   str(tmp_path / "o.jsonl"), "--ray", "--no-progress"])
    assert rc == 2 and "--ray needs Ray Data" in capsys.readouterr().err
    from aligndebug.ray_backend import triage_with_ray

    with pytest.raises(ImportError, match="No module named 'ray'"):
        triage_with_ray(str(model_dir), ["Der Hund schläft ."])
    assert not (tmp_path / "o.jsonl").exists()
