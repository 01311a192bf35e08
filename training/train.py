"""Fine-tune several CLIP configurations and write each run to runs/<sweep>/<run>/.

    accelerate launch training/train.py          # the default sweep on the offline default
    accelerate launch training/train.py --sweep training/sweeps/default.toml --only heads-only
    accelerate launch training/train.py --data synthetic --model tiny-clip --set epochs=2
    python training/train.py --dry-run           # print the expanded runs and exit

One process trains the runs one after another (or N processes through `accelerate
launch`, sharing each batch). Only the main process writes under runs/. The sweep reads top
to bottom in `main`: plan (training/planning.py), prepare data and the shared frozen
features, train each run (training/trainer.py), fit the aligned maps
(training/projection.py), print the summary (analysis/runs.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration

from analysis import results
from analysis.runs import summary_table
from core import run_store
from core.config import DEFAULT_SWEEP, ConfigError, RunConfig, Sweep, load_sweep, parse_set
from data.manifest import MANIFEST, REPORT, DatasetNotFound, dataset_dir, load_manifest
from data.prepare import OPENMOJI_SPLITS, openmoji_argv, prepare
from training.features import CACHE_DIR, warm_cache
from training.models import ModelUnavailable, check_available
from training.planning import (
    check_selections,
    comparisons_frame,
    order_for_init_from,
    plan,
    resume_points,
    resumed_sweep,
    runs_frame,
)
from training.projection import needs_fit, plan_maps, project_maps
from training.step import resolve_precision
from training.trainer import Timer, Trainer

ROOT = Path(__file__).resolve().parents[1]
# Datasets train.py prepares on first use: the offline default, and its leaky split of old.
AUTO_PREPARE = {name: openmoji_argv(name) for name in OPENMOJI_SPLITS}
TRACKERS = ("tensorboard", "wandb")  # --report-to values, each the name of the package it needs


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", type=Path, default=DEFAULT_SWEEP, help="sweep file (TOML)")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs", help="where run folders go")
    p.add_argument("--data", help="dataset for every run: a name under data/ or a path")
    p.add_argument("--model", help="model for every run: offline-default, tiny-clip, hub id or folder")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--only", nargs="*", metavar="RUN", help="train only these runs of the sweep")
    p.add_argument("--seeds", type=int, metavar="N",
                   help="train every configuration with seeds 0..N-1, each its own run <run>.s<seed> "
                        "(replaces the sweep's seeds; finished seeds are skipped)")
    p.add_argument("--dry-run", action="store_true", help="print the expanded runs and exit")
    p.add_argument("--overwrite", action="store_true", help="retrain runs that already finished")
    p.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="feature cache folder")
    p.add_argument("--report-to", choices=TRACKERS,
                   help="also log to TensorBoard or wandb (Accelerate's trackers), inside each run folder; "
                        "the Parquet files are written either way. wandb without network: WANDB_MODE=offline")
    p.add_argument("--resume", metavar="RUN_DIR|auto",
                   help="continue from the last complete checkpoint: one run folder (with its saved config), "
                        "or 'auto' for every unfinished run of the sweep that has one")
    p.add_argument("--no-umap", action="store_true",
                   help="skip the aligned maps' UMAP fits (the dashboard's embedding map stays empty until a "
                        "later call fits them)")
    return p.parse_args(argv)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: the run in progress is recorded as KILLED and the sweep stops."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def stale_split(name: str, folder: Path | None = None) -> str | None:
    """Why the prepared copy (in `folder`, default its place under data/) of an auto-prepared
    dataset was made with other splits, if it was."""
    report = (folder or dataset_dir(name)) / REPORT
    prepared = json.loads(report.read_text()) if report.exists() else {}
    wrong = {k: prepared.get(k) for k, v in OPENMOJI_SPLITS.get(name, {}).items() if prepared.get(k) != v}
    return (f"data/{name} was prepared with {wrong}, not the current {OPENMOJI_SPLITS[name]}: delete it (train.py "
            f"prepares it again) or run: python data/prepare.py {' '.join(AUTO_PREPARE[name])}") if wrong else None


def ensure_data(configs: list[RunConfig], accelerator: Accelerator, timer: Timer) -> None:
    for name in sorted({c.data for c in configs}):
        if (dataset_dir(name) / MANIFEST).exists():
            if why := stale_split(name):
                raise ConfigError(why)
            continue
        with timer("prepare"), accelerator.main_process_first():
            if accelerator.is_main_process:
                print(f"preparing dataset {name!r} on first use")
                prepare(AUTO_PREPARE[name])


def project(sweep, runs_dir: Path, skip: bool) -> dict[str, float]:
    """The aligned maps (training/projection.py) whose runs have all finished and that a run
    lacks, also those of a sweep interrupted before this stage. Seconds per map; each map's
    seconds are added to its reference run's timings."""
    if skip:
        return {}
    plans = [p for p in plan_maps(sweep, runs_dir) if needs_fit(p)]
    per_map = project_maps(plans)
    for fitted in plans:
        if fitted.name in per_map:
            reference = fitted.runs[0]
            run_store.add_timing(reference, "umap", per_map[fitted.name] + run_store.timing(reference, "umap"))
    return per_map


def summary(sweep, runs_dir: Path) -> pd.DataFrame:
    runs = []
    for cfg in sweep.runs:
        path = run_store.run_dir(runs_dir, sweep.name, cfg.name)
        run = run_store.load_run(path)
        runs.append(dict(run=run.key, state=run.state, config=run.config or cfg.to_dict(),
                         evals=run_store.read_eval(path), timings=run.status.get("timings", {})))
    return summary_table(runs)


def sweep_of(args) -> Sweep:
    """The sweep this call trains: the sweep file with the command line's overrides, or the
    saved config of the one run --resume names (args.runs_dir then becomes its folder)."""
    if args.resume and args.overwrite:
        raise ConfigError("--resume continues runs and --overwrite restarts them: choose one")
    if args.resume not in (None, "auto"):
        sweep, args.runs_dir = resumed_sweep(Path(args.resume), args)
        return sweep
    overrides = parse_set(args.set)
    if args.data:
        overrides["data"] = args.data
    if args.model:
        overrides["model"] = args.model
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    return load_sweep(args.sweep, overrides, args.only, None if args.seeds is None else list(range(args.seeds)))


def whole_sweep(sweep: Sweep, args) -> Sweep:
    """Every run of the sweep file when --only picked some: the maps and sweep.json's
    comparisons are the whole sweep's, so that a partial call neither forgets the comparisons
    nor fits a comparison's map without its other runs (read from disk, finished earlier)."""
    if not args.only or args.resume not in (None, "auto"):
        return sweep
    try:
        return sweep_of(argparse.Namespace(**dict(vars(args), only=None)))
    except ConfigError:  # the call's --set does not suit the runs it left out (a closed form, say): its own
        return sweep


def plan_sweep(sweep: Sweep, args) -> tuple[list[tuple[RunConfig, Path]], list[str], dict]:
    """(runs to train in order, finished runs skipped, checkpoint of each resumed run); every
    model, dataset, conflict and tracker is checked here, before any run starts."""
    for model_name in sorted({c.model for c in sweep.runs}):
        check_available(model_name)
    for name in sorted({c.data for c in sweep.runs} - set(AUTO_PREPARE)):
        load_manifest(name)
    todo, skipped = plan(sweep, args.runs_dir, args.overwrite)
    todo = order_for_init_from(todo)
    if args.report_to and importlib.util.find_spec(args.report_to) is None:
        raise ConfigError(f"--report-to {args.report_to} needs the {args.report_to!r} package, "
                          f"which is not installed: .venv/bin/pip install {args.report_to}")
    resumes = resume_points(todo, args.resume not in (None, "auto")) if args.resume else {}
    return todo, skipped, resumes


def make_accelerator(sweep: Sweep, args) -> Accelerator:
    # The seedable sampler shuffles by (seed, epoch), the same on every process and after a
    # resume; the schedule steps once per global step (see training/trainer.py).
    accelerator = Accelerator(mixed_precision=resolve_precision(sweep.runs[0].precision),
                              step_scheduler_with_optimizer=False,
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
                              log_with=args.report_to,
                              project_config=ProjectConfiguration(logging_dir=str(args.runs_dir)))
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:  # each process would train alone, all writing one folder
        raise ConfigError(f"{launched} processes were launched but Accelerate sees {accelerator.num_processes}; "
                          f"on CPUs set ACCELERATE_USE_CPU=true (torchrun), or use `accelerate launch`")
    if accelerator.device.type == "cpu":
        # `accelerate launch` sets OMP_NUM_THREADS=1 for CPU processes; share the cores
        # among this machine's processes instead, or one process runs at half speed on two.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // accelerator.num_processes))
    return accelerator


def report(sweep: Sweep, args, record: dict, t0: float, timer: Timer, comparisons=None) -> None:
    """Keep what this call did in the sweep's sweep.json, with the sweep file's comparisons
    (`comparisons`: the whole file's, when --only trained a part); run the results step
    (analysis/results.py) on it; print the summary table and every comparison's verdict."""
    def record_call():
        run_store.write_sweep_summary(args.runs_dir, sweep.name, dict(
            wall_time=round(time.time() - t0, 1), stages={k: round(v, 1) for k, v in timer.seconds.items()},
            trained=record["trained"], skipped=record["skipped"], states=record["states"], argv=record["argv"],
            finished_at=time.time(),
            comparisons=[c.to_dict() for c in (sweep.comparisons if comparisons is None else comparisons)]))

    changed = record["trained"] or record["projected"]  # a call that only skipped finished runs keeps the last record
    if changed:
        record_call()  # the results step reads the comparisons from it
    with timer("results"):
        tables = results.load(args.runs_dir, sweep.name)
    if changed:
        record_call()  # again, with the results step's seconds
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 40):
        print(f"\nsweep {sweep.name!r}: {args.runs_dir / sweep.name}; each configuration's validation "
              f"figures (the mean over its seeds) with a 95% interval, and i2t R@1 on test:")
        print(summary(sweep, args.runs_dir).to_string())
        headline = tables.headline()
        if len(headline):
            split, metric = results.HEADLINE
            family = headline.groupby("split")["family_size"].max()
            print(f"\nthe comparisons on {split} {metric} (val where a side has no test split): configuration B "
                  f"against reference A; MDE: the difference each could detect at 80% power; adjusted p: "
                  f"Benjamini-Hochberg over the sweep's comparisons on that split and metric ("
                  + ", ".join(f"{s}: {n}" for s, n in family.items()) + ")")
            print(results.verdicts_table(headline).to_string(index=False))
    print(f"wall time {time.time() - t0:.0f} s; sweep-level stages (s): "
          f"{ {k: round(v, 1) for k, v in timer.seconds.items()} }")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0, timer = time.time(), Timer()
    sweep = sweep_of(args)
    if args.dry_run:
        runs, shared = runs_frame(sweep)
        print(f"sweep {sweep.name!r} from {sweep.source}: {len(sweep.runs)} runs")
        print("shared by every run: " + ", ".join(f"{k}={v}" for k, v in shared.items()))
        print("the settings that differ:")
        with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_colwidth", 60):
            print(runs.to_string())
            if sweep.comparisons:
                print("\ncomparisons (each run differs from its reference in the factor alone):")
                print(comparisons_frame(sweep).to_string(index=False))
        return 0
    todo, skipped, resumes = plan_sweep(sweep, args)
    accelerator = make_accelerator(sweep, args)
    main_process = accelerator.is_main_process
    ensure_data([c for c, _ in todo], accelerator, timer)
    check_selections([c for c, _ in todo])
    if skipped and main_process:
        print(f"skipping {len(skipped)} finished run(s) with the same config: {', '.join(skipped)} "
              f"(--overwrite retrains them)")
    if main_process:
        with timer("features"), accelerator.autocast():
            warm_cache([c for c, _ in todo], args.cache_dir, show_progress=True)
    accelerator.wait_for_everyone()
    states, thumbnails = {}, {}  # thumbnails: made once per image for all runs of the call
    for cfg, path in todo:
        states[cfg.name] = Trainer(cfg, path, sweep, accelerator, args.cache_dir, thumbnails,
                                   resume_from=resumes.get(cfg.name)).run()
    if main_process:
        whole = whole_sweep(sweep, args)
        with timer("umap"):
            projected = project(whole, args.runs_dir, args.no_umap)
        report(sweep, args, dict(trained=[c.name for c, _ in todo], skipped=skipped, states=states,
                                 projected=sorted(projected), argv=sys.argv[1:] if argv is None else argv),
               t0, timer, whole.comparisons)
    return 0 if all(s == "FINISHED" for s in states.values()) else 1


def cli() -> int:
    signal.signal(signal.SIGTERM, _raise_interrupted)  # preemption: record KILLED, like Ctrl-C
    try:
        return main()
    except (ConfigError, DatasetNotFound, ModelUnavailable, run_store.RunStoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"interrupted by {signal.Signals(signum).name}: the run in progress is marked KILLED",
              file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(cli())
