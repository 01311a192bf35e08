"""A captions table with every defect real image folders have: each is fixed or skipped and
counted by reason, the manifest holds only images training can read, and a tiny run on it
finishes. Also: a failed preparation leaves the previous manifest as it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import run_store
from data.manifest import load_manifest
from data.prepare import prepare
from tests.conftest import TINY_SWEEP
from training.models import Preprocess
from training.pairs import load_pixels
from training.train import main as train

GOOD = 14  # clean RGB photos, two captions each


def photo(path, size=(48, 36), seed=0, mode="RGB", **save):
    """A small noisy picture (so JPEG has something to compress) in the given mode."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "RGBA":
        img = img.convert("RGBA")
        img.putalpha(128)
    elif mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **save)
    return path


def write_bad_folder(root):
    """An open_clip-layout table (tab-separated filepath, title) over images/ with defects."""
    images = root / "images"
    lines = []
    for i in range(GOOD):
        photo(images / f"good{i:02d}.jpg", seed=i)
        lines += [f"images/good{i:02d}.jpg\ta photo number {i}", f"images/good{i:02d}.jpg\tpicture {i} of noise"]
    (images / "empty.jpg").write_bytes(b"")
    whole = photo(images / "whole.jpg", size=(64, 64), seed=99).read_bytes()
    (images / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (images / "whole.jpg").unlink()
    (images / "notimage.jpg").write_text("this is not a JPEG\n")
    Image.new("1", (10_000, 10_000)).save(images / "bomb.png")  # 1e8 pixels, over Pillow's 8.9e7 limit
    photo(images / "cmyk.jpg", mode="CMYK", seed=1)
    photo(images / "gray.png", mode="L", seed=2)
    photo(images / "palette.png", mode="P", seed=3)
    photo(images / "alpha.png", mode="RGBA", seed=4)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    photo(images / "rotated.jpg", size=(40, 20), seed=5, exif=exif)
    photo(images / "uncaptioned.jpg", seed=6)
    for name in ("empty.jpg", "truncated.jpg", "notimage.jpg", "bomb.png", "missing.jpg"):
        lines.append(f"images/{name}\ta caption of {name}")
    for name in ("cmyk.jpg", "gray.png", "palette.png", "alpha.png", "rotated.jpg"):
        lines.append(f"images/{name}\tthe fixable {name}")
    lines += [
        "images/good00.jpg\t  a   photo \u00a0number zero  ",  # odd whitespace: normalised, kept
        "images/good01.jpg\t",  # empty caption
        "images/good02.jpg\t   ",  # whitespace-only caption
        "images/good00.jpg\ta photo number 0",  # duplicate of a row above
        "\ta caption that names no image",
        "images/good03.jpg\tone\ttab too many",  # malformed: three fields
    ]
    text = "filepath\ttitle\n" + "\n".join(lines) + "\n"
    raw = text.encode() + b"images/good04.jpg\tcaf\xe9 au lait\n"  # Latin-1 bytes: invalid UTF-8
    (root / "train.csv").write_bytes(raw)
    return root / "train.csv"


EXPECTED_SKIPS = {"missing_image": 1, "empty_file": 1, "truncated_image": 1, "not_an_image": 1,
                  "decompression_bomb": 1, "empty_caption": 2, "invalid_utf8": 1, "duplicate_row": 1,
                  "caption_without_image": 1, "image_without_caption": 1, "malformed_row": 1}
EXPECTED_FIXES = {"mode_CMYK_to_RGB": 1, "mode_L_to_RGB": 1, "mode_P_to_RGB": 1, "mode_RGBA_to_RGB": 1,
                  "exif_orientation": 1, "caption_whitespace": 1}


@pytest.fixture(scope="module")
def bad_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    table = write_bad_folder(root / "source")
    prepare(["csv", "--file", str(table), "--data-dir", str(root / "data"), "--name", "bad",
             "--val-fraction", "0.3", "--workers", "1"])
    return root / "data" / "bad"


def test_every_defect_is_fixed_or_skipped_with_exact_counts(bad_dataset, capsys):
    report = json.loads((bad_dataset / "report.json").read_text())
    assert report["skipped"] == EXPECTED_SKIPS
    assert report["fixed"] == EXPECTED_FIXES
    assert report["images"] == GOOD + 5 and report["rows"] == 2 * GOOD + 6
    assert "decompression_bomb" in report["skipped_examples"]


def test_manifest_holds_only_readable_rgb_images_with_clean_captions(bad_dataset):
    m = load_manifest(bad_dataset)
    names = {Path(p).stem.split("-")[0] for p in m.image_path}
    assert not names & {"empty", "truncated", "notimage", "bomb", "missing", "uncaptioned"}
    assert all(c == " ".join(c.split()) and c for c in m.caption)
    assert "a photo number zero" in set(m.caption)  # whitespace normalised, kept
    assert not m.duplicated(["image_id", "caption"]).any()
    for path in m.drop_duplicates("image_id").image_path:
        with Image.open(path) as img:
            assert img.mode == "RGB"
    rotated = m[m.image_id == "images/rotated.jpg"].image_path.iloc[0]
    assert str(bad_dataset / "images") in rotated  # repaired copies are stored with the dataset
    assert Image.open(rotated).size == (20, 40)  # EXIF orientation applied: portrait now
    pixels = load_pixels(list(m.drop_duplicates("image_id").image_path), Preprocess(32, (0.5,) * 3, (0.5,) * 3))
    assert pixels.shape == (GOOD + 5, 3, 32, 32) and bool(pixels.isfinite().all())
    assert set(m.split) == {"train", "val"}


def test_preparation_prints_the_skip_counts(tmp_path, capsys):
    table = write_bad_folder(tmp_path / "source")
    prepare(["csv", "--file", str(table), "--data-dir", str(tmp_path / "data"), "--name", "bad", "--workers", "1"])
    out = capsys.readouterr().out
    for reason, n in EXPECTED_SKIPS.items():
        assert any(line.split()[:2] == [reason, str(n)] for line in out.splitlines()), (reason, out)


def test_a_failed_preparation_keeps_the_previous_manifest(bad_dataset, tmp_path):
    before = (bad_dataset / "manifest.parquet").read_bytes()
    table = tmp_path / "all_bad.csv"
    (tmp_path / "empty.jpg").write_bytes(b"")
    table.write_text("filepath\ttitle\nempty.jpg\tnothing usable here\n")
    with pytest.raises(ValueError, match="no usable image-caption pairs"):
        prepare(["csv", "--file", str(table), "--data-dir", str(bad_dataset.parent), "--name", "bad"])
    assert (bad_dataset / "manifest.parquet").read_bytes() == before
    assert not [p for p in bad_dataset.iterdir() if p.name.startswith(".")]  # no half-written leftovers


def test_a_tiny_run_on_the_repaired_data_finishes(bad_dataset, tmp_path):
    code = train(["--sweep", str(TINY_SWEEP), "--only", "locked", "--data", str(bad_dataset),
                  "--model", "tiny-clip", "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "c")])
    assert code == 0
    run = run_store.load_run(run_store.run_dir(tmp_path / "runs", "tiny", "locked"))
    assert run.state == "FINISHED"
    assert run.config["data"] == str(bad_dataset)
