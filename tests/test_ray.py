"""Scoring on Ray (aligndebug.ray_backend): the same rows and summary as a local run.

The chunk planning and reading (what each actor reads from the input files) is checked against the
local reader without Ray; the actor's scoring is checked in-process; one end-to-end run on a local
Ray instance (`ray.init(num_cpus=2)`) goes through `aligndebug score --ray --resume` and must give
the local run's rows and summary. That run is skipped only when Ray is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from numeric import approx

import tiny_models as tm
from aligndebug import cli
from aligndebug.rows import ScoreOptions
from aligndebug.runner import ScoreRows, score_stream
from aligndebug.errors import InputError
from aligndebug.gold import read_gold, scan_gold
from aligndebug.models import load_model
from aligndebug.pairs import iter_pair_lengths, iter_pairs
from aligndebug.ray_backend import ChunkRunner, plan_chunks, read_chunk

HAVE_RAY = importlib.util.find_spec("ray") is not None
requires_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed: pip install 'aligndebug[ray]'")


def corpus(m: int) -> tuple[list[str], list[str], list[str]]:
    src, tgt, gold = [], [], []
    for k in range(m):
        a, b = k % len(tm.DE), (5 * k + 2) % len(tm.DE)
        s, t = (tm.DE[a], tm.EN[a]) if k % 2 else (f"{tm.DE[a]} {tm.DE[b]}", f"{tm.EN[a]} {tm.EN[b]}")
        ns, nt = len(s.split()), len(t.split())
        src.append(s)
        tgt.append(t)
        gold.append(" ".join(f"{i}-{min(i, nt - 1)}" for i in range(0, ns, 2)) + f" {ns - 1}p{nt - 1}")
    return src, tgt, gold


def write_files(folder, m: int) -> dict:
    """src with a byte-order mark, tgt with CRLF line ends, a pairs file with runs of spaces round '|||'."""
    src, tgt, gold = corpus(m)
    p = {k: folder / f"{k}.txt" for k in ("src", "tgt", "pairs", "gold")}
    p["src"].write_bytes(b"\xef\xbb\xbf" + ("\n".join(src) + "\n").encode())
    p["tgt"].write_bytes(("\r\n".join(tgt) + "\r\n").encode())
    p["pairs"].write_text("".join(f"{s}  |||   {t}\n" for s, t in zip(src, tgt)), encoding="utf-8")
    p["gold"].write_text("\n".join(gold) + "\n", encoding="utf-8")
    return p


# -------------------------------------------------------------------------- planning and reading

@pytest.mark.parametrize("layout", ["src+tgt", "pairs", "src only"])
def test_chunks_read_back_exactly_what_the_local_reader_reads(tmp_path, layout):
    p = write_files(tmp_path, 23)
    files = {"src+tgt": dict(src=p["src"], tgt=p["tgt"]), "pairs": dict(pairs=p["pairs"]),
             "src only": dict(src=p["src"])}[layout]
    local = list(iter_pairs(src_path=files.get("src"), tgt_path=files.get("tgt"), pairs_path=files.get("pairs")))
    specs = plan_chunks(**files, chunk_size=5)
    assert [(s.first_index, s.n) for s in specs] == [(0, 5), (5, 5), (10, 5), (15, 5), (20, 3)]
    assert [q for s in specs for q in read_chunk(s)] == local
    assert not local[0].src_words[0].startswith("\ufeff")  # the BOM is skipped, by both readers
    if "tgt" in files:
        assert all(not w.endswith("\r") for q in local for w in q.tgt_words)  # so is the CR of CRLF


def test_plan_skips_done_sentences_and_checks_input_first(tmp_path):
    p = write_files(tmp_path, 12)
    specs = plan_chunks(src=p["src"], tgt=p["tgt"], chunk_size=4, done={0, 1, 2, 3, 5})
    assert [s.chunk for s in specs] == [1, 2]  # chunk 0 is all done
    assert specs[0].skip == {5} and specs[1].skip == frozenset()
    lines = p["tgt"].read_bytes().split(b"\r\n")
    p["tgt"].write_bytes(b"\r\n".join(lines[:6] + [b"The \xff dog ."] + lines[7:]))
    with pytest.raises(InputError) as exc:  # a bad line stops the run before any actor starts
        plan_chunks(src=p["src"], tgt=p["tgt"], chunk_size=4)
    assert exc.value.path == str(p["tgt"]) and exc.value.line == 7


@pytest.mark.parametrize("layout", ["src+tgt", "pairs"])
def test_chunks_keep_bad_lines_as_the_local_reader_does_for_skip_invalid(tmp_path, layout):
    """With --skip-invalid an empty line and one with bytes that cannot be decoded are read, not refused, by the
    plan and by every chunk, exactly as `iter_pairs` keeps them (the run then skips them with the reason)."""
    p = write_files(tmp_path, 12)
    key = "tgt" if layout == "src+tgt" else "pairs"
    end = b"\r\n" if key == "tgt" else b"\n"
    lines = p[key].read_bytes().split(end)
    lines[3], lines[7] = b"", lines[7].replace(b" ", b" \xff ", 1)
    p[key].write_bytes(end.join(lines))
    files = dict(src=p["src"], tgt=p["tgt"]) if key == "tgt" else dict(pairs=p["pairs"])
    with pytest.raises(InputError):
        plan_chunks(**files, chunk_size=5)
    local = list(iter_pairs(src_path=files.get("src"), tgt_path=files.get("tgt"), pairs_path=files.get("pairs"),
                            allow_empty=True, keep_unreadable=True))
    specs = plan_chunks(**files, chunk_size=5, keep_bad=True)
    assert [q for s in specs for q in read_chunk(s)] == local and len(local) == 12
    assert local[7].unreadable.startswith(f"{p[key]}:8: bytes b'\\xff'")
    assert [k for k, q in enumerate(local) if q.unreadable] == [7]
    assert (local[3].tgt_words if key == "tgt" else local[3].src_words) == []


def test_actor_scores_a_chunk_as_score_stream_does(tmp_path, model_dir):
    """The actor class, called in-process with an in-memory model: the very rows of a local run."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'aligndebug[ray]'")
    p = write_files(tmp_path, 14)
    bundle = load_model(str(model_dir))
    gold = scan_gold(p["gold"], base=0, sentences=iter_pair_lengths(iter_pairs(p["src"], p["tgt"])))
    opts = ScoreOptions(layer=0, per_head=True, batch_size=4, chunk_size=6)
    _, local = score_stream(bundle, iter_pairs(p["src"], p["tgt"]), read_gold(p["gold"], base=0).alignments, opts)
    actor = ChunkRunner(model=bundle, load_kwargs={}, builders=[ScoreRows(opts)], batch_size=4, gold=gold)
    specs = plan_chunks(src=p["src"], tgt=p["tgt"], chunk_size=6, done={7}, gold=gold)
    assert [s.gold_start.index for s in specs] == [0, 6, 12]  # each chunk reads its own part of the gold file
    out = actor({"chunk": np.asarray([pickle.dumps(s) for s in specs], dtype=object)})
    results = [pickle.loads(r) for r in out["result"]]  # (sentences run, rows of each builder) per chunk
    assert [n for n, _ in results] == [6, 5, 2]
    rows = [json.loads(json.dumps(r)) for _, (score_rows,) in results for r in score_rows]
    assert [r["index"] for r in rows] == [k for k in range(14) if k != 7]
    expected = {r["index"]: r for r in local}
    for r in rows:
        e = expected[r["index"]]
        if r["index"] in range(6, 12):  # this chunk lost a sentence, so its batches differ: last bits may too
            assert {k: v for k, v in r.items() if k != "mean_logprob"} == {k: v for k, v in e.items() if k != "mean_logprob"}
            assert r["mean_logprob"] == approx(e["mean_logprob"], digits=4)
        else:
            assert r == e


def test_missing_ray_is_a_clear_error(capsys, tmp_path, model_dir, monkeypatch):
    from aligndebug import ray_backend

    def no_ray():
        raise ImportError("No module named 'ray'")

    monkeypatch.setattr(ray_backend, "require_ray", no_ray)
    p = write_files(tmp_path, 3)
    rc = cli.main(["score", "--model", str(model_dir), "--src", str(p["src"]), "--ray", "--no-progress"])
    assert rc != 0 and "pip install 'aligndebug[ray]'" in capsys.readouterr().err


# ------------------------------------------------------------------------------- on a Ray instance

@requires_ray
def test_score_on_ray_resumes_and_matches_a_local_run(tmp_path, model_dir, local_ray):
    m = 40
    p = write_files(tmp_path, m)
    common = ["score", "--model", str(model_dir), "--src", str(p["src"]), "--tgt", str(p["tgt"]), "--gold",
              str(p["gold"]), "--layer", "0", "--per-head", "--batch-size", "4", "--chunk-size", "8", "--no-progress"]
    local_rows, ray_rows = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert cli.main([*common, "--out", str(local_rows), "--summary-json", str(tmp_path / "local.json")]) == 0
    # A run that was killed after 11 rows (mid-chunk) and a torn line, then finished on Ray with --resume.
    lines = local_rows.read_text(encoding="utf-8").splitlines(keepends=True)
    ray_rows.write_text("".join(lines[:11]) + '{"index": 11, "li', encoding="utf-8")
    # the killed run recorded itself beside its rows, as every run does (same inputs, model and settings)
    Path(str(ray_rows) + ".run.json").write_bytes(Path(str(local_rows) + ".run.json").read_bytes())
    assert cli.main([*common, "--out", str(ray_rows), "--summary-json", str(tmp_path / "ray.json"), "--ray",
                     "--ray-actors", "2"]
                    + ["--resume"]) == 0
    got = [json.loads(x) for x in ray_rows.read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in got] == list(range(m))  # every sentence once, in input order
    want = [json.loads(x) for x in lines]
    for r, e in zip(got, want):
        if r["index"] in range(11, 16):  # the chunk that was resumed mid-way is batched differently
            assert r["links"] == e["links"] and r["counts"] == e["counts"]
            assert r["mean_logprob"] == approx(e["mean_logprob"], digits=4)
        else:
            assert r == e
    summary = lambda name: json.loads((tmp_path / name).read_text(encoding="utf-8"))  # noqa: E731
    assert summary("ray.json") == summary("local.json")
    assert summary("local.json")["scored_sentences"] == m and summary("local.json")["per_head"]


@requires_ray
def test_skip_invalid_on_ray_skips_what_a_local_run_skips(tmp_path, model_dir, local_ray):
    """An empty source line and a translation line with bytes that cannot be decoded: with --skip-invalid the
    Ray run gets past both (it used to stop at the empty line) and gives the local run's rows and skip list."""
    p = write_files(tmp_path, 10)
    src, tgt = p["src"].read_bytes().split(b"\n"), p["tgt"].read_bytes().split(b"\r\n")
    src[2], tgt[6] = b"", tgt[6].replace(b" ", b" \xff ", 1)
    p["src"].write_bytes(b"\n".join(src))
    p["tgt"].write_bytes(b"\r\n".join(tgt))
    common = ["score", "--model", str(model_dir), "--src", str(p["src"]), "--tgt", str(p["tgt"]), "--layer", "0",
              "--batch-size", "4", "--chunk-size", "4", "--skip-invalid", "--no-progress"]
    for name, extra in (("local", []), ("ray", ["--ray", "--ray-actors", "2"])):
        assert cli.main([*common, "--out", str(tmp_path / f"{name}.jsonl"),
                         "--summary-json", str(tmp_path / f"{name}.json"), *extra]) == 0
    read = lambda name: [json.loads(x) for x in (tmp_path / name).read_text(encoding="utf-8").splitlines()]  # noqa: E731
    assert read("ray.jsonl") == read("local.jsonl")
    skipped = json.loads((tmp_path / "ray.json").read_text(encoding="utf-8"))["skipped_sentences"]
    assert skipped == json.loads((tmp_path / "local.json").read_text(encoding="utf-8"))["skipped_sentences"]
    assert [(s["index"], s["skipped"], s["file"]) for s in skipped] == [(2, "empty", str(p["src"])),
                                                                        (6, "undecodable", str(p["tgt"]))]


@requires_ray
def test_a_pool_the_cluster_cannot_hold_is_refused(tmp_path, model_dir, local_ray):
    """Two CPUs and no GPU: three CPU actors, or one GPU actor, would wait forever; they are refused at once."""
    from aligndebug.ray_backend import score_with_ray

    p = write_files(tmp_path, 4)
    for kwargs, what in ((dict(num_actors=3), "2 CPUs"), (dict(num_actors=1, num_gpus_per_actor=1), "0 GPUs")):
        with pytest.raises(ValueError, match=what):
            score_with_ray(str(model_dir), src=p["src"], tgt=p["tgt"], out_path=tmp_path / "rows.jsonl", **kwargs)
