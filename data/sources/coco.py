"""COCO captions: the official annotation files (captions_train2017.json, captions_val2014.json,
...) or the Karpathy file (dataset_coco.json), with the images they name. Five captions per
image become five rows of one image.

Images are looked up in --images itself and in its per-split folder (train2017/, val2014/),
so either the folder that holds train2017/ and val2017/ or one of them can be given. Splits:
the Karpathy file's (--split-file, or the captions file itself when it is one), else the
annotation file's own (train or val).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from data.sources.captions import raw_frame
from data.sources.download import fetch_and_unpack
from data.sources.image_check import is_image_file
from data.sources.skips import SkipLog
from data.sources.splits import apply_split_files, is_karpathy, karpathy_images, read_json

HOST = "http://images.cocodataset.org"
ARCHIVES = {year: [f"{HOST}/annotations/annotations_trainval{year}.zip",
                   f"{HOST}/zips/train{year}.zip", f"{HOST}/zips/val{year}.zip"] for year in ("2014", "2017")}
_SPLIT_FOLDER = re.compile(r"(train|val|test)(20\d\d)")


def download(images: Path, year: str) -> list[Path]:
    """The official archives unpacked into `images`; returns the captions files."""
    urls = ARCHIVES[year]
    fetch_and_unpack(urls, images, by_hand=(
        f"download {', '.join(urls)} elsewhere, unzip them into {images}, and run: python data/prepare.py coco "
        f"--captions {images}/annotations/captions_train{year}.json {images}/annotations/captions_val{year}.json "
        f"--images {images}"))
    return [images / "annotations" / f"captions_{s}{year}.json" for s in ("train", "val")]


def _resolve(images: Path, folder: str, file_name: str) -> Path:
    for candidate in (images / folder / file_name, images / file_name):
        if candidate.is_file():
            return candidate
    return images / folder / file_name if folder and (images / folder).is_dir() else images / file_name


def _official(obj: dict, path: Path, images: Path, log: SkipLog) -> tuple[list[dict], set[str]]:
    m = _SPLIT_FOLDER.search(path.name)
    folder = m.group(0) if m else ""
    split = m.group(1) if m else ""
    # Each image's file is looked up once (five captions share it), not once per caption.
    known = {image["id"]: (image["file_name"], str(_resolve(images, folder, image["file_name"])))
             for image in obj.get("images", [])}
    rows = []
    for ann in obj["annotations"]:
        found = known.get(ann.get("image_id"))
        if found is None:
            log.skip("caption_without_image", f"{path.name}: annotation {ann.get('id')} names image "
                                              f"{ann.get('image_id')}, which the file does not list")
            continue
        file_name, image_path = found
        rows.append(dict(image_id=Path(file_name).stem, image_path=image_path,
                         caption=ann.get("caption"), split=split, coco_id=ann["image_id"]))
    return rows, {image_path for _, image_path in known.values()}


def _karpathy(obj: dict, images: Path) -> tuple[list[dict], set[str]]:
    rows, listed = [], set()
    for image in karpathy_images(obj):
        path = str(_resolve(images, image["filepath"], image["filename"]))
        listed.add(path)
        for sentence in image["sentences"]:
            rows.append(dict(image_id=Path(image["filename"]).stem, image_path=path, caption=sentence,
                             split=image["split"], coco_id=image["cocoid"]))
    return rows, listed


def read(captions: list[Path], images: Path, split_files: list[Path], log: SkipLog) -> tuple[pd.DataFrame, set[str]]:
    """Caption rows, and every image the annotation files list or the image folders hold."""
    if not images.is_dir():
        raise FileNotFoundError(f"COCO image folder {images} does not exist")
    rows, listed = [], set()
    for path in captions:
        obj = read_json(path)
        if is_karpathy(obj):
            got, seen = _karpathy(obj, images)
        elif isinstance(obj, dict) and "annotations" in obj:
            got, seen = _official(obj, path, images, log)
        else:
            raise ValueError(f"{path} is neither a COCO captions annotation file nor a Karpathy split file")
        rows += got
        listed |= seen
    folders = {Path(p).parent for p in {r["image_path"] for r in rows}} | {images}  # per image, not caption
    on_disk = {str(folder / f) for folder in folders if folder.is_dir()
               for f in os.listdir(folder) if is_image_file(f)}
    frame, all_images = raw_frame(rows, log), listed | on_disk
    if split_files:
        frame, all_images = apply_split_files(frame, all_images, split_files, log, keys=_split_keys)
    return frame.drop(columns=["coco_id"], errors="ignore"), all_images


def _split_keys(frame: pd.DataFrame, official: dict[str, str]) -> list[str]:
    """'coco:<id>' where the split files list it (2014 and 2017 names match), else the file stem."""
    return [f"coco:{c}" if f"coco:{c}" in official else i for i, c in zip(frame["image_id"], frame["coco_id"])]
