"""The canonical manifest every data source is turned into, and how it is found again.

One row per (image, caption): image_id, image_path (relative to the manifest's folder),
caption, split ("train" / "val" / ...), label (optional category, may be empty). An image
with several captions has several rows with one image_id. Splits are by image, never by
row. Training reads only manifests; nothing else in data/ is read by training.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from data import atomic

DATA_DIR = Path(__file__).resolve().parent
MANIFEST = "manifest.parquet"
REPORT = "report.json"
COLUMNS = ["image_id", "image_path", "caption", "split", "label"]


class DatasetNotFound(FileNotFoundError):
    """A dataset named on the command line or in a sweep is not prepared."""


def dataset_dir(name_or_path: str | Path, data_dir: Path = DATA_DIR) -> Path:
    """The folder of a prepared dataset: a name under data/, or a path to a folder or manifest."""
    p = Path(name_or_path)
    if p.suffix == ".parquet":
        return p.parent
    if p.is_dir() or len(p.parts) > 1:
        return p
    return data_dir / str(name_or_path)


def load_manifest(name_or_path: str | Path, data_dir: Path = DATA_DIR) -> pd.DataFrame:
    """The manifest with image_path made absolute; a clear error when it is not prepared."""
    folder = dataset_dir(name_or_path, data_dir)
    path = folder / MANIFEST
    if not path.exists():
        raise DatasetNotFound(
            f"dataset {str(name_or_path)!r} is not prepared: {path} does not exist. "
            f"Prepare it with: python data/prepare.py SOURCE --name {Path(str(name_or_path)).name} "
            f"(sources: openmoji, synthetic, coco, flickr, csv, jsonl, cc; see README)")
    frame = pd.read_parquet(path)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing}; re-run data/prepare.py for it")
    frame["image_path"] = [str(folder / p) for p in frame["image_path"]]
    frame["label"] = frame["label"].fillna("").astype(str)
    return frame


def write_manifest(frame: pd.DataFrame, folder: Path, report: dict) -> Path:
    """Write manifest.parquet (atomically: never half a manifest) and report.json."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {missing}")
    check_splits_by_image(frame)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST
    atomic.write(path, lambda tmp: frame.reset_index(drop=True).to_parquet(tmp, index=False))
    atomic.write_json(folder / REPORT, report)
    return path


def check_splits_by_image(frame: pd.DataFrame) -> None:
    per_image = frame.groupby("image_id")["split"].nunique()
    mixed = per_image[per_image > 1]
    if len(mixed):
        raise ValueError(f"{len(mixed)} image(s) have rows in several splits, e.g. {mixed.index[0]!r}")


def seeded_digest(key: str, seed: int) -> bytes:
    """SHA-256 of the seed and a key: the order of subsets and the draw of splits."""
    return hashlib.sha256(f"{seed}:{key}".encode("utf-8", "surrogateescape")).digest()


def split_of(group_key: str, val_fraction: float, seed: int) -> str:
    """A deterministic split for a group of rows that must stay together (an image, or all
    variants of one concept): a hash of the key, so adding data never moves old groups."""
    u = int.from_bytes(seeded_digest(group_key, seed)[:8], "big") / 2**64
    return "val" if u < val_fraction else "train"
