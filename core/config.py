"""Configuration as data: one frozen `RunConfig` per run, and sweep files that list runs as
overrides of a base.

A sweep file (TOML):

    name = "default"                # runs go to runs/<name>/<run>/
    [base]                          # every run starts from these values
    epochs = 10
    [runs.heads-only]               # one run: overrides of the base
    [runs.text-unlocked]
    unlock_text = -1
    [grids.lr]                      # a grid: one run per combination of the lists
    lr = [3e-4, 1e-3, 3e-3]

A comparison names what it measures: runs that differ from their reference in the named
factor alone (checked when the sweep is read, seeds included):

    [comparisons.learning-rate]
    reference = "heads-only"
    runs = ["lr-3e-4", "lr-3e-3"]
    factor = ["lr"]                 # the keys that may differ; any other difference is an error

`seeds = [0, 1, 2]` in [base] or in a run (or `--seeds N` on the command line) trains each
configuration once per seed: replicates, each its own run folder `<run>.s<seed>`, all with
`group = "<run>"`, so that readers compare configurations with seed-to-seed variation counted.

Every key is validated when the config is built, so a typo fails before any run starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import re
import tomllib
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path

SWEEPS_DIR = Path(__file__).resolve().parents[1] / "training" / "sweeps"  # the sweep files are training's
DEFAULT_SWEEP = SWEEPS_DIR / "default.toml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class ConfigError(ValueError):
    """A sweep or an override that cannot become a valid RunConfig."""


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    data: str = "openmoji"  # a prepared dataset under data/, or a path to one
    model: str = "offline-default"  # 'offline-default', 'tiny-clip', a hub id or a saved folder
    image_size: int = 224  # EfficientNet-Lite0's native size; 128 px costs a few points of R@1
    embed_dim: int = 512  # shared space, CLIP ViT-B's size; 256 was a point or two worse here
    head: str = "linear"  # 'linear' as in CLIP/LiT, or 'mlp'
    unlock_image: int = 0  # image tower blocks trained from the top: 0 locked, -1 all
    unlock_text: int = 0  # text tower layers trained from the top: 0 locked, -1 all
    epochs: int = 20  # heads on cached features: an epoch costs well under a second
    batch_size: int = 128  # negatives per step; CLIP used 32k, but 3k pairs want more steps
    accum_steps: int = 1  # split each batch into this many micro-batches to save memory; same result
    lr: float = 1e-3  # heads and temperature; fresh weights tolerate a high rate
    tower_lr: float = 1e-5  # unlocked pretrained layers: small, or they forget
    weight_decay: float = 0.1  # on weight matrices only, as open_clip does
    warmup_steps: int = 10  # a few steps so the fresh heads do not start with a jolt
    schedule: str = "cosine"  # 'cosine' decay after warmup, or 'constant'
    beta1: float = 0.9
    beta2: float = 0.98  # CLIP's betas and eps for stable contrastive training
    eps: float = 1e-6
    learn_temperature: bool = True  # CLIP learns it; False keeps init_temperature fixed
    init_temperature: float | None = None  # None: the checkpoint's own, or 0.07 (CLIP's init)
    data_fraction: float = 1.0  # seeded share of the training images used
    max_text_len: int = 32  # captions pad to the longest in the batch, capped here
    precision: str = "no"  # 'no' (fp32), 'bf16', 'fp16' through Accelerate, or 'auto': bf16 where the
    #   hardware computes it natively (a bf16 GPU; a CPU with AMX or AVX512-BF16), else fp32; sweep-wide
    on_nan: str = "stop"  # a NaN/inf loss: 'stop' the run (FAILED, naming the step) or 'skip' the batch
    eval_every: int = 1  # evaluate every N epochs (step 0 and the last epoch always)
    prompt_template: str = "a photo of a {}."  # zero-shot prompt per label
    top_k: int = 5  # captions and images kept per sample in samples.parquet
    num_workers: int = 0  # loader processes; features are cached, so decoding is rare
    checkpoint_every: int = 0  # steps between checkpoints for --resume; 0 off: runs here take minutes
    keep_checkpoints: int = 2  # the newest K kept: the last, and one more should a kill corrupt a file
    group_by_length: bool = False  # batches of captions of similar length: less padding, faster text
    #   tower; negatives then share a length, a mild bias, so off unless speed matters
    compile: bool = False  # torch.compile the towers: faster GPU steps after a minute of compiling
    compile_mode: str = "default"  # torch.compile's mode: 'default', 'reduce-overhead' (CUDA graphs: fewer
    #   launches for a launch-bound step), 'max-autotune' or 'max-autotune-no-cudagraphs'
    pad_multiple: int = 1  # captions pad to the batch's longest rounded up to a multiple of this (capped at
    #   max_text_len): a few distinct widths, as CUDA graphs and compiled kernels want; 1 adds no padding
    seed: int = 0  # the run's randomness: head initialisation (and tiny-clip's towers), the order of the
    #   batches, and which images data_fraction keeps. The subset follows the seed on purpose: a claim
    #   about "a quarter of the data" should hold for any quarter, so seed-to-seed variation includes it
    group: str = ""  # the configuration this run replicates (its name without the seed); "": the run's name
    closed_form: str = ""  # "": train the heads contrastively; "cca" or "least_squares": fit them in closed form
    #   on the locked towers' features, no training (training/closed_form.py): the baseline training must beat
    # Forgetting (see the two-stage example in sweeps/default.toml):
    include_labels: list[str] | None = None  # train and validate only on rows with these labels; None: all
    exclude_labels: list[str] | None = None  # drop rows with these labels from training and validation
    init_from: str | None = None  # start from a finished run's final weights: "<run>" (this sweep) or "<sweep>/<run>"
    extra_evals: list[dict] | None = None  # more evaluation sets, evaluated with train and val (step 0, the end):
    #   {name, data (default: this run's), split (default "val"), include_labels, exclude_labels}
    wise_ft_ratios: list[float] | None = None  # at the end, evaluate (1-a)*start + a*end weights per ratio a

    def __post_init__(self):
        _check_types(self)
        object.__setattr__(self, "extra_evals", _normalise_extra_evals(self))
        checks = [
            (bool(_NAME.match(self.name)), "name must be letters, digits, and _ . = + -"),
            (self.image_size >= 16, "image_size must be at least 16"),
            (self.embed_dim > 0, "embed_dim must be positive"),
            (self.head in ("linear", "mlp"), "head must be 'linear' or 'mlp'"),
            (self.unlock_image >= -1 and self.unlock_text >= -1, "unlock_* must be -1, 0 or a count"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 2, "batch_size must be at least 2 (a contrastive batch needs negatives)"),
            (self.accum_steps >= 1 and self.batch_size % self.accum_steps == 0,
             "accum_steps must be at least 1 and divide batch_size"),
            (self.lr > 0 and self.tower_lr >= 0, "lr must be positive and tower_lr non-negative"),
            (self.weight_decay >= 0, "weight_decay must be non-negative"),
            (self.warmup_steps >= 0, "warmup_steps must be non-negative"),
            (self.schedule in ("cosine", "constant"), "schedule must be 'cosine' or 'constant'"),
            (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.eps > 0, "bad AdamW betas/eps"),
            (self.init_temperature is None or 0.01 <= self.init_temperature <= 10,
             "init_temperature must be between 0.01 and 10 (CLIP clamps at 0.01)"),
            (0 < self.data_fraction <= 1, "data_fraction must be in (0, 1]"),
            (self.max_text_len >= 4, "max_text_len must be at least 4"),
            (self.precision in ("no", "bf16", "fp16", "auto"),
             "precision must be 'no', 'bf16', 'fp16' or 'auto'"),
            (self.eval_every >= 1, "eval_every must be at least 1"),
            (self.on_nan in ("stop", "skip"), "on_nan must be 'stop' or 'skip'"),
            ("{}" in self.prompt_template, "prompt_template must contain {} for the label"),
            (self.top_k >= 1, "top_k must be at least 1"),
            (self.num_workers >= 0, "num_workers must be non-negative"),
            (self.init_from is None or self.init_from.strip("/") not in ("", self.name),
             "init_from must name another run"),
            (all(0 <= r <= 1 for r in self.wise_ft_ratios or []), "wise_ft_ratios must lie in [0, 1]"),
            (self.checkpoint_every >= 0, "checkpoint_every must be non-negative (0 turns checkpoints off)"),
            (self.keep_checkpoints >= 1, "keep_checkpoints must be at least 1"),
            (self.compile_mode in COMPILE_MODES,
             f"compile_mode must be one of {', '.join(repr(m) for m in COMPILE_MODES)}"),
            (self.pad_multiple >= 1, "pad_multiple must be at least 1 (1 pads to the longest caption only)"),
            (self.closed_form in ("", "cca", "least_squares"), "closed_form must be '', 'cca' or 'least_squares'"),
            (not self.closed_form or (self.unlock_image == self.unlock_text == 0 and self.head == "linear"),
             "closed_form fits linear heads on locked towers: unlock_image = unlock_text = 0, head = 'linear'"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"run {self.name!r}: {message}")
        check_label_subset(self.include_labels, self.exclude_labels, f"run {self.name!r}")

        if not self.group:
            object.__setattr__(self, "group", self.name)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_saved(cls, config: dict) -> RunConfig:
        """The RunConfig of a run's config.json, which also carries provenance and versions."""
        return cls(**{k: v for k, v in config.items() if k in FIELDS})


FIELDS = {f.name: f for f in fields(RunConfig)}
SWEEP_WIDE = ("precision",)  # one Accelerator serves the whole sweep
SEEDS = "seeds"  # a sweep key, not a RunConfig field: each of its seeds becomes a run of its own
LABELS = ("name", "group")  # what a run is called, not how it trains: never a reason to retrain


def _allowed_types(annotation) -> tuple[type, ...]:
    hint = typing.get_type_hints(RunConfig)[annotation]
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return tuple(type(None) if a is type(None) else a for a in args)


def _check_list(cfg: RunConfig, name: str, hint) -> None:
    """A list-valued key: a list whose items all have the declared type (ints pass as floats)."""
    value, item = getattr(cfg, name), typing.get_args(hint)[0]
    if not isinstance(value, list) or not all(isinstance(v, item) or (item is float and type(v) is int)
                                              for v in value):
        raise ConfigError(f"config key {name!r} must be a list of {item.__name__}, or null; got {value!r}")
    if item is float:
        object.__setattr__(cfg, name, [float(v) for v in value])


def _check_types(cfg: RunConfig) -> None:
    for name in FIELDS:
        value, allowed = getattr(cfg, name), _allowed_types(name)
        lists = [a for a in allowed if typing.get_origin(a) is list]
        if lists:
            if value is not None:
                _check_list(cfg, name, lists[0])
            continue
        if float in allowed and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(cfg, name, float(value))
            continue
        bad_bool = isinstance(value, bool) and bool not in allowed
        if bad_bool or not isinstance(value, allowed):
            want = " or ".join("null" if a is type(None) else a.__name__ for a in allowed)
            raise ConfigError(f"config key {name!r} must be {want}, got {value!r}")


def check_label_subset(include: list | None, exclude: list | None, where: str) -> None:
    """One rule for a run's labels and an extra evaluation set's: each is null or a non-empty
    list of label strings (null, not [], means no filter), and at most one is set."""
    for key, value in (("include_labels", include), ("exclude_labels", exclude)):
        if value is not None and not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{where}: {key} must be a non-empty list of label strings, or null for no filter; "
                              f"got {value!r}")
    if include is not None and exclude is not None:
        raise ConfigError(f"{where}: set include_labels or exclude_labels, not both")


EXTRA_EVAL_KEYS = ("name", "data", "split", "include_labels", "exclude_labels")


def _normalise_extra_evals(cfg: RunConfig) -> list[dict] | None:
    """Each extra evaluation set with every key filled in (the saved config shows them all)."""
    if cfg.extra_evals is None:
        return None
    out = []
    for i, spec in enumerate(cfg.extra_evals):
        where = f"run {cfg.name!r}: extra_evals[{i}]"
        unknown = set(spec) - set(EXTRA_EVAL_KEYS)
        if unknown:
            raise ConfigError(f"{where} has unknown key(s) {sorted(unknown)}; known: {', '.join(EXTRA_EVAL_KEYS)}")
        full = {"data": cfg.data, "split": "val", "include_labels": None, "exclude_labels": None, **spec}
        name = full.get("name")
        if not isinstance(name, str) or not _NAME.match(name) or name in ("train", "val", "test"):
            raise ConfigError(f"{where} needs a name (letters, digits, _ . = + -) other than 'train', 'val' "
                              f"and 'test', got {name!r}: it becomes the split column of eval.parquet")
        if not isinstance(full["data"], str) or not isinstance(full["split"], str):
            raise ConfigError(f"{where}: data and split must be strings")
        check_label_subset(full["include_labels"], full["exclude_labels"], where)
        out.append({k: full[k] for k in EXTRA_EVAL_KEYS})
    names = [e["name"] for e in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"run {cfg.name!r}: extra_evals names a set twice: {names}")
    return out


def check_keys(overrides: dict, where: str) -> None:
    known = [k for k in FIELDS if k not in LABELS] + [SEEDS]
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config key {key!r} in {where}{hint} Known keys: {', '.join(known)}")


def parse_set(items: list[str]) -> dict:
    """--set key=value pairs; values are read as TOML (numbers, booleans, strings)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key.strip()] = value
    check_keys(out, "--set")
    return out


@dataclass(frozen=True)
class Comparison:
    """One factor's effect: each of `runs` against `reference`, differing from it only in the
    keys of `factor` (configurations: the names of the sweep file, before seeds)."""

    name: str
    reference: str
    runs: tuple[str, ...]
    factor: tuple[str, ...]
    note: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Sweep:
    name: str
    source: str
    runs: tuple[RunConfig, ...]
    comparisons: tuple[Comparison, ...] = ()

    def group(self, name: str) -> list[RunConfig]:
        """The runs (one per seed) of configuration `name`."""
        return [c for c in self.runs if c.group == name]


def one_factor_differences(reference: RunConfig, run: RunConfig) -> dict[str, tuple]:
    """key -> (reference's value, run's value) for every training setting in which the two
    configurations differ (labels and the seed aside: replicates are compared by seed set)."""
    a, b = reference.to_dict(), run.to_dict()
    return {k: (a[k], b[k]) for k in a if k not in LABELS + ("seed",) and a[k] != b[k]}


def check_comparison(sweep: Sweep, comparison: Comparison, where: str) -> None:
    """Each run differs from the reference in the comparison's factor and in nothing else, and
    both are trained with the same seeds: otherwise the comparison changes two things at once."""
    ref = sweep.group(comparison.reference)
    for name in comparison.runs:
        group = sweep.group(name)
        extra = sorted(set(one_factor_differences(ref[0], group[0])) - set(comparison.factor))
        if extra:
            raise ConfigError(f"{where}: run {name!r} differs from its reference {comparison.reference!r} in "
                              f"{', '.join(extra)} besides the factor {list(comparison.factor)}: a comparison "
                              f"changes one thing at a time")
        if not one_factor_differences(ref[0], group[0]):
            raise ConfigError(f"{where}: run {name!r} is the same configuration as {comparison.reference!r}")
        seeds = ({c.seed for c in ref}, {c.seed for c in group})
        if seeds[0] != seeds[1]:
            raise ConfigError(f"{where}: run {name!r} has seeds {sorted(seeds[1])} and its reference "
                              f"{sorted(seeds[0])}: compare configurations over the same seeds")


def read_comparisons(spec: dict, sweep: Sweep, path: Path) -> tuple[Comparison, ...]:
    """The sweep file's [comparisons.*], checked; those with a member outside the sweep (left
    out by --only) are dropped, since they cannot be made."""
    groups = {c.group for c in sweep.runs}
    out = []
    for name, table in spec.get("comparisons", {}).items():
        where = f"[comparisons.{name}] of {path}"
        unknown = set(table) - {"reference", "runs", "factor", "note"}
        missing = {"reference", "runs", "factor"} - set(table)
        if unknown or missing:
            raise ConfigError(f"{where}: expected keys reference, runs, factor (and note); "
                              f"unknown {sorted(unknown)}, missing {sorted(missing)}")
        factor = tuple(table["factor"])
        check_keys(dict.fromkeys(factor), where)
        comparison = Comparison(name, table["reference"], tuple(table["runs"]), factor, table.get("note", ""))
        if not {comparison.reference, *comparison.runs} <= groups:
            continue
        check_comparison(sweep, comparison, where)
        out.append(comparison)
    return tuple(out)


def expand_grid(name: str, grid: dict, where: str) -> list[tuple[str, dict]]:
    check_keys(grid, where)
    keys = list(grid)
    lists = [v if isinstance(v, list) else [v] for v in grid.values()]
    runs = []
    for combo in itertools.product(*lists):
        label = "-".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in zip(keys, combo))
        runs.append((f"{name}-{label}", dict(zip(keys, combo))))
    return runs


def check_seeds(seeds, where: str) -> list[int]:
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise ConfigError(f"seeds in {where} must be a list of distinct non-negative integers, got {seeds!r}")
    return seeds


def replicate(named: list[tuple[str, dict]], base_seeds: list[int] | None) -> list[tuple[str, dict]]:
    """Each configuration once per seed, named <run>.s<seed> and grouped under <run>. A
    replicate that starts from another seeded run of the sweep (init_from) starts from that
    run's replicate of the same seed."""
    seeds_of = {n: r.get(SEEDS, base_seeds) for n, r in named}
    out = []
    for name, run in named:
        seeds = seeds_of[name]
        settings = {k: v for k, v in run.items() if k != SEEDS}
        if seeds is None:
            out.append((name, settings))
            continue
        source = settings.get("init_from")
        for seed in seeds:
            replica = dict(settings, seed=seed, group=name)
            if source in seeds_of and seeds_of[source] is not None:
                if seed not in seeds_of[source]:
                    raise ConfigError(f"run {name!r} seed {seed} starts from {source!r} (init_from), which has no "
                                      f"seed {seed}: give both runs the same seeds")
                replica["init_from"] = f"{source}.s{seed}"
            out.append((f"{name}.s{seed}", replica))
    return out


def load_sweep(path: Path | str = DEFAULT_SWEEP, overrides: dict | None = None,
               only: list[str] | None = None, seeds: list[int] | None = None) -> Sweep:
    """Read a sweep file and build every run's validated config (overrides apply to all;
    `seeds`, --seeds, replaces every run's seeds)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"sweep file {path} does not exist; sweeps that ship: "
                          f"{', '.join(str(p) for p in sorted(SWEEPS_DIR.glob('*.toml')))}")
    try:
        spec = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"sweep file {path} is not valid TOML: {e}") from e
    unknown = set(spec) - {"name", "base", "runs", "grids", "comparisons"}
    if unknown:
        raise ConfigError(f"sweep file {path}: unknown section(s) {sorted(unknown)}; "
                          f"expected name, [base], [runs.*], [grids.*], [comparisons.*]")
    base = dict(spec.get("base", {}))
    check_keys(base, f"[base] of {path}")
    base_seeds = check_seeds(base.pop(SEEDS), f"[base] of {path}") if SEEDS in base else None
    overrides = overrides or {}
    named: list[tuple[str, dict]] = []
    for run_name, run in spec.get("runs", {}).items():
        check_keys(run, f"[runs.{run_name}] of {path}")
        if SEEDS in run:
            check_seeds(run[SEEDS], f"[runs.{run_name}] of {path}")
        named.append((run_name, run))
    for grid_name, grid in spec.get("grids", {}).items():
        named += expand_grid(grid_name, grid, f"[grids.{grid_name}] of {path}")
    if not named:
        raise ConfigError(f"sweep file {path} defines no runs: add [runs.NAME] or [grids.NAME]")
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise ConfigError(f"sweep file {path} names a run twice: {sorted({n for n in names if names.count(n) > 1})}")
    for key in SWEEP_WIDE:
        if any(key in r for _, r in named):
            raise ConfigError(f"{key!r} is sweep-wide: set it in [base] or with --set, not per run")
    if only:
        missing = sorted(set(only) - set(names))
        if missing:
            raise ConfigError(f"--only names unknown run(s) {missing}; this sweep has {names}")
    if seeds is not None:
        named = [(n, dict(r, seeds=check_seeds(seeds, "--seeds"))) for n, r in named]
    if SEEDS in overrides:
        raise ConfigError("seeds is not a --set key: use --seeds N")
    # Every configuration is replicated before --only picks some, so that a seeded init_from
    # whose source is left out still starts from the source's replicate of the same seed.
    replicas = [(n, r) for n, r in replicate(named, base_seeds) if not only or r.get("group", n) in only]
    runs = tuple(RunConfig(**{**base, **run, **overrides, "name": n}) for n, run in replicas)
    sweep = Sweep(name=str(spec.get("name", path.stem)), source=str(path), runs=runs)
    return dataclasses.replace(sweep, comparisons=read_comparisons(spec, sweep, path))


def changed_keys(saved: dict, cfg: RunConfig) -> list[str]:
    """Keys in which a run's saved config.json differs from `cfg`; a key the saved config lacks
    was written before the key existed, so that run used the key's default."""
    return [k for k, v in cfg.to_dict().items() if k not in LABELS and saved.get(k, FIELDS[k].default) != v]


def differing_keys(configs: list[dict]) -> list[str]:
    """Config keys whose value is not the same in every run (what a comparison should show)."""
    keys = [k for k in FIELDS if k not in LABELS]
    return [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]


def config_diff(a: dict, b: dict) -> dict[str, tuple]:
    """The training settings whose values differ between two configs: key -> (in a, in b)."""
    return {k: (a.get(k), b.get(k)) for k in differing_keys([a, b]) if k != "seed"}


def setting(value) -> str:
    """A config value as a table shows it: 2e-05, not the 0.0 of a fixed precision."""
    return f"{value:g}" if isinstance(value, float) else "-" if value is None else str(value)


def changes(a: dict, b: dict) -> str:
    """What turns config `a` into config `b`, as "lr 0.001 → 0.0003, ..." (an unset value: "default")."""
    return ", ".join(f"{k} {'default' if x is None else setting(x)} → {'default' if y is None else setting(y)}"
                     for k, (x, y) in config_diff(a, b).items())


def closest_to_all(configs: dict[str, dict]) -> str:
    """The configuration whose config differs least from all the others' (the first one on a
    tie): the reference of a sweep that names no comparisons."""
    return min(configs, key=lambda n: sum(len(config_diff(configs[n], c)) for c in configs.values()))
