"""The app's test-set page as one call: read a test set (sources, optional translations, gold and references),
translate what has no translation, then score alignments against gold and triage in one pass (`runner`).

Everything the page shows comes back in a `TestsetResult`; nothing here knows about Streamlit, so the page
is tested without it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import InputError
from .extract import Encoded, translate
from .gold import format_pharaoh, read_gold
from .metrics import corpus_translation_scores
from .models import ModelBundle
from .pairs import (blank_as_none, iter_lines, iter_pairs, join_reasons, pair_lengths, read_lines_keeping_bad,
                    split_words)
from .rows import ScoreOptions
from .runner import Item, resolve_aligner, score_and_triage, unusable_reason
from .triage import Calibration

Progress = Callable[[float, str], None]  # (fraction done, what is happening)


@dataclass
class TestsetResult:
    """Ranked triage rows (with each sentence's links, gold and AER merged in), corpus scores, the sentence
    AER of every (layer, head) when gold was given, the calibration, and each row's gold as a Pharaoh line."""

    __test__ = False  # not a pytest test class, whatever its name

    rows: list[dict[str, Any]]
    corpus: dict[str, Any]
    grid: dict[tuple[int, Any], float] | None
    calibration: Calibration
    gold_lines: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "corpus": self.corpus, "grid": self.grid, "calibration": self.calibration,
                "gold_lines": self.gold_lines}


RANKINGS = {"learned": "the learned combination", "fisher": "Fisher's method"}


def read_testset(src: Path | None, tgt: Path | None = None, gold: Path | None = None, ref: Path | None = None,
                 *, base: int | None = None, limit: int | None = None):
    """(pairs, gold set or None, references or None), the first `limit` sentences of each. `src` is a source
    file or a ``source ||| target`` file (then `tgt` must be None); errors name file and line. Empty sentences
    and lines that cannot be decoded are kept (the run flags them)."""
    if src is None:
        raise InputError(None, None, "no source file given", "a source file or a `source ||| target` file")
    is_pairs = "|||" in next(iter_lines(src), (0, ""))[1]  # a `source ||| target` file, or sources alone
    if is_pairs and tgt is not None:
        raise InputError(tgt, None, "a translations file was given with a `source ||| target` file",
                         "either one pairs file or a source file with an optional translations file")
    # empty and unreadable lines are kept: like `aligndebug triage`, the page flags such a sentence
    keep = dict(allow_empty=True, keep_unreadable=True)
    all_pairs = list(iter_pairs(pairs_path=src, **keep) if is_pairs else iter_pairs(src_path=src, tgt_path=tgt, **keep))
    if not all_pairs:
        raise InputError(src, None, "the file holds no sentences", "one sentence a line")
    gold_set = None
    if gold is not None:
        if all_pairs[0].tgt_words is None:
            raise InputError(gold, None, "gold alignments index the words of given translations, "
                             "but no translations were given", "a translations file (or a `source ||| target` file)")
        gold_set = read_gold(gold, base=base, sentences=pair_lengths(all_pairs), skip_invalid=True)
    refs: list[str | None] | None = None
    if ref is not None:  # an empty reference line: no reference for that sentence; an unreadable one flags it
        texts, bad = read_lines_keeping_bad(ref)
        if len(texts) != len(all_pairs):
            raise InputError(ref, None, f"{len(texts)} references for {len(all_pairs)} sentences",
                             "one reference a line, as many as sources")
        refs = blank_as_none(texts)
        all_pairs = [replace(p, unreadable=join_reasons(p.unreadable, bad[p.index])) if p.index in bad else p
                     for p in all_pairs]
    return all_pairs[:limit], gold_set, (refs[:limit] if refs is not None else None)


def run_testset(bundle: ModelBundle, src: Path | None, tgt: Path | None = None, gold: Path | None = None,
                ref: Path | None = None, *, base: int | None = None, limit: int | None = None,
                method: str = "shift-att", layer: Any = None, head: Any = "mean", beam: int = 1,
                model_name: str | None = None, on_progress: Progress | None = None,
                combine: str = "learned", aligner: Any = "default", aligner_name: str | None = None) -> TestsetResult:
    """Read, translate if needed, then score alignments against gold and triage in one pass, ranking the
    suspects by `combine` ("learned" or "fisher", as `aligndebug triage --combine`), with the signals of
    `aligner` (as `aligndebug triage --aligner`: a LearnedAligner, None or "none", a folder, or "default", the
    embedded model's own when `bundle` is its model), named `aligner_name` in the corpus's settings line.

    Translation takes the first third of the progress, aligning and triaging the rest. As in `aligndebug
    triage`, a sentence the model cannot take (a line it cannot decode, empty, beyond its positions) does not
    stop the run: it is not aligned, and its row is flagged with the reason and ranked among the suspects
    (`corpus["unusable"]` counts them by reason).
    """
    progress = on_progress or (lambda fraction, text: None)
    pairs, gold_set, refs = read_testset(src, tgt, gold, ref, base=base, limit=limit)
    golds = gold_set.alignments[:len(pairs)] if gold_set is not None else None
    n = len(pairs)
    progress(0.0, "Starting…")
    if pairs[0].tgt_words is None:
        # a source the model cannot take (`unusable_reason`: unreadable, empty, no tokens, beyond its positions)
        # is not translated: its row is flagged as the run's own check flags it
        items = [Item(p.index, p.line, p.src_words, unreadable=p.unreadable) for p in pairs]
        usable = [p for p, x in zip(pairs, items) if isinstance(unusable_reason(bundle, x), Encoded)]
        hyps: list[str] = []
        for i in range(0, len(usable), 16):  # in chunks, so progress moves
            hyps += translate(bundle, [p.source for p in usable[i:i + 16]], beam=beam)
            progress(len(hyps) / max(1, len(usable)) / 3, f"Translating {len(hyps)}/{len(usable)}")
        hyp_of = {p.index: h for p, h in zip(usable, hyps)}
        pairs = [replace(p, tgt_words=split_words(hyp_of.get(p.index, ""))) for p in pairs]
    done = [0]

    def tick(k: int) -> None:
        done[0] += k
        progress(min(1.0, 1 / 3 + 2 * done[0] / n / 3), f"Aligning and triaging {min(done[0], n)}/{n}")

    opts = ScoreOptions(method=method, layer=layer, head=head, per_head=gold_set is not None, skip_invalid=True)
    if aligner_name is None and isinstance(aligner, (str, os.PathLike)):
        aligner_name = str(aligner)
    aligner = resolve_aligner(bundle, aligner)
    ranked, aligned, totals = score_and_triage(bundle, pairs, golds, refs, opts, triage_layer=layer, on_progress=tick,
                                               combine=combine, aligner=aligner)
    rows = list(ranked)
    for r in rows:
        s = aligned.get(r["id"], {})
        r.update({"links": s.get("links"), "gold": s.get("gold"), "aer": s.get("aer"),
                  "precision": s.get("precision"), "recall": s.get("recall")})
    progress(1.0, f"Done: {n} sentences")
    ranking = ranked.calibration.combine  # "fisher" when a learned fit was asked for but could not be made
    corpus: dict[str, Any] = {"sentences": n, "ranking": ranking, "unusable": dict(ranked.unusable),
                              "settings": f"model {model_name or bundle.name} · layer {layer} · head {head} · "
                                          f"{method} · suspects ranked by {RANKINGS[ranking]} · learned aligner's signals: "
                                          f"{'none' if aligner is None else aligner_name or 'given'}"}
    if gold_set is not None and totals.scored:
        c = totals.counts
        corpus.update({"aer": c.aer, "precision": c.precision, "recall": c.recall})
        corpus["gold"] = gold_set.describe()
        corpus["gold_warnings"] = gold_set.warnings
    if refs is not None:
        hyps_all = [p.target for p in pairs]
        scored = [(h, r) for h, r in zip(hyps_all, refs) if r is not None]
        if scored:
            corpus.update({k: v for k, v in corpus_translation_scores(*map(list, zip(*scored))).items()
                           if k in ("bleu", "chrf")})
    grid = {k: v.aer for k, v in totals.grid.items()} if totals.grid else None
    gold_lines = {p.index: (format_pharaoh(g) if g is not None else "") for p, g in zip(pairs, golds or [])}
    return TestsetResult(rows, corpus, grid, ranked.calibration, gold_lines)
