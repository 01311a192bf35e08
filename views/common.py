"""Small helpers every view uses: literal text in Markdown, picking runs, and the runs'
configuration groups."""

from __future__ import annotations

import re

import streamlit as st

from analysis.runs import group_names
from core import run_store

MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#+\-!|~$:])")  # Markdown's marks, and : of :emoji: codes


def md(text) -> str:
    """Text shown literally inside Streamlit Markdown: captions carry *, _, $ and : ."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def by_key(runs: list[run_store.Run]) -> dict[str, run_store.Run]:
    return {r.key: r for r in runs}


def finished(runs: list[run_store.Run]) -> list[run_store.Run]:
    """Runs with per-sample files: run_store has checked that a FINISHED run's are readable."""
    return [r for r in runs if r.state == "FINISHED"]


def run_groups(runs: list[run_store.Run]) -> dict[str, str]:
    """run key -> its configuration group (analysis.runs.group_names)."""
    return group_names([(r.key, r.config) for r in runs])


def members(groups: dict[str, str]) -> dict[str, list[str]]:
    """group -> its run keys, both in the order of the runs."""
    out: dict[str, list[str]] = {}
    for key, group in groups.items():
        out.setdefault(group, []).append(key)
    return out


def group_seeds(groups: dict[str, str]) -> bool:
    """The "Group seeds" toggle, shown (on by default) where a group has several runs; one
    setting for every view of the session."""
    if all(len(keys) == 1 for keys in members(groups).values()):
        return False
    return st.toggle("Group seeds", value=True, key="group_seeds", persist_state="session",
                     help="One row or curve per configuration: the runs that differ only in their seed, pooled.")
