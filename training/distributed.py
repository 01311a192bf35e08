"""Collectives for training on several processes (`accelerate launch`, torchrun).

The contrastive loss needs every process's embeddings as negatives. `gather_with_grad`
concatenates the per-process tensors in rank order and lets gradients flow back to this
process's own slice: each process then computes the loss of the whole global batch, and
with DDP averaging the parameter gradients, N processes with batch b take the same step
as one process with batch N*b (open_clip's gather_with_grad without local_loss).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every process's gradient for this process's slice.

    Written out rather than `torch.distributed.nn.functional.all_gather`, whose backward
    needs all_to_all, which the gloo backend (CPU runs) lacks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """[N*B, ...] from every process's [B, ...], rank order; gradients reach the local slice.
    One process: `x` itself."""
    if world_size() == 1:
        return x
    rows = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.empty_like(rows) for _ in range(world_size())]
    dist.all_gather(sizes, rows)
    if len({int(s) for s in sizes}) > 1:
        raise RuntimeError(f"processes hold batches of different sizes {[int(s) for s in sizes]}; the contrastive "
                           f"gather needs equal ones (keep Accelerate's even_batches on)")
    return _GatherWithGrad.apply(x)
