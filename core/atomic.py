"""Atomic file writes, for every writer in the project (data preparation, the run store, the
feature cache, checkpoints, downloads, benchmark results).

A file is written to a temporary sibling whose name starts with "." and then renamed over
its target, so a reader, or a kill in the middle, never sees half a file. `durable` also
fsyncs the file before the rename and its folder after, so that the new file survives a
power cut, not only a crash of the process: on for what cannot be rebuilt cheaply (runs,
manifests, results), off for caches that are recomputed when a file is torn.

    atomic.write_json(folder / "status.json", {"state": "RUNNING"})
    atomic.write(path, lambda tmp: torch.save(tensor, tmp), durable=False)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path


def temporary(path: Path) -> Path:
    """The hidden sibling a write of `path` goes through (per process: two writers never share one)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write(path: Path | str, write_to: Callable[[Path], object], durable: bool = True) -> None:
    """Call write_to(temporary path), then put that file in place of `path`."""
    path = Path(path)
    tmp = temporary(path)
    try:
        write_to(tmp)
        publish(tmp, path, durable)
    finally:
        tmp.unlink(missing_ok=True)  # only left when write_to or the rename failed


def write_bytes(path: Path | str, data: bytes, durable: bool = True) -> None:
    write(path, lambda tmp: tmp.write_bytes(data), durable)


def write_text(path: Path | str, text: str, durable: bool = True) -> None:
    write(path, lambda tmp: tmp.write_text(text), durable)


def write_json(path: Path | str, obj, durable: bool = True) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", durable)


def publish(tmp: Path, path: Path, durable: bool = True) -> None:
    """Rename a finished temporary file or folder over `path`; what a caller that writes its
    own temporary (a resumable download's .part, a checkpoint folder) uses directly."""
    if durable and tmp.is_file():
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
