"""Image-caption pairs from a manifest, as tensors a CLIP model can take.

Images are decoded into tensors by `load_pixels` (alpha composited on white,
shortest side resized, centre crop, normalised); the training loop usually sees cached
tower features instead (training/features.py) and decodes nothing.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from PIL import Image

from data.sources.image_check import to_rgb
from training.models import Preprocess, tokenize


def open_rgb(path: str) -> Image.Image:
    return to_rgb(Image.open(path))


def pixels_uint8(path: str, pre: Preprocess) -> torch.Tensor:
    """[3, S, S] uint8: shortest side to S (bicubic), centre crop. Loader workers send these,
    a quarter of the bytes of floats; `normalize` runs on the training device."""
    img = open_rgb(path)
    size = pre.image_size
    if img.size != (size, size):  # an image stored at the model's size (the prepared emoji) is used as is
        s = size / min(img.size)
        w, h = max(size, round(img.width * s)), max(size, round(img.height * s))
        img = img.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()


def normalize(pixels: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 [B, 3, S, S] to the model's normalised float input, on the pixels' device."""
    mean, std = _scale(pre.mean, pre.std, pixels.device)
    return (pixels.float() - mean) / std


@functools.lru_cache(maxsize=8)
def _scale(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Built once per model and device, not copied to the device on every training step.
    return (torch.tensor(mean, device=device)[:, None, None] * 255.0,
            torch.tensor(std, device=device)[:, None, None] * 255.0)


def load_pixels(paths: list[str], pre: Preprocess) -> torch.Tensor:
    """[B, 3, S, S] float: the model's normalised input for these images."""
    if not paths:
        return torch.empty(0, 3, pre.image_size, pre.image_size)
    return normalize(torch.stack([pixels_uint8(path, pre) for path in paths]), pre)


def thumbnail_png(path: str, size: int = 64) -> bytes:
    img = open_rgb(path)
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@dataclass
class Pairs:
    """A dataset as two tables: unique images, and captions pointing at them.

    `images` has image_id, image_path, label, caption (its first caption); `captions` has
    one row per manifest row with `image_index` into `images` and `sample_id`."""

    images: pd.DataFrame
    captions: pd.DataFrame

    def check_labels(self, labels: list[str] | None, where: str) -> None:
        """Fail, naming them, on labels this dataset does not have (a typo would silently select nothing)."""
        known = set(self.images["label"])
        unknown = sorted(set(labels or []) - known)
        if unknown:
            raise ValueError(f"{where}: unknown label(s) {unknown}; this dataset's labels: {sorted(known - {''})}")

    @classmethod
    def from_manifest(cls, manifest: pd.DataFrame) -> Pairs:
        captions = manifest.reset_index(drop=True).copy()
        captions["sample_id"] = [f"txt:{i}" for i in captions.index]
        images = captions.drop_duplicates("image_id").reset_index(drop=True)
        images = images[["image_id", "image_path", "label", "split", "caption"]].copy()
        images["sample_id"] = "img:" + images["image_id"].astype(str)
        position = {iid: i for i, iid in enumerate(images["image_id"])}
        captions["image_index"] = captions["image_id"].map(position).astype(int)
        return cls(images, captions)

    def subset(self, split: str, fraction: float = 1.0, seed: int = 0, max_images: int | None = None,
               include_labels: list[str] | None = None, exclude_labels: list[str] | None = None) -> SplitView:
        """Rows of one split, only of the included labels or without the excluded ones; a seeded
        share (or count) of its images, with all their captions."""
        in_split = self.images["split"].to_numpy() == split
        labels = self.images["label"]
        if include_labels is not None:
            in_split &= labels.isin(include_labels).to_numpy()
        if exclude_labels is not None:
            in_split &= ~labels.isin(exclude_labels).to_numpy()
        image_rows = np.flatnonzero(in_split)
        rng = np.random.default_rng(seed)
        keep = len(image_rows)
        if fraction < 1.0:
            keep = max(2, round(fraction * keep))
        if max_images is not None:
            keep = min(keep, max_images)
        if keep < len(image_rows):
            image_rows = np.sort(rng.choice(image_rows, size=keep, replace=False))
        caption_rows = np.flatnonzero(self.captions["image_index"].isin(image_rows).to_numpy())
        return SplitView(self, split, image_rows, caption_rows)


@dataclass
class SplitView:
    """Index sets into a `Pairs`: which images and which captions belong to this view."""

    pairs: Pairs
    split: str
    image_rows: np.ndarray
    caption_rows: np.ndarray

    @property
    def images(self) -> pd.DataFrame:
        return self.pairs.images.iloc[self.image_rows]

    @property
    def captions(self) -> pd.DataFrame:
        return self.pairs.captions.iloc[self.caption_rows]

    def text_to_image(self) -> torch.Tensor:
        """For each caption of the view, the position of its image within the view's images."""
        local = {g: i for i, g in enumerate(self.image_rows)}
        return torch.tensor([local[g] for g in self.captions["image_index"]], dtype=torch.long)


class PairDataset(torch.utils.data.Dataset):
    """One item per caption row of a view: its caption and image row numbers into the whole
    `Pairs` tables and, when the training loop needs raw inputs, the decoded pixels and the
    caption text, so that loader workers (not the training process) decode and tokenize."""

    def __init__(self, view: SplitView, preprocess: Preprocess | None = None, with_text: bool = False):
        self.caption_rows = view.caption_rows
        self.image_index = view.pairs.captions["image_index"].to_numpy()
        self.paths = view.pairs.images["image_path"].to_numpy() if preprocess else None
        self.captions = view.pairs.captions["caption"].to_numpy() if with_text else None
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.caption_rows)

    def __getitem__(self, i: int) -> dict:
        row = int(self.caption_rows[i])
        item = {"caption_row": row, "image_row": int(self.image_index[row])}
        if self.paths is not None:
            item["pixels"] = pixels_uint8(self.paths[item["image_row"]], self.preprocess)
        if self.captions is not None:
            item["caption"] = self.captions[row]
        return item


def to_device(x, device):
    """A batch input (a tensor, or a dict of token tensors) on `device`."""
    if isinstance(x, dict):
        return {k: v.to(device, non_blocking=True) for k, v in x.items()}
    return x.to(device, non_blocking=True)


class Collate:
    """Items to a batch: row numbers, stacked uint8 pixels, and captions tokenized (padded to the
    batch's longest, rounded up to a multiple of `pad_multiple`) when the items carry them."""

    def __init__(self, tokenizer=None, max_text_len: int = 77, pad_multiple: int = 1):
        self.tokenizer, self.max_text_len, self.pad_multiple = tokenizer, max_text_len, pad_multiple

    def __call__(self, items: list[dict]) -> dict:
        batch = {"caption_rows": torch.tensor([it["caption_row"] for it in items]),
                 "image_rows": torch.tensor([it["image_row"] for it in items])}
        if "pixels" in items[0]:
            batch["pixels"] = torch.stack([it["pixels"] for it in items])
        if "caption" in items[0]:
            batch["tokens"] = tokenize(self.tokenizer, [it["caption"] for it in items], self.max_text_len,
                                       self.pad_multiple)
        return batch


class LengthGroupedBatches(torch.utils.data.Sampler):
    """Shuffled batches of captions of similar token length, as Hugging Face's group_by_length:
    shuffle, cut into pools of `pool` batches, sort each pool by length, cut it into batches,
    shuffle the batches. Padding to each batch's longest caption then costs little."""

    def __init__(self, lengths, batch_size: int, drop_last: bool, seed: int, pool: int = 64):
        self.lengths = list(lengths)
        self.batch_size, self.drop_last, self.seed, self.pool = batch_size, drop_last, seed, pool
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        size = self.pool * self.batch_size
        batches = []
        for lo in range(0, len(order), size):
            chunk = sorted(order[lo:lo + size], key=self.lengths.__getitem__)
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]

    def __iter__(self):
        batches = self._batches()
        self.epoch += 1
        return iter(batches)

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

