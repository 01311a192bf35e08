"""GPU benchmarks 1 and 2 of the performance issue, as one script that runs in under five minutes.

1. Training-step throughput of openai/clip-vit-base-patch32's architecture with random weights,
   bf16 autocast, batch 256, AdamW, one process on one GPU: the project's step (the model from
   training/models.py, the loss and update of training/step.py that train.py runs every step) against
   open_clip's ViT-B-32 stepped by a minimal loop (open_clip's ClipLoss, AdamW grouped as its
   training script does, the logit-scale clamp), both measured here in one process:
   (a) both at 77 tokens;
   (b) COCO-like caption lengths: the project pads each batch to its longest caption (random
       batches, and batches of similar lengths with `group_by_length`), open_clip to 77.
   The project step runs eager, compiled, and compiled with CUDA graphs (mode "reduce-overhead",
   captions padded to a multiple of 16 so that a few widths need a few graphs; cases "+cudagraphs").
   FLOPs per step are counted by torch's FlopCounterMode on the real step, so the achieved
   FLOP/s, its share of the card's measured bf16 matrix rate, and the speed-up the FLOP count
   alone allows are measured, not estimated.
2. The input pipeline: `accelerate launch training/train.py` end to end (JPEGs prepared at
   256 px, decoded by loader workers) against the same project step on in-memory tensors with
   the same captions.

    python bench/gpu_step.py --out DIR               # on the GPU machine; writes DIR/gpu_bench.json
    python bench/gpu_step.py --record DIR/gpu_bench.json   # here: into bench/results.json
    python bench/gpu_step.py --smoke --out DIR       # on the CPU with tiny sizes: checks the script

A case group that fails (a compile error, out of memory, a crashed train.py) is printed and kept
under "errors" in gpu_bench.json, the other groups still run, and the script exits with 1;
--record writes the failures as the row gpu.failed_case_groups.

COCO's caption lengths (CLIP BPE tokens with start and end: mean 13.7, 99th percentile 24,
longest 46) are drawn from a log-normal fitted to the mean and the 99th percentile, clipped to
[5, 46]; the drawn lengths' own statistics are printed and recorded next to the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

COMMAND = "python bench/gpu_step.py --out DIR (on the GPU), then --record DIR/gpu_bench.json"
CUDAGRAPH_PAD = 16  # pad_multiple of the "+cudagraphs" cases: COCO's widths fall in three buckets
LOGNORMAL = (2.585, 0.255)  # exp(mu + sigma^2/2) = 13.7, exp(mu + 2.326 sigma) = 24
OPENAI_SOT, OPENAI_EOT = 49406, 49407


def coco_lengths(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.clip(np.rint(rng.lognormal(*LOGNORMAL, size=n)), 5, 46).astype(int)


def matmul_tflops(device, size: int, repeats: int = 10) -> float:
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - t0) / 1e12


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- inputs


def padded_width(lengths, pad_multiple: int = 1, cap: int = 77) -> int:
    """The width training/models.py `tokenize` pads a batch to."""
    return min(cap, -(-int(max(lengths)) // pad_multiple) * pad_multiple)


def project_tokens(lengths, device, tok, pad_multiple: int = 1) -> dict:
    """MiniLM-style ids ([CLS] ... [SEP], padding after), padded to the batch's longest (rounded up
    to a multiple of `pad_multiple`, capped at 77, as `tokenize` does)."""
    width = padded_width(lengths, pad_multiple)
    ids = torch.randint(1000, 29000, (len(lengths), width))
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, 0], ids[i, n - 1] = tok.cls_token_id, tok.sep_token_id
        ids[i, n:] = tok.pad_token_id
        mask[i, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def openclip_tokens(lengths, device) -> torch.Tensor:
    """open_clip's layout: start, ids, end, zeros up to 77 (its tokenizer always pads to 77)."""
    ids = torch.randint(1, OPENAI_SOT - 1, (len(lengths), 77))
    for i, n in enumerate(lengths):
        ids[i, 0], ids[i, n - 1] = OPENAI_SOT, OPENAI_EOT
        ids[i, n:] = 0
    return ids.to(device)


def batches_of_lengths(lengths: np.ndarray, batch: int, grouped: bool, seed: int) -> list[list[int]]:
    """Random batches, or the project's LengthGroupedBatches over the same lengths."""
    from training.pairs import LengthGroupedBatches

    if grouped:
        order = list(LengthGroupedBatches(lengths.tolist(), batch, drop_last=True, seed=seed))
    else:
        perm = np.random.default_rng(seed).permutation(len(lengths))
        order = [perm[i:i + batch].tolist() for i in range(0, len(perm) - batch + 1, batch)]
    return [lengths[b].tolist() for b in order]


# ----------------------------------------------------------------------------- steppers


def project_model(model_name: str, compile_: bool, device, image_size: int = 224, seed: int = 0,
                  compile_mode: str = "default", pad_multiple: int = 1):
    from core.config import RunConfig
    from training.models import build_model

    cfg = RunConfig(model=model_name, image_size=image_size, unlock_image=-1, unlock_text=-1, max_text_len=77, lr=5e-4,
                    tower_lr=5e-4, weight_decay=0.2, precision="bf16", compile=compile_, seed=seed,
                    compile_mode=compile_mode, pad_multiple=pad_multiple)
    return build_model(cfg).to(device), cfg


def project_stepper(model, cfg, device):
    """train.py's training step (training.step.Stepper) under bf16 autocast: the step's
    attention kernels, one host sync, AdamW (fused on a GPU), the schedule, the clamp."""
    from training.features import TowerBatch
    from training.step import Stepper, make_optimizer, make_scheduler, training_attention

    opt = make_optimizer(model, cfg)
    stepper = Stepper(model, model, opt, make_scheduler(opt, cfg, 10**6), accum_steps=cfg.accum_steps,
                      autocast=lambda: torch.autocast(device.type, dtype=torch.bfloat16),
                      attention=lambda: training_attention(device, "bf16"),
                      cudagraphs=cfg.compile and cfg.compile_mode == "reduce-overhead")
    model.train()

    def forward_backward(images, tokens):
        return stepper.forward_backward(TowerBatch(images, tokens))

    def step(images, tokens):
        return stepper(TowerBatch(images, tokens))

    return step, forward_backward


def openclip_stepper(device, tiny: bool = False):
    """open_clip's ViT-B-32 as its training script steps it: fp32 weights, bf16 autocast,
    ClipLoss, AdamW(betas 0.9/0.98, eps 1e-6) with no decay on gains and biases, clamp.
    `tiny` (--smoke): the same classes at two narrow layers, 32 px images."""
    import open_clip
    from open_clip.loss import ClipLoss
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    if tiny:
        model = CLIP(32, CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=32),
                     CLIPTextCfg(layers=2, width=32, heads=2)).to(device)
    else:
        model = open_clip.create_model("ViT-B-32", pretrained=None).to(device)
    model.train()
    loss_fn = ClipLoss()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "logit_scale" not in n)]
    opt = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": 0.2}],
                            lr=5e-4, betas=(0.9, 0.98), eps=1e-6)

    def forward_backward(images, tokens):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            image_f, text_f, scale = model(images, tokens)
            loss = loss_fn(image_f, text_f, scale)
        loss.backward()
        return loss.detach()

    def step(images, tokens):
        forward_backward(images, tokens)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

    return step, forward_backward, model


def count_flops(forward_backward, images, tokens) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        forward_backward(images, tokens)
    return float(counter.get_total_flops())


def time_steps(step, inputs: list, warmup: int, steps: int, device) -> float:
    """Seconds per step over `steps` steps cycling through `inputs`, after warm-up steps over
    every input (each padded width meets its kernels and allocations before the clock starts)."""
    for i in range(max(warmup, len(inputs))):
        step(*inputs[i % len(inputs)])
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(*inputs[i % len(inputs)])
    sync(device)
    return (time.perf_counter() - t0) / steps


def attempt(results: dict, name: str, fn, device, *args) -> bool:
    """Run one group of cases; a failure (a compile error, out of memory, a crashed train.py) is
    printed with its traceback and kept under results["errors"][name], and the benchmark goes on
    to the other groups: one GPU session must bring back every figure that could be measured."""
    try:
        fn(*args)
        return True
    except Exception as e:  # noqa: BLE001 -- reported, recorded and counted below
        traceback.print_exc()
        message = (str(e).strip().splitlines() or [""])[0][:300]
        results.setdefault("errors", {})[name] = f"{type(e).__name__}: {message}"
        print(f"  ({name} failed: {results['errors'][name]}; going on)", flush=True)
        return False
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- benchmark 1


def step_throughput(args, device, peak_tflops: float, results: dict) -> None:
    from training.models import tokenizer_for_tests

    tok = tokenizer_for_tests()
    batch, size = args.batch, args.image_size
    rng = np.random.default_rng(0)
    n_inputs = 8
    images = [torch.randn(batch, 3, size, size, device=device) for _ in range(2)]
    openclip_size = 32 if args.smoke else 224
    openclip_images = [torch.randn(batch, 3, openclip_size, openclip_size, device=device) for _ in range(2)]
    lengths = coco_lengths(batch * 64, rng)
    every_random = batches_of_lengths(lengths, batch, grouped=False, seed=1)
    random_batches = every_random[:n_inputs]
    grouped_batches = batches_of_lengths(lengths, batch, grouped=True, seed=1)
    results["coco_lengths"] = dict(
        drawn=len(lengths), mean=float(lengths.mean()), p99=float(np.percentile(lengths, 99)),
        max=int(lengths.max()),
        mean_padded_random=float(np.mean([max(b) for b in every_random])),
        mean_padded_grouped=float(np.mean([max(b) for b in grouped_batches])),
        **{f"mean_padded_grouped_x{CUDAGRAPH_PAD}": float(np.mean([padded_width(b, CUDAGRAPH_PAD)
                                                                for b in grouped_batches]))})
    # The timed grouped batches are a random draw of the epoch's batches (lengths vary).
    pick = np.random.default_rng(2).choice(len(grouped_batches), size=min(n_inputs * 2, len(grouped_batches)),
                                           replace=False)
    grouped_batches = [grouped_batches[i] for i in pick]
    full = [[args.full_len] * batch]
    rows = results.setdefault("step", {})

    def measure(name, stepper_fb, make_tokens, length_batches, note, pixels=images, width=max, pad_multiple=1):
        """`width` gives the width a batch of these lengths is padded to: FLOPs are counted at it."""
        step, fb = stepper_fb
        inputs = [(pixels[i % 2], make_tokens(lb)) for i, lb in enumerate(length_batches)]
        sec = time_steps(step, inputs, args.warmup, args.steps, device)
        by_width = {}
        for lb in length_batches:  # FLOPs depend on the padded width only: count once per width
            if width(lb) not in by_width:
                by_width[width(lb)] = count_flops(fb, pixels[0], make_tokens(lb))
        mean_flops = float(np.mean([by_width[width(lb)] for lb in length_batches]))
        rows[name] = dict(samples_per_s=batch / sec, step_ms=sec * 1e3, flops_per_sample=mean_flops / batch,
                          tflops=mean_flops / sec / 1e12, share_of_peak=mean_flops / sec / 1e12 / peak_tflops,
                          pad_multiple=pad_multiple, note=note)
        print(f"  {name:34s} {batch / sec:9.1f} samples/s  {mean_flops / sec / 1e12:7.1f} TFLOP/s  "
              f"{mean_flops / batch / 1e9:6.2f} GFLOP/sample", flush=True)

    def open_clip_cases():
        oc_step, oc_fb, _ = openclip_stepper(device, tiny=args.smoke)
        at_77 = lambda lb: 77  # noqa: E731
        measure("open_clip@77", (oc_step, oc_fb), lambda lb: openclip_tokens(lb, device), [[77] * batch],
                "open_clip, 77 tokens", openclip_images, at_77)
        measure("open_clip@coco", (oc_step, oc_fb), lambda lb: openclip_tokens(lb, device), random_batches,
                "open_clip, COCO-like lengths padded to 77", openclip_images, at_77)

    def project_cases(compile_: bool):
        tag = "+compile" if compile_ else ""
        model, cfg = project_model(args.model, compile_, device, args.image_size)
        stepper = project_stepper(model, cfg, device)
        mk = lambda lb: project_tokens(lb, device, tok)  # noqa: E731
        measure(f"project@77{tag}", stepper, mk, full, "project step, 77 tokens")
        measure(f"project@coco-random{tag}", stepper, mk, random_batches,
                "project step, padded to each random batch's longest caption")
        measure(f"project@coco-grouped{tag}", stepper, mk, grouped_batches,
                "project step, group_by_length batches padded to their longest")

    def cudagraph_cases():
        """One compiled model for both cases, its text widths bucketed by pad_multiple (77, and
        COCO's 16, 32, 48). On the CPU (--smoke) compile is off: this checks the padding."""
        m = CUDAGRAPH_PAD
        torch._dynamo.reset()  # as a fresh process: the towers share one forward, whose compiles count to a limit
        model, cfg = project_model(args.model, args.compile, device, args.image_size,
                                   compile_mode="reduce-overhead", pad_multiple=m)
        stepper = project_stepper(model, cfg, device)
        mk = lambda lb: project_tokens(lb, device, tok, m)  # noqa: E731
        padded = lambda lb: padded_width(lb, m)  # noqa: E731
        how = "torch.compile(mode='reduce-overhead')" if args.compile else "compile off (--smoke: padding only)"
        measure("project@77+cudagraphs", stepper, mk, full, f"project step, 77 tokens, {how}", width=padded,
                pad_multiple=m)
        measure("project@coco-grouped+cudagraphs", stepper, mk, grouped_batches,
                f"project step, group_by_length batches padded to their longest rounded up to a multiple of "
                f"{m}, {how}", width=padded, pad_multiple=m)

    print("benchmark 1: training step, batch", batch, flush=True)
    attempt(results, "open_clip", open_clip_cases, device)
    attempt(results, "project", project_cases, device, False)
    if args.compile:
        if time.time() - START > args.compile_deadline:
            print("  (skipping torch.compile: time budget)", flush=True)
            results["compile_skipped"] = True
        else:
            attempt(results, "project+compile", project_cases, device, True)
    if not (args.compile or args.smoke):
        return
    if args.compile and time.time() - START > args.cudagraphs_deadline:
        print("  (skipping the CUDA-graph cases: time budget)", flush=True)
        results["cudagraphs_skipped"] = True
        return
    attempt(results, "project+cudagraphs", cudagraph_cases, device)


# ----------------------------------------------------------------------------- benchmark 2

WORDS = ("a man woman child dog cat bus train plate table street kitchen sitting standing next to "
         "with of on in the large small red white blue green black group people two three holding "
         "riding playing field water grass snow city building car truck bike horse bird pizza food "
         "bowl room bed window sign tree beach ocean wave surfboard skateboard tennis racket ball "
         "frisbee phone computer desk chair couch").split()


def _write_jpeg(job) -> None:
    from PIL import Image

    path, seed = job
    rng = np.random.default_rng(seed)
    w, h = (341, 256) if seed % 2 else (256, 341)
    low = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-20, 20, size=(h, w, 3))
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def prepared_dataset(folder: Path, n: int, workers: int) -> Path:
    """n JPEGs at 256 px on the shortest side (as `prepare.py --resize 256` stores them) with
    one COCO-length caption each, as a manifest the training script reads."""
    from multiprocessing import Pool

    import pandas as pd

    from data.manifest import split_of, write_manifest

    (folder / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(str(folder / "images" / f"{i:06d}.jpg"), i) for i in range(n)]
    with Pool(workers) as pool:
        pool.map(_write_jpeg, jobs, chunksize=64)
    rng = np.random.default_rng(0)
    words = [" ".join(rng.choice(WORDS, size=max(1, k - 2))) for k in coco_lengths(n, rng)]
    frame = pd.DataFrame(dict(image_id=[f"{i:06d}" for i in range(n)],
                              image_path=[f"images/{i:06d}.jpg" for i in range(n)], caption=words,
                              split=[split_of(f"{i:06d}", 0.02, 0) for i in range(n)], label=""))
    write_manifest(frame, folder, {"source": "bench/gpu_step.py", "images": n})
    return folder


def end_to_end(args, device, results: dict) -> None:
    import pandas as pd

    from core import run_store
    from data.manifest import load_manifest
    from training.models import tokenize

    print("benchmark 2: train.py end to end", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="gpu-e2e-"))
    t0 = time.time()
    data = prepared_dataset(tmp / "data", args.e2e_images, max(1, (os.cpu_count() or 2) - 1))
    print(f"  {args.e2e_images} JPEGs prepared in {time.time() - t0:.1f} s", flush=True)
    sweep = tmp / "e2e.toml"
    sweep.write_text(f"""name = "gpu-e2e"
[base]
model = "{args.model}"
unlock_image = -1
unlock_text = -1
batch_size = {args.batch}
epochs = 2
eval_every = 100
lr = 5e-4
tower_lr = 5e-4
max_text_len = 77
precision = "bf16"
num_workers = {args.workers}
[runs.e2e]
""")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "bf16",
           "--dynamo_backend", "no", "training/train.py", "--sweep", str(sweep), "--runs-dir", str(tmp / "runs"),
           "--data", str(data), "--cache-dir", str(tmp / "cache")]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    results["e2e_wall_s"] = time.time() - t0
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-4000:])
        raise RuntimeError("train.py failed")
    run = run_store.run_dir(tmp / "runs", "gpu-e2e", "e2e")
    wall = run_store.read_metrics(run).groupby("step")["wall_time"].first().sort_index()  # long format
    steady = wall.iloc[min(10, len(wall) // 4):]  # past the workers' start
    e2e = (len(steady) - 1) * args.batch / (steady.iloc[-1] - steady.iloc[0])
    status = run_store.load_run(run).status
    print(f"  train.py: {e2e:.1f} samples/s over steps {steady.index[0]}-{steady.index[-1]} "
          f"(timings {status.get('timings')})", flush=True)

    # The same step on in-memory tensors: random pixels on the device, the dataset's captions.
    model, cfg = project_model(args.model, False, device, args.image_size)
    step, _ = project_stepper(model, cfg, device)
    manifest = load_manifest(data)
    captions = manifest.loc[manifest["split"] == "train", "caption"].tolist()
    rng = np.random.default_rng(0)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    inputs = []
    for _ in range(8):
        picked = [captions[i] for i in rng.choice(len(captions), size=args.batch, replace=False)]
        tokens = tokenize(model.tokenizer, picked, 77)
        inputs.append((images, {k: v.to(device) for k, v in tokens.items()}))
    sec = time_steps(step, inputs, args.warmup, args.steps, device)
    memory = args.batch / sec
    stalls = pipeline_stalls(steady.tolist(), args.batch)
    print(f"  in-memory step on the same captions: {memory:.1f} samples/s; ratio {e2e / memory:.3f}; "
          f"train.py's median step {stalls['median_samples_per_s'] / memory:.3f} of it, {stalls['stalls']} "
          f"stalled steps lost {stalls['stall_s']:.2f} of {stalls['total_s']:.2f} s", flush=True)
    results["e2e"] = dict(train_py_samples_per_s=e2e, in_memory_samples_per_s=memory, ratio=e2e / memory,
                          images=args.e2e_images, workers=args.workers, steps_measured=len(steady) - 1,
                          step_wall_times=steady.round(4).tolist(), first_step=int(steady.index[0]),
                          timings=status.get("timings"), mean_tokens=float(pd.Series(
                              [len(t) for t in model.tokenizer(captions[:2000])["input_ids"]]).mean()))


def pipeline_stalls(wall_times: list[float], batch: int) -> dict:
    """Where train.py's end-to-end time goes, from the wall time of each logged step: the
    samples/s of its median step (the pace when the loader keeps up), and the seconds lost in
    steps slower than twice the median (loader stalls, the epoch boundary's refill)."""
    dt = np.diff(np.asarray(wall_times, dtype=float))
    median = float(np.median(dt))
    slow = dt > 2 * median
    return dict(median_samples_per_s=batch / median, total_s=float(dt.sum()), stalls=int(slow.sum()),
                stall_s=float((dt[slow] - median).sum()), slowest_s=float(dt.max()))


# ----------------------------------------------------------------------------- record


RATIOS = {"77_tokens": ("77 tokens", "project@77", "open_clip@77"),  # key: label, project cases, baseline
          "coco_random": ("COCO random", "project@coco-random", "open_clip@coco"),
          "coco_grouped": ("COCO grouped", "project@coco-grouped", "open_clip@coco")}


def best_ratios(s: dict) -> dict[str, tuple[str, float]]:
    """Per ratio, the fastest project case (eager, compiled, CUDA graphs) and its speed over
    open_clip's; a ratio whose cases all failed is left out."""
    out = {}
    for key, (_, prefix, base) in RATIOS.items():
        cases = [k for k in s if k.startswith(prefix)]
        if cases and base in s:
            best = max(cases, key=lambda k: s[k]["samples_per_s"])
            out[key] = (best, s[best]["samples_per_s"] / s[base]["samples_per_s"])
    return out


def source_digest() -> str:
    """A hash of the sources the benchmark runs (the device's copy of the tree may have no git)."""
    h = hashlib.sha256()
    for f in sorted([*ROOT.glob("training/*.py"), *ROOT.glob("data/*.py"), ROOT / "bench/gpu_step.py",
                     ROOT / "requirements.txt"]):
        h.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def record_results(path: Path) -> None:
    from functools import partial

    from bench.results import code_revision, record

    r = json.loads(path.read_text())
    # The code it measured: the run's own commit where its copy had git, else this checkout's
    # if the sources it ran are the ones here.
    revision = r.get("revision") or (code_revision() if r.get("source_digest") == source_digest()
                                     else "unknown: the code changed after the run")
    put = partial(record, command=COMMAND, measured_on=f"{r['device']} (torch {r['torch']})", revision=revision)
    s, c = r.get("step", {}), r.get("coco_lengths", {})
    peak = r["matmul_tflops"]
    put("gpu.matmul_bf16_tflops", round(peak, 1), "TFLOP/s", "", "8192^3 bf16 matmul, mean of 10 after 3 warm-ups")
    for name, row in s.items():
        put(f"gpu.step.{name}.samples_per_s", round(row["samples_per_s"], 1), "samples/s", "",
            f"{row['note']}; {row['tflops']:.1f} TFLOP/s achieved = {100 * row['share_of_peak']:.1f}% of the "
            f"measured bf16 matmul rate; {row['flops_per_sample'] / 1e9:.2f} GFLOP/sample (FlopCounterMode)")
    ratios = best_ratios(s)
    if "77_tokens" in ratios:
        best77, ratio77 = ratios["77_tokens"]
        put("gpu.step.ratio_77_tokens", round(ratio77, 3), "x open_clip", ">= 1.0",
            f"{best77} vs open_clip@77, batch 256, bf16")
    for kind in ("random", "grouped"):
        if f"coco_{kind}" not in ratios:
            continue
        best, ratio = ratios[f"coco_{kind}"]
        bound = s["open_clip@coco"]["flops_per_sample"] / s[best]["flops_per_sample"]
        m = s[best].get("pad_multiple", 1)
        rounded = f" ({c[f'mean_padded_{kind}_x{m}']:.1f} rounded up to a multiple of {m})" if m > 1 else ""
        put(f"gpu.step.ratio_coco_{kind}", round(ratio, 3), "x open_clip", ">= 1.3" if kind == "grouped" else "",
            f"{best} vs open_clip padding to 77; the FLOP count alone allows {bound:.2f}x; drawn lengths: mean "
            f"{c['mean']:.1f}, p99 {c['p99']:.0f}, max {c['max']}, mean padded width "
            f"{c['mean_padded_' + kind]:.1f}{rounded}")
    if "e2e" in r:
        e = r["e2e"]
        st = pipeline_stalls(e["step_wall_times"], r["batch"])
        put("gpu.input_pipeline_ratio", round(e["ratio"], 3), "x in-memory step", ">= 0.9",
            f"train.py {e['train_py_samples_per_s']:.0f} samples/s end to end ({e['images']} JPEGs at 256 px, "
            f"{e['workers']} loader workers) vs the in-memory step on the same captions "
            f"{e['in_memory_samples_per_s']:.0f} samples/s; train.py's median step runs at "
            f"{st['median_samples_per_s'] / e['in_memory_samples_per_s']:.3f} of it, and {st['stalls']} steps "
            f"slower than twice the median lost {st['stall_s']:.2f} of {st['total_s']:.2f} s (slowest "
            f"{st['slowest_s']:.2f} s)")
    errors = r.get("errors", {})
    put("gpu.failed_case_groups", len(errors), "groups", 0,
        "; ".join(f"{name}: {error}" for name, error in errors.items()) or "every case group ran")
    missing = sorted(set(RATIOS) - set(ratios)) + ([] if "e2e" in r else ["input_pipeline"])
    if missing:
        print(f"not measured in {path}, their rows (if any) are from an earlier run: {', '.join(missing)}")


# ----------------------------------------------------------------------------- main

START = time.time()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="folder for gpu_bench.json")
    p.add_argument("--record", type=Path, help="record a gpu_bench.json into bench/results.json")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the script runs")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--skip-e2e", action="store_true", help="benchmark 1 only")
    p.add_argument("--skip-steps", action="store_true", help="benchmark 2 only")
    args = p.parse_args(argv)
    if args.record:
        record_results(args.record)
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        args.model, args.batch, args.image_size, args.warmup, args.steps = "tiny-clip", 8, 32, 1, 2
        args.e2e_images, args.workers, args.compile, args.compile_deadline = 400, 2, False, 0
        args.cudagraphs_deadline = 0
        args.full_len = 40  # the tiny model has 64 positions
    else:
        if device.type != "cuda":
            print("no GPU here: this benchmark needs one (use --smoke to check the script on the CPU)")
            return 2
        args.model, args.batch, args.image_size, args.warmup, args.steps = "random-clip-vit-b32", 256, 224, 6, 20
        args.e2e_images, args.workers, args.compile_deadline = 25600, min(14, (os.cpu_count() or 2) - 2), 150
        args.cudagraphs_deadline = 180  # a second compile, about a minute; benchmark 2 takes ~100 s after it
        args.full_len = 77
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (smoke test)"
    from bench.results import code_revision

    results = dict(device=name, torch=torch.__version__, batch=args.batch, model=args.model,
                   revision=code_revision(), source_digest=source_digest())
    out = args.out / "gpu_bench.json" if args.out else None

    def save():
        results["seconds"] = time.time() - START
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=2))

    results["matmul_tflops"] = matmul_tflops(device, 8192 if device.type == "cuda" else 512)
    print(f"{name}: bf16 matmul {results['matmul_tflops']:.1f} TFLOP/s", flush=True)
    if not args.skip_steps:
        attempt(results, "benchmark 1", step_throughput, device, args, device, results["matmul_tflops"], results)
        save()
    if not args.skip_e2e:
        attempt(results, "benchmark 2", end_to_end, device, args, device, results)
        save()
    ratios = best_ratios(results.get("step", {}))
    print("\nratios: " + ", ".join(f"{RATIOS[k][0]} {ratio:.3f}x ({best})" for k, (best, ratio) in ratios.items())
          + "; input pipeline " + (f"{results['e2e']['ratio']:.3f}" if "e2e" in results else "not measured"))
    for name, error in results.get("errors", {}).items():
        print(f"FAILED {name}: {error}")
    print(f"total {time.time() - START:.0f} s")
    return 1 if results.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
