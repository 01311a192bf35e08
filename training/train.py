"""Fine-tune several CLIP configurations and write each run to runs/<sweep>/<run>/.

    accelerate launch training/train.py          # the default sweep on the offline default
    accelerate launch training/train.py --sweep training/sweeps/default.toml --only heads-only
    accelerate launch training/train.py --data synthetic --model tiny-clip --set epochs=2
    python training/train.py --dry-run           # print the expanded runs and exit

One process trains the runs one after another (or N processes through `accelerate
launch`, sharing each batch). Only the main process writes under runs/.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.utils import set_seed  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from data.manifest import DatasetNotFound, dataset_dir, load_manifest  # noqa: E402
from training import run_store  # noqa: E402
from training.config import DEFAULT_SWEEP, FIELDS, ConfigError, RunConfig, load_sweep, parse_set  # noqa: E402
from training.evaluate import embeddings_frame, evaluate, samples_frame  # noqa: E402
from training.features import CACHE_DIR, TowerInputs  # noqa: E402
from training.losses import accumulated_clip_backward  # noqa: E402
from training.models import ModelUnavailable, build_model, check_available  # noqa: E402
from training.pairs import PairDataset, Pairs, collate_rows, thumbnail_png, to_device  # noqa: E402
from training.projection import project_runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
AUTO_PREPARE = {"openmoji": ["openmoji"]}  # datasets train.py may prepare on first use


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", type=Path, default=DEFAULT_SWEEP, help="sweep file (TOML)")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs", help="where run folders go")
    p.add_argument("--data", help="dataset for every run: a name under data/ or a path")
    p.add_argument("--model", help="model for every run: offline-default, tiny-clip, hub id or folder")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--only", nargs="*", metavar="RUN", help="train only these runs of the sweep")
    p.add_argument("--dry-run", action="store_true", help="print the expanded runs and exit")
    p.add_argument("--overwrite", action="store_true", help="retrain runs that already finished")
    p.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="feature cache folder")
    return p.parse_args(argv)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: the run in progress is recorded as KILLED and the sweep stops."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite and the run is configured to stop on it."""


class Timer:
    """Seconds spent per stage, summed over calls."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.time()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.time() - t0


# ------------------------------------------------------------------------- planning


def plan(sweep, runs_dir: Path, overwrite: bool) -> tuple[list[tuple[RunConfig, Path]], list[str]]:
    """Which runs to train and which to skip; refuses, before anything starts, to touch a
    finished run whose saved config differs, or a run another live process is training."""
    todo, skipped, conflicts = [], [], []
    for cfg in sweep.runs:
        path = run_store.run_dir(runs_dir, sweep.name, cfg.name)
        run = run_store.load_run(path) if path.exists() else None
        state = run.state if run else None
        if state == "RUNNING":
            conflicts.append(f"{path} is being trained by another live process")
        elif state == "FINISHED" and not overwrite:
            # A key the saved config lacks was written before the key existed: it ran with the default.
            same = bool(run.config) and all(run.config.get(k, FIELDS[k].default) == v
                                            for k, v in cfg.to_dict().items())
            if same:
                skipped.append(cfg.name)
                continue
            conflicts.append(f"{path} holds a finished run with a different config")
        todo.append((cfg, path))
    if conflicts:
        raise ConfigError("refusing to start: " + "; ".join(conflicts) +
                          ". Fix: use another --runs-dir, rename the run in the sweep, or "
                          "--overwrite to retrain (the old files are replaced).")
    return todo, skipped


def ensure_data(configs: list[RunConfig], accelerator: Accelerator, timer: Timer) -> None:
    for name in sorted({c.data for c in configs}):
        if (dataset_dir(name) / "manifest.parquet").exists():
            continue
        with timer("prepare"), accelerator.main_process_first():
            if accelerator.is_main_process:
                from data.prepare import prepare
                print(f"preparing dataset {name!r} on first use")
                prepare(AUTO_PREPARE[name])


def warm_feature_cache(configs: list[RunConfig], cache_dir: Path, show_progress: bool) -> None:
    """Extract image features once per (model, data, size), at the lowest cut any run needs:
    runs that lock more of the tower derive theirs from it in a fraction of the time."""
    groups: dict[tuple, list[RunConfig]] = {}
    for cfg in configs:
        if cfg.unlock_image >= 0:  # a fully trainable tower has nothing to cache
            groups.setdefault((cfg.model, cfg.data, cfg.image_size), []).append(cfg)
    for group in groups.values():
        if len({c.unlock_image for c in group}) < 2:
            continue  # one cut only: the first run extracts it
        cfg = max(group, key=lambda c: c.unlock_image)
        model = build_model(cfg)
        pairs = Pairs.from_manifest(load_manifest(cfg.data))
        TowerInputs(model, pairs, cache_dir, show_progress=show_progress, text=False)


def provenance(accelerator: Accelerator) -> dict:
    import accelerate
    import transformers

    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        rev = None
    return dict(git_revision=rev, device=str(accelerator.device), processes=accelerator.num_processes,
                host=platform.node(), python=platform.python_version(),
                versions=dict(torch=torch.__version__, transformers=transformers.__version__,
                              accelerate=accelerate.__version__))


# ------------------------------------------------------------------------- one run


def param_groups(model: torch.nn.Module, cfg: RunConfig) -> list[dict]:
    """Towers at tower_lr, heads and temperature at lr; no weight decay on biases, norms,
    embeddings and the temperature, as open_clip does."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        tower = name.startswith(("image_tower.", "text_tower."))
        exempt = p.ndim < 2 or "logit_scale" in name or "embeddings" in name or "norm" in name
        groups.setdefault((tower, exempt), []).append(p)
    return [dict(params=ps, lr=cfg.tower_lr if tower else cfg.lr,
                 weight_decay=0.0 if exempt else cfg.weight_decay)
            for (tower, exempt), ps in groups.items()]


def lr_lambda(cfg: RunConfig, total_steps: int):
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def train_run(cfg: RunConfig, path: Path, sweep, accelerator: Accelerator, cache_dir: Path,
              thumbnails: dict) -> str:
    main = accelerator.is_main_process
    writer = run_store.RunWriter(path) if main else None
    timer = Timer()
    if main:
        writer.write_config(dict(cfg.to_dict(), sweep=sweep.name, sweep_file=sweep.source,
                                 provenance=provenance(accelerator)))
        writer.set_status("RUNNING", step=0)
    step, skipped = 0, 0
    try:
        set_seed(cfg.seed)
        manifest = load_manifest(cfg.data)
        pairs = Pairs.from_manifest(manifest)
        train_view = pairs.subset("train", cfg.data_fraction, cfg.seed)
        val_view = pairs.subset("val")
        # A train subset as large as val: the gap between the two is overfitting.
        probe_view = pairs.subset("train", max_images=len(val_view.image_rows), seed=cfg.seed)
        labels = sorted(set(manifest["label"]) - {""})
        model = build_model(cfg)
        with timer("features"):
            inputs = TowerInputs(model, pairs, cache_dir, show_progress=main)
            inputs.attach()
        if main and not thumbnails:
            thumbnails.update({iid: thumbnail_png(p) for iid, p in
                               zip(val_view.images["image_id"], val_view.images["image_path"])})
        dataset = PairDataset(train_view)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=len(dataset) >= cfg.batch_size,
            collate_fn=collate_rows, num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(cfg.seed))
        optimizer = torch.optim.AdamW(param_groups(model, cfg), betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
        total_steps = cfg.epochs * len(loader)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
        model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
        raw = accelerator.unwrap_model(model)
        trainable = [p for p in raw.parameters() if p.requires_grad]

        def run_eval(epoch: float):
            with timer("evaluation"), accelerator.autocast():
                raw.eval()
                for name, view in (("train", probe_view), ("val", val_view)):
                    ev = evaluate(raw, inputs, view, labels, cfg.prompt_template, cfg.top_k)
                    if main:
                        writer.log_eval(step, epoch, name, ev.values)
            return ev  # the val evaluation (last in the loop)

        first = run_eval(0.0)
        if main:
            writer.flush()
        t_start = time.time()
        bar = tqdm(total=total_steps, desc=cfg.name, disable=not main, unit="step")
        for epoch in range(cfg.epochs):
            raw.train()
            with timer("training"):
                for i, batch in enumerate(loader):
                    image_in = to_device(inputs.image_input(batch["image_rows"].cpu()), accelerator.device)
                    text_in = to_device(inputs.text_input(batch["caption_rows"].cpu()), accelerator.device)
                    with accelerator.autocast():
                        loss = accumulated_clip_backward(model, image_in, text_in, cfg.accum_steps,
                                                         accelerator.backward, lambda: accelerator.no_sync(model))
                    step += 1
                    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, float("inf"))
                    finite = bool(torch.isfinite(loss))
                    if finite:
                        optimizer.step()
                    else:
                        skipped += 1
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    raw.clamp_logit_scale()
                    if main:
                        writer.log_metrics(step, epoch + (i + 1) / len(loader),
                                           time.time() - t_start, {
                            "loss": loss.item(), "lr": scheduler.get_last_lr()[0],
                            "logit_scale": raw.logit_scale.exp().item(),
                            "temperature": (-raw.logit_scale).exp().item(),
                            "grad_norm": grad_norm.item()})
                    if not finite and cfg.on_nan == "stop":
                        raise NonFiniteLoss(f"the loss is {loss.item()} at step {step}; set on_nan = \"skip\" "
                                            f"to skip such batches, or lower lr")
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.3f}", epoch=epoch + 1, refresh=False)
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                last = run_eval(float(epoch + 1))
                bar.set_postfix(loss=f"{loss.item():.3f}", i2t_R1=f"{last.values['i2t_R@1']:.3f}")
            if main:
                writer.flush()
                writer.heartbeat(step)
        bar.close()
        if main:
            with timer("evaluation"):
                writer.write_embeddings(pd.concat([embeddings_frame(val_view, first, 0),
                                                   embeddings_frame(val_view, last, step)], ignore_index=True))
                writer.write_samples(samples_frame(val_view, last, step, thumbnails))
            writer.set_status("FINISHED", step=step, timings=timer.seconds,
                              cache=inputs.stats, train_pairs=len(dataset), skipped_steps=skipped)
        return "FINISHED"
    except KeyboardInterrupt as e:
        if main:
            writer.flush()
            writer.set_status("KILLED", step=step, logged_step=writer.logged_step, timings=timer.seconds,
                              error=f"interrupted ({e.args[0] if e.args else 'SIGINT'})")
        raise
    except Exception as e:
        if main:
            writer.flush()
            writer.set_status("FAILED", step=step, logged_step=writer.logged_step, timings=timer.seconds,
                              error=traceback.format_exc())
        print(f"run {cfg.name} FAILED: {e.__class__.__name__}: {e}", file=sys.stderr)
        return "FAILED"
    finally:
        accelerator.free_memory()


# ------------------------------------------------------------------------- the sweep


def summary(sweep, runs_dir: Path) -> pd.DataFrame:
    rows = []
    for cfg in sweep.runs:
        path = run_store.run_dir(runs_dir, sweep.name, cfg.name)
        run = run_store.load_run(path)
        final = run_store.final_eval(path)
        timings = run.status.get("timings", {})
        rows.append(dict(run=cfg.name, state=run.state,
                         **{m: final.get(m, float("nan")) for m in (
                             "i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10",
                             "zero_shot_accuracy", "modality_gap")},
                         N=int(final.get("n_images", 0)), seconds=round(sum(timings.values()), 1)))
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    timer = Timer()
    overrides = parse_set(args.set)
    if args.data:
        overrides["data"] = args.data
    if args.model:
        overrides["model"] = args.model
    sweep = load_sweep(args.sweep, overrides, args.only)
    if args.dry_run:
        frame = pd.DataFrame([c.to_dict() for c in sweep.runs]).set_index("name")
        print(f"sweep {sweep.name!r} from {sweep.source}: {len(frame)} runs")
        print(frame.T.to_string())
        return 0
    for model_name in sorted({c.model for c in sweep.runs}):
        check_available(model_name)
    for name in sorted({c.data for c in sweep.runs} - set(AUTO_PREPARE)):
        load_manifest(name)  # every dataset must exist before the first run starts
    todo, skipped = plan(sweep, args.runs_dir, args.overwrite)
    accelerator = Accelerator(mixed_precision=sweep.runs[0].precision)
    if accelerator.device.type == "cpu":
        # `accelerate launch` sets OMP_NUM_THREADS=1 for CPU processes; share the cores
        # among this machine's processes instead, or one process runs at half speed on two.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // accelerator.num_processes))
    ensure_data([c for c, _ in todo], accelerator, timer)
    if skipped and accelerator.is_main_process:
        print(f"skipping {len(skipped)} finished run(s) with the same config: {', '.join(skipped)} "
              f"(--overwrite retrains them)")
    if accelerator.is_main_process:
        with timer("features"):
            warm_feature_cache([c for c, _ in todo], args.cache_dir, show_progress=True)
    accelerator.wait_for_everyone()
    states, thumbnails = {}, {}
    for cfg, path in todo:
        states[cfg.name] = train_run(cfg, path, sweep, accelerator, args.cache_dir, thumbnails)
    if accelerator.is_main_process:
        # Every finished run of the sweep without coordinates, also one whose sweep was
        # interrupted before its UMAP stage.
        finished = [p for p in (run_store.run_dir(args.runs_dir, sweep.name, c.name) for c in sweep.runs)
                    if run_store.load_run(p).status.get("state") == "FINISHED" and run_store.needs_umap(p)]
        with timer("umap"):
            per_run = project_runs(finished)
        for path, seconds in per_run.items():
            run_store.add_timing(path, "umap", seconds)
        table = summary(sweep, args.runs_dir)
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(f"\nsweep {sweep.name!r}: {args.runs_dir / sweep.name}")
            print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        stages = {k: round(v, 1) for k, v in timer.seconds.items()}
        wall = time.time() - t0
        if todo or per_run:  # a call that only skipped finished runs keeps the last summary
            run_store.write_sweep_summary(args.runs_dir, sweep.name, dict(
                wall_time=round(wall, 1), stages=stages, trained=[c.name for c, _ in todo], skipped=skipped,
                states=states, argv=sys.argv[1:] if argv is None else argv, finished_at=time.time()))
        print(f"wall time {wall:.0f} s; sweep-level stages (s): {stages}")
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
