"""Where the dashboard's cold open goes: server-side seconds of the first script run
(importing dashboard.py and its libraries, then main()) against later runs, in a real
`streamlit run` server opened three times in chromium, on bench/dashboard_latency.py's runs.

    .venv/bin/python bench/dashboard_cold_start.py      # after bench/dashboard_latency.py built its runs

Prints the page-open times and, per script run, import and main() seconds (a wrapper script
times them; nothing is recorded in bench/results.json). The wrapper holds no st.App, so it is
served the classic way, without the import at server start that dashboard.py's own st.App
gives: the import seconds printed are what that start-up import takes off the first visit.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from tests.browser import launch, serve, wait_settled

ROOT = Path(__file__).resolve().parents[1]

WRAPPER = """import sys, time
t0 = time.perf_counter()
import dashboard
t1 = time.perf_counter()
dashboard.main(["--runs-dir", {runs!r}])
with open({log!r}, "a") as f:
    f.write(f"{{t1 - t0:.3f}} {{time.perf_counter() - t1:.3f}}\\n")
"""


def main() -> int:
    from playwright.sync_api import sync_playwright

    runs = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/dashboard_bench_runs")
    if not runs.exists():
        print(f"{runs} does not exist: run bench/dashboard_latency.py first")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        log, script = Path(tmp) / "runs.log", Path(tmp) / "timed_dashboard.py"
        script.write_text(WRAPPER.format(root=str(ROOT), runs=str(runs), log=str(log)))
        opens = []
        with serve(runs, script=script) as url, sync_playwright() as p:
            browser = launch(p)
            for _ in range(3):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                t0 = time.perf_counter()
                page.goto(url)
                wait_settled(page, 1, polling="raf")
                opens.append(time.perf_counter() - t0)
                page.close()
            browser.close()
        script_runs = [tuple(map(float, line.split())) for line in log.read_text().splitlines()]
    for i, (opened, (imported, ran)) in enumerate(zip(opens, script_runs)):
        print(f"open {i} ({'cold' if i == 0 else 'warm'}): {opened:.3f} s in the browser; "
              f"server: import {imported:.3f} s, main() {ran:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
