"""Image-caption pairs from a manifest, as tensors a CLIP model can take.

Images are decoded once into tensors by `load_pixels` (alpha composited on white,
shortest side resized, centre crop, normalised); the training loop usually sees cached
tower features instead (training/features.py) and decodes nothing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from PIL import Image

from training.models import Preprocess


def open_rgb(path: str) -> Image.Image:
    img = Image.open(path)
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(canvas, img)
    return img.convert("RGB")


def load_pixels(paths: list[str], pre: Preprocess) -> torch.Tensor:
    """[B, 3, S, S] float tensor: shortest side to S (bicubic), centre crop, normalised."""
    out = torch.empty(len(paths), 3, pre.image_size, pre.image_size)
    mean = torch.tensor(pre.mean)[:, None, None]
    std = torch.tensor(pre.std)[:, None, None]
    for i, path in enumerate(paths):
        img = open_rgb(path)
        s = pre.image_size / min(img.size)
        w, h = max(pre.image_size, round(img.width * s)), max(pre.image_size, round(img.height * s))
        img = img.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - pre.image_size) // 2, (h - pre.image_size) // 2
        img = img.crop((left, top, left + pre.image_size, top + pre.image_size))
        arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        out[i] = (arr - mean) / std
    return out


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

    @classmethod
    def from_manifest(cls, manifest: pd.DataFrame) -> "Pairs":
        captions = manifest.reset_index(drop=True).copy()
        captions["sample_id"] = [f"txt:{i}" for i in captions.index]
        images = captions.drop_duplicates("image_id").reset_index(drop=True)
        images = images[["image_id", "image_path", "label", "split", "caption"]].copy()
        images["sample_id"] = "img:" + images["image_id"].astype(str)
        position = {iid: i for i, iid in enumerate(images["image_id"])}
        captions["image_index"] = captions["image_id"].map(position).astype(int)
        return cls(images, captions)

    def subset(self, split: str, fraction: float = 1.0, seed: int = 0,
               max_images: int | None = None) -> "SplitView":
        """Rows of one split; a seeded share (or count) of its images, with all their captions."""
        image_rows = np.flatnonzero(self.images["split"].to_numpy() == split)
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
    """One item per caption row: (caption row, image row) into the whole `Pairs` tables."""

    def __init__(self, view: SplitView):
        self.caption_rows = view.caption_rows
        self.image_index = view.pairs.captions["image_index"].to_numpy()

    def __len__(self) -> int:
        return len(self.caption_rows)

    def __getitem__(self, i: int) -> tuple[int, int]:
        row = int(self.caption_rows[i])
        return row, int(self.image_index[row])


def to_device(x, device):
    """A batch input (a tensor, or a dict of token tensors) on `device`."""
    return {k: v.to(device) for k, v in x.items()} if isinstance(x, dict) else x.to(device)


def collate_rows(items: list[tuple[int, int]]) -> dict:
    rows, images = zip(*items)
    return {"caption_rows": torch.tensor(rows), "image_rows": torch.tensor(images)}
