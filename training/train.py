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
import importlib.util
import math
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager, nullcontext
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from accelerate import Accelerator, DataLoaderConfiguration  # noqa: E402
from accelerate.utils import ProjectConfiguration, set_seed  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from data.manifest import DatasetNotFound, dataset_dir, load_manifest  # noqa: E402
from training import checkpoints, run_store  # noqa: E402
from training.config import (  # noqa: E402
    DEFAULT_SWEEP, ConfigError, RunConfig, Sweep, changed_keys, load_sweep, parse_set)
from training.distributed import gather_with_grad  # noqa: E402
from training.evaluate import (  # noqa: E402
    EvalSet, dataset_labels, embeddings_frame, evaluate, extra_eval_sets, samples_frame, select)
from training.features import CACHE_DIR, TowerInputs  # noqa: E402
from training.losses import accumulated_clip_backward  # noqa: E402
from training.models import ModelUnavailable, build_model, check_available  # noqa: E402
from training.pairs import (  # noqa: E402
    Collate, LengthGroupedBatches, PairDataset, Pairs, normalize, thumbnail_png, to_device)
from training.projection import project_runs  # noqa: E402
from training.weight_interpolation import (  # noqa: E402
    FROZEN_FINGERPRINT, WeightsMismatch, frozen_fingerprint, interpolate, load_state, state_of, trained_names)

ROOT = Path(__file__).resolve().parents[1]
AUTO_PREPARE = {"openmoji": ["openmoji"]}  # datasets train.py may prepare on first use
TRACKERS = ("tensorboard", "wandb")  # --report-to values, each the name of the package it needs


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
    p.add_argument("--report-to", choices=TRACKERS,
                   help="also log to TensorBoard or wandb (Accelerate's trackers), inside each run folder; "
                        "the Parquet files are written either way. wandb without network: WANDB_MODE=offline")
    p.add_argument("--resume", metavar="RUN_DIR|auto",
                   help="continue from the last complete checkpoint: one run folder (with its saved config), "
                        "or 'auto' for every unfinished run of the sweep that has one")
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
            if run.config and not changed_keys(run.config, cfg):
                skipped.append(cfg.name)
                continue
            conflicts.append(f"{path} holds a finished run with a different config")
        todo.append((cfg, path))
    if conflicts:
        raise ConfigError("refusing to start: " + "; ".join(conflicts) +
                          ". Fix: use another --runs-dir, rename the run in the sweep, or "
                          "--overwrite to retrain (the old files are replaced).")
    return todo, skipped


def order_for_init_from(todo: list[tuple[RunConfig, Path]]) -> list[tuple[RunConfig, Path]]:
    """The runs in an order where every init_from source trains before the runs that start
    from it; a source neither trained in this call nor finished on disk fails here, before
    any run starts, naming it."""
    pending = {path.resolve(): (cfg, path) for cfg, path in todo}
    ordered, placed, visiting = [], set(), set()

    def visit(cfg: RunConfig, path: Path) -> None:
        key = path.resolve()
        if key in placed:
            return
        if key in visiting:
            raise ConfigError(f"init_from goes round in a circle through run {cfg.name!r}")
        visiting.add(key)
        if cfg.init_from:
            source = run_store.init_from_dir(path, cfg.init_from).resolve()
            weights = run_store.final_weights_path(source)
            if source in pending:
                visit(*pending[source])
            elif not weights.exists():
                raise ConfigError(
                    f"run {cfg.name!r} starts from run {cfg.init_from!r} (init_from), which has not finished: "
                    f"{weights} does not exist. Train it first or in the same call "
                    f"(--only {source.name} {cfg.name}).")
        visiting.discard(key)
        placed.add(key)
        ordered.append((cfg, path))

    for cfg, path in todo:
        visit(cfg, path)
    return ordered


def check_selections(configs: list[RunConfig]) -> None:
    """Label subsets and extra evaluation sets name labels, splits and datasets that exist and
    select at least two images; checked before any run starts."""
    pairs_of: dict[str, Pairs] = {}

    def pairs(data: str) -> Pairs:
        if data not in pairs_of:
            pairs_of[data] = Pairs.from_manifest(load_manifest(data))
        return pairs_of[data]

    for cfg in configs:
        labels = dict(include_labels=cfg.include_labels, exclude_labels=cfg.exclude_labels)
        checks = [(cfg.data, dict(labels, split="train"), "the training data")]
        if cfg.include_labels or cfg.exclude_labels:
            checks.append((cfg.data, dict(labels, split="val"), "the validation data"))
        checks += [(e["data"], e, f"extra evaluation set {e['name']!r}") for e in cfg.extra_evals or []]
        for data, spec, what in checks:
            try:
                select(pairs(data), spec, f"run {cfg.name!r}: {what}")
            except ValueError as e:
                raise ConfigError(str(e)) from e


def resumed_sweep(path: Path, args) -> tuple[Sweep, Path]:
    """The one-run sweep that continues the run folder `path` with its saved config, and the
    runs folder it lives in."""
    given = [flag for flag, value in (("--set", args.set), ("--only", args.only), ("--data", args.data),
                                      ("--model", args.model)) if value]
    if given:
        raise ConfigError(f"--resume {path} continues that run with its saved config; drop {', '.join(given)}")
    run = run_store.load_run(path)
    if not run.config:
        raise ConfigError(f"--resume {path}: not a run folder with a readable config.json "
                          f"({'; '.join(run.problems)})")
    cfg = RunConfig.from_saved(run.config)
    return Sweep(name=run.sweep, source=str(run.config.get("sweep_file", "")), runs=(cfg,)), run_store.runs_root(path)


def resume_points(todo: list[tuple[RunConfig, Path]], explicit: bool) -> dict[str, checkpoints.Checkpoint]:
    """The checkpoint each run to train continues from. With `--resume auto` a run without
    one starts from step 0; a run folder named explicitly must have one."""
    points = {}
    for cfg, path in todo:
        found = checkpoints.latest(path)
        if found is None:
            if explicit:
                raise ConfigError(f"{path} has no complete checkpoint to resume from (checkpoint_every = "
                                  f"{cfg.checkpoint_every}); run without --resume to train it from step 0")
            continue
        differing = changed_keys(run_store.load_run(path).config, cfg)
        if differing:
            raise ConfigError(f"cannot resume {path}: its saved config differs in {', '.join(differing)}. Fix: "
                              f"resume with the same settings, or drop --resume to train it from step 0")
        points[cfg.name] = found
    return points


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


def resolve_precision(precision: str) -> str:
    """'auto' becomes bf16 where the hardware has native bf16 arithmetic, else fp32 ('no');
    bench/cpu_precision.py measures what it changes on a CPU."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    native = any(getattr(torch.cpu, probe, lambda: False)()
                 for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return "bf16" if native else "no"


def finish_step(model, trainable: list, optimizer, scheduler, loss: torch.Tensor) -> dict[str, float]:
    """A training step once its gradients are in: the loss (averaged over processes), the
    gradient norm and the logit scale the loss used, read in the step's one host sync (the
    update then runs on the GPU while the next batch is prepared, instead of being waited
    for); the AdamW update unless the loss is not finite; the schedule; the temperature clamp.
    Returns the step's logged values, with the learning rate the update used."""
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in trainable if p.grad is not None])
    loss, norm, scale = torch.stack([loss, grad_norm.float(), model.logit_scale.detach().exp()]).tolist()
    lr = scheduler.get_last_lr()[0]
    if math.isfinite(loss):
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    model.clamp_logit_scale()
    return {"loss": loss, "lr": lr, "logit_scale": scale, "temperature": 1.0 / scale, "grad_norm": norm}


def training_attention(device: torch.device, precision: str):
    """The attention kernels of the training step (a context). On a CPU under bf16, PyTorch's
    flash-attention backward is several times slower than its math kernel's (and than its own
    fp32 backward), so the step's attention runs the math kernel there; its forward is a little
    slower, so evaluation and feature extraction keep PyTorch's choice. bench/cpu_precision.py
    times both on a text-unlocked step."""
    if device.type == "cpu" and precision == "bf16":
        return sdpa_kernel(SDPBackend.MATH)
    return nullcontext()


def provenance(accelerator: Accelerator) -> dict:
    import accelerate
    import transformers

    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        rev = None
    return dict(git_revision=rev, device=str(accelerator.device), processes=accelerator.num_processes,
                precision=accelerator.mixed_precision,
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


def make_optimizer(model: torch.nn.Module, cfg: RunConfig, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW over `param_groups`; the fused kernel on a GPU (one launch for all parameters)."""
    return torch.optim.AdamW(param_groups(model, cfg), betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                             fused=fused or None)


def make_loader(view, inputs: TowerInputs, cfg: RunConfig, pin_memory: bool = False):
    """Batches of a view's pairs. What the towers take raw (pixels when no image features are
    cached, tokens when the whole text tower trains) is decoded and tokenized in the loader's
    workers; cached features are looked up by row in the training loop."""
    model = inputs.model
    raw_pixels = inputs.image_prefix is None
    raw_text = inputs.text_cached is None
    dataset = PairDataset(view, model.preprocess if raw_pixels else None, with_text=raw_text)
    collate = Collate(model.tokenizer, model.max_text_len, cfg.pad_multiple)
    drop_last = len(dataset) >= cfg.batch_size
    common = dict(collate_fn=collate, num_workers=cfg.num_workers, pin_memory=pin_memory,
                  persistent_workers=cfg.num_workers > 0)
    if cfg.group_by_length:
        captions = view.captions["caption"].tolist()
        lengths = [len(ids) for ids in model.tokenizer(captions, truncation=True,
                                                          max_length=model.max_text_len)["input_ids"]]
        sampler = LengthGroupedBatches(lengths, cfg.batch_size, drop_last, cfg.seed)
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, **common)
    return torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=drop_last,
                                       generator=torch.Generator().manual_seed(cfg.seed), **common)


def load_init_from(model, cfg: RunConfig, path: Path) -> set[str]:
    """Load the final weights of the run `cfg.init_from` names into the model; the names loaded."""
    source = run_store.init_from_dir(path, cfg.init_from)
    state = run_store.read_final_weights(source)
    meta = run_store.read_final_weights_metadata(source)
    if meta.get("model") != cfg.model or meta.get(FROZEN_FINGERPRINT) != frozen_fingerprint(model, set(state)):
        raise WeightsMismatch(
            f"init_from {cfg.init_from!r}: that run trained model {meta.get('model')!r} and the weights its file "
            f"does not carry differ from this run's ({cfg.model!r}); init_from needs the same model, head and "
            f"embed_dim (and, for tiny-clip, the same seed)")
    load_state(model, state)
    return set(state)


def weights_metadata(cfg: RunConfig, model, names: set[str]) -> dict[str, str]:
    return {"model": cfg.model, "run": cfg.name, "init_from": cfg.init_from or "",
            FROZEN_FINGERPRINT: frozen_fingerprint(model, names)}


def start_tracking(accelerator: Accelerator, cfg: RunConfig, path: Path, sweep) -> None:
    """--report-to: a tracker run per training run, writing inside the run folder."""
    if not accelerator.log_with:
        return
    folder = run_store.tracker_dir(path)
    folder.mkdir(parents=True, exist_ok=True)
    # TensorBoard writes to <logging_dir>/<project name>; wandb to its `dir`, grouped by sweep.
    accelerator.project_configuration.logging_dir = str(folder.parent)
    kind = str(accelerator.log_with[0])
    project = sweep.name if "wandb" in kind else folder.name
    values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in cfg.to_dict().items()}
    accelerator.init_trackers(project, config=values,
                              init_kwargs={"wandb": {"name": cfg.name, "dir": str(folder), "group": sweep.name}})


def end_tracking(accelerator: Accelerator) -> None:
    """Close this run's trackers (Accelerate's end_training would also end the process group)."""
    if accelerator.is_main_process:
        for tracker in accelerator.trackers:
            tracker.finish()
    accelerator.trackers.clear()


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
              thumbnails: dict, resume_from: checkpoints.Checkpoint | None = None) -> str:
    main = accelerator.is_main_process
    writer = run_store.RunWriter(path) if main else None
    timer = Timer()
    if main:
        writer.write_config(dict(cfg.to_dict(), sweep=sweep.name, sweep_file=sweep.source,
                                 provenance=provenance(accelerator)))
        if resume_from:
            writer.resume(resume_from.step)
        else:
            checkpoints.remove_all(path)  # a fresh start must never resume from an older attempt's state
        writer.set_status("RUNNING", step=resume_from.step if resume_from else 0,
                          resumed_from=resume_from.step if resume_from else None)
    step, skipped = 0, 0
    try:
        set_seed(cfg.seed)
        manifest = load_manifest(cfg.data)
        pairs = Pairs.from_manifest(manifest)
        selection = dict(include_labels=cfg.include_labels, exclude_labels=cfg.exclude_labels)
        train_view = pairs.subset("train", cfg.data_fraction, cfg.seed, **selection)
        val_view = pairs.subset("val", **selection)
        # A train subset as large as val: the gap between the two is overfitting.
        probe_view = pairs.subset("train", max_images=len(val_view.image_rows), seed=cfg.seed, **selection)
        labels = dataset_labels(pairs)
        model = build_model(cfg)
        changed = trained_names(model)  # what training can move: saved at the end, mixed by WiSE-FT
        if cfg.init_from:
            changed |= load_init_from(model, cfg, path)
        start_weights = state_of(model, changed) if cfg.wise_ft_ratios else None  # a CPU copy: only if mixed
        start_tracking(accelerator, cfg, path, sweep)
        with timer("features"), accelerator.autocast():  # frozen parts at the run's precision
            inputs = TowerInputs(model, pairs, cache_dir, show_progress=main)
            inputs.attach()
            eval_sets = [EvalSet("train", probe_view, inputs, labels), EvalSet("val", val_view, inputs, labels),
                         *extra_eval_sets(cfg, model, pairs, inputs, cache_dir, show_progress=main)]
        if main:  # each run may validate on other images (label subsets): add the missing thumbnails
            thumbnails.update({iid: thumbnail_png(p) for iid, p in
                               zip(val_view.images["image_id"], val_view.images["image_path"])
                               if iid not in thumbnails})
        # Prepared first: on N processes each yields its share of every global batch, and the
        # schedule counts global steps, as one process with N times the batch would.
        unprepared = make_loader(train_view, inputs, cfg, pin_memory=accelerator.device.type == "cuda")
        loader = accelerator.prepare(unprepared)
        # Length-grouped batches shuffle by (seed, epoch) too, but on several processes Accelerate
        # wraps their sampler in one that does not pass set_epoch on: it is told here directly.
        grouped = unprepared.batch_sampler if isinstance(unprepared.batch_sampler, LengthGroupedBatches) else None
        dataset = loader.dataset
        optimizer = make_optimizer(model, cfg, fused=accelerator.device.type == "cuda")
        total_steps = cfg.epochs * len(loader)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        raw = accelerator.unwrap_model(model)
        trainable = [p for p in raw.parameters() if p.requires_grad]
        cudagraphs = cfg.compile and cfg.compile_mode == "reduce-overhead"

        def run_eval(epoch: float, log: bool = True, wise_ft_ratio: float | None = None,
                     stage: str = "evaluation"):
            """Evaluate every set (train probe, val, the extra sets); returns the val evaluation."""
            results = {}
            with timer(stage), accelerator.autocast():
                raw.eval()
                for es in eval_sets:
                    results[es.name] = evaluate(raw, es.inputs, es.view, es.labels, cfg.prompt_template, cfg.top_k)
                    if main and log:
                        writer.log_eval(step, epoch, es.name, results[es.name].values, wise_ft_ratio)
            if log and wise_ft_ratio is None:
                accelerator.log({f"eval/{name}/{k}": v for name, ev in results.items() for k, v in ev.values.items()},
                                step=step)
            return results["val"]

        def checkpoint(next_epoch: int, next_batch: int):
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                if main:
                    writer.flush()  # the metrics a resume keeps must be on disk before the checkpoint
                with timer("checkpoint"):
                    checkpoints.save(accelerator, path, step, dict(epoch=next_epoch, batch_in_epoch=next_batch,
                                                                   skipped=skipped), cfg.keep_checkpoints)

        first = run_eval(0.0, log=resume_from is None)  # a resumed run rebuilt the step-0 model for it
        start_epoch, done_batches, last = 0, 0, None
        if resume_from:
            checkpoints.load(accelerator, resume_from)
            step, skipped = resume_from.step, int(resume_from.state.get("skipped", 0))
            start_epoch, done_batches = resume_from.epoch, resume_from.batches_done
        if main:
            writer.flush()
        t_start = time.time()
        bar = tqdm(total=total_steps, initial=step, desc=cfg.name, disable=not main, unit="step")
        for epoch in range(start_epoch, cfg.epochs):
            raw.train()
            loader.set_epoch(epoch)  # the shuffle is a function of (seed, epoch), so a resume sees the same order
            if grouped is not None:
                grouped.set_epoch(epoch)
            skip = done_batches if epoch == start_epoch else 0
            batches = accelerator.skip_first_batches(loader, skip) if skip else loader
            with timer("training"):
                for i, batch in enumerate(batches, start=skip):
                    if cudagraphs:  # a new step: the graphs may reuse the last step's output memory
                        torch.compiler.cudagraph_mark_step_begin()
                    if "pixels" in batch:  # uint8 from the loader workers, normalised on the device
                        image_in = normalize(to_device(batch["pixels"], accelerator.device), raw.preprocess)
                    else:
                        image_in = to_device(inputs.image_input(batch["image_rows"].cpu()), accelerator.device)
                    text_in = batch["tokens"] if "tokens" in batch else inputs.text_input(batch["caption_rows"].cpu())
                    text_in = to_device(text_in, accelerator.device)
                    with accelerator.autocast(), training_attention(accelerator.device, accelerator.mixed_precision):
                        loss = accumulated_clip_backward(model, image_in, text_in, cfg.accum_steps,
                                                         accelerator.backward, lambda: accelerator.no_sync(model),
                                                         gather=gather_with_grad)
                    # Every process's loss, averaged: one value per step, and one decision on a NaN.
                    values = finish_step(raw, trainable, optimizer, scheduler,
                                         accelerator.reduce(loss, reduction="mean"))
                    step += 1
                    loss = values["loss"]
                    finite = math.isfinite(loss)
                    skipped += not finite
                    if main:
                        writer.log_metrics(step, epoch + (i + 1) / len(loader), time.time() - t_start, values)
                        accelerator.log({f"train/{k}": v for k, v in values.items()}, step=step)
                    if not finite and cfg.on_nan == "stop":
                        raise NonFiniteLoss(f"the loss is {loss} at step {step}; set on_nan = \"skip\" "
                                            f"to skip such batches, or lower lr")
                    if i + 1 < len(loader):
                        checkpoint(epoch, i + 1)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}", epoch=epoch + 1, refresh=False)
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                last = run_eval(float(epoch + 1))
                bar.set_postfix(loss=f"{loss:.3f}", i2t_R1=f"{last.values['i2t_R@1']:.3f}")
            if main:
                writer.flush()
                writer.heartbeat(step)
            checkpoint(epoch + 1, 0)  # after the epoch's evaluation, which a resume does not repeat
        bar.close()
        if last is None:  # resumed from the checkpoint of the last step: its evaluation is on disk
            last = run_eval(float(cfg.epochs), log=False)
        end_weights = state_of(raw, changed)
        if main:
            run_store.write_final_weights(path, end_weights, weights_metadata(cfg, raw, changed))
        for ratio in cfg.wise_ft_ratios or []:
            load_state(raw, interpolate(start_weights, end_weights, ratio))
            run_eval(float(cfg.epochs), wise_ft_ratio=ratio, stage="wise_ft")
        if cfg.wise_ft_ratios:
            load_state(raw, end_weights)
            if main:
                writer.flush()
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
        end_tracking(accelerator)
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
    explicit_resume = args.resume not in (None, "auto")
    if args.resume and args.overwrite:
        raise ConfigError("--resume continues runs and --overwrite restarts them: choose one")
    if explicit_resume:
        sweep, args.runs_dir = resumed_sweep(Path(args.resume), args)
    else:
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
    todo = order_for_init_from(todo)
    if args.report_to and importlib.util.find_spec(args.report_to) is None:
        raise ConfigError(f"--report-to {args.report_to} needs the {args.report_to!r} package, "
                          f"which is not installed: .venv/bin/pip install {args.report_to}")
    resumes = resume_points(todo, explicit_resume) if args.resume else {}
    # The seedable sampler shuffles by (seed, epoch), the same on every process and after a
    # resume; the schedule steps once per global step (see train_run).
    accelerator = Accelerator(mixed_precision=resolve_precision(sweep.runs[0].precision), step_scheduler_with_optimizer=False,
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
                              log_with=args.report_to, project_config=ProjectConfiguration(logging_dir=str(args.runs_dir)))
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:  # each process would train alone, all writing one folder
        raise ConfigError(f"{launched} processes were launched but Accelerate sees {accelerator.num_processes}; "
                          f"on CPUs set ACCELERATE_USE_CPU=true (torchrun), or use `accelerate launch`")
    if accelerator.device.type == "cpu":
        # `accelerate launch` sets OMP_NUM_THREADS=1 for CPU processes; share the cores
        # among this machine's processes instead, or one process runs at half speed on two.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // accelerator.num_processes))
    ensure_data([c for c, _ in todo], accelerator, timer)
    check_selections([c for c, _ in todo])
    if skipped and accelerator.is_main_process:
        print(f"skipping {len(skipped)} finished run(s) with the same config: {', '.join(skipped)} "
              f"(--overwrite retrains them)")
    if accelerator.is_main_process:
        with timer("features"), accelerator.autocast():
            warm_feature_cache([c for c, _ in todo], args.cache_dir, show_progress=True)
    accelerator.wait_for_everyone()
    states, thumbnails = {}, {}
    for cfg, path in todo:
        states[cfg.name] = train_run(cfg, path, sweep, accelerator, args.cache_dir, thumbnails,
                                     resume_from=resumes.get(cfg.name))
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
