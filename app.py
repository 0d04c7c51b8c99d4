"""aligndebug in the browser: `streamlit run app.py`.

Thin on purpose: every computation lives in the aligndebug package; this file only arranges
calls and widgets. The model is loaded once per process (st.cache_resource). The model named
by $ALIGNDEBUG_MODEL (default: the embedded de->en model) is the one the page opens on; every
model runs on $ALIGNDEBUG_DEVICE (default cpu; cuda: a GPU, in half precision, as `--device cuda`).
"""

from __future__ import annotations

import functools
import os
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from aligndebug import agreement, attribution, charts, export, rollout, signals, suite, testset, views
from aligndebug.combine import ERROR_TYPES, describe, learned
from aligndebug.contrast import contrast
from aligndebug.align import align_record, default_layer
from aligndebug.compare import grid_difference
from aligndebug.datasets import registry
from aligndebug.decoding import DECODERS, DEFAULT_THRESHOLDS
from aligndebug.errors import InputError
from aligndebug.extract import extract
from aligndebug.gold import format_pharaoh, parse_pharaoh_line
from aligndebug.methods import ALIGNERS, DEFAULT_ROW_RULE, ROW_RULES
from aligndebug.metrics import AlignmentSignature, count_links
from aligndebug.learned import CARD, WEIGHTS, AlignerMismatchError, load_aligner
from aligndebug.models import DEFAULT_NAMES, ModelLoadError, load_model
from aligndebug.record import Record
from aligndebug.runner import unusable_counts
from aligndebug.serverfiles import allowed_roots, resolve_server_path, server_paths_allowed
from aligndebug.words import split_words

EXAMPLE = "Ein Mann fährt mit dem Fahrrad durch die Stadt ."
PAGES = ("One sentence", "Test set", "Suite", "Compare")

st.set_page_config(page_title="aligndebug", layout="wide")


# ----------------------------------------------------------------------------- cached work

def get_bundle(name: str):
    """The model `name` on the app's device ($ALIGNDEBUG_DEVICE), loaded once per process."""
    return _load_bundle(name, os.environ.get("ALIGNDEBUG_DEVICE", "cpu"))


@st.cache_resource(show_spinner="Loading model…", max_entries=3)
def _load_bundle(name: str, device: str):
    return load_model(name, device=device)


@st.cache_resource(show_spinner="Loading the learned aligner…", max_entries=4)
def get_aligner(model: str, folder: str | None):
    """The learned aligner in `folder` (None: the embedded model's), checked against the model."""
    return load_aligner(folder, get_bundle(model))


@st.cache_resource(show_spinner="Loading the learned aligner…", max_entries=2)
def uploaded_aligner(model: str, files: tuple[tuple[str, bytes], ...]):
    """An aligner uploaded as its two files, loaded from a temporary folder removed right after."""
    with tempfile.TemporaryDirectory(prefix="aligndebug-aligner-") as folder:
        for name, data in files:
            (Path(folder) / Path(name).name).write_bytes(data)
        return load_aligner(folder, get_bundle(model))


@st.cache_data(show_spinner="Running the model…", max_entries=64)
def analyse(model: str, source: str, reference: str, beam: int):
    """One teacher-forced pass (after decoding when there is no reference) -> Record."""
    if not split_words(source):
        raise InputError(None, None, "the source sentence is empty", "at least one word")
    bundle = get_bundle(model)
    return extract(bundle, [source], [reference] if split_words(reference) else None, beam=beam)[0]


@st.cache_data(show_spinner="ALTI+…", max_entries=16)
def alti_contributions(model: str, record_json: str):
    return views.alti_view(get_bundle(model), Record.from_json(record_json))


@st.cache_data(show_spinner="Integrated Gradients…", max_entries=16)
def integrated_gradients(model: str, record_json: str, steps: int):
    rec = Record.from_json(record_json)
    return attribution.ig_for_record(get_bundle(model), rec, steps=steps, rows=rec.target_positions)


@st.cache_data(show_spinner="Contrastive Integrated Gradients…", max_entries=16)
def contrast_targets(model: str, source: str, target: str, foil: str, steps: int, layer: Any, head: Any
                     ) -> dict[str, Any]:
    """Why `target` and not `foil` (`aligndebug.contrast.contrast`), as its JSON dict."""
    return contrast(get_bundle(model), source, target, foil, steps=steps, layer=layer, head=head).to_dict()


def parse_gold_line(line: str, n_src: int, n_tgt: int, base: int):
    """A typed Pharaoh line -> GoldAlignment, checked against the sentence's word counts."""
    return parse_pharaoh_line(line.strip(), base=base, lengths=(n_src, n_tgt), path="gold line")


# ----------------------------------------------------------------------------- small UI helpers

def show_chart(chart: Any, name: str, caption: str | None = None, compact: bool = False) -> None:
    """Draw a chart, its caption, and PNG/SVG downloads (rendered only when clicked).

    `compact` for charts in narrow columns: the two buttons share the column's width.
    """
    st.altair_chart(chart, width="content", theme=None)  # as exported: the chart's own fonts and colours
    if caption:
        st.caption(caption)
    c1, c2, _ = st.columns([1, 1, 0.01] if compact else [1, 1, 6])
    c1.download_button("PNG", data=functools.partial(export.chart_to_png, chart), file_name=f"{name}.png",
                       mime="image/png", key=f"png-{name}", on_click="ignore", icon=":material/download:")
    c2.download_button("SVG", data=functools.partial(export.chart_to_svg, chart), file_name=f"{name}.svg",
                       mime="image/svg+xml", key=f"svg-{name}", on_click="ignore", icon=":material/download:")


def fail(exc: BaseException, what: str) -> None:
    """A clear message in the page, never a stack trace (the trace goes to the server log)."""
    if isinstance(exc, (InputError, ModelLoadError, ValueError)):
        st.error(f"{what}: {exc}")
    else:
        traceback.print_exc()
        st.error(f"{what}: unexpected {type(exc).__name__}: {exc}")


def md_escape(text: str) -> str:
    """User text shown inside Markdown: escape what Markdown (and Streamlit's $...$ LaTeX) would interpret."""
    return "".join("\\" + ch if ch in "\\`*_{}[]<>()#+-.!|~$" else ch for ch in text)


def selector_label(x: Any) -> str:
    return "mean" if x == "mean" else str(x)


# ----------------------------------------------------------------------------- sidebar

def sidebar_model() -> tuple[str, str]:
    """Page and model name (drawn first, so the page's inputs show while the model loads)."""
    sb = st.sidebar
    sb.title("aligndebug")
    sb.caption("Where does a translation model look, and is it right?")
    page = sb.radio("Page", PAGES, key="page", horizontal=True)
    if "model" not in st.session_state:
        st.session_state.model = os.environ.get("ALIGNDEBUG_MODEL", "default")
    model = sb.text_input("Model", key="model",
                          help="`default` is the embedded German→English model. Or a Hugging Face id "
                               "(e.g. Helsinki-NLP/opus-mt-de-en) or a local model folder.").strip() or "default"
    return page, model


def sidebar_settings(model: str) -> dict[str, Any] | None:
    """Load the model; its view settings, or None when it cannot be used."""
    sb = st.sidebar
    try:
        bundle = get_bundle(model)
    except Exception as exc:  # noqa: BLE001 - any load failure is shown, not raised
        fail(exc, f"Model {model!r} cannot be used")
        return None
    n_layers, n_heads = bundle.num_layers, bundle.num_heads
    sb.caption(f"{bundle.family} · {n_layers} decoder layers × {n_heads} heads · {bundle.device}")
    sb.subheader("Attention")
    view = bundle.view  # the model's own best view (the embedded model's aligndebug.json), else package defaults
    layer = sb.selectbox("Layer", ["mean", *range(n_layers)], index=1 + view.get("layer", default_layer(n_layers)),
                         format_func=selector_label, key=f"layer-{model}",
                         help="Decoder layer whose cross-attention is read (0 = lowest). Default: a middle-upper "
                              "layer, where attention aligns best (Chen et al., 2020).")
    head = sb.selectbox("Head", ["mean", *range(n_heads)], format_func=selector_label, key=f"head-{model}",
                        help="One attention head, or the mean over the layer's heads.")
    aligner, aligner_name = sidebar_aligner(model)
    methods = list(ROW_RULES) + (["learned"] if aligner is not None else [])
    row_rule = view.get("method", DEFAULT_ROW_RULE)
    method = sb.radio("Method", methods, index=methods.index(row_rule), horizontal=True,
                      key=f"method-{model}",
                      help="Shift-Att reads a target word from the row where it is the decoder *input* "
                           "(Chen et al. 2020); naive from the row that predicts it. Which aligns better "
                           "depends on the model: compare them on a gold set (Test set page). learned: a "
                           "trained aligner on top of the frozen model (see 'Learned aligner'), shown beside "
                           "raw attention read with the model's own row rule.")
    learned = method == "learned"
    if learned:
        method = row_rule  # the attention views beside it read the model's own row rule
    rules = ["default", *DECODERS]
    rule = sb.selectbox("Link rule", rules, key="decode",
                        help="How links are read off a matrix: argmax per target token, every cell >= a threshold, "
                             "or bidir (share of its row and of its column both >= the threshold, as awesome-align). "
                             "default: argmax for attention, the rule in its card for a learned aligner.")
    threshold = None
    if rule in ("threshold", "bidir"):
        threshold = float(sb.slider("Link threshold", 0.01, 0.99, float(DEFAULT_THRESHOLDS[rule]), 0.01,
                                    key=f"threshold-{rule}"))
    level = sb.radio("Level", ["word", "subword"], horizontal=True, key="level",
                     help="Words as written (gold alignments index words) or the model's subword tokens.")
    sb.subheader("Decoding")
    beam = int(sb.number_input("Beam size", 1, 8, 1, key="beam", help="1 = greedy. Used when no reference is given."))
    return {"model": model, "bundle": bundle, "layer": layer, "head": head, "method": method,
            "level": level, "beam": beam, "n_layers": n_layers, "n_heads": n_heads,
            "decode": None if rule == "default" else rule, "threshold": threshold,
            "aligner": aligner if learned else None, "aligner_name": aligner_name,
            "triage_aligner": aligner}  # the test set's triage reads the sidebar's aligner whatever the method


def sidebar_aligner(model: str) -> tuple[Any, str]:
    """The learned aligner the sidebar offers (the embedded model's own, a folder typed under the app's readable
    folders, or its two files uploaded) and its name; (None, "none") when there is none."""
    sb = st.sidebar
    options = ["model's own"]
    if server_paths_allowed(st.get_option("server.address")):
        options.append("folder")
    options.append("upload")
    how = sb.radio("Learned aligner", options, key="al_how", horizontal=True,
                   help="A small module trained on top of the frozen model (`aligndebug train-aligner`); when one "
                        "is available, 'learned' joins the methods. The embedded model ships one. A folder is "
                        "read only under the app's readable folders (ALIGNDEBUG_APP_ROOTS).")
    try:
        if how == "model's own":
            if model not in DEFAULT_NAMES:
                sb.caption("Only the embedded model ships an aligner: give a folder or upload one.")
                return None, "none"
            aligner, name = get_aligner(model, None), "default"
        elif how == "upload":
            files = sb.file_uploader(f"{CARD} and {WEIGHTS}", accept_multiple_files=True, key="al_up")
            if len(files or []) < 2:
                return None, "none"
            aligner, name = uploaded_aligner(model, tuple((f.name, f.getvalue()) for f in files)), "upload"
        else:
            text = sb.text_input("Aligner folder", key="al_path").strip()
            if not text:
                return None, "none"
            folder = resolve_server_path(text, allowed_roots())
            aligner, name = get_aligner(model, str(folder)), folder.name
    except (InputError, ModelLoadError, ValueError, OSError) as exc:
        sb.caption("No learned aligner: " + ("it was trained for another model."
                                             if isinstance(exc, AlignerMismatchError) else str(exc)))
        return None, "none"
    sb.caption(f"Aligner `{name}`: {aligner.card.get('objective', '?')} objective, {aligner.card.get('steps', '?')} "
               f"steps, trained for `{aligner.card.get('base_model')}`.")
    return aligner, name


# ----------------------------------------------------------------------------- one sentence

def sentence_form() -> dict[str, Any]:
    """The sentence inputs; returns the last submitted query (the example until one is submitted)."""
    query = st.session_state.setdefault("query", {"source": EXAMPLE, "reference": "", "gold": "", "base": 0})
    for key, qkey in (("src", "source"), ("ref", "reference"), ("gold", "gold")):
        if key not in st.session_state:
            st.session_state[key] = query[qkey]
    with st.form("sentence"):
        st.text_area("Source sentence", key="src", height=80,
                     help="Words are split on spaces, as in gold alignment files (tokenize punctuation apart).")
        c1, c2, c3 = st.columns([4, 3, 1])
        c1.text_input("Reference translation (optional)", key="ref",
                      help="Forced through the model (teacher forcing). Empty: the model translates.")
        c2.text_input("Gold alignment (optional)", key="gold", placeholder="0-0 1-1 2p3",
                      help="Pharaoh line: `i-j` sure, `ipj` possible; i = source word, j = target word.")
        c3.selectbox("Indices", [0, 1], key="gold_base", format_func=lambda b: f"{b}-based")
        submitted = st.form_submit_button("Analyse", type="primary")
    if submitted:
        st.session_state.query = query = {"source": st.session_state.src, "reference": st.session_state.ref,
                                          "gold": st.session_state.gold, "base": st.session_state.gold_base}
    return query


def sentence_page(cfg: dict[str, Any], query: dict[str, Any]) -> None:
    try:
        rec = analyse(cfg["model"], query["source"], query["reference"], cfg["beam"])
    except Exception as exc:  # noqa: BLE001
        fail(exc, "Cannot analyse this sentence")
        return
    gold = None
    if query["gold"].strip():
        try:
            gold = parse_gold_line(query["gold"], len(rec.src_words), len(rec.tgt_words), int(query["base"]))
        except Exception as exc:  # noqa: BLE001
            fail(exc, "Gold alignment ignored")
    sentence_views(cfg, rec, gold)


def sentence_views(cfg: dict[str, Any], rec, gold) -> None:
    layer, head, method = cfg["layer"], cfg["head"], cfg["method"]
    forced = rec.meta.get("forced_target", True)
    st.markdown(f"**Source** · {md_escape(rec.source)}  \n"
                f"**{'Reference (forced)' if forced else 'Model translation'}** · {md_escape(rec.target) or '∅ (empty)'}")
    learned = None
    if cfg.get("aligner") is not None:
        try:
            learned = views.learned_vs_attention(cfg["bundle"], cfg["aligner"], rec, layer=layer, head=head,
                                                 method=method, decode=cfg["decode"], threshold=cfg["threshold"],
                                                 gold=gold)
        except Exception as exc:  # noqa: BLE001
            fail(exc, "The learned aligner failed on this sentence")
    if learned is not None:
        links = learned["links"]
    else:
        links = align_record(rec, method=method, layer=layer, head=head, threshold=cfg.get("threshold"),
                             decode=cfg.get("decode"))
    cols = st.columns(5)
    seq_lp = signals.seq_logprob(rec.token_logprobs, signals.logprob_positions(rec.tgt_word_ids))
    cols[0].metric("Seq-Logprob", f"{seq_lp:.2f}", help="Mean log-probability of the target tokens (and </s>) "
                                                    "under the model; low = the model doubts this translation.")
    if gold is not None:
        c = count_links(links, gold)
        cols[1].metric("Precision", f"{c.precision:.2f}")
        cols[2].metric("Recall", f"{c.recall:.2f}")
        cols[3].metric("AER", f"{c.aer:.2f}", help="Alignment Error Rate (Och & Ney 2003), lower is better.")
    cols[4].download_button("Record JSON", data=functools.partial(export.record_to_json, rec), file_name="record.json",
                            mime="application/json", on_click="ignore", icon=":material/download:",
                            help="Everything this page shows: tokens, word maps, all attention, log-probs.")
    if learned is not None:
        sig = AlignmentSignature(model=cfg["model"], method=f"learned:{cfg['aligner_name']}",
                                 layer="states:" + ",".join(map(str, cfg["aligner"].config.layers)), heads="-",
                                 threshold=learned["threshold"], decode=learned["rule"],
                                 gold="typed line" if gold is not None else None)
    else:
        sig = AlignmentSignature(model=cfg["model"], method=method, layer=layer, heads=head,
                                 threshold=cfg.get("threshold") if cfg.get("decode") else None,
                                 decode=cfg.get("decode"), gold="typed line" if gold is not None else None)
    st.caption(f"Alignment settings: `{sig.format()}`")

    tabs = st.tabs(["Alignment", "Self-attention", "Rollout & IG", "Tokens"])
    with tabs[0]:
        if learned is not None:
            learned_view(cfg, rec, gold, learned)
        alignment_tab(cfg, rec, gold, links)
    with tabs[1]:
        self_attention_tab(cfg, rec)
    with tabs[2]:
        rollout_tab(cfg, rec, gold)
    with tabs[3]:
        tokens_tab(cfg, rec)
    why_not(cfg, rec)


def why_not(cfg: dict[str, Any], rec) -> None:
    """"Why not …?": the shown target against one the user types (log-probs and contrastive IG where they differ)."""
    import pandas as pd

    st.subheader("Why not …?")
    c1, c2 = st.columns([5, 1])
    foil = c1.text_input("Alternative target", key="whynot", placeholder="the translation with a word changed",
                         help="Where it differs from the target above (found by aligning the two word sequences), "
                              "the log-probability of each side and which source words push toward which "
                              "(Integrated Gradients of the difference; Yin & Neubig 2022).")
    steps = c2.select_slider("IG steps", [4, 8, 16, 32, 64], value=16, key="whynot_steps")
    if not split_words(foil):
        st.caption("Type another translation to see why the model prefers one over the other.")
        return
    try:
        res = contrast_targets(cfg["model"], rec.source, rec.target, foil, steps, cfg["layer"], cfg["head"])
    except Exception as exc:  # noqa: BLE001
        fail(exc, "Cannot contrast these targets")
        return
    c1, c2, c3 = st.columns(3)
    c1.metric("Δ log p (sentence)", f"{res['difference']:.3f}",
              help="log p(target) − log p(alternative), whole sentences with </s>; > 0: the model prefers the target.")
    c2.metric("log p target", f"{res['logprob_target']:.3f}")
    c3.metric("log p alternative", f"{res['logprob_contrast']:.3f}")
    if not res["positions"]:
        st.info("The two targets are the same words: nothing differs, the difference is 0.")
        return
    view = views.contrast_view(res["positions"], res["source_words"])
    st.dataframe(pd.DataFrame(view["table"]), hide_index=True, width="content",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in
                                ("log p target", "log p contrast", "difference")}
                 | {"completeness gap": st.column_config.NumberColumn(format="percent")})
    st.caption("Per differing place: log p of each side's words given the source and that side's own prefix, "
               "and their difference (> 0: the target is preferred there).")
    attr, att = charts.contrast_heatmaps(view)
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Contrastive attribution**")
        if attr is not None:
            show_chart(attr, "why-not-attribution", compact=True)
    with c2:
        st.markdown("**Attention of that step**")
        if att is not None:
            show_chart(att, "why-not-attention", compact=True)
    gaps = [r["completeness gap"] for r in view["table"] if r["completeness gap"] == r["completeness gap"]]
    st.caption("Red = the source word pushes toward the target, blue = toward the alternative. Completeness gap: "
               + (f"at most {max(gaps):.1%} of the difference explained" if gaps else "not defined (no difference "
                  "between input and baseline)") + "; if it is large, use more steps. Attention: cross-attention of "
               "the decoder step that emits the target's words there (sidebar layer/heads).")


def learned_view(cfg, rec, gold, learned: dict[str, Any]) -> None:
    """The learned aligner and raw attention side by side with the gold, and the target words where their argmax
    source words disagree (the model knows the link but its attention does not look there)."""
    import pandas as pd

    layer, head, method = cfg["layer"], cfg["head"], cfg["method"]
    dis = learned["disagreements"]
    st.subheader("Learned aligner beside raw attention")
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Raw cross-attention**")
        show_chart(charts.alignment_heatmap(rec, layer=layer, head=head, method=method, level="word", gold=gold,
                                            threshold=cfg["threshold"], decode=cfg["decode"],
                                            marked=learned["marked"], legend="bottom",
                                            title=f"layer {layer} · head {head} · {method}"),
                   "raw-attention-beside-learned", compact=True)
    with c2:
        st.markdown(f"**Learned aligner** (`{cfg['aligner_name']}`)")
        thr = learned["threshold"]
        show_chart(charts.learned_heatmap(learned["matrix"], rec.src_words, rec.tgt_words, learned["links"], gold=gold,
                                          marked=learned["marked"], legend="bottom",
                                          title=f"{learned['rule']}" + ("" if thr is None else f" @ {thr:g}")),
                   "learned-aligner", compact=True)
    st.metric("Target words where they disagree", f"{len(dis)} of {len(rec.tgt_words)}",
              help="Words whose most-attended source word is not the one the learned aligner links most strongly "
                   "(words the aligner leaves without a source are not counted).")
    if dis:
        st.dataframe(pd.DataFrame(dis).drop(columns=["attention source", "learned source"]), hide_index=True,
                     width="content", key="learned-disagreements")
    st.caption("≠ marks those target words on both heatmaps. Where the learned aligner is right and attention is "
               "not, the model *knows* the alignment (its hidden states hold it) but does not *look* there.")


def alignment_tab(cfg, rec, gold, links) -> None:
    layer, head, method, level = cfg["layer"], cfg["head"], cfg["method"], cfg["level"]
    chart = charts.alignment_heatmap(rec, layer=layer, head=head, method=method, level=level, gold=gold,
                                     threshold=cfg.get("threshold"), decode=cfg.get("decode"))
    note = ("Cell colour = cross-attention from each target word (row) to each source word (column). "
            "Dots = the extracted alignment (each target's most-attended source word).")
    if gold is not None:
        note += (" Against the gold: **correct** (green), **missed** Sure links (orange triangles), "
                 "**spurious** links outside Possible (red crosses).")
    show_chart(chart, "alignment", note)
    st.code(format_pharaoh(links) or "(no links)", language=None)
    st.caption("The extracted alignment as a Pharaoh line (0-based `source-target`).")
    st.subheader("Every layer × head")
    show_chart(charts.layer_head_grid(rec, method=method, level=level), "layer-head-grid",
               "One panel per decoder layer (rows) and head (columns); the last column is the layer's mean. "
               "Look for heads whose dots form a clean diagonal-like path before trusting one.")
    if gold is not None:
        scores = views.layer_head_aer(rec, gold, method=method)
        show_chart(charts.layer_head_scores(scores), "layer-head-aer",
                   "Sentence AER of the alignment read from each layer/head (best outlined). One sentence is "
                   "noisy: score a test set to choose a layer.")


def self_attention_tab(cfg, rec) -> None:
    layer, head, level = cfg["layer"], cfg["head"], cfg["level"]
    st.caption("Each row is a token attending; each column a token it attends to. Same layer/head as the sidebar.")
    c1, c2 = st.columns(2)
    for col, side, name in ((c1, "encoder", "Encoder (source)"), (c2, "decoder", "Decoder (target)")):
        with col:
            st.markdown(f"**{name}**")
            try:
                show_chart(charts.self_attention_heatmap(rec, side, layer=layer, head=head, level=level,
                                                         legend="bottom"),
                           f"{side}-self-attention", compact=True)
            except ValueError as exc:
                st.info(str(exc))
    st.caption("The decoder row of a word is where that word is the decoder's *input*; it only sees "
               "earlier positions (causal mask), hence the triangle.")


def rollout_tab(cfg, rec, gold) -> None:
    layer, head, method, level = cfg["layer"], cfg["head"], cfg["method"], cfg["level"]
    st.caption("Attention shows where one layer looks; **rollout** follows the flow through every layer "
               "(Abnar & Zuidema 2020); **Integrated Gradients** measures which source words change the "
               "output's probability (Sundararajan et al. 2017). Where they disagree, attention is not "
               "explaining the output.")
    c1, c2, c4, c3 = st.columns(4)
    with c1:
        st.markdown("**Cross-attention**")
        show_chart(charts.alignment_heatmap(rec, layer=layer, head=head, method=method, level=level, gold=gold,
                                            cell=18, title="", legend="bottom"), "attention-small", compact=True)
    with c2:
        st.markdown("**Attention rollout**")
        try:
            mat = rollout.rollout_for_record(rec)
            show_chart(charts.source_target_heatmap(rec, mat, level=level, method=method, value_title="rollout",
                                                    gold=gold, cell=18, legend="bottom"), "rollout", compact=True)
        except ValueError as exc:
            st.info(str(exc))
    with c4:
        st.markdown("**ALTI+ source contribution**")
        try:
            alti = alti_contributions(cfg["model"], rec.to_json(arrays=False))
            show_chart(charts.source_target_heatmap(rec, alti["matrix"], level=level, value_title="ALTI+",
                                                    gold=gold, cell=18, legend="bottom"), "alti", compact=True)
            st.caption(f"Share of each prediction that comes from the source (Ferrando et al. 2022): "
                       f"{alti['sentence']:.0%} on average; the rest comes from the target prefix. "
                       "Low = the output leans on its own prefix, the pattern of detached output.")
            st.caption("⚠ Contribution is not causation: ALTI+ measures how much of each vector a token "
                       "accounts for, not what would change without it (Integrated Gradients asks that).")
        except (ValueError, RuntimeError) as exc:  # a model family whose layout ALTI+ does not know
            st.info(str(exc))
    ig = None
    with c3:
        st.markdown("**Integrated Gradients**")
        steps = st.select_slider("IG steps", [8, 16, 32, 64], value=32, key="ig_steps")
        if st.button("Compute IG", key="ig_go", help="Runs the model many times; a few seconds on CPU."):
            st.session_state.ig_for = (cfg["model"], rec.source, rec.target, steps)
        if st.session_state.get("ig_for") == (cfg["model"], rec.source, rec.target, steps):
            try:
                ig = integrated_gradients(cfg["model"], rec.to_json(arrays=False), steps)
                mat = attribution.ig_token_matrix(rec, ig)
                show_chart(charts.source_target_heatmap(rec, mat, level=level, value_title="IG", gold=gold,
                                                        cell=18, legend="bottom"), "integrated-gradients",
                           compact=True)
                rel = ig.relative_delta
                worst = float(np.nanmax(rel)) if len(rel) and not np.isnan(rel).all() else float("nan")
                st.caption(f"Red = raises the token's probability, blue = lowers it. Completeness gap: "
                           f"at most {worst:.1%} of what is explained (max |gap| {float(np.max(ig.delta)):.3g}); "
                           "if it is large, use more steps.")
            except Exception as exc:  # noqa: BLE001
                fail(exc, "Integrated Gradients failed")
                return
    if ig is not None:
        agreement_view(cfg, rec, gold, ig)


def agreement_view(cfg, rec, gold, ig) -> None:
    """Where attention, rollout and IG agree: Spearman's rho per target word, and their alignments vs gold."""
    import pandas as pd

    layer, head, method = cfg["layer"], cfg["head"], cfg["method"]
    try:
        rho_att = agreement.record_agreement(rec, ig, "cross", layer, head, method)
        rho_roll = agreement.record_agreement(rec, ig, "rollout", method=method)
    except ValueError as exc:
        st.info(str(exc))
        return
    st.subheader("Do they agree?")
    c1, c2 = st.columns(2)
    c1.metric("ρ attention ↔ IG", f"{agreement.sentence_agreement(rho_att):.2f}",
              help="Mean over target words of Spearman's rank correlation between the word's attention and "
                   "the size of its IG attributions over the source words. 1 = same ranking, 0 = unrelated.")
    c2.metric("ρ rollout ↔ IG", f"{agreement.sentence_agreement(rho_roll):.2f}")
    table = pd.DataFrame({"target word": rec.tgt_words, "ρ attention ↔ IG": rho_att, "ρ rollout ↔ IG": rho_roll})
    if gold is not None:
        settings = {"method": method, "layer": layer, "head": head, "rollout_method": method}
        links = {a.label: a.links(rec, ig, settings) for a in ALIGNERS.values()}
        scores = pd.DataFrame([{"alignment from": k, **{m: round(v, 3) for m, v in count_links(l, gold).as_dict().items()
                                                        if m in ("precision", "recall", "aer")}}
                               for k, l in links.items()])
        st.dataframe(scores, hide_index=True, width="content")
        st.caption(f"The same sentence aligned {len(links)} ways, scored against the gold line.")
    st.dataframe(table, hide_index=True, width="content",
                 column_config={c: st.column_config.NumberColumn(format="%.2f") for c in table.columns[1:]})
    st.caption("Low or negative ρ: the words the model looks at are not the ones that drive its prediction.")


def tokens_tab(cfg, rec) -> None:
    layer, head, method, level = cfg["layer"], cfg["head"], cfg["method"], cfg["level"]
    cal = st.session_state.get("calibration")
    t = (cal.token_thresholds if cal is not None else {}) or {}
    with st.expander("Thresholds", expanded=False):
        src = "calibrated on the last test set" if cal is not None else "defaults: run a test set to calibrate them"
        st.caption(f"Flags below use these thresholds ({src}).")
        ent_thr = st.slider("Scattered above (normalised entropy)", 0.0, 1.0,
                            float(round(t.get("entropy_high") or 0.8, 2)), 0.01, key="ent_thr")
        cov_low = st.slider("Unattended below (relative coverage)", 0.0, 1.0,
                            float(round(min(t.get("coverage_low") or 0.2, 1.0), 2)), 0.01, key="cov_low")
    ts = views.token_signals(rec, layer=layer, head=head, method=method, level=level)
    show_chart(charts.token_chart(ts["labels"], ts["logprob"], ts["entropy"], entropy_threshold=ent_thr,
                                  title="per target " + ("word" if level == "word" else "token")), "tokens",
               "Top: log-probability of each target word under the model (low = unsure). Bottom: entropy of its "
               "attention over the source words (1 = spread evenly); **scattered** ones are red.")
    cov, content = views.coverage_values(rec, layer=layer, head=head, method=method)
    show_chart(charts.coverage_chart(rec.src_words, cov, content, low=cov_low), "coverage",
               "Attention each source word receives from the whole translation (1 = its fair share). Content words "
               "that get almost none are marked **omitted?**: the translation may have dropped them.")
    missing = [w for w, c, m in zip(rec.src_words, cov, content) if m and c < cov_low]
    if missing:
        st.warning("Possible omissions: " + ", ".join(f"**{w}**" for w in missing))


# ----------------------------------------------------------------------------- test set

@contextmanager
def testset_files(inp: dict[str, Any]) -> Iterator[dict[str, Path | None]]:
    """The test set's files while it is scored: uploads written to a temporary folder removed afterwards,
    typed server paths checked against the folders the app may read."""
    if inp.get("typed") is not None:
        roots = allowed_roots()
        yield {k: resolve_server_path(v, roots) if v else None for k, v in inp["typed"].items()}
        return
    if inp.get("uploads") is None:
        yield {k: inp.get(k) for k in ("src", "tgt", "ref", "gold")}
        return
    with tempfile.TemporaryDirectory(prefix="aligndebug-app-") as folder:
        paths: dict[str, Path | None] = {}
        for key, upload in inp["uploads"].items():
            paths[key] = None
            if upload is not None:
                # keep the user's file name: error messages quote it
                paths[key] = Path(folder) / key / Path(upload.name).name
                paths[key].parent.mkdir()
                paths[key].write_bytes(upload.getvalue())
        yield paths


def testset_inputs() -> dict[str, Any] | None:
    """Where the test set comes from: server paths or uploads. Returns paths (uploads saved to a temp dir)."""
    st.caption("Score a whole test set: corpus AER against gold, BLEU/chrF against references, and a ranked "
               "list of suspect translations (triage). Pick a row to open it in the sentence views.")
    sources = ["Upload", "Named test set"]
    if server_paths_allowed(st.get_option("server.address")):
        sources.append("Path on the server")
    else:
        st.caption("Reading files by server path is off: the app listens beyond this machine "
                   "(`server.address`), so it would show this machine's files to others.")
    how = st.radio("Files", sources, horizontal=True, key="ts_how")
    if how == "Named test set":
        return named_testset_inputs()
    labels = {"src": "Source (one sentence a line, or `source ||| target` a line)",
              "tgt": "Translations to check (optional; otherwise the model translates)",
              "ref": "References (optional; for BLEU/chrF)",
              "gold": "Gold alignments (optional; Pharaoh / S-P / NAACL; needs translations)"}
    given: dict[str, Any] = {}
    if how == "Upload":
        given["uploads"] = {key: st.file_uploader(label, key=f"up-{key}") for key, label in labels.items()}
    else:
        given["typed"] = {key: st.text_input(label, key=f"path-{key}").strip() for key, label in labels.items()}
        st.caption("Readable folders: " + ", ".join(f"`{r}`" for r in allowed_roots())
                   + " (`ALIGNDEBUG_APP_ROOTS` sets them).")
    c1, c2, c3, c4 = st.columns(4)
    base = c1.selectbox("Gold indices", ["detect", 0, 1], key="ts_base",
                        format_func=lambda b: b if b == "detect" else f"{b}-based")
    limit = int(c2.number_input("Max sentences", 1, 100000, 200, key="ts_limit",
                                help="Score the first N pairs (the CPU is slow on big sets)."))
    combine = ranking_choice(c3)
    go = c4.button("Run", type="primary", key="ts_go")
    return {**given, "base": None if base == "detect" else base, "limit": limit, "combine": combine, "go": go}


def ranking_choice(col: Any) -> str:
    """How the suspects are ranked: the learned combination (default) or Fisher's method."""
    return col.selectbox("Rank suspects by", list(testset.RANKINGS), key="ts_combine",
                         format_func=lambda k: testset.RANKINGS[k],
                         help="The learned combination weighs the signals by how well they tell synthetic errors "
                              "made from this set's own rows from the rows themselves; Fisher's method gives every "
                              "signal family the same weight.")


def named_testset_inputs() -> dict[str, Any]:
    """A set from the registry (`aligndebug datasets`): with gold, its target is forced and scored against
    the gold; without, the model translates and the target side serves as references."""
    sets = {name: ts for name, ts in registry().items() if ts.available}
    name = st.selectbox("Test set", list(sets), key="ts_name",
                        format_func=lambda n: f"{n} ({sets[n].direction}, {sets[n].sentences} sentences)")
    ts = sets[name]
    st.caption(f"{ts.description}. Licence: {ts.licence or 'not stated'}." + (f" {ts.notes}." if ts.notes else ""))
    src = ts.path("pairs") or ts.path("src")
    paths = ({"src": src, "tgt": ts.path("tgt"), "ref": None, "gold": ts.path("gold")} if ts.gold is not None
             else {"src": src, "tgt": None, "ref": ts.path("tgt"), "gold": None})
    c2, c3, c4 = st.columns(3)
    limit = int(c2.number_input("Max sentences", 1, 100000, min(200, ts.sentences or 200), key="ts_limit",
                                help="Score the first N pairs (the CPU is slow on big sets)."))
    combine = ranking_choice(c3)
    go = c4.button("Run", type="primary", key="ts_go")
    return {**paths, "base": ts.gold_base, "limit": limit, "combine": combine, "go": go}


def run_testset(cfg: dict[str, Any], inp: dict[str, Any]) -> dict[str, Any]:
    """The test-set page's work (`aligndebug.testset.run_testset`), with a progress bar."""
    bar = st.progress(0.0, text="Starting…")
    result = testset.run_testset(cfg["bundle"], inp["src"], inp["tgt"], inp["gold"], inp["ref"], base=inp["base"],
                                 limit=inp["limit"], method=cfg["method"], layer=cfg["layer"], head=cfg["head"],
                                 beam=cfg["beam"], model_name=cfg["model"], combine=inp.get("combine", "learned"),
                                 aligner=cfg["triage_aligner"], aligner_name=cfg["aligner_name"],
                                 on_progress=lambda fraction, text: bar.progress(fraction, text=text))
    return result.as_dict()


def open_sentence() -> None:
    """Callback: show the chosen test-set row in the sentence views (read at click time, not render time)."""
    res, chosen = st.session_state.get("testset"), st.session_state.get("ts_open")
    row = next((r for r in (res or {}).get("rows", []) if r["id"] == chosen), None)
    if row is None:
        return
    gold_line = res["gold_lines"].get(chosen, "")
    st.session_state.src = row["source"]
    st.session_state.ref = row.get("translation") or ""
    st.session_state.gold = gold_line
    st.session_state.gold_base = 0
    st.session_state.query = {"source": row["source"], "reference": row.get("translation") or "",
                              "gold": gold_line, "base": 0}
    st.session_state.page = PAGES[0]


def testset_page(cfg: dict[str, Any], inp: dict[str, Any]) -> None:
    if inp["go"]:
        try:
            with testset_files(inp) as files:
                st.session_state.testset = run_testset(cfg, {**inp, **files})
            st.session_state.calibration = st.session_state.testset["calibration"]
        except Exception as exc:  # noqa: BLE001
            fail(exc, "Cannot score this test set")
            return
    res = st.session_state.get("testset")
    if not res:
        return
    corpus = res["corpus"]
    cols = st.columns(6)
    cols[0].metric("Sentences", corpus["sentences"])
    for col, key, label in zip(cols[1:], ("aer", "precision", "recall", "bleu", "chrf"),
                               ("AER", "Precision", "Recall", "BLEU", "chrF")):
        if key in corpus:
            col.metric(label, f"{corpus[key]:.3f}" if key in ("aer", "precision", "recall") else f"{corpus[key]:.1f}")
    st.caption(f"Scored with {corpus['settings']}" + (f" · gold: {corpus['gold']}" if "gold" in corpus else ""))
    if corpus.get("unusable"):
        st.warning(f"The model could not take {sum(corpus['unusable'].values())} sentence(s) "
                   f"({unusable_counts(corpus['unusable'])}): they are not aligned, and are flagged with the reason "
                   "and ranked among the suspects below.")
    if "gold" in corpus:
        for w in corpus.get("gold_warnings", []):
            st.warning(w)
    if res["grid"]:
        show_chart(charts.layer_head_scores(res["grid"], title="corpus AER per layer × head (lower is better)"),
                   "testset-layer-head-aer", "Read alignments from the best cell's layer/head (sidebar).")
    rows = res["rows"]
    import pandas as pd

    # each error type's own score is a column of its own, so the table sorts by one type alone
    table = pd.DataFrame([{**{k: (", ".join(v) if isinstance(v, list) and k == "flags" else v)
                              for k, v in r.items() if k in TABLE_COLUMNS},
                           **{f"{t} score": v for t, v in (r.get("type_scores") or {}).items()}} for r in rows])
    all_flags = sorted({f for r in rows for f in r.get("flags", [])})
    c1, c2 = st.columns([2, 3])
    chosen = c1.multiselect("Show flags", all_flags, key="ts_flags", help="Keep rows with any of these flags.")
    needle = c2.text_input("Search text", key="ts_search").strip().lower()
    keep = [i for i, r in enumerate(rows)
            if (not chosen or set(chosen) & set(r.get("flags", [])))
            and (not needle or needle in (r["source"] + " " + (r.get("translation") or "")).lower())]
    view = table.iloc[keep][[c for c in TABLE_COLUMNS if c in table.columns]]
    typed = {f"{t} score": st.column_config.NumberColumn(f"{t} score", format="%.2f",
                                                          help=f"The learned combination's {t} score alone")
             for t in ERROR_TYPES}
    event = st.dataframe(view, hide_index=True, on_select="rerun", selection_mode="single-row", key="ts_table",
                         column_config={"score": st.column_config.NumberColumn("score", format="%.2f",
                                                                               help="Higher = more suspect"),
                                        "error_type": st.column_config.TextColumn(
                                            "error type", help="The error type the learned combination finds it "
                                                               "most like"), **typed})
    st.caption("Click a column header to sort; select a row to open it.")
    comb = learned(res["calibration"]) if res.get("calibration") is not None else None
    if comb is not None:
        with st.expander("How the score was learned: error rates and weights, fitted without labels on this set"):
            st.markdown("\n".join(f"- {line}" for line in describe(comb)))
    selected = event.selection.rows if event is not None and hasattr(event, "selection") else []
    options = [rows[i]["id"] for i in keep]
    if options:
        if selected:
            st.session_state.ts_open = options[selected[0]]
        by_id = {r["id"]: r for r in rows}
        st.selectbox("Sentence", options, key="ts_open",
                            format_func=lambda i: f"#{i} · {by_id[i]['source'][:80]}")
        st.button("Open in sentence views", key="ts_open_go", on_click=open_sentence, type="primary")
    c1, c2, _ = st.columns([1, 1, 6])
    c1.download_button("JSONL", data=export.rows_to_jsonl(rows), file_name="testset.jsonl",
                       mime="application/jsonl", on_click="ignore", icon=":material/download:")
    c2.download_button("CSV", data=export.rows_to_csv(rows), file_name="testset.csv", mime="text/csv",
                       on_click="ignore", icon=":material/download:")


TABLE_COLUMNS = ("rank", "id", "score", "error_type", *(f"{t} score" for t in ERROR_TYPES), "flags", "source",
                 "translation", "reference", "aer",
                 *(s.name for s in signals.SIGNALS.values() if s.table))


# ----------------------------------------------------------------------------- compare two models

def compare_page(cfg: dict[str, Any], query: dict[str, Any]) -> None:
    """Two models on the same sentence and reference: heatmaps side by side with the same gold and colour
    scale, and the difference of their layer x head AER grids (`aligndebug compare` does whole test sets)."""
    import altair as alt

    if "model_b" not in st.session_state:
        st.session_state.model_b = "default"
    model_b = st.text_input("Model B (compared with the sidebar's model, A)", key="model_b",
                            help="A Hugging Face id, a local model folder (e.g. another checkpoint) or `default`."
                            ).strip() or "default"
    if not split_words(query["reference"]):
        st.info("Give a reference translation: both models are forced through the same target, so their "
                "alignments are read against the same gold.")
        return
    try:
        bundle_b = get_bundle(model_b)
        recs = [analyse(m, query["source"], query["reference"], 1) for m in (cfg["model"], model_b)]
    except Exception as exc:  # noqa: BLE001
        fail(exc, "Cannot compare on this sentence")
        return
    gold = None
    if query["gold"].strip():
        try:
            gold = parse_gold_line(query["gold"], len(recs[0].src_words), len(recs[0].tgt_words), int(query["base"]))
        except Exception as exc:  # noqa: BLE001
            fail(exc, "Gold alignment ignored")
    n_b = bundle_b.num_layers
    heads_b = recs[1].cross.shape[1]
    # B reads the sidebar's layer and head where it has them, else its own default layer / the head mean
    layer_b = cfg["layer"] if cfg["layer"] == "mean" or cfg["layer"] < n_b else default_layer(n_b)
    head_b = cfg["head"] if cfg["head"] == "mean" or cfg["head"] < heads_b else "mean"
    sides = [(cfg["model"], recs[0], cfg["layer"], cfg["head"]), (model_b, recs[1], layer_b, head_b)]
    aers = []
    for col, (name, rec, layer, head) in zip(st.columns(2), sides):
        with col:
            st.markdown(f"**{'AB'[len(aers)]}: {md_escape(name)}** · layer {layer} · head {head}")
            chart = charts.alignment_heatmap(rec, layer=layer, head=head, method=cfg["method"], level=cfg["level"],
                                             gold=gold, legend="bottom")
            chart.layer[0].encoding.color.scale = alt.Scale(scheme="blues", domain=[0, 1])  # one scale for both
            show_chart(chart, f"compare-{'ab'[len(aers)]}", compact=True)
            if gold is not None:
                links = align_record(rec, cfg["method"], layer, head)
                aers.append(count_links(links, gold).aer)
                st.metric("AER", f"{aers[-1]:.2f}", delta=None if len(aers) == 1 else f"{aers[1] - aers[0]:+.2f}",
                          delta_color="inverse")
            else:
                aers.append(None)
    if gold is None:
        st.info("Add a gold alignment line to compare the models' layer × head AER grids.")
        return
    grids = [views.layer_head_aer(rec, gold, method=cfg["method"]) for _, rec, _, _ in sides]
    diff = grid_difference(*grids)
    if diff is None:
        st.caption("The models differ in layers or heads: their AER grids side by side.")
        for col, grid, label in zip(st.columns(2), grids, "AB"):
            with col:
                show_chart(charts.layer_head_scores(grid, title=f"{label}: AER per layer x head"), f"grid-{label}",
                           compact=True)
        return
    show_chart(charts.layer_head_scores(diff, value_title="AER B − A",
                                        title="AER difference per layer x head (B − A; below 0: B aligns better)"),
               "grid-difference", caption="Sentence AER of B's alignment minus A's from every layer and head "
                                          "(and each layer's head mean), against the same gold.")


# ----------------------------------------------------------------------------- suite

def suite_inputs() -> dict[str, Any]:
    """Which contrastive suite: an uploaded TSV or a built-in probe; how many items, how much IG."""
    st.caption("A contrastive suite: one item a line, `source <TAB> correct <TAB> wrong [<TAB> tags]`. An item "
               "passes when the model gives the correct target the higher log-probability. Failing items show "
               "which source words pushed toward the wrong one.")
    how = st.radio("Suite", ["Built-in probe", "Upload"], horizontal=True, key="su_how")
    inp: dict[str, Any] = {}
    if how == "Upload":
        inp["upload"] = st.file_uploader("Suite TSV", key="su_up")
    else:
        inp["name"] = st.selectbox("Probe", list(suite.BUILTIN), key="su_name",
                                   help="gender-de-en: occupations in feminine and masculine German forms; is the "
                                        "English pronoun the one the German marks? (datasets/probes/SOURCE.txt)")
    c1, c2, c3, c4 = st.columns(4)
    inp["limit"] = int(c1.number_input("Max items", 1, 100000, 40, key="su_limit",
                                       help="Score the first N items (about half a second each on a CPU)."))
    inp["steps"] = c2.select_slider("IG steps", [4, 8, 16, 32], value=16, key="su_steps")
    inp["attribute"] = c3.selectbox("Attribution for", suite.ATTRIBUTE, key="su_attr",
                                    help="Which items get the contrastive attribution: all (needed for the "
                                         "marker-word rates), failing ones only (faster), or none.")
    inp["go"] = c4.button("Run", type="primary", key="su_go")
    return inp


def read_suite_input(inp: dict[str, Any]) -> tuple[list, str]:
    """The suite's items and its name; an upload is read from a temporary folder removed afterwards, and
    its errors name the uploaded file, not the temporary copy."""
    if inp.get("upload") is None:
        if "name" not in inp:
            raise InputError(None, None, "no suite file uploaded", "a TSV file")
        return suite.read_suite(suite.resolve_suite(inp["name"])), inp["name"]
    upload = inp["upload"]
    name = Path(upload.name).name
    with tempfile.TemporaryDirectory(prefix="aligndebug-app-") as folder:
        path = Path(folder) / name
        path.write_bytes(upload.getvalue())
        try:
            return suite.read_suite(path), name
        except InputError as exc:
            raise InputError(name, exc.line, exc.message, exc.expected) from None
        except UnicodeDecodeError:
            raise InputError(name, None, "the file is not UTF-8 text", "a UTF-8 TSV file") from None


def suite_page(cfg: dict[str, Any], inp: dict[str, Any]) -> None:
    if inp["go"]:
        try:
            items, name = read_suite_input(inp)
            items = items[: inp["limit"]]
            bar = st.progress(0.0, text="Scoring…")
            done = [0]

            def progress(n: int) -> None:
                done[0] += n
                bar.progress(min(1.0, done[0] / len(items)), text=f"{done[0]} / {len(items)} items")

            opts = suite.SuiteOptions(steps=inp["steps"], attribute=inp["attribute"], layer=cfg["layer"],
                                      head=cfg["head"], chunk_size=8)
            rows = suite.run_suite(cfg["bundle"], items, opts, source=name, on_progress=progress)
            st.session_state.suite = {"name": name, "rows": rows, "summary": suite.summarize(rows)}
        except Exception as exc:  # noqa: BLE001
            fail(exc, "Cannot run this suite")
            return
    res = st.session_state.get("suite")
    if not res:
        return
    suite_results(res)


def _acc_row(label: str, a: dict[str, Any]) -> dict[str, Any]:
    return {"": label, "n": a["n"], "accuracy": a["accuracy"], "95% CI low": a["ci"][0], "95% CI high": a["ci"][1]}


def suite_results(res: dict[str, Any]) -> None:
    import pandas as pd

    rows, summary = res["rows"], res["summary"]
    overall = summary["overall"]
    failing = [r for r in suite.iter_failing(rows)]
    c1, c2, c3 = st.columns(3)
    c1.metric("Items", overall["n"])
    c2.metric("Accuracy", f"{overall['accuracy']:.1%}",
              help="Share of items whose correct target has the higher log-probability.")
    c3.metric("Failing", len(failing))
    pct = {c: st.column_config.NumberColumn(format="percent") for c in ("accuracy", "95% CI low", "95% CI high")}
    table = [_acc_row("overall", overall)] + [_acc_row(t, a) for t, a in summary["per_tag"].items()]
    st.dataframe(pd.DataFrame(table), hide_index=True, width="content", column_config=pct)
    st.caption(f"{md_escape(res['name'])} · 95% percentile bootstrap intervals ({summary['n_boot']} resamples, "
               f"seed {summary['seed']}).")
    g = summary.get("gender")
    if g:
        st.subheader("Gender")
        c1, c2, c3 = st.columns(3)
        c1.metric("Feminine forms", f"{g['fem']['accuracy']:.1%}")
        c2.metric("Masculine forms", f"{g['masc']['accuracy']:.1%}")
        c3.metric("Gap masc − fem", f"{100 * g['gap']['value']:+.1f} pts",
                  help=f"95% interval [{100 * g['gap']['ci'][0]:+.1f}, {100 * g['gap']['ci'][1]:+.1f}] points.")
        split = [_acc_row(label, g[k]) for k, label in (("pro", "pro-stereotypical"), ("anti", "anti-stereotypical"))
                 if k in g]
        split += [_acc_row(f"form / stereotype {cell}", a) for cell, a in g.get("by_stereotype", {}).items()]
        if split:
            st.dataframe(pd.DataFrame(split), hide_index=True, width="content", column_config=pct)
    m = summary.get("markers")
    if m:
        st.caption(f"Marker words among the top-{summary['top_k']} source words by |contrastive attribution|: "
                   f"{m['rate']:.1%} of {m['n']} items (a random ranking: {m['chance']:.1%}); their attribution "
                   f"favours the correct target in {m['supports_correct']:.1%}.")
    st.download_button("Rows (JSONL)", data=export.rows_to_jsonl(rows), file_name="suite.jsonl",
                       mime="application/jsonl", on_click="ignore", icon=":material/download:", key="su_jsonl")
    st.subheader(f"Failing items ({len(failing)})")
    shown = 20
    if len(failing) > shown:
        st.caption(f"The first {shown} shown; all are in the JSONL rows.")
    for r in failing[:shown]:
        with st.expander(f"item {r['index']} (line {r['line']}) · Δ log p = {r['difference']:+.3f}"):
            st.markdown(f"**Source** · {md_escape(r['source'])}  \n**Correct** · {md_escape(r['correct'])}  \n"
                        f"**Wrong** · {md_escape(r['wrong'])}")
            view = views.contrast_view(r["positions"], r["source_words"], target_key="correct", contrast_key="wrong")
            attr, att = charts.contrast_heatmaps(view, target="correct", contrast="wrong")
            if attr is None:
                st.caption("No contrastive attribution for this item (see “Attribution for”).")
                continue
            c1, c2 = st.columns(2)
            with c1:
                show_chart(attr, f"suite-{r['index']}-attribution", compact=True)
            with c2:
                show_chart(att, f"suite-{r['index']}-attention", compact=True)
            st.caption("Red = toward the correct target, blue = toward the wrong one. Attention: the decoder step "
                       "that emits the correct target's words there.")


# ----------------------------------------------------------------------------- main

def main() -> None:
    page, model = sidebar_model()
    inputs = {PAGES[0]: sentence_form, PAGES[1]: testset_inputs, PAGES[2]: suite_inputs, PAGES[3]: sentence_form}[page]()
    cfg = sidebar_settings(model)
    if cfg is None:
        st.info("Enter a model in the sidebar: `default`, a Hugging Face id, or a local model folder.")
        return
    if page == PAGES[0]:
        sentence_page(cfg, inputs)
    elif page == PAGES[1]:
        testset_page(cfg, inputs)
    elif page == PAGES[2]:
        suite_page(cfg, inputs)
    else:
        compare_page(cfg, inputs)


try:
    main()
except Exception as exc:  # noqa: BLE001 - last line of defence: a message, never a stack trace
    fail(exc, "Something went wrong")
