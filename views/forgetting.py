"""The Forgetting view: evaluation sets other than train and val over training, and the gain
on a run's own validation data against the change on a held-out set (with WiSE-FT)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import charts
from analysis.runs import forgetting_frame
from core import run_store
from core.names import label
from views.readers import all_evals, all_wise_ft, cached, sources
from views.vega import draw, vega_lite

OWN_SPLITS = ["train", "val", "test"]  # a run's own data; any other split is an extra evaluation set


def view(runs: list[run_store.Run]) -> None:
    every_split, wise = all_evals(sources(runs)), all_wise_ft(sources(runs))
    extra = every_split[~every_split["split"].isin(OWN_SPLITS)] if not every_split.empty else every_split
    kept = set(extra.get("run", [])) | set(wise.get("run", []))
    runs = [r for r in runs if r.key in kept]  # only the runs that measure forgetting are drawn
    src = sources(runs)
    if extra.empty and wise.empty:
        st.info("The selected runs have no forgetting evaluation: their eval.parquet holds only the train, "
                "val and test splits, and no WiSE-FT rows. A run gets them with extra_evals and wise_ft_ratios in its "
                "sweep (the default sweep's stage2-people has both).")
        return
    metric = metric_choice(sorted(set(extra.get("metric", [])) | set(wise.get("metric", []))))
    draw(split_curves_spec(src, metric))
    held_out_sets = sorted(set(extra.get("split", [])))
    if not held_out_sets:
        return
    held_out = st.selectbox("Held-out evaluation set", held_out_sets)
    spec, points = forgetting_spec(src, metric, held_out)
    if spec is None:
        st.info(f"No run evaluated {label(metric)} on both its val split and {held_out} at step 0 and "
                f"at its end.")
        return
    draw(spec)
    st.caption(f"Each point is a change from the run's step 0: right is better on the run's own validation data "
               f"(the data it fine-tunes on), down is forgetting on {held_out}. WiSE-FT mixes the weights the run "
               f"started from (ratio 0) and ended with (ratio 1).")
    st.dataframe(points, hide_index=True)


def metric_choice(metrics: list[str]) -> str:
    return st.selectbox("Metric", metrics, format_func=label,
                        index=metrics.index("i2t_R@1") if "i2t_R@1" in metrics else 0)


@cached(max_entries=64)
def split_curves_spec(src: tuple, metric: str) -> dict:
    evals = all_evals(src)
    return vega_lite(charts.split_curves_chart(evals[evals["metric"] == metric], metric))


@cached(max_entries=64)
def forgetting_spec(src: tuple, metric: str, held_out: str) -> tuple[dict | None, pd.DataFrame]:
    """The gain-vs-forgetting chart (None when no run has the points) and its points."""
    points = forgetting_frame(all_evals(src), all_wise_ft(src), metric, held_out)
    return (None if points.empty else vega_lite(charts.forgetting_chart(points, metric, held_out))), points
