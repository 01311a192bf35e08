"""One training step, as train.py runs it and bench/ measures it: the optimizer, the
learning-rate schedule, the precision, the attention kernels, and `Stepper`, which turns a
batch into an update and the step's logged values.

    stepper = Stepper(model, model, make_optimizer(model, cfg), scheduler)
    values = stepper(TowerBatch(pixels, tokens))   # {"loss": ..., "lr": ..., "grad_norm": ...}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from core.config import RunConfig
from training.features import TowerBatch
from training.losses import accumulated_clip_backward, local


def resolve_precision(precision: str) -> str:
    """'auto' becomes bf16 where the hardware has native bf16 arithmetic, else fp32 ('no');
    bench/cpu_precision.py measures what it changes on a CPU."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    native = any(getattr(torch.cpu, probe, lambda: False)()
                 for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return "bf16" if native else "no"


def training_attention(device: torch.device, precision: str):
    """The attention kernels of the training step (a context). On a CPU under bf16, PyTorch's
    flash-attention backward is several times slower than its math kernel's (and than its own
    fp32 backward), so the step's attention runs the math kernel there; its forward is a little
    slower, so evaluation and feature extraction keep PyTorch's choice. bench/cpu_precision.py
    times both on a text-unlocked step."""
    if device.type == "cpu" and precision == "bf16":
        return sdpa_kernel(SDPBackend.MATH)
    return nullcontext()


def param_groups(model: torch.nn.Module, cfg: RunConfig) -> list[dict]:
    """Towers at tower_lr, heads and temperature at lr; no weight decay on biases, norms,
    embeddings and the temperature, as open_clip does."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        tower = name.startswith(("image_tower.", "text_tower."))
        exempt = p.ndim < 2 or "logit_scale" in name or "embeddings" in name or "norm" in name
        groups.setdefault((tower, exempt), []).append(p)
    return [dict(params=ps, lr=cfg.tower_lr if tower else cfg.lr,
                 weight_decay=0.0 if exempt else cfg.weight_decay)
            for (tower, exempt), ps in groups.items()]


def make_optimizer(model: torch.nn.Module, cfg: RunConfig, fused: bool = True) -> torch.optim.Optimizer:
    """AdamW over `param_groups`, fused: one kernel for all parameters, on a GPU and on a CPU
    alike (on a CPU PyTorch's default is a Python loop over the tensors: for the two heads of
    the offline default, 4.0 ms a step against the fused kernel's 0.6, more than their forward
    and backward)."""
    return torch.optim.AdamW(param_groups(model, cfg), betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused)


def lr_lambda(cfg: RunConfig, total_steps: int):
    """The schedule's factor of each step: linear warm-up, then constant or cosine decay to 0."""
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: RunConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))


def finish_step(model, trainable: list, optimizer, scheduler, loss: torch.Tensor) -> dict[str, float]:
    """A training step once its gradients are in: the loss (averaged over processes), the
    gradient norm and the logit scale the loss used, read in the step's one host sync (the
    update then runs on the GPU while the next batch is prepared, instead of being waited
    for); the AdamW update unless the loss is not finite; the schedule; the temperature clamp.
    Returns the step's logged values, with the learning rate the update used."""
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in trainable if p.grad is not None])
    loss, norm, scale = torch.stack([loss, grad_norm.float(), model.logit_scale.detach().exp()]).tolist()
    lr = scheduler.get_last_lr()[0]
    if math.isfinite(loss):
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    model.clamp_logit_scale()
    return {"loss": loss, "lr": lr, "logit_scale": scale, "temperature": 1.0 / scale, "grad_norm": norm}


def _backward(loss: torch.Tensor) -> None:
    loss.backward()


@dataclass
class Stepper:
    """A batch in, an optimizer step done, the step's logged values out.

    `model` is what the forward runs through (wrapped for several processes), `raw` the model
    itself (its parameters, logit scale and clamp). One process needs nothing else; under
    Accelerate, train.py passes its backward, no_sync, gather and reduce."""

    model: torch.nn.Module
    raw: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    accum_steps: int = 1
    autocast: Callable = nullcontext  # the run's precision
    attention: Callable = nullcontext  # training_attention's kernels
    backward: Callable = _backward
    no_sync: Callable = nullcontext  # skips the gradient all-reduce of all micro-batches but the last
    gather: Callable = local  # every process's embeddings: the global batch as negatives
    reduce: Callable = local  # the loss averaged over processes: one value per step
    cudagraphs: bool = False  # compile_mode "reduce-overhead": each step must say it starts

    def __post_init__(self):
        self.trainable = [p for p in self.raw.parameters() if p.requires_grad]

    def __call__(self, batch: TowerBatch) -> dict[str, float]:
        if self.cudagraphs:  # a new step: the graphs may reuse the last step's output memory
            torch.compiler.cudagraph_mark_step_begin()
        loss = self.forward_backward(batch)
        return finish_step(self.raw, self.trainable, self.optimizer, self.scheduler, self.reduce(loss))

    def forward_backward(self, batch: TowerBatch) -> torch.Tensor:
        """The batch's loss, with its gradients in the parameters (no update)."""
        with self.autocast(), self.attention():
            return accumulated_clip_backward(self.model, batch, self.accum_steps, self.backward,
                                             self.no_sync, gather=self.gather)
