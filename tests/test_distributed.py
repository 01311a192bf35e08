"""Two CPU processes with batch b train exactly like one process with batch 2b: the contrastive
negatives are gathered across processes with gradients, the loss is reduced before it is
written, and the schedule counts global steps."""

import os
import socket
import subprocess
import sys

import pytest

from training import run_store
from training.train import main

from conftest import ROOT, TINY_SWEEP

# The launcher runs this instead of train.py only to skip the UMAP fit of finished runs.
DRIVER = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import training.train as train
train.project_runs = lambda paths: {{}}
sys.exit(train.cli())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(runs, data, cache, batch_size, accum_steps):
    # Unlocked towers, so that the gathered gradients reach every layer.
    return ["--sweep", str(TINY_SWEEP), "--runs-dir", str(runs), "--data", str(data), "--cache-dir", str(cache),
            "--only", "unlocked", "--set", "epochs=1", f"batch_size={batch_size}", f"accum_steps={accum_steps}"]


def test_two_processes_match_one_process_with_the_global_batch(synthetic_data, tmp_path, monkeypatch):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    # Each process takes 4 pairs a step, in two micro-batches of 2; Accelerate gives process p
    # batches p, p+2, ... of one seeded shuffle, so a global step holds the same 8 pairs, in the
    # same order, as the one-process batch of 8.
    two = tmp_path / "two"
    env = dict(os.environ, ACCELERATE_USE_CPU="true")  # without it Accelerate on CPUs ignores torchrun
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(driver),
                           *_args(two, synthetic_data, tmp_path / "cache", 4, 2)],
                          check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    from training import train
    monkeypatch.setattr(train, "project_runs", lambda paths: {})
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

    from training.config import FIELDS, RunConfig
    from training.models import build_model

    config = run_store.load_run(run).config
    cfg = RunConfig(**{k: v for k, v in config.items() if k in FIELDS})
    set_seed(cfg.seed)
    state = build_model(cfg).state_dict()
    missing = set(final) - set(state)
    if missing:
        pytest.fail(f"trained tensors not in the model's state dict: {sorted(missing)[:5]}")
    return {k: state[k] for k in final}
