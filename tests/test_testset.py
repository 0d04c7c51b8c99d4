"""One pass for both the alignment scores and the triage of a test set (the app's test-set page)."""

from __future__ import annotations

import pytest

import tiny_models as tm
from aligndebug.rows import ScoreOptions
from aligndebug.gold import GoldAlignment
from aligndebug.pairs import SentencePair, split_words
from aligndebug.runner import run_triage, score_and_triage, score_stream
from aligndebug.store import row_json


def _pairs(m: int) -> list[SentencePair]:
    return [SentencePair(k, k + 1, split_words(tm.DE[k % len(tm.DE)]), split_words(tm.EN[k % len(tm.EN)]))
            for k in range(m)]


@pytest.mark.parametrize("per_head", [False, True])
def test_one_pass_gives_the_rows_of_score_and_of_triage(bundle, per_head):
    pairs = _pairs(9)
    golds = [GoldAlignment.from_links({(i, min(i, len(p.tgt_words) - 1)) for i in range(len(p.src_words))})
             for p in pairs]
    refs = [p.target for p in pairs]
    opts = ScoreOptions(method="naive", layer=0, head="mean", per_head=per_head, batch_size=4)
    calls = []
    ranked, aligned, totals = score_and_triage(bundle, pairs, golds, refs, opts, triage_layer=0,
                                               on_progress=calls.append)
    assert sum(calls) == 9
    want_totals, want = score_stream(bundle, pairs, golds, opts)
    want = list(want)
    assert [aligned[r["index"]] for r in want] == want  # the very rows of `aligndebug score`
    assert (totals.sentences, totals.scored, totals.counts) == (9, 9, want_totals.counts)
    assert totals.grid == want_totals.grid and bool(totals.grid) == per_head
    local = run_triage(bundle, [p.source for p in pairs], [p.target for p in pairs], refs, batch_size=4, layer=0,
                       method="naive")
    assert [row_json(r) for r in ranked] == [row_json(r) for r in local]  # and those of `aligndebug triage`
    assert ranked.calibration.thresholds == local.calibration.thresholds


def test_every_pair_needs_a_target(bundle):
    with pytest.raises(ValueError, match="translate the sources first"):
        score_and_triage(bundle, [SentencePair(0, 1, ["Hund"], None)], None, None, ScoreOptions())
