"""Small helpers every view uses: literal text in Markdown, and picking runs."""

from __future__ import annotations

import re

from training import run_store

MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#+\-!|~$:])")  # Markdown's marks, and : of :emoji: codes


def md(text) -> str:
    """Text shown literally inside Streamlit Markdown: captions carry *, _, $ and : ."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def by_key(runs: list[run_store.Run]) -> dict[str, run_store.Run]:
    return {r.key: r for r in runs}


def finished(runs: list[run_store.Run]) -> list[run_store.Run]:
    """Runs with per-sample files: run_store has checked that a FINISHED run's are readable."""
    return [r for r in runs if r.state == "FINISHED"]
