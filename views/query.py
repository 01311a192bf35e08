"""The Query view: free text against the picked runs. A caption → each run's nearest validation
images by cosine; class prompts (one per line) and an image → each run's zero-shot
probabilities over them, the softmax of cosine / the run's temperature.

The text is embedded by the run's own model, rebuilt from its config.json and its final weights
as training/encode_text.py does: the dashboard's one use of torch (DESIGN.md), imported by this
view only once a query is typed, each run's model loaded once per process (st.cache_resource).
The images are the run's stored embeddings (embeddings.parquet, last step), never recomputed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

import charts
from analysis.runs import last_eval
from core import run_store
from views.common import by_key, finished, md
from views.readers import cached, load_eval, load_spaces, stamp, thumbnail_uris
from views.vega import vega_lite

MAX_QUERY_RUNS = 4  # side by side; a fifth column is too narrow for thumbnails
MODES = ("a caption → nearest images", "class prompts → zero-shot of one image")
DEFAULT_PROMPTS = ("a photo of a cat.", "a photo of a dog.")  # a dataset without labels has no stored prompts
MAX_DEFAULT_PROMPTS = 10  # of the stored class prompts, as a start to edit


def view(runs: list[run_store.Run]) -> None:
    usable = [r for r in finished(runs) if run_store.final_weights_path(r.path).exists()]
    if not usable:
        st.info("No finished run with final weights (final_weights.safetensors) among the picked runs: a query "
                "needs the run's model to embed its text.")
        return
    left_out = [r.key for r in runs if r not in usable]
    if left_out:
        st.caption("Left out (not finished, or no final weights to embed text with): " + md(", ".join(left_out)) + ".")
    index = by_key(usable)
    keys = st.multiselect("Runs to query", list(index), default=list(index)[:MAX_QUERY_RUNS],
                          max_selections=MAX_QUERY_RUNS, key="query_runs")
    if not keys:
        st.info("Pick at least one run above.")
        return
    picked = [index[k] for k in keys]
    mode = st.radio("Query", MODES, horizontal=True, key="query_mode")
    st.caption("The text is embedded by each run's own text tower and head (rebuilt from its config and final "
               "weights, once per dashboard process; the first query of a run takes a few seconds), the images are "
               "the run's stored validation embeddings at its last step.")
    if mode == MODES[0]:
        caption_query(picked)
    else:
        prompt_query(picked)


# ----------------------------------------------------------------- a caption → images


def caption_query(runs: list[run_store.Run]) -> None:
    left, right = st.columns([4, 1])
    text = left.text_input("Caption", placeholder="a red circle", key="query_caption")
    k = right.number_input("Images per run", 1, 50, 5, key="query_k")
    if not text.strip():
        st.caption("Type a caption: each run shows its validation images nearest to it.")
        return
    for column, run in zip(st.columns(len(runs)), runs, strict=True):
        with column:
            st.markdown(f"**{md(run.key)}**")
            vectors = embedded(run, (text.strip(),))
            if vectors is None:
                continue
            images, matrix = query_images(str(run.path), stamp(run))
            table = top_images(images, matrix, vectors[0], int(k), thumbnail_uris(str(run.path), stamp(run)))
            st.dataframe(table, hide_index=True, column_config={
                "thumbnail": st.column_config.ImageColumn("image", width="small"), "image_id": "image id",
                "cosine": st.column_config.NumberColumn("cosine", format="%.3f")})


def top_images(images: pd.DataFrame, matrix: np.ndarray, vector: np.ndarray, k: int,
               thumbs: pd.Series) -> pd.DataFrame:
    """The k images (rows of `images`: image_id, caption, label, in `matrix`'s order) of highest
    cosine with the unit `vector`, best first (ties: the stored order)."""
    cosine = matrix @ np.asarray(vector, dtype=np.float32)
    best = np.argsort(-cosine, kind="stable")[:k]
    top = images.iloc[best].reset_index(drop=True)
    return pd.DataFrame({"rank": np.arange(1, len(best) + 1), "thumbnail": top["image_id"].map(thumbs).to_numpy(),
                         "image_id": top["image_id"], "cosine": cosine[best], "caption": top["caption"],
                         "label": top["label"]})


# --------------------------------------------------------- class prompts → zero-shot


def prompt_query(runs: list[run_store.Run]) -> None:
    first = runs[0]
    stored = stored_prompts(str(first.path), stamp(first)) or list(DEFAULT_PROMPTS)
    left, right = st.columns([3, 2])
    text = left.text_area("Class prompts, one per line", "\n".join(stored[:MAX_DEFAULT_PROMPTS]), height=200,
                          key=f"query_prompts:{first.key}",
                          help="Starts with the first run's stored zero-shot prompts where it has them.")
    images, _ = query_images(str(first.path), stamp(first))
    thumbs = thumbnail_uris(str(first.path), stamp(first))
    captions = dict(zip(images["image_id"], images["caption"], strict=True))
    image_id = right.selectbox("Image", list(captions), format_func=lambda i: f"{i} · {captions[i]}",
                               key="query_image")
    if isinstance(thumbs.get(image_id), str):
        right.image(thumbs[image_id], width=96)
    prompts = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
    if len(prompts) < 2:
        st.info("Type at least two class prompts, one per line.")
        return
    rows = []
    for run in runs:
        row = zero_shot_rows(run, tuple(prompts), image_id)
        if row is not None:
            rows.append(row)
    if not rows:
        return
    frame = pd.concat(rows, ignore_index=True)
    colors = charts.group_colors(list(frame["run"]))
    st.vega_lite_chart(spec=vega_lite(charts.zero_shot_chart(frame, colors)), width="stretch")
    st.dataframe(frame.pivot(index="prompt", columns="run", values="probability").reindex(prompts),
                 column_config={r: st.column_config.NumberColumn(r, format="%.3f") for r in frame["run"].unique()})


def zero_shot_rows(run: run_store.Run, prompts: tuple[str, ...], image_id: str) -> pd.DataFrame | None:
    """run, prompt, cosine and probability of one image under one run (None, with a warning or
    a note, where the run cannot say)."""
    images, matrix = query_images(str(run.path), stamp(run))
    where = np.flatnonzero(images["image_id"].to_numpy() == image_id)
    if not len(where):
        st.caption(f"{md(run.key)}: image {md(image_id)} is not among its validation images.")
        return None
    temperature = last_eval(load_eval(str(run.path), stamp(run))).get("temperature", np.nan)
    if not np.isfinite(temperature) or temperature <= 0:
        st.warning(f"{md(run.key)}: no temperature in its last evaluation, so no probabilities.")
        return None
    vectors = embedded(run, prompts)
    if vectors is None:
        return None
    cosine = vectors @ matrix[where[0]]
    return pd.DataFrame({"run": run.key, "prompt": list(prompts), "cosine": cosine,
                         "probability": zero_shot_probabilities(cosine, temperature)})


def zero_shot_probabilities(cosine: np.ndarray, temperature: float) -> np.ndarray:
    """CLIP's zero-shot classifier: the softmax of the cosines divided by the temperature."""
    logits = np.asarray(cosine, dtype=np.float64) / temperature
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


# ------------------------------------------------------------------------- reads


@cached(max_entries=64)
def query_images(path: str, stamp: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The run's validation images at its last step: image_id, caption, label per row, and
    their stored unit embeddings in the same order."""
    end = load_spaces(path, stamp)[1]
    rows = run_store.read_embeddings(path, with_vectors=False, last_step=True)
    rows = rows[rows["modality"] == "image"].set_index("sample_id").reindex(end.image_ids)
    return rows[["image_id", "caption", "label"]].reset_index(drop=True), end.image_emb


@cached(max_entries=64)
def stored_prompts(path: str, stamp: str) -> list[str]:
    """The zero-shot class prompts a run stored with its embeddings (none in older runs)."""
    rows = run_store.read_embeddings(path, with_vectors=False, last_step=True, prompts=True)
    return rows.loc[rows["modality"] == run_store.PROMPT, "caption"].tolist()


def weights_stamp(run: run_store.Run) -> str:
    """The run's file stamp and its final weights' (mtime, size): a retrained run's model is
    loaded again."""
    file = run_store.final_weights_path(run.path).stat()
    return f"{stamp(run)}|{file.st_mtime_ns}|{file.st_size}"


def embedded(run: run_store.Run, texts: tuple[str, ...]) -> np.ndarray | None:
    """The run's unit embeddings of `texts` (float32, one row each); None, with a warning that
    says why, where its model cannot be rebuilt here."""
    try:
        key = weights_stamp(run)
    except OSError as e:
        st.warning(f"{md(run.key)}: its final weights cannot be read ({md(e)}).")
        return None
    model, problem = load_text_encoder(str(run.path), key)
    if model is None:
        st.warning(f"{md(run.key)}: its model cannot be rebuilt here, so no query: {md(problem)}")
        return None
    return encode_texts(str(run.path), key, texts)


@st.cache_resource(max_entries=8, show_spinner="Loading the run's text tower…")
def load_text_encoder(path: str, stamp: str):
    """(model, None), or (None, why) where the run's model cannot be rebuilt here. Kept per run
    and weights stamp for the process: a failure too, so that an offline hub model is not tried
    again on every keystroke (training.trained_weights.trained_model rebuilds it)."""
    try:
        from training.trained_weights import trained_model

        return trained_model(path), None
    except Exception as e:  # any failure to rebuild (no weights, a hub model offline, a bad config) is shown
        return None, f"{type(e).__name__}: {e}"


@cached(max_entries=512)
def encode_texts(path: str, stamp: str, texts: tuple[str, ...]) -> np.ndarray:
    """The run's embeddings of `texts`, as evaluation computes them (unit rows, float32)."""
    import torch

    model, _ = load_text_encoder(path, stamp)
    with torch.no_grad():
        return model.encode_text(model.tokenize(list(texts))).float().numpy()
