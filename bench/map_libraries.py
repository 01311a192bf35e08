"""Which library draws the Embedding space map: Vega-Lite (st.altair_chart, the view before
issue 27), deck.gl through pydeck (st.pydeck_chart, shipped with Streamlit), Apple's Embedding
Atlas (its Streamlit component) and the map component of views/map_canvas.py, each in a minimal
Streamlit page of its own, measured in the same chromium as the tests (SwiftShader WebGL).

    .venv/bin/python -m bench.map_libraries [--atlas DIR]

DIR: an unpacked embedding-atlas wheel (`pip download --no-deps embedding-atlas` and unzip it);
it is not in requirements.txt, so without it Embedding Atlas is reported as not measured.

Two sizes: 4 runs x 30,000 points (all four drawn at once, overlaid) and 1 run x 250,000. For
each: draw time (page asked for, to the frame in which the library's canvas is there, the script
run is over and, for our map, the data it was sent is drawn; deck.gl and Embedding Atlas give no
such signal, so theirs is the canvas plus two frames, a lower bound), hover latency (pointer onto
a point to the frame that shows its tooltip), selection latency (mouse-up of a dragged box, or a
click where the library has no box, to the frame that shows the server's answer), and every
request that left the local server (Playwright's request log).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.results import record
from tests.browser import MAP_FRAME, SETTLED_JS, launch, outside_requests, serve

COMMAND = ".venv/bin/python -m bench.map_libraries --atlas /tmp/atlas_dl/x"
SIZES = {"4x30k": (4, 30_000), "1x250k": (1, 250_000)}
LABELS, HOVERS, SELECTIONS = 40, 10, 3
INTERACT_UP_TO_S = 30  # a page slower to draw than this is not hovered or selected in: each try reloads it
HEIGHT = 640

COMMON = """import os
import numpy as np
import pandas as pd
import streamlit as st

st.set_page_config(layout="wide")
frame = pd.read_parquet(os.environ["MAP_BENCH_DATA"])
"""
PAGES = {
    "vega-lite": COMMON + """import altair as alt
alt.data_transformers.disable_max_rows()
x0, x1, y0, y1 = frame["x"].min(), frame["x"].max(), frame["y"].min(), frame["y"].max()
chart = alt.Chart(frame[["x", "y", "label", "modality", "caption", "rank"]]).mark_point(
    filled=True, size=12, opacity=0.6, aria=False).encode(
    x=alt.X("x:Q", scale=alt.Scale(domain=[x0, x1], nice=False, zero=False), axis=None),
    y=alt.Y("y:Q", scale=alt.Scale(domain=[y0, y1], nice=False, zero=False), axis=None),
    color=alt.Color("label:N", legend=None), shape="modality:N",
    tooltip=["caption:N", "label:N", "rank:Q"]).add_params(
    alt.selection_interval(name="box", encodings=["x", "y"])).properties(
    height=%(height)d, padding=0, usermeta={"embedOptions": {"renderer": "canvas"}}).configure_view(stroke=None)
event = st.altair_chart(chart, on_select="rerun", selection_mode=["box"], width="stretch", key="map")
box = event.selection.get("box") or {}
if box:
    (a, b), (c, d) = sorted(box["x"]), sorted(box["y"])
    st.caption(f"{int(frame['x'].between(a, b).mul(frame['y'].between(c, d)).sum())} selected")
""",
    "pydeck": COMMON + """import pydeck as pdk
x0, x1, y0, y1 = frame["x"].min(), frame["x"].max(), frame["y"].min(), frame["y"].max()
palette = np.random.default_rng(0).integers(0, 200, (64, 3))
data = frame[["x", "y", "caption", "label", "rank"]].assign(
    color=palette[frame["label"].str[1:].astype(int)].tolist(), sample=np.arange(len(frame)))
zoom = float(np.log2(600 / max(x1 - x0, y1 - y0)))
layer = pdk.Layer("ScatterplotLayer", data=data, id="points", get_position=["x", "y"], get_fill_color="color",
                  get_radius=0, radius_min_pixels=2, radius_max_pixels=2, pickable=True)
deck = pdk.Deck(layers=[layer], views=[pdk.View(type="OrthographicView", controller=True)], map_style=None,
                initial_view_state=pdk.ViewState(target=[(x0 + x1) / 2, (y0 + y1) / 2, 0], zoom=zoom),
                tooltip={"html": "<b>{caption}</b><br/>{label} · rank {rank}"})
event = st.pydeck_chart(deck, on_select="rerun", selection_mode="multi-object", key="map", height=%(height)d)
picked = (event.selection.get("objects") or {}).get("points") or []
if picked:
    st.caption(f"{len(picked)} selected")
""",
    "embedding-atlas": COMMON + """from embedding_atlas.streamlit import embedding_atlas
value = embedding_atlas(frame[["x", "y", "caption", "label", "rank"]], x="x", y="y", text="caption",
                        labels="disabled", key="map")
if (value or {}).get("predicate"):
    st.caption("selected: " + value["predicate"])
""",
    "our map component": COMMON + """from views import map_canvas
members = []
for n, (run, rows) in enumerate(frame.groupby("run", sort=True)):
    points = rows.rename(columns={"x": "umap_x", "y": "umap_y"}).assign(step=100, x0=np.nan, y0=np.nan)
    members.append((f"run{run}", points, map_canvas.charts.PALETTE[n]))
args = map_canvas.payload(members, pd.Series(dtype=object), %(height)d)
for layer in args["meta"]["layers"]:
    layer["on"] = True
value = map_canvas.draw(args, key="map")
ids, _ = map_canvas.selection_ids(value, {key: points for key, points, _ in members})
if ids:
    st.caption(f"{len(ids)} selected")
""",
}


def points(runs: int, per_run: int) -> pd.DataFrame:
    """`runs` runs of the same `per_run` samples (a sixth images, five captions each) in 40 label
    clusters, each run moved a little."""
    rng = np.random.default_rng(0)
    images = per_run // 6 + 1  # with five captions each, at least per_run samples
    label = rng.integers(0, LABELS, images)
    centres = rng.normal(scale=8, size=(LABELS, 2))
    base = centres[label] + rng.normal(size=(images, 2))
    owner = np.concatenate([np.arange(images), np.repeat(np.arange(images), 5)])[:per_run]
    xy = base[owner] + np.where(np.arange(per_run)[:, None] < images, 0, rng.normal(scale=0.6, size=(per_run, 2)))
    frames = []
    for run in range(runs):
        moved = xy + rng.normal(scale=0.3 * run, size=xy.shape)
        frames.append(pd.DataFrame({
            "run": run, "sample_id": [f"i{o}" if k < images else f"t{k}" for k, o in enumerate(owner)],
            "modality": np.where(np.arange(per_run) < images, "image", "text"), "image_id": owner.astype(str),
            "caption": [f"caption {k} of shape {o}" for k, o in enumerate(owner)],
            "label": [f"L{v:02d}" for v in label[owner]], "x": moved[:, 0].astype(np.float32),
            "y": moved[:, 1].astype(np.float32), "rank": rng.geometric(0.2, per_run)}))
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------ the drivers

CANVAS = {  # library -> (frame selector or None for the page, canvas selector in it, tooltip selector)
    "vega-lite": (None, '[data-testid="stVegaLiteChart"] canvas', "#vg-tooltip-element"),
    "pydeck": (None, "canvas", ".deck-tooltip"),  # the page's only canvas
    "embedding-atlas": ('iframe[title*="embedding_atlas"]', "canvas", None),
    "our map component": (MAP_FRAME, "canvas", "#tip"),
}
NOW = "performance.timeOrigin + performance.now()"
MARK = """() => { window.__at = null; if (window.__marking) return; window.__marking = true;
  for (const t of ['pointermove', 'pointerup', 'mousemove', 'mouseup']) document.addEventListener(t, () => {
    window.__at ??= performance.timeOrigin + performance.now(); }, true); }"""


def scope(page, library: str):
    frame_selector = CANVAS[library][0]
    return page if frame_selector is None else page.locator(frame_selector).element_handle().content_frame()


def draw_time(page, url: str, library: str, timeout_s: float) -> float | None:
    t0 = time.perf_counter()
    page.goto(url)
    frame_selector, canvas, _ = CANVAS[library]
    try:
        if frame_selector:
            page.locator(frame_selector).wait_for(timeout=timeout_s * 1000)
        where = scope(page, library)
        where.wait_for_selector(canvas, timeout=timeout_s * 1000)
        if library == "our map component":
            where.wait_for_selector("body[data-drawn]", timeout=timeout_s * 1000)
        page.wait_for_function(f"() => ({SETTLED_JS})(0)", timeout=timeout_s * 1000, polling="raf")
        where.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    except Exception as e:  # noqa: BLE001 - a library that never draws is a result, not a crash
        print(f"{library}: no drawing: {str(e).splitlines()[0]}", flush=True)
        return None
    return time.perf_counter() - t0


def targets(page, library: str, frame: pd.DataFrame, n: int) -> list[tuple[float, float]]:
    """Page pixels of n points of the first run, spread over its samples."""
    rows = np.linspace(0, (frame["run"] == 0).sum() - 1, n).astype(int)
    if library == "our map component":
        page.locator(MAP_FRAME).scroll_into_view_if_needed()
        box = page.locator(MAP_FRAME).bounding_box()
        where = scope(page, library)
        return [(box["x"] + x, box["y"] + y) for x, y, _ in
                (where.evaluate("([l, i]) => window.__where(i, l)", [0, int(r)]) for r in rows)]
    box = page.locator(CANVAS[library][1]).first.bounding_box()
    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    x0, x1, y0, y1 = x.min(), x.max(), y.min(), y.max()
    if library == "vega-lite":  # axes off, no padding: the data rectangle is the canvas
        return [(float(box["x"] + (x[r] - x0) / (x1 - x0) * box["width"]),
                 float(box["y"] + (y1 - y[r]) / (y1 - y0) * box["height"])) for r in rows]
    scale = 600 / max(x1 - x0, y1 - y0)  # pydeck: the OrthographicView's zoom, y down
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    return [(float(cx + (x[r] - (x0 + x1) / 2) * scale), float(cy + (y[r] - (y0 + y1) / 2) * scale)) for r in rows]


def hover_times(page, library: str, frame: pd.DataFrame) -> list[float]:
    tip = CANVAS[library][2]
    where = scope(page, library)
    out = []
    for x, y in targets(page, library, frame, HOVERS):
        page.mouse.move(1, 1)
        page.wait_for_timeout(150)
        where.evaluate(MARK)
        page.mouse.move(x, y)
        try:
            done = where.wait_for_function(f"""() => {{
                const t = document.querySelector('{tip}');
                if (window.__at === null || !t || getComputedStyle(t).display === 'none' ||
                    getComputedStyle(t).visibility === 'hidden' || !t.textContent.trim()) return false;
                return {NOW} - window.__at; }}""", polling="raf", timeout=2_000)
        except Exception:  # noqa: BLE001 - this point's tooltip did not show (a miss): not timed
            continue
        out.append(done.json_value() / 1000)
    return out


def selection_times(page, library: str, frame: pd.DataFrame) -> list[float]:
    """A box a sixth of the plot wide dragged over the map (a click on a point for pydeck, which
    has no box), after a reload that clears the last one."""
    out = []
    for k in range(SELECTIONS):
        page.reload()
        draw_time(page, page.url, library, 120)
        where = scope(page, library)
        if library == "pydeck":
            x, y = targets(page, library, frame, SELECTIONS)[k]
            page.mouse.move(x, y)
            where.evaluate(MARK)
            page.mouse.down()
            page.mouse.up()
        else:
            selector = MAP_FRAME if library == "our map component" else CANVAS[library][1]
            box = page.locator(selector).first.bounding_box()
            x0, y0 = box["x"] + box["width"] * (0.2 + 0.1 * k), box["y"] + box["height"] * (0.2 + 0.1 * k)
            page.mouse.move(x0, y0)
            page.mouse.down()
            page.mouse.move(x0 + box["width"] / 6, y0 + box["height"] / 6, steps=4)
            where.evaluate(MARK)
            page.mouse.up()
        try:
            shown = page.wait_for_function(f"""() => {{
                const said = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
                  .some(c => c.textContent.includes('selected'));
                return said && ({SETTLED_JS})(0) && {NOW}; }}""", polling="raf", timeout=15_000).json_value()
        except Exception:  # noqa: BLE001 - nothing selected (a click between points): not timed
            continue
        out.append((shown - where.evaluate("window.__at")) / 1000)
    return out


def measure(atlas: Path | None) -> dict:
    from playwright.sync_api import sync_playwright

    results: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = launch(p)
        for size, (runs, per_run) in SIZES.items():
            frame = points(runs, per_run)
            data = Path(tmp) / f"{size}.parquet"
            frame.to_parquet(data)
            for library, page_code in PAGES.items():
                if library == "embedding-atlas" and atlas is None:
                    continue
                script = Path(tmp) / f"{library.replace(' ', '_')}.py"
                script.write_text(page_code % {"height": HEIGHT})
                env = {"MAP_BENCH_DATA": str(data)}
                if library == "embedding-atlas":
                    env["PYTHONPATH"] = f"{atlas}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
                with serve(Path(tmp), script=script, env=env, timeout=120) as url:
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    requests: list[str] = []
                    page.on("request", lambda r, out=requests: out.append(r.url))
                    # Embedding Atlas waits on a CDN that is not there: a short wait says as much.
                    timeout = 20 if library == "embedding-atlas" else 120
                    cold = draw_time(page, url, library, timeout)
                    row = {"draw_cold": cold, "draw": draw_time(page, url, library, timeout),
                           "hover": [], "selection": []}
                    if row["draw"] is not None and row["draw"] <= INTERACT_UP_TO_S:
                        row["hover"] = hover_times(page, library, frame)
                        if library != "embedding-atlas":
                            row["selection"] = selection_times(page, library, frame)
                    row["outside"] = sorted({u.split("?")[0] for u in outside_requests(requests, url)})
                    page.close()
                results[(size, library)] = row
                print(size, library, {k: v for k, v in row.items()}, flush=True)
        browser.close()
    return results


def cell(values) -> str:
    if values is None:
        return "nothing drawn in time"
    if isinstance(values, list) and not values:
        return "not measured"
    if isinstance(values, list):
        return f"{statistics.median(values):.3f} (n={len(values)})"
    return f"{values:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atlas", type=Path, default=None, help="an unpacked embedding-atlas wheel")
    args = parser.parse_args(argv)
    results = measure(args.atlas)
    load = f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; chromium, SwiftShader WebGL"
    print(f"\n{'size':7s} {'library':18s} {'draw cold s':>11s} {'draw s':>7s} {'hover s':>14s} "
          f"{'selection s':>14s}  requests outside ({load})")
    for (size, library), row in results.items():
        print(f"{size:7s} {library:18s} {cell(row['draw_cold']):>11s} {cell(row['draw']):>7s} "
              f"{cell(row['hover']):>14s} {cell(row['selection']):>14s}  {', '.join(row['outside']) or 'none'}")
        slug = library.split()[0].replace("-", "_") if library != "our map component" else "map_component"
        for what, value in (("draw", row["draw"]), ("hover", row["hover"]), ("selection", row["selection"])):
            if value is None or value == []:
                continue
            median = statistics.median(value) if isinstance(value, list) else value
            record(f"map_library.{slug}.{size}.{what}_s", round(median, 3), "s", None,
                   f"{library}, {size} points, {what} in chromium; cold draw {cell(row['draw_cold'])} s; "
                   f"requests outside the server: {len(row['outside'])}; {load}", COMMAND)
        record(f"map_library.{slug}.{size}.outside_requests", len(row["outside"]), "requests", 0,
               f"{library}, {size}: " + (", ".join(row["outside"])[:300] or "none") + f"; draw {cell(row['draw'])}",
               COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
