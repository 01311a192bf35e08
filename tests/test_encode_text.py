"""training/encode_text.py: a finished run's text tower, rebuilt from its config and final
weights, embeds its own captions as evaluation did (so free-text queries and new prompts are
embedded by the model that was evaluated), and refuses weights of another frozen model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core import run_store

ROOT = Path(__file__).resolve().parents[1]


def encoded(run: Path, texts: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "training" / "encode_text.py"), str(run), *texts],
                          check=False, cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize("name", ["locked", "unlocked"])  # heads only; heads and every tower layer trained
def test_a_run_embeds_its_captions_as_its_evaluation_did(tiny_runs, name):
    run = tiny_runs / "tiny" / name
    rows, vectors = run_store.read_last_vectors(run)
    texts = rows["modality"] == "text"
    captions = rows.loc[texts, "caption"].tolist()[:4]
    done = encoded(run, captions)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["texts"] == captions
    got = np.asarray(out["embeddings"])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose((got * vectors[texts.to_numpy()][:4]).sum(axis=1), 1.0, atol=1e-4)


def test_weights_of_another_frozen_model_are_refused(tiny_runs, tmp_path):
    run = tmp_path / "tiny" / "locked"
    shutil.copytree(tiny_runs / "tiny" / "locked", run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "seed": config["seed"] + 1}))  # other random towers
    done = encoded(run, ["a red circle"])
    assert done.returncode != 0 and "frozen weights" in done.stderr
