"""The embedded model ships with the package, loads offline and really translates."""

from __future__ import annotations

import gzip

import pytest
import sacrebleu

from aligndebug.extract import extract, translate
from aligndebug.models import DEFAULT_MODEL_DIR, load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_bundle():
    return load_model("default")


def test_model_folder_is_small_and_safetensors_only():
    files = {p.name: p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir()}
    assert "model.safetensors" in files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    assert sum(files.values()) <= 60 * 1024 * 1024


def test_loads_by_name_and_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bundle = load_model("default")
    assert bundle.family == "marian" and bundle.name == "default"


def test_translates_held_out_multi30k(default_bundle, data_dir):
    """Multi30k test_2016 was never trained on; the full set scores chrF 58, so 45 on 40 lines is a floor."""
    m30 = data_dir / "train" / "multi30k-deen"
    with gzip.open(m30 / "test_2016_flickr.de.gz", "rt", encoding="utf-8") as f:
        src = [next(f).strip() for _ in range(40)]
    with gzip.open(m30 / "test_2016_flickr.en.gz", "rt", encoding="utf-8") as f:
        ref = [next(f).strip() for _ in range(40)]
    hyps = translate(default_bundle, src)
    assert sacrebleu.corpus_chrf(hyps, [ref]).score > 45


def test_alignment_of_a_simple_sentence(default_bundle):
    """On a sentence it translates word for word, naive attention of the best layer links the obvious pairs."""
    rec = extract(default_bundle, ["Der Hund schläft ."], ["The dog sleeps ."])[0]
    from aligndebug.align import align_record

    links = align_record(rec, method="naive", layer=1)
    assert (1, 1) in links  # Hund - dog
    assert (2, 2) in links  # schläft - sleeps


def test_triage_ranks_a_degenerate_line_first(default_bundle, data_dir):
    """Issue 16's real-data case: a system output of 'the employer' and then hundreds of dots is too long for the
    model, yet the run goes on and ranks it first, as a repetition, among ordinary forced references."""
    from aligndebug.runner import run_triage

    d = data_dir / "heldout" / "europarl-deen-500"
    src = (d / "test.de").read_text(encoding="utf-8").splitlines()[:40]
    tgt = (d / "test.en").read_text(encoding="utf-8").splitlines()[:40]
    tgt[7] = "the employer " + " ".join(["."] * 300)
    rows = run_triage(default_bundle, src, tgt, batch_size=16, max_variants=20)
    top = rows[0]
    assert top["id"] == 7 and top["flags"][:2] == ["too_long_for_model", "repetition"]
    assert top["reasons"][1].startswith("most like a repetition error")
    assert rows.unusable == {"too_long_for_model": 1}
    # the embedded aligner runs on its own model's triage pass, and the calibration names it
    from aligndebug.learned import aligner_id, triage_aligner

    usable = [r for r in rows if "unusable" not in r]
    assert all(0 <= r["unaligned_target"] <= 1 and 0 <= r["unaligned_source"] <= 1 for r in usable)
    assert rows.calibration.settings["aligner"] == aligner_id(triage_aligner(default_bundle)) is not None
    assert {"unaligned_target", "unaligned_source"} <= set(rows.calibration.combiner["signals"])
    with pytest.raises(ValueError, match=r"aligner '[0-9a-f]+' there, None here"):
        run_triage(default_bundle, src[:3], tgt[:3], calibration=rows.calibration, aligner="none")


def test_the_aligner_signals_find_a_references_added_and_left_out_words(default_bundle):
    """The embedded aligner's two signals on hand-made cases: a reference that says what its source does, one
    that goes on past its source (words with no source) and one that leaves half the source out."""
    from aligndebug.runner import signal_rows

    src = ["Ich danke der Kommission für ihre Antwort .", "Ich danke der Kommission für ihre Antwort .",
           "Ich danke der Kommission für ihre Antwort und dem Rat für seine Unterstützung ."]
    tgt = ["I thank the Commission for its answer .",
           "I thank the Commission for its answer , and the weather in Brussels was very cold yesterday .",
           "I thank the Commission ."]
    full, added, omitted = signal_rows(default_bundle, src, tgt)
    assert added["unaligned_target"] > full["unaligned_target"] + 0.1 and added["unaligned_source"] == 0
    assert omitted["unaligned_source"] > full["unaligned_source"] + 0.3
    # the words the reasons name: what was left out, and what the source does not say
    assert {"Rat", "Unterstützung"} <= set(omitted["unaligned_source_words"]) and not full["unaligned_source_words"]
    assert "weather" in added["unaligned_target_words"] and not full["unaligned_target_words"]
