"""What caching the frozen parts of the towers buys, each measured side by side in one process:

- per-epoch time of a both-towers-locked run: cached tower features vs recomputing the
  towers every step, on the same pairs;
- per-epoch time of a text-unlocked run (MiniLM's top two layers train, image features
  cached): the frozen bottom four layers' token states cached vs run every step;
- the features' extraction itself: EfficientNet-Lite0 with its batch norms folded into the
  convolutions vs as trained, 64 images at 224 px, at the sweep's precision on this CPU.

    .venv/bin/python bench/feature_cache.py [--images 512]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.cpu_precision import median_seconds
from bench.results import record
from core.config import RunConfig
from data.manifest import load_manifest
from training.features import TowerInputs
from training.losses import clip_loss
from training.models import build_model
from training.pairs import Pairs
from training.step import resolve_precision, training_attention

ROOT = Path(__file__).resolve().parents[1]

COMMAND = ".venv/bin/python bench/feature_cache.py"


PRECISION = resolve_precision("auto")  # the main job's, on this CPU


def autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=PRECISION == "bf16")


def tower_inputs(model, pairs, cache_dir, **kwargs) -> TowerInputs:
    with autocast():  # features at the precision the sweep computes them
        return TowerInputs(model, pairs, cache_dir, show_progress=False, **kwargs)


def epoch_seconds(model, inputs: TowerInputs, rows: torch.Tensor, batch_size: int) -> float:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    t0 = time.perf_counter()
    for lo in range(0, len(rows) - batch_size + 1, batch_size):
        batch = rows[lo:lo + batch_size]
        with autocast(), training_attention(torch.device("cpu"), PRECISION):  # as train.py's step
            image_emb, text_emb, scale = model(*inputs.rows_batch(batch, batch).model_args())
            loss = clip_loss(image_emb, text_emb, scale)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - t0


def folded_extraction(model) -> tuple[float, float, float]:
    """(as trained s, folded s, min cosine) for the image tower over 64 images."""
    tower = model.image_tower
    pixels = torch.randn(64, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    pixels = pixels.contiguous(memory_format=torch.channels_last)
    folded = tower.inference_stages(0, len(tower.stages))
    with torch.inference_mode(), autocast():
        plain_s, folded_s = median_seconds(lambda: tower(pixels)), median_seconds(lambda: folded(pixels))
        cosine = torch.nn.functional.cosine_similarity(tower(pixels).float(), folded(pixels).float()).min().item()
    return plain_s, folded_s, cosine


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=512, help="training pairs per epoch")
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args(argv)
    manifest = load_manifest("openmoji").head(args.images)  # one caption per image
    pairs = Pairs.from_manifest(manifest)
    model = build_model(RunConfig())
    rows = torch.randperm(len(pairs.captions), generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        cached = tower_inputs(model, pairs, Path(cache))
        extract = time.perf_counter() - t0
        fast = epoch_seconds(model, cached, rows, args.batch_size)
    uncached = tower_inputs(model, pairs, Path(tempfile.gettempdir()), cache=False)
    slow = epoch_seconds(model, uncached, rows, args.batch_size)
    ratio = slow / fast

    text_model = build_model(RunConfig(unlock_text=2))
    with tempfile.TemporaryDirectory() as cache:
        bottom = epoch_seconds(text_model, tower_inputs(text_model, pairs, Path(cache)), rows, args.batch_size)
        tokens = epoch_seconds(text_model, tower_inputs(text_model, pairs, Path(cache), text=False), rows,
                               args.batch_size)
    plain_s, folded_s, cosine = folded_extraction(model)

    print(f"{'mode':44s} {'s/epoch':>9s}")
    print(f"{'locked towers: recompute towers':44s} {slow:9.2f}")
    print(f"{'locked towers: cached features':44s} {fast:9.3f}")
    print(f"{'locked towers: one-off extraction':44s} {extract:9.2f}")
    print(f"{'top 2 text layers train: all 6 run':44s} {tokens:9.2f}")
    print(f"{'top 2 text layers train: bottom 4 cached':44s} {bottom:9.2f}")
    print(f"speed-ups per epoch ({args.images} pairs, batch {args.batch_size}, precision {PRECISION}): "
          f"locked {ratio:.0f}x, "
          f"text-unlocked {tokens / bottom:.2f}x")
    print(f"image features, 64 images: as trained {plain_s:.3f} s, batch norms folded {folded_s:.3f} s "
          f"({plain_s / folded_s:.2f}x), min cosine {cosine:.5f}")
    record("feature_cache.epoch_speedup", round(ratio, 1), "x", ">= 10 (issue 4)",
           f"both towers locked, {args.images} openmoji pairs, batch {args.batch_size}, precision {PRECISION}; "
           f"recompute {slow:.2f} s/epoch, cached {fast:.3f} s/epoch", COMMAND)
    record("feature_cache.text_bottom_speedup", round(tokens / bottom, 2), "x", "",
           f"MiniLM top 2 of 6 layers trained, image features cached, {args.images} openmoji pairs, batch "
           f"{args.batch_size}, precision {PRECISION}; all layers each step {tokens:.2f} s/epoch, "
           f"frozen bottom 4 cached {bottom:.2f} s/epoch",
           COMMAND)
    record("feature_cache.folded_extraction_speedup", round(plain_s / folded_s, 2), "x", "",
           f"EfficientNet-Lite0 forward, 64 images at 224 px, precision {PRECISION}: as trained "
           f"{plain_s:.3f} s, batch norms folded {folded_s:.3f} s; min cosine between the two {cosine:.5f}", COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
