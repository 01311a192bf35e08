"""Flickr8k and Flickr30k captions, in each layout they are published in:

- Flickr8k.token.txt (and Flickr30k's results_20130124.token): `image.jpg#n<TAB>caption`;
- captions.txt, the common CSV re-pack of Flickr8k: header `image,caption`;
- results.csv, the common Flickr30k re-pack: header `image_name| comment_number| comment`,
  `|`-separated;
- the Karpathy files dataset_flickr8k.json / dataset_flickr30k.json.

Splits: --split-file with the Karpathy JSON or Flickr8k's Flickr_8k.{train,dev,test}Images.txt
lists; images those files do not list are counted and left out. Without one, a hash split.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pandas as pd

from data.sources.captions import raw_frame
from data.sources.download import DownloadUnavailable, fetch_and_unpack
from data.sources.image_check import is_image_file
from data.sources.skips import SkipLog
from data.sources.splits import apply_split_files, is_karpathy, karpathy_images, read_json

# The Illinois download form for Flickr8k is gone; these release assets are the copy the
# community (and most tutorials) use, with the original file names.
FLICKR8K = ["https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip",
            "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip"]
FLICKR30K_FORM = "https://shannon.cs.illinois.edu/DenotationGraph/"


def download(images: Path, variant: str) -> tuple[Path, Path, list[Path]]:
    """Flickr8k's archives unpacked into `images`; returns captions file, image folder, split files."""
    if variant != "8k":
        raise DownloadUnavailable(
            f"Flickr30k is shared through a request form ({FLICKR30K_FORM}), so --download cannot fetch it. "
            f"Get flickr30k-images/ and results_20130124.token (or the results.csv re-pack) from there, then run: "
            f"python data/prepare.py flickr --captions results_20130124.token --images flickr30k-images "
            f"[--split-file dataset_flickr30k.json]")
    fetch_and_unpack(FLICKR8K, images, by_hand=(
        f"download {' and '.join(FLICKR8K)} elsewhere, unzip both into {images}, and run: "
        f"python data/prepare.py flickr --captions {images}/Flickr8k.token.txt --images {images}/Flicker8k_Dataset "
        f"--split-file {images}/Flickr_8k.trainImages.txt {images}/Flickr_8k.devImages.txt "
        f"{images}/Flickr_8k.testImages.txt"))
    splits = [images / f"Flickr_8k.{s}Images.txt" for s in ("train", "dev", "test")]
    return images / "Flickr8k.token.txt", images / "Flicker8k_Dataset", splits


def _token_lines(text: str, log: SkipLog) -> list[tuple[str, str]]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, tab, caption = line.partition("\t")
        if not tab:
            log.skip("malformed_row", f"line {n}: {line[:60]!r}")
            continue
        out.append((name.split("#", 1)[0].strip(), caption))
    return out


def _csv_lines(text: str, log: SkipLog) -> list[tuple[str, str]]:
    out = []
    reader = csv.reader(io.StringIO(text))
    next(reader, None)  # header
    for row in reader:
        if not row:
            continue
        if len(row) < 2:
            log.skip("malformed_row", f"line {reader.line_num}: {','.join(row)[:60]!r}")
            continue
        out.append((row[0].strip(), ",".join(row[1:])))  # an unquoted comma in a caption
    return out


def _pipe_lines(text: str, log: SkipLog) -> list[tuple[str, str]]:
    out = []
    for n, line in enumerate(text.splitlines()[1:], 2):
        if not line.strip():
            continue
        parts = line.split("|", 2)
        if len(parts) != 3:  # results.csv has such a line (a missing separator)
            log.skip("malformed_row", f"line {n}: {line[:60]!r}")
            continue
        out.append((parts[0].strip(), parts[2]))
    return out


def read_pairs(captions: Path, log: SkipLog) -> list[tuple[str, str, str]]:
    """(file name, caption, split or '') from any of the published layouts."""
    if captions.suffix.lower() == ".json":
        obj = read_json(captions)
        if not is_karpathy(obj):
            raise ValueError(f"{captions} is not a Karpathy file (dataset_flickr8k.json layout)")
        return [(image["filename"], s, image["split"]) for image in karpathy_images(obj) for s in image["sentences"]]
    text = captions.read_bytes().decode("utf-8-sig", "surrogateescape")
    header = text.split("\n", 1)[0].lower()
    if "|" in header and "image_name" in header:
        pairs = _pipe_lines(text, log)
    elif header.replace(" ", "").startswith("image,caption"):
        pairs = _csv_lines(text, log)
    else:
        pairs = _token_lines(text, log)
    return [(name, caption, "") for name, caption in pairs]


def read(captions: Path, images: Path, split_files: list[Path], log: SkipLog) -> tuple[pd.DataFrame, set[str]]:
    if not images.is_dir():
        raise FileNotFoundError(f"Flickr image folder {images} does not exist")
    rows = [dict(image_id=Path(name).stem if name else "", image_path=str(images / name) if name else "",
                 caption=caption, split=split) for name, caption, split in read_pairs(captions, log)]
    frame = raw_frame(rows, log)
    on_disk = {str(images / f) for f in os.listdir(images) if is_image_file(f)}
    if split_files:
        frame, on_disk = apply_split_files(frame, on_disk, split_files, log)
    return frame, on_disk
