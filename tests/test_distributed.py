"""Two CPU processes with batch b train exactly like one process with batch 2b: the contrastive
negatives are gathered across processes with gradients, the loss is reduced before it is
written, and the schedule counts global steps. A two-process run of length-grouped batches,
killed and resumed, ends where the uninterrupted one does."""

import os
import socket
import subprocess
import sys

import pytest

from core import run_store
from tests.conftest import ROOT, TINY_SWEEP
from training.train import main

# The launcher runs this instead of train.py to SIGKILL the main process, when KILL_AFTER is
# set, once it has logged that step's metrics.
DRIVER = """
import os, signal, sys
import training.train as train
from core import run_store
kill_after = int(os.environ.get("KILL_AFTER", "0"))
if kill_after:
    real = run_store.RunWriter.log_metrics
    def log_metrics(self, step, *args):
        real(self, step, *args)
        if step >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    run_store.RunWriter.log_metrics = log_metrics
sys.exit(train.cli())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(runs, data, cache, batch_size, accum_steps, *settings, epochs=1):
    # Unlocked towers, so that the gathered gradients reach every layer.
    return ["--no-umap", "--sweep", str(TINY_SWEEP), "--runs-dir", str(runs), "--data", str(data),
            "--cache-dir", str(cache), "--only", "unlocked", "--set", f"epochs={epochs}", f"batch_size={batch_size}",
            f"accum_steps={accum_steps}", *settings]


def _two_processes(tmp_path, args, kill_after: int = 0) -> subprocess.CompletedProcess:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    # ACCELERATE_USE_CPU: without it Accelerate on CPUs ignores torchrun
    env = dict(os.environ, ACCELERATE_USE_CPU="true", KILL_AFTER=str(kill_after))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(driver), *args],
                          check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_two_processes_match_one_process_with_the_global_batch(synthetic_data, tmp_path):
    # Each process takes 4 pairs a step, in two micro-batches of 2; Accelerate gives process p
    # batches p, p+2, ... of one seeded shuffle, so a global step holds the same 8 pairs, in the
    # same order, as the one-process batch of 8.
    two = tmp_path / "two"
    proc = _two_processes(tmp_path, _args(two, synthetic_data, tmp_path / "cache", 4, 2))
    assert proc.returncode == 0, proc.stderr[-4000:]

    one = tmp_path / "one"
    assert main(_args(one, synthetic_data, tmp_path / "cache", 8, 1)) == 0

    two_run, one_run = (run_store.run_dir(r, "tiny", "unlocked") for r in (two, one))
    assert run_store.load_run(two_run).config["provenance"]["processes"] == 2
    m2, m1 = run_store.read_metrics(two_run), run_store.read_metrics(one_run)
    assert not m2.duplicated(["step", "name"]).any()  # one row per step, written once
    loss2 = m2.query("name == 'loss'").set_index("step")["value"]
    loss1 = m1.query("name == 'loss'").set_index("step")["value"]
    assert list(loss2.index) == list(loss1.index) == list(range(1, 11))
    lr2, lr1 = (m.query("name == 'lr'").set_index("step")["value"] for m in (m2, m1))
    assert (lr2 == lr1).all()
    w2, w1 = run_store.read_final_weights(two_run), run_store.read_final_weights(one_run)
    assert w2.keys() == w1.keys()
    loss_diff = float((loss2 - loss1).abs().max())
    weight_diff = max(float((w2[k] - w1[k]).abs().max()) for k in w1)
    moved = max(float((w1[k] - w0).abs().max()) for k, w0 in _initial_weights(one_run, w1).items())
    print(f"\n2 processes x batch 4 vs 1 process x batch 8, 10 steps: max |loss diff| = {loss_diff:.3g}, "
          f"max |weight diff| = {weight_diff:.3g} (largest weight change in training {moved:.3g})")
    assert loss_diff < 1e-5
    assert weight_diff < 1e-5 and moved > 1e-3  # equal weights that did move


def _initial_weights(run, final):
    """The step-0 values of the trained tensors, rebuilt from the run's config and seed."""
    from accelerate.utils import set_seed

    from core.config import RunConfig
    from training.models import build_model

    config = run_store.load_run(run).config
    cfg = RunConfig.from_saved(config)
    set_seed(cfg.seed)
    state = build_model(cfg).state_dict()
    missing = set(final) - set(state)
    if missing:
        pytest.fail(f"trained tensors not in the model's state dict: {sorted(missing)[:5]}")
    return {k: state[k] for k in final}


def test_two_processes_resume_length_grouped_batches_in_their_epoch_order(synthetic_data, tmp_path):
    # Length-grouped batches shuffle by (seed, epoch). Killed after step 14 of 20, the run
    # resumes in its second epoch from the checkpoint of step 12, and must see that epoch's
    # order, skip its first two batches, and end with the uninterrupted run's weights.
    def args(runs):
        return _args(runs, synthetic_data, tmp_path / "cache", 4, 2, "group_by_length=true", "checkpoint_every=4",
                     "keep_checkpoints=1", epochs=2)

    killed = _two_processes(tmp_path, args(tmp_path / "killed"), kill_after=14)
    assert killed.returncode != 0
    run = run_store.run_dir(tmp_path / "killed", "tiny", "unlocked")
    assert [step for step, _ in run_store.list_checkpoints(run)] == [12]
    resumed = _two_processes(tmp_path, ["--no-umap", "--resume", str(run), "--cache-dir", str(tmp_path / "cache")])
    assert resumed.returncode == 0, resumed.stderr[-4000:]

    straight = _two_processes(tmp_path, args(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-4000:]
    other = run_store.run_dir(tmp_path / "straight", "tiny", "unlocked")
    m1, m2 = (run_store.read_metrics(r).query("name == 'loss'").set_index("step")["value"] for r in (run, other))
    assert list(m1.index) == list(m2.index) == list(range(1, 21))
    w1, w2 = run_store.read_final_weights(run), run_store.read_final_weights(other)
    weight_diff = max(float((w1[k] - w2[k]).abs().max()) for k in w2)
    print(f"\nresumed vs uninterrupted, 2 processes, length-grouped: max |loss diff| "
          f"{float((m1 - m2).abs().max()):.3g}, max |weight diff| {weight_diff:.3g}")
    assert float((m1 - m2).abs().max()) < 1e-5 and weight_diff < 1e-5
