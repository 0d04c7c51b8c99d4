"""Contrastive explanations (aligndebug.contrast) and contrastive suites (aligndebug.suite), on tiny models.

The contrastive attribution is checked against an independent computation: plain Integrated Gradients of
each side (attribution.integrated_gradients, the public function) subtracted, which IG's linearity says it
must equal; log-probs against the Records of a separate extraction.
"""

from __future__ import annotations

import copy
import json
from itertools import combinations

import numpy as np
import pytest

import tiny_models as tm
from aligndebug.attribution import integrated_gradients
from aligndebug.cli import main
from aligndebug.contrast import contrast, contrastive_ig, differing_spans, span_rows
from aligndebug.errors import InputError
from aligndebug.extract import extract
from aligndebug.models import ModelBundle
from aligndebug.suite import (
    SuiteOptions,
    bootstrap_ci,
    read_suite,
    render_html,
    run_suite,
    summarize,
    top_chance,
)

SRC = "Der Hund schläft ."


# ------------------------------------------------------------------------------ plain functions

def test_differing_spans_are_found_anywhere_not_assumed_at_the_end():
    a = "The dog sleeps in the big garden .".split()
    b = "The cat sleeps in the garden today .".split()
    assert differing_spans(a, b) == [("replace", 1, 2, 1, 2), ("delete", 5, 6, 5, 5), ("insert", 7, 7, 6, 7)]
    assert differing_spans(a, a) == []


def test_span_rows_of_words_and_of_empty_spans():
    ids = np.array([-1, 0, 1, 1, 2, -1])  # e.g. BART: <s> w0 w1 w1 w2 </s>
    assert span_rows(ids, 1, 2).tolist() == [2, 3]
    assert span_rows(ids, 0, 3).tolist() == [1, 2, 3, 4]
    assert span_rows(ids, 2, 2).tolist() == [4]  # empty span before word 2: the row after word 1
    assert span_rows(ids, 3, 3).tolist() == [5]  # at the end: </s>
    assert span_rows(ids, 0, 0).tolist() == [1]


# ------------------------------------------------------------------------------ contrast on tiny models

def test_contrast_of_a_target_with_itself_is_zero_everywhere(tiny_bundle):
    b = tiny_bundle("marian")
    res = contrast(b, SRC, "The dog sleeps .", "The dog sleeps .", steps=8)
    assert res.positions == [] and res.difference == 0.0
    # forced to explain every row anyway, the contrastive IG of a target against itself is zero
    rec = extract(b, [SRC], ["The dog sleeps ."])[0]
    rows = [([t], [t]) for t in range(len(rec.label_ids))]
    ig = contrastive_ig(b, rec.src_ids, (rec.dec_ids, rec.label_ids), (rec.dec_ids, rec.label_ids), rows, steps=8)
    assert np.all(ig.f_x == 0) and np.all(ig.f_baseline == 0)
    assert np.abs(ig.source).max() <= 1e-9 and ig.delta.max() <= 1e-9


@pytest.mark.parametrize("family", ["marian", "bart", "mbart", "m2m100", "t5"])
def test_contrastive_attribution_is_the_difference_of_the_two_attributions(tiny_bundle, family):
    b = tiny_bundle(family)
    good, bad = "The dog sleeps .", "The cat sleeps ."
    res = contrast(b, SRC, good, bad, steps=16)
    assert len(res.positions) == 1
    pos = res.positions[0]
    assert (pos.kind, pos.target_span, pos.contrast_span) == ("replace", (1, 2), (1, 2))
    rg, rb = extract(b, [SRC, SRC], [good, bad])
    assert [rg.tgt_word_ids[t] for t in pos.target_rows] == [1] * len(pos.target_rows)
    # log-probs of the span, from an independent extraction
    assert pos.logprob_target == pytest.approx(float(rg.token_logprobs[pos.target_rows].sum()), rel=1e-4, abs=1e-5)
    assert pos.logprob_contrast == pytest.approx(float(rb.token_logprobs[pos.contrast_rows].sum()), rel=1e-4, abs=1e-5)
    assert pos.difference == pytest.approx(pos.logprob_target - pos.logprob_contrast)
    assert res.difference == pytest.approx(float(rg.token_logprobs.sum() - rb.token_logprobs.sum()), rel=1e-4, abs=1e-5)
    # plain IG of each side (public function), rows summed, then subtracted
    ig_g = integrated_gradients(b.model, rg.src_ids, rg.dec_ids, rg.label_ids, steps=16, rows=pos.target_rows)
    ig_b = integrated_gradients(b.model, rb.src_ids, rb.dec_ids, rb.label_ids, steps=16, rows=pos.contrast_rows)
    diff = ig_g.source.sum(0) - ig_b.source.sum(0)
    tol = pos.delta + ig_g.delta.sum() + ig_b.delta.sum() + 1e-4 * np.abs(diff).max()
    assert np.abs(np.asarray(pos.attribution_tokens) - diff).max() <= tol
    # completeness of the difference, and the word pooling keeps the sum of the non-special tokens
    total = float(np.sum(pos.attribution_tokens))
    # (the batched extraction and IG's own pass agree to float precision, not bit for bit)
    assert abs(total - (pos.difference - pos.f_baseline)) <= pos.delta + 1e-5 * max(1.0, abs(pos.difference))
    words = np.asarray(rg.src_word_ids) >= 0
    assert np.sum(pos.attribution) == pytest.approx(float(np.asarray(pos.attribution_tokens)[words].sum()), rel=1e-6)
    assert len(pos.attribution) == len(res.source_words) == len(pos.attention_target)
    assert sum(pos.attention_target) <= 1.0 + 1e-5 and min(pos.attention_target) >= 0


def test_several_differing_positions_match_one_at_a_time(tiny_bundle):
    """The vmapped backward over positions gives each position what a lone run of it gives."""
    b = tiny_bundle("marian")
    good, bad = "The dog sleeps in the garden .", "The cat sleeps in garden today ."
    res = contrast(b, SRC, good, bad, steps=8)
    assert [p.kind for p in res.positions] == ["replace", "delete", "insert"]
    rg, rb = extract(b, [SRC, SRC], [good, bad])
    for p in res.positions:
        lone = contrastive_ig(b, rg.src_ids, (rg.dec_ids, rg.label_ids), (rb.dec_ids, rb.label_ids),
                              [(p.target_rows, p.contrast_rows)], steps=8)
        scale = np.abs(lone.source).max()
        assert np.abs(np.asarray(p.attribution_tokens) - lone.source[0]).max() <= 1e-4 * scale + 1e-7
        assert p.delta == pytest.approx(float(lone.delta[0]), rel=1e-3, abs=1e-6)


def test_more_steps_close_the_completeness_gap(tiny_bundle):
    b = tiny_bundle("marian")
    gaps = [contrast(b, SRC, "The dog sleeps .", "The cat sleeps .", steps=s).positions[0].relative_delta
            for s in (2, 32)]
    assert gaps[1] < 0.05 and gaps[1] <= gaps[0]


def test_to_dict_is_json(tiny_bundle):
    import json

    res = contrast(tiny_bundle("marian"), SRC, "The dog sleeps .", "The cat sleeps .", steps=4)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["positions"][0]["target_text"] == "dog" and d["positions"][0]["contrast_text"] == "cat"
    assert d["difference"] == pytest.approx(res.difference)


# ------------------------------------------------------------------------------ suites: reading



def write_tsv(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("bad, message", [
    ("Der Hund schläft .\tThe dog sleeps .", "found 2 tab-separated column(s)"),
    ("a\tb\tc\td\te", "found 5 tab-separated column(s)"),
    ("Der Hund schläft .\t \tThe cat sleeps .", "the correct target is empty"),
    ("Der Hund schläft .\tThe dog sleeps .\tThe  dog sleeps .", "the same words"),
    ("Der Hund schläft .\tThe dog sleeps .\tThe cat sleeps .\tmarker=x", "bad marker tag"),
    ("Der Hund schläft .\tThe dog sleeps .\tThe cat sleeps .\tmarker=0,4", "outside the source's 4 words"),
])
def test_a_bad_suite_line_names_its_file_and_line(tmp_path, bad, message):
    path = write_tsv(tmp_path / "s.tsv", ["# a comment", "Der Hund schläft .\tThe dog sleeps .\tThe cat sleeps .", "", bad])
    with pytest.raises(InputError) as err:
        read_suite(path)
    assert err.value.path == str(path) and err.value.line == 4 and message in err.value.message
    assert str(err.value).startswith(f"{path}:4: ")


def test_read_suite_keeps_lines_tags_and_markers(tmp_path):
    path = write_tsv(tmp_path / "s.tsv", ["# header", "", "Der Hund schläft .\tThe dog sleeps .\tThe cat sleeps .",
                                          "Die Katze trinkt Milch .\tThe cat drinks milk .\tThe dog drinks milk .\tx=1 marker=0,1"])
    items = read_suite(path)
    assert [(i.index, i.line) for i in items] == [(0, 3), (1, 4)]
    assert items[0].tags == [] and items[1].tags == ["x=1", "marker=0,1"] and items[1].markers == [0, 1]


def test_the_gender_probe_is_well_formed(data_dir):
    items = read_suite(data_dir / "probes" / "gender-de-en.tsv")
    occ = {t for i in items for t in i.tags if t.startswith("occ=")}
    assert len(occ) >= 40 and len(items) == 2 * len(occ) * 5
    for it in items:
        tags = dict(t.split("=", 1) for t in it.tags)
        art = it.source.split()[0]
        assert art == {"fem": "Die", "masc": "Der"}[tags["gender"]]
        assert tags["gender"] == "masc" or it.source.split()[1].endswith("in")
        assert tags["stereotype"] == ("female" if int(tags["bls_female"]) > 50 else "male")
        good, bad = it.correct.split(), it.wrong.split()
        diff = [(g, b) for g, b in zip(good, bad) if g != b]
        assert len(good) == len(bad) and len(diff) == 1
        assert diff[0][0] in ({"he", "his"} if tags["gender"] == "masc" else {"she", "her"})
        if tags["kind"] == "possessive":  # no pronoun in the German: only the subject's marking fixes it
            assert not {"er", "sie", "ihr", "ihre", "sein", "seine"} & set(it.source.split())


# ------------------------------------------------------------------------------ suites: pure summaries

def test_top_chance_is_the_hypergeometric_rate():
    for n, m, k in [(6, 2, 2), (8, 2, 1), (5, 2, 3), (4, 3, 2)]:
        hits = [bool(set(range(m)) & set(c)) for c in combinations(range(n), k)]
        assert top_chance(n, m, k) == pytest.approx(sum(hits) / len(hits))


def test_summary_counts_tags_gender_gap_and_markers():
    def row(passed, gender, stereo, ranking):
        return {"pass": passed, "tags": [f"gender={gender}", f"stereotype={stereo}", "marker=0,1"], "markers": [0, 1],
                "ranking": ranking, "marker_attribution": 1.0 if passed else -1.0, "positions": []}

    rows = ([row(True, "masc", "male", [0, 2, 3, 1])] * 3 + [row(False, "masc", "female", [2, 3, 0, 1])]
            + [row(True, "fem", "female", [1, 2, 3, 0])] + [row(False, "fem", "male", [2, 3, 1, 0])] * 3)
    s = summarize(rows, n_boot=200, top_k=2)
    assert s["overall"]["accuracy"] == 0.5 and s["per_tag"]["gender=masc"]["accuracy"] == 0.75
    g = s["gender"]
    assert g["fem"]["accuracy"] == 0.25 and g["gap"]["value"] == pytest.approx(0.5)
    assert g["pro"]["n"] == 4 and g["pro"]["accuracy"] == 1.0 and g["anti"]["accuracy"] == 0.0
    assert g["by_stereotype"]["fem/male"]["accuracy"] == 0.0
    assert s["markers"]["rate"] == pytest.approx(4 / 8)  # top-2 holds 0 or 1 in the first three rows and the fifth
    assert s["markers"]["chance"] == pytest.approx(top_chance(4, 2, 2))
    assert g["markers_masc_top1"]["rate"] == pytest.approx(3 / 4)
    lo, hi = s["overall"]["ci"]
    assert lo <= 0.5 <= hi and 0 <= lo < hi <= 1
    assert bootstrap_ci([1.0] * 10) == (1.0, 1.0)


def test_html_escapes_all_text():
    rows = [{"index": 0, "line": 1, "source": "<script>alert(1)</script> &", "correct": "<b>x</b>", "wrong": "y\"z",
             "tags": ["t=<i>"], "pass": False, "difference": -1.0, "source_words": ["<script>", "&"],
             "positions": [{"correct_text": "<b>x</b>", "wrong_text": "y\"z", "logprob_correct": -2.0,
                            "logprob_wrong": -1.0, "attribution": [0.5, -0.25], "attention": [0.7, 0.3],
                            "relative_delta": 0.01}]}]
    html = render_html(rows, summarize(rows, n_boot=10))
    assert "<script>" not in html and "<b>x</b>" not in html and "&lt;script&gt;" in html and "t=&lt;i&gt;" in html
    assert "+0.50" in html and "-0.25" in html  # the heatmap's cells


# ------------------------------------------------------------------------------ suites: on a tiny model

PAIRS = list(zip(tm.DE[:8], tm.EN[:8]))


def zebra_suite(tmp_path):
    """Wrong targets: the correct one with word 1 replaced by 'zebra'."""
    lines = []
    for de, en in PAIRS:
        words = en.split()
        lines.append(f"{de}\t{en}\t{' '.join(words[:1] + ['zebra'] + words[2:])}\tn={len(words)}")
    return write_tsv(tmp_path / "zebra.tsv", lines)


def test_a_suite_whose_wrong_targets_are_made_unlikely_passes_all(tiny_bundle, tmp_path):
    base = tiny_bundle("marian")
    tok = base.tokenizer
    from aligndebug.words import encode_words

    in_correct = {t for _, en in PAIRS for t in encode_words(tok, en.split(), target=True)[0]}
    banned = sorted(set(encode_words(tok, ["zebra"], target=True)[0]) - in_correct)
    assert banned  # some token of 'zebra' occurs in no correct target
    model = copy.deepcopy(base.model)  # the shared bundle stays untouched
    model.final_logits_bias[0, banned] = -1e4  # the model can (almost) never emit them
    bundle = ModelBundle.from_objects(model, tok, name="tiny-no-zebra")
    items = read_suite(zebra_suite(tmp_path))
    rows = run_suite(bundle, items, SuiteOptions(steps=4, chunk_size=3))
    assert [r["index"] for r in rows] == list(range(len(PAIRS)))
    assert all(r["pass"] and r["logprob_wrong"] < -1000 for r in rows)
    assert summarize(rows)["overall"]["accuracy"] == 1.0
    # attribution only for failing items: here none, so no row carries one; the log-probs are unchanged
    lean = run_suite(bundle, items, SuiteOptions(steps=4, attribute="failing"))
    assert all("ranking" not in r and r["positions"][0]["attribution"] == [] for r in lean)
    assert [r["difference"] for r in lean] == pytest.approx([r["difference"] for r in rows], rel=1e-5)
    for r in rows:
        p = r["positions"][0]
        assert (p["correct_span"], p["wrong_span"]) == ([1, 2], [1, 2]) and p["wrong_text"] == "zebra"
        assert len(p["attribution"]) == len(r["source_words"]) == len(r["ranking"])


def test_suite_rows_resume_after_a_torn_write(tiny_bundle, tmp_path):
    bundle = tiny_bundle("marian")
    items = read_suite(zebra_suite(tmp_path))
    opts = SuiteOptions(steps=4, chunk_size=3)
    full = run_suite(bundle, items, opts, rows_path=tmp_path / "full.jsonl")
    lines = (tmp_path / "full.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == len(items)
    part = tmp_path / "part.jsonl"
    part.write_text("".join(lines[:4]) + lines[4][: len(lines[4]) // 2], encoding="utf-8")  # killed mid-line
    seen = []
    resumed = run_suite(bundle, items, opts, rows_path=part, resume=True, on_progress=seen.append)
    assert seen[0] == 4 and sum(seen) == len(items)
    again = [json.loads(x) for x in part.read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in again] == list(range(len(items)))  # each item once, in order
    for a, b in zip(again, full):
        assert a["pass"] == b["pass"] and a["difference"] == pytest.approx(b["difference"], rel=1e-4, abs=1e-5)
    assert [r["index"] for r in resumed] == list(range(len(items)))
    # a rows file of another suite is refused, naming its line
    other = write_tsv(tmp_path / "other.tsv", ["Der Hund bellt laut .\tThe dog barks loudly .\tThe cat barks loudly ."])
    with pytest.raises(InputError) as err:
        run_suite(bundle, read_suite(other), opts, rows_path=part, resume=True)
    assert err.value.path == str(part) and err.value.line == 1


# ------------------------------------------------------------------------------ CLI

def test_cli_contrast_json_and_table(capsys, model_dir, tiny_bundle):
    args = ["contrast", "--model", str(model_dir), "--source", SRC, "--target", "The dog sleeps .",
            "--contrast", "The cat sleeps .", "--ig-steps", "4"]
    assert main(args + ["--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [p["target_text"] for p in d["positions"]] == ["dog"] and len(d["positions"][0]["attribution"]) == 4
    api = contrast(tiny_bundle("marian"), SRC, "The dog sleeps .", "The cat sleeps .", steps=4)
    assert d["difference"] == pytest.approx(api.difference, rel=1e-4, abs=1e-5)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "'dog' vs 'cat'" in out and "contrastive IG" in out


def test_cli_suite_rows_summary_html_and_errors(capsys, tmp_path, model_dir, bundle):
    suite = zebra_suite(tmp_path)
    out, html, summ = tmp_path / "rows.jsonl", tmp_path / "r.html", tmp_path / "s.json"
    args = ["suite", "--model", str(model_dir), "--suite", str(suite), "--out", str(out), "--html", str(html),
            "--summary-json", str(summ), "--ig-steps", "4", "--no-progress"]
    assert main(args) == 0
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    # pass = the correct target's log-prob is higher, checked against an independent extraction
    recs = extract(bundle, [de for de, _ in PAIRS] * 2, [r["correct"] for r in rows] + [r["wrong"] for r in rows])
    n = len(rows)
    for k, r in enumerate(rows):
        assert r["pass"] == bool(recs[k].token_logprobs.sum() > recs[n + k].token_logprobs.sum())
    s = json.loads(summ.read_text(encoding="utf-8"))
    assert s["overall"]["accuracy"] == pytest.approx(sum(r["pass"] for r in rows) / n) and s["overall"]["n"] == n
    text = html.read_text(encoding="utf-8")
    assert f"Failing items ({sum(not r['pass'] for r in rows)})" in text
    assert "overall" in capsys.readouterr().out
    assert main(args + ["--resume"]) == 0 and len(out.read_text(encoding="utf-8").splitlines()) == n
    # a missing column stops with FILE:LINE and exit code 2
    bad = write_tsv(tmp_path / "bad.tsv", ["Der Hund schläft .\tThe dog sleeps .\tThe cat sleeps .", "nur eine Spalte"])
    capsys.readouterr()
    assert main(["suite", "--model", str(model_dir), "--suite", str(bad), "--no-progress"]) == 2
    assert f"{bad}:2:" in capsys.readouterr().err
