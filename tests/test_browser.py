"""The app in a real headless browser: start `streamlit run app.py` on loopback, enter a
sentence, wait until the alignment heatmap is drawn, check it has pixels, save a screenshot.

Needs Debian's chromium at /usr/bin/chromium (`apt-get install -y chromium`) and the
`playwright` Python package; the browser is never downloaded by Playwright.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser
# Upper bounds only (an idle 2-core machine draws the page in well under a minute); generous so that a
# machine busy with other work does not make the test flaky.
WAIT_MS = 180_000

# Counts the non-white pixels of every chart canvas (or the marks of every chart SVG).
COUNT_INK = """
() => {
  const out = [];
  for (const c of document.querySelectorAll('.vega-embed canvas')) {
    const ctx = c.getContext('2d');
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let ink = 0;
    for (let i = 0; i < d.length; i += 16) { if (d[i + 3] > 0 && (d[i] < 240 || d[i + 1] < 240 || d[i + 2] < 240)) ink++; }
    out.push({kind: 'canvas', w: c.width, h: c.height, ink: ink});
  }
  for (const s of document.querySelectorAll('.vega-embed svg.marks')) {
    out.push({kind: 'svg', w: s.clientWidth, h: s.clientHeight, ink: s.querySelectorAll('path, rect').length});
  }
  return out;
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout} s")


@pytest.fixture
def app_url(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent: install Debian's chromium (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    model = os.environ.get("ALIGNDEBUG_BROWSER_MODEL")
    if not model:
        import tiny_models as tm

        model = str(tm.save("marian", tmp_path / "tiny-marian"))
    port = _free_port()
    env = {**os.environ, "ALIGNDEBUG_MODEL": model, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = open(tmp_path / "streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


REFERENCE = "The dog plays if the ball rolls ."


def test_heatmap_is_drawn(app_url, tmp_path):
    from playwright.sync_api import sync_playwright

    sentence = "Der Hund spielt mit dem Ball ."
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(app_url, wait_until="domcontentloaded")
            box = page.get_by_role("textbox", name="Source sentence")
            box.wait_for(timeout=WAIT_MS)
            box.fill(sentence)
            # "if": a word Vega's expression parser cannot take as a string literal (charts.vega_strings)
            page.get_by_role("textbox", name="Reference translation (optional)").fill(REFERENCE)
            page.get_by_role("button", name="Analyse").click()
            page.get_by_text(REFERENCE).first.wait_for(timeout=WAIT_MS)
            page.wait_for_selector(".vega-embed canvas, .vega-embed svg.marks", timeout=WAIT_MS)
            # vega-embed draws asynchronously: wait until the first chart has ink
            page.wait_for_function(f"() => ({COUNT_INK})().some(c => c.w > 100 && c.h > 100 && c.ink > 50)",
                                   timeout=WAIT_MS)
            drawn = page.evaluate(COUNT_INK)
            shot = tmp_path / "app.png"
            page.screenshot(path=str(shot), full_page=False, timeout=WAIT_MS)
            errors = page.locator('[data-testid="stException"]').count()
            # the heatmap's own download buttons: the files are made on click (vl-convert on the server)
            files = {}
            for kind in ("PNG", "SVG"):
                with page.expect_download(timeout=WAIT_MS) as info:
                    page.get_by_role("button", name=kind, exact=True).first.click()
                files[kind] = Path(info.value.path()).read_bytes()
                assert info.value.suggested_filename == f"alignment.{kind.lower()}"
        finally:
            browser.close()
    assert errors == 0, "the page shows a Python exception"
    big = [c for c in drawn if c["w"] > 100 and c["h"] > 100 and c["ink"] > 50]
    assert big, f"no chart was drawn with content: {drawn}"
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files["PNG"][:8] == b"\x89PNG\r\n\x1a\n"
    svg = ET.fromstring(files["SVG"])
    assert svg.tag.endswith("svg")
    words = [t.text for t in svg.iter() if t.tag.endswith("text")]
    assert "plays" in words and "if" in words  # target words on the axis
