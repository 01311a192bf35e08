"""Checkpoints and --resume: a run killed with SIGKILL and resumed ends exactly where an
uninterrupted run ends, with one metrics row per step; a tampered checkpoint is refused."""

import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from core import run_store
from core.config import ConfigError
from tests.conftest import ROOT, TINY_SWEEP
from training import checkpoints
from training.train import main

# Unlocked towers in two micro-batches: 10 steps an epoch, 20 in all. Checkpoints at 4, 8, 12,
# 16; the kill lands after step 10 (the end of epoch 1, its metrics and evaluation flushed), so
# the resume starts mid-epoch from step 8 and must drop the rows of steps 9 and 10.
SETTINGS = ["--no-umap", "--only", "unlocked", "--set", "epochs=2", "checkpoint_every=4", "keep_checkpoints=2"]
KILL_AFTER = 10
RESUMED_FROM = 8
TOTAL = 20

DRIVER = f"""
import os, signal, sys
import training.train as train
from core import run_store
real = run_store.RunWriter.heartbeat
def heartbeat(self, step):
    real(self, step)
    if step >= {KILL_AFTER}:
        os.kill(os.getpid(), signal.SIGKILL)
run_store.RunWriter.heartbeat = heartbeat
sys.exit(train.main(sys.argv[1:]))
"""


def _args(runs, data, cache):
    return ["--sweep", str(TINY_SWEEP), "--runs-dir", str(runs), "--data", str(data), "--cache-dir", str(cache),
            *SETTINGS]


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, synthetic_data):
    """A run SIGKILLed after step KILL_AFTER, as it was left on disk."""
    tmp = tmp_path_factory.mktemp("killed")
    driver = tmp / "driver.py"
    driver.write_text(DRIVER)
    proc = subprocess.run([sys.executable, str(driver), *_args(tmp / "runs", synthetic_data, tmp / "cache")],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    return run_store.run_dir(tmp / "runs", "tiny", "unlocked")


def _copy(run, tmp_path):
    dest = run_store.run_dir(tmp_path / "runs", "tiny", "unlocked")
    shutil.copytree(run, dest)
    return dest


def test_killed_run_is_interrupted_with_its_last_checkpoints(killed_run):
    run = run_store.load_run(killed_run)
    assert run.state == run_store.INTERRUPTED and run.problems == []
    assert [step for step, _ in run_store.list_checkpoints(killed_run)] == [RESUMED_FROM - 4, RESUMED_FROM]
    assert run_store.read_metrics(killed_run)["step"].max() == KILL_AFTER


def test_resume_after_sigkill_ends_with_the_uninterrupted_parameters(killed_run, synthetic_data, tmp_path):
    resumed = _copy(killed_run, tmp_path)
    assert main(["--no-umap", "--resume", str(resumed), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert main(_args(tmp_path / "reference", synthetic_data, tmp_path / "cache")) == 0
    reference = run_store.run_dir(tmp_path / "reference", "tiny", "unlocked")

    run = run_store.load_run(resumed)
    assert run.state == "FINISHED" and run.status["resumed_from"] == RESUMED_FROM and run.problems == []
    got, want = run_store.read_final_weights(resumed), run_store.read_final_weights(reference)
    assert got.keys() == want.keys()
    max_diff = max(float((got[k] - want[k]).abs().max()) for k in want)
    metrics = run_store.read_metrics(resumed)
    duplicates = int(metrics.duplicated(["step", "name"]).sum())
    print(f"\nkill after step {KILL_AFTER}, resumed from {RESUMED_FROM}: max |param diff| = {max_diff:.3g} "
          f"over {len(want)} tensors; duplicate metric rows = {duplicates}")
    assert max_diff == 0.0
    assert duplicates == 0
    loss = metrics.query("name == 'loss'").set_index("step")["value"]
    assert list(loss.index) == list(range(1, TOTAL + 1))
    ref_loss = run_store.read_metrics(reference).query("name == 'loss'").set_index("step")["value"]
    assert float((loss - ref_loss).abs().max()) == 0.0
    evals = run_store.read_eval(resumed)
    assert not evals.duplicated(["step", "split", "metric"]).any()
    assert sorted(set(evals["step"])) == [0, 10, 20]


def _malicious(marker):
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    return {"state": Payload()}


@pytest.mark.parametrize("victim", ["random_states_0.pkl", "optimizer.bin"])
def test_a_tampered_checkpoint_is_refused(killed_run, tmp_path, victim):
    resumed = _copy(killed_run, tmp_path)
    marker = tmp_path / "pwned"
    _, latest = run_store.list_checkpoints(resumed)[-1]
    torch.save(_malicious(marker), latest / victim)
    assert main(["--no-umap", "--resume", str(resumed), "--cache-dir", str(tmp_path / "cache")]) == 1
    status = run_store.load_run(resumed).status
    assert status["state"] == "FAILED" and "refused" in status["error"] and victim in status["error"]
    assert not marker.exists()


def test_partial_checkpoints_are_never_listed(killed_run, tmp_path):
    resumed = _copy(killed_run, tmp_path)
    partial = run_store.partial_checkpoint_dir(resumed, 12)
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    assert checkpoints.latest(resumed).step == RESUMED_FROM
    # A folder with a complete name but without its last-written file is not complete either.
    os.remove(run_store.checkpoint_dir(resumed, RESUMED_FROM) / run_store.CHECKPOINT_STATE)
    assert checkpoints.latest(resumed).step == RESUMED_FROM - 4
    assert [r.name for r in run_store.list_runs(tmp_path / "runs")] == ["unlocked"]


def test_resume_refuses_a_run_without_checkpoints(killed_run, tmp_path):
    resumed = _copy(killed_run, tmp_path)
    checkpoints.remove_all(resumed)
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        main(["--no-umap", "--resume", str(resumed), "--cache-dir", str(tmp_path / "cache")])
