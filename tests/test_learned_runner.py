"""`score --method learned` runs through the one runner: the rows equal the aligner's own links, a killed run
resumes, a resume with another aligner or decoding rule is refused, a chunk scored by a Ray actor equals a local
run, and the model's own translations are aligned when no target is given."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest

import tiny_models as tm
from aligndebug.cli import main
from aligndebug.gold import format_pharaoh, read_gold, scan_gold
from aligndebug.learned import WEIGHTS, load_aligner
from aligndebug.learned_train import train_aligner
from aligndebug.pairs import iter_pair_lengths, iter_pairs
from aligndebug.rows import ScoreOptions
from aligndebug.runner import LearnedRows, run_chunk, score_rows, score_stream
from aligndebug.store import run_record_path

DE, EN = tm.DE[:10], tm.EN[:10]
SILVER = [{(i, i) for i in range(min(len(s.split()), len(t.split())))} for s, t in zip(DE, EN)]


@pytest.fixture(scope="module")
def aligners(bundle, tmp_path_factory):
    """Two aligners of the tiny Marian (seeds 0 and 1) trained on monotone silver links."""
    root = tmp_path_factory.mktemp("aligners")
    words = [s.split() for s in DE], [t.split() for t in EN]
    for seed in (0, 1):
        train_aligner(bundle, *words, SILVER, root / f"al{seed}", epochs=1, batch_size=4, seed=seed, progress=False,
                      log=lambda m: None)
    return root / "al0", root / "al1"


@pytest.fixture()
def files(tmp_path):
    p = {"src": tmp_path / "s.de", "tgt": tmp_path / "t.en", "gold": tmp_path / "g.wa"}
    p["src"].write_text("".join(s + "\n" for s in DE), encoding="utf-8")
    p["tgt"].write_text("".join(t + "\n" for t in EN), encoding="utf-8")
    p["gold"].write_text("".join(format_pharaoh(g) + "\n" for g in SILVER), encoding="utf-8")
    return p


def _rows(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _links(text):
    return {tuple(map(int, x.split("-"))) for x in text.split()}


def test_runner_rows_are_the_aligners_links(bundle, aligners, files):
    aligner = load_aligner(aligners[0], bundle)
    opts = ScoreOptions(method="learned", aligner=aligner, decode="bidir", threshold=0.2, batch_size=3, chunk_size=4)
    assert isinstance(score_rows(opts), LearnedRows)
    gold = read_gold(files["gold"], base=0)
    totals, rows = score_stream(bundle, iter_pairs(files["src"], files["tgt"]), gold.alignments, opts)
    rows = list(rows)
    want = aligner.align(bundle, DE, EN, rule="bidir", threshold=0.2)
    assert [r["index"] for r in rows] == list(range(len(DE)))
    assert [_links(r["links"]) for r in rows] == want
    assert totals.scored == len(DE) and totals.links == sum(len(w) for w in want)
    with pytest.raises(ValueError, match="no layers or heads"):
        score_rows(ScoreOptions(method="learned", aligner=aligner, per_head=True))
    assert opts.signature(bundle.name).format().startswith(
        f"model:{bundle.name}|method:learned:default|layer:states:{','.join(map(str, aligner.config.layers))}|heads:-|"
        "thr:0.2|decode:bidir|")


def test_cli_learned_run_resumes_and_records_its_aligner(model_dir, aligners, files, tmp_path, capsys):
    def score(out, *extra, aligner=aligners[0]):
        return main(["score", "--model", str(model_dir), "--method", "learned", "--aligner", str(aligner),
                     "--src", str(files["src"]), "--tgt", str(files["tgt"]), "--gold", str(files["gold"]),
                     "--gold-base", "0", "--batch-size", "3", "--chunk-size", "4", "--no-progress", "--out", str(out),
                     *extra])

    full = tmp_path / "full.jsonl"
    assert score(full, "--summary-json", str(tmp_path / "full.json")) == 0
    record = json.loads(run_record_path(full).read_text(encoding="utf-8"))
    assert record["method"] == "learned" and record["layer"] is None
    assert record["aligner"]["name"] == WEIGHTS and len(record["aligner"]["sha256"]) == 64
    card = json.loads((aligners[0] / "aligner.json").read_text())
    assert record.get("decode") == (card.get("decode") or {}).get("rule", "argmax")
    # killed after 5 rows, mid-chunk, with a torn line: --resume finishes it
    lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
    part = tmp_path / "part.jsonl"
    part.write_text("".join(lines[:5]) + '{"index": 5, "li', encoding="utf-8")
    run_record_path(part).write_bytes(run_record_path(full).read_bytes())
    assert score(part, "--resume", "--summary-json", str(tmp_path / "part.json")) == 0
    got, want = _rows(part), _rows(full)
    assert [r["index"] for r in got] == list(range(len(DE)))
    assert [r["links"] for r in got] == [r["links"] for r in want] and got[5:] == want[5:]
    summaries = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("full", "part")]
    assert summaries[0] == summaries[1] and summaries[0]["scored_sentences"] == len(DE)
    # another aligner, or another decoding rule, is refused and the file left as it is
    before = part.read_bytes()
    capsys.readouterr()
    assert score(part, "--resume", aligner=aligners[1]) == 2
    assert "aligner: other content" in capsys.readouterr().err
    assert score(part, "--resume", "--decode", "threshold") == 2
    assert "decode:" in capsys.readouterr().err
    assert part.read_bytes() == before
    # the same aligner copied elsewhere is the same run
    moved = tmp_path / "moved"
    shutil.copytree(aligners[0], moved)
    assert score(part, "--resume", aligner=moved) == 0


def test_cli_learned_aligns_the_models_translations(model_dir, aligners, files, tmp_path):
    out = tmp_path / "tr.jsonl"
    assert main(["score", "--model", str(model_dir), "--method", "learned", "--aligner", str(aligners[0]),
                 "--src", str(files["src"]), "--decode", "argmax", "--no-progress", "--out", str(out)]) == 0
    rows = _rows(out)
    assert len(rows) == len(DE) and all(r["translated"] for r in rows)
    for r in rows:  # argmax: at most one source word per target word, all in range
        links = _links(r["links"])
        assert len({j for _, j in links}) == len(links)
        assert all(i < len(r["source_words"]) and j < len(r["target_words"]) for i, j in links)


def test_skip_invalid_keeps_an_empty_line_as_a_skipped_row(model_dir, aligners, tmp_path):
    src, tgt = tmp_path / "s", tmp_path / "t"
    src.write_text(DE[0] + "\n\n" + DE[2] + "\n", encoding="utf-8")
    tgt.write_text(EN[0] + "\n" + EN[1] + "\n" + EN[2] + "\n", encoding="utf-8")
    summ = tmp_path / "s.json"
    assert main(["score", "--model", str(model_dir), "--method", "learned", "--aligner", str(aligners[0]), "--src",
                 str(src), "--tgt", str(tgt), "--skip-invalid", "--no-progress", "--summary-json", str(summ)]) == 0
    skipped = json.loads(summ.read_text())["skipped_sentences"]
    assert [(s["index"], s["skipped"]) for s in skipped] == [(1, "empty")]


def test_a_ray_actor_scores_a_learned_chunk_as_a_local_run(bundle, aligners, files):
    """The Ray actor, called in-process with the pickled builder (as Ray ships it): the rows of a local run."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'aligndebug[ray]'")
    from aligndebug.ray_backend import ChunkRunner, plan_chunks

    opts = ScoreOptions(method="learned", aligner=load_aligner(aligners[0], bundle), batch_size=3, chunk_size=4)
    gold = scan_gold(files["gold"], base=0, sentences=iter_pair_lengths(iter_pairs(files["src"], files["tgt"])))
    _, local = score_stream(bundle, iter_pairs(files["src"], files["tgt"]), read_gold(files["gold"], base=0).alignments,
                            opts)
    builders = pickle.loads(pickle.dumps([score_rows(opts)]))
    actor = ChunkRunner(model=bundle, load_kwargs={}, builders=builders, batch_size=3, gold=gold)
    specs = plan_chunks(src=files["src"], tgt=files["tgt"], chunk_size=4, gold=gold)
    out = actor({"chunk": np.asarray([pickle.dumps(s) for s in specs], dtype=object)})
    rows = [r for blob in out["result"] for r in pickle.loads(blob)[1][0]]
    assert rows == list(local)
    with pytest.raises(ValueError, match="runs alone"):
        run_chunk(bundle, [], [score_rows(opts), score_rows(ScoreOptions())])


def test_cli_learned_on_a_ray_instance_equals_a_local_run(model_dir, aligners, files, tmp_path, local_ray):
    pytest.importorskip("ray.data", reason="Ray is not installed: pip install 'aligndebug[ray]'")
    common = ["score", "--model", str(model_dir), "--method", "learned", "--aligner", str(aligners[0]), "--src",
              str(files["src"]), "--tgt", str(files["tgt"]), "--gold", str(files["gold"]), "--gold-base", "0",
              "--batch-size", "3", "--chunk-size", "4", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "local.jsonl"), "--summary-json", str(tmp_path / "local.json")]) == 0
    assert main([*common, "--out", str(tmp_path / "ray.jsonl"), "--summary-json", str(tmp_path / "ray.json"),
                 "--ray", "--ray-actors", "2"]) == 0
    assert _rows(tmp_path / "ray.jsonl") == _rows(tmp_path / "local.jsonl")
    assert json.loads((tmp_path / "ray.json").read_text()) == json.loads((tmp_path / "local.json").read_text())
