"""Operations the host dispatches per training step: the project's ViT-B/32 step against
open_clip's, counted on the CPU (no GPU needed; the count does not depend on the machine).

An eager training step on a fast GPU is host-bound: the H200 profile (bench/gpu_diagnosis_h200.txt)
spent 395 ms of CPU against 173 ms of CUDA time over four steps, so at equal FLOPs the step with
more kernels to launch is the slower one. This counts every aten operation of one forward and
backward (bf16 autocast, SDPA attention, batch 4, COCO-like 14-token captions) by a
TorchDispatchMode, and separately those that launch work (not views, detaches or shape-only
ops), for both models built as bench/gpu_step.py builds them, and for the project's model with
transformers' own CLIPAttention (separate query, key and value projections) to measure what
fusing them saves. The optimizer is left out: the project runs fused AdamW on a GPU (one
launch) and open_clip's loop foreach AdamW.

    .venv/bin/python bench/step_ops.py
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import bench.gpu_step as gpu_step
import training.models as models
from bench.results import record
from training.features import TowerBatch
from training.losses import accumulated_clip_backward

ROOT = Path(__file__).resolve().parents[1]

COMMAND = ".venv/bin/python bench/step_ops.py"
BATCH, TOKENS = 4, 14
NO_WORK = {"detach", "t", "lift_fresh", "_unsafe_view"}  # aliases and shape-only ops (with is_view ones)


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__, func.is_view or func.overloadpacket.__name__ in NO_WORK] += 1
        return func(*args, **(kwargs or {}))

    def total(self, launching_only: bool = False) -> int:
        return sum(n for (_, no_work), n in self.ops.items() if not (launching_only and no_work))


def count(forward_backward, images, tokens) -> OpCounter:
    forward_backward(images, tokens)  # the first call builds caches (autocast, SDPA choice)
    with OpCounter() as counter:
        forward_backward(images, tokens)
    return counter


def project_forward_backward(model, cfg):
    """bench/gpu_step.py's project step without its CPU-only choice of the math attention
    kernel (training.step.training_attention): on a GPU, SDPA runs one fused kernel, as here."""
    def forward_backward(images, tokens):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return accumulated_clip_backward(model, TowerBatch(images, tokens), cfg.accum_steps,
                                             lambda loss: loss.backward())

    return forward_backward


def project_count(images, fuse: bool) -> OpCounter:
    """The project's step, with its attention as trained (fused projections) or as transformers
    ships it (the peer that measures what fusing saves)."""
    with mock.patch.object(models, "fuse_qkv_projections", models.fuse_qkv_projections if fuse else lambda clip: 0):
        model, cfg = gpu_step.project_model(models.RANDOM_CLIP_B32, False, torch.device("cpu"))
    model.train()
    tokens = gpu_step.project_tokens([TOKENS] * BATCH, torch.device("cpu"), model.tokenizer)
    return count(project_forward_backward(model, cfg), images, tokens)


def main() -> int:
    torch.manual_seed(0)
    images = torch.randn(BATCH, 3, 224, 224)
    project, unfused = project_count(images, fuse=True), project_count(images, fuse=False)
    _, openclip_fb, _ = gpu_step.openclip_stepper(torch.device("cpu"))
    peer = count(openclip_fb, images, gpu_step.openclip_tokens([TOKENS] * BATCH, torch.device("cpu")))

    print(f"{'':28s} {'project':>9s} {'unfused':>9s} {'open_clip':>9s} {'ratio':>7s}")
    for label, launching in (("aten ops, forward+backward", False), ("  of which launch work", True)):
        a, u, b = project.total(launching), unfused.total(launching), peer.total(launching)
        print(f"{label:28s} {a:9d} {u:9d} {b:9d} {a / b:7.3f}")
    top = collections.Counter()
    for (name, no_work), n in project.ops.items():
        if not no_work:
            top[name] += n - peer.ops.get((name, no_work), 0)
    extra = ", ".join(f"{name} {n:+d}" for name, n in top.most_common(5))
    print(f"most added by the project step: {extra}")

    a, u, b = project.total(True), unfused.total(True), peer.total(True)
    setup = f"ViT-B/32 forward+backward, bf16 autocast, SDPA, batch {BATCH}, {TOKENS}-token captions"
    record("step_ops.launching_ops_ratio", round(a / b, 3), "x open_clip", "",
           f"{setup}: {a} operations that launch work against open_clip's {b} ({project.total()} vs "
           f"{peer.total()} with views); with transformers' own attention {u} ({u / b:.3f}x); most added: "
           f"{extra}. Eager GPU steps are host-bound, so this bounds the eager step's speed against "
           f"open_clip's at equal FLOPs", COMMAND)
    record("step_ops.fused_qkv_saving", round(u / a, 3), "x fewer", "",
           f"{setup}: {u} operations that launch work with transformers' CLIPAttention, {a} with the query, "
           f"key and value projections fused (training.models.fuse_qkv_projections)", COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
