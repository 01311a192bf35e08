"""Imports run downward only (DESIGN.md, "Data flow"): the layers below, bottom first. A module
may import its own package and any package of a lower layer, never one of its own layer or
above. The readers (the results layer and everything on top of it) never import torch at
module level, so that the dashboard and the notebook do not pay for it; the one exception is
the Query tab, which loads a run's weights inside a function. Nor do they import training,
which does.

The check reads the source (every import statement, those inside functions too), so it runs in
a second and fails on a backward import before any code does."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [  # bottom first; a package's top-level name -> its layer
    {"core"},  # run store, config, metric names and directions, statistics
    {"data"},  # data preparation: sources -> manifest
    {"training"},  # models, the training loop, evaluation, maps
    {"analysis"},  # the results layer: figures and comparisons, computed once
    {"charts"},  # Altair charts of the results layer's frames
    {"views", "writeup"},  # the dashboard's tabs; the write-up's helpers
    {"dashboard"},
]
RANK = {package: i for i, layer in enumerate(LAYERS) for package in layer}
# Entry points run the pipeline's stages in order, so they sit on top of every layer: train.py
# trains, then runs the results step.
ENTRY_POINTS = {"training/train.py", "data/prepare.py"}
TORCH = {"torch", "torchvision", "transformers", "accelerate", "timm", "sentence_transformers", "open_clip"}
TORCH_FREE = {"core", "analysis", "charts", "views", "writeup", "dashboard"}


def project_modules() -> list[Path]:
    return sorted(p for package in RANK for p in
                  ([ROOT / f"{package}.py"] if (ROOT / f"{package}.py").exists() else (ROOT / package).rglob("*.py")))


def imports(tree: ast.AST) -> list[tuple[str, int, bool]]:
    """(module imported, line, at module level) for every absolute import of `tree`."""
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno, id(node) in top))
    return found


def layering_problems(path: Path, source: str) -> list[str]:
    """Every import of one module that runs upward, sideways, or into torch where it may not."""
    relative = path.relative_to(ROOT).as_posix()
    package = relative.split("/")[0].removesuffix(".py")
    problems = []
    for module, line, module_level in imports(ast.parse(source)):
        target = module.split(".")[0]
        where = f"{relative}:{line} imports {module}"
        if target in RANK and target != package and relative not in ENTRY_POINTS and RANK[target] >= RANK[package]:
            order = " -> ".join("/".join(sorted(layer)) for layer in LAYERS)
            problems.append(f"{where}: {target} is not below {package} ({order})")
        if (target in TORCH or target == "training") and package in TORCH_FREE and module_level:
            problems.append(f"{where}: {package} is read without torch (training imports it)")
    return problems


def test_every_import_runs_downward():
    problems = [p for path in project_modules() for p in layering_problems(path, path.read_text())]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("path", "source", "expected"), [
    ("core/stats.py", "from analysis.runs import stack\n", "analysis is not below core"),
    ("analysis/runs.py", "from training.models import build_model\n", "analysis is read without torch"),
    ("data/manifest.py", "from training import features\n", "training is not below data"),
    ("views/runs.py", "from writeup import report\n", "writeup is not below views"),
    ("analysis/runs.py", "import torch\n", "analysis is read without torch"),
    ("charts.py", "def f():\n    from views import common\n", "views is not below charts"),
])
def test_a_backward_import_is_caught(path, source, expected):
    problems = layering_problems(ROOT / path, source)
    assert len(problems) == 1 and expected in problems[0]


def test_downward_and_lazy_imports_pass():
    lazy = "def f():\n    import torch\n    from training import models\n"
    assert layering_problems(ROOT / "views/query.py", lazy) == []
    assert layering_problems(ROOT / "training/train.py", "from analysis import results\n") == []
