"""The dashboard in a real browser: every view renders its charts with no exception, on good
runs, on runs with seeds, on a damaged runs folder, and on an empty one; the Embedding space map
answers a hover and a box selection with nothing fetched from outside the dashboard's server.
Screenshots go to test-artifacts/.

    pytest tests/test_browser.py       # needs Debian's chromium at /usr/bin/chromium
"""

from __future__ import annotations

import pytest

from tests.browser import (
    CHROMIUM,
    EXCEPTION,
    MAP_FRAME,
    ROOT,
    VIEWS,
    launch,
    map_drawn,
    map_point,
    open_view,
    outside_requests,
    serve,
    wait_settled,
)
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


def test_the_map_hovers_selects_and_stays_offline(tiny_runs, browser):
    """Hover a point: its tooltip names it and shows its thumbnail. Drag a box over the whole map:
    the server's selection table counts what the page selected. No request leaves the server."""
    with serve(tiny_runs) as url:
        page = open_page(browser, url)
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        wait_settled(page, VIEWS["Runs"][0])
        open_view(page, "Embedding space")
        map_drawn(page)
        frame = page.frame_locator(MAP_FRAME)
        x, y, _ = map_point(page, sample=0)  # sample 0 is an image: the first run's first
        page.mouse.move(x, y)
        tip = frame.locator("#tip")
        tip.wait_for(state="visible", timeout=10_000)
        hovered = tip.get_attribute("data-sample")
        assert tip.locator("img").count() == 1 and "rank" in tip.inner_text() and "label" in tip.inner_text()
        rows = page.locator(MAP_FRAME).element_handle().content_frame().evaluate("window.__rows")
        hx, hy, _ = map_point(page, sample=rows.index(hovered))
        assert abs(hx - x) <= 8 and abs(hy - y) <= 8  # the tooltip is the point under the pointer's

        page.locator(MAP_FRAME).scroll_into_view_if_needed()
        canvas = frame.locator("canvas").bounding_box()  # in the page's pixels
        left, top = canvas["x"] + 2, canvas["y"] + 2
        page.mouse.move(left, top)
        page.mouse.down()
        page.mouse.move(left + canvas["width"] - 4, top + canvas["height"] - 4, steps=5)
        page.mouse.up()
        status = frame.locator("#status")
        status.filter(has_text="selected").wait_for(timeout=10_000)
        count = status.inner_text().split(" · ")[1].split(" ")[0]
        page.get_by_text(f"{count} sample(s) selected").first.wait_for(timeout=30_000)
        wait_settled(page, VIEWS["Embedding space"][0])
        assert page.locator(EXCEPTION).count() == 0
        shoot(page, "embedding-map-selection")
        assert outside_requests(requests, url) == []
        assert any("/component/views.map_canvas.embedding_map/" in r for r in requests)
