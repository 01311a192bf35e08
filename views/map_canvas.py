"""The Embedding space map: a Streamlit component (views/map_component/index.html) that draws
every point of the picked runs of one aligned map with WebGL, one large map where each run's end
and its step 0 are layers switched or overlaid on shared axes. Colour (label, outcome, modality,
layer), hover (thumbnail, caption, label, rank), zoom and the selection's arrows and
image-caption lines all happen in the browser; a dragged box, a clicked point or a clicked
legend label comes back as the component's value, which selection_ids() turns into sample ids.

Why a component of our own (bench/map_libraries.py measures the choice): Vega-Lite draws
points as canvas paths, seconds per 100,000; Streamlit's pydeck chart has no box selection and
sends its points as JSON; Embedding Atlas loads DuckDB-WASM from a CDN, so it shows nothing
offline, and pulls pandas 3 and an LLM client into the environment. Here the points travel as
binary arrays (bytes arguments reach the page as typed arrays), and a rerun that sends the same
data again is not decoded again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit.components.v1 as components

import charts

FRONTEND = Path(__file__).with_name("map_component")
TOP_LABELS = len(charts.PALETTE)  # the palette's twenty colours are told apart; the rest of the labels are "other"
THUMBNAILS_UP_TO = 5_000  # images whose thumbnail is sent (COCO's validation set): each is about a kilobyte
NO_LABEL = 65_535  # a label code that means none (codes are uint16)
END, START = "end", "step 0"


def ids_in_box(points: pd.DataFrame, box: dict) -> list[str]:
    """The sample ids of `points` (sample_id, umap_x, umap_y) inside a box {"umap_x": [a, b],
    "umap_y": [c, d]} (either end first, edges inside); [] for no box."""
    if not box or "umap_x" not in box or "umap_y" not in box:
        return []
    (x0, x1), (y0, y1) = sorted(map(float, box["umap_x"])), sorted(map(float, box["umap_y"]))
    x, y = points["umap_x"].to_numpy(np.float64), points["umap_y"].to_numpy(np.float64)
    inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    return points["sample_id"].to_numpy()[inside].tolist()


def layer_key(run: str, step: str) -> str:
    return f"{run}|{step}"


def samples_of(members: list[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """Every sample of the runs' map points (analysis.maps.map_points frames), once: its id,
    modality, image, caption and label, in the first run's order, then the others' new ones."""
    columns = ["sample_id", "modality", "image_id", "caption", "label"]
    frames = [points[columns] for _, points in members]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True).drop_duplicates("sample_id").reset_index(drop=True)


def label_order(labels: pd.Series) -> list[str]:
    """The labels by how many samples carry them (ties by name): the legend's order."""
    counts = labels.dropna().astype(str)
    counts = counts[counts != ""].value_counts()
    return sorted(counts.index, key=lambda v: (-counts[v], v))


def payload(members: list[tuple[str, pd.DataFrame, str]], thumbnails: pd.Series, height: int) -> dict:
    """The component's arguments for the runs `members` (run key, map points, colour), the first
    run's end shown at first: JSON `meta` and binary arrays (float32 places per layer and sample,
    NaN where a layer lacks the sample; uint8 modality; uint16 label codes; int32 image row of
    each sample, ranks per run, thumbnail byte ranges) and the captions as JSON bytes.
    `thumbnails`: image_id -> PNG bytes; the images first in the order of a hash of their sample
    id get theirs, up to THUMBNAILS_UP_TO."""
    samples = samples_of([(k, p) for k, p, _ in members])
    n = len(samples)
    index = pd.Index(samples["sample_id"])
    names = label_order(samples["label"])
    codes = pd.Index(names).get_indexer(samples["label"].astype(object).where(samples["label"].notna(), None))
    is_image = (samples["modality"] == "image").to_numpy()
    image_rows = pd.Index(samples["image_id"].to_numpy()[is_image]).get_indexer(samples["image_id"])
    image_of = np.where(image_rows >= 0, np.flatnonzero(is_image)[np.maximum(image_rows, 0)], -1)

    layers, xy, ranks = [], [], np.full((len(members), n), -1, dtype=np.int32)
    for r, (key, points, colour) in enumerate(members):
        rows = index.get_indexer(points["sample_id"])
        rank = points["rank"].to_numpy(np.float64)
        ranks[r, rows] = np.where(np.isfinite(rank), rank, -1).astype(np.int32)
        step = int(points["step"].max()) if len(points) else 0
        places = {END: ("umap_x", "umap_y", f"{key} · end (step {step})", colour),
                  START: ("x0", "y0", f"{key} · step 0", lighter(colour))}
        start_layer = None
        for name in (END, START):
            x, y, title, layer_colour = places[name]
            if name == START and not points[x].notna().any():
                continue
            grid = np.full((n, 2), np.nan, dtype=np.float32)
            grid[rows, 0], grid[rows, 1] = points[x].to_numpy(np.float32), points[y].to_numpy(np.float32)
            xy.append(grid)
            if name == START:
                start_layer = len(layers)
            layers.append({"key": layer_key(key, name), "run": r, "step": name, "title": title,
                           "color": layer_colour, "on": r == 0 and name == END, "start_layer": None})
        if start_layer is not None:
            layers[start_layer - 1]["start_layer"] = start_layer

    thumb_at, blob = thumbnail_ranges(samples, thumbnails)
    text = json.dumps({"sample_id": samples["sample_id"].astype(str).tolist(),
                       "caption": samples["caption"].fillna("").astype(str).tolist()}).encode()
    arrays = {"xy": (np.stack(xy) if xy else np.zeros((0, n, 2), np.float32)).tobytes(),
              "modality": (~is_image).astype(np.uint8).tobytes(),
              "labels": np.where(codes >= 0, codes, NO_LABEL).astype(np.uint16).tobytes(),
              "image_of": image_of.astype(np.int32).tobytes(), "ranks": ranks.tobytes(),
              "thumb_at": thumb_at.tobytes(), "thumbs": blob, "text": text}
    digest = hashlib.sha1()
    for value in arrays.values():
        digest.update(value)
    meta = {"n": n, "version": digest.hexdigest()[:16], "layers": layers, "label_names": names,
            "label_colors": charts.PALETTE[:min(TOP_LABELS, len(names))], "height": height}
    return {"meta": meta, **arrays}


def thumbnail_ranges(samples: pd.DataFrame, thumbnails: pd.Series) -> tuple[np.ndarray, bytes]:
    """(start, end) byte offsets of each sample's own thumbnail in one blob (-1: none), for up to
    THUMBNAILS_UP_TO images, the first in the order of a hash of their sample id."""
    at = np.full((len(samples), 2), -1, dtype=np.int32)
    rows = np.flatnonzero((samples["modality"] == "image").to_numpy())
    rows = rows[np.argsort(pd.util.hash_array(samples["sample_id"].to_numpy(dtype=object)[rows]), kind="stable")]
    pngs = thumbnails.reindex(samples["image_id"].to_numpy()[rows]).to_numpy()
    parts, offset = [], 0
    for row, png in zip(rows, pngs, strict=True):
        if len(parts) == THUMBNAILS_UP_TO:
            break
        if isinstance(png, bytes | bytearray) and png:
            at[row] = offset, offset + len(png)
            parts.append(bytes(png))
            offset += len(png)
    return at, b"".join(parts)


def lighter(colour: str) -> str:
    """A colour halfway to white: a run's step 0 beside its end."""
    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{(c + 255) // 2:02x}" for c in rgb)


def draw(args: dict, key: str) -> dict:
    """The map; returns the last selection the user made on it ({} for none)."""
    # Declared here, in the script run: Streamlit registers a component only when it is declared
    # with a run's context, and the dashboard (st.App) imports its views before any run.
    component = components.declare_component("embedding_map", path=str(FRONTEND))
    return component(**args, key=key, default={}) or {}


def selection_ids(value: dict, members: dict[str, pd.DataFrame]) -> tuple[list[str], str | None]:
    """The sample ids a map selection holds and the clicked sample, from the component's value:
    {"box": {"umap_x": [a, b], "umap_y": [c, d]}, "layers": [layer keys on]} (the samples inside
    the box in any of those layers, in layer order), {"label": name} (every sample of that
    label), {"pick": sample_id} or {} (none). `members`: run key -> its map points."""
    if value.get("pick") is not None:
        known = any((p["sample_id"] == value["pick"]).any() for p in members.values())
        return ([value["pick"]], value["pick"]) if known else ([], None)
    if value.get("label") is not None:
        samples = samples_of(list(members.items()))
        return samples.loc[samples["label"].astype(str) == str(value["label"]), "sample_id"].tolist(), None
    box, found = value.get("box"), {}
    for layer in value.get("layers") or [] if box else []:
        run, _, step = layer.partition("|")
        if run not in members:
            continue
        points = members[run]
        if step == START:
            points = points[["sample_id", "x0", "y0"]].rename(columns={"x0": "umap_x", "y0": "umap_y"})
        found.update(dict.fromkeys(ids_in_box(points, box)))
    return list(found), None
