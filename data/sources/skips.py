"""What preparation dropped or repaired, by reason: the counts that go into report.json and
are printed at the end of `data/prepare.py`.

Each skip reason counts one kind of thing, named in REASONS; fixes count images or captions
that were repaired and kept.
"""

from __future__ import annotations

from collections import Counter

REASONS = {  # reason: what one count is
    "malformed_row": "a line or row of the captions file that could not be parsed",
    "caption_without_image": "a caption whose row names no image (blank path, unknown image id)",
    "invalid_utf8": "a caption (or image name) that is not valid UTF-8",
    "empty_caption": "a caption that is empty or only whitespace",
    "duplicate_row": "a repeated (image, caption) row",
    "not_in_split_file": "an image the official split file does not list",
    "image_without_caption": "an image file (or listed image) that no caption names",
    "missing_image": "an image whose file does not exist",
    "empty_file": "an image whose file has zero bytes",
    "not_an_image": "a file that is no image Pillow can identify",
    "truncated_image": "an image whose data ends early or is corrupt",
    "decompression_bomb": "an image over Pillow's pixel limit (Image.MAX_IMAGE_PIXELS)",
}
EXAMPLES_PER_REASON = 5


class SkipLog:
    """Counts of skipped and fixed items by reason, with a few examples of each skip."""

    def __init__(self):
        self.skipped: Counter[str] = Counter()
        self.fixed: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def skip(self, reason: str, example: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown skip reason {reason!r}")
        self.skipped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if example and len(shown) < EXAMPLES_PER_REASON:
            shown.append(example)

    def fix(self, reason: str) -> None:
        self.fixed[reason] += 1

    def to_report(self) -> dict:
        return {"skipped": dict(sorted(self.skipped.items())), "fixed": dict(sorted(self.fixed.items())),
                "skipped_examples": {k: v for k, v in sorted(self.examples.items())}}


def summary_lines(report: dict) -> list[str]:
    """The skip and fix counts as printed at the end of preparation."""
    skipped, fixed = report.get("skipped", {}), report.get("fixed", {})
    if not skipped and not fixed:
        return ["nothing skipped, nothing fixed"]
    lines = []
    if skipped:
        lines.append("skipped:")
        lines += [f"  {reason:24s} {n:8d}  ({REASONS.get(reason, reason)})" for reason, n in skipped.items()]
    if fixed:
        lines.append("fixed and kept:")
        lines += [f"  {reason:24s} {n:8d}" for reason, n in fixed.items()]
    return lines
