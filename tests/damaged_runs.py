"""A runs folder with every kind of trouble the dashboard must survive, built from a folder
of good runs: shared by tests/test_dashboard.py and tests/test_browser.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq

from core import run_store

GOOD = ["tiny/locked", "tiny/unlocked", "tiny/nan-loss", "tiny/live"]
DAMAGED = ["broken/truncated", "broken/zero-byte", "broken/no-config", "broken/missing-column"]


def make_damaged_runs(good_runs: Path, dest: Path) -> Path:
    """dest/ holding GOOD runs (one with NaN values, one still being written) and DAMAGED ones."""
    for key in GOOD + DAMAGED:
        shutil.copytree(good_runs / (key if key == "tiny/unlocked" else "tiny/locked"), dest / key)
    truncate(dest / "broken/truncated" / run_store.SAMPLES)
    (dest / "broken/zero-byte" / run_store.EVAL).write_bytes(b"")
    (dest / "broken/no-config" / run_store.CONFIG).unlink()
    drop_column(dest / "broken/missing-column" / run_store.EVAL, "split")
    add_nans(dest / "tiny/nan-loss")
    make_live(dest / "tiny/live")
    (dest / "notes").mkdir()
    (dest / "notes" / "README.txt").write_text("not a run: the dashboard must skip this folder\n")
    (dest / "tiny" / "scratch").mkdir()
    (dest / "tiny" / "scratch" / "plot.png").write_bytes(b"\x89PNG")
    return dest


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def drop_column(path: Path, column: str) -> None:
    table = pq.read_table(path)
    pq.write_table(table.drop_columns([column]), path)


def rewrite(path: Path, metrics, evals) -> run_store.RunWriter:
    """Rewrite a run's metrics and eval files through the run store's own writer."""
    writer = run_store.RunWriter(path)
    for (step, epoch, wall), rows in metrics.groupby(["step", "epoch", "wall_time"], sort=True):
        writer.log_metrics(step, epoch, wall, dict(zip(rows["name"], rows["value"])))
    for (step, epoch, split), rows in evals.groupby(["step", "epoch", "split"], sort=True):
        writer.log_eval(step, epoch, split, dict(zip(rows["metric"], rows["value"])))
    writer.flush()
    return writer


def add_nans(path: Path) -> None:
    """The loss diverges to NaN for the last few steps, and the last zero-shot accuracy is NaN."""
    metrics, evals = run_store.read_metrics(path), run_store.read_eval(path)
    late = (metrics["name"] == "loss") & (metrics["step"] > metrics["step"].max() - 3)
    metrics.loc[late, "value"] = float("nan")
    last = (evals["step"] == evals["step"].max()) & (evals["metric"] == "zero_shot_accuracy")
    evals.loc[last, "value"] = float("nan")
    rewrite(path, metrics, evals)


def make_live(path: Path) -> None:
    """A run mid-training: RUNNING with this process's pid, half its steps, no final files,
    and a half-written temporary sibling as the atomic writer leaves while writing."""
    metrics, evals = run_store.read_metrics(path), run_store.read_eval(path)
    half = metrics["step"].max() // 2
    writer = rewrite(path, metrics[metrics["step"] <= half], evals[evals["step"] <= half])
    writer.set_status("RUNNING", step=int(half))
    for name in (run_store.EMBEDDINGS, run_store.SAMPLES):
        (path / name).unlink()
    (path / f".{run_store.METRICS}.12345.tmp").write_bytes(b"PAR1 half written")
