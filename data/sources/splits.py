"""Official splits: the Karpathy split files (dataset_coco.json, dataset_flickr8k.json,
dataset_flickr30k.json) and plain lists of image file names (Flickr8k's
Flickr_8k.trainImages.txt, devImages.txt, testImages.txt), as a map image key -> split.

"restval" (Karpathy's leftover COCO validation images, trained on by convention) is
train; "dev" and "validation" are val.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from data.sources.skips import SkipLog

SPLIT_NAMES = {"train": "train", "training": "train", "restval": "train",
               "val": "val", "valid": "val", "validation": "val", "dev": "val",
               "test": "test", "testing": "test"}


def split_name(value) -> str:
    """A split as the manifest spells it ('' when none is given)."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = str(value).strip().lower()
    return SPLIT_NAMES.get(text, text)


def read_json(path: Path):
    return json.loads(Path(path).read_bytes().decode("utf-8-sig", "surrogateescape"))


def is_karpathy(obj) -> bool:
    images = obj.get("images") if isinstance(obj, dict) else None
    return bool(images) and isinstance(images[0], dict) and "sentences" in images[0]


def karpathy_images(obj) -> list[dict]:
    """One entry per image: filename, filepath (COCO's val2014/train2014, else ''), split,
    cocoid (COCO only), sentences (raw captions)."""
    out = []
    for image in obj["images"]:
        out.append(dict(filename=image["filename"], filepath=image.get("filepath", ""),
                        split=split_name(image.get("split")), cocoid=image.get("cocoid"),
                        sentences=[s.get("raw", " ".join(s.get("tokens", []))) for s in image.get("sentences", [])]))
    return out


def _split_of_list(path: Path) -> str:
    name = path.name.lower()
    for word, split in (("train", "train"), ("dev", "val"), ("val", "val"), ("test", "test")):
        if word in name:
            return split
    raise ValueError(f"cannot tell which split {path} lists: its name should contain train, dev, val or test")


def read_split_files(paths: list[Path]) -> dict[str, str]:
    """Image key -> split from Karpathy JSON files or per-split lists of file names. Keys are
    file stems, and for COCO also 'coco:<id>' so 2014 and 2017 file names both match."""
    out: dict[str, str] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"split file {path} does not exist")
        if path.suffix.lower() == ".json":
            obj = read_json(path)
            if not is_karpathy(obj):
                raise ValueError(f"{path} is not a Karpathy split file (dataset_coco.json layout)")
            for image in karpathy_images(obj):
                out[Path(image["filename"]).stem] = image["split"]
                if image["cocoid"] is not None:
                    out[f"coco:{image['cocoid']}"] = image["split"]
        else:
            split = _split_of_list(path)
            for line in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
                if line.strip():
                    out[Path(line.strip()).stem] = split
    return out


def apply_split_files(frame: pd.DataFrame, all_images: set[str], split_files: list[Path], log: SkipLog,
                      keys=None) -> tuple[pd.DataFrame, set[str]]:
    """Each row's split from the split files, looked up by `keys` (default: the rows' image_id;
    `keys(frame, splits)` may pick other keys). Rows whose image no file lists are dropped and
    counted once, and their images leave `all_images`, so they are not counted again as images
    without a caption. Returns the rows and the remaining images."""
    official = read_split_files(split_files)
    frame["split"] = [official.get(k, "") for k in (keys(frame, official) if keys else frame["image_id"])]
    unlisted = frame["split"] == ""
    for image_id in frame.loc[unlisted, "image_id"].unique():
        log.skip("not_in_split_file", str(image_id))
    return frame[~unlisted].copy(), all_images - set(frame.loc[unlisted, "image_path"].astype(str))
