"""Evaluation metrics as pure functions of embedding tensors (L2-normalised rows).

Retrieval follows the CLIP paper and CLIP_benchmark: an image is right at k if any of its
captions is among its k most similar captions; a caption is right at k if its image is
among its k most similar images. Similarities are computed one chunk of queries at a
time, so the full caption-by-image matrix never exists for large sets; the results equal
the full-matrix computation (tests/test_metrics.py checks against a naive reference).

Ties count against the query (the pessimistic rule): the rank of an image is 1 + the number
of captions that are not its own scored >= its best own caption; the rank of a caption is
1 + the number of other images scored >= its own image. An image's own other captions never
count against it. Under the optimistic rule (only scores strictly above) a collapsed model,
every embedding the same vector, would score R@1 = 1.0; under this one it scores 0, below
chance. `i2t_tied_queries` / `t2i_tied_queries` count the queries whose true match is tied
with a wrong item, so a report can say how many ranks the rule decided.

The median rank is the conventional one, the mean of the two middle ranks for an even
count (numpy's and pandas' median), not torch.median's lower middle.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.names import KS

# Metrics are computed in float32 on the CPU even when called inside a bf16/fp16 autocast region
# (evaluation runs under the run's precision): half-precision cosines would tie ranks.
_fp32 = torch.autocast("cpu", enabled=False)


@dataclass
class Retrieval:
    metrics: dict[str, float]
    image_rank: torch.Tensor  # [N] 1-based rank of each image's best-ranked correct caption
    text_rank: torch.Tensor  # [M] 1-based rank of each caption's image
    image_topk: torch.Tensor  # [N, k] caption indices, most similar first
    image_topk_scores: torch.Tensor
    text_topk: torch.Tensor  # [M, k] image indices
    text_topk_scores: torch.Tensor
    image_positive: torch.Tensor  # [N] cosine with its best correct caption
    image_tied: torch.Tensor  # [N] bool: its best correct caption ties with a wrong caption
    text_tied: torch.Tensor  # [M] bool: its image ties with another image


def _summary(prefix: str, ranks: torch.Tensor, ks=KS) -> dict[str, float]:
    r = ranks.double()
    out = {f"{prefix}_R@{k}": (r <= k).double().mean().item() for k in ks}
    out[f"{prefix}_mean_rank"] = r.mean().item()
    out[f"{prefix}_median_rank"] = _median(r)
    return out


def _captions_of(text_to_image: torch.Tensor, n: int) -> torch.Tensor:
    """[n, most captions of one image]: each image's caption indices, padded with -1."""
    order = torch.argsort(text_to_image, stable=True)
    counts = torch.bincount(text_to_image, minlength=n)
    starts = torch.cumsum(counts, 0) - counts
    owner = text_to_image[order]
    table = torch.full((n, int(counts.max())), -1, dtype=torch.long)
    table[owner, torch.arange(len(order)) - starts[owner]] = order
    return table


def _median(values: torch.Tensor) -> float:
    # The mean of the two middles, not torch.median's lower one: analysis/ computes medians and
    # their bootstrap intervals from samples.parquet with numpy, and one run must not show two medians.
    s = values.sort().values
    n = len(s)
    return ((s[(n - 1) // 2] + s[n // 2]) / 2).item()


def _against_and_equal(sims: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, how many entries are >= target[row] (or NaN), and how many are == it; overwrites sims.

    In place, so that no second block of sims' size exists: sign(sims - target) is +1, 0 or -1,
    its row sum is above - below and, after abs, above + below. x - y == 0 exactly when x == y
    for finite floats (gradual underflow), so the counts are the comparisons'. A NaN counts
    against the query (as +1), so a diverged model ranks last, not first. The float32 sums of
    +-1 are exact below 2**24 columns."""
    width = sims.shape[1]
    signs = sims.sub_(target[:, None]).sign_().nan_to_num_(nan=1.0)
    above_minus_below = signs.sum(dim=1)
    above_plus_below = signs.abs_().sum(dim=1)
    below = ((above_plus_below - above_minus_below) / 2).long()
    return width - below, width - above_plus_below.long()


@torch.no_grad()
@_fp32
def retrieval(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
              top_k: int = 5, chunk: int = 1024) -> Retrieval:
    """Image-to-text and text-to-image retrieval; text_to_image[j] is caption j's image index."""
    n, m = len(image_emb), len(text_emb)
    if n == 0 or m == 0:
        raise ValueError("retrieval needs at least one image and one caption")
    if int(text_to_image.min()) < 0 or int(text_to_image.max()) >= n:
        raise ValueError("text_to_image holds an index outside the images")
    has_caption = torch.zeros(n, dtype=torch.bool)
    has_caption[text_to_image] = True
    if not bool(has_caption.all()):
        raise ValueError(f"{int((~has_caption).sum())} image(s) have no caption")
    k_img, k_txt = min(top_k, m), min(top_k, n)
    image_emb, text_emb = image_emb.float(), text_emb.float()  # once, not per chunk
    captions_of = _captions_of(text_to_image, n)
    image_rank = torch.empty(n, dtype=torch.long)
    image_positive = torch.empty(n)
    image_topk = torch.empty(n, k_img, dtype=torch.long)
    image_topk_scores = torch.empty(n, k_img)
    image_tied = torch.empty(n, dtype=torch.bool)
    # Each chunk allocates one [chunk, M] similarity block and nothing else of that size: the
    # positives are gathered, the top-k taken, then the block is turned in place into the
    # counts of scores above and equal to the positive. The image's own captions among those
    # are counted on the gathered [chunk, captions per image] scores instead of a block-sized mask.
    for start in range(0, n, chunk):
        idx = slice(start, min(start + chunk, n))
        sims = image_emb[idx] @ text_emb.T  # [c, M]
        own = captions_of[idx]
        own_scores = sims.gather(1, own.clamp(min=0)).masked_fill_(own < 0, float("-inf"))
        best = own_scores.max(dim=1).values
        # The own captions the block will count against the image: every one not below its best
        # (all of them when the best is NaN), never the padding.
        own_against = ((own >= 0) & ~(own_scores < best[:, None])).sum(dim=1)
        own_equal = (own_scores == best[:, None]).sum(dim=1)
        image_positive[idx] = best
        image_topk_scores[idx], image_topk[idx] = sims.topk(k_img, dim=1)
        against, equal = _against_and_equal(sims, best)
        image_rank[idx] = against - own_against + 1
        image_tied[idx] = equal > own_equal
        del sims  # before the next block is allocated, not after
    text_rank = torch.empty(m, dtype=torch.long)
    text_topk = torch.empty(m, k_txt, dtype=torch.long)
    text_topk_scores = torch.empty(m, k_txt)
    text_tied = torch.empty(m, dtype=torch.bool)
    for start in range(0, m, chunk):
        idx = slice(start, min(start + chunk, m))
        sims = text_emb[idx] @ image_emb.T  # [c, N]
        pos = sims.gather(1, text_to_image[idx][:, None])[:, 0]
        text_topk_scores[idx], text_topk[idx] = sims.topk(k_txt, dim=1)
        against, equal = _against_and_equal(sims, pos)
        text_rank[idx] = against  # its own image is among them: 1 + the others
        text_tied[idx] = equal > 1
        del sims
    metrics = {**_summary("i2t", image_rank), **_summary("t2i", text_rank)}
    metrics["i2t_tied_queries"] = float(image_tied.sum())
    metrics["t2i_tied_queries"] = float(text_tied.sum())
    metrics["chance_R@1"] = 1.0 / n
    return Retrieval(metrics, image_rank, text_rank, image_topk, image_topk_scores, text_topk,
                     text_topk_scores, image_positive, image_tied, text_tied)


@torch.no_grad()
@_fp32
def zero_shot_correct(image_emb: torch.Tensor, image_labels: list[str], label_emb: torch.Tensor,
                      label_names: list[str]) -> torch.Tensor:
    """[N] bool: the image's own label prompt is more similar than every other label's. A tie
    counts against the image, as in retrieval: a collapsed model scores 0, not the share of
    the first label."""
    index = {name: i for i, name in enumerate(label_names)}
    target = torch.tensor([index[label] for label in image_labels])
    sims = image_emb.float() @ label_emb.float().T
    own = sims.gather(1, target[:, None])
    return (sims >= own).sum(dim=1) == 1


def zero_shot_accuracy(image_emb: torch.Tensor, image_labels: list[str], label_emb: torch.Tensor,
                       label_names: list[str]) -> float:
    """Share of images whose own label prompt is the most similar (zero_shot_correct)."""
    return zero_shot_correct(image_emb, image_labels, label_emb, label_names).double().mean().item()


@torch.no_grad()
@_fp32
def modality_gap(image_emb: torch.Tensor, text_emb: torch.Tensor) -> float:
    """Distance between the image and the text centroids (Liang et al. 2022)."""
    return (image_emb.float().mean(0) - text_emb.float().mean(0)).norm().item()


@torch.no_grad()
@_fp32
def pair_cosines(image_emb: torch.Tensor, text_emb: torch.Tensor,
                 text_to_image: torch.Tensor) -> dict[str, float]:
    """Mean cosine of matching and of non-matching (image, caption) pairs.

    The negative mean comes from sums, (sum of images)·(sum of captions) minus the
    positives, so it costs O(d) memory however large the sets."""
    img, txt = image_emb.float(), text_emb.float()
    pos = (img[text_to_image] * txt).sum(dim=1)
    total = img.sum(0) @ txt.sum(0)
    n_neg = len(img) * len(txt) - len(txt)
    neg_mean = ((total - pos.sum()) / n_neg).item() if n_neg > 0 else float("nan")
    return {"positive_cosine": pos.mean().item(), "negative_cosine": neg_mean,
            "positive_cosine_std": pos.std().item() if len(pos) > 1 else float("nan")}
