"""The Runs view: status badges, the comparison table and the final retrieval chart."""

from __future__ import annotations

import streamlit as st

import charts
from analysis.names import TABLE_METRICS
from analysis.runs import retrieval_frame, style_best
from training import run_store
from views.common import md
from views.readers import all_evals, cached, comparison_of, sources
from views.vega import draw, vega_lite

BADGE_COLORS = {"RUNNING": "blue", "FINISHED": "green", "FAILED": "red", "KILLED": "orange",
                "INTERRUPTED": "violet"}  # any other state: gray


def view(runs: list[run_store.Run]) -> None:
    badges(runs)
    src = sources(runs)
    evals = all_evals(src)
    table = comparison_of(src, tuple(r.state for r in runs), runs)
    st.subheader("What differs, and how well each run retrieves")
    st.dataframe(style_best(table))
    differing = [c for c in table.columns if c not in TABLE_METRICS and c != "state"]
    st.caption(
        (f"Config values that differ: {', '.join(differing)}. " if differing else
         "The selected runs share every config value. ")
        + "Metrics: each run's last evaluation on the validation split. i2t: image→text (find an "
        "image's caption), t2i: text→image. R@k: share of queries whose match is among the top k. "
        "Highlighted: best per column. NaN: not measured, or the run diverged.")
    if evals.empty:
        st.info("No evaluation has been written yet.")
        return
    draw(retrieval_spec(src))
    chance_caption(evals)
    subset_caption(runs)


def badges(runs: list[run_store.Run]) -> None:
    """A badge per run with its state and step, and why a failed or killed run stopped."""
    with st.container(horizontal=True):
        for r in runs:
            step = r.status.get("step")
            st.badge(f"{md(r.key)} · {r.state}" + (f" · step {step}" if step is not None else ""),
                     color=BADGE_COLORS.get(r.state, "gray"))
    for r in runs:
        if r.state in ("FAILED", "KILLED") and r.status.get("error"):
            with st.expander(f"Why {md(r.key)} is {r.state}"):
                st.code(r.status["error"], language=None)


@cached(max_entries=64)
def retrieval_spec(src: tuple) -> dict:
    return vega_lite(charts.retrieval_bars(retrieval_frame(all_evals(src))))


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
