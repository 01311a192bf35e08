"""One run's life: set-up, step 0's evaluation, the epochs, and the end-of-run files, inside
the status lifecycle (RUNNING, then FINISHED, FAILED or KILLED) that status.json records.

    state = Trainer(cfg, run_dir, sweep, accelerator, cache_dir, thumbnails).run()

train.py builds one Trainer per run of its sweep; only the main process writes the run folder.
"""

from __future__ import annotations

import math
import platform
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from core import run_store
from core.config import RunConfig
from data.manifest import load_manifest
from training import checkpoints
from training.closed_form import choose_ridge, fit_heads, load_heads
from training.distributed import gather_with_grad
from training.evaluate import (
    EvalSet,
    dataset_labels,
    embeddings_frame,
    evaluate,
    extra_eval_sets,
    figure_intervals,
    samples_frame,
)
from training.features import TowerInputs
from training.models import build_model
from training.pairs import Collate, LengthGroupedBatches, PairDataset, Pairs, thumbnail_png
from training.step import Stepper, make_optimizer, make_scheduler, training_attention
from training.trained_weights import (
    FROZEN_FINGERPRINT,
    frozen_fingerprint,
    interpolate,
    load_final_weights,
    load_state,
    state_of,
    trained_names,
)

ROOT = Path(__file__).resolve().parents[1]


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


class Trainer:
    """Trains one run and writes its folder. The step counters are fields: the evaluation,
    the checkpoints and the status all read the same `step` and `skipped`."""

    def __init__(self, cfg: RunConfig, path: Path, sweep, accelerator: Accelerator, cache_dir: Path,
                 thumbnails: dict, resume_from: checkpoints.Checkpoint | None = None):
        self.cfg, self.path, self.sweep, self.accelerator = cfg, path, sweep, accelerator
        self.cache_dir, self.thumbnails, self.resume_from = cache_dir, thumbnails, resume_from
        self.main = accelerator.is_main_process
        self.writer = run_store.RunWriter(path) if self.main else None
        self.timer = Timer()
        self.step = 0
        self.skipped = 0  # steps whose loss was not finite (on_nan = "skip")
        self.state = "RUNNING"

    def run(self) -> str:
        """FINISHED or FAILED (the exception is recorded and the sweep goes on); a KILLED run
        re-raises the interrupt, which stops the sweep."""
        with self._lifecycle():
            self._set_up()
            if self.cfg.closed_form:
                first = last = self._fit_closed_form()
            else:
                first = self._evaluate(0.0, log=self.resume_from is None)  # a resumed run rebuilt the step-0 model
                start_epoch, done_batches = self._resume()
                last = self._epochs(start_epoch, done_batches)
            self._finish(first, last)
        return self.state

    # ------------------------------------------------------------------ the lifecycle

    @contextmanager
    def _lifecycle(self):
        cfg, resume = self.cfg, self.resume_from
        if self.main:
            self.writer.write_config(dict(cfg.to_dict(), sweep=self.sweep.name, sweep_file=self.sweep.source,
                                          provenance=provenance(self.accelerator)))
            if resume:
                self.writer.resume(resume.step)
            else:
                checkpoints.remove_all(self.path)  # a fresh start must never resume from an older attempt's state
                run_store.remove_maps(self.path)  # nor keep the map places of an older attempt's embeddings
            self.writer.set_status("RUNNING", step=resume.step if resume else 0,
                                   resumed_from=resume.step if resume else None)
        try:
            yield
        except KeyboardInterrupt as e:
            self._record("KILLED", error=f"interrupted ({e.args[0] if e.args else 'SIGINT'})")
            raise
        except Exception as e:
            self._record("FAILED", error=traceback.format_exc())
            print(f"run {cfg.name} FAILED: {e.__class__.__name__}: {e}", file=sys.stderr)
        finally:
            end_tracking(self.accelerator)
            self.accelerator.free_memory()

    def _record(self, state: str, **fields) -> None:
        self.state = state
        if self.main:
            self.writer.flush()
            self.writer.set_status(state, step=self.step, logged_step=self.writer.logged_step,
                                   timings=self.timer.seconds, **fields)

    # ------------------------------------------------------------------ set-up

    def _set_up(self) -> None:
        cfg, accelerator, main = self.cfg, self.accelerator, self.main
        set_seed(cfg.seed)
        pairs = Pairs.from_manifest(load_manifest(cfg.data))
        selection = dict(include_labels=cfg.include_labels, exclude_labels=cfg.exclude_labels)
        train_view = pairs.subset("train", cfg.data_fraction, cfg.seed, **selection)
        self.train_view = train_view
        self.val_view = pairs.subset("val", **selection)
        test_view = pairs.subset("test", **selection)
        # A train subset as large as val: the gap between the two is overfitting.
        probe_view = pairs.subset("train", max_images=len(self.val_view.image_rows), seed=cfg.seed, **selection)
        labels = dataset_labels(pairs)
        model = build_model(cfg)
        self.changed = trained_names(model)  # what training can move: saved at the end, mixed by WiSE-FT
        if cfg.init_from:
            self.changed |= load_init_from(model, cfg, self.path)
        self.start_weights = state_of(model, self.changed) if cfg.wise_ft_ratios else None  # a CPU copy
        start_tracking(accelerator, cfg, self.path, self.sweep)
        with self.timer("features"), accelerator.autocast():  # frozen parts at the run's precision
            self.inputs = TowerInputs(model, pairs, self.cache_dir, show_progress=main)
            self.eval_sets = [EvalSet("train", probe_view, self.inputs, labels),
                              EvalSet("val", self.val_view, self.inputs, labels),
                              *([EvalSet("test", test_view, self.inputs, labels, reported_only=True)]
                                if len(test_view.image_rows) >= 2 else []),
                              *extra_eval_sets(cfg, model, pairs, self.inputs, self.cache_dir, show_progress=main)]
        self.sample_sets = [es for es in self.eval_sets if es.name in ("val", "test")]  # samples.parquet's
        if main:  # each run may evaluate other images (label subsets): add the missing thumbnails
            for es in self.sample_sets:
                images = es.view.images
                self.thumbnails.update({iid: thumbnail_png(p) for iid, p in zip(images["image_id"],
                                                                                 images["image_path"])
                                        if iid not in self.thumbnails})
        # Prepared first: on N processes each yields its share of every global batch, and the
        # schedule counts global steps, as one process with N times the batch would.
        unprepared = make_loader(train_view, self.inputs, cfg, pin_memory=accelerator.device.type == "cuda")
        self.loader = accelerator.prepare(unprepared)
        # Length-grouped batches shuffle by (seed, epoch) too, but on several processes Accelerate
        # wraps their sampler in one that does not pass set_epoch on: it is told here directly.
        sampler = unprepared.batch_sampler
        self.grouped = sampler if isinstance(sampler, LengthGroupedBatches) else None
        optimizer = make_optimizer(model, cfg)
        self.total_steps = cfg.epochs * len(self.loader)
        scheduler = make_scheduler(optimizer, cfg, self.total_steps)
        wrapped, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        self.model = accelerator.unwrap_model(wrapped)
        self.stepper = Stepper(
            wrapped, self.model, optimizer, scheduler, accum_steps=cfg.accum_steps, autocast=accelerator.autocast,
            attention=lambda: training_attention(accelerator.device, accelerator.mixed_precision),
            backward=accelerator.backward, no_sync=lambda: accelerator.no_sync(wrapped), gather=gather_with_grad,
            reduce=lambda loss: accelerator.reduce(loss, reduction="mean"),
            cudagraphs=cfg.compile and cfg.compile_mode == "reduce-overhead")

    def _resume(self) -> tuple[int, int]:
        """(epoch, batches of it already done) where training starts."""
        start = (0, 0)
        if self.resume_from:
            checkpoints.load(self.accelerator, self.resume_from)
            self.step, self.skipped = self.resume_from.step, int(self.resume_from.state.get("skipped", 0))
            start = (self.resume_from.epoch, self.resume_from.batches_done)
        if self.main:
            self.writer.flush()
        return start

    # ------------------------------------------------------------------ the closed-form baseline

    def _fit_closed_form(self) -> dict:
        """Fit the linear heads on the training pairs' frozen features in closed form, the
        ridge chosen on val; evaluated as step 0, since nothing trains."""
        cfg = self.cfg
        with self.timer("closed_form"):
            train, val = self._frozen_features(self.train_view), self._frozen_features(self.val_view)
            ridge, scores = choose_ridge(train, val, cfg.embed_dim, cfg.closed_form)
            load_heads(self.model, *fit_heads(*train, cfg.embed_dim, cfg.closed_form, ridge))
        self.changed = trained_names(self.model) | {"image_head.bias", "text_head.bias"}
        if self.main:
            self.writer.set_status("RUNNING", closed_form=dict(
                method=cfg.closed_form, ridge=ridge, val_i2t_R1_by_ridge={str(k): v for k, v in scores.items()}))
        evaluation = self._evaluate(0.0)
        if self.main:
            self.writer.flush()
        return evaluation

    def _frozen_features(self, view) -> tuple:
        """(image features, caption features, caption -> image index) of a view: the locked
        towers' cached outputs."""
        batch = self.inputs.rows_batch(torch.as_tensor(view.image_rows), torch.as_tensor(view.caption_rows))
        return batch.image.float(), batch.text.float(), view.text_to_image()

    # ------------------------------------------------------------------ training

    def _epochs(self, start_epoch: int, done_batches: int):
        """Train from (start_epoch, done_batches) to the end; the last validation Evaluation
        (None when a resume started after the last epoch's evaluation)."""
        cfg, last = self.cfg, None
        self.t_start = time.time()
        self.bar = tqdm(total=self.total_steps, initial=self.step, desc=cfg.name, disable=not self.main, unit="step")
        for epoch in range(start_epoch, cfg.epochs):
            loss = self._train_epoch(epoch, done_batches if epoch == start_epoch else 0)
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                last = self._evaluate(float(epoch + 1), reported=epoch + 1 == cfg.epochs)
                self.bar.set_postfix(loss=f"{loss:.3f}", i2t_R1=f"{last['val'].values['i2t_R@1']:.3f}")
            if self.main:
                self.writer.flush()
                self.writer.heartbeat(self.step)
            self._checkpoint(epoch + 1, 0)  # after the epoch's evaluation, which a resume does not repeat
        self.bar.close()
        return last

    def _train_epoch(self, epoch: int, skip: int) -> float:
        """One epoch from its batch `skip`; the last step's loss."""
        cfg, accelerator, loss = self.cfg, self.accelerator, math.nan
        self.model.train()
        self.loader.set_epoch(epoch)  # the shuffle is a function of (seed, epoch): a resume sees the same order
        if self.grouped is not None:
            self.grouped.set_epoch(epoch)
        batches = accelerator.skip_first_batches(self.loader, skip) if skip else self.loader
        with self.timer("training"):
            for i, batch in enumerate(batches, start=skip):
                values = self.stepper(self.inputs.loader_batch(batch, accelerator.device))
                self.step += 1
                loss = values["loss"]
                finite = math.isfinite(loss)
                self.skipped += not finite
                if self.main:
                    self.writer.log_metrics(self.step, epoch + (i + 1) / len(self.loader),
                                            time.time() - self.t_start, values)
                    accelerator.log({f"train/{k}": v for k, v in values.items()}, step=self.step)
                if not finite and cfg.on_nan == "stop":
                    raise NonFiniteLoss(f"the loss is {loss} at step {self.step}; set on_nan = \"skip\" "
                                        f"to skip such batches, or lower lr")
                if i + 1 < len(self.loader):
                    self._checkpoint(epoch, i + 1)
                self.bar.update(1)
                self.bar.set_postfix(loss=f"{loss:.3f}", epoch=epoch + 1, refresh=False)
        return loss

    def _evaluate(self, epoch: float, log: bool = True, wise_ft_ratio: float | None = None,
                  stage: str = "evaluation", reported: bool = True):
        """Evaluate every set (train probe, val, test, the extra sets): set name -> Evaluation.
        `reported`: a figure readers report (step 0, the end, WiSE-FT), logged with its intervals;
        the test split is evaluated only then."""
        results = {}
        for es in self.eval_sets:
            if es.reported_only and not reported:
                continue
            with self.timer(stage), self.accelerator.autocast():
                self.model.eval()
                results[es.name] = evaluate(self.model, es.inputs, es.view, es.labels, self.cfg.prompt_template,
                                            self.cfg.top_k)
            if self.main and log:
                bounds = {}
                if reported and es.name != "train":  # the train probe only gauges overfitting: no interval
                    with self.timer("intervals"):
                        bounds = figure_intervals(results[es.name])
                self.writer.log_eval(self.step, epoch, es.name, results[es.name].values, wise_ft_ratio, bounds)
        if log and wise_ft_ratio is None:
            self.accelerator.log({f"eval/{name}/{k}": v for name, ev in results.items() for k, v in ev.values.items()},
                                 step=self.step)
        return results

    def _checkpoint(self, next_epoch: int, next_batch: int) -> None:
        cfg = self.cfg
        if not (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0):
            return
        if self.main:
            self.writer.flush()  # the metrics a resume keeps must be on disk before the checkpoint
        with self.timer("checkpoint"):
            checkpoints.save(self.accelerator, self.path, self.step,
                             dict(epoch=next_epoch, batch_in_epoch=next_batch, skipped=self.skipped),
                             cfg.keep_checkpoints)

    # ------------------------------------------------------------------ the end

    def _finish(self, first, last) -> None:
        """Final weights, WiSE-FT's mixes, embeddings (val) and per-sample results (val and
        test), FINISHED. `first`, `last`: the evaluations of step 0 and of the end."""
        cfg, model = self.cfg, self.model
        if last is None:  # resumed from the checkpoint of the last step: its evaluation is on disk
            last = self._evaluate(float(cfg.epochs), log=False)
        end_weights = state_of(model, self.changed)
        if self.main:
            run_store.write_final_weights(self.path, end_weights, weights_metadata(cfg, model, self.changed))
        for ratio in cfg.wise_ft_ratios or []:
            load_state(model, interpolate(self.start_weights, end_weights, ratio))
            self._evaluate(float(cfg.epochs), wise_ft_ratio=ratio, stage="wise_ft")
        if cfg.wise_ft_ratios:
            load_state(model, end_weights)
            if self.main:
                self.writer.flush()
        if self.main:
            with self.timer("evaluation"):
                ends = [(first, 0), (last, self.step)] if self.step else [(last, 0)]  # closed form: step 0 only
                self.writer.write_embeddings(pd.concat([embeddings_frame(self.val_view, ev["val"], step)
                                                        for ev, step in ends], ignore_index=True))
                self.writer.write_samples(pd.concat([samples_frame(es.view, last[es.name], self.step, self.thumbnails)
                                                     for es in self.sample_sets], ignore_index=True))
            self.writer.set_status("FINISHED", step=self.step, timings=self.timer.seconds, cache=self.inputs.stats,
                                   train_pairs=len(self.loader.dataset), skipped_steps=self.skipped)
        self.state = "FINISHED"


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
    return load_final_weights(model, run_store.init_from_dir(path, cfg.init_from), cfg.model)


def weights_metadata(cfg: RunConfig, model, names: set[str]) -> dict[str, str]:
    return {"model": cfg.model, "run": cfg.name, "init_from": cfg.init_from or "",
            FROZEN_FINGERPRINT: frozen_fingerprint(model, names)}


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
