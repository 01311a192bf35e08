"""The views' cached reads of run files, and the frames several views share.

Each reader of one run takes (path, stamp): the stamp (run_store.file_stamp as text) is only
the cache key, so a rewritten file is read again. Readers of several runs take sources(runs),
whose stamps do the same.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.compare import SAMPLE_COLUMNS, query_outcomes, validation
from analysis.runs import comparison_table, data_uri, image_outcomes, last_eval, stack, umap_points
from training import run_store


def cached(max_entries: int):
    """st.cache_data for a frame or chart spec keyed on file stamps, without a spinner (cached
    calls are quick, and a spinner for each would flicker on every rerun)."""
    return st.cache_data(max_entries=max_entries, show_spinner=False)


def stamp(run: run_store.Run) -> str:
    """The run's file stamp as one string: a cache key that is cheap to hash on every rerun."""
    return repr(run_store.file_stamp(run.path))


def sources(runs: list[run_store.Run]) -> tuple:
    """(key, path, file stamp) of each run: the cache key of frames that span several runs."""
    return tuple((r.key, str(r.path), stamp(r)) for r in runs)


# ----------------------------------------------------------------------- one run


@cached(max_entries=512)
def load_metrics(path: str, stamp: str) -> pd.DataFrame:
    return run_store.read_metrics(path)


@cached(max_entries=512)
def load_eval(path: str, stamp: str) -> pd.DataFrame:
    return run_store.read_eval(path)


@cached(max_entries=512)
def load_wise_ft(path: str, stamp: str) -> pd.DataFrame:
    return run_store.read_eval(path, wise_ft=True)


@cached(max_entries=64)
def load_samples(path: str, stamp: str) -> pd.DataFrame:
    """Per-sample results of the validation split, the one the views compare runs on (the test
    split's rows are for reported results: the Compare view and the write-up)."""
    return validation(run_store.read_samples(path))


@cached(max_entries=64)
def load_images(path: str, stamp: str) -> pd.DataFrame:
    """Per validation image: outcome, top captions, margin and thumbnail as a data URI."""
    samples = load_samples(path, stamp)
    out = image_outcomes(samples)
    thumbs = samples[samples["modality"] == "image"]["thumbnail"]
    out.insert(0, "thumbnail", [data_uri(t) for t in thumbs])
    return out


@cached(max_entries=64)
def load_captions(path: str, stamp: str) -> pd.DataFrame:
    """image_id, caption and label of each validation image (load_images without the thumbnails)."""
    return load_images(path, stamp)[["image_id", "caption", "label"]]


@cached(max_entries=64)
def thumbnail_uris(path: str, stamp: str) -> pd.Series:
    """image_id -> thumbnail data URI of every validation image."""
    return load_images(path, stamp).set_index("image_id")["thumbnail"]


@cached(max_entries=256)
def thumbnails(path: str, stamp: str, image_ids: tuple) -> dict[str, str]:
    """image_id -> thumbnail data URI of the given images that have one, in the given order."""
    uris = thumbnail_uris(path, stamp).reindex(list(image_ids))
    return {i: t for i, t in uris.items() if isinstance(t, str) and t}


@cached(max_entries=512)
def load_ranks(path: str, stamp: str) -> pd.Series:
    """image_id -> rank of the image's first right caption (small: what other views join on)."""
    samples = validation(run_store.read_samples(path, columns=["modality", "split", "step", "image_id", "rank"]))
    return samples[samples["modality"] == "image"].set_index("image_id")["rank"]


@cached(max_entries=512)
def load_compared(path: str, stamp: str) -> pd.DataFrame:
    """The per-sample columns that comparisons read (ranks, ties, zero-shot outcomes; no
    thumbnails or top-k lists, which are most of the file)."""
    return run_store.read_samples(path, columns=SAMPLE_COLUMNS)


@cached(max_entries=512)
def load_outcomes(path: str, stamp: str) -> pd.DataFrame:
    """analysis.compare.query_outcomes of a run: one row per metric and query."""
    return query_outcomes(load_compared(path, stamp))


@cached(max_entries=64)
def load_points(path: str, stamp: str) -> pd.DataFrame:
    """UMAP points of the last evaluated step, with rank and right/wrong at R@1."""
    return umap_points(run_store.read_embeddings(path, with_vectors=False, last_step=True),
                       run_store.read_umap(path),
                       validation(run_store.read_samples(path, columns=["modality", "split", "step", "sample_id",
                                                                         "rank"]))[["modality", "sample_id", "rank"]])


@cached(max_entries=16)
def load_vectors(path: str, stamp: str):
    """Rows and vectors (float32 matrix) of the last evaluated step's embeddings."""
    return run_store.read_last_vectors(path)


# ------------------------------------------------------------------ several runs


@cached(max_entries=64)
def all_metrics(src: tuple) -> pd.DataFrame:
    """metrics.parquet of several runs, stacked with a `run` column."""
    return stack([load_metrics(path, s).assign(run=key) for key, path, s in src])


@cached(max_entries=64)
def all_evals(src: tuple) -> pd.DataFrame:
    """eval.parquet of several runs, stacked with a `run` column."""
    return stack([load_eval(path, s).assign(run=key) for key, path, s in src])


@cached(max_entries=64)
def all_wise_ft(src: tuple) -> pd.DataFrame:
    """The WiSE-FT rows of several runs' eval.parquet (one per mixing ratio), with a `run` column."""
    return stack([load_wise_ft(path, s).assign(run=key) for key, path, s in src])


def comparison(runs: list[run_store.Run]) -> pd.DataFrame:
    """One row per run: state, the config values that differ, final validation metrics."""
    return comparison_of(sources(runs), tuple(r.state for r in runs), runs)


@cached(max_entries=64)
def comparison_of(src: tuple, states: tuple, _runs: list[run_store.Run]) -> pd.DataFrame:
    """comparison(); `_runs` is left out of the cache key: the file stamps in `src` cover
    their config.json and status.json, and `states` what the status means now."""
    evals = all_evals(src)
    return comparison_table([
        {"run": r.key, "state": state, "config": r.config, "final": last_eval(evals, run=r.key)}
        for r, state in zip(_runs, states, strict=True)])
