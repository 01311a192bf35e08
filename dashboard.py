"""Compare CLIP fine-tuning runs: configs and final metrics with their intervals, paired
comparisons of two runs or configurations, training curves, the joint embedding space,
per-sample wins and losses, similarity matrices.

    streamlit run dashboard.py                            # the runs/ folder next to this file
    streamlit run dashboard.py -- --runs-dir /tmp/runs    # any other runs folder
    CLIP_RUNS_DIR=/tmp/runs streamlit run dashboard.py    # the same; --runs-dir wins over it

The runs folder named at start-up is the only root: runs are picked from what
core/run_store.py lists under it, never from a typed path. Only the open tab runs, and
it is kept in the URL (?view=Curves), as are the runs A and B that the Compare and Samples
views share (?run_a=...&run_b=...). Frames are cached per run file and keyed on
run_store.file_stamp, so a refresh shows what a live run has written since; so are the
finished chart specs, so that a rerun only rebuilds what its widgets changed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import streamlit as st

if __name__ != "__main__":
    # Imported once by the server at start (the st.App at the end of this file): the cached
    # functions of views/ are never called in that import, so Streamlit's notice that they
    # have no runtime yet is noise.
    logging.getLogger("streamlit.runtime.caching.cache_data_api").setLevel(logging.ERROR)

from core import run_store
from core.config import differing_keys
from views import compare, curves, embedding, export, forgetting, matrix, query, samples
from views import runs as runs_view
from views.common import md

ROOT = Path(__file__).resolve().parent
RUNS_ENV = "CLIP_RUNS_DIR"
VIEWS = {"Runs": runs_view.view, "Compare": compare.view, "Curves": curves.view, "Embedding space": embedding.view,
         "Query": query.view, "Samples": samples.view, "Similarity matrix": matrix.view,
         "Forgetting": forgetting.view, "Export": export.view}  # tab label -> view; the label is also the ?view= value
REFRESH_S = 10  # a live run flushes its metrics once per epoch; faster polling shows nothing new
OPENMOJI = ("Emoji images: OpenMoji (https://openmoji.org), the open-source emoji and icon "
            "project, CC BY-SA 4.0.")


def runs_root(argv: list[str]) -> Path:
    """The runs folder: --runs-dir after `--` on the command line, else $CLIP_RUNS_DIR, else runs/."""
    parser = argparse.ArgumentParser(prog="streamlit run dashboard.py --", add_help=False, allow_abbrev=False)
    parser.add_argument("--runs-dir", type=Path)
    args, _ = parser.parse_known_args(argv)
    return (args.runs_dir or Path(os.environ.get(RUNS_ENV) or ROOT / "runs")).resolve()


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


# ------------------------------------------------------------------------ live refresh


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
    for tab, name in zip(st.tabs(list(VIEWS), key="view", bind="query-params"), VIEWS, strict=True):
        if tab.open:
            with tab:
                live(VIEWS[name], root, selected)


if __name__ == "__main__":  # Streamlit runs this file once per session and rerun
    main()
else:
    # `streamlit run dashboard.py` finds this st.App and serves it: the server imports this
    # module once at start, so pandas, altair and pyarrow are loaded before the first visitor
    # instead of during their first page load.
    app = st.App(__file__)
