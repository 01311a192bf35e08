"""The Embedding space view: a UMAP of each picked run's validation embeddings, side by side."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import charts
from analysis.names import COLOR_BY
from analysis.runs import label_list, last_eval, pair_lines
from training import run_store
from views.common import by_key, md
from views.readers import all_evals, cached, load_points, sources, stamp, thumbnail_uris
from views.vega import draw, vega_lite

MAX_UMAP_RUNS = 4  # side by side, a fifth chart is too narrow to read
UMAP_COLUMNS = ["umap_x", "umap_y", "modality", "label", "caption", "rank", "outcome", "image"]  # what is drawn
THUMBNAIL_TOOLTIPS_UP_TO = 2000  # points per chart; above this the data URIs slow the page down


def view(runs: list[run_store.Run]) -> None:
    keys = [r.key for r in runs]
    mapped = [r.key for r in runs if run_store.has_umap(r.path)]  # train.py maps one seed per configuration
    picked = st.multiselect("Runs side by side (up to four)", keys, default=(mapped or keys)[:2],
                            max_selections=MAX_UMAP_RUNS,
                            help="train.py fits a UMAP for one seed of each configuration (its lowest).")
    if not picked:
        st.info("Pick at least one run above.")
        return
    index = by_key(runs)
    src = sources([index[k] for k in picked])
    labels = umap_labels(src)
    color_by, line_label, thumbs = embedding_controls(labels)
    st.caption("UMAP of each run's validation embeddings after its last step: images (circles) and "
               "captions (crosses) in one joint fit. Distances are only meaningful locally; each "
               "run has its own fit, so compare shapes, not positions. Hover a point for its caption.")
    evals = all_evals(src)
    for column, key in zip(st.columns(len(picked)), picked, strict=True):
        with column:
            embedding_panel(index[key], evals, color_by, labels, line_label, thumbs)


def embedding_controls(labels: list[str]) -> tuple[str, str | None, bool]:
    """Colouring, the label whose pairs get lines, thumbnails in tooltips."""
    left, mid, right = st.columns([3, 3, 2])
    color_by = left.radio("Colour by", list(COLOR_BY), horizontal=True)
    line_label = mid.selectbox("Join each image to its captions for label", ["(none)", *labels])
    thumbs = right.checkbox("Thumbnails in tooltips", value=True,
                            help=f"Only for charts of up to {THUMBNAIL_TOOLTIPS_UP_TO} points, which stay fast.")
    return color_by, None if line_label == "(none)" else line_label, thumbs


@cached(max_entries=64)
def umap_labels(src: tuple) -> list[str]:
    """The labels of the UMAP points of several runs (one legend for every panel)."""
    return label_list(v for _, path, s in src for v in load_points(path, s)["label"])


def embedding_panel(run: run_store.Run, evals: pd.DataFrame, color_by: str, labels: list[str],
                    line_label: str | None, thumbs: bool) -> None:
    key = run.key
    final, first = last_eval(evals, run=key), last_eval(evals, which="first", run=key)
    gap = final.get("modality_gap", float("nan"))
    change = gap - first.get("modality_gap", float("nan"))
    st.metric(f"modality gap · {md(key)}", f"{gap:.3f}", delta=f"{change:+.3f} since step 0", delta_color="off",
              help="Distance between the centroids of the image and the caption embeddings "
                   "(0: the two clouds are centred on each other).")
    spec = umap_spec(str(run.path), stamp(run), key, color_by, tuple(labels), line_label, thumbs)
    if spec is None:
        st.info("No UMAP coordinates for this run: training/train.py fits them once every run of its sweep has "
                "finished, for one seed of each configuration (its lowest).")
        return
    draw(spec)


@cached(max_entries=128)
def umap_spec(path: str, stamp: str, key: str, color_by: str, labels: tuple, line_label: str | None,
              thumbs: bool) -> dict | None:
    """One run's UMAP chart (None: no coordinates yet); thumbnails ride along only on small charts."""
    points = load_points(path, stamp)
    if points.empty:
        return None
    if thumbs and len(points) <= THUMBNAIL_TOOLTIPS_UP_TO:
        points = points.assign(image=points["image_id"].map(thumbnail_uris(path, stamp)))
    lines = pair_lines(points, line_label) if line_label else None
    title = f"{key} (step {int(points['step'].max())})"
    points = points[[c for c in UMAP_COLUMNS if c in points.columns]]  # only what is drawn travels
    return vega_lite(charts.umap_chart(points, color_by, title, list(labels), lines))
