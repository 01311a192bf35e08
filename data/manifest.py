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

from core import atomic

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


DUPLICATE_EXAMPLES = 5  # per kind in report.json: enough to recognise the pattern


def file_digest(path: Path | str) -> str:
    """The SHA-256 of a file's bytes: two image files with one digest are byte-identical."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def duplicates(frame: pd.DataFrame, folder: Path) -> dict:
    """Captions shared word for word by several images, and images whose files are
    byte-identical: retrieval cannot tell such items apart, so their ties decide ranks
    (training/metrics.py counts a tie against the query). Counts per split, with examples."""
    per_caption = frame.groupby("caption")["image_id"].nunique()
    shared = per_caption[per_caption > 1].sort_values(ascending=False)
    images = frame.drop_duplicates("image_id")
    same_bytes: dict[str, list[str]] = {}
    for image_id, path in zip(images["image_id"], images["image_path"]):
        same_bytes.setdefault(file_digest(folder / path), []).append(image_id)
    copies = sorted(sorted(ids) for ids in same_bytes.values() if len(ids) > 1)
    images_of = images.set_index("image_id")["split"]
    return {
        "shared_captions": int(len(shared)),
        "images_with_a_shared_caption": {split: int(n) for split, n in frame[frame["caption"].isin(shared.index)]
                                         .drop_duplicates("image_id")["split"].value_counts().items()},
        "shared_caption_examples": [{"caption": c, "images": int(n)}
                                    for c, n in shared.head(DUPLICATE_EXAMPLES).items()],
        "identical_image_sets": len(copies),
        "images_in_identical_sets": {split: int(n) for split, n in
                                     images_of[[i for ids in copies for i in ids]].value_counts().items()},
        "identical_image_examples": copies[:DUPLICATE_EXAMPLES],
    }


def duplicate_lines(found: dict) -> list[str]:
    """What preparation prints about duplicates."""
    if not found.get("shared_captions") and not found.get("identical_image_sets"):
        return ["duplicates: no caption is shared by two images, no two image files are identical"]
    lines = [f"duplicates: {found['shared_captions']} caption(s) shared word for word by several images "
             f"(images per split: {found['images_with_a_shared_caption']}); "
             f"{found['identical_image_sets']} set(s) of byte-identical images "
             f"(images per split: {found['images_in_identical_sets']}). Ties among them count against "
             f"retrieval queries."]
    lines += [f"  shared: {e['caption']!r} by {e['images']} images" for e in found["shared_caption_examples"]]
    lines += [f"  identical: {', '.join(ids)}" for ids in found["identical_image_examples"]]
    return lines


def write_manifest(frame: pd.DataFrame, folder: Path, report: dict) -> Path:
    """Write manifest.parquet (atomically: never half a manifest) and report.json, which
    includes the duplicates found."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {missing}")
    check_splits_by_image(frame)
    folder.mkdir(parents=True, exist_ok=True)
    report["duplicates"] = duplicates(frame, folder)
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


def check_fractions(val_fraction: float, test_fraction: float = 0.0) -> None:
    """Raises ValueError unless both shares are in [0, 1] and leave training something."""
    if not (0 <= val_fraction <= 1 and 0 <= test_fraction <= 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"--val-fraction {val_fraction} and --test-fraction {test_fraction} must be shares in "
                         f"[0, 1] that add up to less than 1 (the rest is training)")


def split_of(group_key: str, val_fraction: float, seed: int, test_fraction: float = 0.0) -> str:
    """A deterministic split ("train", "val" or "test") for a group of rows that must stay
    together (an image, or all variants of one concept): a hash of the key, so a group always
    lands in one split and adding data never moves old groups.

    The hash is a uniform u in [0, 1): val below val_fraction, test in the next
    test_fraction, train above. With test_fraction=0 this is exactly the two-way split of
    earlier versions, and the validation groups do not depend on test_fraction at all: a test
    split is carved out of what was training."""
    check_fractions(val_fraction, test_fraction)
    u = int.from_bytes(seeded_digest(group_key, seed)[:8], "big") / 2**64
    if u < val_fraction:
        return "val"
    return "test" if u < val_fraction + test_fraction else "train"
