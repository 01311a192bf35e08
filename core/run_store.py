"""The run store: the one module that knows how runs are laid out on disk.

    runs/<sweep>/sweep.json              the last invocation: wall time, sweep-level stage times
    runs/<sweep>/results/<table>.parquet the results step's tables (analysis/results.py): every
                                         configuration's figures and every comparison, computed once
    runs/<sweep>/results/inputs.json     the file stamps of the runs they were computed from
    runs/<sweep>/<run>/config.json       resolved configuration + provenance
                       status.json       RUNNING / FINISHED / FAILED / KILLED, pid, heartbeat
                       metrics.parquet   long format: step, epoch, wall_time, name, value
                       eval.parquet      long format: step, epoch, split, metric, value
                       embeddings.parquet  val's images, captions and zero-shot prompts at step 0
                                         and the end: the vector
                       umap.parquet      x/y of step 0's and the end's embeddings in each aligned
                                         map the run is in (a comparison's), fitted after the sweep,
                                         with each sample's floor (UMAP's noise)
                       samples.parquet   per image and per caption: rank, top-k with cosines
                       final_weights.safetensors  the weights the run trained (heads, temperature,
                                         unlocked tower layers), for init_from and WiSE-FT
                       tracker/          --report-to: TensorBoard event files or wandb's run
                       checkpoints/step-00000040/   a complete checkpoint (checkpoint_every)
                       checkpoints/.step-00000050.partial/   one being written: never listed

Training writes through `RunWriter`; the dashboard and the notebook read through
`list_runs`, `load_run` and the `read_*` helpers. Only pandas and pyarrow are imported
here so that readers never pay for torch.

Every file is written atomically and durably (core/atomic.py), so a reader (or a crash)
never sees half a file. Readers treat a run with a missing or unreadable file as damaged
and report it. The columns of each file are the schemas below: README's "Run store"
section lists them for users.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core import atomic

STATES = ("RUNNING", "FINISHED", "FAILED", "KILLED")
INTERRUPTED = "INTERRUPTED"  # shown for a RUNNING run whose process is gone
HEARTBEAT_STALE_S = 300.0  # a live run beats every few seconds; five minutes of silence means gone

SWEEP_SUMMARY = "sweep.json"
RESULTS, RESULTS_INPUTS = "results", "inputs.json"
CONFIG, STATUS = "config.json", "status.json"
METRICS, EVAL = "metrics.parquet", "eval.parquet"
EMBEDDINGS, SAMPLES = "embeddings.parquet", "samples.parquet"
UMAP = "umap.parquet"
FINAL_WEIGHTS = "final_weights.safetensors"
CHECKPOINTS = "checkpoints"
CHECKPOINT_STATE = "trainer_state.json"  # written last into a checkpoint: step, epoch, processes
_CHECKPOINT_NAME = re.compile(r"^step-(\d{8,})$")
TRACKER = "tracker"
REQUIRED_FILES = (CONFIG, STATUS, METRICS, EVAL)
FINISHED_FILES = REQUIRED_FILES + (EMBEDDINGS, SAMPLES)

METRICS_SCHEMA = pa.schema(
    [("step", pa.int64()), ("epoch", pa.float64()), ("wall_time", pa.float64()),
     ("name", pa.string()), ("value", pa.float64())]
)
EVAL_SCHEMA = pa.schema(
    [("step", pa.int64()), ("epoch", pa.float64()), ("split", pa.string()),
     ("metric", pa.string()), ("value", pa.float64()), ("wise_ft_ratio", pa.float64()),
     ("low", pa.float64()), ("high", pa.float64())]  # the value's 95% bootstrap interval; NaN: none computed
)
# Columns added after runs were already written: an older file without them is still whole,
# and readers fill them in with the value that means "none" (NaN: an ordinary evaluation, not
# a WiSE-FT interpolation; no interval; a tie not recorded).
ADDED_COLUMNS = {EVAL: {"wise_ft_ratio": math.nan, "low": math.nan, "high": math.nan},
                 SAMPLES: {"split": "val", "tied": False, "zero_shot_correct": math.nan},
                 UMAP: {"map": "", "floor": math.nan}}
EMBEDDINGS_SCHEMA = pa.schema(
    [("sample_id", pa.string()), ("modality", pa.string()), ("image_id", pa.string()),
     ("caption", pa.string()), ("label", pa.string()), ("split", pa.string()),
     ("step", pa.int64()), ("embedding", pa.list_(pa.float32()))]
)
UMAP_SCHEMA = pa.schema(
    [("sample_id", pa.string()), ("modality", pa.string()), ("step", pa.int64()),
     ("umap_x", pa.float32()), ("umap_y", pa.float32()),
     ("map", pa.string()),  # the aligned map (training/projection.py); "" in older files: the run's own fit
     ("floor", pa.float32())]  # how far the sample moves when the map's reference is refitted: UMAP's noise
)
PROMPT = "prompt"  # embeddings' modality of the zero-shot class prompts (sample_id "prompt:<label>")
SAMPLES_SCHEMA = pa.schema(
    [("modality", pa.string()), ("split", pa.string()), ("sample_id", pa.string()), ("image_id", pa.string()),
     ("caption", pa.string()), ("label", pa.string()), ("step", pa.int64()),
     ("rank", pa.int64()), ("positive_cosine", pa.float32()),
     ("topk_ids", pa.list_(pa.string())), ("topk_scores", pa.list_(pa.float32())),
     ("thumbnail", pa.binary()),
     ("tied", pa.bool_()),  # the true match scores the same as a wrong item (the tie counts against it)
     ("zero_shot_correct", pa.float64())]  # images: 1.0 or 0.0 when the dataset has labels; else NaN
)
SCHEMAS = {METRICS: METRICS_SCHEMA, EVAL: EVAL_SCHEMA, EMBEDDINGS: EMBEDDINGS_SCHEMA,
           SAMPLES: SAMPLES_SCHEMA, UMAP: UMAP_SCHEMA}
# Columns renamed since runs were first written: an older file is read under the new name.
RENAMED_COLUMNS = {SAMPLES: {"kind": "modality"}}


class RunStoreError(Exception):
    """A run folder that cannot be used as asked (unknown, outside the root, conflicting)."""


# ---------------------------------------------------------------------------- writing


def atomic_write_parquet(path: Path, frame: pd.DataFrame, schema: pa.Schema, group_by: str | None = None) -> None:
    """`group_by`: one row group per value of that column, in ascending order, so that a reader
    filtering on it skips the other groups without decoding them."""
    missing = {k: v for k, v in ADDED_COLUMNS.get(path.name, {}).items() if k not in frame.columns}
    frame = frame.assign(**missing)  # a writer that predates an added column writes its "none"
    table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    buffer = pa.BufferOutputStream()
    if group_by is None:
        pq.write_table(table, buffer)
    else:
        with pq.ParquetWriter(buffer, schema) as writer:
            for value in sorted(pc.unique(table[group_by]).to_pylist()):
                writer.write_table(table.filter(pc.equal(table[group_by], value)))
    atomic.write_bytes(path, buffer.getvalue().to_pybytes())


def run_dir(runs_dir: Path | str, sweep: str, name: str) -> Path:
    return Path(runs_dir) / sweep / name


def runs_root(path: Path | str) -> Path:
    """The runs folder that holds the run folder `path` (the inverse of `run_dir`)."""
    return Path(path).resolve().parent.parent


class RunWriter:
    """Writes one run's files. Create it only on the main process."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.path.glob(".*.tmp"):  # a write that a kill cut short; this writer owns the run now
            stale.unlink(missing_ok=True)
        self._metrics: list[dict] = []
        self._eval: list[dict] = []
        self._status: dict = {}
        self.logged_step = 0  # the last step whose metrics are logged (a signal may land between)

    def write_config(self, config: dict) -> None:
        atomic.write_json(self.path / CONFIG, config)

    def set_status(self, state: str, **fields) -> None:
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}; expected one of {STATES}")
        now = time.time()
        if not self._status:
            self._status = {"pid": os.getpid(), "host": socket.gethostname(), "start_time": now,
                            "end_time": None, "error": None, "step": 0}
        self._status.update(fields, state=state, heartbeat=now)
        if state != "RUNNING":
            self._status["end_time"] = now
        atomic.write_json(self.path / STATUS, self._status)

    def heartbeat(self, step: int) -> None:
        self.set_status("RUNNING", step=step)

    def log_metrics(self, step: int, epoch: float, wall_time: float, values: dict) -> None:
        self._metrics += [dict(step=step, epoch=epoch, wall_time=wall_time, name=k, value=float(v))
                          for k, v in values.items()]
        self.logged_step = step

    def log_eval(self, step: int, epoch: float, split: str, values: dict,
                 wise_ft_ratio: float | None = None, intervals: dict | None = None) -> None:
        """One evaluation of `split` (train, val or an extra evaluation set's name); with
        `wise_ft_ratio`, of the weights interpolated that far from the start to the end;
        `intervals`: metric -> (low, high) for the metrics that have one."""
        ratio = math.nan if wise_ft_ratio is None else float(wise_ft_ratio)
        bounds = intervals or {}
        self._eval += [{"step": step, "epoch": epoch, "split": split, "metric": k, "value": float(v),
                        "wise_ft_ratio": ratio, "low": bounds.get(k, (math.nan, math.nan))[0],
                        "high": bounds.get(k, (math.nan, math.nan))[1]} for k, v in values.items()]

    def resume(self, step: int) -> None:
        """Continue a run from its checkpoint at `step`: keep the rows logged up to it and drop
        later ones, which the resumed run logs again (one row per step, never two)."""
        metrics, evals = read_metrics(self.path), read_eval(self.path)  # WiSE-FT rows come after any checkpoint
        self._metrics = metrics[metrics["step"] <= step].to_dict("records")
        self._eval = evals[evals["step"] <= step].to_dict("records")
        self.logged_step = step

    def flush(self) -> None:
        """Rewrite metrics.parquet and eval.parquet with everything logged so far."""
        atomic_write_parquet(self.path / METRICS, _frame(self._metrics, METRICS_SCHEMA), METRICS_SCHEMA)
        atomic_write_parquet(self.path / EVAL, _frame(self._eval, EVAL_SCHEMA), EVAL_SCHEMA)

    def write_embeddings(self, frame: pd.DataFrame) -> None:
        # A row group per evaluated step: readers of the last step skip step 0's vectors.
        atomic_write_parquet(self.path / EMBEDDINGS, frame, EMBEDDINGS_SCHEMA, group_by="step")

    def write_samples(self, frame: pd.DataFrame) -> None:
        atomic_write_parquet(self.path / SAMPLES, frame, SAMPLES_SCHEMA)


def write_umap(path: Path | str, frame: pd.DataFrame) -> None:
    """A finished run's coordinates in one aligned map (sample_id, modality, step, umap_x,
    umap_y, map): replaces that map's rows, keeps the run's rows of its other maps."""
    path = Path(path)
    maps = set(frame["map"]) if "map" in frame.columns else {""}
    kept = read_umap(path)
    kept = kept[~kept["map"].isin(maps)]
    atomic_write_parquet(path / UMAP, pd.concat([kept, frame], ignore_index=True) if len(kept) else frame,
                         UMAP_SCHEMA)


def _frame(rows: list[dict], schema: pa.Schema) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=schema.names)


def final_weights_path(path: Path | str) -> Path:
    return Path(path) / FINAL_WEIGHTS


def write_final_weights(path: Path | str, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """A run's trained tensors (name -> torch tensor) as safetensors, written atomically."""
    # Imported here: safetensors.torch imports torch, which the Parquet readers never pay for.
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic.write_bytes(final_weights_path(path), data)


def read_final_weights(path: Path | str) -> dict:
    """name -> torch tensor of a finished run's trained weights (safetensors: never unpickles)."""
    from safetensors.torch import load_file

    file = final_weights_path(path)
    if not file.exists():
        raise RunStoreError(f"{path} has no {FINAL_WEIGHTS}: the run did not finish, or predates saving them")
    return load_file(file)


def read_final_weights_metadata(path: Path | str) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(final_weights_path(path), framework="pt") as f:
        return dict(f.metadata() or {})


def checkpoint_dir(path: Path | str, step: int) -> Path:
    """Where the complete checkpoint of `step` lives."""
    return Path(path) / CHECKPOINTS / f"step-{step:08d}"


def partial_checkpoint_dir(path: Path | str, step: int) -> Path:
    """Where the checkpoint of `step` is written before it is renamed to `checkpoint_dir`:
    a dot name, so that a half-written checkpoint is never listed as one."""
    return Path(path) / CHECKPOINTS / f".step-{step:08d}.partial"


def discarded_checkpoint_dir(path: Path | str, step: int) -> Path:
    """An old checkpoint is renamed here before it is deleted, so that a half-deleted one is
    never listed either."""
    return Path(path) / CHECKPOINTS / f".step-{step:08d}.discarded"


def list_checkpoints(path: Path | str) -> list[tuple[int, Path]]:
    """(step, folder) of a run's complete checkpoints, oldest first."""
    folder = Path(path) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = _CHECKPOINT_NAME.match(child.name)
        if match and (child / CHECKPOINT_STATE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def unfinished_checkpoint_dirs(path: Path | str) -> list[Path]:
    """Leftovers of a checkpoint write or delete that a kill interrupted."""
    folder = Path(path) / CHECKPOINTS
    return sorted(p for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


def tracker_dir(path: Path | str) -> Path:
    """Where --report-to's tracker (TensorBoard, wandb) writes for this run."""
    return Path(path) / TRACKER


def init_from_dir(path: Path | str, source: str) -> Path:
    """The folder of the run that the run at `path` starts from (its init_from): "<run>" in the
    same sweep, or "<sweep>/<run>" in the same runs folder."""
    path = Path(path)
    key = source if "/" in source else f"{path.parent.name}/{source}"
    sweep, run = _split_run_key(key, f"init_from = {source!r} is not a run name: use \"<run>\" or \"<sweep>/<run>\"")
    return run_dir(path.parent.parent, sweep, run)


def _split_run_key(key: str, error: str) -> tuple[str, str]:
    """(sweep, run) of "<sweep>/<run>"; names that are empty, hidden or climb out are refused."""
    parts = key.split("/")
    if len(parts) != 2 or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise RunStoreError(error)
    return parts[0], parts[1]


def write_sweep_summary(runs_dir: Path | str, sweep: str, summary: dict) -> None:
    """What one train.py invocation did for a sweep: wall time and its sweep-level stages
    (dataset preparation, the shared feature extraction, UMAP), beside the run folders."""
    folder = Path(runs_dir) / sweep
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_json(folder / SWEEP_SUMMARY, summary)


def read_sweep_summary(runs_dir: Path | str, sweep: str) -> dict:
    return _read_json(Path(runs_dir) / sweep / SWEEP_SUMMARY, [])


def write_results(runs_dir: Path | str, sweep: str, tables: dict[str, pd.DataFrame], inputs: dict) -> None:
    """The results step's tables of a sweep, each `<name>.parquet`, and the stamps of the run
    files they were computed from (`inputs`), written last: a reader that finds the stamps
    finds every table of that computation."""
    folder = Path(runs_dir) / sweep / RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RESULTS_INPUTS).unlink(missing_ok=True)
    for name, frame in tables.items():
        buffer = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
        atomic.write_bytes(folder / f"{name}.parquet", buffer.getvalue().to_pybytes())
    atomic.write_json(folder / RESULTS_INPUTS, inputs)


def read_results(runs_dir: Path | str, sweep: str, names: list[str]) -> tuple[dict[str, pd.DataFrame], dict] | None:
    """(tables by name, the inputs they were computed from), or None where the results step has
    not written them all, or one is unreadable (the reader then computes them again)."""
    folder = Path(runs_dir) / sweep / RESULTS
    try:
        inputs = json.loads((folder / RESULTS_INPUTS).read_text())
        return {name: pq.read_table(folder / f"{name}.parquet").to_pandas() for name in names}, inputs
    except (OSError, ValueError, pa.ArrowException):
        return None


def timing(path: Path, stage: str) -> float:
    """A stage's seconds in a run's status (0 when not recorded)."""
    return float((_read_json(Path(path) / STATUS, []).get("timings") or {}).get(stage, 0.0))


def add_timing(path: Path, stage: str, seconds: float) -> None:
    """Add a stage's seconds to a run's status (e.g. UMAP, fitted after the run ended)."""
    status = json.loads((Path(path) / STATUS).read_text())
    status["timings"] = dict(status.get("timings") or {}, **{stage: round(seconds, 3)})
    atomic.write_json(Path(path) / STATUS, status)


# ---------------------------------------------------------------------------- reading


@dataclass
class Run:
    """One run folder as the readers see it."""

    sweep: str
    name: str
    path: Path
    config: dict = field(default_factory=dict)
    status: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.sweep}/{self.name}"

    @property
    def state(self) -> str:
        return display_state(self.status)

    @property
    def damaged(self) -> bool:
        return bool(self.problems)


def display_state(status: dict, now: float | None = None) -> str:
    """The state to show: a RUNNING run whose heartbeat is stale or whose pid is gone is
    INTERRUPTED (it died without a word, e.g. SIGKILL or the OOM killer)."""
    state = status.get("state", "UNKNOWN")
    if state != "RUNNING":
        return state
    now = time.time() if now is None else now
    if now - float(status.get("heartbeat") or 0) > HEARTBEAT_STALE_S:
        return INTERRUPTED
    if status.get("host") == socket.gethostname() and not _pid_alive(status.get("pid")):
        return INTERRUPTED
    return state


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".") and any(
        (path / f).exists() for f in (CONFIG, STATUS, METRICS))


def list_runs(runs_dir: Path | str) -> list[Run]:
    """Every run folder under runs_dir (two levels: sweep/run), read and checked.

    Folders that hold none of the run files are not runs and are left out; runs with a
    missing or unreadable file are returned with `problems` filled in."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    runs = []
    for sweep in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(p for p in sweep.iterdir() if _is_run_dir(p)):
            if not _inside(path, root):
                continue
            runs.append(load_run(path, root))
    return runs


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def resolve_run(runs_dir: Path | str, key: str) -> Path:
    """The folder of run "<sweep>/<run>", refusing names that leave runs_dir."""
    root = Path(runs_dir)
    sweep, run = _split_run_key(key, f"{key!r} is not a run name of the form <sweep>/<run>")
    path = root / sweep / run
    if not _inside(path, root):
        raise RunStoreError(f"run {key!r} points outside the runs folder {root}")
    if not _is_run_dir(path):
        raise RunStoreError(f"no run {key!r} under {root}; list them with: ls {root}/*")
    return path


def load_run(path: Path | str, root: Path | str | None = None) -> Run:
    path = Path(path)
    root = Path(root) if root is not None else path.parent.parent
    run = Run(sweep=path.parent.name, name=path.name, path=path)
    run.config = _read_json(path / CONFIG, run.problems)
    run.status = _read_json(path / STATUS, run.problems)
    if run.status and run.status.get("state") not in STATES:
        run.problems.append(f"{STATUS}: unknown state {run.status.get('state')!r}")
    needed = FINISHED_FILES if run.status.get("state") == "FINISHED" else REQUIRED_FILES
    for name in needed:
        if name in (CONFIG, STATUS):
            continue
        problem = _parquet_problem(path / name)
        if problem:
            run.problems.append(problem)
    return run


def _read_json(path: Path, problems: list[str]) -> dict:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        problems.append(f"{path.name} is missing")
        return {}
    except (OSError, ValueError) as e:
        problems.append(f"{path.name} is unreadable ({e.__class__.__name__})")
        return {}
    if not isinstance(value, dict):
        problems.append(f"{path.name} does not hold an object")
        return {}
    return value


def _parquet_problem(path: Path) -> str | None:
    if not path.exists():
        return f"{path.name} is missing"
    try:
        schema = pq.read_schema(path)
    except Exception as e:  # pyarrow raises several types for truncated or foreign files
        return f"{path.name} is unreadable ({e.__class__.__name__})"
    expected = SCHEMAS[path.name].names
    renamed = RENAMED_COLUMNS.get(path.name, {})
    present = {renamed.get(c, c) for c in schema.names}
    missing = [c for c in expected if c not in present and c not in ADDED_COLUMNS.get(path.name, ())]
    if missing:
        return f"{path.name} lacks column(s) {', '.join(missing)}"
    return None


def _read_parquet(path: Path, schema: pa.Schema, columns: list[str] | None = None, filters=None) -> pd.DataFrame:
    """A run file as a frame with the contract's columns (an older file's renamed columns
    under their new names), or an empty frame if unreadable."""
    renamed = RENAMED_COLUMNS.get(path.name, {})
    try:
        present = pq.read_schema(path).names
        old_names = {new: old for old, new in renamed.items() if old in present}
        wanted = None if columns is None else [old_names.get(c, c) for c in columns]
        present_wanted = None if wanted is None else [c for c in wanted if c in present]
        frame = pq.read_table(path, columns=present_wanted, filters=filters).to_pandas()
    except Exception:
        names = columns or schema.names
        return pd.DataFrame({n: pd.Series(dtype=schema.field(n).type.to_pandas_dtype()) for n in names})
    frame = frame.rename(columns=renamed)
    for name, missing in ADDED_COLUMNS.get(path.name, {}).items():  # written before the column existed
        if name not in frame.columns and (columns is None or name in columns):
            frame[name] = missing
    return frame


def read_metrics(path: Path | str) -> pd.DataFrame:
    return _read_parquet(Path(path) / METRICS, METRICS_SCHEMA)


def read_eval(path: Path | str, wise_ft: bool = False) -> pd.DataFrame:
    """A run's evaluations: the ordinary ones (step 0, every eval_every epochs, the end), or
    with `wise_ft` only the WiSE-FT rows (the end of training, one per mixing ratio)."""
    frame = _read_parquet(Path(path) / EVAL, EVAL_SCHEMA)
    wise = frame["wise_ft_ratio"].notna()
    return frame[wise if wise_ft else ~wise].reset_index(drop=True)[EVAL_SCHEMA.names]


def read_embeddings(path: Path | str, with_vectors: bool = True, last_step: bool = False,
                    prompts: bool = False) -> pd.DataFrame:
    """A run's image and caption embeddings at every evaluated step, or with `last_step` only at
    its last one; `prompts` adds the zero-shot class prompts' rows (modality "prompt")."""
    file = Path(path) / EMBEDDINGS
    cols = None if with_vectors else [n for n in EMBEDDINGS_SCHEMA.names if n != "embedding"]
    frame = _read_parquet(file, EMBEDDINGS_SCHEMA, cols, filters=_last_step_filter(file) if last_step else None)
    if not prompts:
        frame = frame[frame["modality"] != PROMPT].reset_index(drop=True)
    return frame


def read_last_vectors(path: Path | str):
    """The last evaluated step's embedding rows (without the vector column) and their vectors as
    one float32 matrix (None when there are no rows)."""
    import numpy as np

    last = read_embeddings(path, last_step=True)
    vectors = np.stack(last.pop("embedding").to_numpy()).astype(np.float32) if len(last) else None
    return last, vectors


def _last_step_filter(file: Path) -> list | None:
    """[("step", "==", last step)] from the row groups' statistics (no column is read), or
    None when the file has no rows or cannot be read."""
    try:
        meta = pq.ParquetFile(file).metadata
        column = meta.schema.names.index("step")
        stats = [meta.row_group(g).column(column).statistics for g in range(meta.num_row_groups)]
        maxima = [s.max for s in stats if s is not None and s.has_min_max]
        if len(maxima) < meta.num_row_groups:  # a group without statistics: read the column
            maxima = [pq.read_table(file, columns=["step"]).column("step").to_pandas().max()]
    except Exception:
        return None
    return [("step", "==", int(max(maxima)))] if maxima and meta.num_rows else None


def read_samples(path: Path | str, columns: list[str] | None = None) -> pd.DataFrame:
    """A run's per-sample results; `columns` reads only those (thumbnails and top-k lists are most of the file)."""
    return _read_parquet(Path(path) / SAMPLES, SAMPLES_SCHEMA, columns)


def read_umap(path: Path | str, map_name: str | None = None) -> pd.DataFrame:
    """A run's coordinates in every map it is in, or in `map_name` only (empty until the sweep's
    fits have run)."""
    frame = _read_parquet(Path(path) / UMAP, UMAP_SCHEMA)
    return frame if map_name is None else frame[frame["map"] == map_name].reset_index(drop=True)


def umap_maps(path: Path | str) -> list[str]:
    """The aligned maps a run has coordinates in ("" for an older file's own fit)."""
    file = Path(path) / UMAP
    if not file.exists():
        return []
    return sorted(set(_read_parquet(file, UMAP_SCHEMA, ["map"])["map"]))


def file_stamp(path: Path | str, names: tuple[str, ...] = (CONFIG, STATUS, METRICS, EVAL, EMBEDDINGS, SAMPLES, UMAP)
               ) -> tuple:
    """(mtime, size) of every run file (or of `names`): a cache key that changes when any file
    is rewritten."""
    path = Path(path)
    stamp = []
    for name in names:
        try:
            st = (path / name).stat()
            stamp.append((name, st.st_mtime_ns, st.st_size))
        except OSError:
            stamp.append((name, None, None))
    return tuple(stamp)


def remove_maps(path: Path | str) -> None:
    """Drop a run's map coordinates: a run trained again has new embeddings, so every map it is
    in is fitted again (training/projection.py refits a map any of whose runs lacks it)."""
    (Path(path) / UMAP).unlink(missing_ok=True)


def has_umap(path: Path | str) -> bool:
    """Whether the run has coordinates in some map."""
    return (Path(path) / UMAP).exists()


def has_embeddings(path: Path | str) -> bool:
    """Whether the run wrote embeddings with rows in them (an unreadable file: no)."""
    try:
        return pq.ParquetFile(Path(path) / EMBEDDINGS).metadata.num_rows > 0
    except Exception:  # unreadable: the run is shown as damaged, and there is nothing to fit
        return False
