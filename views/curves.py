"""The Curves view: one metric over training for every selected run, smoothed; or, with seeds
grouped, for every configuration: the mean over its seeds with a min–max band."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import charts
from analysis.runs import BAND_COLUMNS, band_rows, curve_rows, smooth, thin, with_wall_time
from core import run_store
from core.names import X_TITLES, label
from views.common import group_seeds, md, run_groups
from views.readers import all_evals, all_metrics, cached, sources
from views.vega import dataset_name, draw, vega_lite

# Rows one curves chart draws, all runs together (each run gets 40 to 150): the browser redraws
# the chart on every widget change, in time that grows with the rows.
CURVE_POINTS = 1000
# The columns a curves chart draws from, and their types (the layout is built from an empty frame).
CURVE_COLUMNS = {"run": str, "step": int, "epoch": float, "wall_time": float, "value": float,
                 "smoothed": float, "evaluated": bool}
# Above this many runs the faint raw-value lines start off (a checkbox brings them back): a
# dozen overlapping faint lines are mostly haze, and they are a third of the chart's redraw time.
RAW_LINES_UP_TO = 4


def view(runs: list[run_store.Run]) -> None:
    src = sources(runs)
    options = curve_options(src)
    if not options:
        st.info("The selected runs have logged no metrics yet.")
        return
    groups = run_groups(runs)
    pooled = group_seeds(groups)
    choice, x, weight, log, lines = curve_controls(options, len(runs), pooled)
    drawn, nan, thinned = curve_points(src, choice, weight)
    if drawn.empty:
        st.info("None of the selected runs logged this metric.")
        return
    if pooled:
        draw(band_spec(src, choice, weight, x, log, lines, tuple(groups.items())))
        st.caption("Bold line: the mean over a configuration's seeds of their smoothed curves; band: from the lowest "
                   "seed to the highest (min–max over seeds)" + ("; thin lines: single seeds" if lines else "")
                   + "; dots: steps where the model was evaluated (step 0 is before any training).")
    else:
        draw(curve_spec(src, choice, weight, x, log, lines))
        st.caption("Bold line: smoothed" + ("; faint line: raw values" if lines else "")
                   + "; dots: steps where the model was evaluated (step 0 is before any training).")
    if thinned:
        st.caption("Long runs are drawn with every k-th step (smoothing uses all of them).")
    for run, count in nan.items():
        st.caption(f"{md(run)}: {count} NaN value(s) of this metric, left as gaps in the curve.")


@cached(max_entries=64)
def curve_options(src: tuple) -> dict[str, str]:
    """Option id -> readable name for every metric logged by the runs."""
    metrics, evals = all_metrics(src), all_evals(src)
    names = sorted(metrics["name"].unique()) if not metrics.empty else []
    options = {f"train|{m}": f"{label(m)} · training batches" for m in names}
    if not evals.empty:
        pairs = evals[["split", "metric"]].drop_duplicates().sort_values(["split", "metric"],
                                                                         ascending=[False, True])
        options |= {f"eval|{s}|{m}": f"{label(m)} · evaluation on {s} split"
                    for s, m in zip(pairs["split"], pairs["metric"], strict=True)}
    return options


def curve_controls(options: dict[str, str], runs: int, pooled: bool) -> tuple[str, str, float, bool, bool]:
    """Metric, x axis, EMA weight, log scale, and whether to draw the thin lines: the raw values
    of `runs` runs, or with seeds `pooled` each seed's own curve."""
    left, mid, right = st.columns([3, 2, 2])
    ids = list(options)
    choice = left.selectbox("Metric", ids, index=ids.index("train|loss") if "train|loss" in ids else 0,
                            format_func=options.get)
    x = mid.radio("x axis", list(X_TITLES), horizontal=True, format_func=lambda k: k.replace("_", " "))
    weight = right.slider("EMA smoothing", 0.0, 0.99, 0.6, 0.01,
                          help="Weight of the past in the exponential moving average (0: raw values).")
    log = right.checkbox("Log scale on y")
    if pooled:
        return choice, x, weight, log, right.checkbox("Single seeds (thin lines)")
    raw = right.checkbox("Raw values (faint lines)", value=runs <= RAW_LINES_UP_TO,
                         help=f"On by default for up to {RAW_LINES_UP_TO} runs.")
    return choice, x, weight, log, raw


@cached(max_entries=128)
def curve_points(src: tuple, choice: str, weight: float) -> tuple[pd.DataFrame, pd.Series, bool]:
    """What the curves chart draws (smoothed, thinned), NaN counts per run, whether thinned."""
    frame = curve_frame(src, choice)
    if frame.empty:
        return frame, pd.Series(dtype=int), False
    per_run = max(40, min(150, CURVE_POINTS // frame["run"].nunique()))
    drawn = thin(smooth(frame, weight)[list(CURVE_COLUMNS)], per_run)
    return drawn, frame[frame["value"].isna()].groupby("run").size(), len(drawn) < len(frame)


@cached(max_entries=256)
def curve_spec(src: tuple, choice: str, weight: float, x: str, log: bool, raw: bool) -> dict:
    """The curves chart: the cached layout of this metric and these settings, with the rows of
    this smoothing weight. Moving the EMA slider then only smooths; the chart is not rebuilt."""
    drawn, _, _ = curve_points(src, choice, weight)
    rows = curve_rows(drawn, x, log)
    name = dataset_name(rows)
    colors = tuple(charts.group_colors(sorted(drawn["run"].unique())).items())
    return curve_layout(choice.split("|")[-1], x, log, raw, colors) | {"data": {"name": name}, "datasets": {name: rows}}


@cached(max_entries=128)
def band_spec(src: tuple, choice: str, weight: float, x: str, log: bool, seeds: bool, groups: tuple) -> dict:
    """The curves chart of configurations (`groups`: (run key, group) pairs): the cached layout
    of these settings with the band rows of this smoothing weight, as curve_spec does."""
    drawn, _, _ = curve_points(src, choice, weight)
    rows = band_rows(drawn, dict(groups), seeds, log)
    name = dataset_name(rows)
    colors = tuple(charts.group_colors(sorted(set(dict(groups).values()))).items())  # the Runs view's, by name
    return band_layout(choice.split("|")[-1], x, log, seeds, colors) | {"data": {"name": name},
                                                                       "datasets": {name: rows}}


@cached(max_entries=256)
def band_layout(metric: str, x: str, log: bool, seeds: bool, colors: tuple) -> dict:
    """charts.seed_band_chart's spec without its rows (see curve_layout); `colors`: (name, colour) pairs."""
    empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in BAND_COLUMNS.items()})
    spec = vega_lite(charts.seed_band_chart(empty, metric, x, log, seeds, colors=dict(colors)))
    del spec["data"], spec["datasets"]
    return spec


@cached(max_entries=256)
def curve_layout(metric: str, x: str, log: bool, raw: bool, colors: tuple) -> dict:
    """The curves chart's Vega-Lite spec without its rows (building and validating it with
    Altair costs more than smoothing a dozen runs); `colors`: (run, colour) pairs."""
    empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in CURVE_COLUMNS.items()})
    spec = vega_lite(charts.curves_chart(empty, metric, x, log, raw=raw, colors=dict(colors)))
    del spec["data"], spec["datasets"]
    return spec


@cached(max_entries=128)
def curve_frame(src: tuple, choice: str) -> pd.DataFrame:
    """run, step, epoch, wall_time, value, evaluated: one metric of the curves view, unsmoothed."""
    metrics, evals = all_metrics(src), all_evals(src)
    kind, *rest = choice.split("|")
    if kind == "train":
        frame = metrics[metrics["name"] == rest[0]]
        if evals.empty:
            return frame.assign(evaluated=False)
        evaluated = pd.MultiIndex.from_frame(frame[["run", "step"]]).isin(
            pd.MultiIndex.from_frame(evals[["run", "step"]]))
        return frame.assign(evaluated=evaluated)
    split, metric = rest
    frame = evals[(evals["split"] == split) & (evals["metric"] == metric)]
    return with_wall_time(frame, metrics).assign(evaluated=True)
