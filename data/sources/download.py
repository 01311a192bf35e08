"""Fetching official archives for sources that have them (COCO, Flickr8k): fail fast and
clearly when the host cannot be reached, resume a partial download, unpack once.
"""

from __future__ import annotations

import shutil
import socket
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

from core import atomic

CONNECT_TIMEOUT_S = 5.0  # fail fast offline: no retries against a host that is not there
READ_TIMEOUT_S = 60.0


class DownloadUnavailable(RuntimeError):
    """The network or the download tool a source needs is not there."""


def unreachable(url: str) -> str | None:
    """Why url's host does not answer a TCP connect within CONNECT_TIMEOUT_S (None if it does):
    seconds to know, where a client's retries against a missing network take minutes."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        return f"{parts.hostname}:{port} cannot be reached ({e})"
    return None


def require_network(urls: list[str], by_hand: str) -> None:
    """Raise DownloadUnavailable, naming what to do instead, unless every host answers."""
    for url in urls:
        if why := unreachable(url):
            raise DownloadUnavailable(f"--download needs the network, and {why}. Offline, {by_hand}")


def fetch(url: str, dest: Path) -> Path:
    """Download url to dest, resuming a `.part` file left by an interrupted try."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=READ_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416:  # the part file is already complete
            atomic.publish(part, dest)
            return dest
        raise DownloadUnavailable(f"downloading {url} failed: HTTP {e.code} {e.reason}") from e
    except OSError as e:
        raise DownloadUnavailable(f"downloading {url} failed: {e}") from e
    from tqdm.auto import tqdm

    with response:
        resumed = response.status == 206
        total = int(response.headers.get("Content-Length", 0)) + (have if resumed else 0)
        with open(part, "ab" if resumed else "wb") as f, tqdm(
                total=total or None, initial=have if resumed else 0, unit="B", unit_scale=True,
                desc=dest.name) as bar:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
    atomic.publish(part, dest)
    return dest


def unpack(archive: Path, into: Path) -> None:
    """Extract a zip once (a marker file records it), refusing members that leave `into`."""
    marker = into / f".unpacked-{archive.name}"
    if marker.exists():
        return
    into.mkdir(parents=True, exist_ok=True)
    root = into.resolve()
    with zipfile.ZipFile(archive) as z:
        for member in z.infolist():
            target = (into / member.filename).resolve()
            if root not in target.parents and target != root:
                raise ValueError(f"{archive} member {member.filename!r} would be written outside {into}")
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    marker.write_text("")


def fetch_and_unpack(urls: list[str], into: Path, by_hand: str) -> None:
    """All archives of a source into one folder; archives are kept under into/archives/."""
    require_network(urls, by_hand)
    for url in urls:
        archive = fetch(url, into / "archives" / Path(urlsplit(url).path).name)
        unpack(archive, into)
