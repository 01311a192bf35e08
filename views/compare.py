"""The Compare view: run B against run A, or configuration B against configuration A with
their seeds pooled, metric by metric with paired 95% intervals, p-values, the difference each
comparison could detect and a verdict that names a direction only where the interval excludes
0; then the images whose R@1 outcome changed, with a way into the Samples view.

A pair of configurations that the sweep compares is read from the results step's table
(analysis/results.py), with its p-value adjusted for the sweep's many comparisons: the numbers
the write-up shows. Any other pair is computed here by the same rule (analysis.compare.compare)
and cached.

Runs A and B are the widgets `run_a` and `run_b`, bound to the URL (?run_a=...&run_b=...) and
shared with the Samples view: it shows the pair compared here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from analysis import results
from analysis.compare import SINGLE_RUNS, changed_outcomes, compare, compare_two, on_split
from analysis.runs import decimals
from core import run_store
from core.names import label
from core.stats import N_RESAMPLES
from views.common import by_key, finished, md, members, run_groups
from views.readers import cached, load_compared, load_results, stamp, thumbnail_uris

RUNS, CONFIGURATIONS = "two runs", "two configurations (seeds pooled)"
SPLITS = {"val": "validation (where choices are made)", "test": "test (the reported figures)"}


def view(runs: list[run_store.Run]) -> None:
    done = finished(runs)
    if len(done) < 2:
        st.info("Compare needs two finished runs: their per-sample results are written when they finish.")
        return
    index = by_key(done)
    groups = members(run_groups(done))
    pooled = any(len(keys) > 1 for keys in groups.values())
    left, right = st.columns(2)
    what = left.radio("Compare", [RUNS, CONFIGURATIONS], index=1 if pooled else 0, horizontal=True,
                      key="compare_what", help="Configurations: the runs that differ only in their seed, pooled.")
    split = right.radio("On the split", list(SPLITS), format_func=SPLITS.get, horizontal=True, key="compare_split",
                        help="Choices between runs look at validation; test is read for the reported figures.")
    pair = compare_configurations(groups, index, split) if what == CONFIGURATIONS else compare_runs(index, split)
    if pair:
        changed_images(index[pair[0]], index[pair[1]])


def pick_pair(options: tuple[list[str], list[str]], labels: tuple[str, str], keys: tuple[str, str],
              format_func=str) -> tuple[str, str]:
    """A and B, two selectboxes bound to the URL; out of one list, B starts at its second option."""
    left, right = st.columns(2)
    a = left.selectbox(labels[0], options[0], key=keys[0], bind="query-params", format_func=format_func)
    b = right.selectbox(labels[1], options[1], index=min(1, len(options[1]) - 1) if options[0] == options[1] else 0,
                        key=keys[1], bind="query-params", format_func=format_func)
    return a, b


def compare_runs(index: dict[str, run_store.Run], split: str) -> tuple[str, str] | None:
    a, b = pick_pair((list(index), list(index)), ("Run A", "Run B"), ("run_a", "run_b"))
    if a == b:
        st.info("Pick two different runs as A and B.")
        return None
    try:
        with st.spinner(f"Paired intervals over the {split} images…"):
            table = paired(files(index[a]), files(index[b]), split)
    except ValueError as refused:  # evaluated on other images or captions: nothing to pair
        refuse(a, b, refused)
        return None
    st.subheader(f"Paired comparison on {split}: {md(b)} (B) against {md(a)} (A)")
    st.dataframe(paired_display(table))
    st.caption(PAIRED_CAPTION)
    return a, b


def compare_configurations(groups: dict[str, list[str]], index: dict[str, run_store.Run],
                           split: str) -> tuple[str, str] | None:
    seeds = lambda g: f"{g} ({len(groups[g])} seed{'s' if len(groups[g]) > 1 else ''})"
    a, b = pick_pair((list(groups), list(groups)), ("Configuration A", "Configuration B"), ("group_a", "group_b"),
                     seeds)
    if a == b:
        st.info("Pick two different configurations as A and B.")
        return None
    table, interval = stored(index[groups[a][0]], a, b, split)
    if table is None:
        try:
            with st.spinner(f"Intervals over seeds and {split} images…"):
                table, interval = pooled(tuple(files(index[k], k) for k in groups[a]),
                                         tuple(files(index[k], k) for k in groups[b]), split,
                                         fixed(index, groups[a]), fixed(index, groups[b]))
        except (ValueError, KeyError) as refused:
            refuse(a, b, refused)
            return None
    st.subheader(f"Configuration {md(b)} (B) against {md(a)} (A), on {split}")
    if interval == SINGLE_RUNS:
        st.info(md(f"A configuration of one seed has no seed-to-seed variation to measure: shown, the paired "
                   f"comparison of one run of each ({groups[a][0]} and {groups[b][0]}), which counts "
                   f"image-to-image variation only."))
        st.dataframe(paired_display(table))
        st.caption(PAIRED_CAPTION)
    else:
        st.dataframe(pooled_display(table))
        st.caption(POOLED_CAPTION)
    st.caption(ADJUSTED_CAPTION if "p_adjusted" in table.columns else LIVE_CAPTION)
    st.markdown("**A run of each, to look at image by image**")
    return pick_pair((groups[a], groups[b]), ("Run A", "Run B"), ("run_a", "run_b"))


def fixed(index: dict[str, run_store.Run], keys: list[str]) -> bool:
    """Whether a configuration is a deterministic fit (a closed form), which no seed changes."""
    return bool(index[keys[0]].config.get("closed_form"))


def stored(run: run_store.Run, a: str, b: str, split: str) -> tuple[pd.DataFrame | None, str | None]:
    """The results step's rows of configuration b against a on `split` (indexed by metric) and
    how their interval was made, or (None, None) where the sweep does not compare them."""
    prefix = f"{run.sweep}/"  # the views name a configuration "<sweep>/<group>", the tables "<group>"
    if not (a.startswith(prefix) and b.startswith(prefix)):
        return None, None
    rows = results.comparison_rows(load_results(str(run_store.runs_root(run.path)), run.sweep)["comparisons"],
                                   a.removeprefix(prefix), b.removeprefix(prefix), split)
    return (None, None) if rows is None else (rows, rows["interval"].iloc[0])


def refuse(a: str, b: str, refused: ValueError) -> None:
    st.error(f"Not compared: {md(refused)}. A paired comparison needs {md(a)} and {md(b)} evaluated on the same "
             f"images and captions (a label-subset run validates on fewer).")


def files(run: run_store.Run, *key: str) -> tuple:
    """(path, file stamp) of a run, the cache key of what is computed from it (with its key first if given)."""
    return (*key, str(run.path), stamp(run))


@cached(max_entries=64)
def paired(a: tuple, b: tuple, split: str) -> pd.DataFrame:
    """analysis.compare.compare_two of runs a and b on `split`, each (path, stamp)."""
    return compare_two(on_split(load_compared(*a), split), on_split(load_compared(*b), split))


@cached(max_entries=64)
def pooled(a: tuple, b: tuple, split: str, fixed_a: bool, fixed_b: bool) -> tuple[pd.DataFrame, str]:
    """analysis.compare.compare on `split`; a, b: (key, path, stamp) of each run of a configuration."""
    side = lambda runs: {k: on_split(load_compared(p, s), split) for k, p, s in runs}
    return compare(side(a), side(b), fixed_a, fixed_b)


# ------------------------------------------------------------------------------ tables


PAIRED_CAPTION = (
    f"Paired: every query (an image, or a caption with the other captions of its image) is scored under A and "
    f"under B, and the 95% interval of the mean difference is a bootstrap over the split's images (BCa, "
    f"{N_RESAMPLES:,} resamples). p (sign-flip): permutation test of \u201cA and B are interchangeable on each "
    f"image\u201d. p (McNemar): exact test on the queries one run gets right at R@1 and the other wrong (it takes "
    f"captions as independent, which overstates the evidence for text→image). The verdict names a direction only "
    f"where the interval excludes 0; otherwise it says \u201cno detectable difference\u201d.")
POOLED_CAPTION = (
    "A and B: the mean over each configuration's seeds. 95% interval: Welch's t-interval over the seeds' figures "
    "and the paired bootstrap over the split's images, combined in quadrature (a configuration's own interval has "
    "the same two parts); images only: the seeds held fixed. Seed SD: how far one run's figure moves from seed to "
    "seed; image SE: how far it moves with the images drawn (a bootstrap standard error). Where the SD is "
    "the larger, more seeds narrow the interval more than more images would. p: the test that inverts the 95% "
    "interval (p < 0.05 exactly where it excludes 0). The verdict follows the 95% interval.")
MDE_CAPTION = ("MDE (minimum detectable effect): the true difference this comparison would find 80% of the time. A "
               "\u201cno detectable difference\u201d makes an effect of that size or larger unlikely; a smaller one it "
               "could easily miss.")
ADJUSTED_CAPTION = (
    "A comparison of the sweep, read from the results step's table (runs/<sweep>/results/comparisons.parquet): the "
    "numbers the write-up shows. Adjusted p: Benjamini-Hochberg over every comparison of the sweep on this split and "
    "metric (a family), so that a sweep of many comparisons does not find effects by chance; the adjusted verdict "
    "names a direction only where it is below 0.05. " + MDE_CAPTION)
LIVE_CAPTION = ("Not one of the sweep's comparisons: computed here by the same rule, outside its family, so with no "
                "adjusted p-value. " + MDE_CAPTION)


def paired_display(table: pd.DataFrame) -> pd.DataFrame:
    """compare_two's table as read on screen: figures at their metric's precision, McNemar's
    p only on the R@1 rows (the rows without it show a dash)."""
    return pd.DataFrame({
        "A": figure_column(table, "a"), "B": figure_column(table, "b"),
        "B − A": figure_column(table, "difference", signed=True),
        "95% interval": interval_column(table, "low", "high"), "MDE": figure_column(table, "mde"),
        "verdict": short_verdicts(table),
        "p (sign-flip)": [p_value(p) for p in table["p_value"]],
        "p (McNemar)": [p_value(p, m.endswith("_R@1")) for m, p in table["mcnemar_p"].items()],
        **adjusted_columns(table)}, index=[label(m) for m in table.index])


def pooled_display(table: pd.DataFrame) -> pd.DataFrame:
    """compare's table of two configurations as read on screen: the interval over seeds and
    images with the seed SD and the image SE beside it."""
    return pd.DataFrame({
        "A (mean)": figure_column(table, "a"), "B (mean)": figure_column(table, "b"),
        "B − A": figure_column(table, "difference", signed=True),
        "95% interval": interval_column(table, "low", "high"), "verdict": short_verdicts(table),
        "MDE": figure_column(table, "mde"), "p": [p_value(p) for p in table["p_value"]],
        **adjusted_columns(table),
        "seed SD": figure_column(table, "seed_sd"), "image SE": figure_column(table, "image_se"),
        "images only": interval_column(table, "image_low", "image_high")}, index=[label(m) for m in table.index])


def short_verdicts(table: pd.DataFrame) -> list[str]:
    """The verdicts without the figures the table's other columns show."""
    return [v.split(",")[0] for v in table["verdict"]]


def adjusted_columns(table: pd.DataFrame) -> dict[str, list[str]]:
    """The adjusted p-value and verdict of a comparison of the sweep (none for a live one)."""
    if "p_adjusted" not in table.columns:
        return {}
    return {"adjusted p": [p_value(p) for p in table["p_adjusted"]],
            "adjusted verdict": [v.split(",")[0] for v in table["adjusted_verdict"]]}


def p_value(p: float, computed: bool = True) -> str:
    return "–" if not computed else "NaN" if np.isnan(p) else f"{p:.4f}"


def figure_column(table: pd.DataFrame, column: str, signed: bool = False) -> list[str]:
    sign = "+" if signed else ""
    values = table[column] if column in table.columns else pd.Series(np.nan, index=table.index)
    return ["NaN" if np.isnan(v) else f"{v:{sign}.{decimals(m)}f}" for m, v in values.items()]


def interval_column(table: pd.DataFrame, low: str, high: str) -> list[str]:
    return ["NaN" if np.isnan(lo) else f"[{lo:.{decimals(m)}f}, {hi:.{decimals(m)}f}]"
            for m, lo, hi in zip(table.index, table[low], table[high], strict=True)]


# ------------------------------------------------------------------------------ images


def changed_images(a: run_store.Run, b: run_store.Run) -> None:
    """The images that B fixed or broke at R@1, and buttons into the Samples view's filters."""
    table = changed_table(files(a), files(b))
    fixed = int((table["change"] == "fixed by B").sum())
    st.subheader("Images whose image→text R@1 outcome changed")
    st.caption(f"{fixed} image(s) fixed by B ({md(b.key)}: wrong under A, right under B) and {len(table) - fixed} "
               f"broken by B (right under A, wrong under B). Rank: the position of the image's first right caption; "
               f"tied: its true caption scored the same as a wrong one, which counts against it.")
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "thumbnail": st.column_config.ImageColumn("image", width="small"), "image_id": "image id",
        "rank_a": st.column_config.NumberColumn("rank under A", format="%d"),
        "rank_b": st.column_config.NumberColumn("rank under B", format="%d"),
        "tied_a": "tied under A", "tied_b": "tied under B"})
    left, right = st.columns(2)
    for column, which in ((left, "fixed"), (right, "broken")):
        column.button(f"Open “{which} by B” in the Samples view", key=f"compare_{which}", on_click=open_samples,
                      args=(which,), icon=":material/arrow_forward:")


@cached(max_entries=64)
def changed_table(a: tuple, b: tuple) -> pd.DataFrame:
    """analysis.compare.changed_outcomes of runs a and b ((path, stamp)), with B's thumbnails."""
    table = changed_outcomes(load_compared(*a), load_compared(*b))
    table.insert(0, "thumbnail", table["image_id"].map(thumbnail_uris(*b)))
    return table


def open_samples(which: str) -> None:
    """Switch to the Samples view with its filter set (a button callback: it runs before the
    rerun that draws the Samples view, whose Run A and Run B are this view's `run_a` and `run_b`)."""
    st.session_state.update(view="Samples", sample_filter=which)
