"""Wall time of the README's main command on a clean clone, broken down by stage.

    .venv/bin/python bench/main_job.py                       # the precision "auto" picks here
    .venv/bin/python bench/main_job.py --precision fp32      # force fp32, as on a CPU without bf16
    .venv/bin/python bench/main_job.py --keep-runs           # also copy the runs to ./runs

Clones HEAD into a temporary folder (no prepared data, no runs, no feature cache), runs
`accelerate launch training/train.py` there with this checkout's virtualenv, and reads the
stage times back from the run store and the dataset reports. Records the figures, named by the
precision that ran and with the CPU's name, in bench/results.json and bench/RESULTS.md; each
as a ratio to a reference workload timed at the same precision in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from analysis.runs import last_eval
from bench.results import machine, record
from core import run_store

ROOT = Path(__file__).resolve().parents[1]


def reference_seconds(bf16: bool) -> float:
    """Seconds of a fixed piece of the main job's own work (cpu_precision's two tower workloads,
    median of three each, at the run's precision): the same code takes 10-40% longer on this
    shared machine at some hours than at others, and this peer, timed in the same run, tells
    which hour it was."""
    import torch

    from bench.cpu_precision import median_seconds, tower_workloads

    image_forward, text_step = tower_workloads()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return median_seconds(image_forward) + median_seconds(text_step)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precision", choices=["auto", "fp32"], default="auto",
                   help="auto: what the sweep's precision = 'auto' picks on this CPU; fp32: forced")
    p.add_argument("--keep-runs", action="store_true", help="copy the clone's runs/ to this checkout's runs/")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="time a variant of the main command (printed, not recorded)")
    return p.parse_args()


def main() -> int:
    from training.step import resolve_precision

    args = parse_args()
    precision = "no" if args.precision == "fp32" else resolve_precision("auto")
    name = "fp32" if precision == "no" else precision
    variant = ["--set", *args.set, *([f'precision="{precision}"'] if args.precision == "fp32" else [])]
    variant = variant if len(variant) > 1 else []
    reference = reference_seconds(bf16=precision == "bf16")
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        accelerate = ROOT / ".venv" / "bin" / "accelerate"
        t0 = time.time()
        # The virtualenv's editable install points at this checkout; PYTHONPATH puts the clone's
        # packages first, so that the clone's data/, runs/ and feature cache are the ones used.
        proc = subprocess.run([str(accelerate), "launch", "training/train.py", *variant], cwd=clone,
                              capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(clone)))
        wall = time.time() - t0
        print(proc.stdout[-3000:])
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        sweep_stages = run_store.read_sweep_summary(clone / "runs", "default")["stages"]
        reports = [json.loads(f.read_text()) for f in sorted((clone / "data").glob("*/report.json"))]
        runs = run_store.list_runs(clone / "runs")
        stages = {"prepare": sum(r["seconds"] for r in reports), "features": sweep_stages.get("features", 0.0),
                  "training": 0.0, "evaluation": 0.0, "intervals": 0.0, "closed_form": 0.0,
                  "umap": sweep_stages.get("umap", 0.0), "results": sweep_stages.get("results", 0.0)}
        for run in runs:
            for stage, seconds in run.status.get("timings", {}).items():
                if stage in ("features", "training", "evaluation", "intervals", "closed_form"):
                    stages[stage] += seconds
        stages["other (model loading, imports)"] = wall - sum(stages.values())
        ran = sorted({str(r.config.get("provenance", {}).get("precision")) for r in runs})
        best, best_eval = best_group(runs)
        if args.keep_runs:
            shutil.rmtree(ROOT / "runs", ignore_errors=True)
            shutil.copytree(clone / "runs", ROOT / "runs")
    print(f"\n{'stage':34s} seconds")
    for stage, seconds in stages.items():
        print(f"{stage:34s} {seconds:7.1f}")
    print(f"{'wall time':34s} {wall:7.1f}")
    print(f"{'reference workload':34s} {reference:7.2f}  (wall time = {wall / reference:.0f} references)")
    print(f"best configuration on val, {best}: " + ", ".join(f"{k} {v:.3f}" for k, v in best_eval.items()))
    if args.set:
        print(f"variant {' '.join(variant)}: not recorded")
        return 0
    cmd = ".venv/bin/python bench/main_job.py" + (" --precision fp32" if args.precision == "fp32" else "")
    cpu = machine()
    print(f"precision: {', '.join(ran)} on {cpu}; UMAP share of the wall time {stages['umap'] / wall:.1%}")
    record(f"main_job.{name}.wall_time", round(wall, 1), "s", 360,
           f"clean clone, {len(runs)} runs of the default sweep at {name} on {cpu}; {wall / reference:.0f}x the "
           f"reference workload timed at {name} in the same run ({reference:.2f} s)", cmd)
    record(f"main_job.{name}.reference_s", round(reference, 2), "s", "",
           f"peer timed before the main job: EfficientNet-Lite0 forward on 64 images plus MiniLM-L6 forward and "
           f"backward on 256 captions at {name}, median of three each (bench/cpu_precision.py workloads)", cmd)
    for stage, seconds in stages.items():
        record(f"main_job.{name}.stage.{stage.split(' ')[0]}", round(seconds, 1), "s", "", "", cmd)
    record(f"main_job.{name}.best_val_i2t_R@1", round(best_eval["val i2t_R@1"], 4), "fraction", "",
           f"configuration {best}, mean of its seeds on val (chosen there); test {best_eval['test i2t_R@1']:.4f}",
           cmd)
    return 0


def best_group(runs) -> tuple[str, dict]:
    """The configuration with the highest mean val i2t R@1 over its seeds (runs on the default
    split's full validation set only: label subsets and other datasets validate on other
    images), and its mean val and test i2t R@1."""
    from collections import defaultdict

    figures = defaultdict(list)
    for r in runs:
        c = r.config
        if c.get("include_labels") or c.get("exclude_labels") or c.get("data") != "openmoji":
            continue
        evals = run_store.read_eval(r.path)
        figures[c.get("group", r.name)].append((last_eval(evals).get("i2t_R@1", float("nan")),
                                                last_eval(evals, "test").get("i2t_R@1", float("nan"))))
    best = max(figures, key=lambda g: sum(v for v, _ in figures[g]) / len(figures[g]))
    vals, tests = zip(*figures[best])
    return best, {"val i2t_R@1": sum(vals) / len(vals), "test i2t_R@1": sum(tests) / len(tests)}


if __name__ == "__main__":
    sys.exit(main())
