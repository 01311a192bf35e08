"""Conceptual Captions: a TSV of (caption, url) rows whose images img2dataset downloads.

Downloading is img2dataset's job (retries, timeouts, resume by shard): with --download this
source runs it on the TSV into --images, then reads what it wrote. img2dataset is not in
requirements.txt (it pins pandas below 3), so it is found as a command on PATH: install it
on its own with `pipx install img2dataset` (or `pip install img2dataset` in another
environment). Offline, an existing img2dataset output folder (output_format "files":
shard folders holding KEY.jpg, KEY.txt caption, KEY.json with the url) is read as it is.

Splits are by a hash of each image's url (its key changes if the download is redone).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

from data.sources.captions import raw_frame
from data.sources.download import DownloadUnavailable, require_network
from data.sources.image_check import is_image_file
from data.sources.skips import SkipLog
from data.sources.splits import read_json

INSTALL = ("downloading Conceptual Captions needs img2dataset on PATH: `pipx install img2dataset` "
           "(or `pip install img2dataset` in an environment of its own: it pins pandas<3, which this "
           "project's .venv does not allow)")


def _urls(tsv: Path, n: int = 3) -> tuple[bool, list[str]]:
    """Whether the TSV has a caption/url header, and its first few urls."""
    with open(tsv, encoding="utf-8", errors="surrogateescape") as f:
        lines = [line.rstrip("\n") for _, line in zip(range(n + 1), f)]
    has_header = bool(lines) and lines[0].split("\t")[-1].strip().lower() == "url"
    return has_header, [line.split("\t")[-1] for line in lines[int(has_header):] if "\t" in line]


def download(tsv: Path, images: Path, workers: int, image_size: int) -> None:
    """Run img2dataset on the TSV into `images` (incremental: a rerun resumes)."""
    if not tsv.is_file():
        raise FileNotFoundError(f"Conceptual Captions TSV {tsv} does not exist")
    exe = shutil.which("img2dataset")
    if exe is None:
        raise DownloadUnavailable(INSTALL + "; without it, point --images at an existing img2dataset output folder")
    has_header, urls = _urls(tsv)
    require_network(urls[:1], by_hand=f"run img2dataset on {tsv} where the network is, copy its output folder "
                                      f"here, and run: python data/prepare.py cc --images FOLDER")
    with tempfile.TemporaryDirectory() as tmp:
        url_list = tsv
        if not has_header:  # the published TSVs have none; img2dataset needs column names
            url_list = Path(tmp) / "with_header.tsv"
            with open(url_list, "wb") as out, open(tsv, "rb") as src:
                out.write(b"caption\turl\n")
                shutil.copyfileobj(src, out)
        subprocess.run([exe, "--url_list", str(url_list), "--input_format", "tsv", "--url_col", "url",
                        "--caption_col", "caption", "--output_format", "files", "--output_folder", str(images),
                        "--processes_count", str(workers), "--thread_count", "32", "--image_size", str(image_size),
                        "--resize_mode", "keep_ratio", "--resize_only_if_bigger", "True", "--retries", "2",
                        "--timeout", "10", "--incremental_mode", "incremental", "--enable_wandb", "False"],
                       check=True)


def read(images: Path, log: SkipLog) -> tuple[pd.DataFrame, set[str]]:
    """Caption rows from an img2dataset output folder, and every image file in it."""
    if not images.is_dir():
        raise FileNotFoundError(f"img2dataset output folder {images} does not exist "
                                f"(--download with --tsv writes it; that needs img2dataset and the network)")
    groups: dict[str, dict[str, Path]] = {}
    for folder, _, files in os.walk(images):
        for f in files:
            p = Path(folder) / f
            kind = "image" if is_image_file(f) else p.suffix.lower().lstrip(".")
            if kind in ("image", "txt", "json"):
                groups.setdefault(str(p.with_suffix("")), {})[kind] = p
    if not groups and any(f.endswith(".tar") for f in os.listdir(images)):
        raise ValueError(f"{images} holds webdataset .tar shards; this source reads img2dataset's "
                         f"output_format 'files': untar the shards into it first")
    rows, all_images = [], set()
    for stem, parts in sorted(groups.items()):
        meta = read_json(parts["json"]) if "json" in parts else {}
        if "image" in parts:
            all_images.add(str(parts["image"]))
        if "txt" in parts:
            caption = parts["txt"].read_bytes().decode("utf-8", "surrogateescape")
        elif meta.get("caption") is not None and "image" in parts:
            caption = meta["caption"]
        else:
            continue  # a failed download: img2dataset wrote only its status json
        rows.append(dict(image_id=Path(stem).name if "image" in parts else "",
                         image_path=str(parts["image"]) if "image" in parts else "",
                         caption=caption, split_key=meta.get("url") or Path(stem).name))
    return raw_frame(rows, log), all_images
