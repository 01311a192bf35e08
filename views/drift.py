"""The Embedding space view's measurements (analysis/maps.py), cached per run file stamp."""

from __future__ import annotations

import pandas as pd

from analysis import maps
from views.readers import cached, load_map_points, load_spaces


@cached(max_entries=64)
def run_drift(path: str, stamp: str, map_name: str, shared: bool) -> pd.DataFrame:
    start, end = load_spaces(path, stamp)
    return maps.run_drift(start, end, load_map_points(path, stamp, map_name), shared)


@cached(max_entries=64)
def runs_drift(path_a: str, stamp_a: str, path_b: str, stamp_b: str, map_name: str) -> pd.DataFrame:
    return maps.runs_drift(load_spaces(path_a, stamp_a)[1], load_spaces(path_b, stamp_b)[1],
                           load_map_points(path_a, stamp_a, map_name), load_map_points(path_b, stamp_b, map_name))


@cached(max_entries=64)
def gap_figures(path: str, stamp: str) -> pd.DataFrame:
    return maps.gap_table(*load_spaces(path, stamp))


@cached(max_entries=64)
def gap_probe(path: str, stamp: str) -> tuple[pd.DataFrame, bool]:
    return maps.gap_probe(*load_spaces(path, stamp))
