"""Checkpoints of a run in progress, and resuming a run from its last complete one.

A checkpoint is Accelerate's `save_state` (model weights as safetensors; optimizer,
scheduler and every process's RNG state as tensor pickles) plus `trainer_state.json`
(step, epoch, processes), written into a dot-named folder that is renamed into place
once complete: a kill at any moment leaves either the whole checkpoint or none that a
reader lists. The data loader's position is the step: the sampler is seeded per epoch
(Accelerate's seedable sampler), so the resumed run skips the batches already taken.

Loading never runs pickled code: every pickle in the folder is first loaded with
`torch.load(weights_only=True)`, so a tampered checkpoint fails with `CheckpointError`
naming the file, and Accelerate then loads with weights_only too.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import load as safe_torch_load

from core import atomic, run_store


class CheckpointError(Exception):
    """A checkpoint that cannot be resumed from (missing, tampered, from another setup)."""


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path
    state: dict  # trainer_state.json

    @property
    def epoch(self) -> int:
        """The epoch the next step belongs to."""
        return int(self.state["epoch"])

    @property
    def batches_done(self) -> int:
        """Batches of that epoch already trained on."""
        return int(self.state["batch_in_epoch"])


def save(accelerator: Accelerator, run_path: Path, step: int, state: dict, keep: int) -> Path:
    """Write the checkpoint of `step` (every process takes part) and keep the last `keep`."""
    partial = run_store.partial_checkpoint_dir(run_path, step)
    final = run_store.checkpoint_dir(run_path, step)
    if accelerator.is_main_process:
        _remove_leftovers(run_path)
        partial.parent.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic.write_json(partial / run_store.CHECKPOINT_STATE,
                                    dict(state, step=step, processes=accelerator.num_processes))
        if final.exists():  # the same step again (a resumed run that checkpoints where it started)
            _discard(run_path, step, final)
        atomic.publish(partial, final)
        for old_step, old in run_store.list_checkpoints(run_path)[:-keep]:
            _discard(run_path, old_step, old)
    accelerator.wait_for_everyone()
    return final


def latest(run_path: Path) -> Checkpoint | None:
    """The last complete checkpoint of a run, or None."""
    found = run_store.list_checkpoints(run_path)
    if not found:
        return None
    step, path = found[-1]
    try:
        state = json.loads((path / run_store.CHECKPOINT_STATE).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path / run_store.CHECKPOINT_STATE} is unreadable: {e}") from e
    return Checkpoint(step=step, path=path, state=state)


def load(accelerator: Accelerator, checkpoint: Checkpoint) -> None:
    """Restore model, optimizer, scheduler and RNG states from a checkpoint, refusing any
    file that would need arbitrary unpickling."""
    saved = int(checkpoint.state.get("processes", 1))
    if saved != accelerator.num_processes:
        raise CheckpointError(f"{checkpoint.path} was written by {saved} process(es), this run has "
                              f"{accelerator.num_processes}: the global batch and the data order would differ; "
                              f"resume with `accelerate launch --num_processes {saved}`")
    rng_files = sorted(checkpoint.path.glob("random_states_*.pkl"))
    if len(rng_files) != accelerator.num_processes:
        raise CheckpointError(f"{checkpoint.path} holds {len(rng_files)} RNG state file(s) for "
                              f"{accelerator.num_processes} process(es)")
    # Every pickle is checked first, so that a refusal names its file (and the RNG files, whose
    # failed load Accelerate would skip with a log line, cannot slip through).
    for file in sorted(checkpoint.path.iterdir()):
        if file.suffix in (".bin", ".pkl", ".pt"):
            _check_loads_safely(file)
    try:
        accelerator.load_state(str(checkpoint.path))
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{checkpoint.path} holds a file that is not plain tensors and was refused "
                              f"(weights_only): {_first_line(e)}") from e


def remove_all(run_path: Path) -> None:
    """Delete every checkpoint of a run (a fresh start of it), complete ones first renamed away."""
    for step, folder in run_store.list_checkpoints(run_path):
        _discard(run_path, step, folder)
    _remove_leftovers(run_path)


def _check_loads_safely(file: Path) -> None:
    try:
        safe_torch_load(file, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{file} is not plain tensors and was refused (weights_only): {_first_line(e)}") from e
    except (OSError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"{file} is unreadable: {_first_line(e)}") from e


def _first_line(e: Exception) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()  # torch colours its message
    return text.splitlines()[0] if text else e.__class__.__name__


def _discard(run_path: Path, step: int, folder: Path) -> None:
    """Delete a checkpoint folder after renaming it to a dot name, so a kill mid-delete
    never leaves a partial folder under a complete checkpoint's name."""
    trash = run_store.discarded_checkpoint_dir(run_path, step)
    if trash.exists():
        shutil.rmtree(trash)
    os.replace(folder, trash)
    shutil.rmtree(trash)


def _remove_leftovers(run_path: Path) -> None:
    for leftover in run_store.unfinished_checkpoint_dirs(run_path):
        shutil.rmtree(leftover, ignore_errors=True)
