"""The contrastive objective of CLIP.

For a batch of B matching (image, caption) pairs with L2-normalised embeddings x_i, y_i
and temperature t = 1 / exp(logit_scale):

    logits_ij = exp(logit_scale) * <x_i, y_j>
    loss = ( CE(logits, diag) + CE(logits^T, diag) ) / 2

Each image must pick its caption among the B captions of the batch and each caption its
image: the other B - 1 are the negatives.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    # fp32 logits: exp(logit_scale) reaches 100, and half precision would lose the softmax
    logits = logit_scale.float().exp() * image_emb.float() @ text_emb.float().T
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def local(x: torch.Tensor) -> torch.Tensor:
    """One process: its embeddings are the whole batch."""
    return x


def accumulated_clip_backward(model, batch, steps: int, backward, no_sync=nullcontext,
                              gather=local) -> torch.Tensor:
    """The loss of the whole batch (a training.features.TowerBatch) and its gradients,
    computed `steps` micro-batches at a time so that only one micro-batch's activations are
    alive at once (open_clip's accum-freq).

    Every micro-batch still sees the whole batch as negatives: the embeddings of all
    micro-batches are computed once without gradients, then each micro-batch is recomputed
    with gradients and put in its place, and the full loss is backpropagated. The parameter
    gradients add up to those of one pass over the whole batch; the temperature takes part
    with gradients in one pass only, so that its gradient is counted once.

    `gather` joins this process's embeddings with every other process's (see
    training/distributed.py), so the negatives are the global batch; it must keep the
    gradient path to the local slice. The default keeps the batch local (one process)."""
    if steps == 1:
        image, text, scale = model(*batch.model_args())
        loss = clip_loss(gather(image), gather(text), scale)
        backward(loss)
        return loss.detach()
    micro = batch.split(steps)
    steps = len(micro)  # a short last batch may split into fewer pieces
    with torch.no_grad():
        frozen = [model(*m.model_args())[:2] for m in micro]
    for j in range(steps):
        with no_sync() if j < steps - 1 else nullcontext():
            image, text, scale = model(*micro[j].model_args())
            all_images = torch.cat([f[0] for f in frozen[:j]] + [image] + [f[0] for f in frozen[j + 1:]])
            all_texts = torch.cat([f[1] for f in frozen[:j]] + [text] + [f[1] for f in frozen[j + 1:]])
            loss = clip_loss(gather(all_images), gather(all_texts), scale if j == steps - 1 else scale.detach())
            backward(loss)
    return loss.detach()
