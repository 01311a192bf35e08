"""The Runs view: status badges, the comparison table (one row per run, or per configuration
with its seeds pooled) with intervals and the runs indistinguishable from the best marked,
and the final retrieval chart."""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st

import charts
from analysis.compare import best_of
from analysis.runs import final_figures, group_table, interval_cells, retrieval_frame, style_best
from core import run_store
from core.names import COMPARED_METRICS, RUNS_METRICS
from views.common import group_seeds, md, members, run_groups
from views.readers import all_evals, cached, load_outcomes, load_results, sources, stamp
from views.vega import draw, vega_lite

BADGE_COLORS = {"RUNNING": "blue", "FINISHED": "green", "FAILED": "red", "KILLED": "orange",
                "INTERRUPTED": "violet"}  # any other state: gray
# "0": the table without intervals or highlight, for bench/dashboard_latency.py to time what they cost.
INTERVALS = os.environ.get("CLIP_DASHBOARD_INTERVALS", "1") != "0"
TABLE_COLUMNS = ["seeds", "state"]  # beside the config values and the metrics
BADGES_UP_TO = 12  # runs; beyond, one badge per state with its count, and one for each run not FINISHED


def view(runs: list[run_store.Run]) -> None:
    badges(runs)
    src = sources(runs)
    evals = all_evals(src)
    groups = run_groups(runs)
    rows = groups if group_seeds(groups) else {r.key: r.key for r in runs}
    table = runs_table(src, tuple(r.state for r in runs), tuple(rows.items()), runs)
    st.subheader("What differs, and how well each run retrieves")
    runs_dataframe(table, runs, rows)
    figures = {f"{m}{end}" for m in RUNS_METRICS for end in ("", " low", " high")}
    differing = [c for c in table.columns if c not in TABLE_COLUMNS and c not in figures]
    st.caption(
        (f"Config values that differ: {', '.join(differing)}. " if differing else
         "The selected runs share every config value. ")
        + "Metrics: each run's last evaluation on the validation split. i2t: image→text (find an "
        "image's caption), t2i: text→image. R@k: share of queries whose match is among the top k; mean rank: "
        "lower is better. NaN: not measured, or the run diverged.")
    if evals.empty:
        st.info("No evaluation has been written yet.")
        return
    draw(retrieval_spec(src, tuple(rows.items())))
    chance_caption(evals)
    subset_caption(runs)


def runs_dataframe(table: pd.DataFrame, runs: list[run_store.Run], rows: dict[str, str]) -> None:
    """The table on screen: with INTERVALS, each figure with its interval and the cells that
    cannot be told apart from the best of their column highlighted."""
    if not INTERVALS:
        st.dataframe(style_best(table.drop(columns=[c for c in table.columns if c.endswith((" low", " high"))])))
        return
    cells, slot = metrics_first(interval_cells(table)), st.empty()
    slot.dataframe(style_best(cells))  # the figures at once; their highlight when its intervals are done
    with st.spinner("Paired intervals against the best of each column…"):
        marks, left_out = best_marks(runs, rows)
    slot.dataframe(style_best(cells, marks))
    pooled = any(table["seeds"] > 1)
    st.caption(
        "Each figure with its 95% interval: for one run, the bootstrap interval over validation images stored "
        "with it (none for a run from before intervals, or one still training)"
        + ("; for a configuration of several seeds, the mean over seeds with an interval that counts both how far "
           "a figure moves from seed to seed (the t-interval of the seed means) and the seeds' own intervals over "
           "images (the Compare view's differences count both the same way)" if pooled else "") + ". "
        "Highlighted: the best, and every run whose paired 95% interval against it includes 0 (query by "
        "query on the same validation images" + ("; a configuration's outcome per query is the mean over its "
                                                  "seeds, which holds them fixed" if pooled else "") + ").")
    if left_out:
        st.caption(f"Not in the highlight (evaluated on other images, or no per-sample results yet): "
                   f"{', '.join(md(n) for n in left_out)}.")


def metrics_first(cells: pd.DataFrame) -> pd.DataFrame:
    """The figures right after seeds and state, the config values that differ after them: a
    wide table's first screen then shows what the runs achieved."""
    metrics = [m for m in RUNS_METRICS if m in cells.columns]
    return cells[[*TABLE_COLUMNS, *metrics, *[c for c in cells.columns if c not in TABLE_COLUMNS + metrics]]]


@cached(max_entries=64)
def runs_table(src: tuple, states: tuple, rows: tuple, _runs: list[run_store.Run]) -> pd.DataFrame:
    """analysis.runs.group_table of the runs, one row per value of `rows` (run key -> row
    name); `_runs` is left out of the cache key: the file stamps in `src` cover their
    config.json and status.json, and `states` what the status means now."""
    evals = all_evals(src)
    return group_table([{"run": r.key, "state": state, "config": r.config, "figures": final_figures(evals, run=r.key)}
                        for r, state in zip(_runs, states, strict=True)], dict(rows))


def best_marks(runs: list[run_store.Run], rows: dict[str, str]) -> tuple[pd.DataFrame, list[str]]:
    """Row name x metric -> highlighted, and the rows left out of the highlight of some column:
    the results step's marks where the rows are every configuration of one sweep, otherwise
    computed here by the same rule (analysis.compare.best_of) and cached."""
    if (marks := stored_marks(runs, rows)) is not None:
        return marks
    index = {r.key: r for r in runs}
    files = tuple((name, tuple((str(index[k].path), stamp(index[k])) for k in keys))
                  for name, keys in members(rows).items())
    marks, left_out = {}, []
    for metric in COMPARED_METRICS:
        marks[metric], out = column_marks(files, metric)
        left_out += [n for n in out if n not in left_out]
    return pd.DataFrame(marks, index=[name for name, _ in files]), left_out


def stored_marks(runs: list[run_store.Run], rows: dict[str, str]) -> tuple[pd.DataFrame, list[str]] | None:
    """best_marks from the results step's `best` table, or None where the rows are not every
    configuration of one sweep (a filtered list, runs shown one by one, several sweeps)."""
    sweeps = {r.sweep for r in runs}
    if len(sweeps) != 1:
        return None
    prefix = f"{(sweep := sweeps.pop())}/"
    names = list(members(rows))
    tables = load_results(str(run_store.runs_root(runs[0].path)), sweep)
    if {n.removeprefix(prefix) for n in names} != set(tables["figures"]["configuration"]) \
            or not all(n.startswith(prefix) for n in names):
        return None
    best = tables["best"].assign(row=prefix + tables["best"]["configuration"])
    marks = best.pivot(index="row", columns="metric", values="best").reindex(names).fillna(False).astype(bool)
    counted = set(best.loc[~best["left_out"], "row"])
    return marks[[m for m in COMPARED_METRICS if m in marks.columns]], [n for n in names if n not in counted]


@cached(max_entries=512)
def column_marks(files: tuple, metric: str) -> tuple[dict[str, bool], list[str]]:
    """analysis.compare.best_of for one column; `files`: (row name, ((path, stamp) of each of its runs))."""
    return best_of({name: [load_outcomes(path, s) for path, s in runs] for name, runs in files}, metric)


def badges(runs: list[run_store.Run]) -> None:
    """A badge per run with its state and step (many runs: one per state with its count, and
    one for each run that is not FINISHED), and why a failed or killed run stopped."""
    counts = pd.Series([r.state for r in runs]).value_counts()
    shown = runs if len(runs) <= BADGES_UP_TO else [r for r in runs if r.state != "FINISHED"]
    with st.container(horizontal=True):
        if len(runs) > BADGES_UP_TO:
            for state, n in counts.items():
                st.badge(f"{n} {state}", color=BADGE_COLORS.get(state, "gray"))
        for r in shown:
            step = r.status.get("step")
            st.badge(f"{md(r.key)} · {r.state}" + (f" · step {step}" if step is not None else ""),
                     color=BADGE_COLORS.get(r.state, "gray"))
    for r in runs:
        if r.state in ("FAILED", "KILLED") and r.status.get("error"):
            with st.expander(f"Why {md(r.key)} is {r.state}"):
                st.code(r.status["error"], language=None)


@cached(max_entries=64)
def retrieval_spec(src: tuple, rows: tuple) -> dict:
    """The final retrieval chart, a bar per table row: a configuration's bar is the mean over its seeds."""
    frame = retrieval_frame(all_evals(src))
    frame["run"] = frame["run"].map(dict(rows))
    frame = frame.groupby(["run", "metric", "measure"], as_index=False)[["final", "baseline", "step"]].mean()
    return vega_lite(charts.retrieval_bars(frame))


def chance_caption(evals) -> None:
    chance = evals[(evals["metric"] == "chance_R@1") & (evals["split"] == "val")]["value"]
    if not chance.empty:
        low, high = chance.min(), chance.max()
        st.caption("Chance R@1 (one over the number of validation images): "
                   + (f"{high:.4f}." if low == high else f"{low:.4f} to {high:.4f}, by run."))


def subset_caption(runs: list[run_store.Run]) -> None:
    subset = [r.key for r in runs if r.config.get("include_labels") or r.config.get("exclude_labels")]
    if subset:
        st.caption(f"{', '.join(md(k) for k in subset)} train and validate on a label subset, so their R@k "
                   "count fewer, other validation images: compare them with each other, or in the "
                   "Forgetting view, not with the other runs.")
