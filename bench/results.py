"""Benchmark figures: bench/results.json (name -> value, unit, target, machine, date, code
revision, notes, command) and the bench/RESULTS.md table made from it. Every benchmark records
through `record`, which merges its figure with those already there and rewrites the table.

    from bench.results import record
    record("dashboard.open_s", 1.2, "s", 3.0, "12 runs x 4,000 samples", "python bench/dashboard_latency.py")
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from core import atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
MARKDOWN = RESULTS.with_name("RESULTS.md")


def machine() -> str:
    """CPU model and core count of the machine the figure was measured on."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs"


@functools.cache
def code_revision() -> str | None:
    """The commit the checkout is at, "-dirty" when tracked files other than these results
    differ from it; None without git. Asked once per process: a benchmark records many figures
    of the same code."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        head = git("rev-parse", "--short=10", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results.json",
                      ":!bench/RESULTS.md")
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("-dirty" if changed else "")) or None


def load() -> dict:
    try:
        return json.loads(RESULTS.read_text())
    except FileNotFoundError:
        return {}


def record(name: str, value: float, unit: str, target: float | str | None, notes: str = "",
           command: str = "", measured_on: str | None = None, revision: str | None = None) -> None:
    """Set one figure (a numeric target is an upper bound on the value; a text target is
    shown as written), keep every other figure, and rewrite RESULTS.md. `measured_on` and
    `revision` name the machine and the code when they are not this checkout's (a GPU
    machine's figures recorded here)."""
    results = load()
    results[name] = {"value": value, "unit": unit, "target": target, "machine": measured_on or machine(),
                     "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "revision": revision or code_revision() or "", "notes": notes, "command": command}
    atomic.write_json(RESULTS, results)
    write_markdown()


def _target(r: dict) -> str:
    target = r.get("target")
    if target in (None, ""):
        return ""
    return f"<= {target:g} {r['unit']}" if isinstance(target, (int, float)) else str(target)


def write_markdown() -> Path:
    """Rewrite RESULTS.md from results.json."""
    lines = ["# Benchmark results", "",
             "Generated from `bench/results.json` by `bench/results.py`; rerun a benchmark to update it.",
             "`code` is the commit the figure was measured on (`-dirty`: with uncommitted changes to it); "
             "for figures recorded before this column existed, the commit that recorded them.", "",
             "| name | value | target | machine | date | code | notes | command |",
             "| --- | ---: | --- | --- | --- | --- | --- | --- |"]
    for name, r in sorted(load().items()):
        command = f"`{r['command']}`" if r.get("command") else ""
        lines.append(f"| {name} | {r['value']:g} {r['unit']} | {_target(r)} | {r.get('machine', '')} | "
                     f"{r.get('date', '')} | {r.get('revision', '')} | {r.get('notes', '')} | {command} |")
    MARKDOWN.write_text("\n".join(lines) + "\n")
    return MARKDOWN
