"""Altair charts as Vega-Lite specs that Streamlit draws and caches.

A view draws a chart from a cached function that returns vega_lite(chart): a rerun with the
same inputs (a widget another chart listens to, a tab switch, a new session) then neither
builds nor validates the Altair chart again.
"""

from __future__ import annotations

import hashlib
import pickle

import altair as alt
import pandas as pd
import streamlit as st

# Charts are built from tested code; validating each one as it is built costs tens of
# milliseconds per chart on every rerun. Altair still validates the final spec.
alt.utils.schemapi.disable_debug_mode()
# No width/height defaults in specs: Streamlit sizes charts to their column. (st.altair_chart
# switches this theme on and off around each chart; set once, it is never switched.)
alt.theme.enable("none")


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
