"""Learned aligner: trains and loads on every family, recovers a known alignment, refuses a foreign model."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import tiny_models
from aligndebug.align import align_grid
from aligndebug.extract import encode_pair, extract
from aligndebug.learned import (CARD, WEIGHTS, AlignerMismatchError, LearnedAligner, links_from_word_matrix,
                                load_aligner, model_fingerprint, silver_targets)
from aligndebug.learned_train import train_aligner
from aligndebug.metrics import corpus_counts

DE = [s.split() for s in tiny_models.DE[:8]]
EN = [s.split() for s in tiny_models.EN[:8]]
# monotone silver links up to the shorter length: a stand-in teacher
SILVER = [{(i, i) for i in range(min(len(s), len(t)))} for s, t in zip(DE, EN)]


@pytest.mark.parametrize("family", tiny_models.FAMILIES)
def test_trains_saves_and_loads_on_every_family(tiny_bundle, family, tmp_path):
    bundle = tiny_bundle(family)
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    aligner = train_aligner(bundle, DE, EN, SILVER, tmp_path / "al", objective="both", epochs=2, batch_size=4,
                            dev=(DE[:3], EN[:3], SILVER[:3]), progress=False, log=lambda m: None)
    # the frozen model is untouched, and the module is small next to it
    after = bundle.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in bundle.model.parameters())
    card = json.loads((tmp_path / "al" / CARD).read_text())
    assert (tmp_path / "al" / WEIGHTS).exists()
    assert card["base_model"] == bundle.name and card["fingerprint"] == model_fingerprint(bundle.model)
    assert card["objective"] == "both" and card["steps"] >= 2
    assert [e["epoch"] for e in card["aer_curve"]] == [1, 2] and all(0 <= e["dev_aer"] <= 1 for e in card["aer_curve"])
    loaded = load_aligner(tmp_path / "al", bundle)
    a = aligner.align(bundle, DE[:4], EN[:4])
    b = loaded.align(bundle, DE[:4], EN[:4])
    assert a == b
    for links, s, t in zip(a, DE, EN):
        assert all(0 <= i < len(s) and 0 <= j < len(t) for i, j in links)
        assert len({j for _, j in links}) == len(links)  # argmax: at most one source word per target word


def test_self_objective_needs_no_links_and_runs_causal(tiny_bundle, tmp_path):
    bundle = tiny_bundle("marian")
    aligner = train_aligner(bundle, DE, EN, None, tmp_path / "self", objective="self", epochs=1, batch_size=4,
                            progress=False, log=lambda m: None)
    assert aligner.config.context == "causal"
    losses = aligner.losses(bundle, [encode_pair(bundle, DE[0], EN[0])], None)
    assert set(losses) == {"self", "loss"} and float(losses["self"].detach()) > 0
    with pytest.raises(ValueError, match="needs silver links"):
        train_aligner(bundle, DE, EN, None, tmp_path / "sup", objective="supervised", progress=False)


def test_a_full_context_query_sees_later_target_tokens_and_a_causal_one_does_not(tiny_bundle):
    bundle = tiny_bundle("marian")
    full = LearnedAligner.new(bundle, objective="supervised", seed=1)
    self_ = LearnedAligner.new(bundle, objective="self", seed=1)
    a = encode_pair(bundle, DE[0], EN[0])
    b = encode_pair(bundle, DE[0], EN[0][:-1] + ["Katze"])  # differs only in the last word
    for al, same in ((full, False), (self_, True)):
        al.module.eval()
        pa, pb = al.token_distributions(bundle, [a])[0], al.token_distributions(bundle, [b])[0]
        first = np.allclose(pa[0], pb[0], rtol=1e-4, atol=1e-6)  # row 0: the first target token
        assert first == same


def test_silver_targets_spread_over_subwords_and_send_unaligned_words_to_the_null_slot(tiny_bundle):
    bundle = tiny_bundle("marian")
    enc = encode_pair(bundle, ["Milchkaffee", "heiß"], ["hot", "milk", "coffee", "!"])
    q, rows = silver_targets([enc], [{(0, 1), (0, 2), (1, 0)}], len(enc.label_ids), len(enc.src_ids))
    sw, tw = enc.src_word_ids, enc.tgt_word_ids
    np.testing.assert_allclose(q[0][rows[0]].sum(1), 1.0, rtol=1e-6)
    milk = np.flatnonzero(tw == 1)[0]
    np.testing.assert_allclose(q[0, milk], (sw == 0) / (sw == 0).sum(), rtol=1e-6)
    bang = np.flatnonzero(tw == 3)[0]  # "!" has no link: its mass sits on the special source tokens
    np.testing.assert_allclose(q[0, bang], (sw < 0) / (sw < 0).sum(), rtol=1e-6)
    assert not rows[0][tw < 0].any()


def test_silver_targets_of_two_teachers_are_the_mean_of_their_distributions(tiny_bundle):
    bundle = tiny_bundle("marian")
    enc = encode_pair(bundle, ["Milchkaffee", "heiß"], ["hot", "milk", "coffee", "!"])
    t, s = len(enc.label_ids), len(enc.src_ids)
    a, b = {(0, 1), (0, 2), (1, 0)}, {(1, 0), (1, 1), (0, 3)}
    qa, ra = silver_targets([enc], [a], t, s)
    qb, rb = silver_targets([enc], [b], t, s)
    q, rows = silver_targets([enc], [(a, b)], t, s)
    np.testing.assert_allclose(q, (qa + qb) / 2, rtol=1e-6)
    assert (rows == (ra | rb)).all()
    sw, tw = enc.src_word_ids, enc.tgt_word_ids
    milk = np.flatnonzero(tw == 1)[0]  # teacher a: Milchkaffee; teacher b: heiß -> half the mass on each word
    np.testing.assert_allclose(q[0, milk], 0.5 * (sw == 0) / (sw == 0).sum() + 0.5 * (sw == 1) / (sw == 1).sum(),
                               rtol=1e-6)
    # a teacher without links for the pair (None) leaves the other's targets as they are
    q1, _ = silver_targets([enc], [(a, None)], t, s)
    np.testing.assert_allclose(q1, qa, rtol=1e-6)
    q0, r0 = silver_targets([enc], [(None, None)], t, s)
    assert not r0.any() and not q0.any()


def test_training_can_start_from_another_aligner(tiny_bundle, tmp_path):
    bundle = tiny_bundle("marian")
    first = train_aligner(bundle, DE, EN, SILVER, tmp_path / "a", epochs=1, batch_size=4, progress=False,
                          log=lambda m: None)
    mixed = [(s, {(0, 0)}) for s in SILVER]
    # learning rate 0: the weights stay exactly those it started from
    same = train_aligner(bundle, DE, EN, mixed, tmp_path / "b", epochs=1, batch_size=4, lr=0.0, progress=False,
                         log=lambda m: None, init=tmp_path / "a", layers=-1, dim=8)
    assert same.config == first.config  # the shape comes from the init, not from layers/dim
    for k, v in first.module.state_dict().items():
        torch.testing.assert_close(same.module.state_dict()[k], v)
    moved = train_aligner(bundle, DE, EN, mixed, tmp_path / "c", epochs=1, batch_size=4, progress=False,
                          log=lambda m: None, init=tmp_path / "a", seed=3)
    assert moved.card["init"]["from"] == str(tmp_path / "a") and moved.card["steps"] == 2
    assert moved.card["init"]["steps"] == first.card["steps"] == 2  # the start is described in the card
    assert any(not torch.equal(moved.module.state_dict()[k], v) for k, v in first.module.state_dict().items())
    with pytest.raises(ValueError, match="objective"):
        train_aligner(bundle, DE, EN, mixed, tmp_path / "d", objective="self", epochs=1, batch_size=4,
                      progress=False, log=lambda m: None, init=tmp_path / "a")


def test_null_column_leaves_a_word_unaligned():
    mat = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])  # 2 target words, 2 source words + null
    assert links_from_word_matrix(mat) == {(0, 0)}
    assert links_from_word_matrix(mat, "threshold", 0.15) == {(0, 0), (1, 0), (1, 1)}


def _permuted_pairs(n: int, rng: random.Random) -> tuple[list[list[str]], list[list[str]], list[set]]:
    vocab = sorted({w for s in tiny_models.DE for w in s.split() if w.isalpha()})[:24]
    src, tgt, links = [], [], []
    for _ in range(n):
        words = rng.sample(vocab, rng.randint(3, 7))
        perm = list(range(len(words)))
        rng.shuffle(perm)
        src.append(words)
        tgt.append([words[p] for p in perm])  # target word j is source word perm[j]
        links.append({(p, j) for j, p in enumerate(perm)})
    return src, tgt, links


def test_synthetic_permutation_is_recovered_where_raw_attention_fails(tiny_bundle, tmp_path):
    bundle = tiny_bundle("marian")  # an untrained random model: its attention knows nothing of the task
    rng = random.Random(7)
    src, tgt, links = _permuted_pairs(400, rng)
    tsrc, ttgt, tlinks = _permuted_pairs(60, rng)
    aligner = train_aligner(bundle, src, tgt, links, tmp_path / "perm", epochs=20, batch_size=16, lr=1e-2, dim=32,
                            progress=False, log=lambda m: None)
    learned = corpus_counts(aligner.align(bundle, tsrc, ttgt), tlinks)
    assert learned.aer < 0.05, learned
    records = extract(bundle, tsrc, ttgt, keep=("cross",))
    best_raw = 1.0
    for method in ("naive", "shift-att"):
        grids = [align_grid(r, method) for r in records]
        for key in grids[0]:
            best_raw = min(best_raw, corpus_counts([g[key] for g in grids], tlinks).aer)
    assert best_raw > 0.3, best_raw


def test_an_aligner_is_refused_on_another_model(tiny_bundle, tmp_path):
    marian, t5 = tiny_bundle("marian"), tiny_bundle("t5")
    train_aligner(marian, DE, EN, SILVER, tmp_path / "m", epochs=1, batch_size=4, progress=False, log=lambda m: None)
    with pytest.raises(AlignerMismatchError, match=r"trained for model .* but the loaded model is"):
        load_aligner(tmp_path / "m", t5)
    al = load_aligner(tmp_path / "m")  # no model given: loads, and refuses at use
    with pytest.raises(AlignerMismatchError):
        al.align(t5, DE[:1], EN[:1])


def test_fingerprint_changes_with_one_weight(tiny_bundle):
    import copy

    model = copy.deepcopy(tiny_bundle("marian").model)
    before = model_fingerprint(model)
    with torch.no_grad():
        p = next(iter(model.parameters())).view(-1)
        p[p.numel() // 2] += 0.5
    assert model_fingerprint(model) != before


def test_fingerprint_is_that_of_the_same_model_in_half_precision(tiny_bundle):
    """`load_model(..., device="cuda")` halves the model: an aligner trained on it in float32 must accept it."""
    import copy

    model = tiny_bundle("marian").model
    assert model_fingerprint(copy.deepcopy(model).half()) == model_fingerprint(model)


def test_not_an_aligner_folder(tmp_path):
    from aligndebug.models import ModelLoadError

    with pytest.raises(ModelLoadError, match="is not an aligner folder"):
        load_aligner(tmp_path)


def test_resume_continues_from_the_checkpoint(tiny_bundle, tmp_path):
    bundle = tiny_bundle("marian")
    out = tmp_path / "r"
    train_aligner(bundle, DE, EN, SILVER, out, epochs=1, batch_size=4, progress=False, log=lambda m: None)
    msgs: list[str] = []
    al = train_aligner(bundle, DE, EN, SILVER, out, epochs=2, batch_size=4, progress=False, log=msgs.append)
    assert any(m.startswith("resuming from") and "epoch 2" in m for m in msgs)
    assert al.card["steps"] == 4 and len(al.card["aer_curve"]) == 2  # 2 batches an epoch, 2 epochs, none redone


# ------------------------------------------------------------------------------------ command line

def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_cli_train_score_inspect(model_dir, tmp_path, capsys):
    from aligndebug.cli import main

    src = _write(tmp_path / "s.de", [" ".join(s) for s in DE])
    tgt = _write(tmp_path / "t.en", [" ".join(t) for t in EN])
    silver = _write(tmp_path / "silver.align", [" ".join(f"{i}-{j}" for i, j in sorted(ls)) for ls in SILVER])
    out = tmp_path / "al"
    assert main(["train-aligner", "--model", str(model_dir), "--src", str(src), "--tgt", str(tgt), "--silver",
                 str(silver), "--epochs", "1", "--batch-size", "4", "--no-progress", "--out", str(out)]) == 0
    card = json.loads((out / CARD).read_text())
    assert card["objective"] == "supervised" and card["steps"] == 2
    capsys.readouterr()
    summary = tmp_path / "sum.json"
    rows = tmp_path / "rows.jsonl"
    assert main(["score", "--model", str(model_dir), "--method", "learned", "--aligner", str(out), "--src", str(src),
                 "--tgt", str(tgt), "--gold", str(silver), "--gold-base", "0", "--decode", "bidir", "--no-progress",
                 "--summary-json", str(summary), "--out", str(rows)]) == 0
    res = json.loads(summary.read_text())
    assert res["sentences"] == len(DE) and 0 <= res["aer"] <= 1
    assert "|method:learned:al|" in res["signature"] and "|decode:bidir|" in res["signature"]
    assert "|thr:0.1|" in res["signature"]
    got = [json.loads(line) for line in rows.read_text().splitlines()]
    # the rows' per-sentence counts add up to the corpus AER
    c = corpus_counts([{tuple(map(int, x.split("-"))) for x in r["links"].split()} for r in got], SILVER)
    assert abs(c.aer - res["aer"]) <= 1e-9 * max(1.0, res["aer"])
    capsys.readouterr()
    assert main(["inspect", "--model", str(model_dir), "--method", "learned", "--aligner", str(out),
                 "--source", " ".join(DE[0]), "--target", " ".join(EN[0]), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    mat = np.asarray(shown["word_alignment"])
    assert mat.shape == (len(EN[0]), len(DE[0]))
    np.testing.assert_allclose(mat.sum(1) + np.asarray(shown["no_source"]), 1.0, rtol=1e-3)
    # argmax links: one per target word whose largest mass is on a source word
    assert {j for _, j in shown["links"]} == {j for j in range(len(EN[0])) if mat[j].max() >= shown["no_source"][j]}


def test_cli_train_aligner_several_teachers_and_init(model_dir, tmp_path, capsys):
    """--silver twice trains on the mean of the two teachers' distributions; --init continues from an aligner."""
    from safetensors.torch import load_file

    from aligndebug.cli import main

    src = _write(tmp_path / "s.de", [" ".join(s) for s in DE])
    tgt = _write(tmp_path / "t.en", [" ".join(t) for t in EN])
    one = _write(tmp_path / "one.align", [" ".join(f"{i}-{j}" for i, j in sorted(ls)) for ls in SILVER])
    # a second teacher that links every target word to the first source word
    two = _write(tmp_path / "two.align", [" ".join(f"0-{j}" for j in range(len(t))) for t in EN])
    base = ["train-aligner", "--model", str(model_dir), "--src", str(src), "--tgt", str(tgt), "--epochs", "1",
            "--batch-size", "4", "--no-progress", "--seed", "3"]
    assert main(base + ["--silver", str(one), "--out", str(tmp_path / "a")]) == 0
    assert main(base + ["--silver", str(one), "--silver", str(two), "--out", str(tmp_path / "ab")]) == 0
    card = json.loads((tmp_path / "ab" / CARD).read_text())
    assert str(one) in card["data"] and str(two) in card["data"]
    wa, wab = load_file(str(tmp_path / "a" / WEIGHTS)), load_file(str(tmp_path / "ab" / WEIGHTS))
    assert any(not torch.allclose(wa[k], wab[k]) for k in wa)  # same seed, other targets: other weights
    # --init: starts from the first aligner, records it; with --lr 0 the weights stay those of the start
    assert main(base + ["--silver", str(one), "--init", str(tmp_path / "a"), "--lr", "0",
                        "--out", str(tmp_path / "cont")]) == 0
    card = json.loads((tmp_path / "cont" / CARD).read_text())
    assert card["init"]["from"] == str(tmp_path / "a") and card["init"]["steps"] == 2
    cont = load_file(str(tmp_path / "cont" / WEIGHTS))
    assert all(torch.equal(wa[k], cont[k]) for k in wa)
    capsys.readouterr()
    assert main(base + ["--silver", str(one), "--init", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "nowhere is not an aligner folder" in capsys.readouterr().err
    assert main(base + ["--objective", "self", "--init", str(tmp_path / "a"), "--out", str(tmp_path / "y")]) == 2
    assert "'supervised' objective, not 'self'" in capsys.readouterr().err


def test_cli_refuses_foreign_aligner_and_learned_only_options(model_dir, tiny_bundle, tmp_path, capsys):
    from aligndebug.cli import main

    foreign = tmp_path / "t5al"
    train_aligner(tiny_bundle("t5"), DE, EN, SILVER, foreign, epochs=1, batch_size=4, progress=False, log=lambda m: None)
    capsys.readouterr()
    assert main(["inspect", "--model", str(model_dir), "--method", "learned", "--aligner", str(foreign),
                 "--source", "Der Hund schläft .", "--target", "The dog sleeps ."]) == 2
    err = capsys.readouterr().err
    assert "was trained for model" in err and "but the loaded model is" in err
    assert main(["inspect", "--model", str(model_dir), "--aligner", str(foreign),
                 "--source", "Der Hund schläft .", "--target", "The dog sleeps ."]) == 2
    assert "--aligner is only read by --method learned" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ the shipped aligner

@pytest.mark.slow
def test_embedded_aligner_beats_raw_attention_on_bicici(data_dir, tiny_bundle):
    """The shipped aligner of the embedded model: loads without --aligner, refuses another model, and on Biçici's
    gold (sentence 63 skipped) aligns far better than the best raw-attention layer (AER 0.595)."""
    from aligndebug.gold import read_gold
    from aligndebug.learned import DEFAULT_ALIGNER_DIR
    from aligndebug.models import load_model
    from aligndebug.pairs import iter_pairs

    assert (DEFAULT_ALIGNER_DIR / WEIGHTS).stat().st_size < 8 * 1024 * 1024
    bundle = load_model("default")
    aligner = load_aligner(None, bundle)
    n_model = sum(p.numel() for p in bundle.model.parameters())
    assert aligner.card["parameters"] < n_model / 10
    with pytest.raises(AlignerMismatchError):
        load_aligner(None, tiny_bundle("marian"))
    g = data_dir / "gold" / "bicici-deen-gold"
    test = list(iter_pairs(g / "test.de", g / "test.en"))
    gold = read_gold(g / "de-en.wa", base=0, sentences=[(len(p.src_words), len(p.tgt_words)) for p in test],
                     skip_invalid=True)
    links = aligner.align(bundle, [p.src_words for p in test], [p.tgt_words for p in test])
    assert corpus_counts(links, gold).aer < 0.30
    # with the decoding rule its card names (chosen on the held-out dev set), it beats eflomal trained on the same
    # text with the test sentences added (grow-diag-final-and, 0.199 at best in README's runs)
    rule = aligner.card["decode"]
    links = aligner.align(bundle, [p.src_words for p in test], [p.tgt_words for p in test], rule["rule"], rule["threshold"])
    assert corpus_counts(links, gold).aer < 0.199


# ------------------------------------------------------------------------------------ in a triage pass

@pytest.mark.parametrize("family", tiny_models.FAMILIES)
def test_the_triage_pass_gives_the_matrices_of_the_aligners_own_pass(tiny_bundle, family):
    """`extract.forward_batch` with an aligner reads the aligner off the attention pass's hidden states: the same
    word matrices as the aligner's own pass (in a batch of another size), not in training mode (no dropout)."""
    from aligndebug.extract import iter_forward

    bundle = tiny_bundle(family)
    aligner = LearnedAligner.new(bundle, seed=1)
    assert aligner.module.training  # dropout on: the matrices must not depend on it
    encoded = [encode_pair(bundle, s, t, i) for i, (s, t) in enumerate(zip(DE[:5], EN[:5]))]
    own = aligner.word_matrices(bundle, encoded[:2]) + aligner.word_matrices(bundle, encoded[2:])
    fused = dict(iter_forward(bundle, encoded, batch_size=3, keep=("cross",), aligner=aligner))
    assert aligner.module.training  # given back as it was
    for i, m in enumerate(own):
        got = fused[i].meta["aligner_words"]
        assert got.shape == (len(EN[i]), len(DE[i]) + 1)
        np.testing.assert_allclose(got, m, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-5)
    assert "aligner_words" not in next(iter(iter_forward(bundle, encoded[:1], keep=("cross",))))[1].meta


def test_triage_reads_the_embedded_aligner_only_on_its_own_model(tiny_bundle, tmp_path):
    from aligndebug.learned import aligner_id, triage_aligner

    marian = tiny_bundle("marian")
    assert triage_aligner(marian) is None  # the embedded aligner was trained for another model
    assert triage_aligner(marian, "none") is None
    train_aligner(marian, DE, EN, SILVER, tmp_path / "m", epochs=1, batch_size=4, progress=False, log=lambda m: None)
    mine = triage_aligner(marian, tmp_path / "m")
    assert mine is not None and not mine.module.training
    assert aligner_id(mine) == aligner_id(load_aligner(tmp_path / "m")) and aligner_id(None) is None
    with pytest.raises(AlignerMismatchError):
        triage_aligner(tiny_bundle("t5"), tmp_path / "m")
