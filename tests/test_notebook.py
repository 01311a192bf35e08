"""writeup.ipynb: it executes top to bottom on the tiny runs (a sweep with no comparisons, no
test split and one seed per configuration, 5 validation images, 2 epochs) without importing
torch, it has the hand-in's sections, and its prose states no result: every figure is formatted
from the runs in an output."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "writeup.ipynb"
SECTIONS = ["1. Introduction", "2. Data preparation", "3. Training", "4. Results analysis",
            "5. Experimentation", "6. Evaluation", "7. Discussion and conclusion"]
# What reads as a measured figure in prose: a decimal (0.31), a percentage (31%, 31.5 %), a
# recall or count stated with a sign (R@1 = 31, R@5: 0.2, n = 818), a count out of a total (419 of 818).
MEASURED = re.compile(r"\d+\.\d+|\d+(?:\.\d+)?\s?%|R@\d+\s*[=:]\s*\d|\bn\s*=\s*\d|\b\d+ of \d+\b")
# Constants of the literature and of the method that prose may state (the rest of the digits in
# prose are years, sizes and names: 2022, 224 px, ViT-B/32, all-MiniLM-L6-v2).
ALLOWED = ["0.07",  # CLIP's initial temperature (Radford et al. 2021)
           "95%"]  # the confidence level of every interval
# Commands and code quoted in prose carry settings (`--fraction 0.1`), not results.
CODE = re.compile(r"```.*?```|`[^`]*`|^(?: {4}|\t).*$", re.DOTALL | re.MULTILINE)


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

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "sweep       : tiny" in text
    assert str(tiny_runs.resolve()) in text  # Appendix B says where the runs were read
    assert not [o for o in outputs if o.get("output_type") == "error" or o.get("name") == "stderr"], \
        "the notebook printed an error or a warning"
    pngs = sum("image/png" in o.get("data", {}) for o in outputs)
    assert pngs >= 5, f"expected the figures to render as PNG, got {pngs}"


@pytest.mark.parametrize("heading", SECTIONS)
def test_notebook_has_section(heading):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    headings = [line.lstrip("#").strip() for c in nb.cells if c.cell_type == "markdown"
                for line in c.source.splitlines() if line.startswith("## ")]
    assert heading in headings, f"section {heading!r} missing; headings found: {headings}"


def measured_figures(markdown: str) -> list[str]:
    """The figures a markdown text states in its prose (outside code), allowed constants aside."""
    prose = CODE.sub(" ", markdown)
    for constant in ALLOWED:
        prose = prose.replace(constant, " ")
    return MEASURED.findall(prose)


def test_the_figure_finder_finds_figures_and_lets_constants_and_code_pass():
    for figure in ("reaches R@1 of 0.31", "31% of the images", "31.5 % of them", "R@1 = 31", "R@5: 4",
                   "n = 818 images", "419 of 818 validation images"):
        assert measured_figures(figure), figure
    for prose in ("initialised at $\\tau = 0.07$", "a 95% interval", "ViT-B/32 at 224 px (Zhai et al. 2022)",
                  "$\\sum_{i=1}^{N}$ and $1/\\tau \\le 100$", "`--fraction 0.1`",
                  "    python prepare.py --val-fraction 0.2",
                  "R@1 of the reference", "top-5 retrieval"):
        assert not measured_figures(prose), prose


def test_no_markdown_cell_states_a_result():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    stated = {i: found for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
              if (found := measured_figures(c.source))}
    assert not stated, f"markdown cells state figures (they belong in outputs formatted from the runs): {stated}"
