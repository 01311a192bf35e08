"""Caption rows as sources read them, cleaned: whitespace normalised, and rows that cannot
train (invalid UTF-8, no image, empty caption, duplicates) dropped and counted.

Sources decode their files with errors="surrogateescape", so a caption with bytes that are
not UTF-8 survives reading and is caught here (it cannot be encoded back).
"""

from __future__ import annotations

import pandas as pd

from data.sources.skips import SkipLog

RAW_COLUMNS = ["image_id", "image_path", "caption"]  # plus optional split, label, split_key


def raw_frame(rows: list[dict], log: SkipLog) -> pd.DataFrame:
    """Rows read by a source as a frame with at least RAW_COLUMNS. Rows with text that is not
    UTF-8 are counted here: a frame's (Arrow) strings cannot hold them."""
    kept = []
    for row in rows:
        bad = next((k for k in ("caption", "image_id", "image_path")
                    if isinstance(row.get(k), str) and not _is_utf8(row[k])), None)
        if bad:
            text = row[bad].encode("utf-8", "surrogateescape")[:60]
            log.skip("invalid_utf8", f"{bad} {text!r}")
            continue
        kept.append(row)
    frame = pd.DataFrame(kept)
    for column in RAW_COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.Series(dtype=object)
    return frame


def normalise(caption: str) -> str:
    """One line, single spaces, no leading or trailing space."""
    return " ".join(caption.split())


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and value != value) or str(value).strip() == ""


def clean_rows(rows: pd.DataFrame, log: SkipLog) -> pd.DataFrame:
    """Rows that can train, in their original order; every dropped row is counted once, under
    the first reason that applies, in the order of the checks below (invalid UTF-8 was
    counted by raw_frame)."""
    keep, texts = [], []
    seen: set[tuple[str, str]] = set()
    for i, (image_id, path, caption) in enumerate(zip(rows["image_id"], rows["image_path"], rows["caption"])):
        if _blank(image_id) or _blank(path):
            log.skip("caption_without_image", f"row {i}: {str(caption)[:60]!r}")
            continue
        caption = "" if _blank(caption) else str(caption)
        text = normalise(caption)
        if not text:
            log.skip("empty_caption", f"{image_id}")
            continue
        if text != caption:
            log.fix("caption_whitespace")
        if (str(image_id), text) in seen:
            log.skip("duplicate_row", f"{image_id}: {text[:60]!r}")
            continue
        seen.add((str(image_id), text))
        keep.append(i)
        texts.append(text)
    out = rows.iloc[keep].copy()
    out["caption"] = texts
    out["image_id"] = out["image_id"].astype(str)
    return out
