"""writeup.ipynb: it executes top to bottom on the tiny runs (a sweep with no "heads-only" run,
5 validation images, 2 epochs) without importing torch, and it has the hand-in's sections."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "writeup.ipynb"
SECTIONS = ["1. Introduction", "2. Data preparation", "3. Training", "4. Results analysis",
            "5. Experiments", "6. Evaluation", "7. Conclusion"]


def test_notebook_executes_on_tiny_runs(tiny_runs, monkeypatch):
    monkeypatch.setenv("RUNS_DIR", str(tiny_runs))
    monkeypatch.delenv("SWEEP", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the notebook only reads and plots: training code (torch) must never be imported
    check = 'import sys\nassert "torch" not in sys.modules, "the notebook imported torch"'
    nb.cells.append(nbformat.v4.new_code_cell(check))
    client = NotebookClient(nb, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError on the first cell that fails

    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"runs folder : {tiny_runs.resolve()}" in text
    assert "sweep       : tiny" in text
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    pngs = sum("image/png" in o.get("data", {}) for o in outputs)
    assert pngs >= 5, f"expected the figures to render as PNG, got {pngs}"


@pytest.mark.parametrize("heading", SECTIONS)
def test_notebook_has_section(heading):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    headings = [line.lstrip("#").strip() for c in nb.cells if c.cell_type == "markdown"
                for line in c.source.splitlines() if line.startswith("## ")]
    assert heading in headings, f"section {heading!r} missing; headings found: {headings}"
