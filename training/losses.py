"""The contrastive objective of CLIP.

For a batch of B matching (image, caption) pairs with L2-normalised embeddings x_i, y_i
and temperature t = 1 / exp(logit_scale):

    logits_ij = exp(logit_scale) * <x_i, y_j>
    loss = ( CE(logits, diag) + CE(logits^T, diag) ) / 2

Each image must pick its caption among the B captions of the batch and each caption its
image: the other B - 1 are the negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    # fp32 logits: exp(logit_scale) reaches 100, and half precision would lose the softmax
    logits = logit_scale.float().exp() * image_emb.float() @ text_emb.float().T
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
