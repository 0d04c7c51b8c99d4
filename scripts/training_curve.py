"""Run aligndebug's AlignmentMonitor over a training run's snapshots and draw the AER curve.

    python scripts/training_curve.py --run runs/default-model --data datasets \
        --out aligndebug/default_model/aer_curve.png

The monitor is the same one `train_default_model.py` calls at each evaluation; this replays it
over the snapshots saved during training (e.g. for a run started before the monitor existed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import altair as alt
import pandas as pd

from aligndebug.export import chart_to_png
from aligndebug.models import load_model
from aligndebug.training import AlignmentMonitor, read_monitor_log


def curve_chart(log: list[dict]) -> alt.Chart:
    """AER per decoder layer over training steps, naive and Shift-Att."""
    rows = [{"step": r["step"], "method": m, "layer": f"layer {l}", "AER": aer}
            for r in log for m in ("naive", "shift-att") for l, aer in enumerate(r[f"aer_{m}"])]
    return alt.Chart(pd.DataFrame(rows)).mark_line(point=True).encode(
        x=alt.X("step:Q", title="training step"), y=alt.Y("AER:Q", title="AER (bicici de-en gold)"),
        color=alt.Color("layer:N"), strokeDash=alt.StrokeDash("method:N", legend=None),
    ).properties(width=480, height=280, title="AER while training (solid: naive, dashed: Shift-Att)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/default-model"))
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "datasets")
    ap.add_argument("--out", type=Path, default=Path("aligndebug/default_model/aer_curve.png"))
    args = ap.parse_args()
    gold = args.data / "gold" / "bicici-deen-gold"
    mon_dir = args.run / "monitor"
    log_path = mon_dir / "monitor.jsonl"
    done = {r["step"] for r in read_monitor_log(log_path)} if log_path.exists() else set()
    monitor = AlignmentMonitor(gold / "test.de", gold / "test.en", gold / "de-en.wa", mon_dir, gold_base=0,
                               probe=("der hund schläft im haus .", "the dog sleeps in the house ."))
    for snap in sorted((args.run / "snapshots").glob("step*")):
        step = int(snap.name[4:])
        if step in done:
            continue
        bundle = load_model(str(snap))
        print(json.dumps(monitor.evaluate(bundle.model, bundle.tokenizer, step)), flush=True)
    log = sorted(read_monitor_log(log_path), key=lambda r: r["step"])
    args.out.write_bytes(chart_to_png(curve_chart(log)))
    (args.out.with_suffix(".jsonl")).write_text("".join(json.dumps(r) + "\n" for r in log))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
