"""Loader throughput (images/s, 2 DataLoader workers): images prepared once with `--resize`
against the original full-size JPEGs, both decoded by training's own `load_pixels`,
measured side by side in one run on the same generated photos.

    .venv/bin/python bench/loader_throughput.py [--images 192] [--width 1600 --height 1200] [--resize 256]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.results import record
from data.manifest import load_manifest
from data.prepare import prepare
from training.models import Preprocess
from training.pairs import load_pixels

ROOT = Path(__file__).resolve().parents[1]

IMAGENET = Preprocess(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # the offline default's input


def write_photos(folder: Path, n: int, width: int, height: int) -> Path:
    """JPEGs that compress like photos (smooth colour fields plus sensor-like noise), and an
    open_clip-style table naming them."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    lines = ["filepath\ttitle"]
    for i in range(n):
        field = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((width, height),
                                                                                       Image.Resampling.BICUBIC)
        noisy = np.asarray(field, dtype=np.int16) + rng.normal(0, 6, (height, width, 3)).astype(np.int16)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(folder / f"{i:04d}.jpg", quality=90)
        lines.append(f"{i:04d}.jpg\tphoto number {i}")
    table = folder / "photos.tsv"
    table.write_text("\n".join(lines) + "\n")
    return table


class Decode(torch.utils.data.Dataset):
    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return load_pixels([self.paths[i]], IMAGENET)[0]


def images_per_s(paths: list[str], workers: int, batch_size: int) -> float:
    """Second-epoch throughput: workers started and files in the page cache, as in training."""
    loader = torch.utils.data.DataLoader(Decode(paths), batch_size=batch_size, num_workers=workers,
                                         persistent_workers=True)
    for _ in loader:
        pass
    t0 = time.perf_counter()
    n = sum(len(batch) for batch in loader)
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=192)
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=1200)
    p.add_argument("--resize", type=int, default=256, help="shortest side of the prepared copies")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = write_photos(tmp / "photos", args.images, args.width, args.height)
        common = ["csv", "--file", str(table), "--data-dir", str(tmp / "data")]
        prepare([*common, "--name", "original"])
        t0 = time.perf_counter()
        prepare([*common, "--name", "resized", "--resize", str(args.resize)])
        prepare_s = time.perf_counter() - t0
        original = list(load_manifest(tmp / "data" / "original").image_path)
        resized = list(load_manifest(tmp / "data" / "resized").image_path)
        mb = lambda paths: sum(Path(x).stat().st_size for x in paths) / 2**20  # noqa: E731
        sizes = (mb(original), mb(resized))
        slow = images_per_s(original, args.workers, args.batch_size)
        fast = images_per_s(resized, args.workers, args.batch_size)
    ratio = fast / slow
    print(f"{'images':34s} {'MB':>7s} {'images/s':>9s}")
    print(f"{f'original {args.width}x{args.height} JPEG':34s} {sizes[0]:7.1f} {slow:9.1f}")
    print(f"{f'prepared --resize {args.resize}':34s} {sizes[1]:7.1f} {fast:9.1f}")
    print(f"speed-up {ratio:.1f}x ({args.images} images, {args.workers} workers, {IMAGENET.image_size} px input); "
          f"preparing the resized copies took {prepare_s:.1f} s once")
    cmd = ".venv/bin/python bench/loader_throughput.py"
    setup = f"{args.images} generated {args.width}x{args.height} JPEGs, {args.workers} workers, load_pixels at 224 px"
    record("loader.original_images_per_s", round(slow, 1), "images/s", None, setup, cmd)
    record("loader.prepared_images_per_s", round(fast, 1), "images/s", None,
           f"same images prepared with --resize {args.resize}; " + setup, cmd)
    record("loader.prepared_speedup", round(ratio, 1), "x", "> 1 (issue 3)",
           f"prepared vs original, measured in one run; {sizes[0]:.0f} MB vs {sizes[1]:.1f} MB on disk", cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
