"""The learned combination: synthetic variants, features, the constrained fit, JSON, reasons."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pytest import approx
from scipy import special

from aligndebug import combine
from aligndebug.combine import (Combiner, append_other, detach_part, fit, make_variants, omit_span, repeat_span,
                                split_final_punct, suspect_z)
from aligndebug.triage import roc_auc, tail_scale

ROWS = [{"source": f"Quelle {i} .", "translation": t} for i, t in enumerate([
    "the cat sat on the mat .", "a dog barks at night", "we go home now .", "it is raining today !",
    "the house is big .", "she reads a long book ."])]


def test_split_keeps_the_spelling_of_the_final_punctuation():
    assert split_final_punct("a b c .") == (["a", "b", "c"], " .")
    assert split_final_punct("a b c.") == (["a", "b", "c"], ".")
    assert split_final_punct("a b c") == (["a", "b", "c"], "")


def test_omission_removes_a_contiguous_third():
    rng = np.random.default_rng(0)
    for _ in range(20):
        text = "w1 w2 w3 w4 w5 w6 w7 ."
        out = omit_span(text, rng)
        words = out[:-2].split()
        assert out.endswith(" .") and len(words) == 7 - math.ceil(7 / 3)
        gone = [w for w in text.split()[:-1] if w not in words]
        idx = [int(w[1:]) for w in gone]
        assert idx == list(range(idx[0], idx[0] + len(idx)))  # contiguous
    assert omit_span("two words", rng) is None


def test_repetition_doubles_a_span():
    rng = np.random.default_rng(1)
    for _ in range(20):
        out = repeat_span("a b c d e", rng).split()
        extra = len(out) - 5
        assert 1 <= extra <= 4
        # the doubled span sits right after itself
        assert any(out[i:i + extra] == out[i + extra:i + 2 * extra] for i in range(len(out) - 2 * extra + 1))
        assert [w for w in out if True][:1] == ["a"] or out[0] == "a"


def test_distant_repetition_says_the_span_again_elsewhere():
    rng = np.random.default_rng(2)
    text = "the man walks his dog in the park every morning"
    words = text.split()
    for _ in range(30):
        out = repeat_span(text, rng, distant=True).split()
        extra = len(out) - len(words)
        assert 2 <= extra <= 4
        # removing one copy gives the sentence back, and no span sits right after itself
        assert any(out[:i] + out[i + extra:] == words for i in range(len(out) - extra + 1))
        assert not any(out[i:i + m] == out[i + m:i + 2 * m] for m in range(1, extra + 1) for i in range(len(out) - 2 * m + 1))
    # no place apart from the span in a one-word sentence: right after it
    assert repeat_span("hello", rng, distant=True) == "hello hello"


def test_repetition_never_doubles_punctuation_alone():
    rng = np.random.default_rng(0)
    for _ in range(50):
        out = repeat_span("( yes ) , )", rng).split()
        assert out.count("yes") == 2  # the only span holding more than punctuation has "yes" in it
    assert repeat_span(", ( ) .", rng) is None


def test_a_partly_detached_translation_starts_on_its_own_and_drifts_off():
    rng = np.random.default_rng(3)
    own = [f"o{i}" for i in range(10)]
    other = [f"x{i}" for i in range(8)]
    for _ in range(30):
        out = detach_part(" ".join(own) + " .", " ".join(other) + " !", rng)
        assert out.endswith(" !")  # the other translation's end, with its punctuation
        words = out[:-2].split()
        kept = [w for w in words if w.startswith("o")]
        tail = words[len(kept):]
        assert 2 <= len(kept) <= 5 and kept == own[:len(kept)]  # 20-50% of its own words, from the start
        assert tail == other[len(other) - len(tail):]  # then the other's words to its end
        assert len(tail) >= len(kept)  # half or more is unrelated to the source
    # a short other translation: fewer of its own words kept, never more than the unrelated rest
    for _ in range(30):
        assert detach_part(" ".join(own), "x0 x1", rng).split() == ["o0", "o1", "x0", "x1"]
    assert detach_part("one", "two words", rng) is None
    assert detach_part("two words", "one", rng) is None


def test_an_appended_translation_says_all_of_its_own_and_goes_on_into_another():
    rng = np.random.default_rng(4)
    own = [f"o{i}" for i in range(5)]
    other = [f"x{i}" for i in range(8)]
    starts = set()
    for _ in range(40):
        out = append_other(" ".join(own) + " .", " ".join(other) + " !", rng)
        assert out.endswith(" !")  # the other translation's end, with its punctuation
        words = out[:-2].split()
        assert words[:6] == own + ["."]  # all of its own, its full stop included
        tail = words[6:]
        assert tail == other[len(other) - len(tail):] and len(tail) > len(other) // 2  # from its first half on
        starts.add(len(other) - len(tail))
    assert starts == {0, 1, 2, 3}
    # no final punctuation of its own: nothing between; the other's lacking: its own at the end
    assert append_other("a b", "x y", rng) == "a b x y"
    assert append_other("a b .", "x y", rng) == "a b . x y ."
    assert append_other("", "x y", rng) is None and append_other("a b", "x", rng) is None


def _ends_another(text: str, own: list[str], texts: list[str]) -> bool:
    """Whether `text` ends in the last two words of a translation other than `own` (final punctuation aside:
    a variant ends with the other's, or its own where the other has none)."""
    end = split_final_punct(text)[0][-2:]
    return any(split_final_punct(t)[0][-2:] == end for t in texts if t.split() != own)


def test_make_variants():
    v = make_variants(ROWS, seed=3)
    texts = [r["translation"] for r in ROWS]
    # the rows' detached variants are dealt in turn: another row's translation, one drifting off into it, one
    # going on into it
    assert len(v["detached"]) == len(v["partly_detached"]) == len(v["appended"]) == 2
    bases = [{i["base"] for i in v[k]} for k in ("detached", "partly_detached", "appended")]
    assert len(set().union(*bases)) == len(ROWS)
    for item in v["detached"]:
        assert item["translation"] != ROWS[item["base"]]["translation"]
        assert item["translation"] in texts
        assert item["source"] == ROWS[item["base"]]["source"]
    for item in v["partly_detached"]:
        own = ROWS[item["base"]]["translation"].split()
        words = item["translation"].split()
        assert words[0] == own[0] and item["translation"] not in texts
        assert _ends_another(item["translation"], own, texts)
        assert item["source"] == ROWS[item["base"]]["source"]
    for item in v["appended"]:
        own = ROWS[item["base"]]["translation"]
        rest = item["translation"][len(own):].split()
        assert item["translation"].startswith(own + " ") and item["translation"] not in texts
        assert _ends_another(item["translation"], own.split(), texts) and rest
        assert item["source"] == ROWS[item["base"]]["source"]
    assert all(len(i["translation"].split()) < len(ROWS[i["base"]]["translation"].split()) for i in v["omission"])
    for kind in ("repetition", "distant_repetition"):
        assert all(len(i["translation"].split()) > len(ROWS[i["base"]]["translation"].split()) for i in v[kind])
    # the rows' repetitions are dealt in turn: right after the span, then further on
    assert len(v["repetition"]) == 3 and len(v["distant_repetition"]) == 3
    assert {i["base"] for i in v["repetition"]}.isdisjoint(i["base"] for i in v["distant_repetition"])
    assert make_variants(ROWS, seed=3) == v  # deterministic
    few = make_variants(ROWS, seed=3, max_per_type=2)
    assert {k: len(few[k]) for k in combine.KINDS} == {"detached": 1, "partly_detached": 1, "appended": 0,
                                                       "omission": 2, "repetition": 1, "distant_repetition": 1}
    # every row's repetition of one kind: the other kinds as "alternate" makes them
    for how, kind in (("adjacent", "repetition"), ("distant", "distant_repetition")):
        one = make_variants(ROWS, seed=3, repetition=how)
        assert len(one[kind]) == len(ROWS) and one["distant_repetition" if how == "adjacent" else "repetition"] == []
        assert one["detached"] == v["detached"]
    # every row's detached variant of one kind; the partial and appended ones draw apart, so the other kinds
    # stay the same
    one_way = {way: make_variants(ROWS, seed=3, detached=way) for way in ("full", "part", "append")}
    for way, kind in (("full", "detached"), ("part", "partly_detached"), ("append", "appended")):
        assert len(one_way[way][kind]) == len(ROWS)
        assert all(one_way[way][k] == [] for k in ("detached", "partly_detached", "appended") if k != kind)
        assert one_way[way]["omission"] == v["omission"]
    full = one_way["full"]["detached"]
    assert [i for i in full if i["base"] in {j["base"] for j in v["detached"]}] == v["detached"]
    with pytest.raises(ValueError, match="alternate"):
        make_variants(ROWS, repetition="both")
    with pytest.raises(ValueError, match="'append'"):
        make_variants(ROWS, detached="some")


def test_suspect_z():
    ref = np.sort(np.random.default_rng(0).normal(size=999))
    z = suspect_z(np.array([np.median(ref), ref[-1] + 1.0, ref[0] - 100, np.nan, 0.5]), ref, 1.0)
    assert abs(z[0]) < 0.01
    assert z[1] > special.ndtri(999.5 / 1000) + 0.99  # keeps growing beyond the range
    assert z[2] == -combine.Z_CAP and z[3] == 0.0
    assert abs(z[4] - 0.5) < 0.1  # a standard normal reference: z-score ≈ the value itself
    grid = np.linspace(-4, 4, 50)
    assert (np.diff(suspect_z(grid, ref, 1.0)) >= 0).all()


def _toy_rows(rng, n, shift=0.0, rep=0.0):
    """Rows with a strong signal (seq_logprob, low = suspect), a repetition signal and a noise one."""
    return [{"seq_logprob": float(rng.normal(-1.0 - shift)), "longest_repeat": float(rng.normal(rep)),
             "entropy_mean": float(rng.normal()), "length_ratio": float(rng.normal(1.0, 0.1))} for _ in range(n)]


def test_fit_finds_the_informative_signal_and_beats_each_single_signal():
    rng = np.random.default_rng(0)
    clean = _toy_rows(rng, 400)
    errors = {"detached": _toy_rows(rng, 400, shift=1.5), "repetition": _toy_rows(rng, 400, rep=1.5)}
    comb = fit(clean, errors, l2=0.01)
    assert set(comb.signals) == {"seq_logprob", "longest_repeat", "entropy_mean", "length_ratio"}
    w = comb.weights
    assert all(v >= 0 for ws in w.values() for v in ws.values())
    assert w["detached"]["seq_logprob"] > 5 * max(w["detached"]["entropy_mean"], w["detached"]["longest_repeat"], 1e-3)
    assert w["repetition"]["longest_repeat"] > 5 * max(w["repetition"]["seq_logprob"], 1e-3)
    # held-out data: the combination is at least as good as the best single signal for each type
    test_clean = _toy_rows(rng, 300)
    test_err = {"detached": _toy_rows(rng, 300, shift=1.5), "repetition": _toy_rows(rng, 300, rep=1.5)}
    for kind, rows in test_err.items():
        both = test_clean + rows
        y = np.r_[np.zeros(300, bool), np.ones(300, bool)]
        single = max(roc_auc(-np.array([r["seq_logprob"] for r in both]), y),
                     roc_auc(np.array([r["longest_repeat"] for r in both]), y))
        assert roc_auc(comb.logits(both)[kind], y) >= single - 0.01
        # the overall score (largest over the types) also carries the other type's noise: lower
        # (measured 0.80 and 0.87 here), but far above chance
        assert roc_auc(comb.logit(both), y) > 0.75


def test_fit_is_the_constrained_optimum():
    """KKT conditions of the non-negative, L2-regularised, class-balanced logistic regression."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4))
    y = (x[:, 0] - x[:, 1] + rng.normal(size=300)) > 0.5  # feature 1 helps only with a negative sign
    w, b = combine._fit_logistic(x, y, l2=0.05)
    sw = np.where(y, 0.5 / y.sum(), 0.5 / (~y).sum())
    g = sw * (special.expit(x @ w + b) - y)
    grad = x.T @ g + 0.05 * w
    assert abs(g.sum()) < 1e-4  # intercept: free, gradient 0
    assert w[1] == 0.0 and grad[1] >= -1e-6  # at the bound: gradient pushes outward
    assert w[0] > 0.3 and abs(grad[0]) < 1e-4  # interior: gradient 0


def test_spliced_kinds_leave_out_the_lowest_token_log_prob():
    """A junction the model finds improbable is what the lowest token log-prob sees in a spliced variant, not
    an error a decoder makes: the spliced kinds' models give it weight 0 even where it separates their
    variants perfectly, and a wholly foreign translation (no junction) still uses it."""
    rng = np.random.default_rng(6)

    def rows(n, dip=0.0, rep=0.0):
        return [{**r, "min_logprob": float(rng.normal(-3.0 - dip, 0.3))} for r in _toy_rows(rng, n, rep=rep)]

    kinds = ("detached", "partly_detached", "omission", "repetition", "distant_repetition")
    comb = fit(rows(300), {k: rows(300, dip=3.0, rep=1.0) for k in kinds}, l2=0.01)
    assert comb.weights["detached"]["min_logprob"] > 1.0
    for kind in kinds[1:]:
        assert comb.weights[kind]["min_logprob"] == 0.0 and kind in combine.SPLICE_BLIND
        assert comb.weights[kind]["longest_repeat"] > 0.3  # fitted on what is left
        assert comb.train_auc[kind] < 0.9  # the junction alone would separate them perfectly


def test_json_round_trip_and_reasons():
    rng = np.random.default_rng(2)
    clean = _toy_rows(rng, 200)
    comb = fit(clean, {"detached": _toy_rows(rng, 200, shift=2.0)})
    again = Combiner.from_dict(json.loads(json.dumps(comb.to_dict())))
    rows = _toy_rows(rng, 20, shift=1.0)
    np.testing.assert_allclose(again.logit(rows), comb.logit(rows), rtol=1e-12)
    bad = {"seq_logprob": -6.0, "longest_repeat": 0.0, "entropy_mean": 0.0, "length_ratio": 1.0}
    prob, kind = comb.score(bad)
    assert kind == "detached" and prob > 0.99
    reasons = comb.reasons(bad)
    assert "detached" in reasons[0]
    assert "Seq-Logprob" in reasons[1] and "lower than 100%" in reasons[1]
    assert any("Seq-Logprob" in line for line in combine.describe(comb))
    with pytest.raises(ValueError, match="lacks"):
        Combiner.from_dict({"signals": []})


def test_a_distant_repetition_is_reported_as_repetition():
    rng = np.random.default_rng(4)
    clean = _toy_rows(rng, 200)
    comb = fit(clean, {"detached": _toy_rows(rng, 200, shift=2.0), "distant_repetition": _toy_rows(rng, 200, rep=2.0)})
    bad = {"seq_logprob": -1.0, "longest_repeat": 9.0, "entropy_mean": 0.0, "length_ratio": 1.0}
    prob, kind = comb.score(bad)
    assert kind == "repetition" and prob > 0.9
    assert comb.reasons(bad)[0].startswith("most like a repetition error (a span said again further on): ")


def test_every_error_type_has_its_own_score_and_the_ranking_score_is_the_odds_of_any():
    """In a mixture a kind's type score is its log-odds against a clean row plus the log of its error rate over
    the clean rows'; an error type's score is the log-sum-exp of its kinds' (both repetitions are repetition),
    the ranking score that of every kind, and the verdict's type the one with the largest score."""
    rng = np.random.default_rng(4)
    comb = fit(_toy_rows(rng, 200), {"detached": _toy_rows(rng, 200, shift=2.0),
                                     "repetition": _toy_rows(rng, 200, rep=3.0),
                                     "distant_repetition": _toy_rows(rng, 200, rep=2.0)})
    assert comb.ranking == "mixture" and set(comb.rates) == {"clean", "detached", "repetition", "distant_repetition"}
    rows = _toy_rows(rng, 30, shift=1.0) + _toy_rows(rng, 30, rep=2.0)
    lg, kinds = comb.logits(rows), comb.type_scores(rows)
    for k in lg:
        np.testing.assert_allclose(kinds[k], lg[k] + math.log(comb.rates[k] / comb.rates["clean"]), rtol=1e-12)
    verdicts = comb.verdicts(rows)
    for i, v in enumerate(verdicts):
        assert set(v.type_scores) == {"detached", "repetition"}
        assert v.type_scores["repetition"] == approx(np.logaddexp(kinds["repetition"][i],
                                                                  kinds["distant_repetition"][i]))
        assert v.type_scores["detached"] == approx(kinds["detached"][i])
        assert v.score == approx(np.logaddexp(*v.type_scores.values())) == approx(comb.logit([rows[i]])[0])
        assert v.score > max(v.type_scores.values())
        assert v.probability == approx(special.expit(v.score))
        assert v.error_type == max(v.type_scores, key=v.type_scores.get)
        assert v.reasons[0].startswith(f"most like a {v.error_type} error")
        assert f"; {v.probability:.2f} that it holds an error at the calibration rows' error rates (" in v.reasons[0]
    assert {v.error_type for v in verdicts} == {"detached", "repetition"}
    by_type = comb.error_type_scores(rows)  # the same scores without the words
    for t in ("detached", "repetition"):
        np.testing.assert_allclose(by_type[t], [v.type_scores[t] for v in verdicts], rtol=1e-12)


def test_error_rates_by_hand():
    """Two rows, one kind: a row far on the clean side and one far on the error side are half and half;
    a prior of half the rows (one pseudo-row) makes that 1 : 2."""
    from aligndebug.combine import error_rates

    logits = np.array([[-50.0, 50.0]])
    np.testing.assert_allclose(error_rates(logits, prior_share=0.0), [0.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(error_rates(logits, prior_share=0.5), [1 / 3, 2 / 3], atol=1e-12)
    # no row looks like the kind: its rate is what the prior gives it, not 0
    rates = error_rates(np.full((2, 100), -50.0), prior_share=0.1)
    np.testing.assert_allclose(rates, [100 / 110, 5 / 110, 5 / 110], rtol=1e-9)


def test_error_rates_recover_a_mixture_s_shares():
    """Rows drawn from a known mixture (clean N(0, 1), two kinds N(+3, 1) and N(-3, 1)), given their exact
    log-likelihood ratios: the estimated shares are the drawn ones."""
    from aligndebug.combine import error_rates

    rng = np.random.default_rng(0)
    share = np.array([0.7, 0.2, 0.1])
    comp = rng.choice(3, size=20000, p=share)
    x = rng.normal(np.array([0.0, 3.0, -3.0])[comp], 1.0)
    logits = np.stack([3.0 * x - 4.5, -3.0 * x - 4.5])  # log N(x; ±3, 1) - log N(x; 0, 1)
    rates = error_rates(logits, prior_share=0.0)
    np.testing.assert_allclose(rates, np.bincount(comp) / len(comp), atol=0.015)
    assert rates.sum() == approx(1.0)


def test_the_calibration_s_error_rates_raise_the_kind_it_holds_most_of():
    """Fitted on the same synthetic errors, a calibration set full of repetitions gives repetition a higher rate
    than one without, and so ranks a row that may be either error more as a repetition."""
    rng = np.random.default_rng(6)
    clean = _toy_rows(rng, 200)
    errors = {"detached": _toy_rows(rng, 100, shift=2.0), "repetition": _toy_rows(rng, 100, rep=2.0)}
    plain = fit(clean, errors)
    repeats = _toy_rows(rng, 200, rep=2.0)
    repetitive = fit(clean, errors, reference_rows=clean + repeats)
    assert repetitive.rates["repetition"] > 3 * plain.rates["repetition"]
    # the same weights at the rates of other rows: what scripts/triage_auc.py compares
    again = plain.with_rates_of(clean + repeats)
    assert again.weights == plain.weights and again.rates["repetition"] > 3 * plain.rates["repetition"]
    assert plain.with_rates_of(clean).rates == approx(plain.rates)
    assert repetitive.rates["detached"] < 2 * plain.rates["detached"]
    both = {"seq_logprob": -2.2, "longest_repeat": 2.0, "entropy_mean": 0.0, "length_ratio": 1.0}
    gap = [c.error_type_scores([both])["repetition"][0] - c.error_type_scores([both])["detached"][0]
           for c in (plain, repetitive)]
    assert gap[1] > gap[0] + 1.0


def test_a_partly_detached_row_is_reported_as_detached():
    rng = np.random.default_rng(5)
    comb = fit(_toy_rows(rng, 200), {"partly_detached": _toy_rows(rng, 200, shift=2.0),
                                     "repetition": _toy_rows(rng, 200, rep=2.0)})
    bad = {"seq_logprob": -6.0, "longest_repeat": 0.0, "entropy_mean": 0.0, "length_ratio": 1.0}
    prob, kind = comb.score(bad)
    assert kind == "detached" and prob > 0.9
    assert comb.reasons(bad)[0].startswith("most like a detached error (it leaves the source partway): ")


def test_two_sided_signal_gets_both_sides():
    rng = np.random.default_rng(3)
    clean = _toy_rows(rng, 300)
    short = [{**r, "length_ratio": r["length_ratio"] - 0.4} for r in _toy_rows(rng, 300)]
    long_ = [{**r, "length_ratio": r["length_ratio"] + 0.4} for r in _toy_rows(rng, 300)]
    comb = fit(clean, {"omission": short, "repetition": long_})
    assert comb.weights["omission"]["length_ratio:low"] > 1 > comb.weights["omission"]["length_ratio:high"]
    assert comb.weights["repetition"]["length_ratio:high"] > 1 > comb.weights["repetition"]["length_ratio:low"]


def test_fit_with_a_model_end_to_end(tiny_bundle):
    import tiny_models

    b = tiny_bundle("marian")
    items = [{"source": s, "translation": t} for s, t in zip(tiny_models.DE, tiny_models.EN)]
    clean = combine.forced_signal_rows(b, items, batch_size=8)
    assert all(0 <= r["alti_source"] <= 1 for r in clean)
    comb = combine.fit_with_model(b, clean, seed=0, batch_size=8)
    assert set(comb.weights) == set(combine.KINDS)
    # triage's fits use the fixed strength, not one cross-validated on the synthetic errors
    assert comb.l2 == {k: combine.FIT_L2 for k in combine.KINDS} and comb.cv_loss == {}
    assert "alti_source" in comb.signals
    n = len(clean)  # detached variants dealt in turn: another's translation, partly, appended
    assert comb.n_fit["detached"] == {"clean": n, "errors": (n + 2) // 3}
    assert comb.n_fit["partly_detached"] == {"clean": n, "errors": (n + 1) // 3}
    assert comb.n_fit["appended"] == {"clean": n, "errors": n // 3}
    assert comb.logit(clean).shape == (len(clean),)
    assert np.isfinite(comb.logit(clean)).all()


def test_rows_that_already_say_a_span_twice_are_no_clean_examples():
    """A calibration row with a tandem repeat is a repetition error by the variants' own definition: the fit
    leaves it out of its clean rows and of the variants' bases (not of its reference), and keeps every row when
    fewer than two would be left."""
    rng = np.random.default_rng(3)
    words = "the cat sat on the mat near a dog and a bird".split()
    rows = []
    for i, r in enumerate(_toy_rows(rng, 12)):
        text = " ".join(words[i % 5:i % 5 + 6]) + (" mat mat" if i % 3 == 0 else "")
        rows.append({**r, "source": f"Quelle {i}", "translation": text, "tandem_repeat": 1.0 if i % 3 == 0 else 0.0})
    seen = []

    def compute_rows(_bundle, items, **_):
        seen.extend(items)
        return _toy_rows(rng, len(items), shift=2.0)

    comb = combine.fit_with_model(None, rows, alti=False, max_per_type=None, compute_rows=compute_rows)
    kept = [r for r in rows if not r["tandem_repeat"]]
    assert combine.reliable_clean(rows) == kept
    assert {k: v["clean"] for k, v in comb.n_fit.items()} == {k: len(kept) for k in combine.KINDS}
    assert seen and all(v["source"] in {r["source"] for r in kept} for v in seen)
    # ... but every row stays in the reference: a score says how unusual a row is among all it was calibrated on
    assert sorted(comb.samples["tandem_repeat"]) == sorted(r["tandem_repeat"] for r in rows)
    assert all(len(v) == len(rows) for v in comb.clean_logits.values())
    one_clean = [dict(r, tandem_repeat=1.0) for r in rows[:-1]] + [rows[-1]]
    assert combine.reliable_clean(one_clean) == one_clean
    assert len(combine.reliable_clean([{"tandem_repeat": float("nan")}, {}])) == 2  # undefined: not a repeat


def test_rows_that_say_a_content_word_again_are_no_clean_examples_unless_too_few_are_left():
    """A row that says a content word again is a repetition as most labelled real ones are: left out of the clean
    rows as long as a quarter of the rows stay; otherwise only the tandem repeats are left out."""
    def rows(n_again: int, n_tandem: int, n: int = 12) -> list[dict]:
        return [{"id": i, "tandem_repeat": float(i < n_tandem),
                 "repeated_words": float(n_tandem <= i < n_tandem + n_again)} for i in range(n)]

    assert [r["id"] for r in combine.reliable_clean(rows(n_again=6, n_tandem=2))] == [8, 9, 10, 11]
    # 3 of 12 rows say nothing again: exactly a quarter, still enough
    assert [r["id"] for r in combine.reliable_clean(rows(n_again=7, n_tandem=2))] == [9, 10, 11]
    # 2 of 12 would be too few to stand for the set: only the tandem repeats go
    assert [r["id"] for r in combine.reliable_clean(rows(n_again=8, n_tandem=2))] == list(range(2, 12))
    assert [r["id"] for r in combine.reliable_clean([{"id": 0, "repeated_words": float("nan")}, {"id": 1}])] == [0, 1]


@pytest.mark.parametrize("family", ["marian", "nllb", "t5"])
def test_alti_in_the_signal_pass_equals_its_own_pass(tiny_bundle, family):
    import tiny_models

    b = tiny_bundle(family)
    items = [{"source": s, "translation": t} for s, t in zip(tiny_models.DE[:9], tiny_models.EN[3:12])]
    fused = combine.forced_signal_rows(b, items, batch_size=4)
    alone = [dict(r) for r in fused]
    combine.add_alti(b, alone, batch_size=3)
    plain = combine.forced_signal_rows(b, items, batch_size=4, alti=False)
    for f, a, p in zip(fused, alone, plain):
        assert f["alti_source"] == pytest.approx(a["alti_source"], rel=1e-4)
        assert "alti_source" not in p and p["seq_logprob"] == pytest.approx(f["seq_logprob"], rel=1e-6)


def test_clean_percentile_score():
    rng = np.random.default_rng(4)
    clean = _toy_rows(rng, 300)
    comb = fit(clean, {"detached": _toy_rows(rng, 300, shift=1.5), "repetition": _toy_rows(rng, 300, rep=1.5)})
    z = comb.clean_z(clean)
    # on the clean rows themselves each type's z is about standard normal, so their max sits near 0.5-0.6
    assert 0.3 < float(np.median(z)) < 0.9
    bad = comb.clean_z([{**clean[0], "seq_logprob": -8.0}])
    assert bad[0] > 3
    again = Combiner.from_dict(json.loads(json.dumps(comb.to_dict())))
    np.testing.assert_allclose(again.clean_z(clean[:5]), comb.clean_z(clean[:5]), rtol=1e-12)


def test_cross_validation_shrinks_little_on_clean_evidence_and_much_on_noise():
    rng = np.random.default_rng(3)
    clean = rng.normal(0, 1, size=(120, 4))
    separable = rng.normal(0, 1, size=(60, 4)) + np.array([6.0, 0, 0, 0])  # one feature tells them apart
    l2, losses = combine.choose_l2(clean, separable)
    assert l2 == min(combine.L2_GRID) and set(losses) == {f"{v:g}" for v in combine.L2_GRID}
    noise = rng.normal(0, 1, size=(60, 4))  # errors that look like clean rows: every weight only overfits
    l2_noise, losses_noise = combine.choose_l2(clean, noise)
    assert l2_noise == max(combine.L2_GRID)
    assert losses_noise[f"{l2_noise:g}"] < losses_noise[f"{min(combine.L2_GRID):g}"]


def test_variants_share_the_fold_of_the_row_they_were_made_from(monkeypatch):
    """A fit never scores a variant of a clean row it was fitted on (grouped folds)."""
    seen = []
    real = combine._fit_logistic

    def spy(x, y, l2):
        seen.append({tuple(r) for r in x})
        return real(x, y, l2)

    monkeypatch.setattr(combine, "_fit_logistic", spy)
    clean = np.arange(20, dtype=float)[:, None] * np.array([[1.0, 0.0]])
    errors = clean[[0, 0, 5, 7, 9, 12]] + np.array([[0.0, 0.5]])  # variants of clean rows 0, 0, 5, 7, 9, 12
    combine.choose_l2(clean, errors, err_groups=np.array([0, 0, 5, 7, 9, 12]), grid=(0.1,), folds=4)
    for fitted in seen:
        for e, g in zip(errors, [0, 0, 5, 7, 9, 12]):
            assert (tuple(e) in fitted) == (tuple(clean[g]) in fitted)


def test_fit_chooses_and_records_the_strength_per_error_type():
    rng = np.random.default_rng(0)
    clean = [{"seq_logprob": float(v), "length_ratio": 1.0 + 0.1 * float(u)}
             for v, u in zip(rng.normal(-1, 0.3, 80), rng.normal(0, 1, 80))]
    errors = {"detached": [{"seq_logprob": float(v), "length_ratio": 1.0} for v in rng.normal(-4, 0.3, 40)],
              "omission": [{"seq_logprob": float(v), "length_ratio": 1.0 + 0.1 * float(u)}
                           for v, u in zip(rng.normal(-1, 0.3, 40), rng.normal(0, 1, 40))]}
    comb = fit(clean, errors, signals=["seq_logprob", "length_ratio"])
    assert comb.l2["detached"] == min(combine.L2_GRID)  # separable by Seq-Logprob
    assert comb.l2["omission"] == max(combine.L2_GRID)  # indistinguishable from clean rows
    rates, *kinds = combine.describe(comb)
    assert rates.startswith("error rates of the calibration rows (estimated): clean ")
    assert rates.count("%") == 3 and f"omission {100 * comb.rates['omission']:.1f}%" in rates
    assert [line.split(":")[0] for line in kinds] == ["detached", "omission"]
    assert "L2 0.0001]" in kinds[0] and "L2 1]" in kinds[1]
    again = Combiner.from_dict(json.loads(json.dumps(comb.to_dict())))
    assert again.l2 == comb.l2 and again.cv_loss == comb.cv_loss
    np.testing.assert_allclose(again.logit(clean), comb.logit(clean), rtol=1e-12)
    assert fit(clean, errors, l2=0.05, signals=["seq_logprob", "length_ratio"]).l2 == {"detached": 0.05, "omission": 0.05}


def test_blended_ranking_is_continuous_and_old_calibrations_rank_by_log_odds():
    """Calibrations of VERSION 3-9 blend log-odds with their z among the clean rows' own, interpolated so that
    a row of the calibration set itself (its log-odds in the reference) does not jump with float noise; a
    combiner saved before the blend (no "ranking" key) still ranks by the largest log-odds."""
    from aligndebug.combine import continuous_z

    ref = np.array([-2.0, -1.0, 0.0, 1.0, 3.0])
    z = continuous_z(np.array([1.0 - 1e-9, 1.0, 1.0 + 1e-9, 2.0]), ref, 1.0)
    assert abs(z[0] - z[2]) < 1e-6 and z[0] < z[3] < continuous_z(np.array([3.0]), ref, 1.0)[0]
    assert continuous_z(np.array([1.0]), ref, 1.0)[0] == pytest.approx(special.ndtri(4 / 6))
    # beyond the range: the end percentile, then linear in units of the scale
    assert continuous_z(np.array([5.0]), ref, 2.0)[0] == pytest.approx(special.ndtri(5 / 6) + 1.0)
    rng = np.random.default_rng(4)
    clean = _toy_rows(rng, 200)
    comb = fit(clean, {"detached": _toy_rows(rng, 100, shift=1.5), "repetition": _toy_rows(rng, 100, rep=1.5)})
    comb = Combiner.from_dict({**comb.to_dict(), "ranking": "blend"})  # as VERSION 3-9 saved it
    rows = clean[:20]
    lg, sc = comb.logits(rows), comb.type_scores(rows)
    for k in lg:
        ref = np.asarray(comb.clean_logits[k])
        want = 0.5 * lg[k] + 0.5 * continuous_z(lg[k], ref, tail_scale(ref))
        np.testing.assert_allclose(sc[k], want, rtol=1e-12)
    np.testing.assert_allclose(comb.logit(rows), np.max([sc[k] for k in sc], 0), rtol=1e-12)
    old = {k: v for k, v in comb.to_dict().items() if k != "ranking"}
    assert np.allclose(Combiner.from_dict(old).logit(rows), np.max([lg[k] for k in lg], 0))
    assert not np.allclose(comb.logit(rows), Combiner.from_dict(old).logit(rows))



def _triage_auc_script():
    """scripts/triage_auc.py as a module (scripts/ is no package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("triage_auc", Path(__file__).parents[1] / "scripts" / "triage_auc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_triage_auc_names_the_clean_rows_behind_the_misses():
    """scripts/triage_auc.py: the (clean, error) pairs in the wrong order count as 1 - AUC says, ties half."""
    mod = _triage_auc_script()
    control = np.array([5.0, 0.0, 2.0, -1.0])
    errors = np.array([1.0, 2.0, 6.0])
    miss = mod.outranking(control, errors, ["a", "b", "c", "d"], k=3)
    # 5.0 is above 1 and 2; 2.0 is above 1 and ties 2; 0.0 and -1.0 are above none
    assert miss["pairs"] == 3.5 and miss["of"] == 12
    assert [(r["translation"], r["outranks"]) for r in miss["rows"]] == [("a", 2.0), ("c", 1.5)]
    y = np.r_[np.zeros(4, bool), np.ones(3, bool)]
    assert 1 - roc_auc(np.r_[control, errors], y) == pytest.approx(miss["pairs"] / miss["of"])


def test_triage_auc_takes_as_clean_controls_only_the_labelled_clean_texts(tmp_path):
    """scripts/triage_auc.py: a control counts as labelled clean when its label is none and it is the text that was
    labelled; no labels file, no mask."""
    mod = _triage_auc_script()
    tsv = tmp_path / "errors.own.tsv"
    tsv.write_text("id\tlabels\tnote\ttranslation\n0\tnone\t\tA cat.\n1\tomission\tdrops x\tA dog.\n"
                   "2\tnone\t\tA bird.\n3\tnone\t\tA fish.\n", encoding="utf-8")
    # evaluation rows 3, 1, 2, 0 (in that order); row 2 was translated otherwise than labelled, row 0 the same
    # up to spacing (as `triage --labels` compares them)
    mask = mod.labelled_clean(tsv, ["A fish.", "A dog.", "A bird flies.", " A  cat."], [3, 1, 2, 0])
    assert mask.tolist() == [True, False, False, True]
    assert mod.labelled_clean(tmp_path / "errors.reference.tsv", ["x"], [0]) is None


def test_type_score_offsets_script_finds_the_offset_that_lets_a_type_win(tmp_path):
    """scripts/type_score_offsets.py, worked by hand: a clean row whose detached score (1.0) is above both
    repetitions' repetition scores (0.5, 0.8) wins half the pairs (AUC 0.5); +0.5 on repetition ties one of them
    (0.875); +1 or more puts both above every clean row (1.0, a lead of +0.1 over the best single signal's 0.9)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / "type_score_offsets.py"
    spec = importlib.util.spec_from_file_location("type_score_offsets", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    scores = [(1.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.5), (0.0, 0.0, 0.8), (0.0, 0.9, 0.0)]
    rows = tmp_path / "run.jsonl"
    rows.write_text("".join(json.dumps({"id": i, "translation": f"t{i}", "type_scores": dict(zip(mod.ERROR_TYPES, s))})
                            + "\n" for i, s in enumerate(scores)), encoding="utf-8")
    labels = tmp_path / "labels.tsv"
    labels.write_text("id\tlabels\n0\tnone\n1\tnone\n2\trepetition\n3\trepetition\n4\tomission\n", encoding="utf-8")
    aucs = tmp_path / "aucs.json"
    aucs.write_text(json.dumps({"labels": {"repetition": {"best_auc": 0.9}, "omission": {"best_auc": 0.5}}}))
    cells = mod.label_cells(rows, labels, aucs)
    assert [c[0] for c in cells] == ["run/repetition"]  # one omission row: too few to score
    assert mod.leads(cells, np.zeros(3)) == pytest.approx([0.5 - 0.9])
    assert mod.leads(cells, np.array([0.0, 0.0, 0.5])) == pytest.approx([0.875 - 0.9])
    best = mod.best_offsets(cells, np.array([-1.0, 0.0, 0.5, 1.0]))
    assert best[0][0] == pytest.approx(0.1) and best[0][2] == 1.0
