"""The Similarity matrix view: image-caption cosines of run A, and of run B minus run A."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import charts
from analysis.runs import cosine_difference, cosine_matrix, label_list
from core import run_store
from views.common import by_key, finished
from views.readers import cached, load_captions, load_vectors, sources, stamp, thumbnails
from views.vega import draw, vega_lite

MAX_MATRIX = 20  # beyond this the heatmap's labels no longer fit


def view(runs: list[run_store.Run]) -> None:
    done = finished(runs)
    if not done:
        st.info("None of the selected runs has embeddings yet (they are written when a run finishes).")
        return
    index = by_key(done)
    a, b, ids = matrix_controls(done, load_captions(str(done[0].path), stamp(done[0])))
    if not ids:
        st.info("Pick some images above.")
        return
    shown = thumbnails(str(index[a].path), stamp(index[a]), tuple(ids))
    st.image(list(shown.values()), caption=list(shown), width=72)
    run_b = sources([index[b]])[0] if b else None
    spec_a, spec_diff, export = matrix_charts(sources([index[a]])[0], run_b, tuple(ids))
    columns = st.columns(2 if b else 1)
    draw(spec_a, columns[0])
    if spec_diff is not None:
        draw(spec_diff, columns[1])
    st.caption("Each image against the first caption of every chosen image, after each run's last step. "
               "Outlined cells are true pairs: a good run makes them the brightest of their row.")
    st.download_button("Download these cosines (CSV)", lambda: export.to_csv(index=False),
                       file_name="cosine_matrix.csv", mime="text/csv", icon=":material/download:")


def matrix_controls(runs: list[run_store.Run], images: pd.DataFrame) -> tuple[str, str | None, list[str]]:
    """Run A, optional run B, and up to twenty of the validation `images`."""
    keys = [r.key for r in runs]
    c1, c2, c3 = st.columns(3)
    a = c1.selectbox("Run A", keys, key="matrix_a")
    b = c2.selectbox("Run B (for the difference B − A)", ["(none)", *[k for k in keys if k != a]], key="matrix_b")
    label = c3.selectbox("Label", ["(all labels)", *label_list(images["label"])], key="matrix_label")
    if label != "(all labels)":
        images = images[images["label"] == label]
    captions = dict(zip(images["image_id"], images["caption"], strict=True))
    ids = st.multiselect(f"Images (up to {MAX_MATRIX})", list(captions), default=list(captions)[:10],
                         max_selections=MAX_MATRIX, format_func=lambda i: f"{i}: {captions[i]}")
    return a, None if b == "(none)" else b, ids


@cached(max_entries=64)
def matrix_charts(a: tuple, b: tuple | None, ids: tuple) -> tuple[dict, dict | None, pd.DataFrame]:
    """The heatmap of run A, that of B minus A (None without a B), and the cosines of both
    runs as one frame with a `run` column. a, b: (key, path, file stamp) of a run."""
    (key_a, path_a, stamp_a), ids = a, list(ids)
    mat_a = cosine_matrix(*load_vectors(path_a, stamp_a), ids)
    spec_a = vega_lite(charts.cosine_heatmap(mat_a, f"Cosine similarity, {key_a}"))
    if b is None:
        return spec_a, None, mat_a.assign(run=key_a)
    key_b, path_b, stamp_b = b
    mat_b = cosine_matrix(*load_vectors(path_b, stamp_b), ids)
    diff = cosine_difference(mat_a, mat_b)
    spec_diff = vega_lite(charts.cosine_heatmap(diff, f"{key_b} minus {key_a}", difference=True))
    return spec_a, spec_diff, pd.concat([mat_a.assign(run=key_a), mat_b.assign(run=key_b)], ignore_index=True)
