"""The dashboard in a real browser: every view renders its charts with no exception, on good
runs, on a damaged runs folder, and on an empty one. Screenshots go to test-artifacts/.

    pytest tests/test_browser.py       # needs Debian's chromium at /usr/bin/chromium
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import CHROMIUM, EXCEPTION, ROOT, launch, serve, wait_settled
from tests.damaged_runs import DAMAGED, make_damaged_runs

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM} (apt install chromium)")
ARTIFACTS = ROOT / "test-artifacts"
# view -> (charts it draws on the tiny runs, text only that view shows)
VIEWS = {
    "Runs": (1, "What differs"),
    "Curves": (1, "EMA smoothing"),
    "Embedding space": (2, "Colour by"),
    "Samples": (0, "Sample detail"),
    "Similarity matrix": (1, "Images (up to 20)"),
    "Forgetting": (0, "no forgetting evaluation"),
    "Export": (0, "Run comparison"),
}


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        chromium = launch(p)
        yield chromium
        chromium.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    return page


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def visit(page, view: str) -> None:
    charts, text = VIEWS[view]
    page.get_by_role("tab", name=view, exact=True).click()
    page.get_by_text(text).first.wait_for(timeout=60_000)
    wait_settled(page, charts)


def test_every_view_draws(tiny_runs, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(tiny_runs, log=ARTIFACTS / "streamlit.log") as url:
        page = open_page(browser, url)
        wait_settled(page, VIEWS["Runs"][0])
        for view in VIEWS:
            visit(page, view)
            shoot(page, "view-" + view.lower().replace(" ", "-"))
            assert page.locator(EXCEPTION).count() == 0, f"exception on the {view} view"
        charts = page.locator('[data-testid="stVegaLiteChart"]')
        assert charts.count() == 0, "the Export view draws no chart; a chart here means a tab leaked"


def test_damaged_folder_warns_once_per_run(tiny_runs, browser, tmp_path):
    runs = make_damaged_runs(tiny_runs, tmp_path / "runs")
    with serve(runs) as url:
        page = open_page(browser, url)
        wait_settled(page, 1)
        shoot(page, "damaged-runs")
        assert page.locator('[data-testid="stAlertContentWarning"]').count() == len(DAMAGED)
        for key in DAMAGED:
            assert page.get_by_text(f"Run {key} is damaged").count() == 1
        assert page.locator(EXCEPTION).count() == 0


def test_empty_folder_says_how_to_make_runs(browser, tmp_path):
    with serve(tmp_path) as url:
        page = open_page(browser, url)
        page.get_by_text("accelerate launch training/train.py").first.wait_for(timeout=60_000)
        wait_settled(page)
        shoot(page, "empty-folder")
        assert page.locator(EXCEPTION).count() == 0
