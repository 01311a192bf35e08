"""bf16 autocast against fp32 on this CPU, for the offline default's two towers, in one process.

    .venv/bin/python bench/cpu_precision.py

What `precision = "auto"` buys where the CPU computes bf16 natively (AMX, AVX512-BF16):
EfficientNet-Lite0 over 64 images at 224 px (feature extraction) and MiniLM-L6 forward and
backward over 256 captions (a text-unlocked run's step), each timed fp32 then bf16, median of
3 after a warm-up; plus how far the bf16 image features are from the fp32 ones. The text step
is timed a third time at bf16 with the math attention kernel that the training step uses on a
CPU under bf16 (training.step.training_attention), against PyTorch's default (flash) kernel.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

from bench.results import record
from training.models import efficientnet_lite0_tower, minilm_tower
from training.step import resolve_precision, training_attention

ROOT = Path(__file__).resolve().parents[1]

COMMAND = ".venv/bin/python bench/cpu_precision.py"


def median_seconds(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timed_both(fn) -> tuple[float, float]:
    fp32 = median_seconds(fn)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = median_seconds(fn)
    return fp32, bf16


def tower_workloads():
    """(image_forward, text_step): the offline default's two towers on fixed inputs, the work of
    its feature stage (EfficientNet-Lite0 over 64 images at 224 px) and of its unlocked-text runs
    (MiniLM-L6 forward and backward over 256 captions)."""
    image = efficientnet_lite0_tower()
    pixels = torch.randn(64, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    pixels = pixels.contiguous(memory_format=torch.channels_last)
    text, tokenizer = minilm_tower()
    text.requires_grad_(True)
    captions = [f"an emoji of a {w} face with {n} hearts" for w in ("smiling", "crying", "winking", "sleepy")
                for n in range(64)]
    tokens = dict(tokenizer(captions, padding="longest", return_tensors="pt"))

    def image_forward():
        with torch.inference_mode():
            return image(pixels)

    def text_step():
        text(tokens).sum().backward()

    return image_forward, text_step


def main() -> int:
    image_forward, text_step = tower_workloads()
    img32, img16 = timed_both(image_forward)
    ref = image_forward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = image_forward().float()
    cosine = torch.nn.functional.cosine_similarity(ref, low).min().item()
    txt32, txt16 = timed_both(text_step)
    with torch.autocast("cpu", dtype=torch.bfloat16), training_attention(torch.device("cpu"), "bf16"):
        txt16_math = median_seconds(text_step)
    auto = resolve_precision("auto")
    print(f"precision 'auto' resolves to {auto!r} here")
    print(f"{'':40s} {'fp32 s':>8s} {'bf16 s':>8s} {'speed-up':>9s}")
    print(f"{'EfficientNet-Lite0, 64 images fwd':40s} {img32:8.3f} {img16:8.3f} {img32 / img16:8.2f}x")
    print(f"{'MiniLM-L6, 256 captions fwd+bwd':40s} {txt32:8.3f} {txt16:8.3f} {txt32 / txt16:8.2f}x")
    print(f"{'  the same, bf16 math attention':40s} {txt32:8.3f} {txt16_math:8.3f} {txt32 / txt16_math:8.2f}x")
    print(f"bf16 image features vs fp32: min cosine {cosine:.4f}")
    note = f"'auto' resolves to {auto!r} on this CPU"
    record("cpu_precision.image_features_speedup", round(img32 / img16, 2), "x fp32", "",
           f"EfficientNet-Lite0 forward, 64 images at 224 px: fp32 {img32:.2f} s, bf16 {img16:.2f} s; min cosine "
           f"bf16 vs fp32 features {cosine:.4f}; {note}", COMMAND)
    record("cpu_precision.text_step_speedup", round(txt32 / txt16, 2), "x fp32", "",
           f"MiniLM-L6 forward+backward, 256 captions: fp32 {txt32:.3f} s, bf16 {txt16:.3f} s (PyTorch's default "
           f"attention kernel: flash); {note}", COMMAND)
    record("cpu_precision.text_step_math_attention_speedup", round(txt16 / txt16_math, 2), "x flash", "",
           f"MiniLM-L6 forward+backward, 256 captions, bf16: flash attention {txt16:.3f} s, math attention "
           f"{txt16_math:.3f} s (what the training step uses on a CPU under bf16); fp32 {txt32:.3f} s", COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
