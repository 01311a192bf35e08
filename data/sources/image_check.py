"""Open every image once at preparation, so training never meets one it cannot read.

Each image is decoded in full (a truncated JPEG only fails when its data is read), refused
over Pillow's pixel limit, and repaired where it can be: EXIF orientation applied, any
mode (CMYK, grayscale, palette, alpha) converted to RGB with transparency on white. With
`resize`, every image is stored with its shortest side at that size, so training decodes
small files; without it, a clean image is used where it lies and only repaired ones are
stored, as JPEG, under the dataset's images/ folder.
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from core import atomic

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
EXIF_ORIENTATION = 0x0112
JPEG_QUALITY = 90  # visually lossless at training sizes; a quarter of the bytes of 100
IN_PROCESS_BELOW = 64  # fewer images than this: starting worker processes costs more than it saves


@dataclass(frozen=True)
class ImageJob:
    source: str  # the image as the source names it
    dest: str  # where a stored (repaired or resized) copy goes
    resize: int | None = None  # shortest side of the stored copy; never enlarged


@dataclass
class ImageResult:
    problem: str | None  # a skip reason (data/sources/skips.py), or None when usable
    path: str = ""  # where training reads the image: dest when stored, else source
    fixes: list[str] = field(default_factory=list)
    detail: str = ""


def stored_name(image_id: str) -> str:
    """A file name for an image id that may hold slashes or odd characters; the hash keeps
    two ids that read alike apart."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(image_id).stem or "image")[:80]
    return f"{stem}-{hashlib.sha1(image_id.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}.jpg"


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _open(path: Path, resize: int | None) -> Image.Image:
    """Open and fully decode; raises what Pillow raises, with its pixel-limit warning as an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(path)
        if resize and img.format == "JPEG":
            # Decode at the smallest power-of-two reduction that still covers the target size.
            s = resize / min(img.size)
            if s < 1:
                img.draft(img.mode, (math.ceil(img.width * s), math.ceil(img.height * s)))
        img.load()
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB with any transparency composited on white (preparation and training share this)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def check_image(job: ImageJob) -> ImageResult:
    source = Path(job.source)
    if not source.is_file():
        return ImageResult("missing_image", detail=str(source))
    if source.stat().st_size == 0:
        return ImageResult("empty_file", detail=str(source))
    try:
        img = _open(source, job.resize)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return ImageResult("decompression_bomb", detail=f"{source}: {e}")
    except UnidentifiedImageError as e:
        return ImageResult("not_an_image", detail=f"{source}: {e}")
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # Pillow's ways of saying "corrupt data"
        return ImageResult("truncated_image", detail=f"{source}: {e}")
    fixes = []
    try:
        if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
            img = ImageOps.exif_transpose(img)
            fixes.append("exif_orientation")
    except (OSError, SyntaxError, ValueError):  # a corrupt EXIF block: the pixels are still good
        fixes.append("exif_unreadable")
    if img.mode != "RGB":
        fixes.append(f"mode_{img.mode}_to_RGB")
        img = to_rgb(img)
    if not job.resize and not fixes:
        return ImageResult(None, str(source), fixes)
    if job.resize and min(img.size) > job.resize:
        s = job.resize / min(img.size)
        img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))),
                         Image.Resampling.BICUBIC, reducing_gap=3.0)
    dest = Path(job.dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic.write(dest, lambda tmp: img.save(tmp, format="JPEG", quality=JPEG_QUALITY))
    return ImageResult(None, str(dest), fixes)


def check_images(jobs: list[ImageJob], workers: int, progress: bool = True) -> list[ImageResult]:
    """check_image for every job, in order, across `workers` processes for large batches."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc="checking images", unit="img", disable=not progress or len(jobs) < 1000)
    if workers <= 1 or len(jobs) < IN_PROCESS_BELOW:
        results = []
        for job in jobs:
            results.append(check_image(job))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = []
            for result in pool.map(check_image, jobs, chunksize=32):
                results.append(result)
                bar.update()
    bar.close()
    return results
