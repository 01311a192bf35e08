"""The Embedding space view: one aligned map at a time (training/projection.py), one run full
width or two side by side in the map's shared coordinates. Arrows show where samples moved from
step 0 to the end; a box dragged on a map or a clicked point selects samples, which get a table
with their ranks in every run of the map, their image-caption lines, a detail and an export.
Below: each sample's drift and the modality gap with the gap-shift probe (views/drift.py).

The browser draws at most MAX_POINTS_DRAWN points per panel (the rule is in drawn()); the box
selects among all of a run's samples, drawn or not.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

import charts
from analysis import maps
from analysis.runs import label_list, last_eval
from core import run_store
from core.names import COLOR_BY
from views import drift
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
from views.vega import dataset_name, draw, vega_lite

MAX_PANELS = 2  # side by side; a third map is too narrow to select in
MAX_IMAGES_DRAWN, MAX_POINTS_DRAWN = 5_000, 8_000  # per panel: what a canvas redraws well within a selection's rerun
TOP_LABELS = 12  # colour legend entries before "other"; Tableau's twenty are not told apart beyond a dozen
DEFAULT_ARROWS, MAX_ARROWS = 20, 200  # more arrows than that hide the points they start from
MAX_SELECTION_ROWS, MAX_DRIFT_ROWS = 500, 1_000  # rows a table shows; the export holds every selected sample
MAX_LINES, MAX_RINGS = 1_000, 1_000  # image-caption pairs and rings drawn for a selection; more hide the map
THUMBNAIL_TOOLTIPS_UP_TO = 2_000  # points per chart; above this the data URIs slow the page down
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
    "have no units. Images are circles, captions crosses.")


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
    return st.multiselect("Runs of this map (one full width, or two side by side)", list(info.runs),
                          default=list(info.runs[:MAX_PANELS]), max_selections=MAX_PANELS,
                          key=f"embedding_runs:{info.id}")


# ----------------------------------------------------------------------- pure helpers


def ids_in_box(points: pd.DataFrame, box: dict) -> list[str]:
    """The sample ids of `points` (sample_id, umap_x, umap_y) inside a box as Streamlit reports
    an interval selection, {"umap_x": [a, b], "umap_y": [c, d]} (either end first, edges
    inside); [] for no box."""
    if not box or "umap_x" not in box or "umap_y" not in box:
        return []
    (x0, x1), (y0, y1) = sorted(map(float, box["umap_x"])), sorted(map(float, box["umap_y"]))
    x, y = points["umap_x"].to_numpy(np.float64), points["umap_y"].to_numpy(np.float64)
    inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    return points["sample_id"].to_numpy()[inside].tolist()


def drawn(points: pd.DataFrame, max_images: int = MAX_IMAGES_DRAWN, max_points: int = MAX_POINTS_DRAWN) -> pd.DataFrame:
    """The points a panel draws: every image up to max_images, then captions up to max_points
    in all; where there are more, the first ones in the order of a hash of their sample id, so
    that every run of a map draws the same samples."""
    if len(points) <= max_points and (points["modality"] == "image").sum() <= max_images:
        return points
    order = np.argsort(pd.util.hash_array(points["sample_id"].to_numpy(dtype=object)), kind="stable")
    images = order[points["modality"].to_numpy()[order] == "image"][:max_images]
    captions = order[points["modality"].to_numpy()[order] != "image"][:max(0, max_points - len(images))]
    return points.iloc[np.sort(np.concatenate([images, captions]))]


def legend_labels(points: pd.DataFrame, top: int = TOP_LABELS) -> list[str]:
    """The `top` most frequent labels (ties by name), the colour legend's entries before "other"."""
    counts = points["label"].dropna().astype(str)
    counts = counts[counts != ""].value_counts()
    return sorted(counts.index, key=lambda v: (-counts[v], v))[:top]


def positions(points: pd.DataFrame, ids) -> np.ndarray:
    """Row positions in `points` of the sample ids `ids` that it holds, in the order of `ids`."""
    found = pd.Index(points["sample_id"]).get_indexer(list(ids))
    return found[found >= 0]


def selection_lines(points: pd.DataFrame, ids: list[str], limit: int = MAX_LINES) -> pd.DataFrame:
    """Two rows (pair, umap_x, umap_y) per image-caption pair with a selected end: a selected
    image joins its captions, a selected caption its image; at most `limit` pairs."""
    chosen = np.zeros(len(points), dtype=bool)
    chosen[positions(points, ids)] = True
    modality, image_of = points["modality"].to_numpy(), points["image_id"].to_numpy()
    images, texts = np.flatnonzero(modality == "image"), np.flatnonzero(modality == "text")
    owner = pd.Index(image_of[images]).get_indexer(image_of[texts])
    texts, owner = texts[owner >= 0], images[owner[owner >= 0]]
    keep = chosen[texts] | chosen[owner]
    texts, owner = texts[keep][:limit], owner[keep][:limit]
    x, y = points["umap_x"].to_numpy(), points["umap_y"].to_numpy()
    pair = points["sample_id"].to_numpy()[texts]
    return pd.DataFrame({"umap_x": np.concatenate([x[owner], x[texts]]), "umap_y": np.concatenate([y[owner], y[texts]]),
                         "pair": np.concatenate([pair, pair])})


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
        st.info("Pick one run of this map, or two to see them side by side.")
        return
    index = by_key(runs)
    if info.name:
        order = "reference first" if info.reference_known else \
            "in name order (no comparison of the sweep names this map's reference)"
        st.caption(f"{ABOUT_MAPS} This map holds {len(info.runs)} run(s), {order}.")
    else:
        st.caption("This map is the run's own fit: its umap.parquet predates aligned maps, so it holds the end of "
                   "training only (no step 0, no arrows), and its positions are comparable with no other run. "
                   "Images are circles, captions crosses; a distance means something only locally.")
    points = {k: load_map_points(str(index[k].path), stamp(index[k]), info.name) for k in picked}
    first = index[picked[0]]
    labels, top = map_labels(str(first.path), stamp(first), info.name)
    color_by, line_label, arrows = map_controls(labels)
    selected, clicked = current_selection(info, picked, points)
    colors = charts.group_colors([str(index[k].config.get("group") or index[k].name) for k in info.runs])
    domain = map_domain(sources([index[k] for k in picked]), info.name)
    for column, key in zip(st.columns(len(picked)), picked, strict=True):
        run = index[key]
        with column:
            arrow_ids = most_moved(points[key], selected, MAX_ARROWS) if selected else \
                top_movers(str(run.path), stamp(run), info.name, arrows)
            base = map_spec(str(run.path), stamp(run), info.name, key, color_by, top, domain, line_label)
            spec = with_overlays(base, points[key], selected, arrow_ids, domain,
                                 colors[str(run.config.get("group") or run.name)])
            st.vega_lite_chart(spec=spec, width="stretch", key=chart_key(info, key), on_select="rerun",
                               selection_mode=[charts.MAP_BOX, charts.MAP_PICK])
            st.caption(drawn_note(str(run.path), stamp(run), info.name, len(arrow_ids), bool(selected)))
    selection_section(info, picked, index, selected, clicked)
    drift_section(info, picked, index)
    gap_section(picked, index)


def map_controls(labels: list[str]) -> tuple[str, str | None, int]:
    """Colouring, the label whose image-caption pairs get lines, how many arrows."""
    left, mid, right = st.columns([3, 2, 2])
    color_by = left.radio("Colour by", list(COLOR_BY), horizontal=True)
    line_label = mid.selectbox("Join each image to its captions for label", ["(none)", *labels],
                               help="Grey lines, as for a selection's samples.")
    arrows = right.number_input("Arrows for the samples that moved most", 0, MAX_ARROWS, DEFAULT_ARROWS,
                                help="From a sample's step-0 place to its end place, in the run's configuration "
                                     "colour. A selection gets arrows instead (up to "
                                     f"{MAX_ARROWS}).")
    return color_by, None if line_label == "(none)" else line_label, int(arrows)


def chart_key(info: MapInfo, key: str) -> str:
    return f"embedding_chart:{info.id}:{key}"


def current_selection(info: MapInfo, picked: list[str],
                      points: dict[str, pd.DataFrame]) -> tuple[list[str], str | None]:
    """The sample ids in the panels' boxes (their union, in panel order) and the clicked sample,
    from the selections the charts reported on the last interaction (read before the charts are
    drawn, so that they can draw the selection's arrows and lines)."""
    selected: dict[str, None] = {}
    clicked = None
    for key in picked:
        state = st.session_state.get(chart_key(info, key))
        selection = (state or {}).get("selection") or {}
        selected.update(dict.fromkeys(ids_in_box(points[key], selection.get(charts.MAP_BOX) or {})))
        known = pd.Index(points[key]["sample_id"])
        for pick in selection.get(charts.MAP_PICK) or []:
            if isinstance(pick, dict) and pick.get("sample_id") in known:
                clicked = pick["sample_id"]
    if clicked is not None:
        selected.setdefault(clicked)
    return list(selected), clicked


@cached(max_entries=64)
def map_domain(src: tuple, map_name: str) -> tuple[float, float, float, float]:
    """x and y ranges that hold every step-0 and end place of the runs, with a margin: the
    panels of one map share their axes."""
    frames = [load_map_points(path, s, map_name) for _, path, s in src]
    xs = np.concatenate([f[c].to_numpy(np.float64) for f in frames for c in ("umap_x", "x0")])
    ys = np.concatenate([f[c].to_numpy(np.float64) for f in frames for c in ("umap_y", "y0")])
    xs, ys = xs[np.isfinite(xs)], ys[np.isfinite(ys)]
    if not len(xs):
        return 0.0, 1.0, 0.0, 1.0
    pad_x, pad_y = 0.03 * (np.ptp(xs) or 1.0), 0.03 * (np.ptp(ys) or 1.0)
    return float(xs.min() - pad_x), float(xs.max() + pad_x), float(ys.min() - pad_y), float(ys.max() + pad_y)


@cached(max_entries=256)
def top_movers(path: str, stamp: str, map_name: str, n: int) -> tuple[str, ...]:
    """The `n` samples that moved most on the map from the run's step 0 to its end."""
    points = load_map_points(path, stamp, map_name)
    return tuple(points.dropna(subset=["moved"]).nlargest(n, "moved")["sample_id"]) if n else ()


def most_moved(points: pd.DataFrame, ids: list[str], n: int) -> list[str]:
    """Of the sample ids `ids`, the `n` that moved most on the map (all of them when they are fewer)."""
    if len(ids) <= n:
        return ids
    rows = points.iloc[positions(points, ids)]
    moved = rows["moved"].fillna(-1.0).to_numpy()
    return rows["sample_id"].to_numpy()[np.argsort(-moved, kind="stable")[:n]].tolist()


@cached(max_entries=64)
def map_labels(path: str, stamp: str, map_name: str) -> tuple[list[str], tuple[str, ...]]:
    """The labels of a run's map points, and the colour legend's top ones."""
    points = load_map_points(path, stamp, map_name)
    return label_list(points["label"]), tuple(legend_labels(points))


@cached(max_entries=64)
def drawn_points(path: str, stamp: str, map_name: str) -> pd.DataFrame:
    """drawn() of a run's map points."""
    return drawn(load_map_points(path, stamp, map_name))


@cached(max_entries=128)
def map_spec(path: str, stamp: str, map_name: str, key: str, color_by: str, labels: tuple, domain: tuple,
             line_label: str | None) -> dict:
    """One run's panel of the map without its selection: the drawn points, coloured, with the
    lines of `line_label`'s images and captions (with_overlays() adds the selection's layers)."""
    points = load_map_points(path, stamp, map_name)
    shown = drawn_points(path, stamp, map_name)
    field = COLOR_BY[color_by]
    if field == "label":
        shown = shown.assign(colour=shown["label"].where(shown["label"].isin(set(labels)), "other"))
        domain_colors, range_colors = [*labels, "other"], [*charts.PALETTE[:len(labels)], charts.OTHER_COLOR]
        field, title = "colour", f"label (top {len(labels)})"
    else:
        domain_colors, range_colors = charts.FIXED_COLORS[field]
        title = color_by
    if len(shown) <= THUMBNAIL_TOOLTIPS_UP_TO:
        shown = shown.assign(image=shown["image_id"].map(thumbnail_uris(path, stamp)))
    keep = ["sample_id", "umap_x", "umap_y", "modality", "caption", "label", "rank", field] + \
        (["image"] if "image" in shown.columns else [])
    joined = points.loc[(points["label"] == line_label) & (points["modality"] == "image"), "sample_id"] \
        if line_label else []
    step = int(points["step"].max()) if len(points) else 0
    return vega_lite(charts.map_chart(shown[list(dict.fromkeys(keep))], field, title, domain_colors, range_colors,
                                      f"{key} · end of training (step {step})", domain,
                                      lines=selection_lines(points, list(joined)) if line_label else None))


@cached(max_entries=64)
def overlay_layers(domain: tuple, arrow_color: str) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """charts.map_overlays()' layers as Vega-Lite layers with the frame each draws, built once
    per map and colour: a selection only swaps their data."""
    one = pd.DataFrame({"pair": ["p"], "umap_x": [0.0], "umap_y": [0.0], "x0": [0.0], "y0": [0.0], "caption": [""],
                        "modality": ["image"], "moved": [0.0]})
    under, over = charts.map_overlays(domain, one, one, one, arrow_color)
    return tuple([(role, layer) for (role, _), layer in zip(part, vega_lite(alt.layer(*(c for _, c in part)))["layer"])]
                 for part in (under, over))


def with_overlays(spec: dict, points: pd.DataFrame, selected: list[str], arrow_ids, domain: tuple,
                  arrow_color: str) -> dict:
    """A map_spec() with the selection's lines under its points and its rings and the arrows over
    them (overlay_layers() on this selection's rows), while the points' layer comes from the cache."""
    arrows = points.iloc[positions(points, arrow_ids)].dropna(subset=["x0", "y0"])
    frames = {"arrows": arrows[["x0", "y0", "umap_x", "umap_y", "caption", "modality", "moved"]],
              "rings": points.iloc[positions(points, selected[:MAX_RINGS])][["umap_x", "umap_y"]],
              "lines": selection_lines(points, selected) if selected else points.iloc[:0]}
    names = {}
    for role, frame in frames.items():
        if len(frame):
            names[role] = dataset_name(frame)
            spec["datasets"][names[role]] = frame.reset_index(drop=True)
    under, over = ([{**layer, "data": {"name": names[role]}} for role, layer in part if role in names]
                   for part in overlay_layers(domain, arrow_color))
    spec["layer"] = under + spec["layer"] + over
    return spec


@cached(max_entries=256)
def drawn_note(path: str, stamp: str, map_name: str, arrows: int, selection: bool) -> str:
    points, shown = load_map_points(path, stamp, map_name), drawn_points(path, stamp, map_name)
    images, texts = (points["modality"] == "image").sum(), (points["modality"] == "text").sum()
    drawn_images = (shown["modality"] == "image").sum()
    arrows = (f"arrows for the {arrows} selected sample(s) that moved most" if selection else
              f"arrows for the {arrows} samples that moved most")
    if len(shown) == len(points):
        return f"All {images:,} images and {texts:,} captions drawn; {arrows}."
    return (f"Drawn: {len(shown):,} of {len(points):,} points ({drawn_images:,} of {images:,} images, "
            f"{len(shown) - drawn_images:,} of {texts:,} captions; a fixed sample by sample id, the same in every "
            f"run of the map); the selection and the arrows are always drawn, and a box selects among all "
            f"{len(points):,}. {arrows[0].upper()}{arrows[1:]}.")


# -------------------------------------------------------------------- the selection


def selection_section(info: MapInfo, picked: list[str], index: dict, selected: list[str],
                      clicked: str | None) -> None:
    st.subheader("Selection")
    if not selected:
        st.caption("Drag a box on a map to select the samples in it, or click a point for its detail; double-click "
                   "the map to clear. The selection's image-caption pairs are then joined by grey lines.")
        return
    members = [(k, index[k].config.get("seed"), load_map_points(str(index[k].path), stamp(index[k]), info.name))
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
    rows.insert(0, "thumbnail", rows["image_id"].map(thumbnail_uris(str(run.path), stamp(run))))

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
    if len(picked) == 2:
        choices[f"{picked[0]} end → {picked[1]} end"] = tuple(picked)
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
        note = maps.measured_note(load_spaces(str(runs[0].path), stamp(runs[0]))[1], maps.FULL_UP_TO)
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
               "the centroids together, −1 moves them twice as far apart. Flat curves say that retrieval does not "
               "depend on the gap.")
    evals = all_evals(sources([index[k] for k in picked]))
    # The probe re-ranks every sample at each shift: drawn at once on a set the size of the
    # default sweep's, on request on larger ones (where it dominates the view's first open).
    try:
        sizes = [sum(len(x.image_ids) + len(x.caption_ids) for x in load_spaces(str(index[k].path), stamp(index[k])))
                 for k in picked]
    except ValueError:
        sizes = [0]
    probe = st.toggle("Gap-shift probe", value=max(sizes) <= maps.FULL_UP_TO, key="embedding_gap_probe",
                      help="R@1 both ways and zero-shot accuracy re-measured with the gap closed or widened: "
                           f"on by default up to {maps.FULL_UP_TO:,} embeddings per run, on request above (it "
                           "re-ranks every sample at nine shifts).")
    for column, key in zip(st.columns(len(picked)), picked, strict=True):
        run = index[key]
        with column:
            try:
                figures = drift.gap_figures(str(run.path), stamp(run))
                spec, zero_shot, note = probe_spec(str(run.path), stamp(run), key) if probe else (None, True, None)
            except ValueError as e:
                st.info(f"No modality gap for {md(key)}: {md(e)}")
                continue
            temperature = [last_eval(evals, which=w, run=key).get("temperature", np.nan) for w in ("first", "last")]
            figures = figures.assign(temperature=temperature, logit_scale=1.0 / np.asarray(temperature))
            st.dataframe(figures, hide_index=True, column_config={
                "state": f"{key}", "gap": st.column_config.NumberColumn("gap", format="%.3f"),
                "image_cone": st.column_config.NumberColumn("image cone", format="%.3f"),
                "text_cone": st.column_config.NumberColumn("text cone", format="%.3f"),
                "temperature": st.column_config.NumberColumn("temperature", format="%.4f"),
                "logit_scale": st.column_config.NumberColumn("logit scale (1/temperature)", format="%.2f")})
            if spec is not None:
                draw(spec)
            notes = [] if zero_shot else ["no zero-shot curve: this run's embeddings.parquet holds no class prompts "
                                          "for its labels (runs written before prompts were stored lack them, and "
                                          "a dataset without labels has none)"]
            if note:
                notes.append(f"the probe ranks {note}")
            if notes:
                text = "; ".join(notes)
                st.caption(text[0].upper() + text[1:] + ".")


@cached(max_entries=64)
def probe_spec(path: str, stamp: str, key: str) -> tuple[dict, bool, str | None]:
    probe, zero_shot = drift.gap_probe(path, stamp)
    note = maps.measured_note(load_spaces(path, stamp)[1], maps.PROBE_UP_TO)
    return vega_lite(charts.gap_probe_chart(probe, f"Gap-shift probe · {key}")), zero_shot, note

