"""How fast the dashboard opens and answers a widget, in a real browser, on a sweep as large
as a course project makes: 12 runs (4 configurations x 3 seeds) of 4,000 validation images each.

    .venv/bin/python -m bench.dashboard_latency            # builds /tmp/dashboard_bench_runs once

The runs are synthetic but schema-correct (written through run_store.RunWriter): random
unit embeddings with clustered UMAP coordinates, per-sample ranks (better for higher learning
rates), ties and zero-shot outcomes, top-k lists, PNG thumbnails, a thousand steps of training
metrics and eleven evaluations, the first and last with stored intervals. The dashboard is
served with `streamlit run` and driven by chromium through Playwright; each time runs from
the user's action to the moment the script has finished and the charts have drawn. Page loads
and tab switches are timed by the driver; widget changes inside the page, from the input
event to the animation frame that shows the new chart.
Two widget changes are timed: flipping the Curves x axis (a chart the session drew before)
and moving the EMA slider a notch (a weight never drawn before, so the runs are smoothed
again). Targets: open <= 3 s, widget change <= 0.3 s. Figures go to bench/results.json and RESULTS.md.

Absolute times on a shared machine are noise, so the same browser also times a peer: a
minimal Streamlit page (one radio, one slider, one 120-point chart) served the same way. Its open and
widget times are the floor that Streamlit and chromium cost on this machine, and the
dashboard's figures are also given as ratios to them.

What the intervals cost: the Runs view opens with the grouped table, each figure with its
interval and the rows indistinguishable from the best of each column marked (paired bootstraps
over the per-query outcomes of every run). A second server with CLIP_DASHBOARD_INTERVALS=0,
up at the same time, shows the same view without them, the two taking turns at every page
open; the ratio of their page opens, cold (the first load after the server starts, where the
paired intervals are computed) and warm (cached), is recorded.

The Embedding space and Query views are timed apart, under Streamlit's AppTest (the script run
alone: no browser, so the canvas drawing of a map is not in these figures):

    .venv/bin/python -m bench.dashboard_latency --embedding   # builds /tmp/dashboard_bench_maps once

on 4 runs x 30,000 points (5,000 validation images with 5 captions each), all in one aligned map
(umap.parquet rows at step 0 and the end, embeddings of 64 dimensions at both steps with 40 class
prompts), and on one tiny-clip run trained here by train.py for the text query. Timed: the
Embedding view's first open in a fresh process (its drift table computed; the gap-shift probe
is on request at this size) and its
warm open (a new session, caches filled), a box selection moved on the map (the rerun that turns
the browser's selection event into the selection table, its lines, rings and arrows), and a
caption query with the run's model already loaded (a new caption each time: encoded, then ranked
against the stored image embeddings). Targets: open <= 3 s, selection <= 0.5 s, query <= 1 s;
each also as a ratio to the minimal page (the one above) run under AppTest in the same process.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from analysis import results
from bench.results import record
from core import atomic, run_store
from core.config import RunConfig
from tests.browser import CHART, MAP_FRAME, SETTLED_JS, launch, map_drawn, open_view, serve, wait_settled

ROOT = Path(__file__).resolve().parents[1]

N_CONFIGS, N_SEEDS, N_IMAGES, DIM, N_LABELS, TOP_K = 4, 3, 4000, 256, 40, 5
N_RUNS = N_CONFIGS * N_SEEDS
STEPS, EPOCHS = 1000, 10
EVAL_METRICS = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_mean_rank",
                "i2t_median_rank", "t2i_mean_rank", "t2i_median_rank", "chance_R@1", "modality_gap",
                "positive_cosine", "negative_cosine", "zero_shot_accuracy", "zero_shot_chance",
                "temperature", "n_images"]
INTERVAL_METRICS = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_mean_rank",
                    "t2i_mean_rank", "zero_shot_accuracy"]  # what training/evaluate.py gives an interval
COMMAND = ".venv/bin/python -m bench.dashboard_latency"
OPEN_TARGET_S, WIDGET_TARGET_S = 3.0, 0.3
COMPARE_TARGET_S = 1.0  # a comparison the sweep made is read, not computed
OPEN_RATIO_TARGET = 1.5  # the first open, as a multiple of the minimal page's
REPEATS = 5  # warm page loads
WIDGET_REPEATS = 20  # widget changes: each is short, so take more of them for a steadier median
TABS = ["Curves", "Embedding space", "Samples", "Similarity matrix", "Compare", "Runs"]


# ------------------------------------------------------------------------------ the runs


def thumbnails(rng: np.random.Generator, n: int = N_IMAGES) -> list[bytes]:
    """One 64 px PNG per image: a coloured disc on white, about the size of an emoji thumbnail."""
    out = []
    for _ in range(n):
        img = Image.new("RGB", (64, 64), "white")
        x, y, r = rng.integers(8, 56), rng.integers(8, 56), rng.integers(6, 28)
        ImageDraw.Draw(img).ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        out.append(buf.getvalue())
    return out


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def embeddings(rng, ids, labels, captions, step: int) -> pd.DataFrame:
    images = unit(rng.normal(size=(N_IMAGES, DIM)))
    texts = unit(images + rng.normal(scale=1.5, size=images.shape))
    rows = []
    for modality, vectors, prefix in (("image", images, "img:"), ("text", texts, "txt:")):
        rows.append(pd.DataFrame(dict(
            sample_id=[prefix + i for i in ids], modality=modality, image_id=ids, caption=captions, label=labels,
            split="val", step=step, embedding=list(vectors))))
    return pd.concat(rows, ignore_index=True)


def umap_points(rng, ids, labels, step: int) -> pd.DataFrame:
    """Coordinates in clusters by label, captions near their images, as a fit would place them."""
    centres = rng.normal(scale=6, size=(N_LABELS, 2))
    label_idx = np.array([int(name[1:]) for name in labels])
    xy_img = centres[label_idx] + rng.normal(size=(N_IMAGES, 2))
    xy_txt = xy_img + rng.normal(scale=0.7, size=(N_IMAGES, 2))
    rows = [pd.DataFrame(dict(sample_id=[prefix + i for i in ids], modality=modality, step=step,
                              umap_x=xy[:, 0].astype(np.float32), umap_y=xy[:, 1].astype(np.float32)))
            for modality, xy, prefix in (("image", xy_img, "img:"), ("text", xy_txt, "txt:"))]
    return pd.concat(rows, ignore_index=True)


def samples(rng, ids, labels, captions, thumbs, step: int, config: int) -> pd.DataFrame:
    rows = []
    for modality, prefix, other in (("image", "img:", ["txt:" + i for i in ids]), ("text", "txt:", list(ids))):
        ranks = np.minimum(rng.geometric(0.12 + 0.02 * config, N_IMAGES), N_IMAGES)
        pos = rng.uniform(0.1, 0.6, N_IMAGES).astype(np.float32)
        topk_ids, topk_scores = [], []
        for n, rank in enumerate(ranks):
            picks = [other[j] for j in rng.choice(N_IMAGES, TOP_K, replace=False)]
            if rank <= TOP_K:
                picks[rank - 1] = other[n]
            topk_ids.append(picks)
            topk_scores.append(np.sort(rng.uniform(0, 0.7, TOP_K).astype(np.float32))[::-1])
        zero_shot = (rng.random(N_IMAGES) < 0.3).astype(float) if modality == "image" else np.nan
        rows.append(pd.DataFrame(dict(
            modality=modality, split="val", sample_id=[prefix + i for i in ids], image_id=ids, caption=captions,
            label=labels, step=step, rank=ranks, positive_cosine=pos, topk_ids=topk_ids, topk_scores=topk_scores,
            thumbnail=thumbs if modality == "image" else [None] * N_IMAGES, tied=rng.random(N_IMAGES) < 0.01,
            zero_shot_correct=zero_shot)))
    return pd.concat(rows, ignore_index=True)


def write_run(root: Path, n: int, seed: int, rng, ids, labels, captions, thumbs) -> None:
    """Seed `seed` of configuration `n`: runs of one configuration differ only in their seed."""
    cfg = RunConfig(name=f"lr{n:02d}.s{seed}", group=f"lr{n:02d}", seed=seed, data="bench-synthetic",
                    lr=1e-4 * (n + 1), batch_size=64 * (1 + n % 4))
    writer = run_store.RunWriter(run_store.run_dir(root, "bench", cfg.name))
    writer.write_config(dict(cfg.to_dict(), sweep="bench"))
    writer.set_status("RUNNING", step=0)
    for step in range(1, STEPS + 1):
        writer.log_metrics(step, step * EPOCHS / STEPS, step * 0.05, {
            "loss": 4 * np.exp(-step / 300) + rng.normal(scale=0.1), "lr": cfg.lr, "logit_scale": 14.3,
            "temperature": 0.07, "grad_norm": abs(rng.normal(1, 0.3))})
    for step in range(0, STEPS + 1, STEPS // EPOCHS):
        for split in ("train", "val"):
            values = {m: rng.uniform(0, 1) * (1 + step / STEPS) / 2 for m in EVAL_METRICS}
            reported = step in (0, STEPS)  # the evaluations training/trainer.py gives intervals
            writer.log_eval(step, step * EPOCHS / STEPS, split, values, intervals={
                m: (0.9 * values[m], min(1.1 * values[m], 1.0)) for m in INTERVAL_METRICS} if reported else None)
    writer.flush()
    steps = [embeddings(rng, ids, labels, captions, s) for s in (0, STEPS)]
    writer.write_embeddings(pd.concat(steps, ignore_index=True))
    writer.write_samples(samples(rng, ids, labels, captions, thumbs, STEPS, n))
    if seed == 0:  # train.py maps one seed per configuration; no comparisons here, so each is its own map
        start = umap_points(rng, ids, labels, 0)
        moved = rng.normal(scale=0.5, size=len(start)).astype(np.float32)
        end = start.assign(step=STEPS, umap_x=start["umap_x"] + moved)
        run_store.write_umap(writer.path, pd.concat([start, end], ignore_index=True).assign(map=cfg.group))
    writer.set_status("FINISHED", step=STEPS)


def build(root: Path) -> None:
    rng = np.random.default_rng(0)
    ids = [f"{i:05d}" for i in range(N_IMAGES)]
    labels = [f"L{i % N_LABELS:02d}" for i in range(N_IMAGES)]
    captions = [f"a synthetic shape number {i} of group {lab}" for i, lab in zip(range(N_IMAGES), labels)]
    thumbs = thumbnails(rng)
    shutil.rmtree(root / "bench", ignore_errors=True)  # runs of an older layout of this benchmark
    for n in range(N_CONFIGS):
        for seed in range(N_SEEDS):
            t0 = time.time()
            write_run(root, n, seed, rng, ids, labels, captions, thumbs)
            print(f"wrote run {n * N_SEEDS + seed + 1}/{N_RUNS} in {time.time() - t0:.1f} s", flush=True)
    # What train.py leaves at the end of a sweep: the sweep file's comparisons in sweep.json, then
    # the results step's tables, which the Runs and Compare views read.
    atomic.write_json(root / "bench" / run_store.SWEEP_SUMMARY, {"comparisons": [
        {"name": "learning-rate", "reference": "lr00", "runs": [f"lr{n:02d}" for n in range(1, N_CONFIGS)],
         "factor": ["lr", "batch_size"], "note": "bench"}]})
    _, seconds = results.write(root, "bench")
    print(f"results step: {seconds:.1f} s", flush=True)


# ------------------------------------------------------------------------- measurements


def timed(action, until) -> float:
    t0 = time.perf_counter()
    action()
    until()
    return time.perf_counter() - t0


PEER = """import altair as alt, numpy as np, pandas as pd, streamlit as st
x = st.radio("x axis", ["step", "epoch"], horizontal=True)
weight = st.slider("EMA smoothing", 0.0, 0.99, 0.6, 0.01)
frame = pd.DataFrame({"run": np.repeat([f"r{i}" for i in range(12)], 10), "step": np.tile(np.arange(10), 12)})
frame["value"] = np.linspace(0, 1, len(frame)) ** (1 + weight)
title = "loss by " + ("optimizer step" if x == "step" else "epoch")
st.altair_chart(alt.Chart(frame).mark_line().encode(x="step:Q", y="value:Q", color="run:N").properties(title=title))
"""


def open_times(browser, urls: dict[str, str], times: dict) -> None:
    """One cold page load of each server (prefix -> URL), then REPEATS warm ones, each in a
    fresh page (a new session); the servers take turns, so that a change in the load of a
    shared machine falls on all of them alike."""
    for kind in ("open_cold", *["open_warm"] * REPEATS):
        for prefix, url in urls.items():
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            times.setdefault(f"{prefix}{kind}", []).append(timed(lambda p=page, u=url: p.goto(u),
                                                                 lambda p=page: wait_settled(p, 1, polling="raf")))
            page.close()


# A widget change is timed inside the page: from its input event (caught before Streamlit's own
# handlers see it) to the first animation frame in which the new chart is drawn and the script
# run is over. Playwright's own work before the input (finding the element, checking that it
# can be clicked) is not the app's latency and stays out of the figure.
MARK_INPUT = """() => {
  window.__inputAt = null;
  if (window.__marking) return;
  window.__marking = true;
  for (const type of ['pointerdown', 'keydown'])
    document.addEventListener(type, () => { window.__inputAt ??= performance.now(); }, true);
}"""
TITLE_DRAWN = f"t => [...document.querySelectorAll('{CHART} svg.marks')].some(s => s.textContent.includes(t))"
DRAWN_LINES = f"[...document.querySelectorAll('{CHART} svg.marks path')].map(p => p.getAttribute('d')).join('|')"


def in_page(page, action, drawn: str, arg) -> float:
    """Seconds from the input event `action` causes to the frame in which `drawn`(arg) holds
    and the page has settled."""
    page.evaluate(MARK_INPUT)
    action()
    done = page.wait_for_function(f"""arg => {{
        if (window.__inputAt === null || !({drawn})(arg) || !({SETTLED_JS})(1)) return false;
        return performance.now() - window.__inputAt;
    }}""", arg=arg, polling="raf")
    return done.json_value() / 1000


def x_axis_times(page, times: dict, name: str) -> None:
    """Flip the "x axis" radio between epoch and step (a click) until the chart title follows:
    both charts were drawn before in this session, so they come from the cache."""
    radio = page.get_by_test_id("stRadio").filter(has_text="x axis")
    for n in range(WIDGET_REPEATS):
        x, title = ("epoch", "by epoch") if n % 2 == 0 else ("step", "by optimizer step")
        times.setdefault(name, []).append(in_page(page, radio.get_by_text(x, exact=True).click, TITLE_DRAWN, title))


def smoothing_times(page, times: dict, name: str) -> None:
    """Move the EMA slider one notch (0.01, the arrow key) until the lines are redrawn: every
    press is a weight not seen before, so the runs are smoothed again."""
    thumb = page.get_by_test_id("stSlider").filter(has_text="EMA smoothing").get_by_role("slider")
    for _ in range(WIDGET_REPEATS):
        thumb.focus()
        before = page.evaluate(DRAWN_LINES)
        times.setdefault(name, []).append(
            in_page(page, lambda: page.keyboard.press("ArrowRight"), f"b => ({DRAWN_LINES}) !== b", before))


def measure(url: str, plain_url: str) -> dict[str, list[float]]:
    """Everything timed on the dashboard; page opens also on `plain_url`, the same dashboard
    without intervals (prefix plain_)."""
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {}
    with sync_playwright() as p:
        browser = launch(p)
        open_times(browser, {"": url, "plain_": plain_url}, times)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        wait_settled(page, 1)
        for view in TABS:
            t0 = time.perf_counter()
            if view == "Embedding space":  # its gap-shift probe is on request at this size: the map is the view
                open_view(page, view, polling="raf", charts=0)
                map_drawn(page)
            else:
                open_view(page, view, polling="raf")
            times[f"tab_{view.lower().replace(' ', '_')}"] = [time.perf_counter() - t0]
        open_view(page, "Curves")
        x_axis_times(page, times, "widget_curves_x_axis")
        smoothing_times(page, times, "widget_curves_smoothing")
        browser.close()
    return times


def measure_peer(tmp: Path) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    script = tmp / "peer.py"
    script.write_text(PEER)
    times: dict[str, list[float]] = {}
    with serve(tmp, script=script) as url, sync_playwright() as p:
        browser = launch(p)
        open_times(browser, {"peer_": url}, times)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        wait_settled(page, 1)
        x_axis_times(page, times, "peer_widget")
        smoothing_times(page, times, "peer_smoothing")
        browser.close()
    return times


REPORT = {  # measurement -> (results.json name, target, what it is)
    "open_cold": ("dashboard.open_cold_s", OPEN_TARGET_S, "first page load after the server starts (cold caches)"),
    "open_warm": ("dashboard.open_s", OPEN_TARGET_S, "page load, Runs view, caches warm (median)"),
    "widget_curves_x_axis": ("dashboard.widget_change_s", WIDGET_TARGET_S,
                             "Curves view, x axis step<->epoch, 12 runs x 1,000 steps, until redrawn (median)"),
    "widget_curves_smoothing": ("dashboard.widget_smoothing_s", WIDGET_TARGET_S,
                                "Curves view, EMA slider one notch per press (a new weight each time), until "
                                "redrawn (median)"),
    "tab_curves": ("dashboard.tab_curves_s", None, "switch to Curves (first visit)"),
    "tab_embedding_space": ("dashboard.tab_embedding_s", None, "switch to Embedding space: one configuration's map of "
                            "8,000 points at step 0 and the end drawn, and its drift table (first visit)"),
    "tab_samples": ("dashboard.tab_samples_s", None, "switch to Samples, 4,000 images x 12 runs"),
    "tab_similarity_matrix": ("dashboard.tab_similarity_s", None, "switch to Similarity matrix (first visit)"),
    "tab_compare": ("dashboard.tab_compare_s", COMPARE_TARGET_S, "switch to Compare: two configurations of 3 "
                    "seeds that the sweep compares, the intervals of 9 metrics over seeds and images read from the "
                    "results step's table, and the images that changed (first visit)"),
    "tab_runs": ("dashboard.tab_runs_s", None, "switch back to Runs"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=Path("/tmp/dashboard_bench_runs"))
    parser.add_argument("--rebuild", action="store_true", help="write the synthetic runs again")
    parser.add_argument("--embedding", action="store_true",
                        help="time only the Embedding space and Query views, under AppTest")
    parser.add_argument("--maps-dir", type=Path, default=Path("/tmp/dashboard_bench_maps"))
    parser.add_argument("--map", action="store_true",
                        help="time the Embedding space map in the browser: 4 runs x 30,000 points, 1 x 250,000")
    parser.add_argument("--big-map-dir", type=Path, default=Path("/tmp/dashboard_bench_big_map"))
    args = parser.parse_args(argv)
    if args.embedding:
        return embedding_main(args.maps_dir, args.rebuild)
    if args.map:
        return map_main(args.maps_dir, args.big_map_dir, args.rebuild)
    runs = run_store.list_runs(args.runs_dir)
    older = any(run_store.umap_maps(r.path) == [""] for r in runs)  # written before aligned maps
    if args.rebuild or older or len(runs) != N_RUNS or not all(r.config.get("group") for r in runs) \
            or not (args.runs_dir / "bench" / run_store.SWEEP_SUMMARY).exists():
        build(args.runs_dir)
    with serve(args.runs_dir) as url, serve(args.runs_dir, env={"CLIP_DASHBOARD_INTERVALS": "0"}) as plain_url:
        times = measure(url, plain_url)
    with tempfile.TemporaryDirectory() as tmp:
        times |= measure_peer(Path(tmp))
    report(times, os.getloadavg()[0])  # other work on a shared machine shows up in every figure
    return 0


PEER_NOTE = "a minimal Streamlit page (one radio, one slider, one 120-point chart), same browser"
INTERVAL_COST = {  # measurement -> (results.json name, what it is)
    "open_cold": ("dashboard.intervals_open_cold_ratio", "first page load after each server starts: the Runs view "
                  "with its intervals and paired highlight (computed on this load) over the same view without them"),
    "open_warm": ("dashboard.intervals_open_ratio", "page load, caches warm (median): the Runs view with its "
                  "intervals and paired highlight over the same view without them"),
}


def report(times: dict[str, list[float]], load: float) -> None:
    scale = (f"{N_RUNS} runs ({N_CONFIGS} configurations x {N_SEEDS} seeds) x {N_IMAGES:,} validation images; "
             f"load average {load:.1f} on {os.cpu_count()} CPUs")
    peer = {"open_warm": "peer_open_warm", "open_cold": "peer_open_cold", "widget_curves_x_axis": "peer_widget",
            "widget_curves_smoothing": "peer_smoothing"}
    print(f"\n{'measurement':24s} {'median s':>9s} {'max s':>7s} {'target':>7s} {'x peer':>7s}  ({scale})")
    for key, (name, target, what) in REPORT.items():
        median, worst = statistics.median(times[key]), max(times[key])
        ratio = median / statistics.median(times[peer[key]]) if key in peer else None
        print(f"{key:24s} {median:9.3f} {worst:7.3f} {'' if target is None else f'{target:g}':>7s} "
              f"{'' if ratio is None else f'{ratio:.2f}':>7s}  {what}")
        against = f"; {ratio:.2f}x the minimal Streamlit page" if ratio else ""
        record(name, round(median, 3), "s", target,
               f"{what}; {scale}; n={len(times[key])}, max {worst:.3f} s{against}", COMMAND)
    for key in ("open_cold", "open_warm"):  # the first open's target is a ratio to the minimal page
        ratio = statistics.median(times[key]) / statistics.median(times[peer[key]])
        print(f"{key + ' / minimal page':38s} {ratio:6.2f}x  (target {OPEN_RATIO_TARGET:g}x)")
        record(f"dashboard.{key}_ratio", round(ratio, 2), "x", OPEN_RATIO_TARGET,
               f"{REPORT[key][2]} over the minimal Streamlit page's, same browser; {scale}", COMMAND)
    for key in dict.fromkeys(peer.values()):
        median = statistics.median(times[key])
        print(f"{key:24s} {median:9.3f} {max(times[key]):7.3f}")
        record(f"dashboard.{key}_s", round(median, 3), "s", None, f"peer: {PEER_NOTE}; {scale}", COMMAND)
    interval_cost(times, scale)


def interval_cost(times: dict[str, list[float]], scale: str) -> None:
    """The Runs view's page open with intervals over the same open without them, both measured here."""
    for key, (name, what) in INTERVAL_COST.items():
        with_them, without = statistics.median(times[key]), statistics.median(times[f"plain_{key}"])
        print(f"{name:38s} {with_them / without:6.2f}x  ({with_them:.3f} s with intervals, {without:.3f} s without)")
        record(name, round(with_them / without, 2), "x", None,
               f"{what}: {with_them:.3f} s / {without:.3f} s (CLIP_DASHBOARD_INTERVALS=0), n={len(times[key])} "
               f"each; {scale}", COMMAND)



# ------------------------------------------------- the Embedding space and Query views (AppTest)

MAP_RUNS, MAP_IMAGES, MAP_CAPTIONS, MAP_DIM, MAP_LABELS, MAP_STEP = 4, 5_000, 5, 64, 40, 300
MAP_NAME = "towers"
EMBEDDING_OPEN_TARGET_S, SELECTION_TARGET_S, QUERY_TARGET_S = 3.0, 0.5, 1.0
SELECTIONS = 12  # box selections, each a new box: the selection table, its rings, lines and arrows are new
QUERIES = 10  # captions typed, each new: encoded by the loaded model, then ranked


def map_run(root: Path, n: int, rng, ids: list[str], labels: list[str], thumbs: list[bytes], start: dict,
            per_image: int = MAP_CAPTIONS) -> None:
    """Run n of the map: every run shares step 0 (one seed, heads started alike) and moves from it
    by its own amount (n + 1 tenths), on the map and in the embedding space."""
    cfg = RunConfig(name=f"m{n}.s0", group=f"m{n}", seed=0, data="bench-synthetic", lr=1e-4 * (n + 1))
    writer = run_store.RunWriter(run_store.run_dir(root, "maps", cfg.name))
    writer.write_config(dict(cfg.to_dict(), sweep="maps"))
    n_images = len(ids)
    writer.set_status("RUNNING", step=0)
    for step in range(1, MAP_STEP + 1, 10):
        writer.log_metrics(step, step / 100, step * 0.05, {"loss": 4 * np.exp(-step / 100), "lr": cfg.lr,
                                                           "temperature": 0.07, "logit_scale": 1 / 0.07})
    for step in (0, MAP_STEP):
        values = {m: rng.uniform(0, 1) for m in EVAL_METRICS}
        writer.log_eval(step, step / 100, "val", dict(values, temperature=0.07 - 0.01 * n * step / MAP_STEP),
                        intervals={m: (0.9 * values[m], min(1.1 * values[m], 1.0)) for m in INTERVAL_METRICS})
    writer.flush()
    t2i = np.repeat(np.arange(n_images), per_image)
    caption_ids = [f"txt:{k}" for k in range(len(t2i))]
    image_ids = np.asarray(ids, dtype=object)
    captions = [f"shape {ids[i]} caption {k % per_image} of group {labels[i]}" for k, i in enumerate(t2i)]
    move = 0.1 * (n + 1)
    end_img = unit(start["img"] + move * rng.normal(size=start["img"].shape))
    end_txt = unit(end_img[t2i] + 1.2 * rng.normal(size=(len(t2i), MAP_DIM)))
    label_names = sorted(set(labels))
    prompts = unit(rng.normal(size=(len(label_names), MAP_DIM)))
    frames = []
    for step, img, txt in ((0, start["img"], start["txt"]), (MAP_STEP, end_img, end_txt)):
        frames += [
            pd.DataFrame(dict(sample_id=["img:" + i for i in ids], modality="image", image_id=ids,
                              caption=[captions[per_image * k] for k in range(n_images)], label=labels,
                              split="val", step=step, embedding=list(img))),
            pd.DataFrame(dict(sample_id=caption_ids, modality="text", image_id=image_ids[t2i], caption=captions,
                              label=np.asarray(labels, dtype=object)[t2i], split="val", step=step,
                              embedding=list(txt))),
            pd.DataFrame(dict(sample_id=[f"prompt:{x}" for x in label_names], modality=run_store.PROMPT,
                              image_id="", caption=[f"a photo of a {x}." for x in label_names], label=label_names,
                              split="val", step=step, embedding=list(prompts)))]
    writer.write_embeddings(pd.concat(frames, ignore_index=True))
    image_ranks = np.minimum(rng.geometric(0.1 + 0.03 * n, n_images), len(t2i))
    text_ranks = np.minimum(rng.geometric(0.1 + 0.03 * n, len(t2i)), n_images)
    writer.write_samples(pd.concat([
        pd.DataFrame(dict(modality="image", split="val", sample_id=["img:" + i for i in ids], image_id=ids,
                          caption=[captions[per_image * k] for k in range(n_images)], label=labels,
                          step=MAP_STEP, rank=image_ranks, positive_cosine=np.float32(0.4),
                          topk_ids=[[caption_ids[j] for j in row]
                                    for row in rng.integers(0, len(t2i), (n_images, 5))],
                          topk_scores=[np.float32([0.5, 0.4, 0.3, 0.2, 0.1])] * n_images, thumbnail=thumbs,
                          tied=False, zero_shot_correct=(rng.random(n_images) < 0.3).astype(float))),
        pd.DataFrame(dict(modality="text", split="val", sample_id=caption_ids, image_id=image_ids[t2i],
                          caption=captions, label=np.asarray(labels, dtype=object)[t2i], step=MAP_STEP,
                          rank=text_ranks, positive_cosine=np.float32(0.4),
                          topk_ids=[list(image_ids[row]) for row in rng.integers(0, n_images, (len(t2i), 5))],
                          topk_scores=[np.float32([0.5, 0.4, 0.3, 0.2, 0.1])] * len(t2i), thumbnail=None,
                          tied=False, zero_shot_correct=np.nan))], ignore_index=True))
    keys = pd.DataFrame({"sample_id": ["img:" + i for i in ids] + caption_ids,
                         "modality": ["image"] * n_images + ["text"] * len(t2i)})
    xy_end = start["xy"] + move * 2 * rng.normal(size=start["xy"].shape)
    run_store.write_umap(writer.path, pd.concat(
        [keys.assign(step=step, umap_x=xy[:, 0].astype(np.float32), umap_y=xy[:, 1].astype(np.float32),
                     map=MAP_NAME) for step, xy in ((0, start["xy"]), (MAP_STEP, xy_end))], ignore_index=True))
    writer.set_status("FINISHED", step=MAP_STEP)


def build_maps(root: Path, runs: int = MAP_RUNS, images: int = MAP_IMAGES, per_image: int = MAP_CAPTIONS) -> None:
    """`runs` runs of `images` validation images with `per_image` captions each, in one aligned map."""
    rng = np.random.default_rng(1)
    ids = [f"{i:05d}" for i in range(images)]
    labels = [f"L{i % MAP_LABELS:02d}" for i in range(images)]
    t2i = np.repeat(np.arange(images), per_image)
    img = unit(rng.normal(size=(images, MAP_DIM)))
    centres = rng.normal(scale=6, size=(MAP_LABELS, 2))
    xy_img = centres[np.arange(images) % MAP_LABELS] + rng.normal(size=(images, 2))
    start = {"img": img, "txt": unit(img[t2i] + 1.5 * rng.normal(size=(len(t2i), MAP_DIM))),
             "xy": np.concatenate([xy_img, xy_img[t2i] + rng.normal(scale=0.7, size=(len(t2i), 2))])}
    drawn = thumbnails(rng, min(images, MAP_IMAGES))  # more are drawn than the map sends (map_canvas)
    thumbs = [drawn[i % len(drawn)] for i in range(images)]
    shutil.rmtree(root / "maps", ignore_errors=True)
    for n in range(runs):
        t0 = time.time()
        map_run(root, n, rng, ids, labels, thumbs, start, per_image)
        print(f"wrote map run {n + 1}/{runs} in {time.time() - t0:.1f} s", flush=True)
    atomic.write_json(root / "maps" / run_store.SWEEP_SUMMARY, {"comparisons": [
        {"name": MAP_NAME, "reference": "m0", "runs": [f"m{n}" for n in range(1, runs)], "factor": ["lr"],
         "note": "bench"}]})


QUERY_SWEEP = """name = "query"
[base]
data = "synthetic"
model = "tiny-clip"
image_size = 32
embed_dim = 16
epochs = 2
batch_size = 8
warmup_steps = 2
[runs.locked]
"""


def query_runs(root: Path) -> Path:
    """A finished tiny-clip run trained by train.py (in its own process: this one stays free of
    torch until the Query view imports it), made once."""
    runs = root / "runs"
    if [r for r in run_store.list_runs(runs) if r.state == "FINISHED"]:
        return runs
    import subprocess

    root.mkdir(parents=True, exist_ok=True)
    (root / "sweep.toml").write_text(QUERY_SWEEP)
    args = ["--sweep", str(root / "sweep.toml"), "--runs-dir", str(runs), "--data", str(root / "data" / "synthetic"),
            "--cache-dir", str(root / "cache"), "--no-umap"]
    code = (f"import sys; from data.prepare import prepare; from training.train import main; "
            f"prepare(['synthetic', '--n-images', '48', '--data-dir', {str(root / 'data')!r}]); "
            f"sys.exit(main({args!r}))")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
    return runs


def seconds(action) -> float:
    t0 = time.perf_counter()
    action()
    return time.perf_counter() - t0


def app_test(script: Path, runs_dir: Path | None = None, view: str | None = None):
    from streamlit.testing.v1 import AppTest

    if runs_dir is not None:
        os.environ["CLIP_RUNS_DIR"] = str(runs_dir)
    at = AppTest.from_file(str(script), default_timeout=600)
    if view:
        at.query_params["view"] = view
    return at


def checked(at):
    if at.exception:
        raise RuntimeError(f"the app raised: {[e.value for e in at.exception]}")
    return at


def peer_times(tmp: Path, times: dict) -> None:
    """The minimal page under AppTest: its first run, warm opens in new sessions, a radio flip."""
    script = tmp / "peer.py"
    script.write_text(PEER)
    for kind in ("peer_open_cold", *["peer_open_warm"] * REPEATS):
        at = app_test(script)
        times.setdefault(kind, []).append(seconds(lambda a=at: checked(a.run())))
    for n in range(WIDGET_REPEATS):
        radio = at.radio[0].set_value("epoch" if n % 2 == 0 else "step")
        times.setdefault("peer_widget", []).append(seconds(lambda r=radio: checked(r.run())))


def selection_state(at, chart: int, box: dict):
    """The widget states of a rerun after the user dragged `box` on map `chart`, as the browser sends them."""
    import json

    from streamlit.proto.WidgetStates_pb2 import WidgetStates

    states = WidgetStates()
    states.CopyFrom(at._tree.get_widget_states())
    state = states.widgets.add()
    state.id = at.get("vega_lite_chart")[chart].proto.id
    state.string_value = json.dumps({"selection": {"box": box, "pick": []}})
    return states


def embedding_times(maps_dir: Path, times: dict) -> None:
    import dashboard  # noqa: F401 - its imports, as `streamlit run` loads them before the first visitor

    script = ROOT / "dashboard.py"
    at = app_test(script, maps_dir, "Embedding space")
    times["embedding_open_cold"] = [seconds(lambda: checked(at.run()))]
    for _ in range(REPEATS):
        at = app_test(script, maps_dir, "Embedding space")
        times.setdefault("embedding_open_warm", []).append(seconds(lambda a=at: checked(a.run())))
    points = run_store.read_umap(maps_dir / "maps" / "m0.s0", MAP_NAME)
    x0, x1 = float(points["umap_x"].min()), float(points["umap_x"].max())
    y0, y1 = float(points["umap_y"].min()), float(points["umap_y"].max())
    width = (x1 - x0) / 6
    for n in range(SELECTIONS):  # a box a sixth of the map wide, moved along its diagonal
        left, bottom = x0 + n * (x1 - x0 - width) / SELECTIONS, y0 + n * (y1 - y0 - width) / SELECTIONS
        box = {"umap_x": [left, left + width], "umap_y": [bottom, bottom + width]}
        states = selection_state(at, 0, box)
        times.setdefault("embedding_selection", []).append(seconds(lambda s=states: checked(at._run(s))))
        if not any("rank · maps/m3.s0" in d.value.columns for d in at.dataframe):
            raise RuntimeError("the selection did not reach the selection table")
    from views.embedding import ids_in_box

    end = points[points["step"] == points["step"].max()]
    times["ids_in_box"] = [seconds(lambda: ids_in_box(end, box))]


def query_times(query_dir: Path, times: dict) -> None:
    at = checked(app_test(ROOT / "dashboard.py", query_dir, "Query").run())
    caption = at.text_input(key="query_caption")
    times["query_cold"] = [seconds(lambda: checked(caption.set_value("a red circle").run()))]
    for n in range(QUERIES):
        caption = at.text_input(key="query_caption").set_value(f"a picture of a green square number {n}")
        times.setdefault("query_warm", []).append(seconds(lambda c=caption: checked(c.run())))
    if not at.dataframe or at.dataframe[0].value.empty:
        raise RuntimeError("the query returned no images")


EMBEDDING_REPORT = {  # measurement -> (results.json name, target, peer, what it is)
    "embedding_open_cold": ("dashboard.embedding_open_cold_s", EMBEDDING_OPEN_TARGET_S, "peer_open_cold",
                            "Embedding space view, first open in a fresh process: maps and drift table computed, the "
                            "gap-shift probe on request at this size (AppTest, no browser)"),
    "embedding_open_warm": ("dashboard.embedding_open_s", EMBEDDING_OPEN_TARGET_S, "peer_open_warm",
                            "Embedding space view, a new session with the process's caches filled (median)"),
    "embedding_selection": ("dashboard.embedding_selection_s", SELECTION_TARGET_S, "peer_widget",
                            "a new box selection on the map: the rerun that builds the selection table, rings, "
                            "lines and arrows (median)"),
    "query_cold": ("dashboard.query_cold_s", None, "peer_widget",
                   "first caption query of a tiny-clip run: torch imported, the model rebuilt and loaded"),
    "query_warm": ("dashboard.query_s", QUERY_TARGET_S, "peer_widget",
                   "a new caption query, the run's model loaded (median)"),
}


def embedding_main(maps_dir: Path, rebuild: bool) -> int:
    runs = run_store.list_runs(maps_dir)
    if rebuild or len(runs) != MAP_RUNS or not all(r.state == "FINISHED" for r in runs):
        build_maps(maps_dir)
    query_dir = query_runs(maps_dir.with_name(maps_dir.name + "_query"))
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        peer_times(Path(tmp), times)  # first: it pays for Streamlit's own first run in this process
    embedding_times(maps_dir, times)
    query_times(query_dir, times)
    scale = (f"{MAP_RUNS} runs x {MAP_IMAGES * (1 + MAP_CAPTIONS):,} points ({MAP_IMAGES:,} images, "
             f"{MAP_IMAGES * MAP_CAPTIONS:,} captions, {MAP_DIM}-d) in one aligned map; AppTest; load average "
             f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"\n{'measurement':22s} {'median s':>9s} {'max s':>7s} {'target':>7s} {'x peer':>7s}  ({scale})")
    for key, (name, target, peer, what) in EMBEDDING_REPORT.items():
        median, worst = statistics.median(times[key]), max(times[key])
        ratio = median / statistics.median(times[peer])
        print(f"{key:22s} {median:9.3f} {worst:7.3f} {'' if target is None else f'{target:g}':>7s} {ratio:7.1f}  "
              f"{what}")
        record(name, round(median, 3), "s", target, f"{what}; {scale}; n={len(times[key])}, max {worst:.3f} s; "
               f"{ratio:.1f}x the minimal page under AppTest ({peer})", COMMAND + " --embedding")
    for key in ("peer_open_cold", "peer_open_warm", "peer_widget"):
        print(f"{key:22s} {statistics.median(times[key]):9.3f} {max(times[key]):7.3f}")
        record(f"dashboard.apptest_{key}_s", round(statistics.median(times[key]), 3), "s", None,
               f"peer: a minimal Streamlit page (one radio, one slider, one 120-point chart) under AppTest; {scale}",
               COMMAND + " --embedding")
    print(f"{'ids_in_box':22s} {times['ids_in_box'][0]:9.4f}          (the box's sample ids among "
          f"{MAP_IMAGES * (1 + MAP_CAPTIONS):,} points, alone)")
    return 0


# ------------------------------------------------------ the Embedding space map (chromium)

BIG_IMAGES, BIG_CAPTIONS = 50_000, 4  # one run of 250,000 points, COCO's five-fold captions scaled up
MAP_OPEN_TARGET_S, BIG_OPEN_TARGET_S, HOVER_TARGET_S, MAP_SELECTION_TARGET_S = 3.0, 5.0, 0.1, 0.5
HOVERS, BOXES = 20, 8
MAP_COMMAND = COMMAND + " --map"
# In the map's page: the time of the first pointer event after this call (the page's clock).
MARK_POINTER = """() => {
  window.__pointerAt = null;
  if (window.__pointerMarking) return;
  window.__pointerMarking = true;
  for (const type of ['mousemove', 'mouseup'])
    document.addEventListener(type, () => { window.__pointerAt ??= performance.timeOrigin + performance.now(); }, true);
}"""


def map_frame(page):
    return page.locator(MAP_FRAME).element_handle().content_frame()


def map_open(browser, url: str) -> tuple[float, object]:
    """Seconds from asking for the page on the Embedding space view to the frame in which the map
    has drawn and the script run is over; the page stays open."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    t0 = time.perf_counter()
    page.goto(url + "/?view=Embedding+space")
    map_drawn(page, 300_000)
    wait_settled(page, 0, timeout_ms=300_000, polling="raf")
    return time.perf_counter() - t0, page


def hover_times(page, times: dict, name: str) -> None:
    """Move the pointer off the map, then onto a point (HOVERS points spread over the samples):
    from the pointer event to the frame that shows the point's tooltip, on the page's clock."""
    frame = map_frame(page)
    page.locator(MAP_FRAME).scroll_into_view_if_needed()
    box = page.locator(MAP_FRAME).bounding_box()
    n = frame.evaluate("window.__rows.length")
    for k in range(HOVERS):
        x, y, _ = frame.evaluate("([l, i]) => window.__where(i, l)", [0, k * n // HOVERS])
        page.mouse.move(box["x"] + 2, box["y"] + 2)
        frame.wait_for_function("document.getElementById('tip').style.display !== 'block'")
        frame.evaluate(MARK_POINTER)
        page.mouse.move(box["x"] + x, box["y"] + y)
        done = frame.wait_for_function("""() => {
            if (window.__pointerAt === null || document.getElementById('tip').style.display !== 'block') return false;
            return performance.timeOrigin + performance.now() - window.__pointerAt;
        }""", polling="raf")
        times.setdefault(name, []).append(done.json_value() / 1000)


def selection_times(page, times: dict, name: str) -> None:
    """Drag a box a sixth of the map wide round a point (BOXES points spread over the samples),
    after a double-click has cleared the last one: from the mouse-up in the map to the frame in
    which the page shows the server's selection table for it, the two clocks made absolute."""
    frame = map_frame(page)
    page.locator(MAP_FRAME).scroll_into_view_if_needed()
    box = page.locator(MAP_FRAME).bounding_box()
    canvas = frame.locator("canvas").bounding_box()  # in the page's pixels already
    n = frame.evaluate("window.__rows.length")
    for k in range(BOXES):
        page.mouse.dblclick(canvas["x"] + 3, canvas["y"] + 3)
        page.get_by_text("Drag a box on the map to select").wait_for(timeout=120_000)
        wait_settled(page, 0, timeout_ms=120_000)
        x, y, _ = frame.evaluate("([l, i]) => window.__where(i, l)", [0, (2 * k + 1) * n // (2 * BOXES)])
        x0 = min(max(box["x"] + x - canvas["width"] / 12, canvas["x"] + 2), canvas["x"] + canvas["width"] * 5 / 6 - 2)
        y0 = min(max(box["y"] + y - canvas["height"] / 12, canvas["y"] + 2), canvas["y"] + canvas["height"] * 5 / 6 - 2)
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + canvas["width"] / 6, y0 + canvas["height"] / 6, steps=4)
        frame.evaluate(MARK_POINTER)
        page.mouse.up()
        shown = page.wait_for_function(f"""() => {{
            const table = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
              .some(c => c.textContent.includes('sample(s) selected'));
            if (!table || !({SETTLED_JS})(0)) return false;
            return performance.timeOrigin + performance.now();
        }}""", polling="raf", timeout=120_000).json_value()
        times.setdefault(name, []).append((shown - frame.evaluate("window.__pointerAt")) / 1000)


def map_times(maps_dir: Path, big_dir: Path) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {}
    with sync_playwright() as p:
        browser = launch(p)
        for prefix, root in (("map_", maps_dir), ("big_", big_dir)):
            with serve(root, timeout=120) as url:
                seconds_, page = map_open(browser, url)  # the first visitor: every cache empty
                times[f"{prefix}open_cold"] = [seconds_]
                page.close()
                for _ in range(3):
                    seconds_, page = map_open(browser, url)
                    times.setdefault(f"{prefix}open_warm", []).append(seconds_)
                    if _ < 2:
                        page.close()
                hover_times(page, times, f"{prefix}hover")
                selection_times(page, times, f"{prefix}selection")
                page.close()
        browser.close()
    return times


MAP_REPORT = {  # measurement -> (results.json name, target, peer, what it is)
    "map_open_cold": ("dashboard.map_open_cold_s", MAP_OPEN_TARGET_S, "peer_open_cold",
                      "Embedding space view opened in chromium on 4 runs x 30,000 points (every point of every run "
                      "sent, the first run's end drawn), the first visitor after the server starts: maps, drift "
                      "table and gap computed"),
    "map_open_warm": ("dashboard.map_open_s", MAP_OPEN_TARGET_S, "peer_open_warm",
                      "the same, a new session with the server's caches filled (median of 3)"),
    "map_hover": ("dashboard.map_hover_s", HOVER_TARGET_S, "peer_widget",
                  "4 x 30,000: pointer onto a point to the frame showing its tooltip (thumbnail, caption, label, "
                  "rank) (median)"),
    "map_selection": ("dashboard.map_selection_s", MAP_SELECTION_TARGET_S, "peer_widget",
                      "4 x 30,000: mouse-up of a dragged box to the frame showing the server's selection table "
                      "(median)"),
    "big_open_cold": ("dashboard.map_big_open_cold_s", BIG_OPEN_TARGET_S, "peer_open_cold",
                      "Embedding space view on 1 run x 250,000 points (50,000 images x 4 captions), every point "
                      "drawn, first visitor after the server starts"),
    "big_open_warm": ("dashboard.map_big_open_s", BIG_OPEN_TARGET_S, "peer_open_warm",
                      "the same, a new session with the server's caches filled (median of 3)"),
    "big_hover": ("dashboard.map_big_hover_s", HOVER_TARGET_S, "peer_widget",
                  "1 x 250,000: pointer onto a point to the frame showing its tooltip (median)"),
    "big_selection": ("dashboard.map_big_selection_s", None, "peer_widget",
                      "1 x 250,000: mouse-up of a dragged box to the frame showing the selection table (median)"),
}


def map_main(maps_dir: Path, big_dir: Path, rebuild: bool) -> int:
    runs = run_store.list_runs(maps_dir)
    if rebuild or len(runs) != MAP_RUNS or not all(r.state == "FINISHED" for r in runs):
        build_maps(maps_dir)
    big = run_store.list_runs(big_dir)
    if rebuild or len(big) != 1 or big[0].state != "FINISHED":
        build_maps(big_dir, runs=1, images=BIG_IMAGES, per_image=BIG_CAPTIONS)
    times = map_times(maps_dir, big_dir)
    with tempfile.TemporaryDirectory() as tmp:
        times |= measure_peer(Path(tmp))
    scale = (f"chromium (SwiftShader WebGL, --disable-gpu); load average {os.getloadavg()[0]:.1f} on "
             f"{os.cpu_count()} CPUs")
    print(f"\n{'measurement':18s} {'median s':>9s} {'max s':>7s} {'target':>7s} {'x peer':>7s}  ({scale})")
    for key, (name, target, peer, what) in MAP_REPORT.items():
        median, worst = statistics.median(times[key]), max(times[key])
        ratio = median / statistics.median(times[peer])
        print(f"{key:18s} {median:9.3f} {worst:7.3f} {'' if target is None else f'{target:g}':>7s} {ratio:7.2f}  "
              f"{what}")
        record(name, round(median, 3), "s", target, f"{what}; {scale}; n={len(times[key])}, max {worst:.3f} s; "
               f"{ratio:.2f}x the minimal Streamlit page ({peer}: {statistics.median(times[peer]):.3f} s)",
               MAP_COMMAND)
    for key in ("peer_open_cold", "peer_open_warm", "peer_widget"):
        print(f"{key:18s} {statistics.median(times[key]):9.3f} {max(times[key]):7.3f}")
        record(f"dashboard.map_{key}_s", round(statistics.median(times[key]), 3), "s", None,
               f"peer: {PEER_NOTE}, measured in the map's run; {scale}", MAP_COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
