"""The views' cached reads of run files, and the frames several views share.

Each reader of one run takes (path, stamp): the stamp (run_store.file_stamp as text) is only
the cache key, so a rewritten file is read again. Readers of several runs take sources(runs),
whose stamps do the same.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from analysis import results
from analysis.compare import SAMPLE_COLUMNS, query_outcomes, validation
from analysis.geometry import Space
from analysis.maps import map_points, run_spaces
from analysis.runs import comparison_table, data_uri, image_outcomes, last_eval, stack
from core import run_store


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
    """image_id -> thumbnail data URI of every validation image (only the two columns are read)."""
    samples = validation(run_store.read_samples(path, columns=["modality", "split", "step", "image_id", "thumbnail"]))
    images = samples[samples["modality"] == "image"]
    return pd.Series([data_uri(t) for t in images["thumbnail"]], index=pd.Index(images["image_id"], name="image_id"),
                     name="thumbnail")


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


@cached(max_entries=16)
def load_vectors(path: str, stamp: str):
    """Rows and vectors (float32 matrix) of the last evaluated step's embeddings."""
    return run_store.read_last_vectors(path)


@cached(max_entries=256)
def load_umap_maps(path: str, stamp: str) -> list[str]:
    """The aligned maps a run has coordinates in ("" for an older file's own fit)."""
    return run_store.umap_maps(path)


@cached(max_entries=64)
def load_map_points(path: str, stamp: str, map_name: str) -> pd.DataFrame:
    """A run's points in one aligned map (analysis.maps.map_points)."""
    return map_points(run_store.read_umap(path, map_name),
                      run_store.read_embeddings(path, with_vectors=False, last_step=True),
                      load_sample_ranks(path, stamp))


@cached(max_entries=64)
def load_sample_ranks(path: str, stamp: str) -> pd.DataFrame:
    """sample_id, modality, rank and true-pair cosine of every validation image and caption at
    the run's last evaluation."""
    columns = ["modality", "split", "step", "sample_id", "rank", "positive_cosine"]
    return validation(run_store.read_samples(path, columns=columns))[["sample_id", "modality", "rank",
                                                                      "positive_cosine"]].reset_index(drop=True)


@cached(max_entries=64)
def load_topk(path: str, stamp: str) -> pd.DataFrame:
    """Per validation image and caption (indexed by sample_id): image_id, caption, rank, and its
    stored top-k (the captions of an image, the images of a caption) with their cosines."""
    columns = ["modality", "split", "step", "sample_id", "image_id", "caption", "rank", "topk_ids", "topk_scores"]
    return validation(run_store.read_samples(path, columns=columns)).set_index("sample_id")


@cached(max_entries=16)
def load_spaces(path: str, stamp: str) -> tuple[Space, Space]:
    """The run's validation embeddings at step 0 and at its last step as analysis.geometry
    Spaces, with the zero-shot prompts where the run stored them (ValueError: no embeddings)."""
    return run_spaces(path)


def load_results(root: str, sweep: str) -> dict[str, pd.DataFrame]:
    """The results step's tables of a sweep (analysis.results.load: computed and written where
    missing or older than the runs), cached until a run file of the sweep changes."""
    runs = tuple(sorted(stamp(r) for r in run_store.list_runs(root) if r.sweep == sweep))
    return _results(root, sweep, runs)


@cached(max_entries=8)
def _results(root: str, sweep: str, stamps: tuple) -> dict[str, pd.DataFrame]:
    loaded = results.load(root, sweep)
    return {name: getattr(loaded, name) for name in results.TABLES}


def sweep_comparisons(root: Path, sweep: str) -> list[dict]:
    """The comparisons (name, reference, runs, factor, note) of a sweep's sweep.json."""
    try:
        mtime = (Path(root) / sweep / run_store.SWEEP_SUMMARY).stat().st_mtime_ns
    except OSError:
        return []
    return _comparisons(str(root), sweep, mtime)


@cached(max_entries=64)
def _comparisons(root: str, sweep: str, mtime: int) -> list[dict]:
    return [c for c in run_store.read_sweep_summary(root, sweep).get("comparisons") or [] if isinstance(c, dict)]


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
