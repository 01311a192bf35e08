"""Serve dashboard.py on a free local port and drive it in Debian's chromium through
Playwright; shared by tests/test_browser.py and bench/dashboard_latency.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# No sandbox: these machines run tests as root in containers. The rest keeps chromium from
# phoning home, which would hang on machines without internet.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
CHART = '[data-testid="stVegaLiteChart"]'
MAP_FRAME = 'iframe[title="views.map_canvas.embedding_map"]'  # the Embedding space map (views/map_canvas.py)
EXCEPTION = '[data-testid="stException"]'
# True once the script has finished and every chart on the page has drawn its marks.
SETTLED_JS = f"""n => {{
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (document.querySelector('[data-stale="true"]')) return false;
  const charts = [...document.querySelectorAll('{CHART}')];
  return charts.length >= n && charts.every(c => c.querySelector('svg.marks, canvas'));
}}"""


# view -> (charts it draws with default settings, text only that view shows)
VIEWS = {
    "Runs": (1, "What differs"),
    "Compare": (0, "Images whose image→text R@1 outcome changed"),
    "Curves": (1, "EMA smoothing"),
    "Embedding space": (3, "Every point is drawn"),
    "Query": (0, "Type a caption: each run shows"),
    "Samples": (0, "Sample detail"),
    "Similarity matrix": (1, "Images (up to 20)"),
    "Forgetting": (0, "no forgetting evaluation"),
    "Export": (0, "Run comparison"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(runs_dir: Path, log: Path | None = None, timeout: float = 60.0, script: Path = ROOT / "dashboard.py",
          env: dict[str, str] | None = None):
    """A running `streamlit run dashboard.py` on runs_dir (or another script, for a peer to
    time against; `env`: variables set for the server); yields its URL, always stops it."""
    port = free_port()
    out = open(log, "w") if log else subprocess.DEVNULL
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
         "--server.headless", "true", "--", "--runs-dir", str(runs_dir)],
        cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, server, timeout)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if log:
            out.close()


def wait_healthy(url: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {server.returncode} before serving")
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"streamlit did not answer on {url} within {timeout:.0f} s")


def launch(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def open_view(page, view: str, polling: float | str = 50, charts: int | None = None) -> None:
    """Click a view's tab and wait until its own content is on screen and settled (with
    `charts`, that many charts instead of the view's count on the tests' runs)."""
    expected, text = VIEWS[view]
    charts = expected if charts is None else charts
    page.get_by_role("tab", name=view, exact=True).click()
    page.get_by_text(text).first.wait_for(timeout=60_000)
    wait_settled(page, charts, polling=polling)


def wait_settled(page, charts: int = 0, timeout_ms: float = 60_000, polling: float | str = 50) -> None:
    """Wait until the script run is over and at least `charts` charts have drawn
    (polling "raf" checks every frame, for timings)."""
    page.wait_for_function(SETTLED_JS, arg=charts, timeout=timeout_ms, polling=polling)


def map_drawn(page, timeout_ms: float = 60_000) -> None:
    """Wait until the Embedding space map has drawn the data it was last sent."""
    page.frame_locator(MAP_FRAME).locator("body[data-drawn]").wait_for(timeout=timeout_ms)


def map_point(page, layer: int = 0, sample: int = 0) -> tuple[float, float, str]:
    """Where the map draws a sample (by its row in the map's data) in a layer, in the page's
    pixels, and its sample id; the map is scrolled into view first, so that the pointer can
    reach it."""
    page.locator(MAP_FRAME).scroll_into_view_if_needed()
    box = page.locator(MAP_FRAME).bounding_box()
    frame = page.locator(MAP_FRAME).element_handle().content_frame()
    x, y, sample_id = frame.evaluate("([l, i]) => window.__where(i, l)", [layer, sample])
    return box["x"] + x, box["y"] + y, sample_id


def outside_requests(requests: list[str], url: str) -> list[str]:
    """The requests of a page that went anywhere but the dashboard's own server (data: and blob:
    URLs never leave the browser)."""
    return [r for r in requests if not r.startswith((url, "data:", "blob:"))]
