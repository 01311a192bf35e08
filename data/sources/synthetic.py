"""A tiny generated dataset for tests: coloured shapes on a plain background, captioned
"a red circle"; label = the shape. Learnable in a few steps, made in well under a second."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
           "yellow": (230, 200, 30), "purple": (140, 60, 180), "black": (20, 20, 20)}
SHAPES = ("circle", "square", "triangle")


def _draw(shape: str, colour: tuple, size: int, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    m = rng.randint(size // 8, size // 4)
    box = (m, m, size - m, size - m)
    if shape == "circle":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
    else:
        d.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=colour)
    return img


def prepare(out_dir: Path, n_images: int, size: int, val_fraction: float, seed: int,
            captions_per_image: int = 2, test_fraction: float = 0.0) -> tuple[pd.DataFrame, dict]:
    from data.manifest import split_of

    rng = random.Random(seed)
    combos = list(itertools.product(COLOURS, SHAPES))
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_images):
        colour, shape = combos[i % len(combos)]
        image_id = f"img{i:04d}"
        _draw(shape, COLOURS[colour], size, rng).save(image_dir / f"{image_id}.png")
        templates = ["a {c} {s}", "a picture of a {c} {s}", "the {s} is {c}"]
        split = split_of(image_id, val_fraction, seed, test_fraction)
        for t in templates[:captions_per_image]:
            rows.append(dict(image_id=image_id, image_path=f"images/{image_id}.png",
                             caption=t.format(c=colour, s=shape), split=split, label=shape))
    manifest = pd.DataFrame(rows)
    report = dict(source="synthetic", images=n_images, rows=len(rows), skipped={}, seed=seed,
                  val_fraction=val_fraction, test_fraction=test_fraction)
    return manifest, report
