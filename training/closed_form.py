"""Closed-form linear alignment of frozen tower features: the baseline contrastive training must beat.

With both towers locked ("LL" in Zhai et al. 2022, "LiT: Zero-Shot Transfer with Locked-image
text Tuning") a run trains only two linear heads on fixed features, and a linear map of fixed
features has closed-form answers to "put each image near its captions". LiT's premise is that
frozen pretrained features already hold most of what alignment needs; a closed-form fit of the
same heads measures how much, so a contrastive run is worth something only where it beats it:

- "cca": regularised canonical correlation analysis (Hotelling 1936, "Relations between two sets
  of variates"; ridge as in Vinod 1976 "canonical ridge"): each side centred and whitened with
  (C + ridge * I)^-1/2, then the SVD of the whitened cross-covariance; its top `dim` singular
  directions, each scaled by its canonical correlation (as Gong et al. 2014, "A Multi-View
  Embedding Space for Modeling Internet Images, Tags, and Their Semantics", weight them by a
  power of it), are the maps.
- "least_squares": reduced-rank ridge regression (Izenman 1975; with the ridge, Mukherjee and
  Zhu 2011): ridge regression of the text
  features on the image features, then the principal `dim` directions of the fitted text
  features. Both sides land in those coordinates of the text space: a caption as it is, an
  image as the text its regression predicts. Taking the directions from the fitted values rather
  than from the raw text keeps the text variation the images can explain, which is the
  best rank-`dim` regression in squared error.

Features are paired caption by caption (an image with five captions counts five times), as the
contrastive loss sees them. `ridge` is a share of the mean feature variance of each side, so one
grid serves towers whose features differ in scale and rescaling the features changes nothing.
The maps come back as nn.Linear(in, dim) parameters with the centring folded into the bias.

    ridge, scores = choose_ridge(train, val, dim=256)  # train, val: (image feats, text feats, text_to_image)
    image_map, text_map = fit_heads(*train, dim=256, ridge=ridge)
    load_heads(model, image_map, text_map)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from training import metrics

METHODS = ("cca", "least_squares")
RIDGE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # decades of the mean variance: near-plain whitening to near none
DEFAULT_RIDGE = 0.1  # choose_ridge's pick for both methods on openmoji val, offline default, 224 px, dim 256

LinearMap = tuple[torch.Tensor, torch.Tensor]  # (weight [dim, in], bias [dim]), as nn.Linear(in, dim) holds them
Features = tuple  # (image_features [N, Di], text_features [M, Dt], text_to_image [M])


def _array(x) -> np.ndarray:
    # float64: whitening divides by small eigenvalues, where float32 loses the directions CCA wants.
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def _regularised(cov: np.ndarray, ridge: float) -> np.ndarray:
    return cov + ridge * np.trace(cov) / len(cov) * np.eye(len(cov))


def _inverse_sqrt(sym: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(sym)
    return (vectors / np.sqrt(values)) @ vectors.T


def _fix_signs(image_w: np.ndarray, text_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each direction's sign flipped so its largest image coefficient is positive: a singular
    vector's sign is the LAPACK build's choice, and the maps should not depend on it. Both sides
    flip together, so every image-caption score is unchanged."""
    signs = np.sign(image_w[np.arange(len(image_w)), np.abs(image_w).argmax(axis=1)])
    signs[signs == 0] = 1
    return image_w * signs[:, None], text_w * signs[:, None]


def _cca(xc: np.ndarray, yc: np.ndarray, dim: int, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    n = len(xc) - 1
    wx = _inverse_sqrt(_regularised(xc.T @ xc / n, ridge))
    wy = _inverse_sqrt(_regularised(yc.T @ yc / n, ridge))
    u, rho, vt = np.linalg.svd(wx @ (xc.T @ yc / n) @ wy, full_matrices=False)
    # Scaled by its correlation on each side, direction k weighs rho_k^2 in a score: the
    # weakly correlated tail no longer counts as much as the top (openmoji val i2t R@1 at dim
    # 256: 0.35 against 0.31 unweighted).
    return (u[:, :dim] * rho[:dim]).T @ wx, (vt[:dim].T * rho[:dim]).T @ wy


def _least_squares(xc: np.ndarray, yc: np.ndarray, dim: int, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    n = len(xc) - 1
    coef = np.linalg.solve(_regularised(xc.T @ xc / n, ridge), xc.T @ yc / n)  # [Di, Dt]
    _, _, vt = np.linalg.svd(xc @ coef, full_matrices=False)  # PCA of the fitted texts, centred as xc is
    return vt[:dim] @ coef.T, vt[:dim]


def fit_heads(image_features, text_features, text_to_image, dim: int, method: str = "cca",
              ridge: float = DEFAULT_RIDGE) -> tuple[LinearMap, LinearMap]:
    """Linear maps of the training pairs' frozen features into a shared `dim`-dimensional space,
    in closed form ("cca" or "least_squares", see the module docstring). image_features is one
    row per image, text_features one row per caption, text_to_image[j] caption j's image row.
    `dim` is at most min(Di, Dt, pairs - 1): beyond that the cross-covariance has no more
    directions. Returns (image_map, text_map), each (weight [dim, in], bias [dim]) in float32."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    if not ridge > 0:
        raise ValueError(f"ridge must be positive, got {ridge!r}: without it a rank-deficient covariance "
                         f"has no inverse")
    images, texts = _array(image_features), _array(text_features)
    owners = _array(text_to_image).astype(np.int64)
    if owners.shape != (len(texts),):
        raise ValueError(f"text_to_image has shape {owners.shape}; it needs one image index per caption "
                         f"({len(texts)})")
    if len(owners) and (owners.min() < 0 or owners.max() >= len(images)):
        raise ValueError("text_to_image holds an index outside the images")
    limit = min(images.shape[1], texts.shape[1], len(texts) - 1)
    if not 1 <= dim <= limit:
        raise ValueError(f"dim={dim} must be between 1 and min(image width {images.shape[1]}, text width "
                         f"{texts.shape[1]}, pairs - 1 = {len(texts) - 1}) = {limit}: a linear fit of these "
                         f"pairs has no more directions")
    x = images[owners]
    x_mean, y_mean = x.mean(axis=0), texts.mean(axis=0)
    fit = _cca if method == "cca" else _least_squares
    image_w, text_w = _fix_signs(*fit(x - x_mean, texts - y_mean, dim, ridge))
    return ((torch.from_numpy(image_w).float(), torch.from_numpy(-image_w @ x_mean).float()),
            (torch.from_numpy(text_w).float(), torch.from_numpy(-text_w @ y_mean).float()))


def embed(features, linear_map: LinearMap) -> torch.Tensor:
    """L2-normalised embeddings of features under a fitted map, as a linear head then
    ClipModel.project_* give them."""
    weight, bias = linear_map
    return F.normalize(torch.as_tensor(features).float() @ weight.T + bias, dim=-1)


def choose_ridge(train: Features, val: Features, dim: int, method: str = "cca",
                 grid: tuple[float, ...] = RIDGE_GRID) -> tuple[float, dict[float, float]]:
    """The ridge of `grid` whose fit on `train` gives the best image-to-text R@1 on `val`
    (training.metrics.retrieval, on L2-normalised embeddings). Validation, never test: this is a
    choice that looks at data. A tie goes to the larger ridge, the smoother fit. Returns the
    chosen ridge and every grid point's R@1."""
    val_images, val_texts, val_owners = val
    val_owners = torch.as_tensor(val_owners, dtype=torch.long)
    scores = {}
    for ridge in grid:
        image_map, text_map = fit_heads(*train, dim=dim, method=method, ridge=ridge)
        found = metrics.retrieval(embed(val_images, image_map), embed(val_texts, text_map), val_owners)
        scores[ridge] = found.metrics["i2t_R@1"]
    best = max(scores, key=lambda r: (scores[r], r))
    return best, scores


def _linear_head(head: nn.Module, linear_map: LinearMap, side: str) -> nn.Linear:
    weight, bias = linear_map
    if not isinstance(head, nn.Linear):
        raise ValueError(f"the {side} head is a {type(head).__name__}, not an nn.Linear: closed-form maps load "
                         f"only into head='linear' (an 'mlp' head is not a linear map of the features)")
    if tuple(head.weight.shape) != tuple(weight.shape):
        raise ValueError(f"the {side} head's weight is {tuple(head.weight.shape)}, the map's {tuple(weight.shape)}: "
                         f"fit with dim = the model's embed_dim on this tower's features")
    if head.bias is None:
        # CLIP's and the offline default's heads have no bias, but the fitted maps need one: it
        # holds the centring, without which the cosines mix in the features' mean.
        trainable = head.weight.requires_grad
        head = nn.Linear(head.in_features, head.out_features, bias=True, device=head.weight.device,
                         dtype=head.weight.dtype).requires_grad_(trainable)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return head


def load_heads(model, image_map: LinearMap, text_map: LinearMap) -> None:
    """Put fitted maps into a ClipModel's linear heads, in place. A head without a bias is replaced
    by an nn.Linear of the same shape with one (the state dict gains `image_head.bias` and
    `text_head.bias`); build an optimizer after this call, not before."""
    model.image_head = _linear_head(model.image_head, image_map, "image")
    model.text_head = _linear_head(model.text_head, text_map, "text")
