"""A run's trained weights as a small dict of tensors, loading them into a model (init_from,
a finished run's model rebuilt for queries), and WiSE-FT's weight-space interpolation between
a run's start and its end.

WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models") evaluates the
weights theta(a) = (1 - a) * theta_start + a * theta_end for mixing ratios a in [0, 1]:
a = 0 is the model before fine-tuning, a = 1 the fine-tuned one, and the ratios between
often keep most of the gain on the new data while losing less elsewhere.

Only the tensors a run can change are kept (the projection heads, the temperature, any
unlocked tower layers): the rest is the pretrained model the config names, rebuilt
identically, so a file is a few MB instead of the towers' hundred.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from core import run_store
from core.config import RunConfig
from training.models import ClipModel, build_model

FROZEN_FINGERPRINT = "frozen_fingerprint"  # metadata key: a hash of every tensor not in the file


class WeightsMismatch(RuntimeError):
    """Saved weights that do not fit the model they are loaded into."""


def trained_names(model: ClipModel) -> set[str]:
    """The parameters training can change: trainable ones and the temperature (saved even when
    fixed, since the config sets it)."""
    return {n for n, p in model.named_parameters() if p.requires_grad} | {"logit_scale"}


def state_of(model: ClipModel, names: set[str]) -> dict[str, torch.Tensor]:
    """A detached float32 copy, on the CPU, of the named entries of the model's state."""
    state = model.state_dict()
    return {n: state[n].detach().float().cpu().clone() for n in sorted(names)}


def frozen_fingerprint(model: ClipModel, saved: set[str]) -> str:
    """A hash of every tensor outside `saved`: the part a file does not carry must be the
    same in the model that loads it (same pretrained towers, same seed for random ones)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name in saved:
            continue
        t = tensor.detach().flatten()
        h.update(name.encode() + str(tuple(tensor.shape)).encode())
        h.update(t[:: max(1, t.numel() // 256)].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def load_state(model: ClipModel, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into the model in place; every name must exist with the same shape."""
    own = model.state_dict()
    problems = [f"{n} (not in this model)" for n in state if n not in own]
    problems += [f"{n} (shape {tuple(state[n].shape)} vs {tuple(own[n].shape)})"
                 for n in state if n in own and state[n].shape != own[n].shape]
    if problems:
        raise WeightsMismatch(f"the saved weights do not fit this model: {', '.join(problems[:5])}"
                              f"{' ...' if len(problems) > 5 else ''}")
    with torch.no_grad():
        for name, tensor in state.items():
            own[name].copy_(tensor.to(own[name].dtype))


def interpolate(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor],
                ratio: float) -> dict[str, torch.Tensor]:
    """WiSE-FT's (1 - ratio) * start + ratio * end, tensor by tensor; ratio 0 gives `start`
    and 1 gives `end` exactly (torch.lerp computes the end points without rounding)."""
    if start.keys() != end.keys():
        raise WeightsMismatch(f"start and end hold different tensors: {sorted(start.keys() ^ end.keys())[:5]}")
    return {n: torch.lerp(start[n], end[n], float(ratio)) for n in start}


def load_final_weights(model: ClipModel, run: Path | str, model_name: str | None = None) -> set[str]:
    """Load a finished run's final weights into `model` (rebuilt from the run's config, or the
    model a run that starts from it builds); the names loaded. A file whose frozen part differs
    from the model's (another pretrained tower, another seed of a random one), or, with
    `model_name`, that another model trained, is refused (WeightsMismatch)."""
    state = run_store.read_final_weights(run)
    meta = run_store.read_final_weights_metadata(run)
    if meta.get(FROZEN_FINGERPRINT) != frozen_fingerprint(model, set(state)) or (
            model_name is not None and meta.get("model") != model_name):
        raise WeightsMismatch(
            f"{run}: its final weights were trained with model {meta.get('model')!r} on other frozen weights than "
            f"the model here ({model_name or 'rebuilt from its config'}); loading needs the same model, head and "
            f"embed_dim (and, for tiny-clip, the same seed)")
    load_state(model, state)
    return set(state)


def trained_model(run: Path | str) -> ClipModel:
    """A finished run's model, rebuilt from its config.json with its final weights loaded, in
    eval mode: what the write-up's free-text queries and the dashboard's Query tab encode with."""
    cfg = RunConfig.from_saved(run_store.load_run(run).config)
    model = build_model(cfg)
    load_final_weights(model, run)
    return model.eval()
