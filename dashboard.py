"""Compare CLIP fine-tuning runs: configs and final metrics, training curves, the joint
embedding space, per-sample wins and losses, similarity matrices.

    streamlit run dashboard.py                            # the runs/ folder next to this file
    streamlit run dashboard.py -- --runs-dir /tmp/runs    # any other runs folder
    CLIP_RUNS_DIR=/tmp/runs streamlit run dashboard.py    # the same; --runs-dir wins over it

The runs folder named at start-up is the only root: runs are picked from what
training/run_store.py lists under it, never from a typed path. Only the open tab runs, and
it is kept in the URL (?view=Curves). Frames are cached per run file and keyed on
run_store.file_stamp, so a refresh shows what a live run has written since; so are the
finished chart specs, so that a rerun only rebuilds what its widgets changed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import os
import pickle
import re
import sys
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

if __name__ != "__main__":
    # Imported once by the server at start (the st.App at the end of this file): the cached
    # functions below are never called in that copy of the module, so Streamlit's notice that
    # they have no runtime yet is noise.
    logging.getLogger("streamlit.runtime.caching.cache_data_api").setLevel(logging.ERROR)

import charts
from training import run_store
from training.config import differing_keys

ROOT = Path(__file__).resolve().parent
RUNS_ENV = "CLIP_RUNS_DIR"
VIEWS = ["Runs", "Curves", "Embedding space", "Samples", "Similarity matrix", "Forgetting", "Export"]
# Charts are built from tested code; validating each one as it is built costs tens of
# milliseconds per chart on every rerun. Altair still validates the final spec.
alt.utils.schemapi.disable_debug_mode()
# No width/height defaults in specs: Streamlit sizes charts to their column. (st.altair_chart
# switches this theme on and off around each chart; set once, it is never switched.)
alt.theme.enable("none")
REFRESH_S = 10  # a live run flushes its metrics once per epoch; faster polling shows nothing new
MAX_UMAP_RUNS = 4
UMAP_COLUMNS = ["umap_x", "umap_y", "modality", "label", "caption", "rank", "outcome", "image"]
MAX_MATRIX = 20  # beyond this the heatmap's labels no longer fit
# Rows one curves chart draws, all runs together (each run gets 40 to 150): the browser redraws
# the chart on every widget change, in time that grows with the rows.
CURVE_POINTS = 1000
# The columns a curves chart draws from, and their types (the layout is built from an empty frame).
CURVE_COLUMNS = {"run": str, "step": int, "epoch": float, "wall_time": float, "value": float,
                 "smoothed": float, "evaluated": bool}
# Above this many runs the faint raw-value lines start off (a checkbox brings them back): a
# dozen overlapping faint lines are mostly haze, and they are a third of the chart's redraw time.
RAW_LINES_UP_TO = 4
THUMBNAIL_TOOLTIPS_UP_TO = 2000  # points per chart; above this the data URIs slow the page down
OPENMOJI = ("Emoji images: OpenMoji (https://openmoji.org), the open-source emoji and icon "
            "project, CC BY-SA 4.0.")
MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#+\-!|~$:])")
BADGE_COLORS = {"RUNNING": "blue", "FINISHED": "green", "FAILED": "red", "KILLED": "orange",
                "INTERRUPTED": "violet"}


def md(text) -> str:
    """Text shown literally inside Streamlit Markdown: captions carry *, _, $ and : ."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def runs_root(argv: list[str]) -> Path:
    """The runs folder: --runs-dir after `--` on the command line, else $CLIP_RUNS_DIR, else runs/."""
    parser = argparse.ArgumentParser(prog="streamlit run dashboard.py --", add_help=False, allow_abbrev=False)
    parser.add_argument("--runs-dir", type=Path)
    args, _ = parser.parse_known_args(argv)
    return (args.runs_dir or Path(os.environ.get(RUNS_ENV) or ROOT / "runs")).resolve()


# ------------------------------------------------------------------------- cached reads
# Each reader takes the run's file stamp only as a cache key: a rewritten file is read again.


@st.cache_data(max_entries=512, show_spinner=False)
def load_metrics(path: str, stamp: str) -> pd.DataFrame:
    return run_store.read_metrics(path)


@st.cache_data(max_entries=512, show_spinner=False)
def load_eval(path: str, stamp: str) -> pd.DataFrame:
    return run_store.read_eval(path)


@st.cache_data(max_entries=512, show_spinner=False)
def load_wise_ft(path: str, stamp: str) -> pd.DataFrame:
    return run_store.read_eval(path, wise_ft=True)


@st.cache_data(max_entries=64, show_spinner=False)
def load_samples(path: str, stamp: str) -> pd.DataFrame:
    return run_store.read_samples(path)


@st.cache_data(max_entries=64, show_spinner=False)
def load_images(path: str, stamp: str) -> pd.DataFrame:
    """Per validation image: outcome, top captions, margin and thumbnail as a data URI."""
    samples = load_samples(path, stamp)
    out = charts.image_outcomes(samples)
    thumbs = samples[samples["kind"] == "image"]["thumbnail"]
    out.insert(0, "thumbnail", [charts.data_uri(t) for t in thumbs])
    return out


@st.cache_data(max_entries=64, show_spinner=False)
def load_captions(path: str, stamp: str) -> pd.DataFrame:
    """image_id, caption and label of each validation image (load_images without the thumbnails)."""
    return load_images(path, stamp)[["image_id", "caption", "label"]]


@st.cache_data(max_entries=64, show_spinner=False)
def thumbnail_uris(path: str, stamp: str) -> pd.Series:
    """image_id -> thumbnail data URI of every validation image."""
    return load_images(path, stamp).set_index("image_id")["thumbnail"]


@st.cache_data(max_entries=256, show_spinner=False)
def thumbnails(path: str, stamp: str, image_ids: tuple) -> dict[str, str]:
    """image_id -> thumbnail data URI of the given images that have one, in the given order."""
    uris = thumbnail_uris(path, stamp).reindex(list(image_ids))
    return {i: t for i, t in uris.items() if isinstance(t, str) and t}


@st.cache_data(max_entries=512, show_spinner=False)
def load_ranks(path: str, stamp: str) -> pd.Series:
    """image_id -> rank of the image's first right caption (small: what other views join on)."""
    samples = run_store.read_samples(path, columns=["kind", "image_id", "rank"])
    return samples[samples["kind"] == "image"].set_index("image_id")["rank"]


@st.cache_data(max_entries=64, show_spinner=False)
def load_points(path: str, stamp: str) -> pd.DataFrame:
    """UMAP points of the last evaluated step, with rank and right/wrong at R@1."""
    emb = run_store.read_embeddings(path, with_vectors=False, last_step=True).dropna(subset=["umap_x", "umap_y"])
    ranks = run_store.read_samples(path, columns=["kind", "sample_id", "rank"]).rename(columns={"kind": "modality"})
    emb = emb.merge(ranks, on=["sample_id", "modality"], how="left")
    emb["outcome"] = np.where(emb["rank"] == 1, charts.OUTCOMES[0], charts.OUTCOMES[1])
    return emb.reset_index(drop=True)


@st.cache_data(max_entries=16, show_spinner=False)
def load_vectors(path: str, stamp: str):
    """Rows and vectors (float32 matrix) of the last evaluated step's embeddings."""
    return run_store.read_last_vectors(path)


def stamp(run: run_store.Run) -> str:
    """The run's file stamp as one string: a cache key that is cheap to hash on every rerun."""
    return repr(run_store.file_stamp(run.path))


def sources(runs: list[run_store.Run]) -> tuple:
    """(key, path, file stamp) of each run: the cache key of frames that span several runs."""
    return tuple((r.key, str(r.path), stamp(r)) for r in runs)


@st.cache_data(max_entries=64, show_spinner=False)
def all_metrics(src: tuple) -> pd.DataFrame:
    """metrics.parquet of several runs, stacked with a `run` column."""
    return stack([load_metrics(path, s).assign(run=key) for key, path, s in src])


@st.cache_data(max_entries=64, show_spinner=False)
def all_evals(src: tuple) -> pd.DataFrame:
    """eval.parquet of several runs, stacked with a `run` column."""
    return stack([load_eval(path, s).assign(run=key) for key, path, s in src])


def stack(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def final_values(evals: pd.DataFrame, run: str, split: str = "val", step: str = "last") -> dict:
    """metric -> value of one run's first or last evaluation on `split` (`evals`: all_evals)."""
    return run_store.eval_at(evals[evals["run"] == run], split, step) if not evals.empty else {}


def by_key(runs: list[run_store.Run]) -> dict[str, run_store.Run]:
    return {r.key: r for r in runs}


def finished(runs: list[run_store.Run]) -> list[run_store.Run]:
    """Runs with per-sample files: run_store has checked that a FINISHED run's are readable."""
    return [r for r in runs if r.state == "FINISHED"]


# ------------------------------------------------------------------------------- charts
# A view draws a chart from a cached function that returns vega_lite(chart): a rerun with the
# same inputs (a widget another chart listens to, a tab switch, a new session) then neither
# builds nor validates the Altair chart again.


def vega_lite(chart: alt.TopLevelMixin) -> dict:
    """An Altair chart as a Vega-Lite spec with its data frames under "datasets" (Streamlit
    sends those to the browser as Arrow, not as JSON rows).

    Frames are swapped for named data before the conversion, so it never goes through Altair's
    global data transformer, which st.altair_chart switches on other sessions' threads. Each
    dataset is named after its content: the browser then redraws a chart whose data changed
    even where its spec did not."""
    frames: dict[str, pd.DataFrame] = {}

    def named(part):
        part = part.copy(deep=False)
        if isinstance(part.data, pd.DataFrame):
            name = dataset_name(part.data)
            frames[name] = part.data
            part.data = alt.NamedData(name=name)
        if isinstance(part, alt.LayerChart):
            part.layer = [named(layer) for layer in part.layer]
        return part

    spec = named(chart).to_dict()
    spec["datasets"] = frames
    return spec


def dataset_name(frame: pd.DataFrame) -> str:
    digest = hashlib.sha1(repr(list(frame.columns)).encode())
    try:
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    except TypeError:  # unhashable cells (lists): hash the pickled frame instead
        digest.update(pickle.dumps(frame))
    return f"data-{digest.hexdigest()[:20]}"


def draw(spec: dict, where=None) -> None:
    """A vega_lite() spec as a chart as wide as its column (`where`: a column, else the page)."""
    (where or st).vega_lite_chart(spec=spec, width="stretch")


# ------------------------------------------------------------------------------ sidebar


def sidebar_filters(runs: list[run_store.Run]) -> list[run_store.Run]:
    """Sweep, status and config-value filters; returns the runs picked for comparison."""
    bar = st.sidebar
    bar.header("Runs to compare")
    sweeps = sorted({r.sweep for r in runs})
    states = sorted({r.state for r in runs})
    sweep_pick = bar.multiselect("Sweep", sweeps, default=sweeps)
    state_pick = bar.multiselect("Status", states, default=states)
    kept = config_filter([r for r in runs if r.sweep in sweep_pick and r.state in state_pick])
    keys = [r.key for r in kept]
    picked = bar.multiselect("Runs", keys, default=keys, help="Every view compares these runs.")
    return [r for r in kept if r.key in picked]


def config_filter(runs: list[run_store.Run]) -> list[run_store.Run]:
    """Keep runs whose value of one chosen config key is among the chosen values."""
    keys = differing_keys([r.config for r in runs])
    key = st.sidebar.selectbox("Filter by config key", ["(no filter)", *keys])
    if key == "(no filter)":
        return runs
    values = sorted({str(r.config.get(key)) for r in runs})
    chosen = st.sidebar.multiselect(f"Values of {key}", values, default=values)
    return [r for r in runs if str(r.config.get(key)) in chosen]


def attribution(runs: list[run_store.Run]) -> None:
    if any(Path(str(r.config.get("data", ""))).name == "openmoji" for r in runs):
        st.sidebar.caption(OPENMOJI)


# -------------------------------------------------------------------------------- views


def runs_view(runs: list[run_store.Run]) -> None:
    """Status badges, the comparison table and the final retrieval chart."""
    with st.container(horizontal=True):
        for r in runs:
            step = r.status.get("step")
            st.badge(f"{md(r.key)} · {r.state}" + (f" · step {step}" if step is not None else ""),
                     color=BADGE_COLORS.get(r.state, "gray"))
    for r in runs:
        if r.state in ("FAILED", "KILLED") and r.status.get("error"):
            with st.expander(f"Why {md(r.key)} is {r.state}"):
                st.code(r.status["error"], language=None)
    src = sources(runs)
    evals = all_evals(src)
    table = comparison_of(src, tuple(r.state for r in runs), runs)
    st.subheader("What differs, and how well each run retrieves")
    st.dataframe(charts.style_best(table))
    differing = [c for c in table.columns if c not in charts.TABLE_METRICS and c != "state"]
    st.caption(
        (f"Config values that differ: {', '.join(differing)}. " if differing else
         "The selected runs share every config value. ")
        + "Metrics: each run's last evaluation on the validation split. i2t: image→text (find an "
        "image's caption), t2i: text→image. R@k: share of queries whose match is among the top k. "
        "Highlighted: best per column. NaN: not measured, or the run diverged.")
    if evals.empty:
        st.info("No evaluation has been written yet.")
        return
    draw(retrieval_spec(src))
    chance = evals[(evals["metric"] == "chance_R@1") & (evals["split"] == "val")]["value"]
    if not chance.empty:
        low, high = chance.min(), chance.max()
        st.caption("Chance R@1 (one over the number of validation images): "
                   + (f"{high:.4f}." if low == high else f"{low:.4f} to {high:.4f}, by run."))
    subset = [r.key for r in runs if r.config.get("include_labels") or r.config.get("exclude_labels")]
    if subset:
        st.caption(f"{', '.join(md(k) for k in subset)} train and validate on a label subset, so their R@k "
                   "count fewer, other validation images: compare them with each other, or in the "
                   "Forgetting view, not with the other runs.")


def comparison(runs: list[run_store.Run]) -> pd.DataFrame:
    """One row per run: state, the config values that differ, final validation metrics."""
    return comparison_of(sources(runs), tuple(r.state for r in runs), runs)


@st.cache_data(max_entries=64, show_spinner=False)
def comparison_of(src: tuple, states: tuple, _runs: list[run_store.Run]) -> pd.DataFrame:
    """comparison(); `_runs` is left out of the cache key: the file stamps in `src` cover
    their config.json and status.json, and `states` what the status means now."""
    evals = all_evals(src)
    return charts.comparison_table([
        {"run": r.key, "state": state, "config": r.config, "final": final_values(evals, r.key)}
        for r, state in zip(_runs, states)])


@st.cache_data(max_entries=64, show_spinner=False)
def retrieval_spec(src: tuple) -> dict:
    return vega_lite(charts.retrieval_bars(charts.retrieval_frame(all_evals(src))))


@st.cache_data(max_entries=64, show_spinner=False)
def curve_options(src: tuple) -> dict[str, str]:
    """Option id -> readable name for every metric logged by the runs."""
    metrics, evals = all_metrics(src), all_evals(src)
    names = sorted(metrics["name"].unique()) if not metrics.empty else []
    options = {f"train|{m}": f"{charts.label(m)} · training batches" for m in names}
    if not evals.empty:
        pairs = evals[["split", "metric"]].drop_duplicates().sort_values(["split", "metric"],
                                                                         ascending=[False, True])
        options |= {f"eval|{s}|{m}": f"{charts.label(m)} · evaluation on {s} split"
                    for s, m in zip(pairs["split"], pairs["metric"])}
    return options


def curve_controls(options: dict[str, str], runs: int) -> tuple[str, str, float, bool, bool]:
    """Metric, x axis, EMA weight, log scale, and whether to draw the raw values of `runs` runs."""
    left, mid, right = st.columns([3, 2, 2])
    ids = list(options)
    choice = left.selectbox("Metric", ids, index=ids.index("train|loss") if "train|loss" in ids else 0,
                            format_func=options.get)
    x = mid.radio("x axis", list(charts.X_TITLES), horizontal=True, format_func=lambda k: k.replace("_", " "))
    weight = right.slider("EMA smoothing", 0.0, 0.99, 0.6, 0.01,
                          help="Weight of the past in the exponential moving average (0: raw values).")
    log = right.checkbox("Log scale on y")
    raw = right.checkbox("Raw values (faint lines)", value=runs <= RAW_LINES_UP_TO,
                         help=f"On by default for up to {RAW_LINES_UP_TO} runs.")
    return choice, x, weight, log, raw


def curves_view(runs: list[run_store.Run]) -> None:
    src = sources(runs)
    options = curve_options(src)
    if not options:
        st.info("The selected runs have logged no metrics yet.")
        return
    choice, x, weight, log, raw = curve_controls(options, len(runs))
    drawn, nan, thinned = curve_points(src, choice, weight)
    if drawn.empty:
        st.info("None of the selected runs logged this metric.")
        return
    draw(curve_spec(src, choice, weight, x, log, raw))
    st.caption("Bold line: smoothed" + ("; faint line: raw values" if raw else "")
               + "; dots: steps where the model was evaluated (step 0 is before any training)."
               + (" Long runs are drawn with every k-th step (smoothing uses all of them)." if thinned else ""))
    for run, count in nan.items():
        st.caption(f"{md(run)}: {count} NaN value(s) of this metric, left as gaps in the curve.")


@st.cache_data(max_entries=128, show_spinner=False)
def curve_points(src: tuple, choice: str, weight: float) -> tuple[pd.DataFrame, pd.Series, bool]:
    """What the curves chart draws (smoothed, thinned), NaN counts per run, whether thinned."""
    frame = curve_frame(src, choice)
    if frame.empty:
        return frame, pd.Series(dtype=int), False
    per_run = max(40, min(150, CURVE_POINTS // frame["run"].nunique()))
    drawn = charts.thin(charts.smooth(frame, weight)[list(CURVE_COLUMNS)], per_run)
    return drawn, frame[frame["value"].isna()].groupby("run").size(), len(drawn) < len(frame)


@st.cache_data(max_entries=256, show_spinner=False)
def curve_spec(src: tuple, choice: str, weight: float, x: str, log: bool, raw: bool) -> dict:
    """The curves chart: the cached layout of this metric and these settings, with the rows of
    this smoothing weight. Moving the EMA slider then only smooths; the chart is not rebuilt."""
    drawn, _, _ = curve_points(src, choice, weight)
    rows = charts.curve_rows(drawn, x, log)
    name = dataset_name(rows)
    return curve_layout(choice.split("|")[-1], x, log, raw) | {"data": {"name": name}, "datasets": {name: rows}}


@st.cache_data(max_entries=256, show_spinner=False)
def curve_layout(metric: str, x: str, log: bool, raw: bool) -> dict:
    """The curves chart's Vega-Lite spec without its rows (building and validating it with
    Altair costs more than smoothing a dozen runs)."""
    empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in CURVE_COLUMNS.items()})
    spec = vega_lite(charts.curves_chart(empty, metric, x, log, raw=raw))
    del spec["data"], spec["datasets"]
    return spec


@st.cache_data(max_entries=128, show_spinner=False)
def curve_frame(src: tuple, choice: str) -> pd.DataFrame:
    """run, step, epoch, wall_time, value, evaluated: one metric of the curves view, unsmoothed."""
    metrics, evals = all_metrics(src), all_evals(src)
    kind, *rest = choice.split("|")
    if kind == "train":
        frame = metrics[metrics["name"] == rest[0]]
        if evals.empty:
            return frame.assign(evaluated=False)
        evaluated = pd.MultiIndex.from_frame(frame[["run", "step"]]).isin(
            pd.MultiIndex.from_frame(evals[["run", "step"]]))
        return frame.assign(evaluated=evaluated)
    split, metric = rest
    frame = evals[(evals["split"] == split) & (evals["metric"] == metric)]
    return charts.with_wall_time(frame, metrics).assign(evaluated=True)


def embedding_controls(labels: list[str]) -> tuple[str, str | None, bool]:
    """Colouring, the label whose pairs get lines, thumbnails in tooltips."""
    left, mid, right = st.columns([3, 3, 2])
    color_by = left.radio("Colour by", list(charts.COLOR_BY), horizontal=True)
    line_label = mid.selectbox("Join each image to its captions for label", ["(none)", *labels])
    thumbs = right.checkbox("Thumbnails in tooltips", value=True,
                            help=f"Only for charts of up to {THUMBNAIL_TOOLTIPS_UP_TO} points, which stay fast.")
    return color_by, None if line_label == "(none)" else line_label, thumbs


def embedding_view(runs: list[run_store.Run]) -> None:
    keys = [r.key for r in runs]
    picked = st.multiselect("Runs side by side (up to four)", keys, default=keys[:2],
                            max_selections=MAX_UMAP_RUNS)
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
    for column, key in zip(st.columns(len(picked)), picked):
        with column:
            embedding_panel(index[key], evals, color_by, labels, line_label, thumbs)


@st.cache_data(max_entries=64, show_spinner=False)
def umap_labels(src: tuple) -> list[str]:
    """The labels of the UMAP points of several runs (one legend for every panel)."""
    return sorted({str(v) for _, path, s in src for v in load_points(path, s)["label"]} - {"", "None", "nan"})


def embedding_panel(run: run_store.Run, evals: pd.DataFrame, color_by: str, labels: list[str],
                    line_label: str | None, thumbs: bool) -> None:
    key = run.key
    final, first = final_values(evals, key), final_values(evals, key, step="first")
    gap = final.get("modality_gap", float("nan"))
    change = gap - first.get("modality_gap", float("nan"))
    st.metric(f"modality gap · {md(key)}", f"{gap:.3f}", delta=f"{change:+.3f} since step 0", delta_color="off",
              help="Distance between the centroids of the image and the caption embeddings "
                   "(0: the two clouds are centred on each other).")
    spec = umap_spec(str(run.path), stamp(run), key, color_by, tuple(labels), line_label, thumbs)
    if spec is None:
        st.info("No UMAP coordinates yet: training/train.py fits them once every run of its sweep has "
                "finished (and only for the runs it trained in that call).")
        return
    draw(spec)


@st.cache_data(max_entries=128, show_spinner=False)
def umap_spec(path: str, stamp: str, key: str, color_by: str, labels: tuple, line_label: str | None,
              thumbs: bool) -> dict | None:
    """One run's UMAP chart (None: no coordinates yet); thumbnails ride along only on small charts."""
    points = load_points(path, stamp)
    if points.empty:
        return None
    if thumbs and len(points) <= THUMBNAIL_TOOLTIPS_UP_TO:
        points = points.assign(image=points["image_id"].map(thumbnail_uris(path, stamp)))
    lines = charts.pair_lines(points, line_label) if line_label else None
    title = f"{key} (step {int(points['step'].max())})"
    points = points[[c for c in UMAP_COLUMNS if c in points.columns]]  # only what is drawn travels
    return vega_lite(charts.umap_chart(points, color_by, title, list(labels), lines))


SAMPLE_FILTERS = {
    "all": "all images",
    "fixed": "fixed by B: wrong under A, right under B",
    "broken": "broken by B: right under A, wrong under B",
    "hardest": "hardest under B: smallest margin first",
}


def sample_controls(runs: list[run_store.Run], labels: list[str]) -> tuple[str, str, str, str | None, int]:
    """Runs A and B, the filter, a label and how many rows to show."""
    keys = [r.key for r in runs]
    c1, c2, c3, c4, c5 = st.columns([2, 2, 3, 2, 1])
    a = c1.selectbox("Run A", keys, index=0)
    b = c2.selectbox("Run B", keys, index=min(1, len(keys) - 1))
    which = c3.selectbox("Show", list(SAMPLE_FILTERS), format_func=SAMPLE_FILTERS.get)
    label = c4.selectbox("Label", ["(all labels)", *labels])
    limit = c5.number_input("Rows", 10, 100_000, 200, step=50)
    return a, b, which, None if label == "(all labels)" else label, int(limit)


def sample_table(runs: list[run_store.Run], b: str) -> pd.DataFrame:
    """Run B's per-image table with a rank column for every run."""
    index = by_key(runs)
    table = load_images(str(index[b].path), stamp(index[b]))
    for r in runs:
        table[f"rank · {r.key}"] = table["image_id"].map(load_ranks(str(r.path), stamp(r)))
    return table


def filter_samples(table: pd.DataFrame, a: str, b: str, which: str, label: str | None) -> pd.DataFrame:
    rank_a, rank_b = table[f"rank · {a}"], table[f"rank · {b}"]
    keep = {"all": table.index == table.index, "fixed": (rank_a > 1) & (rank_b == 1),
            "broken": (rank_a == 1) & (rank_b > 1), "hardest": table.index == table.index}[which]
    out = table[keep]
    if label:
        out = out[out["label"] == label]
    return out.sort_values("margin", na_position="last") if which == "hardest" else out


def samples_view(runs: list[run_store.Run]) -> None:
    done = finished(runs)
    if not done:
        st.info("None of the selected runs has per-sample results yet (they are written when a run finishes).")
        return
    a, b, which, label, limit = sample_controls(done, image_labels(done[0]))
    if a == b and which in ("fixed", "broken"):
        st.info("Pick two different runs as A and B to see what B fixed or broke.")
    table = filter_samples(sample_table(done, b), a, b, which, label)
    st.caption(f"{len(table)} image(s); showing {min(limit, len(table))}. Rank: position of the image's first "
               f"right caption among all validation captions (1 = right at R@1). Top captions and margin "
               f"(true-pair cosine minus the best wrong caption's) are run B's ({b}).")
    others = [c for c in table.columns if c.startswith("rank · ") and c not in (f"rank · {a}", f"rank · {b}")]
    order = ["thumbnail", "image_id", "caption", "label", *dict.fromkeys([f"rank · {a}", f"rank · {b}"]),
             "margin", "top_captions", "positive_cosine", *others]
    st.dataframe(table.head(limit), hide_index=True, column_config=sample_columns(table), column_order=order,
                 width="stretch")
    st.download_button("Download this table (CSV)", lambda: table.drop(columns="thumbnail").to_csv(index=False),
                       file_name="samples.csv", mime="text/csv", icon=":material/download:")
    if not table.empty:
        sample_detail(by_key(done), table, a, b)


def image_labels(run: run_store.Run) -> list[str]:
    """The labels of a run's validation images (the same for every run of one dataset)."""
    return sorted({str(v) for v in load_images(str(run.path), stamp(run))["label"]} - {"", "None", "nan"})


def sample_columns(table: pd.DataFrame) -> dict:
    config = {"thumbnail": st.column_config.ImageColumn("image", width="small", pinned=True),
              "image_id": "image id", "caption": st.column_config.TextColumn("caption", pinned=True),
              "positive_cosine": st.column_config.NumberColumn("true-pair cosine", format="%.3f"),
              "top_captions": st.column_config.TextColumn("top 3 captions under B (cosine)", width="large"),
              "margin": st.column_config.NumberColumn("margin under B", format="%.3f")}
    for column in table.columns:
        if column.startswith("rank · "):
            config[column] = st.column_config.NumberColumn(column, format="%d")
    return config


def sample_detail(index: dict, table: pd.DataFrame, a: str, b: str) -> None:
    """One image: its nearest captions, and for each of its captions the nearest images."""
    st.subheader("Sample detail")
    st.caption("Nearest neighbours in the other modality: the captions closest to the image, and the "
               "images closest to each of its captions, under runs A and B.")
    captions = dict(zip(table["image_id"], table["caption"]))
    image_id = st.selectbox("Image", list(captions), format_func=lambda i: f"{i}: {captions[i]}")
    row = table[table["image_id"] == image_id].iloc[0]
    picture, facts = st.columns([1, 8], vertical_alignment="center")
    if row["thumbnail"]:
        picture.image(row["thumbnail"], width=72)
    facts.text(f"{image_id} · label: {row['label'] or '(none)'}\nfirst caption: {row['caption']}")
    for column, key in zip(st.columns(2 if a != b else 1), dict.fromkeys([a, b])):
        with column:
            neighbours(index[key], image_id)


def neighbours(run: run_store.Run, image_id: str) -> None:
    st.markdown(f"**{md(run.key)}**")
    nearest = nearest_of(str(run.path), stamp(run), image_id)
    if nearest is None:
        st.info("This run did not evaluate this image.")
        return
    captions, per_caption = nearest
    st.dataframe(captions, hide_index=True, column_config={"cosine": st.column_config.NumberColumn(format="%.3f")})
    for caption, rank, images in per_caption:
        st.caption(f"Images nearest to the caption “{md(caption)}” (its image at rank {rank}):")
        st.dataframe(images, hide_index=True, column_config={"image": st.column_config.ImageColumn(width="small"),
                                                             "cosine": st.column_config.NumberColumn(format="%.3f")})


@st.cache_data(max_entries=256, show_spinner=False)
def nearest_of(path: str, stamp: str, image_id: str) -> tuple[pd.DataFrame, list] | None:
    """One image under one run: its nearest captions, and for each of its own captions (text,
    rank of the image) the nearest images; None if the run did not evaluate the image."""
    samples = load_samples(path, stamp)
    texts = samples[samples["kind"] == "text"].set_index("sample_id")
    image = samples[(samples["kind"] == "image") & (samples["image_id"] == image_id)]
    if image.empty:
        return None
    ids = image.iloc[0]["topk_ids"]
    captions = pd.DataFrame({"nearest captions": [texts["caption"].get(i, i) for i in ids],
                             "cosine": image.iloc[0]["topk_scores"],
                             "right": [texts["image_id"].get(i) == image_id for i in ids]})
    thumbs = thumbnail_uris(path, stamp)
    per_caption = []
    for _, cap in texts[texts["image_id"] == image_id].iterrows():
        near = cap["topk_ids"]
        per_caption.append((cap["caption"], cap["rank"], pd.DataFrame({
            "image": [thumbs.get(i) for i in near], "image id": near, "cosine": cap["topk_scores"],
            "right": [i == image_id for i in near]})))
    return captions, per_caption


def matrix_controls(runs: list[run_store.Run], images: pd.DataFrame) -> tuple[str, str | None, list[str]]:
    """Run A, optional run B, and up to twenty of the validation `images`."""
    keys = [r.key for r in runs]
    c1, c2, c3 = st.columns(3)
    a = c1.selectbox("Run A", keys, key="matrix_a")
    b = c2.selectbox("Run B (for the difference B − A)", ["(none)", *[k for k in keys if k != a]], key="matrix_b")
    labels = sorted({str(v) for v in images["label"]} - {"", "None"})
    label = c3.selectbox("Label", ["(all labels)", *labels], key="matrix_label")
    if label != "(all labels)":
        images = images[images["label"] == label]
    captions = dict(zip(images["image_id"], images["caption"]))
    ids = st.multiselect(f"Images (up to {MAX_MATRIX})", list(captions), default=list(captions)[:10],
                         max_selections=MAX_MATRIX, format_func=lambda i: f"{i}: {captions[i]}")
    return a, None if b == "(none)" else b, ids


def matrix_view(runs: list[run_store.Run]) -> None:
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


@st.cache_data(max_entries=64, show_spinner=False)
def matrix_charts(a: tuple, b: tuple | None, ids: tuple) -> tuple[dict, dict | None, pd.DataFrame]:
    """The heatmap of run A, that of B minus A (None without a B), and the cosines of both
    runs as one frame with a `run` column. a, b: (key, path, file stamp) of a run."""
    (key_a, path_a, stamp_a), ids = a, list(ids)
    mat_a = charts.cosine_matrix(*load_vectors(path_a, stamp_a), ids)
    spec_a = vega_lite(charts.cosine_heatmap(mat_a, f"Cosine similarity, {key_a}"))
    if b is None:
        return spec_a, None, mat_a.assign(run=key_a)
    key_b, path_b, stamp_b = b
    mat_b = charts.cosine_matrix(*load_vectors(path_b, stamp_b), ids)
    diff = charts.cosine_difference(mat_a, mat_b)
    spec_diff = vega_lite(charts.cosine_heatmap(diff, f"{key_b} minus {key_a}", difference=True))
    return spec_a, spec_diff, pd.concat([mat_a.assign(run=key_a), mat_b.assign(run=key_b)], ignore_index=True)


@st.cache_data(max_entries=64, show_spinner=False)
def all_wise_ft(src: tuple) -> pd.DataFrame:
    """The WiSE-FT rows of several runs' eval.parquet (one per mixing ratio), with a `run` column."""
    return stack([load_wise_ft(path, s).assign(run=key) for key, path, s in src])


@st.cache_data(max_entries=64, show_spinner=False)
def split_curves_spec(src: tuple, metric: str) -> dict:
    evals = all_evals(src)
    return vega_lite(charts.split_curves_chart(evals[evals["metric"] == metric], metric))


@st.cache_data(max_entries=64, show_spinner=False)
def forgetting_spec(src: tuple, metric: str, held_out: str) -> tuple[dict | None, pd.DataFrame]:
    """The gain-vs-forgetting chart (None when no run has the points) and its points."""
    points = charts.forgetting_frame(all_evals(src), all_wise_ft(src), metric, held_out)
    return (None if points.empty else vega_lite(charts.forgetting_chart(points, metric, held_out))), points


def forgetting_view(runs: list[run_store.Run]) -> None:
    src = sources(runs)
    every_split = all_evals(src)
    wise = all_wise_ft(src)
    extra = every_split[~every_split["split"].isin(["train", "val"])] if not every_split.empty else every_split
    if extra.empty and wise.empty:
        st.info("The selected runs have no forgetting evaluation: their eval.parquet holds only the train and "
                "val splits, and no WiSE-FT rows. A run gets them with extra_evals and wise_ft_ratios in its "
                "sweep (the default sweep's stage2-people has both).")
        return
    metrics = sorted(set(extra.get("metric", [])) | set(wise.get("metric", [])))
    metric = st.selectbox("Metric", metrics, format_func=charts.label,
                          index=metrics.index("i2t_R@1") if "i2t_R@1" in metrics else 0)
    draw(split_curves_spec(src, metric))
    held_out_sets = sorted(set(extra.get("split", [])))
    if not held_out_sets:
        return
    held_out = st.selectbox("Held-out evaluation set", held_out_sets)
    spec, points = forgetting_spec(src, metric, held_out)
    if spec is None:
        st.info(f"No run evaluated {charts.label(metric)} on both its val split and {held_out} at step 0 and "
                f"at its end.")
        return
    draw(spec)
    st.caption(f"Each point is a change from the run's step 0: right is better on the run's own validation data "
               f"(the data it fine-tunes on), down is forgetting on {held_out}. WiSE-FT mixes the weights the run "
               f"started from (ratio 0) and ended with (ratio 1).")
    st.dataframe(points, hide_index=True)


def export_view(runs: list[run_store.Run]) -> None:
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
                           lambda: svg(charts.retrieval_bars(charts.retrieval_frame(evals))),
                           file_name="final_retrieval.svg", mime="image/svg+xml", icon=":material/download:")


def svg(chart) -> str:
    """A chart as SVG, drawn on the server by vl-convert (no browser needed)."""
    out = io.StringIO()
    chart.save(out, format="svg")
    return out.getvalue()


def image_ranks(runs: list[run_store.Run]) -> pd.DataFrame:
    frames = [load_images(str(r.path), stamp(r)).drop(columns="thumbnail").assign(run=r.key) for r in runs]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


VIEW_FUNCTIONS = {"Runs": runs_view, "Curves": curves_view, "Embedding space": embedding_view,
                  "Samples": samples_view, "Similarity matrix": matrix_view, "Forgetting": forgetting_view,
                  "Export": export_view}


def live(view, root: Path, runs: list[run_store.Run]) -> None:
    """Show a view as a fragment; while one of its runs is RUNNING, re-read the runs' status
    and files every REFRESH_S seconds so new rows appear without a click."""
    keys = [r.key for r in runs]
    running = any(r.state == "RUNNING" for r in runs)

    def body():
        view(reload(root, keys) if running else runs)

    if running:
        st.caption(f"A run is RUNNING: this view refreshes every {REFRESH_S} s.")
    st.fragment(body, run_every=REFRESH_S if running else None)()


def reload(root: Path, keys: list[str]) -> list[run_store.Run]:
    runs = []
    for key in keys:
        try:
            runs.append(run_store.load_run(run_store.resolve_run(root, key), root))
        except run_store.RunStoreError:
            continue  # removed since the page was drawn; the next full rerun drops it
    return [r for r in runs if not r.damaged]


# --------------------------------------------------------------------------------- main


def accelerate() -> str:
    """The accelerate of the Python serving this page, as a user can type it: a fresh clone's
    .venv/bin is not on PATH."""
    exe = Path(sys.executable).with_name("accelerate")
    if not exe.exists():
        return "accelerate"
    try:
        return str(exe.relative_to(Path.cwd()))
    except ValueError:
        return str(exe)


def empty_state(root: Path) -> None:
    st.info(f"No runs under {md(root)} yet. Train some (a few minutes on a CPU), then reload this page:")
    st.code(f"{accelerate()} launch training/train.py --runs-dir {root}", language="bash")
    st.caption("Or point the dashboard at another folder: `streamlit run dashboard.py -- --runs-dir DIR`")


def main(argv: list[str] | None = None) -> None:
    st.set_page_config(page_title="CLIP workbench", layout="wide")
    root = runs_root(sys.argv[1:] if argv is None else argv)
    st.title("CLIP experiment workbench")
    runs = run_store.list_runs(root)
    good = [r for r in runs if not r.damaged]
    damaged = len(runs) - len(good)
    st.caption(f"Runs folder: {md(root)} · {len(good)} run(s)" + (f", {damaged} damaged" if damaged else ""))
    for r in runs:
        if r.damaged:
            st.warning(f"Run {md(r.key)} is damaged and left out: {md('; '.join(r.problems))}.")
    if not runs:
        empty_state(root)
        return
    if not good:
        st.info("Every run in this folder is damaged; fix or remove the files named above.")
        return
    selected = sidebar_filters(good)
    attribution(good)
    if not selected:
        st.info("No run matches the filters in the sidebar.")
        return
    for tab, name in zip(st.tabs(VIEWS, key="view", bind="query-params"), VIEWS):
        if tab.open:
            with tab:
                live(VIEW_FUNCTIONS[name], root, selected)


if __name__ == "__main__":  # Streamlit runs this file once per session and rerun
    main()
else:
    # `streamlit run dashboard.py` finds this st.App and serves it: the server imports this
    # module once at start, so pandas, altair and pyarrow are loaded before the first visitor
    # instead of during their first page load.
    app = st.App(__file__)
