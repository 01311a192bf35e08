"""Your own captions file: a CSV/TSV or JSONL table of image path + caption, with optional
split and label columns. Column names are options; left out, the common names are found:
open_clip's CSV (`filepath`, `title`, tab-separated) and Hugging Face imagefolder's
`metadata.jsonl` (`file_name`, `text`) need none.

Image paths are relative to --images-root (default: the table's folder) unless absolute.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pandas as pd

from data.sources.captions import raw_frame
from data.sources.image_check import is_image_file
from data.sources.skips import SkipLog
from data.sources.splits import split_name

IMAGE_COLUMNS = ("filepath", "file_name", "image_path", "image", "filename", "path", "image_name", "img")
CAPTION_COLUMNS = ("title", "text", "caption", "captions", "comment", "sentence")
SPLIT_COLUMNS = ("split",)
LABEL_COLUMNS = ("label", "category", "class")
SEPARATORS = ("\t", ",", "|", ";")


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, path: Path,
          required: bool = True) -> str | None:
    if wanted:
        if wanted not in columns:
            raise ValueError(f"{path} has no column {wanted!r} for the {what}; its columns: {columns}")
        return wanted
    for name in candidates:
        for column in columns:
            if column.strip().lower() == name:
                return column
    if required:
        raise ValueError(f"{path}: no {what} column found among {columns}; name it with "
                         f"--{what.replace(' ', '-')}-column (tried {', '.join(candidates)})")
    return None


def _rows(records: list[dict], columns: list[str], root: Path, path: Path, image_col, caption_col,
          split_col, label_col) -> list[dict]:
    image_col = _pick(columns, image_col, IMAGE_COLUMNS, "image", path)
    caption_col = _pick(columns, caption_col, CAPTION_COLUMNS, "caption", path)
    split_col = _pick(columns, split_col, SPLIT_COLUMNS, "split", path, required=False)
    label_col = _pick(columns, label_col, LABEL_COLUMNS, "label", path, required=False)
    rows = []
    for record in records:
        name = record.get(image_col)
        name = "" if name is None else str(name).strip()
        captions = record.get(caption_col)
        for caption in captions if isinstance(captions, list) else [captions]:  # HF allows a list
            rows.append(dict(image_id=Path(name).as_posix() if name else "",
                             image_path=str(root / name) if name else "", caption=caption,
                             split=split_name(record.get(split_col)) if split_col else "",
                             label="" if not label_col or record.get(label_col) is None else str(record[label_col])))
    return rows


def _images_under(root: Path) -> set[str]:
    return {os.path.join(d, f) for d, _, files in os.walk(root) for f in files if is_image_file(f)}


def read_csv(path: Path, images_root: Path | None, log: SkipLog, separator: str | None = None,
             image_column: str | None = None, caption_column: str | None = None, split_column: str | None = None,
             label_column: str | None = None) -> tuple[pd.DataFrame, set[str]]:
    root = images_root or path.parent
    text = path.read_bytes().decode("utf-8-sig", "surrogateescape")
    header = text.split("\n", 1)[0]
    sep = separator or next((s for s in SEPARATORS if s in header), ",")
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    columns = next(reader, [])
    records = []
    for row in reader:
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            log.skip("malformed_row", f"line {reader.line_num}: {sep.join(row)[:60]!r}")
            continue
        records.append(dict(zip(columns, row)))
    rows = _rows(records, columns, root, path, image_column, caption_column, split_column, label_column)
    return raw_frame(rows, log), _images_under(root)


def read_jsonl(path: Path, images_root: Path | None, log: SkipLog, image_column: str | None = None,
               caption_column: str | None = None, split_column: str | None = None,
               label_column: str | None = None) -> tuple[pd.DataFrame, set[str]]:
    root = images_root or path.parent
    records, columns = [], []
    for n, line in enumerate(path.read_bytes().decode("utf-8-sig", "surrogateescape").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            log.skip("malformed_row", f"line {n}: {line[:60]!r}")
            continue
        columns += [k for k in record if k not in columns]
        records.append(record)
    rows = _rows(records, columns, root, path, image_column, caption_column, split_column, label_column)
    return raw_frame(rows, log), _images_under(root)
