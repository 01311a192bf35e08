"""What a call of train.py will train, decided before any run starts (and what --dry-run shows): which runs of the
sweep are done, which conflict with what is on disk, the order that init_from needs, the
checkpoint each resumed run continues from, and whether every label subset selects data.
Everything here fails with a ConfigError that names the fix, before any run has started.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core import run_store
from core.config import ConfigError, RunConfig, Sweep, changed_keys, one_factor_differences
from data.manifest import load_manifest
from training import checkpoints
from training.evaluate import select
from training.pairs import Pairs


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
                                      ("--model", args.model), ("--seeds", args.seeds)) if value]
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


def comparisons_frame(sweep: Sweep) -> pd.DataFrame:
    """One row per run of each comparison: its reference, the factor's values, and the seeds."""
    rows = []
    for comparison in sweep.comparisons:
        reference = sweep.group(comparison.reference)
        for name in comparison.runs:
            group = sweep.group(name)
            differs = one_factor_differences(reference[0], group[0])
            rows.append(dict(comparison=comparison.name, run=name, reference=comparison.reference,
                             factor="; ".join(f"{k}: {a} -> {b}" for k, (a, b) in differs.items()),
                             seeds=",".join(str(c.seed) for c in group)))
    return pd.DataFrame(rows, columns=["comparison", "run", "reference", "factor", "seeds"])


def runs_frame(sweep: Sweep) -> tuple[pd.DataFrame, dict]:
    """(one row per run: its group and seed, and the settings in which the sweep's runs differ;
    the settings every run shares)."""
    frame = pd.DataFrame([c.to_dict() for c in sweep.runs]).set_index("name")
    varying = [k for k in frame.columns if frame[k].astype(str).nunique() > 1 and k not in ("group", "seed")]
    shared = {k: frame[k].iloc[0] for k in frame.columns if k not in varying and k not in ("group", "seed")}
    return frame[["group", "seed", *varying]], shared
