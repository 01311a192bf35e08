"""The Embedding space view: one aligned map (training/projection.py) drawn large, every point of
the picked runs in the browser (views/map_canvas.py), each run's end and step 0 a layer switched
or overlaid on the map's shared axes, coloured by label, outcome, modality or layer. A box dragged
on the map, a clicked point or a clicked legend label selects samples, which get a table with
their ranks in every run of the map, a detail and an export; the map draws their arrows (step 0
to the end) and image-caption lines. Below: each sample's drift, and the modality gap with the
gap-shift probe (views/drift.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

import charts
from analysis import maps
from analysis.compare import validation
from analysis.runs import data_uri, last_eval
from core import run_store
from core.names import label
from views import drift, map_canvas
from views.common import by_key, finished, md
from views.readers import (
    all_evals,
    cached,
    load_map_points,
    load_spaces,
    load_topk,
    load_umap_maps,
    sources,
    stamp,
    sweep_comparisons,
    thumbnail_uris,
)
from views.vega import draw, vega_lite

MAX_RUNS = 6  # runs of one map sent to the browser at once: each adds its end and step 0 as layers
MAP_HEIGHT = 640  # px: one large map
MAX_SELECTION_ROWS, MAX_DRIFT_ROWS = 500, 1_000  # rows a table shows; the export holds every selected sample
SORTS = {  # drift table order: label -> (column, ascending)
    "moved most on the map": ("moved", False), "rank worsened most": ("rank_change", False),
    "rank improved most": ("rank_change", True), "fewest neighbours kept": ("knn_overlap", True),
    "true-pair cosine fell most": ("positive_cosine_change", True),
    "largest cosine distance": ("cosine_distance", False)}
ABOUT_MAPS = (
    "Positions are comparable across the runs of one map: the reference run's end was fitted first, and every "
    "other state (each run's end, and step 0) was fitted with UMAP starting from the reference's places of the "
    "same samples, each state keeping its own neighbours. So an image sits where it sat in the reference unless "
    "its neighbours in that run pulled it away, and an arrow from its step-0 place to its end place says how far "
    "it moved among its neighbours; compare a movement with the sample's floor in the drift table (how far it "
    "moved when the reference was fitted again: UMAP's own noise). A distance on the map means something only "
    "locally: near points are near neighbours in the embedding space, but the gaps between clusters and the axes "
    "have no units.")
HOW_TO = (
    "Every point is drawn: images are circles, captions crosses. Tick the layers to switch runs and steps or "
    "overlay them on the same axes; colour by label (the twenty commonest get a colour, the rest are grey), by "
    "right/wrong at R@1 in the layer's run, by modality, or by layer. Hover a point for its thumbnail, caption, "
    "label and rank. Drag a box, click a point or click a label in the legend to select; the selection gets faint "
    "arrows that brighten from each sample's step-0 place to its end place, and dark lines joining each selected "
    "image to its captions. Wheel to zoom, shift-drag to pan, double-click to clear.")
# ------------------------------------------------------------------------------ maps


@dataclass(frozen=True)
class MapInfo:
    """An aligned map among the picked runs: its runs, the reference first."""

    id: str  # "<sweep>/<map>", or "<run key>" for an older file's own fit
    name: str  # umap.parquet's `map` ("" for an own fit)
    runs: tuple[str, ...]
    reference_known: bool  # False: no comparison names a reference here, the runs are in name order

    @property
    def label(self) -> str:
        if not self.name:
            return f"{self.id} (the run's own fit, an older file)"
        return f"{self.id} (" + ", ".join(k.split("/", 1)[1] for k in self.runs) + ")"


def aligned_maps(runs: list[run_store.Run]) -> list[MapInfo]:
    """The maps the runs have coordinates in: runs of one sweep that share a map name form
    that map; an older file's own fit is a map of its run alone."""
    found: dict[tuple[str, str], list[run_store.Run]] = {}
    for run in runs:
        if run_store.has_umap(run.path):
            for name in load_umap_maps(str(run.path), stamp(run)):
                found.setdefault((run.sweep, name) if name else (run.key, ""), []).append(run)
    maps = [MapInfo(owner, "", (owner,), True) if not name else ordered(owner, name, members)
            for (owner, name), members in found.items()]
    return sorted(maps, key=lambda m: (not m.name, -len(m.runs), m.id))


def ordered(sweep: str, name: str, members: list[run_store.Run]) -> MapInfo:
    """A map with its reference first: the reference of the sweep's comparison of that name
    (sweep.json), else the configuration the map is named after (a map of its own), else none
    (the runs in name order)."""
    group = {r.key: str(r.config.get("group") or r.name) for r in members}
    root = members[0].path.parent.parent
    comparison = next((c for c in sweep_comparisons(root, sweep) if c.get("name") == name), None)
    order = [comparison.get("reference"), *comparison.get("runs", [])] if comparison else [name]
    rank = {g: i for i, g in enumerate(order)}
    keys = sorted(group, key=lambda k: (rank.get(group[k], len(rank)), k))
    return MapInfo(f"{sweep}/{name}", name, tuple(keys), group[keys[0]] == order[0])


def pick_map(maps: list[MapInfo]) -> MapInfo:
    index = {m.id: m for m in maps}
    chosen = st.selectbox("Map", list(index), format_func=lambda i: index[i].label, key="embedding_map",
                          help="One comparison of the sweep file (its reference, then its runs, each by its "
                               "lowest seed), fitted as one aligned map after training.")
    return index[chosen]



def pick_runs(info: MapInfo) -> list[str]:
    return st.multiselect("Runs of this map (each adds its end and its step 0 as layers of the map)", list(info.runs),
                          default=list(info.runs[:MAX_RUNS]), max_selections=MAX_RUNS,
                          key=f"embedding_runs:{info.id}")


# ----------------------------------------------------------------------- pure helpers


def positions(points: pd.DataFrame, ids) -> np.ndarray:
    """Row positions in `points` of the sample ids `ids` that it holds, in the order of `ids`."""
    found = pd.Index(points["sample_id"]).get_indexer(list(ids))
    return found[found >= 0]


EXPORT_COLUMNS = ["run", "step", "seed", "sample_id", "modality", "image_id", "caption", "label", "rank", "outcome",
                  "moved", "umap_x", "umap_y", "x0", "y0"]


def selection_export(ids: list[str], members: list[tuple[str, int | None, pd.DataFrame]]) -> pd.DataFrame:
    """One row per run of the map and selected sample, in the selection's order: run, its last
    step, its seed, and what the selection table shows (rank and outcome at the end, how far the
    sample moved on the map from step 0, its place at the end and at step 0).
    `members`: (run key, seed, load_map_points frame) of each run."""
    frames = []
    for key, seed, points in members:
        rows = points.set_index("sample_id").reindex(pd.Index(ids, name="sample_id")).dropna(subset=["modality"])
        rows = rows.reset_index().assign(run=key, seed=seed)
        frames.append(rows)
    if not frames:
        return pd.DataFrame(columns=EXPORT_COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    out["step"] = out["step"].astype("Int64")
    out["seed"] = out["seed"].astype("Int64")
    return out[EXPORT_COLUMNS]


def export_bytes(frame: pd.DataFrame, kind: str) -> bytes:
    """The frame as a CSV or a Parquet file's bytes."""
    if kind == "csv":
        return frame.to_csv(index=False).encode()
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()



# ------------------------------------------------------------------------- the view


def view(runs: list[run_store.Run]) -> None:
    maps = aligned_maps(finished(runs))
    if not maps:
        st.info("No map coordinates among these runs yet: training/train.py fits the aligned maps once every run of "
                "a comparison has finished (one map per comparison of the sweep file, each configuration by its "
                "lowest seed; a configuration in no comparison gets a map of its own).")
        return
    info = pick_map(maps)
    picked = pick_runs(info)
    if not picked:
        st.info("Pick a run of this map (or several, to switch between them or overlay them).")
        return
    index = by_key(runs)
    if info.name:
        order = "reference first" if info.reference_known else \
            "in name order (no comparison of the sweep names this map's reference)"
        st.caption(f"{ABOUT_MAPS} This map holds {len(info.runs)} run(s), {order}.")
    else:
        st.caption("This map is the run's own fit: its umap.parquet predates aligned maps, so it holds the end of "
                   "training only (no step 0, no arrows), and its positions are comparable with no other run. "
                   "A distance means something only locally.")
    colors = charts.group_colors([str(index[k].config.get("group") or index[k].name) for k in info.runs])
    run_colors = tuple(colors[str(index[k].config.get("group") or index[k].name)] for k in picked)
    args = map_args(sources([index[k] for k in picked]), info.name, run_colors)
    st.caption(HOW_TO)
    value = map_canvas.draw(args, key=f"embedding_map:{info.id}:{'|'.join(picked)}")
    points = {k: shared_points(str(index[k].path), stamp(index[k]), info.name) for k in picked}
    selected, clicked = map_canvas.selection_ids(value, points)
    selection_section(info, picked, index, selected, clicked)
    drift_section(info, picked, index)
    gap_section(picked, index)


@st.cache_resource(max_entries=8, show_spinner=False)
def map_args(src: tuple, map_name: str, colors: tuple) -> dict:
    """map_canvas.payload() of the runs `src` (sources()) in one map, built once per file stamps:
    a resource, so that a rerun neither rebuilds nor copies megabytes of arrays."""
    members = [(key, load_map_points(path, s, map_name), color) for (key, path, s), color in zip(src, colors,
                                                                                                   strict=True)]
    _, path, s = src[0]
    return map_canvas.payload(members, thumbnail_pngs(path, s), MAP_HEIGHT)


@st.cache_resource(max_entries=16, show_spinner=False)
def shared_points(path: str, stamp: str, map_name: str) -> pd.DataFrame:
    """load_map_points() without the copy that st.cache_data makes at every call (the view only
    reads the frame): a rerun of a 250,000-point map would otherwise copy it several times."""
    return load_map_points(path, stamp, map_name)


@cached(max_entries=64)
def space_facts(path: str, stamp: str) -> tuple[int, str | None]:
    """How many embeddings a run holds (step 0 and end) and what the drift table measures of its
    end, in words (maps.measured_note): small, so that a rerun never copies the vectors."""
    start, end = load_spaces(path, stamp)
    size = sum(len(x.image_ids) + len(x.caption_ids) for x in (start, end))
    return size, maps.measured_note(end, maps.FULL_UP_TO)


@st.cache_resource(max_entries=16, show_spinner=False)
def thumbnail_pngs(path: str, stamp: str) -> pd.Series:
    """image_id -> thumbnail PNG bytes of every validation image (only the two columns are read),
    shared, not copied at every call: 50,000 of them are tens of megabytes."""
    samples = validation(run_store.read_samples(path, columns=["modality", "split", "step", "image_id", "thumbnail"]))
    images = samples[samples["modality"] == "image"]
    return pd.Series(images["thumbnail"].to_numpy(), index=pd.Index(images["image_id"], name="image_id"))


# -------------------------------------------------------------------- the selection


def selection_section(info: MapInfo, picked: list[str], index: dict, selected: list[str],
                      clicked: str | None) -> None:
    st.subheader("Selection")
    if not selected:
        st.caption("Drag a box on the map to select the samples in it (in every layer that is on), click a point "
                   "for its detail, or click a label in the legend for all its samples; double-click the map to "
                   "clear.")
        return
    members = [(k, index[k].config.get("seed"), shared_points(str(index[k].path), stamp(index[k]), info.name))
               for k in info.runs]
    table = selection_table(selected, members, index[picked[0]])
    st.caption(f"{len(selected):,} sample(s) selected" + (f"; the first {MAX_SELECTION_ROWS:,} shown" if
                                                          len(selected) > MAX_SELECTION_ROWS else "") +
               f". Ranks at the end of each run of the map; moved: on the map from step 0 to the end in "
               f"{md(picked[0])}.")
    st.dataframe(table.head(MAX_SELECTION_ROWS), hide_index=True, column_config={
        "thumbnail": st.column_config.ImageColumn("image", width="small"),
        "moved": st.column_config.NumberColumn("moved", format="%.2f")})
    def exported(kind: str):  # the files are built when a button is clicked, not on every rerun
        return lambda: export_bytes(selection_export(selected, members), kind)

    left, right = st.columns(2)
    left.download_button("Selection as CSV", data=exported("csv"), file_name="selection.csv", mime="text/csv",
                         on_click="ignore")
    right.download_button("Selection as Parquet", data=exported("parquet"), file_name="selection.parquet",
                          mime="application/vnd.apache.parquet", on_click="ignore")
    if clicked is not None:
        sample_detail(clicked, picked, index)


def selection_table(ids: list[str], members: list[tuple[str, int | None, pd.DataFrame]],
                    run: run_store.Run) -> pd.DataFrame:
    """One row per selected sample: thumbnail, caption, label, how far it moved in `run`, and
    its rank in each run of the map."""
    first = members[0][2]
    rows = first.iloc[positions(first, ids)][["sample_id", "modality", "image_id", "caption", "label"]]
    rows = rows.reset_index(drop=True)
    pngs = thumbnail_pngs(str(run.path), stamp(run))
    rows.insert(0, "thumbnail", [data_uri(pngs.get(i)) for i in rows["image_id"]])

    def column(points: pd.DataFrame, values: np.ndarray) -> np.ndarray:
        where = pd.Index(points["sample_id"]).get_indexer(rows["sample_id"])
        return np.where(where >= 0, values[where], np.nan)

    own = next((p for k, _, p in members if k == run.key), first)
    rows["moved"] = column(own, own["moved"].to_numpy(np.float64))
    for key, _, points in members:
        rows[f"rank · {key}"] = column(points, points["rank"].to_numpy(np.float64))
    return rows


def sample_detail(sample_id: str, picked: list[str], index: dict) -> None:
    """The clicked sample's stored top-k (samples.parquet) in each picked run."""
    st.markdown(f"**Sample detail** · {md(sample_id)}")
    for column, key in zip(st.columns(len(picked)), picked, strict=True):
        run = index[key]
        topk = load_topk(str(run.path), stamp(run))
        if sample_id not in topk.index:
            column.caption(f"{md(key)}: no stored result for this sample.")
            continue
        row = topk.loc[sample_id]
        column.caption(f"{md(key)}: {md(row['caption'])} · rank {row['rank']}")
        column.dataframe(topk_table(row, topk, thumbnail_uris(str(run.path), stamp(run))), hide_index=True,
                         column_config={"thumbnail": st.column_config.ImageColumn("image", width="small"),
                                        "cosine": st.column_config.NumberColumn("cosine", format="%.3f")})


def topk_table(row: pd.Series, topk: pd.DataFrame, thumbs: pd.Series) -> pd.DataFrame:
    """A sample's top-k: the nearest captions of an image, or the nearest images of a caption
    (topk_ids are image ids there), each marked right where it is the true match."""
    ids, scores = list(row["topk_ids"]), list(row["topk_scores"])
    if row["modality"] == "image":
        captions = topk.reindex(ids)
        return pd.DataFrame({"caption": captions["caption"].to_numpy(), "cosine": scores,
                             "right": (captions["image_id"] == row["image_id"]).to_numpy()})
    images = topk[topk["modality"] == "image"].set_index("image_id").reindex(ids)
    return pd.DataFrame({"thumbnail": thumbs.reindex(ids).to_numpy(), "image_id": ids,
                         "caption": images["caption"].to_numpy(), "cosine": scores,
                         "right": [i == row["image_id"] for i in ids]})


# ------------------------------------------------------------------------ drift


def drift_section(info: MapInfo, picked: list[str], index: dict) -> None:
    st.subheader("Drift")
    choices = {f"{k}: step 0 → end": (k,) for k in picked}
    choices |= {f"{picked[0]} end → {k} end": (picked[0], k) for k in picked[1:]}
    left, right = st.columns([3, 2])
    choice = left.radio("Drift of", list(choices), horizontal=True, key=f"embedding_drift:{info.id}")
    between = len(choices[choice]) == 2
    shared = not between and maps.shares_space(index[choices[choice][0]].config)
    sorts = [s for s in SORTS if shared or SORTS[s][0] != "cosine_distance"]
    order = right.selectbox("Sort by", sorts, key="embedding_drift_sort")
    runs = [index[k] for k in choices[choice]]
    try:
        if between:
            table = drift.runs_drift(str(runs[0].path), stamp(runs[0]), str(runs[1].path), stamp(runs[1]), info.name)
        else:
            table = drift.run_drift(str(runs[0].path), stamp(runs[0]), info.name, shared)
        note = space_facts(str(runs[0].path), stamp(runs[0]))[1]
    except ValueError as e:
        st.info(f"No drift for {md(choice)}: {md(e)}")
        return
    st.caption(drift_caption(runs, between, shared, info, note) +
               (f" The first {MAX_DRIFT_ROWS:,} of {len(table):,} rows by “{order}”; click a column to re-sort them."
                if len(table) > MAX_DRIFT_ROWS else ""))
    column, ascending = SORTS[order]
    shown = table.sort_values(column, ascending=ascending, kind="stable", na_position="last").head(MAX_DRIFT_ROWS)
    if not shared:
        shown = shown.drop(columns="cosine_distance")
    st.dataframe(shown, hide_index=True, column_config=drift_columns(between))


def drift_caption(runs: list[run_store.Run], between: bool, shared: bool, info: MapInfo, note: str | None) -> str:
    measured = f" Measured on {note}." if note else ""
    moved = (" Floor: how far the sample moved when the map's reference was fitted again with another seed; a "
             "movement no larger than it is UMAP's noise." if info.name else
             " No step 0 on this map (an older file): moved is empty.")
    if between:
        return (f"Per image and caption, run {md(runs[0].key)}'s end against run {md(runs[1].key)}'s: ranks in each, "
                "the change (negative: better in B), the true pair's cosine in each, the share of its 10 nearest "
                "neighbours of its own modality kept, and how far apart its two places on the map are. Two runs' "
                "heads are two spaces, so no cosine between their vectors." + measured + moved)
    why = ("Cosine distance between a sample's step-0 and end vectors is shown: this run's step 0 and end are one "
           "space (a pretrained CLIP fine-tuned, or a start from another run's weights)." if shared else
           "Cosine distance between a sample's step-0 and end vectors is not shown: this run's projection heads "
           f"started random ({md(runs[0].config.get('model'))}, no init_from), so its step 0 and its end are two "
           "different spaces and a cosine across them means nothing. Neighbours kept needs no shared coordinates.")
    return (f"Per image and caption of {md(runs[0].key)}, from step 0 to the end: how far it moved on the map, its "
            "rank (change: negative is better), its true pair's cosine, and the share of its 10 nearest neighbours "
            "of its own modality it kept. " + why + measured + moved)


def drift_columns(between: bool) -> dict:
    a, b = ("A", "B") if between else ("step 0", "end")
    number = st.column_config.NumberColumn
    return {"moved": number("moved on the map", format="%.2f"),
            "floor": number("floor (UMAP's noise)", format="%.2f",
                            help="How far this sample moved when the map's reference was fitted again with "
                                 "another seed: a movement of the same size is UMAP's noise, not the run's."),
            "rank_start": number(f"rank · {a}", format="%d"),
            "rank_end": number(f"rank · {b}", format="%d"), "rank_change": number("rank change", format="%+d"),
            "positive_cosine_start": number(f"true-pair cosine · {a}", format="%.3f"),
            "positive_cosine_end": number(f"true-pair cosine · {b}", format="%.3f"),
            "positive_cosine_change": number("cosine change", format="%+.3f"),
            "knn_overlap": number("neighbours kept (k=10)", format="%.1f"),
            "cosine_distance": number("cosine distance", format="%.3f")}


# ---------------------------------------------------------------------- the gap


def gap_section(picked: list[str], index: dict) -> None:
    st.subheader("Modality gap")
    st.caption("The gap is the distance between the centroids of the image and the caption embeddings; a cone is "
               "the mean cosine between two distinct samples of one modality (1: all in one direction). The probe "
               "(Liang et al. 2022, “Mind the Gap”) moves both modalities along the gap and re-ranks: shift 1 brings "
               "the centroids together, −1 moves them twice as far apart. Each panel's axis spans its own values, so "
               "a flat line is flat, not squeezed: it says that this measure does not depend on the gap.")
    evals = all_evals(sources([index[k] for k in picked]))
    figures, probes, notes = [], [], []
    # The probe re-ranks every sample at each shift: drawn at once on a set the size of the
    # default sweep's, on request on larger ones (where it dominates the view's first open).
    try:
        sizes = [space_facts(str(index[k].path), stamp(index[k]))[0] for k in picked]
    except ValueError:
        sizes = [0]
    probe = st.toggle("Gap-shift probe", value=max(sizes) <= maps.FULL_UP_TO, key="embedding_gap_probe",
                      help="R@1 both ways and zero-shot accuracy re-measured with the gap closed or widened: "
                           f"on by default up to {maps.FULL_UP_TO:,} embeddings per run, on request above (it "
                           "re-ranks every sample at nine shifts).")
    for key in picked:
        run = index[key]
        try:
            table = drift.gap_figures(str(run.path), stamp(run))
            if probe:
                frame, zero_shot, note = probe_frame(str(run.path), stamp(run))
                probes.append(frame.assign(run=key))
                if not zero_shot:
                    notes.append(f"no zero-shot curve for {md(key)}: its embeddings.parquet holds no class prompts for "
                                 "its labels (runs written before prompts were stored lack them, and a dataset "
                                 "without labels has none)")
                if note:
                    notes.append(f"the probe of {md(key)} ranks {note}")
        except ValueError as e:
            st.info(f"No modality gap for {md(key)}: {md(e)}")
            continue
        temperature = [last_eval(evals, which=w, run=key).get("temperature", np.nan) for w in ("first", "last")]
        figures.append(table.assign(run=key, temperature=temperature, logit_scale=1.0 / np.asarray(temperature)))
    if not figures:
        return
    number = st.column_config.NumberColumn
    st.dataframe(pd.concat(figures, ignore_index=True)[["run", "state", "gap", "image_cone", "text_cone",
                                                        "temperature", "logit_scale"]],
                 hide_index=True, column_config={
                     "gap": number("gap", format="%.3f"), "image_cone": number("image cone", format="%.3f"),
                     "text_cone": number("text cone", format="%.3f"),
                     "temperature": number("temperature", format="%.4f"),
                     "logit_scale": number("logit scale (1/temperature)", format="%.2f")})
    if probes:
        frame = pd.concat(probes, ignore_index=True)
        colors = charts.group_colors(picked)
        measures = list(dict.fromkeys(frame["measure"]))
        for column, measure in zip(st.columns(len(measures)), measures, strict=True):
            draw(probe_spec(frame[frame["measure"] == measure], label(measure), colors), column)
        st.caption(probe_summary(frame))
    if notes:
        text = "; ".join(notes)
        st.caption(text[0].upper() + text[1:] + ".")


@cached(max_entries=64)
def probe_frame(path: str, stamp: str) -> tuple[pd.DataFrame, bool, str | None]:
    probe, zero_shot = drift.gap_probe(path, stamp)
    return probe, zero_shot, maps.measured_note(load_spaces(path, stamp)[1], maps.PROBE_UP_TO)


@cached(max_entries=64)
def probe_spec(frame: pd.DataFrame, title: str, colors: dict[str, str]) -> dict:
    return vega_lite(charts.gap_probe_chart(frame, title, colors))


def probe_summary(frame: pd.DataFrame) -> str:
    """In words: each run's end, how far each measure moves between the stored vectors (shift 0)
    and the gap mostly closed (shift 1)."""
    end = frame[frame["state"] == "end"]
    parts = []
    for (run, measure), rows in end.groupby(["run", "measure"], sort=False):
        at = rows.set_index("shift")["value"]
        if 0.0 in at.index and 1.0 in at.index:
            parts.append(f"{md(run)} {label(measure)} {at[0.0]:.3f} → {at[1.0]:.3f}")
    return ("At the end of training, from the stored vectors to the gap closed (shift 0 → 1): " + "; ".join(parts) +
            ".") if parts else ""
