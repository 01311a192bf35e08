"""From caption rows read by a source to the manifest: clean the captions, pick the seeded
subset of images, check (and repair or resize) each picked image, assign splits.

Subsets are by image, so all captions of a picked image come along. Images are ranked by a
seeded hash of their id: a larger subset contains every smaller one with the same seed, and
an image that fails its check is replaced by the next in rank, so `--max-images N` gives N
usable images whenever the source has them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from data.manifest import COLUMNS, check_fractions, seeded_digest, split_of
from data.sources.captions import clean_rows
from data.sources.image_check import ImageJob, check_images, stored_name
from data.sources.skips import SkipLog

IMAGES = "images"


@dataclass(frozen=True)
class Options:
    val_fraction: float = 0.2  # share of images held out when the source has no split of its own
    test_fraction: float = 0.0  # and for test: none unless asked, so train/val stay as they were
    seed: int = 0
    max_images: int | None = None
    fraction: float | None = None
    resize: int | None = None
    workers: int = min(8, os.cpu_count() or 1)

    def __post_init__(self):
        check_fractions(self.val_fraction, self.test_fraction)  # before any image is checked
        if self.max_images is not None and self.max_images < 1:
            raise ValueError("--max-images must be at least 1")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError("--fraction must be in (0, 1]")
        if self.resize is not None and self.resize < 8:
            raise ValueError("--resize must be at least 8 (pixels of the shortest side)")


def count_uncaptioned(rows: pd.DataFrame, all_images: set[str], log: SkipLog) -> None:
    """Images the source has (files in its folder, entries in its index) that no row names."""
    named = {os.path.normpath(p) for p in rows["image_path"].dropna().astype(str) if p}
    for path in sorted({os.path.normpath(p) for p in all_images} - named):
        log.skip("image_without_caption", path)


def assemble(rows: pd.DataFrame, out_dir: Path, opts: Options, log: SkipLog,
             all_images: set[str] | None = None) -> pd.DataFrame:
    """The manifest frame (COLUMNS) for rows with image_id, image_path
    (as the source names it), caption and optional split, label, split_key columns."""
    if all_images is not None:
        count_uncaptioned(rows, all_images, log)
    rows = clean_rows(rows, log)
    per_image = rows.drop_duplicates("image_id").set_index("image_id")
    order = sorted(per_image.index, key=lambda i: seeded_digest(i, opts.seed))
    target = len(order)
    if opts.fraction is not None:
        target = max(1, round(opts.fraction * target))
    if opts.max_images is not None:
        target = min(target, opts.max_images)
    usable: dict[str, str] = {}
    position = 0
    while len(usable) < target and position < len(order):
        batch = order[position:position + target - len(usable)]
        position += len(batch)
        jobs = [ImageJob(str(per_image.at[i, "image_path"]), str(out_dir / IMAGES / stored_name(i)), opts.resize)
                for i in batch]
        for image_id, result in zip(batch, check_images(jobs, opts.workers)):
            if result.problem:
                log.skip(result.problem, result.detail)
                continue
            for fix in result.fixes:
                log.fix(fix)
            usable[image_id] = result.path
    rows = rows[rows["image_id"].isin(usable)].copy()
    if rows.empty:
        raise ValueError("no usable image-caption pairs: every row or image was skipped (see the counts above)")
    rows["image_path"] = [_relative(usable[i], out_dir) for i in rows["image_id"]]
    # An image's label and split are those of its first row: one value per image.
    rows["split"] = rows["image_id"].map(_splits(usable, per_image, opts))
    rows["label"] = rows["image_id"].map(per_image["label"]).fillna("").astype(str) if "label" in rows else ""
    return rows[COLUMNS].reset_index(drop=True)


def _relative(path: str, out_dir: Path) -> str:
    """Stored copies relative to the dataset folder (it can move); originals stay absolute."""
    p = Path(path)
    try:
        return p.relative_to(out_dir).as_posix()
    except ValueError:
        return str(p.resolve())


def _splits(image_ids, per_image: pd.DataFrame, opts: Options) -> dict[str, str]:
    """image_id -> the source's split where it gives one, else a hash of the image (or its
    split_key); decided once per image, not once per caption row."""
    given = per_image["split"] if "split" in per_image else pd.Series(dtype=object)
    keys = per_image["split_key"] if "split_key" in per_image else pd.Series(dtype=object)
    of_image = {}
    for image_id in image_ids:
        split = given.get(image_id)
        if split is None or split != split or split == "":
            key = keys.get(image_id)
            split = split_of(key if isinstance(key, str) and key else image_id, opts.val_fraction, opts.seed,
                             opts.test_fraction)
        of_image[image_id] = split
    return of_image
