"""The Export view: the comparison, the metrics and the per-image ranks as CSV, and the final
retrieval chart as SVG."""

from __future__ import annotations

import io

import pandas as pd
import streamlit as st

import charts
from analysis.runs import retrieval_frame, stack
from core import run_store
from views.readers import all_evals, all_metrics, comparison, load_images, sources, stamp


def view(runs: list[run_store.Run]) -> None:
    st.caption("Tables as CSV. Every chart also has a toolbar (hover its top right corner) with "
               "Download as PNG, and every table one with Download as CSV.")
    src = sources(runs)
    evals = all_evals(src)
    tables = {
        "run_comparison.csv": ("Run comparison (differing config values, final val metrics)",
                               lambda: comparison(runs).to_csv()),
        "training_metrics.csv": ("Training metrics, long format",
                                 lambda: all_metrics(src).to_csv(index=False)),
        "evaluation_metrics.csv": ("Evaluation metrics, long format", lambda: evals.to_csv(index=False)),
        "image_ranks.csv": ("Per-image rank, top captions and margin, every run",
                            lambda: image_ranks(runs).to_csv(index=False)),
    }
    for name, (title, make) in tables.items():
        st.download_button(f"{title} · {name}", make, file_name=name, mime="text/csv", key=f"export_{name}",
                           icon=":material/download:")
    if not evals.empty:
        st.download_button("Final retrieval chart · final_retrieval.svg",  # drawn when downloaded
                           lambda: svg(charts.retrieval_bars(retrieval_frame(evals))),
                           file_name="final_retrieval.svg", mime="image/svg+xml", icon=":material/download:")


def svg(chart) -> str:
    """A chart as SVG, drawn on the server by vl-convert (no browser needed)."""
    out = io.StringIO()
    chart.save(out, format="svg")
    return out.getvalue()


def image_ranks(runs: list[run_store.Run]) -> pd.DataFrame:
    return stack([load_images(str(r.path), stamp(r)).drop(columns="thumbnail").assign(run=r.key) for r in runs])
