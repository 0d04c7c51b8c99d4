"""`--device cuda` (the model in half precision on a GPU) gives what the CPU gives, within half precision.

Skipped without a CUDA GPU (CI has none); on a machine with one: `python -m pytest tests/test_cuda.py`.
Every test runs the same call on the CPU in float32 and on the GPU in half precision and compares them.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import sacrebleu
import torch

import tiny_models as tm
from aligndebug.alti import source_contribution
from aligndebug.attribution import ig_for_record
from aligndebug.extract import extract, translate
from aligndebug.gold import read_gold
from aligndebug.models import load_model
from aligndebug.pairs import iter_pairs
from aligndebug.rows import ScoreOptions
from aligndebug.runner import run_triage, score_stream
from aligndebug.signals import SIGNALS

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"), pytest.mark.slow]

SRC = "Der Hund schläft im Garten ."
TGT = "The dog sleeps in the garden ."


@pytest.fixture(scope="module")
def default_pair():
    """(CPU, GPU) bundles of the embedded model."""
    return load_model("default"), load_model("default", device="cuda")


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_every_family_gives_the_same_rows_on_the_gpu(family, tmp_path):
    """The same tokens, word ids and decoder rows; attention and log-probs within half precision."""
    path = tm.save(family, tmp_path / family)
    langs = dict(zip(("src_lang", "tgt_lang"), tm.LANGS.get(family, (None, None))))
    cpu, gpu = load_model(str(path), **langs), load_model(str(path), device="cuda", **langs)
    assert next(gpu.model.parameters()).dtype == torch.float16
    a, b = extract(cpu, [SRC], [TGT])[0], extract(gpu, [SRC], [TGT])[0]
    assert b.dec_tokens == a.dec_tokens and b.label_tokens == a.label_tokens
    np.testing.assert_array_equal(b.tgt_word_ids, a.tgt_word_ids)
    np.testing.assert_array_equal(b.src_word_ids, a.src_word_ids)
    assert b.cross.dtype == np.float32 and b.cross.shape == a.cross.shape
    np.testing.assert_allclose(b.cross, a.cross, atol=3e-2)  # random weights: sharp logits
    np.testing.assert_allclose(b.token_logprobs, a.token_logprobs, rtol=1e-2, atol=2e-2)


def test_gold_alignments_score_the_same_on_the_gpu(default_pair, data_dir):
    """AER of the embedded model's recommended view on Biçici's de-en gold: within 0.01, and nearly every
    sentence gets the very same links (half precision can only flip near-ties)."""
    d = data_dir / "gold" / "bicici-deen-gold"
    pairs = list(iter_pairs(d / "test.de", d / "test.en"))
    gold = read_gold(d / "de-en.wa", base=0, sentences=[(len(p.src_words), len(p.tgt_words)) for p in pairs],
                     skip_invalid=True).alignments
    cpu, gpu = default_pair
    opts = ScoreOptions(method=cpu.view.get("method", "shift-att"), layer=cpu.view.get("layer"))
    (t_cpu, rows_cpu), (t_gpu, rows_gpu) = (score_stream(b, pairs, gold, opts) for b in (cpu, gpu))
    links_cpu, links_gpu = [r["links"] for r in rows_cpu], [r["links"] for r in rows_gpu]
    assert len(links_cpu) == len(links_gpu) == len(pairs)
    assert t_gpu.scored == t_cpu.scored > 90
    assert abs(t_gpu.counts.aer - t_cpu.counts.aer) < 0.01
    same = sum(x == y for x, y in zip(links_cpu, links_gpu))
    assert same >= 0.9 * len(pairs), f"{same} of {len(pairs)} sentences have the same links"


def test_translations_are_the_same_on_the_gpu(default_pair, data_dir):
    with gzip.open(data_dir / "train" / "multi30k-deen" / "test_2016_flickr.de.gz", "rt", encoding="utf-8") as f:
        src = [next(f).strip() for _ in range(100)]
    cpu, gpu = default_pair
    hyp_cpu, hyp_gpu = translate(cpu, src), translate(gpu, src)
    same = sum(x == y for x, y in zip(hyp_cpu, hyp_gpu))
    assert same >= 90, f"{same} of 100 greedy translations are the same"
    assert sacrebleu.corpus_chrf(hyp_gpu, [hyp_cpu]).score > 95


def test_triage_ranks_alike_on_the_gpu(default_pair, data_dir):
    """Forced references of held-out Europarl: every signal within half precision's reach of the CPU's,
    and the learned score (fitted on each device's own forced variants) ranks the rows alike."""
    from scipy.stats import spearmanr

    d = data_dir / "heldout" / "europarl-deen-500"
    src = (d / "test.de").read_text(encoding="utf-8").splitlines()[:80]
    tgt = (d / "test.en").read_text(encoding="utf-8").splitlines()[:80]
    cpu, gpu = default_pair
    by_id = [{r["id"]: r for r in run_triage(b, src, tgt, batch_size=16, max_variants=20)} for b in (cpu, gpu)]
    assert sorted(by_id[0]) == sorted(by_id[1]) == list(range(80))
    ids = range(80)
    # the embedded aligner runs on either device's pass (its module follows the model's hidden states)
    assert all("unaligned_target" in by_id[k][i] for k in (0, 1) for i in ids if not by_id[k][i].get("unusable"))
    for name in SIGNALS:
        x = np.array([np.nan if by_id[0][i].get(name) is None else by_id[0][i][name] for i in ids], dtype=float)
        y = np.array([np.nan if by_id[1][i].get(name) is None else by_id[1][i][name] for i in ids], dtype=float)
        assert np.array_equal(np.isnan(x), np.isnan(y)), name
        ok = ~np.isnan(x)
        if ok.sum() < 10 or np.ptp(x[ok]) == 0:
            continue
        rho = spearmanr(x[ok], y[ok]).statistic
        assert rho > 0.97, f"{name}: rank correlation {rho:.3f} between CPU and GPU"
    for name, tol in (("seq_logprob", 0.02), ("source_gain", 0.03), ("alti_source", 0.01), ("unaligned_target", 0.02)):
        x = np.array([by_id[0][i][name] for i in ids], dtype=float)
        y = np.array([by_id[1][i][name] for i in ids], dtype=float)
        np.testing.assert_allclose(y, x, atol=tol, err_msg=name)
    scores = [np.array([by_id[k][i]["score"] for i in ids], dtype=float) for k in (0, 1)]
    assert spearmanr(*scores).statistic > 0.9


def test_alti_decomposition_holds_in_half_precision(default_pair, data_dir):
    """The checked ALTI+ path (the app's view rebuilds each block's output from its parts and compares) runs on
    the GPU, and its rollout gives the CPU's source shares."""
    d = data_dir / "heldout" / "europarl-deen-500"
    pairs = list(zip((d / "test.de").read_text(encoding="utf-8").splitlines()[:16],
                     (d / "test.en").read_text(encoding="utf-8").splitlines()[:16]))
    cpu, gpu = default_pair
    a = source_contribution(cpu, pairs, keep_matrices=True)
    b = source_contribution(gpu, pairs, keep_matrices=True)
    for x, y in zip(a, b):
        np.testing.assert_allclose(y.source_share, x.source_share, atol=1e-2)
        np.testing.assert_allclose(y.total, x.total, atol=1e-2)


def test_integrated_gradients_on_the_gpu(default_pair):
    """Completeness holds on the GPU as on the CPU, and the attributions agree with the CPU's."""
    cpu, gpu = default_pair
    rec_cpu, rec_gpu = extract(cpu, [SRC], [TGT])[0], extract(gpu, [SRC], [TGT])[0]
    a, b = ig_for_record(cpu, rec_cpu, steps=32), ig_for_record(gpu, rec_gpu, steps=32)
    scale = np.abs(a.f_x - a.f_baseline).max()
    assert b.delta.max() < 0.05 * scale + 0.05
    np.testing.assert_allclose(b.f_x, a.f_x, atol=0.05)
    corr = np.corrcoef(a.source.ravel(), b.source.ravel())[0, 1]
    assert corr > 0.95, f"CPU and GPU attributions correlate {corr:.3f}"


def test_the_embedded_learned_aligner_runs_on_the_gpu(default_pair):
    """The aligner trained on the float32 model accepts the same model in half precision and links alike."""
    from aligndebug.learned import load_aligner

    cpu, gpu = default_pair
    src = ["Der Hund schläft im Garten .", "Ich habe das Buch gestern gelesen ."]
    tgt = ["The dog sleeps in the garden .", "I read the book yesterday ."]
    a = load_aligner(None, cpu).align(cpu, src, tgt)
    b = load_aligner(None, gpu).align(gpu, src, tgt)
    assert [sorted(x) for x in b] == [sorted(x) for x in a]


def test_contrast_on_the_gpu(default_pair):
    from aligndebug.contrast import contrast

    cpu, gpu = default_pair
    a = contrast(cpu, SRC, TGT, "The cat sleeps in the garden .", steps=16)
    b = contrast(gpu, SRC, TGT, "The cat sleeps in the garden .", steps=16)
    assert [p.kind for p in b.positions] == [p.kind for p in a.positions] == ["replace"]
    assert b.logprob_target == pytest.approx(a.logprob_target, rel=1e-2, abs=0.05)
    assert b.logprob_contrast == pytest.approx(a.logprob_contrast, rel=1e-2, abs=0.05)
    x, y = a.positions[0].attribution, b.positions[0].attribution
    assert np.corrcoef(np.ravel(x), np.ravel(y))[0, 1] > 0.95


def test_an_aligner_trains_and_resumes_on_the_gpu(tmp_path):
    """Both objectives on a half-precision model: the float32 module sits on the GPU beside it, and a resumed run
    loads its optimizer state there."""
    from aligndebug.learned import load_aligner
    from aligndebug.learned_train import train_aligner

    gpu = load_model(str(tm.save("marian", tmp_path / "m")), device="cuda")
    de = [s.split() for s in tm.DE[:8]]
    en = [s.split() for s in tm.EN[:8]]
    silver = [{(i, i) for i in range(min(len(s), len(t)))} for s, t in zip(de, en)]
    said: list[str] = []
    kw = dict(objective="both", batch_size=4, progress=False, log=said.append, checkpoint_every=1)
    train_aligner(gpu, de, en, silver, tmp_path / "al", epochs=1, **kw)
    aligner = train_aligner(gpu, de, en, silver, tmp_path / "al", epochs=2, **kw)
    assert next(aligner.module.parameters()).device.type == "cuda"
    assert aligner.card["steps"] == 4 and any(m.startswith("resuming from") for m in said)
    assert load_aligner(tmp_path / "al", gpu).align(gpu, de[:2], en[:2]) == aligner.align(gpu, de[:2], en[:2])
