"""Streaming batch scoring: kill -9 and --resume, batching invariance, and the per-sentence reduction.

The model is the tiny random Marian of tests/tiny_models.py; layer 0 is used where rows must be
told apart (its attention varies from sentence to sentence).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from numeric import approx

import tiny_models as tm
from aligndebug import rows as rows_mod, runner
from aligndebug.rows import ScoreOptions
from aligndebug.runner import score_stream
from aligndebug.cli import main
from aligndebug.gold import read_gold
from aligndebug.pairs import iter_pairs

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def make_corpus(m: int) -> tuple[list[str], list[str], list[str]]:
    """m sentence pairs of varied length (one or two tiny-model sentences) and a Pharaoh gold line each."""
    src, tgt, gold = [], [], []
    for k in range(m):
        a, b = k % len(tm.DE), (7 * k + 3) % len(tm.DE)
        s, t = (tm.DE[a], tm.EN[a]) if k % 3 == 0 else (f"{tm.DE[a]} {tm.DE[b]}", f"{tm.EN[a]} {tm.EN[b]}")
        ns, nt = len(s.split()), len(t.split())
        links = {(i, min(nt - 1, i + k % 2)) for i in range(0, ns, 2)} | {(ns - 1, nt - 1)}
        src.append(s)
        tgt.append(t)
        gold.append(" ".join(f"{i}-{j}" for i, j in sorted(links)) + (f" 1p{nt - 2}" if ns > 1 and nt > 1 else ""))
    return src, tgt, gold


def write_corpus(folder: Path, m: int) -> dict[str, Path]:
    src, tgt, gold = make_corpus(m)
    paths = {"src": folder / "src.txt", "tgt": folder / "tgt.txt", "gold": folder / "gold.wa"}
    for key, lines in (("src", src), ("tgt", tgt), ("gold", gold)):
        paths[key].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def complete_rows(path: Path) -> list[dict]:
    data = path.read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def by_index(rows: list[dict]) -> dict[int, dict]:
    return {r["index"]: r for r in rows}


def same_rows(a: dict, b: dict) -> bool:
    """Equal rows; the mean log-prob may differ in its last digits when padding differs between batches."""
    strip = lambda r: {k: v for k, v in r.items() if k != "mean_logprob"}  # noqa: E731
    return strip(a) == strip(b) and a["mean_logprob"] == approx(b["mean_logprob"], digits=4)


def kill_9_after(args: list[str], watched: Path, lines: int) -> None:
    """Run `aligndebug ARGS` and SIGKILL it once `watched` holds `lines` complete lines (before it ends)."""
    exe = shutil.which("aligndebug", path=str(Path(sys.executable).parent)) or shutil.which("aligndebug")
    assert exe is not None, "the aligndebug console script is not installed (pip install -e .)"
    proc = subprocess.Popen([exe, *args], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if watched.exists() and watched.read_bytes().count(b"\n") >= lines:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


# ------------------------------------------------------------------------------------------ resume

def test_kill_9_midway_then_resume_gives_every_sentence_once(tmp_path, model_dir):
    m = 400
    p = write_corpus(tmp_path, m)
    rows, full_rows = tmp_path / "rows.jsonl", tmp_path / "full.jsonl"
    args = ["score", "--model", str(model_dir), "--src", str(p["src"]), "--tgt", str(p["tgt"]), "--gold", str(p["gold"]),
            "--layer", "0", "--per-head", "--batch-size", "4", "--chunk-size", "8", "--no-progress"]
    kill_9_after([*args, "--out", str(rows)], rows, 24)
    before = complete_rows(rows)
    assert 24 <= len(before) < m, "killed midway"
    # A kill in the middle of a write leaves a torn last line; simulate one on top.
    with open(rows, "ab") as f:
        f.write(b'{"index": 7, "line": 8, "source_wo')

    assert main([*args, "--out", str(rows), "--resume", "--summary-json", str(tmp_path / "resumed.json")]) == 0
    resumed = complete_rows(rows)
    assert rows.read_bytes().endswith(b"\n")  # the torn line is gone, not glued to a new row
    assert sorted(r["index"] for r in resumed) == list(range(m))  # every sentence exactly once
    assert resumed[: len(before)] == before  # what was already there is kept as it was

    assert main([*args, "--out", str(full_rows), "--summary-json", str(tmp_path / "full.json")]) == 0
    full = complete_rows(full_rows)
    assert [r["index"] for r in full] == list(range(m))  # uninterrupted: input order
    summary = lambda name: json.loads((tmp_path / name).read_text(encoding="utf-8"))  # noqa: E731
    assert summary("resumed.json") == summary("full.json")
    assert summary("full.json")["per_head"] and summary("full.json")["scored_sentences"] == m
    a, b = by_index(resumed), by_index(full)
    assert all(same_rows(a[k], b[k]) for k in range(m))


def test_triage_killed_midway_resumes_every_sentence_once(tmp_path, model_dir):
    """`aligndebug triage` killed with SIGKILL while it writes <out>.partial, then run again with the same --out:
    the rows already there are kept as they were, every sentence is ranked exactly once, and the result is
    a fresh run's up to the last bits of the chunk that was cut."""
    m = 300
    p = write_corpus(tmp_path, m)
    out, fresh = tmp_path / "triage.jsonl", tmp_path / "fresh.jsonl"
    partial = Path(str(out) + ".partial")
    args = ["triage", "--model", str(model_dir), "--src", str(p["src"]), "--tgt", str(p["tgt"]), "--layer", "0",
            "--batch-size", "4", "--chunk-size", "8", "--no-progress"]
    kill_9_after([*args, "--out", str(out)], partial, 20)
    before = {r["id"]: r for r in complete_rows(partial)}
    assert 20 <= len(before) < m and not out.exists()
    with open(partial, "ab") as f:
        f.write(b'{"id": 250, "sour')  # a torn line, as a kill mid-write leaves

    assert main([*args, "--out", str(out)]) == 0
    assert main([*args, "--out", str(fresh)]) == 0
    resumed, full = complete_rows(out), {r["id"]: r for r in complete_rows(fresh)}
    assert sorted(r["id"] for r in resumed) == list(range(m)) and not partial.exists()
    assert [r["rank"] for r in resumed] == list(range(1, m + 1))
    for r in resumed:
        e = full[r["id"]]
        assert (r["translation"], r["src_words"], r["tandem_repeat"]) == (e["translation"], e["src_words"], e["tandem_repeat"])
        assert r["seq_logprob"] == approx(e["seq_logprob"], digits=4)
        if r["id"] in before:  # kept as they were: the signals the killed run computed
            assert r["word_entropy"] == before[r["id"]]["word_entropy"]


def test_resume_reports_progress_once_per_sentence(tmp_path, bundle):
    """A resumed run counts the sentences it finds done once, not again when their chunk comes by."""
    m = 40
    p = write_corpus(tmp_path, m)
    opts = ScoreOptions(layer=0, batch_size=4, chunk_size=8)
    rows = tmp_path / "rows.jsonl"
    score_stream(bundle, iter_pairs(p["src"], p["tgt"]), None, opts, rows_path=rows)
    lines = rows.read_text(encoding="utf-8").splitlines(keepends=True)
    rows.write_text("".join(lines[:13]), encoding="utf-8")  # killed after 13 rows (mid-chunk)
    seen: list[int] = []
    totals, _ = score_stream(bundle, iter_pairs(p["src"], p["tgt"]), None, opts, rows_path=rows, resume=True,
                             on_progress=seen.append)
    assert sum(seen) == m and seen[0] == 13
    assert totals.sentences == m
    assert sorted(r["index"] for r in complete_rows(rows)) == list(range(m))


# --------------------------------------------------------------------------------------- batching

def _golds(path: Path, m: int):
    return read_gold(path, base=0).alignments[:m]


def test_batched_rows_equal_one_by_one(tmp_path, bundle):
    m = 24
    p = write_corpus(tmp_path, m)
    golds = _golds(p["gold"], m)
    runs = {}
    for bs in (1, 8):
        opts = ScoreOptions(layer=0, batch_size=bs, chunk_size=16)
        totals, rows = score_stream(bundle, iter_pairs(p["src"], p["tgt"]), golds, opts)
        runs[bs] = (totals, list(rows))
    (t1, r1), (t8, r8) = runs[1], runs[8]
    assert [r["index"] for r in r1] == [r["index"] for r in r8] == list(range(m))
    assert all(same_rows(a, b) for a, b in zip(r1, r8))
    assert len({r["links"] for r in r1}) > 1  # rows differ from each other, so equality means something
    assert t1.counts == t8.counts and t1.scored == m


def test_reduction_keeps_one_matrix_per_sentence_and_the_same_rows(tmp_path, bundle, monkeypatch):
    m = 12
    p = write_corpus(tmp_path, m)
    golds = _golds(p["gold"], m)
    shapes: list[tuple[int, ...]] = []
    original = runner.score_row

    def spy(rec, pair, gold, opts, model=None, reduced=False):
        shapes.append(rec.cross.shape)
        assert rec.enc_self is None and rec.dec_self is None  # only cross-attention is kept
        assert reduced == (not opts.per_head)
        return original(rec, pair, gold, opts, model, reduced)

    monkeypatch.setattr(runner, "score_row", spy)
    cfg = bundle.model.config
    out = {}
    for per_head in (False, True):
        shapes.clear()
        opts = ScoreOptions(layer=0, per_head=per_head, batch_size=4, chunk_size=8)
        totals, rows = score_stream(bundle, iter_pairs(p["src"], p["tgt"]), golds, opts)
        out[per_head] = list(rows)
        lead = {s[:2] for s in shapes}
        assert lead == ({(cfg.decoder_layers, cfg.decoder_attention_heads)} if per_head else {(1, 1)})
    plain, grid = out[False], out[True]
    assert all("per_head_counts" not in r for r in plain)
    assert all(len(r["per_head_counts"]) == cfg.decoder_layers * (cfg.decoder_attention_heads + 1) for r in grid)
    for a, b in zip(plain, grid):
        b = {k: v for k, v in b.items() if k != "per_head_counts"}
        assert a == b  # the reduced matrix gives the very links of the full one at the chosen layer
    # The grid's entry for the chosen layer and the head mean is the row's own count.
    assert all(r["per_head_counts"]["0:mean"] == r["counts"] for r in grid)


def test_rows_stream_to_disk_chunk_by_chunk(tmp_path, bundle, monkeypatch):
    """Each chunk's rows are on disk (flushed) before the next chunk is scored."""
    m = 20
    p = write_corpus(tmp_path, m)
    rows = tmp_path / "rows.jsonl"
    on_disk: list[int] = []
    original = runner.run_chunk

    def spy(*args, **kwargs):
        on_disk.append(len(rows.read_text(encoding="utf-8").splitlines()) if rows.exists() else 0)
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "run_chunk", spy)
    score_stream(bundle, iter_pairs(p["src"], p["tgt"]), None, ScoreOptions(chunk_size=6, batch_size=4), rows_path=rows)
    assert on_disk == [0, 6, 12, 18]


def test_read_links_streams_an_ordered_rows_file_and_sorts_another(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"index": i, "links": f"{i}-0"}) + "\n" for i in (0, 1, 2)) + "\n",
                    encoding="utf-8")
    it = rows_mod.read_links(rows)
    assert not isinstance(it, list) and list(it) == [(0, "0-0"), (1, "1-0"), (2, "2-0")]
    rows.write_text("".join(json.dumps({"index": i, "links": f"{i}-0"}) + "\n" for i in (2, 0, 1)), encoding="utf-8")
    assert list(rows_mod.read_links(rows)) == [(0, "0-0"), (1, "1-0"), (2, "2-0")]
