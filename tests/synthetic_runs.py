"""Run-store frames and run folders whose per-query outcomes are chosen by the test, written
through run_store.RunWriter in milliseconds: for the comparisons and intervals of
tests/test_analysis.py and tests/test_dashboard.py, which must know the truth they test."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from analysis.compare import query_outcomes
from core import run_store

CAPTIONS_PER_IMAGE = 2
STEP = 10


def image_ids(n: int) -> list[str]:
    return [f"im{i:03d}" for i in range(n)]


def thumbnail(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (40 * (i % 6), 90, 160)).save(buf, format="PNG")
    return buf.getvalue()


def samples_frame(image_ranks, caption_ranks=None, zero_shot=None, ids: list[str] | None = None) -> pd.DataFrame:
    """samples.parquet of one run: an image per entry of `image_ranks` (rank of its first right
    caption), CAPTIONS_PER_IMAGE captions each (`caption_ranks`, one per caption in image order;
    default: each caption at its image's rank), zero-shot correctness per image (NaN: no labels)."""
    image_ranks = np.asarray(image_ranks, dtype=int)
    ids = ids or image_ids(len(image_ranks))
    n = len(ids)
    caption_ranks = np.repeat(image_ranks, CAPTIONS_PER_IMAGE) if caption_ranks is None else np.asarray(caption_ranks)
    zero_shot = np.full(n, np.nan) if zero_shot is None else np.asarray(zero_shot, dtype=float)
    caption_ids = [f"txt:{i}:{j}" for i in ids for j in range(CAPTIONS_PER_IMAGE)]
    images = pd.DataFrame({
        "modality": "image", "split": "val", "sample_id": [f"img:{i}" for i in ids], "image_id": ids,
        "caption": [f"a shape number {i}" for i in ids], "label": [f"L{k % 3}" for k in range(n)], "step": STEP,
        "rank": image_ranks, "positive_cosine": np.float32(0.5),
        "topk_ids": [caption_ids[2 * k: 2 * k + 2] for k in range(n)], "topk_scores": [[0.5, 0.4]] * n,
        "thumbnail": [thumbnail(k) for k in range(n)], "tied": image_ranks % 7 == 0, "zero_shot_correct": zero_shot})
    owner = np.repeat(ids, CAPTIONS_PER_IMAGE)
    texts = pd.DataFrame({
        "modality": "text", "split": "val", "sample_id": caption_ids, "image_id": owner,
        "caption": [f"a shape number {i}" for i in owner], "label": [f"L{ids.index(i) % 3}" for i in owner],
        "step": STEP, "rank": caption_ranks, "positive_cosine": np.float32(0.5),
        "topk_ids": [[f"{i}"] for i in owner], "topk_scores": [[0.5]] * len(owner), "thumbnail": None,
        "tied": False, "zero_shot_correct": np.nan})
    return pd.concat([images, texts], ignore_index=True)


def embeddings(samples: pd.DataFrame) -> pd.DataFrame:
    rows = samples[["sample_id", "modality", "image_id", "caption", "label", "step"]].assign(split="val")
    vectors = np.random.default_rng(len(rows)).normal(size=(len(rows), 4)).astype(np.float32)
    return rows.assign(embedding=list(vectors / np.linalg.norm(vectors, axis=1, keepdims=True)))


def ranks(rng: np.random.Generator, n: int, right: float) -> np.ndarray:
    """n image ranks, a share `right` of them 1, the others 2 to 20."""
    return np.where(rng.random(n) < right, 1, rng.integers(2, 21, n))


def write_run(root: Path, key: str, samples: pd.DataFrame, config: dict | None = None,
              state: str = "FINISHED") -> Path:
    """A run folder under root for key "<sweep>/<run>": its config (seed 0 unless given),
    a short loss curve, evaluations at step 0 and at STEP whose figures are the samples'
    own (each with a stored interval of +-0.05 at the end), and the samples."""
    sweep, name = key.split("/")
    config = config or {}
    writer = run_store.RunWriter(run_store.run_dir(root, sweep, name))
    writer.write_config({"name": name, "sweep": sweep, "seed": 0, **config})
    writer.set_status("RUNNING", step=0)
    for step in range(1, STEP + 1):
        writer.log_metrics(step, step / STEP, step * 0.1, {"loss": 3.0 - step * 0.1 * (1 + config.get("seed", 0))})
    figures = query_outcomes(samples).groupby("metric")["outcome"].mean().to_dict()
    writer.log_eval(0, 0.0, "val", {m: v / 2 for m, v in figures.items()})
    writer.log_eval(STEP, 1.0, "val", figures | {"modality_gap": 0.8},
                    intervals={m: (v - 0.05, v + 0.05) if m.endswith("rank") else (max(v - 0.05, 0), min(v + 0.05, 1))
                               for m, v in figures.items()})
    writer.flush()
    if state == "FINISHED":  # a finished run has every file; the views that draw embeddings need only a few
        writer.write_embeddings(embeddings(samples))
        writer.write_samples(samples)
    writer.set_status(state, step=STEP)
    return writer.path


def known_ranks(right: int, drop: tuple = (), n: int = 40) -> np.ndarray:
    """n image ranks: the first `right` at rank 1 except those in `drop` (at 5), the rest at 2..9."""
    ranks = np.where(np.arange(n) < right, 1, 2 + np.arange(n) % 8)
    ranks[list(drop)] = 5
    return ranks


def make_seeded_runs(root: Path) -> Path:
    """Sweep s under root: configuration base (three seeds, 12, 10 and 14 of 40 images right at
    R@1) far behind configuration better (two seeds, 32 and 31); close, one run two images behind
    better.s0; worse, far behind every run (4); subset, on 20 of the images (a label subset)."""
    for seed, right in enumerate((12, 10, 14)):
        write_run(root, f"s/base.s{seed}", samples_frame(known_ranks(right)), dict(group="base", seed=seed, lr=1e-3))
    for seed, drop in enumerate(((), (3,))):
        write_run(root, f"s/better.s{seed}", samples_frame(known_ranks(32, drop)),
                  dict(group="better", seed=seed, lr=3e-3))
    write_run(root, "s/close", samples_frame(known_ranks(32, drop=(0, 1))), {"lr": 2e-3})
    write_run(root, "s/worse", samples_frame(known_ranks(4)), {"lr": 1e-2})
    write_run(root, "s/subset", samples_frame(known_ranks(15)[:20]), {"lr": 1e-2, "include_labels": ["L0"]})
    return root
