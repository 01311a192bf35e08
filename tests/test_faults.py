"""Faults leave an honest status: NaN losses (stop or skip) and SIGTERM."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import torch

from core import run_store
from tests.conftest import ROOT, TINY_SWEEP
from training.train import main


def _nan_at(monkeypatch, bad_calls: set[int]):
    import training.step as step
    real = step.accumulated_clip_backward
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return torch.tensor(float("nan")) if calls["n"] in bad_calls else loss

    monkeypatch.setattr(step, "accumulated_clip_backward", flaky)


def _train(runs, synthetic_data, tmp_path, *extra):
    return main(["--sweep", str(TINY_SWEEP), "--runs-dir", str(runs), "--data", str(synthetic_data),
                 "--only", "locked", "--cache-dir", str(tmp_path / "cache"), *extra])


def test_nan_loss_stops_the_run_at_the_exact_step(synthetic_data, tmp_path, monkeypatch):
    _nan_at(monkeypatch, {3})
    assert _train(tmp_path / "runs", synthetic_data, tmp_path) == 1
    [run] = run_store.list_runs(tmp_path / "runs")
    assert run.state == "FAILED" and run.status["step"] == run.status["logged_step"] == 3
    assert "at step 3" in run.status["error"]
    loss = run_store.read_metrics(run.path).query("name == 'loss'")
    assert list(loss.step) == [1, 2, 3] and math.isnan(loss.value.iloc[-1])  # NaN stays NaN on disk


def test_nan_loss_can_skip_the_batch(synthetic_data, tmp_path, monkeypatch):
    _nan_at(monkeypatch, {2})
    assert _train(tmp_path / "runs", synthetic_data, tmp_path, "--set", 'on_nan="skip"') == 0
    [run] = run_store.list_runs(tmp_path / "runs")
    assert run.state == "FINISHED" and run.status["skipped_steps"] == 1
    loss = run_store.read_metrics(run.path).query("name == 'loss'").set_index("step").value
    assert math.isnan(loss[2]) and loss.drop(2).notna().all() and len(loss) == run.status["step"]


def test_sigterm_marks_the_run_killed_and_exits_nonzero(synthetic_data, tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "training/train.py", "--sweep", str(TINY_SWEEP), "--runs-dir",
                             str(runs), "--data", str(synthetic_data), "--only", "locked", "--set", "epochs=500",
                             "--cache-dir", str(tmp_path / "cache")], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    status = runs / "tiny" / "locked" / "status.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if json.loads(status.read_text()).get("step", 0) >= 10:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    [run] = run_store.list_runs(runs)
    assert run.state == "KILLED" and "SIGTERM" in run.status["error"] and run.problems == []
    loss = run_store.read_metrics(run.path).query("name == 'loss'")
    # Steps run vs rows persisted: a signal may land after a step and before its metrics.
    assert len(loss) == run.status["logged_step"] and run.status["step"] - run.status["logged_step"] <= 1
    assert list(loss.step) == list(range(1, len(loss) + 1))
