"""Take the README screenshot of the app (docs/app.png) with Debian's chromium.

    python docs/screenshot.py [--model default] [--out docs/app.png]

Starts `streamlit run app.py` on loopback, analyses one sentence with a reference and a
hand-written gold alignment (so the correct / missed / spurious marks show), waits until the
charts are drawn and saves a viewport screenshot.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SOURCE = "Ein Mann fährt mit dem Fahrrad durch die Stadt ."
REFERENCE = "A man is riding a bike through the city ."
# Written by hand for this picture: Sure links, and Possible ones (p) for the auxiliary and the article.
GOLD = "0-0 1-1 2p2 2-3 3p4 4p4 5-5 6-6 7-7 8-8 9-9"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "app.png")
    ap.add_argument("--wait", type=float, default=600, help="seconds to wait for the page at most")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ALIGNDEBUG_MODEL": args.model}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless",
                             "true", "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ms = int(args.wait * 1000)
    try:
        end = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=2)
                break
            except OSError:
                if time.time() > end or proc.poll() is not None:
                    raise SystemExit("streamlit did not start")
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1560}, device_scale_factor=1)
            page.goto(url, wait_until="domcontentloaded")
            box = page.get_by_role("textbox", name="Source sentence")
            box.wait_for(timeout=wait_ms)
            box.fill(SOURCE)
            page.get_by_role("textbox", name="Reference translation (optional)").fill(REFERENCE)
            page.get_by_role("textbox", name="Gold alignment (optional)").fill(GOLD)
            page.get_by_role("button", name="Analyse").click()
            page.get_by_text("Reference (forced)").first.wait_for(timeout=wait_ms)
            page.get_by_text("AER").first.wait_for(timeout=wait_ms)
            page.wait_for_selector(".vega-embed canvas, .vega-embed svg.marks", timeout=wait_ms)
            time.sleep(3)  # let every chart finish drawing
            page.screenshot(path=str(args.out), timeout=wait_ms)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    print(f"{args.out}: {args.out.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
