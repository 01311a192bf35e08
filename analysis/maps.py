"""The aligned maps read for people: a run's points in one map (where each sample lies at step 0
and at the end, its rank, its floor), each sample's drift between two states (a run's step 0
and its end, or two runs' ends), and the modality gap with Liang et al.'s gap-shift probe. The
dashboard's Embedding space view and the write-up both call these (analysis.geometry does the
arithmetic).

A state's retrieval ranks and neighbours cost a similarity block per chunk of queries: at 5,000
images and 25,000 captions one state's ranks take seconds and its caption neighbours tens of
seconds on two cores. So a state larger than FULL_UP_TO samples is measured on a fixed sample
of its images with all their captions (the same images in every state and run: they are picked
by a hash of their sample id), and the view says so.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from analysis.geometry import Space, drift, gap_shift, map_movement, modality_gap, space_from_frame
from analysis.runs import umap_points
from core import run_store

FULL_UP_TO = 4_000  # images + captions measured in full (the default sweep's 1,678 are); a drift table of that
# many takes about half a second on two cores
PROBE_UP_TO = 2_400  # the gap-shift probe ranks every sample at each of its 9 shifts, at step 0 and the end
SHIFTS = tuple(np.round(np.linspace(-1.0, 1.0, 9), 2))  # from widening the gap to closing most of it
NEIGHBOURS = 10  # kNN overlap's k, as the issue asks; clipped to n - 1 on tiny sets
# training.models.BUILT_IN, copied: importing training.models would import torch into the readers.
RANDOM_HEADS = ("offline-default", "tiny-clip", "random-clip-vit-b32")


def shares_space(config: dict) -> bool:
    """Whether a run's step 0 and its end are one space, so that a cosine across them means
    something: a pretrained CLIP (its own projections) fine-tuned, or a run that starts from
    another run's trained weights (init_from). The built-in models start from random heads."""
    return bool(config.get("init_from")) or str(config.get("model", RANDOM_HEADS[0])) not in RANDOM_HEADS


def sample_space(space: Space, up_to: int) -> Space:
    """The whole space when it holds up to `up_to` images and captions; else the images first in
    the order of a hash of their sample id, with all their captions, as many as fit."""
    if len(space.image_ids) + len(space.caption_ids) <= up_to:
        return space
    order = np.argsort(pd.util.hash_array(space.image_ids), kind="stable")
    per_image = np.bincount(space.text_to_image, minlength=len(space.image_ids))
    fits = np.cumsum(1 + per_image[order]) <= up_to
    images = np.sort(order[fits] if fits.any() else order[:1])
    new_index = np.full(len(space.image_ids), -1, dtype=np.int64)
    new_index[images] = np.arange(len(images))
    captions = np.flatnonzero(new_index[space.text_to_image] >= 0)
    return replace(space, image_ids=space.image_ids[images], image_emb=space.image_emb[images],
                   image_labels=space.image_labels[images], caption_ids=space.caption_ids[captions],
                   text_emb=space.text_emb[captions], text_to_image=new_index[space.text_to_image[captions]])


def measured_note(space: Space, up_to: int) -> str | None:
    """What sample_space() keeps of `space`, in words (None: all of it)."""
    kept = sample_space(space, up_to)
    if kept is space:
        return None
    return (f"{len(kept.image_ids):,} of {len(space.image_ids):,} images with their {len(kept.caption_ids):,} "
            f"captions (a fixed sample by sample id; ranks are among them, so they are lower than over the whole "
            f"validation set)")


def movement(start: pd.DataFrame, end: pd.DataFrame) -> pd.DataFrame:
    """analysis.geometry.map_movement between two runs' map points (map_points frames): each
    sample's distance from its end place in `start` to its end place in `end`."""
    begin = start[["sample_id", "modality", "umap_x", "umap_y"]].rename(columns={"umap_x": "x", "umap_y": "y"})
    finish = end[["sample_id", "modality", "umap_x", "umap_y"]].rename(columns={"umap_x": "x", "umap_y": "y"})
    if begin.empty or finish.empty:
        return pd.DataFrame({"sample_id": pd.Series(dtype=object), "modality": pd.Series(dtype=object),
                             "moved": pd.Series(dtype=float)})
    return map_movement(begin, finish)


def describe_drift(table: pd.DataFrame, points: pd.DataFrame, moved: pd.DataFrame) -> pd.DataFrame:
    """A drift table with each sample's caption, label and image, how far it moved on the map,
    and its floor (how far it moves when the map's reference is refitted: UMAP's own noise)."""
    about = points[["sample_id", "image_id", "caption", "label", "floor"]]
    table = table.merge(about, on="sample_id", how="left").merge(moved[["sample_id", "moved"]], on="sample_id",
                                                                  how="left")
    first = ["sample_id", "modality", "image_id", "caption", "label", "moved", "floor"]
    return table[first + [c for c in table.columns if c not in first]]


MAP_POINT_COLUMNS = ["sample_id", "modality", "image_id", "caption", "label", "step", "umap_x", "umap_y", "rank",
                     "outcome", "x0", "y0", "moved", "floor"]


def map_points(coords: pd.DataFrame, meta: pd.DataFrame, ranks: pd.DataFrame) -> pd.DataFrame:
    """One row per validation image and caption of a run in one map (MAP_POINT_COLUMNS): its place
    at the run's end (umap_x, umap_y) and at its step 0 (x0, y0; NaN in an older file, which holds
    the end only), its rank and right/wrong at R@1 at the end (`ranks`: sample_id, modality,
    rank), how far it moved from step 0 to the end (`moved`, NaN without a step 0), and its
    floor. `coords`: the run's rows of the map; `meta`: its last step's embedding rows without
    vectors."""
    if coords.empty:
        return pd.DataFrame(columns=MAP_POINT_COLUMNS)
    steps = coords["step"]
    end = coords[steps == steps.max()]
    points = umap_points(meta, end.drop(columns=["map"], errors="ignore"), ranks[["sample_id", "modality", "rank"]])
    start = coords[steps == steps.min()] if steps.nunique() > 1 else end.iloc[:0]
    start = start[["sample_id", "modality", "umap_x", "umap_y"]].rename(columns={"umap_x": "x0", "umap_y": "y0"})
    if "floor" not in points.columns:
        points["floor"] = np.nan
    points = points.merge(start, on=["sample_id", "modality"], how="left")
    points["moved"] = np.hypot(points["umap_x"].to_numpy(np.float64) - points["x0"].to_numpy(np.float64),
                               points["umap_y"].to_numpy(np.float64) - points["y0"].to_numpy(np.float64))
    return points[MAP_POINT_COLUMNS]


def run_drift(start: Space, end: Space, points: pd.DataFrame, shared: bool) -> pd.DataFrame:
    """A run's drift from its step 0 to its end (analysis.geometry.drift, cosine distance only
    where `shared`), with how far each sample moved on the map (`points`: map_points)."""
    table = drift(sample_space(start, FULL_UP_TO), sample_space(end, FULL_UP_TO), shared_space=shared, k=NEIGHBOURS)
    return describe_drift(table, points, points[["sample_id", "moved"]])


def runs_drift(end_a: Space, end_b: Space, points_a: pd.DataFrame, points_b: pd.DataFrame) -> pd.DataFrame:
    """From run A's end to run B's end: ranks (start: A, end: B), neighbours kept, and how far
    each sample lies between its places in the two runs on the map. Two runs' heads are two
    spaces, so no cosine distance."""
    table = drift(sample_space(end_a, FULL_UP_TO), sample_space(end_b, FULL_UP_TO), shared_space=False, k=NEIGHBOURS)
    return describe_drift(table, points_a, movement(points_a, points_b))


def gap_table(start: Space, end: Space) -> pd.DataFrame:
    """The modality gap and each modality's cone (mean cosine of distinct pairs) at step 0 and at
    the end, over every validation sample (a mean: cheap at any size)."""
    return pd.DataFrame([{"state": name, **modality_gap(space)} for name, space in (("step 0", start), ("end", end))])


def run_spaces(path) -> tuple[Space, Space]:
    """A run's validation embeddings at step 0 and at its last step as Spaces, with the zero-shot
    prompts where the run stored them (ValueError: no embeddings)."""
    frame = run_store.read_embeddings(path, prompts=True)
    if frame.empty:
        raise ValueError("no embeddings: they are written when a run finishes")
    return space_from_frame(frame, step=int(frame["step"].min())), space_from_frame(frame)



def gap_probe(start: Space, end: Space) -> tuple[pd.DataFrame, bool]:
    """analysis.geometry.gap_shift at step 0 and at the end over SHIFTS, long format (state,
    shift, gap, measure, value), and whether zero-shot accuracy is in it (the run stored its
    class prompts, and every image's label has one)."""
    frames, zero_shot = [], True
    for name, space in (("step 0", start), ("end", end)):
        space = sample_space(space, PROBE_UP_TO)
        try:
            probe = gap_shift(space, shifts=SHIFTS)
        except ValueError:  # an image label without a prompt: the retrieval curves still say what they say
            probe = gap_shift(replace(space, prompt_labels=[], prompt_emb=np.zeros((0, space.dim))), shifts=SHIFTS)
        zero_shot &= bool(probe["zero_shot_accuracy"].notna().any())
        frames.append(probe.assign(state=name))
    probe = pd.concat(frames, ignore_index=True)
    measures = ["i2t_R@1", "t2i_R@1"] + (["zero_shot_accuracy"] if zero_shot else [])
    return probe.melt(id_vars=["state", "shift", "gap"], value_vars=measures, var_name="measure"), zero_shot
