"""Shared fixtures: a tiny prepared dataset and a folder of tiny runs trained by train.py
itself, made once per test session (about a minute on two cores)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_SWEEP = ROOT / "tests" / "fixtures" / "tiny_sweep.toml"


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    from data.prepare import prepare

    data_dir = tmp_path_factory.mktemp("data")
    prepare(["synthetic", "--n-images", "48", "--data-dir", str(data_dir)])
    return data_dir / "synthetic"


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, synthetic_data) -> Path:
    """runs/<sweep>/<run> folders written by `training/train.py main()` on the tiny sweep."""
    from training.train import main

    runs_dir = tmp_path_factory.mktemp("runs")
    cache_dir = tmp_path_factory.mktemp("cache")
    code = main(["--sweep", str(TINY_SWEEP), "--runs-dir", str(runs_dir), "--data", str(synthetic_data),
                 "--cache-dir", str(cache_dir)])
    assert code == 0
    return runs_dir
