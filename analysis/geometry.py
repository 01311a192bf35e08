"""The geometry of a CLIP joint embedding space, from stored embeddings (embeddings.parquet),
and how it changes between two states: step 0 and the end of a run, or two runs.

    from analysis.geometry import drift, gap_shift, modality_gap, space_from_frame
    frame = read_embeddings(run.path, prompts=True)
    start, end = space_from_frame(frame, step=0), space_from_frame(frame)   # step 0, the last step
    modality_gap(end)                       # {"gap": ..., "image_cone": ..., "text_cone": ...}
    gap_shift(end)                          # Liang et al. 2022: retrieval as the gap is closed or widened
    drift(start, end, shared_space=False)   # per sample: rank, true-pair cosine, neighbours kept

Retrieval and zero-shot follow training/metrics.py's tie rule exactly (a wrong item tied with the
true match, or a NaN, counts against the query), in float32, one chunk of queries at a time so
that no full caption-by-image block exists; tests/test_geometry.py checks them against
training.metrics. numpy and pandas only: the dashboard and the notebook import this without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from core.names import KS

CHUNK = 1024  # query rows per similarity block: 1,024 x 30,000 float32 is 120 MB
IMAGE, TEXT, PROMPT = "image", "text", "prompt"  # embeddings.parquet's modalities


# ---------------------------------------------------------------------------- one state


@dataclass(frozen=True)
class Space:
    """One state's validation embeddings (L2-normalised float32 rows) in stored row order.

    image_ids and caption_ids are the rows' sample ids ("img:<image_id>", "txt:<n>");
    text_to_image[j] is caption j's image index; the zero-shot prompts, one per class label,
    may be absent (prompt_emb of shape (0, d))."""

    image_ids: np.ndarray
    image_emb: np.ndarray  # [N, d]
    image_labels: np.ndarray
    caption_ids: np.ndarray
    text_emb: np.ndarray  # [M, d]
    text_to_image: np.ndarray  # [M] int
    prompt_labels: np.ndarray
    prompt_emb: np.ndarray  # [L, d]

    def __post_init__(self):
        # Coerced once here, so that every function below can rely on float32 matrices and int indices.
        for name in ("image_emb", "text_emb"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float32))
        for name in ("image_ids", "image_labels", "caption_ids", "prompt_labels"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=object).reshape(-1))
        object.__setattr__(self, "text_to_image", np.asarray(self.text_to_image, dtype=np.int64).reshape(-1))
        if self.image_emb.ndim != 2 or self.text_emb.ndim != 2 or self.image_emb.shape[1] != self.text_emb.shape[1]:
            raise ValueError(f"image_emb {self.image_emb.shape} and text_emb {self.text_emb.shape} must be "
                             "matrices of one width")
        prompt_emb = np.asarray(self.prompt_emb, dtype=np.float32)
        object.__setattr__(self, "prompt_emb", prompt_emb.reshape(0, self.dim) if prompt_emb.size == 0 else prompt_emb)
        n, m = len(self.image_emb), len(self.text_emb)
        for name, length in (("image_ids", n), ("image_labels", n), ("caption_ids", m), ("text_to_image", m),
                             ("prompt_labels", len(self.prompt_emb))):
            if len(getattr(self, name)) != length:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {length} rows")
        if self.prompt_emb.ndim != 2 or self.prompt_emb.shape[1] != self.dim:
            raise ValueError(f"prompt_emb {self.prompt_emb.shape} does not match the width {self.dim}")
        if m and (self.text_to_image.min() < 0 or self.text_to_image.max() >= n):
            raise ValueError("text_to_image holds an index outside the images")
        for name in ("image_ids", "caption_ids", "prompt_labels"):
            if not pd.Index(getattr(self, name)).is_unique:
                raise ValueError(f"{name} are not unique: states are aligned on them")

    @property
    def dim(self) -> int:
        return self.image_emb.shape[1]


def space_from_frame(frame: pd.DataFrame, step: int | None = None) -> Space:
    """The Space of one step of an embeddings frame (run_store.read_embeddings, with prompts for
    zero-shot): `step`, or the last one when None. A caption's image is the image row of the
    same image_id."""
    if frame.empty:
        raise ValueError("no embeddings: the frame is empty (they are written when a run finishes)")
    chosen = int(frame["step"].max()) if step is None else int(step)
    rows = frame[frame["step"] == chosen]
    if rows.empty:
        raise ValueError(f"no embeddings at step {chosen}; the frame has steps {sorted(set(frame['step']))}")
    images, texts, prompts = (rows[rows["modality"] == m] for m in (IMAGE, TEXT, PROMPT))
    if images.empty or texts.empty:
        raise ValueError(f"step {chosen} has {len(images)} image and {len(texts)} caption rows: both are needed")
    image_of = pd.Index(images["image_id"])
    if not image_of.is_unique:
        raise ValueError(f"step {chosen} has several image rows for one image_id")
    t2i = image_of.get_indexer(texts["image_id"])
    if (t2i < 0).any():
        orphans = texts[t2i < 0]
        raise ValueError(f"{len(orphans)} caption(s) at step {chosen} have no image row, e.g. "
                         f"{orphans['sample_id'].iloc[0]!r} (image_id {orphans['image_id'].iloc[0]!r})")
    return Space(image_ids=images["sample_id"].to_numpy(), image_emb=_matrix(images["embedding"]),
                 image_labels=images["label"].to_numpy(), caption_ids=texts["sample_id"].to_numpy(),
                 text_emb=_matrix(texts["embedding"]), text_to_image=t2i,
                 prompt_labels=prompts["label"].to_numpy(),
                 prompt_emb=_matrix(prompts["embedding"]) if len(prompts) else np.zeros((0, 0), np.float32))


def _matrix(vectors: pd.Series) -> np.ndarray:
    return np.stack(vectors.to_numpy()).astype(np.float32)


# ---------------------------------------------------------------------------- retrieval


def ranks(space: Space, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """(image_rank [N], text_rank [M]), 1-based, as training.metrics.retrieval: an image's rank
    is that of its best own caption, a caption's that of its image."""
    image_rank, text_rank, _, _ = _ranks(space, chunk)
    return image_rank, text_rank


def retrieval_summary(space: Space, chunk: int = CHUNK) -> dict[str, float]:
    """R@1/5/10 both ways ("i2t_R@1", ..., "t2i_R@10"), training.metrics.retrieval's values."""
    image_rank, text_rank = ranks(space, chunk)
    return {f"{prefix}_R@{k}": float(np.count_nonzero(r <= k) / len(r))
            for prefix, r in (("i2t", image_rank), ("t2i", text_rank)) for k in KS}


def zero_shot_correct(space: Space, chunk: int = CHUNK) -> np.ndarray:
    """[N] bool: the image's own label prompt is more similar than every other label's (a tie
    counts against it), training.metrics.zero_shot_correct with label_names = prompt_labels."""
    if len(space.prompt_labels) == 0:
        raise ValueError("no zero-shot prompts in this space (a dataset without labels, or an older run)")
    index = {label: i for i, label in enumerate(space.prompt_labels)}
    unknown = sorted({str(x) for x in space.image_labels if x not in index})
    if unknown:
        raise ValueError(f"{len(unknown)} image label(s) have no prompt, e.g. {unknown[0]!r}")
    target = np.array([index[x] for x in space.image_labels], dtype=np.int64)
    correct = np.empty(len(target), dtype=bool)
    for sl in _chunks(len(target), chunk):
        sims = space.image_emb[sl] @ space.prompt_emb.T
        own = sims[np.arange(len(sims)), target[sl]]
        with np.errstate(invalid="ignore"):
            correct[sl] = np.count_nonzero(sims >= own[:, None], axis=1) == 1
    return correct


def _ranks(space: Space, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ranks both ways and the true pairs' cosines (an image's best own caption's; a caption's
    image's), under training.metrics' pessimistic rule.

    training.metrics counts the entries whose sign(score - true) is not -1 (a NaN as +1): for
    floats with gradual underflow score - true < 0 exactly when score < true, and a NaN on
    either side compares false, so `not (score < true)` is the same count."""
    n, m = len(space.image_emb), len(space.text_emb)
    if n == 0 or m == 0:
        raise ValueError("retrieval needs at least one image and one caption")
    t2i = space.text_to_image
    counts = np.bincount(t2i, minlength=n)
    if (counts == 0).any():
        raise ValueError(f"{int((counts == 0).sum())} image(s) have no caption")
    order = np.argsort(t2i, kind="stable")
    starts = np.cumsum(counts) - counts
    captions_of = np.full((n, counts.max()), -1, dtype=np.int64)  # each image's captions, padded with -1
    captions_of[t2i[order], np.arange(m) - starts[t2i[order]]] = order
    image_rank, image_positive = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.float32)
    text_rank, text_positive = np.empty(m, dtype=np.int64), np.empty(m, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        for sl in _chunks(n, chunk):
            sims = space.image_emb[sl] @ space.text_emb.T  # [c, M]
            own = captions_of[sl]
            own_scores = np.take_along_axis(sims, np.maximum(own, 0), axis=1)
            own_scores[own < 0] = -np.inf
            best = own_scores.max(axis=1)
            # Its own captions not below the best (all of them when it is NaN) are not counted against it.
            own_against = np.count_nonzero((own >= 0) & ~(own_scores < best[:, None]), axis=1)
            image_rank[sl] = m - np.count_nonzero(sims < best[:, None], axis=1) - own_against + 1
            image_positive[sl] = best
            del sims  # before the next block is allocated, not after
        for sl in _chunks(m, chunk):
            sims = space.text_emb[sl] @ space.image_emb.T  # [c, N]
            pos = sims[np.arange(len(sims)), t2i[sl]]
            text_rank[sl] = n - np.count_nonzero(sims < pos[:, None], axis=1)  # its own image is 1 of them
            text_positive[sl] = pos
            del sims
    return image_rank, text_rank, image_positive, text_positive


def _chunks(n: int, chunk: int):
    return (slice(start, min(start + chunk, n)) for start in range(0, n, chunk))


# ---------------------------------------------------------------------------- the modality gap


def modality_gap(space: Space) -> dict[str, float]:
    """"gap": the distance between the image and the caption centroids (training.metrics.modality_gap,
    Liang et al. 2022); "image_cone", "text_cone": the mean cosine of distinct pairs within each
    modality, how narrow a cone each occupies (computed from sums, O(d) memory)."""
    gap = np.linalg.norm(space.image_emb.mean(0, dtype=np.float64) - space.text_emb.mean(0, dtype=np.float64))
    return {"gap": float(gap), "image_cone": _cone(space.image_emb), "text_cone": _cone(space.text_emb)}


def _cone(x: np.ndarray) -> float:
    """Mean cosine over ordered pairs i != j of unit rows: (|sum x|^2 - sum |x|^2) / (n (n - 1))."""
    n = len(x)
    if n < 2:
        return float("nan")
    total = x.sum(0, dtype=np.float64)
    squares = np.einsum("ij,ij->", x, x, dtype=np.float64)
    return float((total @ total - squares) / (n * (n - 1)))


def gap_shift(space: Space, shifts=np.linspace(-1, 1, 9), chunk: int = CHUNK) -> pd.DataFrame:
    """Liang et al. 2022's probe ("Mind the Gap"): does retrieval depend on the gap? With
    delta = mean(image) - mean(text), images move to unit(x - s delta / 2) and captions and prompts
    to unit(y + s delta / 2): s = 1 brings both centroids to their midpoint before renormalising
    (closing most of the gap), s < 0 widens it. At s = 0 the stored vectors are used as they are,
    so that row equals the unshifted metrics exactly.
    Columns: shift, gap, i2t_R@1, t2i_R@1, zero_shot_accuracy (NaN without prompts)."""
    delta = space.image_emb.mean(0, dtype=np.float64) - space.text_emb.mean(0, dtype=np.float64)
    rows = []
    for s in np.asarray(shifts, dtype=np.float64):
        half = s * delta / 2
        moved = space if s == 0 else replace(space, image_emb=unit(space.image_emb - half),
                                              text_emb=unit(space.text_emb + half),
                                              prompt_emb=unit(space.prompt_emb + half))
        image_rank, text_rank, _, _ = _ranks(moved, chunk)
        zero_shot = zero_shot_correct(moved, chunk).mean() if len(moved.prompt_labels) else np.nan
        rows.append({"shift": float(s), "gap": modality_gap(moved)["gap"],
                     "i2t_R@1": float(np.count_nonzero(image_rank <= 1) / len(image_rank)),
                     "t2i_R@1": float(np.count_nonzero(text_rank <= 1) / len(text_rank)),
                     "zero_shot_accuracy": float(zero_shot)})
    return pd.DataFrame(rows, columns=["shift", "gap", "i2t_R@1", "t2i_R@1", "zero_shot_accuracy"])


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1, as float32; a zero or NaN row becomes NaN (ranks count it against
    its query, and a cosine matrix shows it as NaN, never as 0)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # a zero or NaN row becomes NaN, which ranks count against
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------- two states


def knn_overlap(a: np.ndarray, b: np.ndarray, k: int, chunk: int = CHUNK) -> np.ndarray:
    """[n]: for row i, |kNN_a(i) & kNN_b(i)| / k by cosine, i itself excluded. a and b hold the
    same samples in the same order, in spaces of any widths: the share of a sample's neighbours
    that it keeps, which needs no common coordinates. Ties at the k-th similarity go to the
    lower row index, so equal similarities give equal sets."""
    a, b = unit(a), unit(b)
    n = len(a)
    if len(b) != n:
        raise ValueError(f"a has {n} rows and b {len(b)}: they must be the same samples")
    if not 1 <= k <= n - 1:
        raise ValueError(f"k = {k} neighbours need 1 <= k <= n - 1 = {n - 1}")
    overlap = np.empty(n)
    for sl in _chunks(n, chunk):
        rows = np.arange(sl.start, sl.stop)
        kept = _neighbours(a[sl] @ a.T, rows, k) & _neighbours(b[sl] @ b.T, rows, k)
        overlap[sl] = np.count_nonzero(kept, axis=1) / k
    return overlap


def _neighbours(sims: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """[c, n] bool: each row's k most similar columns, itself excluded; overwrites sims."""
    sims[np.isnan(sims)] = -np.inf
    sims[np.arange(len(rows)), rows] = -np.inf
    kth = np.partition(sims, sims.shape[1] - k, axis=1)[:, sims.shape[1] - k]
    chosen = sims > kth[:, None]
    at_kth = sims == kth[:, None]
    short = k - np.count_nonzero(chosen, axis=1)
    crowded = np.flatnonzero(np.count_nonzero(at_kth, axis=1) > short)  # ties at the k-th: the first ones
    if len(crowded):
        at_kth[crowded] &= np.cumsum(at_kth[crowded], axis=1) <= short[crowded, None]
    return chosen | at_kth


DRIFT_COLUMNS = ["sample_id", "modality", "rank_start", "rank_end", "rank_change", "positive_cosine_start",
                 "positive_cosine_end", "positive_cosine_change", "knn_overlap", "cosine_distance"]


def drift(start: Space, end: Space, shared_space: bool, k: int = 10) -> pd.DataFrame:
    """Per image and per caption present in both states: how its retrieval and its place changed.

    Columns DRIFT_COLUMNS: the rank both ways' start, end and change (end - start: negative is
    better) and the same for the true pair's cosine (an image's best own caption, a caption's
    image), computed on the shared rows of each state; knn_overlap, the share of its k nearest
    neighbours of its own modality kept (k clipped to n - 1); cosine_distance, 1 - cos between
    its two vectors, NaN unless `shared_space`: when the heads start random, step 0 and the end
    are different spaces and a cosine across them means nothing. Images first, in start's order;
    an image whose captions are all missing from either state is left out (it has no rank)."""
    a, b = _aligned(start, end)
    if shared_space and a.dim != b.dim:
        raise ValueError(f"shared_space with widths {a.dim} and {b.dim}: two spaces of different widths")
    image_rank_a, text_rank_a, image_pos_a, text_pos_a = _ranks(a, CHUNK)
    image_rank_b, text_rank_b, image_pos_b, text_pos_b = _ranks(b, CHUNK)
    parts = []
    for modality, ids, x, y, rank_a, rank_b, pos_a, pos_b in (
            (IMAGE, a.image_ids, a.image_emb, b.image_emb, image_rank_a, image_rank_b, image_pos_a, image_pos_b),
            (TEXT, a.caption_ids, a.text_emb, b.text_emb, text_rank_a, text_rank_b, text_pos_a, text_pos_b)):
        n = len(ids)
        pos_a, pos_b = pos_a.astype(np.float64), pos_b.astype(np.float64)
        parts.append(pd.DataFrame({
            "sample_id": ids, "modality": modality, "rank_start": rank_a, "rank_end": rank_b,
            "rank_change": rank_b - rank_a, "positive_cosine_start": pos_a, "positive_cosine_end": pos_b,
            "positive_cosine_change": pos_b - pos_a,
            "knn_overlap": knn_overlap(x, y, min(k, n - 1)) if n > 1 else np.full(n, np.nan),
            "cosine_distance": _cosine_distance(x, y) if shared_space else np.full(n, np.nan)},
            columns=DRIFT_COLUMNS))
    return pd.concat(parts, ignore_index=True)


def _cosine_distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x, y = x.astype(np.float64), y.astype(np.float64)
    # sqrt(xx * yy), not |x| |y|: for y == x it is exactly xx (a correctly rounded sqrt of a
    # square), so an unmoved sample is at distance 0, not at a rounding error from it.
    cos = np.einsum("ij,ij->i", x, y) / np.sqrt(np.einsum("ij,ij->i", x, x) * np.einsum("ij,ij->i", y, y))
    return 1.0 - np.clip(cos, -1.0, 1.0)


def _aligned(start: Space, end: Space) -> tuple[Space, Space]:
    """Both states restricted to the images and captions they share, in start's order."""
    end_caption = pd.Index(end.caption_ids).get_indexer(start.caption_ids)
    shared = np.flatnonzero(end_caption >= 0)
    image_a = start.image_ids[start.text_to_image[shared]]
    image_b = end.image_ids[end.text_to_image[end_caption[shared]]]
    if (image_a != image_b).any():
        raise ValueError(f"{int((image_a != image_b).sum())} caption(s) belong to different images in the two states")
    images_a = np.flatnonzero(np.isin(np.arange(len(start.image_ids)), start.text_to_image[shared]))
    if len(images_a) == 0:
        raise ValueError(f"the two states share no captioned image: start has {len(start.image_ids)} images and "
                         f"{len(start.caption_ids)} captions, end {len(end.image_ids)} and {len(end.caption_ids)}, "
                         f"{int(np.isin(start.image_ids, end.image_ids).sum())} images and "
                         f"{int((end_caption >= 0).sum())} captions shared")
    images_b = pd.Index(end.image_ids).get_indexer(start.image_ids[images_a])
    return _subset(start, images_a, shared), _subset(end, images_b, end_caption[shared])


def _subset(space: Space, images: np.ndarray, captions: np.ndarray) -> Space:
    new_index = np.full(len(space.image_ids), -1, dtype=np.int64)
    new_index[images] = np.arange(len(images))
    return replace(space, image_ids=space.image_ids[images], image_emb=space.image_emb[images],
                   image_labels=space.image_labels[images], caption_ids=space.caption_ids[captions],
                   text_emb=space.text_emb[captions], text_to_image=new_index[space.text_to_image[captions]])


def map_movement(start_xy: pd.DataFrame, end_xy: pd.DataFrame) -> pd.DataFrame:
    """Per sample in both frames (sample_id, modality, x, y), the 2-D distance it moved
    (columns sample_id, modality, moved), in start's order. The coordinates must be of one map
    (a projection fitted to both states): two separate fits have unrelated axes."""
    for name, xy in (("start_xy", start_xy), ("end_xy", end_xy)):
        if xy["sample_id"].duplicated().any():
            raise ValueError(f"{name} has several rows for one sample_id (one step of one map, please)")
    both = start_xy[["sample_id", "modality", "x", "y"]].merge(end_xy[["sample_id", "x", "y"]], on="sample_id",
                                                               suffixes=("_start", "_end"))
    if both.empty:
        raise ValueError(f"no sample is in both frames ({len(start_xy)} and {len(end_xy)} rows)")
    moved = np.hypot(both["x_end"].to_numpy(np.float64) - both["x_start"].to_numpy(np.float64),
                     both["y_end"].to_numpy(np.float64) - both["y_start"].to_numpy(np.float64))
    return pd.DataFrame({"sample_id": both["sample_id"].to_numpy(), "modality": both["modality"].to_numpy(),
                         "moved": moved})
