"""Per-epoch time of a both-towers-locked run: cached tower features vs recomputing the
towers every step, measured side by side in one process on the same pairs.

    .venv/bin/python bench/feature_cache.py [--images 512]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.results import record  # noqa: E402
from data.manifest import load_manifest  # noqa: E402
from training.config import RunConfig  # noqa: E402
from training.features import TowerInputs  # noqa: E402
from training.losses import clip_loss  # noqa: E402
from training.models import build_model  # noqa: E402
from training.pairs import Pairs  # noqa: E402


def epoch_seconds(model, inputs: TowerInputs, rows: torch.Tensor, batch_size: int) -> float:
    inputs.attach()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    t0 = time.perf_counter()
    for lo in range(0, len(rows) - batch_size + 1, batch_size):
        batch = rows[lo:lo + batch_size]
        image_emb, text_emb, scale = model(inputs.image_input(batch), inputs.text_input(batch))
        loss = clip_loss(image_emb, text_emb, scale)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - t0


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
        cached = TowerInputs(model, pairs, Path(cache), show_progress=False)
        extract = time.perf_counter() - t0
        fast = epoch_seconds(model, cached, rows, args.batch_size)
    slow = epoch_seconds(model, TowerInputs(model, pairs, cache=False, show_progress=False), rows, args.batch_size)
    ratio = slow / fast
    print(f"{'mode':28s} {'s/epoch':>9s}")
    print(f"{'recompute towers':28s} {slow:9.2f}")
    print(f"{'cached features':28s} {fast:9.3f}")
    print(f"{'one-off extraction':28s} {extract:9.2f}")
    print(f"speed-up per epoch: {ratio:.0f}x ({args.images} pairs, batch {args.batch_size})")
    cmd = ".venv/bin/python bench/feature_cache.py"
    record("feature_cache.epoch_speedup", round(ratio, 1), "x", ">= 10 (issue 4)",
           f"both towers locked, {args.images} openmoji pairs, batch {args.batch_size}; "
           f"recompute {slow:.2f} s/epoch, cached {fast:.3f} s/epoch", cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
