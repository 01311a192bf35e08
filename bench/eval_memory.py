"""Evaluation memory: chunked retrieval over 25,000 captions x 5,000 images of 512-d embeddings.

    .venv/bin/python bench/eval_memory.py

1. Peak memory beyond the embeddings, measured in a fresh process (Linux peak RSS, reset
   through /proc/self/clear_refs after the embeddings exist), against the size of one
   chunk's similarity block (chunk x 25,000 float32): target at most one block. The peer,
   measured the same way in its own fresh process, is one bare product of that block, whose growth is the
   block plus the BLAS library's packing buffers: the floor any chunked retrieval pays.
2. Correctness: on a 2,000-image subset (its 10,000 captions), every R@k both ways, the mean
   and median ranks equal those of a full-matrix reference computed the plain way.
Records both in bench/results.json and bench/RESULTS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

N_IMAGES, CAPTIONS_PER_IMAGE, DIM, CHUNK = 5_000, 5, 512, 1024
COMMAND = ".venv/bin/python bench/eval_memory.py"


def embeddings(n_images: int, seed: int = 0):
    """Captions near their image (noise on top), so ranks are neither all 1 nor random."""
    g = torch.Generator().manual_seed(seed)
    images = torch.nn.functional.normalize(torch.randn(n_images, DIM, generator=g), dim=1)
    t2i = torch.arange(n_images).repeat_interleave(CAPTIONS_PER_IMAGE)
    texts = torch.nn.functional.normalize(images[t2i] + 9.0 * torch.randn(len(t2i), DIM, generator=g) / DIM**0.5,
                                          dim=1)
    return images, texts, t2i


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_peak(what: str) -> dict:
    """Runs in a fresh process: peak RSS growth during `what` ('retrieval' or 'bare'), in bytes."""
    from training.metrics import retrieval

    images, texts, t2i = embeddings(N_IMAGES)
    torch.set_num_threads(1)
    retrieval(images[:64], texts[:64 * CAPTIONS_PER_IMAGE], t2i[:64 * CAPTIONS_PER_IMAGE])  # load kernels

    def peak_growth(fn) -> int:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS watermark to the current RSS
        before = _status_kb("VmRSS")
        out = fn()
        grown = (_status_kb("VmHWM") - before) * 1024
        del out
        return grown

    # The peer ('bare'): one product of a chunk of images with every caption, i.e. the block
    # and the BLAS library's own packing buffers, nothing else.
    if what == "bare":
        grown = peak_growth(lambda: images[:CHUNK] @ texts.T)
    else:
        grown = peak_growth(lambda: retrieval(images, texts, t2i, top_k=5, chunk=CHUNK))
    return dict(grown_bytes=grown, block_bytes=CHUNK * len(texts) * 4,
                embedding_bytes=(images.numel() + texts.numel()) * 4)


def reference(images, texts, t2i) -> dict[str, float]:
    """The full similarity matrix, ranks the plain way under training/metrics.py's rules: a
    wrong item scored equal to the true match ranks above it; the median of an even count is
    the mean of the two middle ranks."""
    sims = images @ texts.T
    correct = t2i[None, :] == torch.arange(len(images))[:, None]
    best = sims.masked_fill(~correct, float("-inf")).max(dim=1).values
    image_rank = ((sims >= best[:, None]) & ~correct).sum(1) + 1
    own = sims.T.gather(1, t2i[:, None])
    text_rank = (sims.T >= own).sum(1)  # its own image is among the >= and takes the 1
    out = {}
    for prefix, ranks in (("i2t", image_rank.double()), ("t2i", text_rank.double())):
        out.update({f"{prefix}_R@{k}": (ranks <= k).double().mean().item() for k in (1, 5, 10)})
        out[f"{prefix}_mean_rank"] = ranks.mean().item()
        out[f"{prefix}_median_rank"] = float(np.median(ranks.numpy()))
    return out


def main() -> int:
    from bench.results import record
    from training.metrics import retrieval

    if len(sys.argv) > 2 and sys.argv[1] == "--peak":
        print(json.dumps(measure_peak(sys.argv[2])))
        return 0

    def in_fresh_process(what: str) -> dict:
        proc = subprocess.run([sys.executable, __file__, "--peak", what], capture_output=True, text=True, check=True)
        return json.loads(proc.stdout.strip().splitlines()[-1])

    peak = in_fresh_process("retrieval")
    peak["extra_bytes"] = peak["grown_bytes"]
    peak["bare_product_bytes"] = in_fresh_process("bare")["grown_bytes"]
    ratio = peak["extra_bytes"] / peak["block_bytes"]
    print(f"{N_IMAGES} images x {N_IMAGES * CAPTIONS_PER_IMAGE} captions, {DIM}-d, chunk {CHUNK}")
    print(f"  embeddings                 {peak['embedding_bytes'] / 2**20:8.1f} MiB")
    print(f"  one similarity block       {peak['block_bytes'] / 2**20:8.1f} MiB")
    print(f"  peak beyond the embeddings {peak['extra_bytes'] / 2**20:8.1f} MiB  ({ratio:.2f} blocks)")
    bare = peak["bare_product_bytes"] / peak["block_bytes"]
    print(f"  peer, one bare block product {peak['bare_product_bytes'] / 2**20:6.1f} MiB  ({bare:.2f} blocks: "
          f"the block plus BLAS workspace)")

    images, texts, t2i = embeddings(2_000, seed=1)
    chunked = retrieval(images, texts, t2i, chunk=256).metrics
    full = reference(images, texts, t2i)
    mismatched = [k for k in full if chunked[k] != full[k]]
    print(f"2,000-image subset: {len(full) - len(mismatched)}/{len(full)} metrics equal the full-matrix "
          f"reference (i2t R@1 {full['i2t_R@1']:.4f}, t2i R@1 {full['t2i_R@1']:.4f})")
    for k in mismatched:
        print(f"  MISMATCH {k}: chunked {chunked[k]} vs full {full[k]}")
    record("eval_memory.peak_blocks", round(ratio, 3), "similarity blocks", "<= 1 block + BLAS workspace",
           f"peak RSS growth {peak['extra_bytes'] / 2**20:.1f} MiB during retrieval of {N_IMAGES} images x "
           f"{N_IMAGES * CAPTIONS_PER_IMAGE} captions (512-d); one chunk's block ({CHUNK} x "
           f"{N_IMAGES * CAPTIONS_PER_IMAGE} float32) is {peak['block_bytes'] / 2**20:.1f} MiB; peer in the same "
           f"run: one bare block product grows {bare:.3f} blocks (block + BLAS packing buffers)", COMMAND)
    record("eval_memory.metrics_mismatched", len(mismatched), "metrics", 0,
           f"R@1/5/10, mean and median rank both ways on a 2,000-image subset vs the full-matrix reference "
           f"({len(full)} metrics compared)", COMMAND)
    return 1 if mismatched or ratio > bare + 0.05 else 0


if __name__ == "__main__":
    sys.exit(main())
