"""The dashboard in a real browser: every view renders its charts with no exception, on good
runs, on runs with seeds, on a damaged runs folder, and on an empty one. Screenshots go to
test-artifacts/.

    pytest tests/test_browser.py       # needs Debian's chromium at /usr/bin/chromium
"""

from __future__ import annotations

import pytest

from tests.browser import CHROMIUM, EXCEPTION, ROOT, VIEWS, launch, open_view, serve, wait_settled
from tests.damaged_runs import DAMAGED, make_damaged_runs
from tests.synthetic_runs import make_seeded_runs

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM} (apt install chromium)")
ARTIFACTS = ROOT / "test-artifacts"
def choose(page, label: str, option: str) -> None:
    """Pick `option` in the selectbox labelled `label`, and wait for the rerun to finish."""
    page.get_by_test_id("stSelectbox").filter(has_text=label).click()
    page.get_by_role("option", name=option, exact=True).click()
    page.wait_for_timeout(300)


# Settings that put more of a view on screen than its defaults do.
PREPARE = {
    "Embedding space": lambda page: (
        page.get_by_test_id("stRadio").get_by_text("right/wrong at R@1", exact=True).click(),
        page.wait_for_timeout(300),
        choose(page, "Join each image to its captions for label", "circle")),
    "Similarity matrix": lambda page: choose(page, "Run B (for the difference B − A)", "tiny/locked"),
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
    """A screenshot of the whole view: the app scrolls inside its main block, so the window
    is first made as tall as that block's content."""
    ARTIFACTS.mkdir(exist_ok=True)
    height = page.evaluate("Math.max(...[...document.querySelectorAll('*')].map(e => e.scrollHeight))")
    page.set_viewport_size({"width": 1400, "height": max(1000, height)})
    wait_settled(page, page.locator('[data-testid="stVegaLiteChart"]').count())
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})


def visit(page, view: str) -> None:
    open_view(page, view)
    if view in PREPARE:
        PREPARE[view](page)
        wait_settled(page, VIEWS[view][0])


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


def test_seeded_runs_are_pooled_compared_and_drawn_with_a_band(browser, tmp_path):
    with serve(make_seeded_runs(tmp_path / "runs")) as url:
        page = open_page(browser, url)
        wait_settled(page, VIEWS["Runs"][0])
        shoot(page, "seeded-runs")
        assert page.get_by_text("Highlighted: the best, and every run whose paired 95% interval").count() == 1
        for view in ("Compare", "Curves"):
            open_view(page, view)
            shoot(page, "seeded-" + view.lower())
            assert page.locator(EXCEPTION).count() == 0, f"exception on the {view} view"
        assert page.get_by_text("min–max over seeds").count() == 1


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
