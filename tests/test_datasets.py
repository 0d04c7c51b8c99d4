"""Named test sets: the registry, the shipped files, `aligndebug datasets`, `--testset`, and `datasets add`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import tiny_models as tm
from aligndebug import datasets
from aligndebug.cli import main
from aligndebug.errors import InputError
from aligndebug.gold import read_gold
from aligndebug.pairs import iter_pair_lengths, iter_pairs

SHIPPED = [name for name, ts in datasets.registry().items() if ts.shipped]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch) -> Path:
    """Every test registers into its own cache, never the user's."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ALIGNDEBUG_CACHE", str(cache))
    return cache


def small_set(tmp_path: Path, n: int = 4) -> dict[str, Path]:
    src, tgt, gold = tmp_path / "in.de", tmp_path / "in.en", tmp_path / "in.wa"
    src.write_text("".join(s + "\n" for s in tm.DE[:n]), encoding="utf-8")
    tgt.write_text("".join(t + "\n" for t in tm.EN[:n]), encoding="utf-8")
    gold.write_text("0-0 1-1\n" * n, encoding="utf-8")
    return {"src": src, "tgt": tgt, "gold": gold}


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_registry_points_at_the_repository_datasets(data_dir):
    assert datasets.SHIPPED_ROOT == data_dir
    assert {"bicici-deen", "hansards-enfr", "wpt-roen", "kftt-jaen", "tsinghua-zhen"} <= set(SHIPPED)
    assert not datasets.registry()["rwth-deen"].shipped


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_set_is_whole_and_reads_with_its_registered_settings(name):
    ts = datasets.load_testset(name)
    assert datasets.verify(ts) == []  # files as registered, byte for byte (sha256)
    pairs = list(iter_pairs(src_path=ts.path("src"), tgt_path=ts.path("tgt"), pairs_path=ts.path("pairs")))
    assert len(pairs) == ts.sentences
    if ts.gold is not None:
        gold = read_gold(ts.path("gold"), base=ts.gold_base, fmt=ts.gold_format,
                         sentences=iter_pair_lengths(pairs), skip_invalid=ts.skip_invalid)
        assert gold.n_sentences == ts.sentences
        assert gold.skipped == (1 if name == "bicici-deen" else 0)  # Bicici's sentence 63, as its SOURCE.txt says
        assert gold.n_sure > 0
        assert (gold.n_possible_only > 0) == ("Possible" in ts.links)


def test_every_shipped_folder_keeps_its_source_terms(data_dir):
    folders = {datasets.registry()[n].root for n in SHIPPED}
    for folder in folders:
        assert (folder / "SOURCE.txt").is_file(), folder
    assert (data_dir / "README.md").is_file()


def test_echo_prints_a_sets_files_and_splits_pairs_files():
    assert list(datasets.echo("bicici-deen", "tgt"))[0].startswith("mr president , commissioner")
    src = list(datasets.echo("wpt-roen", "src"))
    tgt = list(datasets.echo("wpt-roen", "tgt"))
    assert len(src) == len(tgt) == 248
    pairs_line = Path(datasets.load_testset("wpt-roen").path("pairs")).read_text(encoding="utf-8").split("\n")[0]
    assert " ".join(pairs_line.split()) == f"{src[0]} ||| {tgt[0]}"
    gold = list(datasets.echo("hansards-enfr", "gold"))
    assert len(gold) == 447 and "p" in " ".join(gold)


def test_cli_lists_and_echoes(capsys):
    rc, out, _ = run(capsys, "datasets")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "direction", "sentences"]
    by_name = {line.split()[0]: line for line in lines[1:]}
    assert "not shipped" in by_name["rwth-deen"] and "508" in by_name["rwth-deen"]
    assert by_name["bicici-deen"].split()[1:3] == ["de-en", "100"]
    rc, out, _ = run(capsys, "datasets", "--json")
    assert {r["name"] for r in json.loads(out)} == set(datasets.registry())
    rc, out, _ = run(capsys, "datasets", "--echo", "gold", "bicici-deen")
    assert rc == 0 and out.splitlines() == list(datasets.echo("bicici-deen", "gold"))


@pytest.mark.parametrize("command", [["datasets", "--echo", "src", "bicici-deen"], ["datasets"]])
def test_a_reader_that_stops_early_is_no_error(command):
    """`aligndebug datasets --echo src bicici-deen | head -1`: the closed pipe ends the command quietly with the
    status a shell gives a tool SIGPIPE stopped (141), whether it meets it while writing or at the final flush."""
    code = ("import os, sys\n"
            "r, w = os.pipe(); os.close(r); os.dup2(w, 1)  # a reader that has already gone\n"
            "from aligndebug.cli import main\n"
            f"sys.exit(main({command!r}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 141 and done.stderr == ""


def test_unknown_and_unshipped_sets_say_what_to_do(capsys):
    with pytest.raises(InputError, match="unknown test set 'nope'.*bicici-deen"):
        datasets.load_testset("nope")
    rc, _, err = run(capsys, "score", "--testset", "rwth-deen")
    assert rc == 2 and "not shipped" in err and "aligndebug datasets add rwth-deen" in err
    assert "Traceback" not in err


def test_testset_with_file_options_is_refused(capsys, tmp_path):
    rc, _, err = run(capsys, "score", "--testset", "bicici-deen", "--src", tmp_path / "x")
    assert rc == 2 and "together with --src" in err


def test_add_registers_a_copy_and_score_testset_uses_it(capsys, tmp_path, own_cache, model_dir):
    files = small_set(tmp_path)
    rc, out, _ = run(capsys, "datasets", "add", "my-deen", "--src", files["src"], "--tgt", files["tgt"],
                     "--gold", files["gold"], "--gold-base", "0", "--direction", "de-en")
    assert rc == 0 and "registered my-deen: 4 sentences" in out
    ts = datasets.load_testset("my-deen")
    assert ts.user and ts.root.parent == own_cache / "sets"
    assert ts.path("src").read_bytes() == files["src"].read_bytes()
    files["src"].unlink()  # the registered copy stands on its own
    by_set, by_files = tmp_path / "set.json", tmp_path / "files.json"
    common = ["--model", model_dir, "--layer", "0", "--no-progress"]
    assert run(capsys, "score", "--testset", "my-deen", *common, "--summary-json", by_set)[0] == 0
    assert run(capsys, "score", "--src", ts.path("src"), "--tgt", ts.path("tgt"), "--gold", ts.path("gold"),
               "--gold-base", "0", *common, "--summary-json", by_files)[0] == 0
    a, b = json.loads(by_set.read_text()), json.loads(by_files.read_text())
    assert a["sentences"] == 4 and a["aer"] == pytest.approx(b["aer"], rel=1e-9)
    # triage reads the set's source and uses its target side as references
    out_rows = tmp_path / "triage.jsonl"
    rc, _, err = run(capsys, "triage", "--testset", "my-deen", "--model", model_dir, "--out", out_rows,
                     "--no-progress")
    assert rc == 0, err
    rows = [json.loads(line) for line in out_rows.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 4 and all(r.get("reference") for r in rows)


def test_add_checks_an_unshipped_sets_line_count_and_checksum(tmp_path, own_cache, monkeypatch):
    files = small_set(tmp_path)
    with pytest.raises(InputError, match="4 sentences, but the registered 'rwth-deen' has 508"):
        datasets.add_testset("rwth-deen", src=files["src"], tgt=files["tgt"])
    assert not (own_cache / "sets" / "rwth-deen").exists()
    # a registry entry that knows its files' checksums refuses any other copy, and keeps nothing
    reg = json.loads(datasets.REGISTRY_FILE.read_text(encoding="utf-8"))
    reg["paid-deen"] = {"direction": "de-en", "shipped": False, "get": "a vendor", "sentences": 4,
                        "sha256": {"src": "0" * 64}}
    fake = tmp_path / "testsets.json"
    fake.write_text(json.dumps(reg), encoding="utf-8")
    monkeypatch.setattr(datasets, "REGISTRY_FILE", fake)
    with pytest.raises(InputError, match="checksum mismatch.*nothing was kept") as err:
        datasets.add_testset("paid-deen", src=files["src"], tgt=files["tgt"])
    assert err.value.path == str(files["src"])
    assert not (own_cache / "sets").exists() or not any((own_cache / "sets").iterdir())
    assert "paid-deen" not in json.loads((own_cache / "testsets.json").read_text()) \
        if (own_cache / "testsets.json").exists() else True
    # the right file is taken
    reg["paid-deen"]["sha256"] = {"src": datasets.file_sha256(files["src"])}
    fake.write_text(json.dumps(reg), encoding="utf-8")
    assert datasets.add_testset("paid-deen", src=files["src"], tgt=files["tgt"]).available


def test_add_refuses_bad_input_before_writing(tmp_path, own_cache):
    files = small_set(tmp_path)
    with pytest.raises(InputError, match="shipped with aligndebug already"):
        datasets.add_testset("bicici-deen", src=files["src"], tgt=files["tgt"])
    short = tmp_path / "short.en"
    short.write_text("one line\n", encoding="utf-8")
    with pytest.raises(InputError, match="1 lines but"):
        datasets.add_testset("x", src=files["src"], tgt=short)
    bad_gold = tmp_path / "bad.wa"
    bad_gold.write_text("0-0 1-1\n" * 5, encoding="utf-8")  # one sentence too many
    with pytest.raises(InputError):
        datasets.add_testset("x", src=files["src"], tgt=files["tgt"], gold=bad_gold, gold_base=0)
    with pytest.raises(InputError, match="bad test-set name"):
        datasets.add_testset("../x", src=files["src"])
    assert not (own_cache / "testsets.json").exists()
