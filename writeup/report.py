"""The write-up's plumbing (writeup.ipynb): one sweep's runs read once and grouped into
configurations, the sweep's comparisons read from the results step's tables, figures formatted
for its sentences, and charts and figures shown as PNG.

The sentences that state what these return live in writeup/narrative.py, so that the
notebook's cells stay a few lines each. Every claim that one configuration is better than
another comes from the results step (analysis/results.py: an interval, and a verdict that
names a direction only where it excludes 0, and the adjusted one), on the test split where
both sides have one: the numbers the dashboard's Compare view shows. Torch-free like the
results layer; it also imports IPython, matplotlib and vl-convert to show what it computes,
which is why the dashboard does not import it.

    from writeup import report
    sweep = report.load_sweep("runs")
    report.effects(sweep)          # one row per comparison, run and metric, with its interval
"""

from __future__ import annotations

import ast
import functools
import io
import json
import math
import subprocess
import sys
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import vl_convert
from IPython.display import Image, Markdown, display
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from matplotlib.patches import Rectangle
from PIL import Image as PILImage
from scipy import stats as scipy_stats

import charts
from analysis import results
from analysis.compare import SAMPLE_COLUMNS, validation
from analysis.maps import gap_probe, gap_table, map_points, run_drift, run_spaces, runs_drift, shares_space
from analysis.runs import (
    NO_LABEL,
    band_rows,
    cosine_matrix,
    final_figures,
    forgetting_frame,
    group_table,
    interval_cells,
    label_list,
    smooth,
    stack,
)
from core import run_store, stats
from core.config import DEFAULT_SWEEP, changes, setting
from core.names import OUTCOMES, RECALL_AT_K, label
from data.manifest import REPORT, dataset_dir, file_digest, load_manifest

ROOT = Path(__file__).resolve().parents[1]
# What each built-in model is; any other name is a Hugging Face CLIP checkpoint.
MODELS = {
    "offline-default": "image tower: EfficientNet-Lite0 with ImageNet weights (1280-d features); text tower: "
                       "all-MiniLM-L6-v2 sentence encoder (6 transformer layers, mean-pooled 384-d features)",
    "tiny-clip": "a tiny, randomly initialised CLIP (for tests: its towers know nothing before training)",
}
EFFECT_METRICS = ["i2t_R@1", "t2i_R@1", "zero_shot_accuracy"]  # the effects the write-up reports
FIGURE_METRICS = [*RECALL_AT_K, "zero_shot_accuracy"]
# Greys for what is not a configuration (outcomes, modalities, measures, data): the sweep's
# configuration colours (charts.group_colors) mean configurations and nothing else.
NEUTRAL = ["#444444", "#8c8c8c", "#c4c4c4"]
EFFECT_COLUMNS = ["comparison", "reference", "run", "changes", "split", "interval", "metric", "a", "b", "difference",
                  "low", "high", "seed_sd", "image_se", "verdict"]

# Altair and pandas speak up about things the write-up does on purpose (concatenated charts,
# frames with NaN); their warnings would be noise among the results.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning, module="altair")


# ------------------------------------------------------------------ showing results


def say(text: str) -> None:
    """Show a sentence or paragraph computed from the runs as Markdown."""
    display(Markdown(text))


def show(chart, scale: float = 1.3) -> None:
    """Show an Altair chart or a matplotlib figure as a PNG, so that it shows wherever the
    notebook is viewed (GitHub and nbviewer run no JavaScript)."""
    if isinstance(chart, Figure):
        png = io.BytesIO()
        chart.savefig(png, format="png", dpi=100, bbox_inches="tight")
        display(Image(png.getvalue()))
    else:
        display(Image(vl_convert.vegalite_to_png(chart.to_json(), scale=scale)))


def num(x, digits: int = 3) -> str:
    """A figure for a sentence, to `digits` significant digits; "NaN" where it is missing."""
    return "NaN" if _missing(x) else f"{x:.{digits}g}"


def pct(x) -> str:
    """A share as a percentage with one decimal; "NaN" where it is missing."""
    return "NaN" if _missing(x) else f"{100 * x:.1f}%"


def counts(values: pd.Series) -> str:
    """Counts by name as "3,126 train, 818 val", in the order given."""
    return ", ".join(f"{n:,} {name}" for name, n in values.items())


def _missing(x) -> bool:
    """Whether a figure is absent: None, NaN or pandas' NA."""
    return x is None or bool(pd.isna(x))


def source(path: str, name: str, docstring: bool = True) -> str:
    """The source text of the function or method `name` ("Stepper.__call__") of a module, read
    as text and found with ast (without its docstring unless `docstring`): the write-up shows
    training code without importing it (training imports torch, which the notebook never does)."""
    text = (ROOT / path).read_text()
    node = ast.parse(text)
    for part in name.split("."):
        node = next(n for n in ast.iter_child_nodes(node)
                    if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part)
    first = min([d.lineno for d in node.decorator_list] + [node.lineno])
    lines = text.splitlines()[first - 1:node.end_lineno]
    doc = node.body[0]
    if not docstring and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) \
            and isinstance(doc.value.value, str):
        del lines[doc.lineno - first:doc.end_lineno - first + 1]
    return textwrap.dedent("\n".join(lines))


def show_source(path: str, *names: str) -> None:
    """`names` of the module at `path`, without their docstrings (the prose around them says
    what they do), shown as one Python block under the file's name."""
    say(f"`{path}`\n```python\n" + "\n\n".join(source(path, n, docstring=False) for n in names) + "\n```")


# ------------------------------------------------------------------------- the sweep


@dataclass(frozen=True)
class Sweep:
    """The usable runs of one sweep, read once and grouped into configurations (a configuration's
    runs are its seeds): what every section of the write-up starts from."""

    root: Path
    name: str
    runs: dict[str, run_store.Run]  # usable runs by name, in the order they started
    groups: dict[str, list[str]]  # configuration -> its runs, lowest seed first, in the order they started
    ranked: list[str]  # configurations on the full dataset, compared with one another
    subset: list[str]  # configurations trained and validated on a label subset (the forgetting stages)
    evals: pd.DataFrame  # every usable run's evaluations, with a run column
    wise: pd.DataFrame  # their WiSE-FT evaluations likewise
    metrics: pd.DataFrame  # their training metrics likewise
    comparisons: list[dict]  # sweep.json's comparisons whose configurations are here
    reference: str  # the configuration most comparisons are against
    colors: dict[str, str]  # configuration -> its colour in every chart
    summary: dict  # sweep.json: the last train.py call's wall time and sweep-level stages
    damaged: list[str]  # a warning per damaged run of the sweep

    def config(self, group: str) -> dict:
        """The resolved config of a configuration's first seed."""
        return self.runs[self.groups[group][0]].config

    @property
    def detail(self) -> str:
        """The run the qualitative sections look at: the reference's lowest seed (UMAP is fitted
        for each configuration's lowest seed only)."""
        return self.groups[self.reference][0]

    def group_of(self, run: str) -> str:
        return next(g for g, names in self.groups.items() if run in names)


def load_sweep(runs_dir: Path | str, sweep: str | None = None) -> Sweep:
    """The runs of `sweep` under `runs_dir` (default: the sweep with the most runs) that the
    write-up can use, as the results step reads them (analysis.results.read_sweep)."""
    root = Path(runs_dir)
    names = results.sweep_names(root)
    # SystemExit: the notebook then shows the message without a traceback
    if not names:
        raise SystemExit(f"No runs under {root.resolve()}: train some with `accelerate launch training/train.py`.")
    found = results.read_sweep(root, sweep or names[0])
    if not found.runs:
        raise SystemExit(f"Sweep {found.name!r} under {root} has no run with a validation evaluation.")
    runs, groups = found.runs, found.groups
    subset = [g for g in groups if found.subset(g)]
    return Sweep(root=root, name=found.name, runs=runs, groups=groups, ranked=[g for g in groups if g not in subset]
                 or list(groups), subset=subset, evals=stack([found.evals[n].assign(run=n) for n in runs]),
                 wise=stack([run_store.read_eval(r.path, wise_ft=True).assign(run=n) for n, r in runs.items()]),
                 metrics=stack([run_store.read_metrics(r.path).assign(run=n) for n, r in runs.items()]),
                 comparisons=found.comparisons, reference=found.reference, colors=charts.group_colors(list(groups)),
                 summary=run_store.read_sweep_summary(root, found.name),
                 damaged=[f"run {r.key} ({r.state}) is damaged: {'; '.join(r.problems)}"
                          for r in run_store.list_runs(root) if r.sweep == found.name and r.problems])


def header(sweep: Sweep) -> str:
    """The lines that open the write-up: where its runs come from and which ones it looks at."""
    listed = ", ".join(f"{g} ×{len(ns)}" if len(ns) > 1 else g for g, ns in sweep.groups.items())
    lines = [f"warning: {w}" for w in sweep.damaged] + [
        f"sweep       : {sweep.name}: {len(sweep.runs)} usable runs in {len(sweep.groups)} configurations "
        "(×N: N seeds; where they were read and the code's revisions: Appendix B)",
        *textwrap.wrap(listed, 100, initial_indent=" " * 14, subsequent_indent=" " * 14, break_on_hyphens=False),
        f"reference   : {sweep.reference}; the run shown in detail: {sweep.detail}"]
    if sweep.subset:
        lines.append(f"label-subset configurations (forgetting): {', '.join(sweep.subset)}")
    lines += [f"note: run {n} is {r.state}; its numbers are those of its last evaluation"
              for n, r in sweep.runs.items() if r.state != "FINISHED"]
    return "\n".join(lines)


@functools.cache
def _samples(path: Path) -> pd.DataFrame:
    """A run's per-sample results, the columns comparisons and retrieval tables read."""
    return run_store.read_samples(path, columns=[*SAMPLE_COLUMNS, "topk_ids"])


def on_split(samples: pd.DataFrame, split: str) -> pd.DataFrame:
    """A samples frame's rows of `split`, without the split column: analysis.compare reads the
    val rows of a frame that has one, every row of a frame that has none."""
    return samples[samples["split"] == split].drop(columns="split")


def split_samples(run: run_store.Run, split: str) -> pd.DataFrame:
    """A run's per-sample results on `split` (on_split)."""
    return on_split(_samples(run.path), split)


def has_split(sweep: Sweep, group: str, split: str) -> bool:
    """Whether every run of a configuration has per-sample results on `split`."""
    return all((_samples(sweep.runs[n].path)["split"] == split).any() for n in sweep.groups[group])


def report_split(sweep: Sweep) -> str:
    """Where results are reported: test where the reference has it, val otherwise (the tiny runs).
    A configuration on data without a test split (the leaky split) is compared on val (compare)."""
    return "test" if has_split(sweep, sweep.reference, "test") else "val"


# ---------------------------------------------------------------------- the dataset


@dataclass(frozen=True)
class Dataset:
    """What data preparation says about the runs' dataset."""

    name: str
    source: str
    attribution: str | None  # the licence line the dataset asks for, if any
    size: int | None  # image side in pixels, where preparation rendered the images
    split_by: str | None  # how preparation kept variants together ("concept", "base")
    images: pd.DataFrame  # one manifest row per image
    per_split: pd.Series  # images per split
    concepts: pd.Series  # concepts per split (where the manifest names them)
    labels: pd.Series  # image-caption pairs per label, most first


def _prepared(data: str) -> dict:
    """data preparation's report.json of a dataset ({} where it has none)."""
    file = dataset_dir(data) / REPORT
    return json.loads(file.read_text()) if file.exists() else {}


def dataset(data: str, manifest: pd.DataFrame) -> Dataset:
    """The facts the data section states about `manifest`, the prepared dataset `data`."""
    prepared = _prepared(data)
    source = prepared.get("source", Path(str(data)).name)
    attribution = None
    if source == "openmoji":
        from data.sources.openmoji import ATTRIBUTION  # only this source needs its module
        attribution = ATTRIBUTION
    images = manifest.drop_duplicates("image_id")
    concepts = images.groupby("split")["concept"].nunique() if "concept" in images else pd.Series(dtype=int)
    if len(concepts):  # the splits' order: largest first, as per_split
        concepts = concepts.reindex(images["split"].value_counts().index).dropna().astype(int)
    labels = manifest["label"].replace("", np.nan).dropna().value_counts()
    return Dataset(name=Path(str(data)).name, source=source, attribution=attribution, size=prepared.get("size"),
                   split_by=prepared.get("split_by"), images=images, per_split=images["split"].value_counts(),
                   concepts=concepts, labels=labels)


def datasets(sweep: Sweep) -> list[str]:
    """The datasets the sweep's configurations train on, the reference's first."""
    return list(dict.fromkeys([sweep.config(sweep.reference).get("data", ""),
                               *(sweep.config(g).get("data", "") for g in sweep.groups)]))


IDENTICAL = "with an identical image in the same split"


def twin_sets(manifest: pd.DataFrame, split: str) -> list[pd.DataFrame]:
    """The sets of images of `split` whose files are byte-identical to each other, each as its rows
    of the manifest (image_id, caption, label...), largest sets first: the images retrieval on
    that split cannot tell apart (a caption of one ties its twin, which counts against it).
    report.json's duplicates also count twins in other splits, which retrieval never confuses."""
    images = manifest[manifest["split"] == split].drop_duplicates("image_id")
    digest = images["image_path"].map(_file_digest)
    return sorted((rows for _, rows in images.groupby(digest) if len(rows) > 1), key=len, reverse=True)


@functools.cache
def _file_digest(path: str) -> str:
    """data.manifest.file_digest, read once per file: the write-up asks about one split's twins
    from several sections."""
    return file_digest(path)


def identical_in_split(manifest: pd.DataFrame) -> pd.Series:
    """split -> its images with a byte-identical twin in the same split (twin_sets)."""
    return pd.Series({split: sum(map(len, twin_sets(manifest, split))) for split in manifest["split"].unique()},
                     dtype=int)


def leakage(names: list[str]) -> pd.DataFrame:
    """Per prepared dataset and held-out split: how preparation split it, its images, those with
    a training image of the same concept (preparation's own check, with a grouping of its own),
    and those with a byte-identical twin in the same split (identical_in_split)."""
    rows = []
    for data in names:
        prepared = _prepared(data)
        try:
            twins = identical_in_split(load_manifest(data))
        except (FileNotFoundError, ValueError):  # not prepared here: preparation's check alone
            twins = pd.Series(dtype=int)
        for split, leak in (prepared.get("leaks") or {}).items():
            rows.append({"dataset": Path(str(data)).name, "split by": prepared.get("split_by", "?"), "split": split,
                         "images": leak["images"],
                         "with a training image of the same concept": leak["with_a_training_image_of_the_same_concept"],
                         IDENTICAL: int(twins.get(split, 0))})
    return pd.DataFrame(rows, columns=["dataset", "split by", "split", "images",
                                       "with a training image of the same concept", IDENTICAL])


def manifest_rows(manifest: pd.DataFrame, count: int = 3) -> pd.DataFrame:
    """The manifest's first rows as data preparation wrote them (the columns a reader needs; the
    rest are preparation's own), image paths relative to the working folder."""
    rows = manifest.head(count)[[c for c in ("image_id", "image_path", "caption", "split", "label", "concept")
                                 if c in manifest.columns]].copy()
    rows["image_path"] = [str(Path(p).relative_to(Path.cwd())) if Path(p).is_relative_to(Path.cwd()) else p
                          for p in rows["image_path"]]
    return rows.set_index("image_id")


def image_grid(manifest: pd.DataFrame, count: int = 12, seed: int = 0) -> Figure:
    """`count` random validation images (any images where there is no validation split) with
    their captions and labels."""
    val = manifest[manifest["split"] == "val"].drop_duplicates("image_id")
    pool = val if len(val) else manifest.drop_duplicates("image_id")
    grid = pool.iloc[np.random.default_rng(seed).permutation(len(pool))[:count]]
    cols = min(6, len(grid))
    rows = math.ceil(len(grid) / cols)
    fig = Figure(figsize=(2.1 * cols, 2.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (_, row) in zip(axes.flat, grid.iterrows(), strict=False):
        ax.imshow(PILImage.open(row["image_path"]).convert("RGBA"))
        ax.set_title("\n".join(textwrap.wrap(row["caption"], 22)[:3]) + f"\n[{row['label']}]", fontsize=8)
    fig.suptitle(f"{len(grid)} random {pool['split'].iloc[0]} images with their captions [label]", fontsize=10)
    fig.tight_layout()
    return fig


def length_and_label_figure(words: pd.Series, labels: pd.Series) -> Figure:
    """Histogram of caption lengths (`words` per caption) beside the pairs per label."""
    fig = Figure(figsize=(11, 3.4))
    a, b = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    a.hist(words, bins=np.arange(0.5, words.max() + 1.5), color=NEUTRAL[0])  # configuration colours mean configurations
    a.set(xlabel="caption length (words)", ylabel="captions", title="Caption lengths")
    ordered = labels.sort_values()  # barh draws bottom up: the largest label on top
    b.barh(ordered.index, ordered.values, color=NEUTRAL[1])
    b.set(xlabel="image-caption pairs", title="Labels")
    fig.tight_layout()
    return fig


def label_shares(samples: pd.DataFrame) -> pd.Series:
    """label -> its share of the images among `samples` (rows with a modality column: its image
    rows), largest first, images without a label left out; the largest share is what a classifier
    that always answers that label scores in accuracy."""
    if "modality" in samples.columns:
        samples = samples[samples["modality"] == "image"]
    labels = samples["label"].dropna().astype(str)
    return labels[~labels.isin(NO_LABEL)].value_counts(normalize=True)


# ---------------------------------------------------------------------- the training


def tower(unlocked: int) -> str:
    """How much of a tower trains, from its unlock_image / unlock_text value."""
    return "locked" if unlocked == 0 else "all trained" if unlocked == -1 else f"top {unlocked} block(s) trained"


def lit_term(config: dict) -> str:
    """LiT's name for the towers (Zhai et al. 2022): L locked, U unlocked, image tower first."""
    return "".join("L" if not config.get(k) else "U" for k in ("unlock_image", "unlock_text"))


def settings_table(sweep: Sweep) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per configuration: its seeds, towers, learning rates, temperature, batch, epochs and data;
    and the settings every configuration shares (setting -> value), which the table leaves out."""
    rows = []
    for g, names in sweep.groups.items():
        c = sweep.config(g)
        unlocked = c.get("unlock_image") or c.get("unlock_text")
        fitted = bool(c.get("closed_form"))  # no optimiser, batches or epochs: a fit in one solve
        rows.append({"configuration": g, "seeds": len(names),
                     "method": f"closed form ({c['closed_form']})" if fitted else "contrastive",
                     "towers": lit_term(c) + "".join(f", {side} {tower(c.get(f'unlock_{side}', 0))}"
                                                     for side in ("image", "text") if c.get(f"unlock_{side}")),
                     "dim": c.get("embed_dim"),
                     "heads lr": "-" if fitted else setting(c.get("lr")),
                     "tower lr": setting(c.get("tower_lr")) if unlocked else "-",
                     "temperature": "-" if fitted else "learned" if c.get("learn_temperature", True)
                     else f"fixed at {setting(c.get('init_temperature') or 0.07)}",
                     "batch": "-" if fitted else c.get("batch_size"), "epochs": "-" if fitted else c.get("epochs"),
                     "data": Path(str(c.get("data"))).name + ("" if c.get("data_fraction", 1) == 1
                                                              else f" × {setting(c.get('data_fraction'))}")
                     + (f", {'only' if c.get('include_labels') else 'without'} "
                        f"{', '.join(c.get('include_labels') or c.get('exclude_labels'))}"
                        if c.get("include_labels") or c.get("exclude_labels") else "")
                     + (f", from {_source_group(sweep, c)}" if c.get("init_from") else "")})
    table = pd.DataFrame(rows).set_index("configuration").map(lambda v: "–" if _missing(v) else str(v))
    table = table.drop(columns=[c for c in ("tower lr",) if (table[c] == "-").all()])
    common = {c: table[c].iloc[0] for c in table.columns if table[c].nunique() == 1 and len(table) > 1}
    return table.drop(columns=list(common)), common


def comparisons_table(sweep: Sweep) -> pd.DataFrame:
    """The sweep's comparisons, one row per run against its reference: what changes between them
    (read from their configs, not the sweep file) and the sweep file's note."""
    rows = [{"comparison": c["name"], "reference": c["reference"], "configuration": g,
             "what changes": changes(sweep.config(c["reference"]), sweep.config(g)), "note": c.get("note", "")}
            for c in sweep.comparisons for g in c["runs"] if g in sweep.groups]
    return pd.DataFrame(rows, columns=["comparison", "reference", "configuration", "what changes", "note"]
                        ).set_index(["comparison", "configuration"])


STAGES = {"features": "frozen features", "training": "training", "evaluation": "evaluation",
          "intervals": "intervals", "closed_form": "closed-form fit", "wise_ft": "WiSE-FT", "umap": "maps"}


def costs(sweep: Sweep, at_least: float = 0.0) -> pd.DataFrame:
    """Per configuration: seconds per seed of each recorded stage (the mean over its seeds; "–"
    where the stage did not run) and the wall time of one seed, start to end, as text cells
    with one decimal; a stage under `at_least` seconds in every configuration is left out."""
    rows = {}
    for g, names in sweep.groups.items():
        stages = pd.DataFrame([sweep.runs[n].status.get("timings") or {} for n in names]).mean()
        wall = [(sweep.runs[n].status.get("end_time") or np.nan) - (sweep.runs[n].status.get("start_time") or np.nan)
                for n in names]
        rows[g] = {"seeds": len(names), **{name: stages.get(key, np.nan) for key, name in STAGES.items()},
                   "wall per seed": float(np.nanmean(wall)) if np.isfinite(wall).any() else np.nan}
    table = pd.DataFrame(rows).T
    table = table.drop(columns=[c for c in STAGES.values() if not (table[c] >= at_least).any()])
    seconds = table.drop(columns="seeds").map(lambda v: "–" if _missing(v) else f"{v:.1f}")
    return pd.concat([table[["seeds"]].astype(int), seconds.rename(columns=lambda c: f"{c} (s)")], axis=1)


def seconds(sweep: Sweep, group: str, stage: str = "training") -> float:
    """A configuration's mean seconds per seed of a recorded stage, or of its wall time ("wall")."""
    def one(status):
        if stage == "wall":
            return (status.get("end_time") or np.nan) - (status.get("start_time") or np.nan)
        return (status.get("timings") or {}).get(stage, np.nan)
    values = np.array([one(sweep.runs[n].status) for n in sweep.groups[group]], dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else np.nan


def provenance(sweep: Sweep) -> pd.DataFrame:
    """Where the runs were read, and the hardware and software every run recorded (config.json's
    provenance), one row per value; a value that differs between runs lists the distinct ones."""
    prov = pd.DataFrame([{**{k: v for k, v in r.config.get("provenance", {}).items() if k != "versions"},
                          **r.config.get("provenance", {}).get("versions", {})} for r in sweep.runs.values()])
    values = {"runs folder": str(sweep.root.resolve()),
              **{c: ", ".join(sorted(map(str, prov[c].dropna().unique()))) for c in prov.columns}}
    if "," in values.get("git_revision", ""):
        values["git_revision"] += " (train.py keeps a finished run whose config is unchanged)"
    return pd.DataFrame({"value": values.values()}, index=list(values))


# ------------------------------------------------------------------------ curves


def band_chart(sweep: Sweep, groups: list[str], metric: str = "i2t_R@1", split: str = "val",
               height: int = 200, width: int = 300, title: str | None = None,
               legend: list[str] | None = None) -> alt.Chart:
    """A metric by epoch for `groups`, each the mean of its seeds with a band from the lowest
    seed to the highest (charts.seed_band_chart), in the sweep's colours. `metric` is an
    evaluation on `split`, or a logged training metric (loss, temperature), smoothed. `legend`:
    the configurations the colour scale lists (default `groups`); charts drawn side by side
    need one list, or their scales merge into colours of neither."""
    runs = [n for g in groups for n in sweep.groups[g]]
    e, m = sweep.evals, sweep.metrics
    logged = m[(m["name"] == metric) & m["run"].isin(runs)] if not m.empty else m
    if len(logged):
        frame = smooth(logged, 0.6 if metric == "loss" else 0.0).assign(evaluated=False)
    else:
        rows = e[(e["metric"] == metric) & (e["split"] == split) & e["run"].isin(runs)]
        frame = rows.assign(smoothed=rows["value"], evaluated=True)
    frame = frame.assign(wall_time=frame.get("wall_time", np.nan))
    of = {n: g for g in groups for n in sweep.groups[g]}
    listed = legend or groups
    chart = charts.seed_band_chart(band_rows(frame, of, seeds=False), metric, x="epoch", height=height,
                                   colors={g: sweep.colors[g] for g in listed})
    epochs = list(range(int(math.ceil(np.nanmax(frame["epoch"]))) + 1)) if len(frame) else [0]
    for layer in chart.layer:  # whole epochs only (a 2-epoch curve gets no 0.5 ticks); no legend of one entry
        layer.encoding.x.axis = alt.Axis(values=epochs, format="d")
        if len(listed) == 1:
            layer.encoding.color.legend = None
    return chart.properties(width=width, title=title or f"{label(metric)}" + ("" if len(logged) else f" ({split})"))


def panels(parts: list, columns: int = 2):
    """Charts in a grid of `columns`, one colour legend for all (every part uses the sweep's colours)."""
    parts = [p.copy(deep=False) for p in parts]
    for p in parts:
        p.usermeta = alt.Undefined
    return alt.concat(*parts, columns=columns).resolve_scale(color="shared")


def comparison_curves(sweep: Sweep, metric: str = "i2t_R@1") -> alt.Chart | None:
    """One band chart per comparison of the sweep: its reference and its runs, validation `metric`
    by epoch (the validation split is where choices are made; test is evaluated at the end only)."""
    drawn = [[c["reference"], *[g for g in c["runs"] if g in sweep.groups]] for c in sweep.comparisons]
    legend = list(dict.fromkeys(g for groups in drawn for g in groups))
    made = [band_chart(sweep, groups, metric, title=f"{c['name']}: {label(metric)} (val)", height=160, width=260,
                       legend=legend) for c, groups in zip(sweep.comparisons, drawn, strict=True)]
    return panels(made, columns=3) if made else None


# ------------------------------------------------------------- samples and embeddings


def thumbnails(run: run_store.Run) -> dict[str, bytes]:
    """image_id -> PNG thumbnail of the run's evaluated images that have one."""
    images = run_store.read_samples(run.path, columns=["modality", "image_id", "thumbnail"])
    images = images[(images["modality"] == "image") & images["thumbnail"].notna()]
    return dict(zip(images["image_id"], images["thumbnail"], strict=True))


def _picture(png: bytes) -> np.ndarray:
    """A PNG as the RGBA array imshow draws."""
    return np.asarray(PILImage.open(io.BytesIO(png)).convert("RGBA"))


def step_rows(embeddings: pd.DataFrame, step: int) -> tuple[pd.DataFrame, np.ndarray]:
    """One step's embedding rows without their vectors, and the vectors as a float32 matrix."""
    rows = embeddings[embeddings["step"] == step].reset_index(drop=True)
    return rows.drop(columns="embedding"), np.stack(rows["embedding"].to_numpy()).astype(np.float32)


def matrix_images(embeddings: pd.DataFrame, count: int = 8, seed: int = 1) -> list[str]:
    """`count` images embedded at two steps or more, with distinct captions, one per label
    first so that the handful spans the categories."""
    images = embeddings[embeddings["modality"] == "image"]
    steps = images.groupby("image_id")["step"].nunique()
    last = images[images["image_id"].isin(steps[steps >= 2].index) & (images["step"] == images["step"].max())]
    shuffled = last.drop_duplicates("caption").sample(frac=1, random_state=seed)
    ordered = shuffled.drop_duplicates("label")["image_id"].tolist() + shuffled["image_id"].tolist()
    return list(dict.fromkeys(ordered))[:count]


def similarity_figure(embeddings: pd.DataFrame, thumbs: dict[str, bytes], image_ids: list[str],
                      steps: list[int]) -> tuple[Figure, list[pd.DataFrame]]:
    """Images × captions cosine heatmaps of `image_ids`, one per step, on one colour scale: the
    images (thumbnails) label the rows, their captions the columns in the same order, so the true
    pairs (outlined) are the diagonal. Returns the figure and each step's cosine_matrix."""
    matrices = [cosine_matrix(*step_rows(embeddings, s), image_ids) for s in steps]
    grids = [m.pivot(index="image", columns="caption_of", values="cosine").reindex(index=image_ids, columns=image_ids)
             for m in matrices]
    captions = matrices[0].drop_duplicates("caption_of").set_index("caption_of")["caption"]
    n = len(image_ids)
    low, high = min(np.nanmin(g.to_numpy()) for g in grids), max(np.nanmax(g.to_numpy()) for g in grids)
    fig = Figure(figsize=(4.2 * len(steps) + 1.8, 0.5 * n + 3.0))
    axes = fig.subplots(1, len(steps), squeeze=False)[0]
    for k, (ax, grid, step) in enumerate(zip(axes, grids, steps, strict=True)):
        image = ax.imshow(grid.to_numpy(), cmap="viridis", vmin=low, vmax=high)
        for i in range(n):  # inset, so that neighbouring true pairs' outlines do not join into a staircase
            ax.add_patch(Rectangle((i - 0.4, i - 0.4), 0.8, 0.8, fill=False, edgecolor="white", linewidth=1.6))
        ax.set_xticks(range(n), [textwrap.shorten(str(captions.get(i, i)), 32, placeholder="…") for i in image_ids],
                      rotation=50, ha="right", fontsize=10)
        ax.set_yticks(range(n), [""] * n)
        ax.set_title(f"step {step}" + (" (before training)" if step == 0 else " (after training)"), fontsize=11)
        if k == 0:  # the thumbnails are the row labels of the first panel; the others share its rows
            for i, image_id in enumerate(image_ids):
                if image_id in thumbs:
                    picture = _picture(thumbs[image_id])
                    box = OffsetImage(picture, zoom=38 / max(picture.shape[:2]))
                    ax.add_artist(AnnotationBbox(box, (-0.5, i), xybox=(-22, 0), xycoords="data",
                                                 boxcoords="offset points", frameon=False, annotation_clip=False))
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="cosine")
    return fig, matrices


def pair_summary(matrix: pd.DataFrame) -> tuple[float, float, int]:
    """(mean cosine of true pairs, mean cosine of wrong pairs, images whose true caption scores
    highest in their row) of a cosine matrix."""
    right = int(matrix.loc[matrix.groupby("image")["cosine"].idxmax(), "true_pair"].sum())
    return matrix.loc[matrix["true_pair"], "cosine"].mean(), matrix.loc[~matrix["true_pair"], "cosine"].mean(), right


def neighbours(rows: pd.DataFrame, vectors: np.ndarray) -> dict[str, float]:
    """How the embedding space is organised, by each point's nearest neighbour (cosine, in the
    full space, not the 2-D picture): the share of points whose neighbour has the same modality,
    the share whose neighbour has the same label, and that share if labels were scattered at random."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    nearest = sims.argmax(axis=1)
    modality, labels = rows["modality"].to_numpy(), rows["label"].to_numpy()
    return {"same_modality": float((modality[nearest] == modality).mean()),
            "same_label": float((labels[nearest] == labels).mean()),
            "random_label": float((rows["label"].value_counts(normalize=True) ** 2).sum())}


# ------------------------------------------------------------------ the aligned map


@dataclass(frozen=True)
class AlignedMap:
    """One aligned map of the sweep (training/projection.py) as the write-up shows it: its name,
    the configurations drawn (the reference first, then the one compared with it), each by its
    lowest seed, the map's one run per configuration, and each run's points (analysis.maps.map_points)."""

    name: str
    groups: list[str]
    runs: list[str]
    points: dict[str, pd.DataFrame]


@functools.cache
def spaces(path: Path):
    """analysis.maps.run_spaces, read once per run: the map, the gap and the zero-shot sections
    all ask for the same runs' spaces."""
    return run_spaces(path)


def _map_points(run: run_store.Run, name: str) -> pd.DataFrame:
    ranks = validation(_samples(run.path))[["sample_id", "modality", "rank"]]
    meta = run_store.read_embeddings(run.path, with_vectors=False, last_step=True)
    return map_points(run_store.read_umap(run.path, name), meta, ranks)


def aligned_map(sweep: Sweep) -> AlignedMap | None:
    """The map the write-up shows: of the comparisons on the reference's own data, the one whose
    configuration moved validation image → text R@1 (the mean over seeds) furthest from its
    reference, with those two configurations; with no comparison, the reference's map of its
    own. None where the runs hold no coordinates of that map."""
    def r1(g):
        return figures(sweep, [g], "val", metrics=["i2t_R@1"])["i2t_R@1"].get(g, np.nan)

    pairs = [(abs(r1(g) - r1(c["reference"])), c["name"], c["reference"], g) for c in sweep.comparisons
             for g in c["runs"] if g in sweep.groups and not _other_data(sweep, c["reference"], g)]
    pairs = [p for p in pairs if np.isfinite(p[0])]
    _, name, *groups = max(pairs) if pairs else (0, sweep.reference, sweep.reference)
    groups = list(dict.fromkeys(groups))
    runs = [sweep.groups[g][0] for g in groups]
    if any(name not in run_store.umap_maps(sweep.runs[n].path) for n in runs):
        return None
    return AlignedMap(name, groups, runs, {n: _map_points(sweep.runs[n], name) for n in runs})


def map_figure(sweep: Sweep, m: AlignedMap, arrows: int = 12, labels: int = 6) -> Figure:
    """Each run of the map at its end, on the map's shared axes: images as circles and captions
    as crosses, dark where right at R@1 and light where wrong (greys: colours mean
    configurations), the `labels` largest labels named where their images lie, and an arrow,
    in the run's configuration colour, from step 0 to the end for the `arrows` samples that
    moved furthest."""
    frames = {n: m.points[n] for n in m.runs}
    every = pd.concat(frames.values())
    xs, ys = every[["umap_x", "x0"]].to_numpy().ravel(), every[["umap_y", "y0"]].to_numpy().ravel()
    width = map_width(m)
    pad = 0.04 * width
    fig = Figure(figsize=(5.4 * len(m.runs) + 0.4, 5.6))
    axes = fig.subplots(1, len(m.runs), squeeze=False, sharex=True, sharey=True)[0]
    for ax, (g, n) in zip(axes, zip(m.groups, m.runs, strict=True), strict=True):
        pts = frames[n]
        for modality, marker in (("image", "o"), ("text", "+")):
            for outcome, color, z in ((OUTCOMES[1], NEUTRAL[2], 1), (OUTCOMES[0], NEUTRAL[0], 2)):
                at = pts[(pts["modality"] == modality) & (pts["outcome"] == outcome)]
                ax.scatter(at["umap_x"], at["umap_y"], s=9 if marker == "o" else 14, marker=marker, color=color,
                           linewidths=0.8, zorder=z, label=f"{'image' if modality == 'image' else 'caption'}, "
                                                           f"{outcome}")
        images, placed = pts[pts["modality"] == "image"], []
        for name in images["label"].value_counts().index[:labels]:  # a label too close to a larger one's is left out
            at = images[images["label"] == name]
            x, y = at["umap_x"].median(), at["umap_y"].median()
            if all(abs(x - px) > 0.16 * width or abs(y - py) > 0.05 * width for px, py in placed):
                placed.append((x, y))
                ax.text(x, y, str(name), fontsize=8, ha="center", va="center", zorder=4,
                        bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
        for _, r in pts.dropna(subset=["moved"]).nlargest(arrows, "moved").iterrows():
            ax.annotate("", xy=(r["umap_x"], r["umap_y"]), xytext=(r["x0"], r["y0"]), zorder=3,
                        arrowprops={"arrowstyle": "-|>", "color": sweep.colors[g], "lw": 1.4, "mutation_scale": 9})
        ax.set(xlim=(np.nanmin(xs) - pad, np.nanmax(xs) + pad), ylim=(np.nanmin(ys) - pad, np.nanmax(ys) + pad),
               xticks=[], yticks=[], xlabel="map 1", title=f"{g} ({n}), end of training")
        ax.title.set_fontsize(9)
    axes[0].set_ylabel("map 2")
    handles, names = axes[0].get_legend_handles_labels()
    handles.append(Line2D([], [], color=NEUTRAL[0], marker=">", markersize=5, lw=1.4))
    names.append(f"step 0 → end, the {arrows} samples that moved furthest (the configuration's colour)")
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"The aligned map of the “{m.name}” comparison: positions comparable across its runs", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def movement_summary(points: pd.DataFrame) -> dict[str, float]:
    """How far a run's samples moved from step 0 to the end against their floor (UMAP's own
    noise): the medians of both and the share that moved further than their floor."""
    pts = points.dropna(subset=["moved", "floor"])
    return {"moved": float(pts["moved"].median()), "floor": float(pts["floor"].median()),
            "beyond": float((pts["moved"] > pts["floor"]).mean()) if len(pts) else np.nan}


def map_width(m: AlignedMap) -> float:
    """The larger side of the box that holds every place of the map's runs (step 0 and end)."""
    every = pd.concat(m.points.values())
    return float(max(np.ptp(every[["umap_x", "x0"]].to_numpy()[np.isfinite(every[["umap_x", "x0"]].to_numpy())]),
                     np.ptp(every[["umap_y", "y0"]].to_numpy()[np.isfinite(every[["umap_y", "y0"]].to_numpy())])))


def drift_table(sweep: Sweep, m: AlignedMap) -> tuple[pd.DataFrame, str, str]:
    """Each sample's drift (analysis.maps): with two configurations, from the reference's end (A)
    to the other's end (B), else from the run's step 0 (A) to its end (B); with what A and B are."""
    if len(m.runs) > 1:
        a, b = m.runs[:2]
        table = runs_drift(spaces(sweep.runs[a].path)[1], spaces(sweep.runs[b].path)[1], m.points[a], m.points[b])
        return table, f"{m.groups[0]}'s end", f"{m.groups[1]}'s end"
    (a,) = m.runs
    start, end = spaces(sweep.runs[a].path)
    return run_drift(start, end, m.points[a], shares_space(sweep.runs[a].config)), "step 0", "the end"


DRIFT_SHOWN = {"caption": "caption", "modality": "query", "label": "label", "rank_start": "rank, A",
               "rank_end": "rank, B", "rank_change": "change", "knn_overlap": "neighbours kept",
               "moved": "moved on the map", "floor": "floor"}


def drift_rows(table: pd.DataFrame, each: int = 4) -> pd.DataFrame:
    """The `each` samples of a drift table whose rank worsened most and the `each` whose rank
    improved most, as read."""
    table = table.assign(modality=table["modality"].map({"image": "image → text", "text": "text → image"}))
    worse, better = table.nlargest(each, "rank_change"), table.nsmallest(each, "rank_change")
    shown = pd.concat([worse[worse["rank_change"] > 0], better[better["rank_change"] < 0]])
    shown = shown[list(DRIFT_SHOWN)].rename(columns=DRIFT_SHOWN).set_index("caption")
    for c in ("neighbours kept", "moved on the map", "floor"):
        shown[c] = shown[c].map(lambda v: "–" if _missing(v) else f"{v:.2f}")
    return shown


def gap_figures(sweep: Sweep, run: str) -> pd.DataFrame:
    """analysis.maps.gap_table of a run, with readable names."""
    table = gap_table(*spaces(sweep.runs[run].path)).set_index("state")
    return table.rename(columns={"gap": "modality gap", "image_cone": "image cone (mean cosine)",
                                 "text_cone": "caption cone (mean cosine)"})


def gap_directions(sweep: Sweep, group: str) -> dict[str, int]:
    """In how many of a configuration's seeds the gap shrank and each cone widened (its mean
    cosine fell) from step 0 to the end, with the number of seeds."""
    tables = [gap_table(*spaces(sweep.runs[n].path)).set_index("state") for n in sweep.groups[group]]
    return {"seeds": len(tables), **{k: sum(int(t.loc["end", k] < t.loc["step 0", k]) for t in tables)
                                     for k in ("gap", "image_cone", "text_cone")}}


def gap_probe_figure(sweep: Sweep, run: str) -> tuple[Figure, pd.DataFrame]:
    """Liang et al.'s gap-shift probe of a run (analysis.maps.gap_probe) at step 0 and at the
    end, in greys (a measure is not a configuration); returns the figure and the probe."""
    probe, _ = gap_probe(*spaces(sweep.runs[run].path))
    fig = Figure(figsize=(10, 3.2))
    axes = fig.subplots(1, 2, sharey=True)
    styles = {"i2t_R@1": ("o", "-", NEUTRAL[0]), "t2i_R@1": ("s", "--", NEUTRAL[1]),
              "zero_shot_accuracy": ("^", ":", NEUTRAL[0])}
    for ax, state in zip(axes, ["step 0", "end"], strict=True):
        for measure, rows in probe[probe["state"] == state].groupby("measure", sort=False):
            marker, line, color = styles[measure]
            ax.plot(rows["shift"], rows["value"], marker=marker, linestyle=line, color=color, label=label(measure),
                    markersize=4)
        ax.axvline(0, color=NEUTRAL[2], linewidth=1)
        ax.set(title=f"{run}, {state}", xlabel="gap shift")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share right (val)")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle("Gap-shift probe: images moved by −s·Δ/2 and texts by +s·Δ/2 (Δ: image centroid − text "
                 "centroid), then renormalised; s = 0 the stored vectors, s = 1 centroids met, s = −1 twice as far",
                 fontsize=9)
    fig.tight_layout()
    return fig, probe


def image_examples(samples: pd.DataFrame, run: str, each: int = 3, seed: int = 2) -> Figure:
    """`each` validation images the run gets right at rank 1 and `each` it gets wrong, with their
    top captions and cosines (✔: a true caption of the image)."""
    samples = validation(samples)
    images, texts = samples[samples["modality"] == "image"], samples[samples["modality"] == "text"]
    caption_of = dict(zip(texts["sample_id"], texts["caption"], strict=True))
    image_of = dict(zip(texts["sample_id"], texts["image_id"], strict=True))
    chosen = pd.concat([images[images["rank"] == 1].sample(frac=1, random_state=seed).head(each),
                        images[images["rank"] != 1].sample(frac=1, random_state=seed).head(each)])
    fig = Figure(figsize=(9, 1.25 * len(chosen)))
    axes = fig.subplots(len(chosen), 2, squeeze=False, gridspec_kw={"width_ratios": [1, 6]})
    for (ax_img, ax_txt), (_, row) in zip(axes, chosen.iterrows(), strict=True):
        ax_img.axis("off")
        ax_txt.axis("off")
        if row["thumbnail"] is not None:
            ax_img.imshow(_picture(row["thumbnail"]))
        lines = [f"image of: {row['caption']}  (rank of its caption: {row['rank']})"]
        for k, (sid, score) in enumerate(zip(row["topk_ids"][:3], row["topk_scores"][:3], strict=False), 1):
            lines.append(f"{k}. {caption_of.get(sid, sid)} ({score:.2f})"
                         + ("  ✔" if image_of.get(sid) == row["image_id"] else ""))
        ax_txt.text(0, 0.5, "\n".join(lines), va="center", fontsize=9)
    fig.suptitle(f"{run}: validation image → its top captions (cosine)", fontsize=10)
    fig.tight_layout()
    return fig


def caption_examples(samples: pd.DataFrame, thumbs: dict[str, bytes], run: str, each: int = 2,
                     seed: int = 3) -> Figure:
    """`each` validation captions whose image the run ranks first and `each` it does not, with
    their top images and cosines (the true image framed in dark grey)."""
    samples = validation(samples)
    texts = samples[samples["modality"] == "text"]
    queries = pd.concat([texts[texts["rank"] == 1].sample(frac=1, random_state=seed).head(each),
                         texts[texts["rank"] != 1].sample(frac=1, random_state=seed).head(each)])
    k = max(len(ids) for ids in queries["topk_ids"])
    fig = Figure(figsize=(1.7 * k + 1.6, 2.0 * len(queries)))
    for row_axes, (_, q) in zip(fig.subplots(len(queries), k, squeeze=False), queries.iterrows(), strict=True):
        for ax in row_axes:
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
        for ax, image_id, score in zip(row_axes, q["topk_ids"], q["topk_scores"], strict=False):
            if image_id in thumbs:
                ax.imshow(_picture(thumbs[image_id]))
            ax.set_xlabel(f"{score:.2f}", fontsize=8)
            if image_id == q["image_id"]:
                for s in ax.spines.values():
                    s.set(visible=True, color=NEUTRAL[0], linewidth=3)  # not green: colours mean configurations
        name = textwrap.wrap(f"“{q['caption']}”", 18)[:3] + [f"(true image: rank {q['rank']})"]
        row_axes[0].set_ylabel("\n".join(name), fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(f"{run}: validation caption → its top {k} images (cosine below each)", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- figures with intervals


def _figures(sweep: Sweep, run: str, split: str, which: str) -> pd.DataFrame:
    """final_figures of a run's last (or first, step 0) evaluation on `split`."""
    rows = sweep.evals[(sweep.evals["run"] == run) & (sweep.evals["split"] == split)]
    if which == "first" and len(rows):
        rows = rows[rows["step"] == rows["step"].min()]
    return final_figures(rows, split)


def figures(sweep: Sweep, groups: list[str], split: str, which: str = "last",
            metrics: list[str] = FIGURE_METRICS) -> pd.DataFrame:
    """analysis.runs.group_table of `groups` on `split` (the mean over seeds with a t-interval over
    them; one seed: its bootstrap interval over images), the metric columns only; a configuration
    without that split is left out."""
    runs = [{"run": n, "state": sweep.runs[n].state, "config": sweep.runs[n].config,
             "figures": _figures(sweep, n, split, which)} for g in groups for n in sweep.groups[g]]
    if not runs:
        return pd.DataFrame(columns=[c for m in metrics for c in (m, f"{m} low", f"{m} high")])
    table = group_table(runs, {n: g for g in groups for n in sweep.groups[g]}, metrics)
    table = table[[c for m in metrics for c in (m, f"{m} low", f"{m} high")]]
    return table.dropna(how="all")


# The names of the figures this module derives, beside core.names' of the stored ones.
DERIVED = {"balanced_accuracy": "balanced zero-shot accuracy",
           **{f"{p}_R@1 {level}": f"{label(f'{p}_R@1')}, {level}"
              for p in ("i2t", "t2i") for level in ("exact", "concept")}}


def cells(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """A figures table as text cells "0.312 [0.280, 0.345]", columns named for a reader."""
    return interval_cells(table, metrics)[metrics].rename(columns=lambda m: DERIVED.get(m, label(m)))


def chance(sweep: Sweep, split: str) -> dict[str, float]:
    """What guessing scores on `split` (one caption per image assumed for image → text R@k):
    k / images for R@k, one over the labels for zero-shot accuracy."""
    first = _figures(sweep, sweep.detail, split, "first")["value"]
    n = first.get("n_images", np.nan)
    out = {f"{p}_R@{k}": min(1.0, k / n) for p in ("i2t", "t2i") for k in (1, 5, 10)}
    return out | {"zero_shot_accuracy": first.get("zero_shot_chance", np.nan)}


def closed_form_groups(sweep: Sweep) -> list[str]:
    return [g for g in sweep.ranked if sweep.config(g).get("closed_form")]


def baselines(sweep: Sweep, split: str, metrics: list[str] = FIGURE_METRICS) -> pd.DataFrame:
    """The reference after training beside what it must beat, on `split`: chance, the model before
    training (step 0, the mean over the reference's seeds) and the closed-form fit of the heads."""
    ref = sweep.reference
    rows = {"chance": {m: chance(sweep, split).get(m, np.nan) for m in metrics}}
    step0 = figures(sweep, [ref], split, "first", metrics).rename(index={ref: f"{ref}, step 0 (before training)"})
    fitted = figures(sweep, closed_form_groups(sweep), split, "last", metrics).rename(
        index=lambda g: f"{g} (fitted, no training)")
    trained = figures(sweep, [ref], split, "last", metrics).rename(index={ref: f"{ref}, trained"})
    table = pd.concat([pd.DataFrame.from_dict(rows, orient="index"), step0, fitted, trained])
    for m in metrics:  # chance has no interval
        for end in ("low", "high"):
            table[f"{m} {end}"] = table.get(f"{m} {end}", np.nan)
    return table


# ------------------------------------------------------------------------ comparisons


def comparisons(sweep: Sweep, split: str) -> pd.DataFrame:
    """The results step's comparisons of the sweep (analysis/results.py) where each is reported,
    on `split` or on val where a side lacks it: the table the dashboard's Compare view reads too,
    with a `run` column naming the configuration compared."""
    rows = results.on_split_or_val(_comparisons(sweep.root, sweep.name), split)
    return rows.rename(columns={"configuration": "run"})


@functools.cache
def _comparisons(root: Path, sweep: str) -> pd.DataFrame:
    """The results step's comparisons table, read once per notebook kernel."""
    return results.load(root, sweep).comparisons


def _other_data(sweep: Sweep, a: str, b: str) -> bool:
    """Whether two configurations train and evaluate on different datasets (other validation
    images: compared unpaired)."""
    return sweep.config(a).get("data") != sweep.config(b).get("data")


def effects(sweep: Sweep, split: str = "test", metrics: list[str] = EFFECT_METRICS,
            other_data: bool | None = None) -> pd.DataFrame:
    """Every comparison of the sweep file: each of its runs against its reference, one row per
    metric, on `split` (val where a side lacks it); `other_data` True or False keeps only the
    runs on another dataset than their reference's (the split lesson, unpaired) or only those on
    the same one."""
    rows = comparisons(sweep, split)
    rows = rows[(rows["comparison"] != results.CLOSED_FORM) & rows["metric"].isin(metrics)]
    if other_data is not None:
        rows = rows[np.array([_other_data(sweep, a, b) == other_data for a, b in zip(rows["reference"], rows["run"])],
                             dtype=bool)]  # an empty list would select no columns
    return rows.reset_index(drop=True)  # in the sweep's order, each comparison's metrics in COMPARED_METRICS


BASELINE_METRICS = ["i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5", "zero_shot_accuracy"]


def baseline_effects(sweep: Sweep, split: str, metrics: list[str] = BASELINE_METRICS) -> pd.DataFrame:
    """The reference against each closed-form configuration (b − a: trained minus fitted)."""
    rows = comparisons(sweep, split)
    return rows[(rows["comparison"] == results.CLOSED_FORM) & rows["metric"].isin(metrics)].reset_index(drop=True)


def short_verdict(row) -> str:
    """An effect as a table cell: "-0.021 [-0.041, -0.001] worse", "n.d." where the interval
    includes 0 (no detectable difference)."""
    if _missing(row.get("difference")):
        return str(row.get("verdict", "NaN"))
    d = stats._decimals(row["metric"])
    word = "n.d." if row["low"] <= 0 <= row["high"] else row["verdict"].split("(")[1].split(")")[0]
    return f"{row['difference']:+.{d}f} [{row['low']:.{d}f}, {row['high']:.{d}f}] {word}"


def effects_table(effects: pd.DataFrame) -> pd.DataFrame:
    """effects() as read: one row per comparison and run, what changes, and per metric its
    difference with the 95% interval and a word (better, worse; n.d.: no detectable difference);
    for the headline metric also the smallest difference the comparison could detect (MDE) and
    the verdict once its p-value is adjusted for the sweep's many comparisons."""
    if effects.empty:
        return pd.DataFrame()
    cells_ = effects.assign(cell=[short_verdict(r) for _, r in effects.iterrows()])
    wide = cells_.pivot_table(index=["comparison", "run"], columns="metric", values="cell", aggfunc="first",
                              sort=False)
    wide = wide[[m for m in EFFECT_METRICS if m in wide.columns]].rename(columns=label)
    first = effects.drop_duplicates(["comparison", "run"]).set_index(["comparison", "run"])
    headline = effects[effects["metric"] == results.HEADLINE[1]].set_index(["comparison", "run"])
    adjusted = pd.DataFrame({
        f"MDE, {label(results.HEADLINE[1])}": headline["mde"].map(lambda x: "-" if _missing(x) else f"{x:.3f}"),
        f"adjusted, {label(results.HEADLINE[1])}": [v.replace("no detectable difference", "n.d.").replace(
            "adjusted p", "p") for v in headline["adjusted_verdict"]]}, index=headline.index)
    return pd.concat([first[["changes"]], wide, adjusted], axis=1)


def detectable(effects: pd.DataFrame) -> pd.Series:
    """Per effects row: +1 where the interval lies above 0, -1 below, 0 where it includes 0."""
    return pd.Series(np.where(effects["low"] > 0, 1, np.where(effects["high"] < 0, -1, 0)), index=effects.index)


def forest_figure(effects: pd.DataFrame, colors: dict[str, str], metrics: list[str] = EFFECT_METRICS) -> Figure:
    """Each effect as a point with its 95% interval, one panel per metric, one row per comparison
    and run, in the run's colour; filled where the interval excludes 0."""
    keys = list(dict.fromkeys(zip(effects["comparison"], effects["run"], strict=True)))
    fig = Figure(figsize=(3.6 * len(metrics) + 2.2, 0.36 * len(keys) + 1.4))
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        rows = effects[effects["metric"] == metric].set_index(["comparison", "run"])
        for y, key in enumerate(keys):
            if key not in rows.index or pd.isna(rows.loc[key, "difference"]):
                continue
            r = rows.loc[key]
            color = colors.get(key[1], "#333")
            ax.plot([r["low"], r["high"]], [y, y], color=color, linewidth=2)
            filled = r["low"] > 0 or r["high"] < 0
            ax.plot(r["difference"], y, "o", color=color, markerfacecolor=color if filled else "white", markersize=7)
        ax.axvline(0, color="#888", linestyle="--", linewidth=1)
        ax.set_title(f"{label(metric)}: run − reference", fontsize=9)
        ax.set_xlabel(f"difference in {label(metric)}", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    first = effects.drop_duplicates(["comparison", "run"]).set_index(["comparison", "run"])
    usual = first["split"].mode().iloc[0]
    main = first["reference"].mode().iloc[0]  # the reference most rows have; others are named on the row
    names = [f"{c}: {r}" + ("" if first.loc[(c, r), "reference"] == main else f" − {first.loc[(c, r), 'reference']}")
             + ("" if first.loc[(c, r), "split"] == usual else f" ({first.loc[(c, r), 'split']}"
                            + (", unpaired)" if "unpaired" in first.loc[(c, r), "interval"] else ")"))
             for c, r in keys]
    axes[0].set_yticks(range(len(keys)), names, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(f"Effects (run − {main} unless named) with 95% intervals, on {usual} unless named (filled: the "
                 "interval excludes 0)", fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------- the evaluation


# How a configuration's figure gets its interval (analysis.runs.group_table): the t-interval of the seed
# means and the runs' mean bootstrap half-width over images, combined in quadrature; one seed: its bootstrap.
CONFIGURATION_INTERVAL = "95% interval over seeds and images"
RUN_INTERVAL = "95% bootstrap interval over images (one run)"


def interval_label(sweep: Sweep, groups) -> str:
    """What a table's intervals count: seeds and images, and images alone for a configuration of
    one run (a closed-form fit is deterministic: it has no seeds to count)."""
    single = [g for g in groups if len(sweep.groups.get(g, ())) == 1]
    if len(single) == len(list(groups)):
        return "95% bootstrap interval over images (one run each)"
    return CONFIGURATION_INTERVAL + (f"; {', '.join(single)}: one run, images only" if single else "")


def _interval_cell(values, groups=None) -> tuple[float, float, float]:
    """(mean, low, high): the bootstrap interval over images of per-query values (NaN for fewer than two)."""
    if values is None or len(values) < 2:
        return (np.nan,) * 3
    return stats.bootstrap_interval(np.asarray(values, dtype=float), groups)


def _combined(sweep: Sweep, per_run: dict[str, pd.DataFrame], metrics: list[str]) -> pd.DataFrame:
    """Per configuration, the figures of its runs (run -> value, low, high by metric: each run's
    bootstrap over images) combined by analysis.runs.group_table's rule, the one every stored
    figure of a configuration gets: the interval over seeds and images."""
    runs = [{"run": n, "state": sweep.runs[n].state, "config": sweep.runs[n].config, "figures": f}
            for n, f in per_run.items()]
    if not runs:
        return pd.DataFrame(columns=[c for m in metrics for c in (m, f"{m} low", f"{m} high")])
    table = group_table(runs, {n: sweep.group_of(n) for n in per_run}, metrics)
    return table[[c for m in metrics for c in (m, f"{m} low", f"{m} high")]]


def _run_figures(figures_: dict[str, tuple[float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(figures_, index=["value", "low", "high"]).T


def per_image(sweep: Sweep, run: str, split: str) -> pd.DataFrame:
    """One row per `split` image of a run at its last step, in sample-id order: sample_id,
    image_id, label, zero_shot (1/0), concept (image → text right at the concept level, NaN
    where the dataset names no concepts)."""
    samples = on_split(_samples(sweep.runs[run].path), split)
    last = samples[samples["step"] == samples["step"].max()]
    images = last[last["modality"] == "image"].sort_values("sample_id")
    out = images[["sample_id", "image_id", "label"]].assign(zero_shot=images["zero_shot_correct"].astype(float))
    concept_of = concepts_of(sweep.runs[run].config.get("data", ""))
    out["concept"] = concept_outcomes(samples, "image", concept_of)["concept"].to_numpy() if concept_of else np.nan
    return out.reset_index(drop=True)


def zero_shot_table(sweep: Sweep, split: str) -> pd.DataFrame:
    """Per configuration, zero-shot classification of the `split` images by their label prompts:
    accuracy (the stored figure) and balanced accuracy (the mean over labels of each label's
    accuracy, so that a large label weighs as much as a small one; a weighted mean of the
    per-image outcomes, the weights held at the split's label counts), both with the interval
    over seeds and images (CONFIGURATION_INTERVAL)."""
    per_run = {}
    for g in sweep.ranked:
        if not has_split(sweep, g, split):
            continue
        for n in sweep.groups[g]:
            images = per_image(sweep, n, split).dropna(subset=["zero_shot"])
            if images.empty:
                continue
            stored = _figures(sweep, n, split, "last")
            per_run[n] = pd.concat([stored.reindex(["zero_shot_accuracy"]), _run_figures(
                {"balanced_accuracy": _interval_cell(images["zero_shot"] * balanced_weights(images["label"]))})])
    return _combined(sweep, per_run, ["zero_shot_accuracy", "balanced_accuracy"])


def balanced_weights(labels: pd.Series) -> np.ndarray:
    """Per image, the weight that makes the mean of weight × correct the balanced accuracy (the
    mean over labels of each label's accuracy): images / (labels × images of its label)."""
    labels = pd.Series(np.asarray(labels))
    return (len(labels) / (labels.nunique() * labels.map(labels.value_counts()))).to_numpy(dtype=float)


@functools.cache
def concepts_of(data: str) -> dict[str, str] | None:
    """image_id -> concept of a prepared dataset; None where its manifest names none."""
    try:
        manifest = load_manifest(data)
    except (FileNotFoundError, ValueError):
        return None
    return dict(zip(manifest["image_id"], manifest["concept"], strict=False)) if "concept" in manifest else None


def concept_table(sweep: Sweep, groups: list[str], split: str) -> pd.DataFrame:
    """Per configuration, R@1 both ways on `split` at the exact level (the query's own caption or
    image: the stored figure) beside the concept level (any variant of the same concept counts:
    "woman technologist: dark skin tone" for "woman technologist"), both with the interval over
    seeds and images (CONFIGURATION_INTERVAL). A query whose true match ties a wrong item keeps
    the exact level's verdict (ties count against the query)."""
    per_run = {}
    for g in groups:
        concept_of = concepts_of(sweep.config(g).get("data", ""))
        if concept_of is None or not has_split(sweep, g, split):
            continue
        for n in sweep.groups[g]:
            samples = on_split(_samples(sweep.runs[n].path), split)
            stored = _figures(sweep, n, split, "last").reindex(["i2t_R@1", "t2i_R@1"])
            concept = {f"{prefix}_R@1 concept": _interval_cell(c["concept"], c["image_id"].to_numpy())
                       for prefix, modality in (("i2t", "image"), ("t2i", "text"))
                       for c in [concept_outcomes(samples, modality, concept_of)]}
            per_run[n] = pd.concat([stored.rename(index=lambda m: f"{m} exact"), _run_figures(concept)])
    return _combined(sweep, per_run, ["i2t_R@1 exact", "i2t_R@1 concept", "t2i_R@1 exact", "t2i_R@1 concept"])


RETRIEVAL_COLUMNS = ["i2t_R@1", "i2t_R@1 concept", "t2i_R@1", "t2i_R@1 concept"]


def with_concepts(table: pd.DataFrame, concepts: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """A figures table with concept_table's concept-level columns beside it (the exact ones are
    its own R@1), for the rows of `table`, and its metrics: RETRIEVAL_COLUMNS, less the concept
    level where the dataset names no concepts."""
    metrics = [m for m in RETRIEVAL_COLUMNS if "concept" not in m or (not concepts.empty and m in concepts.columns)]
    extra = [c for m in metrics if "concept" in m for c in (m, f"{m} low", f"{m} high")]
    joined = table.join(concepts[extra], how="left") if extra else table
    return joined[[c for m in metrics for c in (m, f"{m} low", f"{m} high")]], metrics


def concept_outcomes(samples: pd.DataFrame, modality: str, concept_of: dict[str, str]) -> pd.DataFrame:
    """Per query of `modality` at the last step: image_id, exact (right at R@1) and concept (right,
    or its top item is another image, or a caption of another image, of the query's concept)."""
    last = samples[samples["step"] == samples["step"].max()]
    image_of = dict(zip(last.loc[last["modality"] == "text", "sample_id"], last.loc[last["modality"] == "text",
                                                                                    "image_id"], strict=True))
    queries = last[last["modality"] == modality].sort_values("sample_id")
    top = [ids[0] if len(ids) else None for ids in queries["topk_ids"]]
    top_image = [image_of.get(t) if modality == "image" else t for t in top]
    exact = (queries["rank"] == 1).to_numpy()
    same = np.array([t is not None and t != i and concept_of.get(t) == concept_of.get(i)
                     for t, i in zip(top_image, queries["image_id"], strict=True)])
    return pd.DataFrame({"image_id": queries["image_id"].to_numpy(), "exact": exact.astype(float),
                         "concept": (exact | same).astype(float)})


def concept_effects(sweep: Sweep, split: str) -> pd.DataFrame:
    """Per comparison of runs on the same images: run − reference in image → text R@1 at the
    exact level and at the concept level, paired on the same `split` images (the interval over
    seeds and images, as every effect), as text cells with a verdict."""
    rows, outcomes = {}, {}

    def side(group: str, concept_of: dict[str, str]) -> list[pd.DataFrame]:  # a reference serves many rows
        if group not in outcomes:
            outcomes[group] = [concept_outcomes(on_split(_samples(sweep.runs[n].path), split), "image", concept_of)
                               .set_index("image_id") for n in sweep.groups[group]]
        return outcomes[group]

    for c in sweep.comparisons:
        concept_of = concepts_of(sweep.config(c["reference"]).get("data", ""))
        if concept_of is None or not has_split(sweep, c["reference"], split):
            continue
        for run in c["runs"]:
            if _other_data(sweep, c["reference"], run) or not has_split(sweep, run, split):
                continue
            sides = [side(c["reference"], concept_of), side(run, concept_of)]
            order = sides[0][0].index
            cells_ = {}
            for level in ("exact", "concept"):
                a, b = (np.stack([o.loc[order, level].to_numpy(float) for o in side]) for side in sides)
                cells_[f"image→text R@1, {level}"] = _effect_cell(*_paired(a, b, order.to_numpy()), "i2t_R@1")
            rows[(c["name"], run)] = cells_
    return pd.DataFrame(rows).T.rename_axis(["comparison", "run"]) if rows else pd.DataFrame()


def opposite_moves(effects: pd.DataFrame, a: str = "i2t_R@1", b: str = "zero_shot_accuracy") -> tuple[list, list]:
    """The runs of effects() whose detectable effects on metrics `a` and `b` point opposite ways,
    and those with a detectable effect on `b` and none on `a`."""
    signs = effects.assign(sign=detectable(effects)).pivot_table(index="run", columns="metric", values="sign",
                                                                 sort=False)
    if a not in signs or b not in signs:
        return [], []
    return (signs.index[signs[a] * signs[b] < 0].tolist(), signs.index[(signs[a] == 0) & (signs[b] != 0)].tolist())


def answers(space, label_: str) -> pd.Series:
    """Per image of a state (by sample id): 1 where its zero-shot answer (the nearest class
    prompt) is `label_`, else 0."""
    scores = space.image_emb @ space.prompt_emb.T
    return pd.Series((np.asarray(space.prompt_labels)[scores.argmax(axis=1)] == label_).astype(float),
                     index=space.image_ids)


def _paired(a_runs: np.ndarray, b_runs: np.ndarray, groups) -> tuple[float, float, float]:
    """b − a on the same queries: the interval over seeds and images where both sides
    have two seeds or more (core.stats.group_difference), else the paired interval over
    images of the seed means."""
    if len(a_runs) >= 2 and len(b_runs) >= 2:
        g = stats.group_difference(a_runs, b_runs, groups)
        return g.diff, g.low, g.high
    d = stats.paired_difference(a_runs.mean(0), b_runs.mean(0), groups)
    return d.diff, d.low, d.high


@dataclass(frozen=True)
class Majority:
    """majority_table's answer: the table as read, the sign of each of its differences (+1 or -1
    where the interval excludes 0, else 0) and the label it is about."""

    table: pd.DataFrame
    signs: pd.DataFrame
    label: str
    shares: dict[str, float]  # configuration -> its share of validation images answered `label` (mean over seeds)

    def shifted(self, group: str) -> bool:
        """Whether a row's gain lies on the majority's images alone: detectably higher there, with
        no detectable change on the others nor in balanced accuracy."""
        s = self.signs.loc[group]
        return bool(s[f"accuracy on {self.label} images"] > 0 and s["accuracy on the other images"] == 0
                    and s["balanced accuracy"] == 0)

    def reading(self, group: str) -> str:
        """What a row says, in words that follow from its intervals."""
        s, major = self.signs.loc[group], self.label
        if s["balanced accuracy"] > 0:
            return "balanced accuracy rises detectably too: a better classifier"
        if self.shifted(group):
            return (f"better on the {major} images only, balanced accuracy n.d."
                    + (f", {major} answered detectably more often: a shift of answers towards the majority"
                       if s[f"answers {major} (val)"] > 0 else ": no evidence of a better classifier"))
        parts = [f"accuracy on {major} images", "accuracy on the other images", "balanced accuracy"]
        if all(s[c] == 0 for c in parts):
            return "no part of the gain is detectable on its own (the effect on accuracy is near its bound)"
        return "the gain is not confined to the largest label"

    def readings(self) -> dict[str, list[str]]:
        """reading -> the configurations it describes, in table order."""
        out: dict[str, list[str]] = {}
        for g in self.table.index:
            out.setdefault(self.reading(g), []).append(g)
        return out


def _aligned_runs(side: list[pd.DataFrame], order: pd.Series, column: str) -> np.ndarray:
    """[runs, images]: per_image's `column` of each run, in the sample-id order `order`."""
    return np.stack([r.set_index("sample_id").loc[order, column].to_numpy(float) for r in side])


def _effect_cell(d: float, lo: float, hi: float, metric: str) -> str:
    return short_verdict({"metric": metric, "difference": d, "low": lo, "high": hi,
                          "verdict": stats.verdict(d, lo, hi, metric)})


def majority_table(sweep: Sweep, pairs: list[tuple[str, str]], split: str) -> Majority:
    """Why zero-shot accuracy can move against retrieval: per (reference, configuration) pair,
    the paired difference (configuration − reference, interval over seeds and images) in how often
    it answers the `split`'s largest label (on val, where the image embeddings are stored), and on
    `split` in accuracy on that label's images and on the others, in balanced accuracy and in
    image → text R@1 at the concept level."""
    rows, signs, shares, majority = {}, {}, {}, None
    for a, b in pairs:
        sides = [[per_image(sweep, n, split) for n in sweep.groups[g]] for g in (a, b)]
        first = sides[0][0]
        majority = majority or label_shares(first).index[0]
        major, ids = (first["label"] == majority).to_numpy(), first["image_id"].to_numpy()
        zero_shot = [_aligned_runs(side, first["sample_id"], "zero_shot") for side in sides]
        concept = [_aligned_runs(side, first["sample_id"], "concept") for side in sides]
        weight = balanced_weights(first["label"])
        said = [np.stack([answers(spaces(sweep.runs[n].path)[1], majority).sort_index().to_numpy()
                          for n in sweep.groups[g]]) for g in (a, b)]
        val_ids = answers(spaces(sweep.runs[sweep.groups[a][0]].path)[1], majority).sort_index().index.to_numpy()
        found = {f"answers {majority} (val)": (_paired(*said, val_ids), None),
                 f"accuracy on {majority} images": (_paired(*(z[:, major] for z in zero_shot), ids[major]),
                                                    "zero_shot_accuracy"),
                 "accuracy on the other images": (_paired(*(z[:, ~major] for z in zero_shot), ids[~major]),
                                                  "zero_shot_accuracy"),
                 "balanced accuracy": (_paired(*(z * weight for z in zero_shot), ids), "zero_shot_accuracy"),
                 "image→text R@1, concept": (_paired(*concept, ids), "i2t_R@1")}
        rows[b], signs[b] = {"against": a}, {}
        shares |= {a: float(said[0].mean()), b: float(said[1].mean())}
        for column, ((d, lo, hi), metric) in found.items():
            signs[b][column] = 1 if lo > 0 else -1 if hi < 0 else 0
            rows[b][column] = f"{d:+.3f} [{lo:.3f}, {hi:.3f}]" if metric is None else _effect_cell(d, lo, hi, metric)
    table = pd.DataFrame(rows).T
    if table["against"].nunique() == 1:  # one reference for all: the caption names it
        table = table.drop(columns="against")
    return Majority(table, pd.DataFrame(signs).T, majority, shares)


def rank_agreement(table: pd.DataFrame, a: str, b: str) -> tuple[float, float, int]:
    """Spearman's rank correlation of two metrics over the configurations of a figures table:
    (rho, two-sided p-value, configurations)."""
    both = table[[a, b]].dropna()
    if len(both) < 3 or both[a].nunique() < 2 or both[b].nunique() < 2:  # no ranks to correlate
        return np.nan, np.nan, len(both)
    result = scipy_stats.spearmanr(both[a], both[b])
    return float(result.statistic), float(result.pvalue), len(both)


# --------------------------------------------------------------------- forgetting


@dataclass(frozen=True)
class Forgetting:
    """A configuration that evaluates an extra set (what its starting point was trained on), read
    for the write-up: `table` holds, per point (step 0, the end, each WiSE-FT ratio), the figure
    on its own val, on `held_out` and on its own test, each the mean over seeds with the
    interval over seeds and images, and the change on `held_out` from the start; `figures` the
    same as numbers; `points` what charts.forgetting_chart draws."""

    group: str
    held_out: str
    source: str
    trained_on: str
    seeds: int
    table: pd.DataFrame  # text cells, a column per set ("<metric label>: own val", ...), and "change on <held_out>"
    figures: pd.DataFrame  # the same as numbers: "<metric> <set>" with its "low" and "high" columns
    points: pd.DataFrame
    held_out_test: str | None  # an extra set on the starting point's test images, where the run has one
    metric: str = "i2t_R@1"

    def cell(self, point: str, which: str) -> str:
        """The text cell of `point` (a row of table) on `which` ("own val", "own test", an extra
        set's name, or "change": the change on held_out from the start)."""
        column = f"change on {self.held_out}" if which == "change" else f"{label(self.metric)}: {which}"
        return self.table.loc[point, column]

    def change(self, point: str) -> tuple[float, float, float]:
        """The change on held_out from the start to `point`: (mean over seeds, low, high)."""
        c = f"change on {self.held_out}"
        return tuple(float(self.figures.loc[point, k]) for k in (c, f"{c} low", f"{c} high"))


def _point_figures(sweep: Sweep, run: str, splits: list[str]) -> dict[str, pd.DataFrame]:
    """point -> (split -> value, low, high of the metric rows) of one run: its first and last
    evaluation and its WiSE-FT ratios."""
    rows = sweep.evals[(sweep.evals["run"] == run) & sweep.evals["split"].isin(splits)]
    points = {"step 0": rows[rows["step"] == rows["step"].min()], "end": rows[rows["step"] == rows["step"].max()]}
    wise = sweep.wise
    wise = wise[(wise["run"] == run) & wise["split"].isin(splits)] if not wise.empty else rows[:0]
    points |= {f"WiSE-FT {r:g}": at for r, at in wise.groupby("wise_ft_ratio", sort=True)}
    return points


def forgetting(sweep: Sweep, metric: str = "i2t_R@1") -> list[Forgetting]:
    """Per configuration that evaluates an extra set: Forgetting. With WiSE-FT ratios the rows are
    the ratios (0 is the start, 1 the end); without, step 0 and the end."""
    out = []
    for g in sweep.groups:
        config = sweep.config(g)
        extra = config.get("extra_evals") or []
        for held_out in [e["name"] for e in extra if e.get("split", "val") == "val"]:
            test_set = next((e["name"] for e in extra if e.get("split") == "test"
                             and e.get("exclude_labels") == next(x for x in extra if x["name"] == held_out)
                             .get("exclude_labels")), None)
            # named after the metric, so that group_table keeps a rate's interval within [0, 1]
            splits = {split: f"{metric} {name}" for split, name in
                      {"val": "own val", held_out: held_out, "test": "own test", test_set: test_set}.items() if split}
            per_point: dict[str, dict[str, pd.DataFrame]] = {}
            for n in sweep.groups[g]:
                for point, rows in _point_figures(sweep, n, list(splits)).items():
                    rows = rows[rows["metric"] == metric]
                    per_point.setdefault(point, {})[n] = pd.DataFrame(
                        {"value": rows["value"].to_numpy(), "low": rows["low"].to_numpy(),
                         "high": rows["high"].to_numpy()}, index=rows["split"].map(splits).to_numpy())
            if not any(splits[held_out] in f.index for f in per_point.get("end", {}).values()):
                continue
            ratios = [p for p in per_point if p.startswith("WiSE-FT")]
            order = ratios if ratios else ["step 0", "end"]
            change = f"change on {held_out}"  # no "_R@" in the name: a change may be negative
            for n in sweep.groups[g]:
                count = sweep.evals[(sweep.evals["run"] == n) & (sweep.evals["split"] == held_out)
                                    & (sweep.evals["metric"] == "n_images")]["value"].max()
                start = per_point[order[0]][n].loc[splits[held_out], "value"]
                for point in order:
                    at = per_point[point][n].loc[splits[held_out], "value"]
                    half = 0.0 if point == order[0] else _paired_half_width_bound(start, at, count)
                    per_point[point][n].loc[change] = [at - start, at - start - half, at - start + half]
            tables = {p: _combined(sweep, per_point[p], [*splits.values(), change]).iloc[0] for p in order}
            table = pd.DataFrame(tables).T
            names = {p: p + (" (stage start)" if p == ratios[0] else " (end of training)" if p == ratios[-1] else "")
                     for p in order} if ratios else {}
            figures_ = table.astype(float).rename(index=names)
            shown = {c: f"{label(metric)}: {c.removeprefix(f'{metric} ')}" for c in splits.values()}
            cells_ = interval_cells(figures_, [*splits.values(), change])[[*splits.values(), change]].rename(
                columns=shown)
            frame = stack([forgetting_frame(sweep.evals[sweep.evals["run"] == n], sweep.wise, metric, held_out)
                           .assign(run=n) for n in sweep.groups[g]])
            points = (frame.groupby("point", sort=False).agg(
                wise_ft_ratio=("wise_ft_ratio", "first"),
                **{c: (c, "mean") for c in ("fine_tuning_data", "held_out", "gain_on_fine_tuning_data",
                                            "change_on_held_out")}).reset_index().assign(run=g))
            out.append(Forgetting(group=g, held_out=held_out, source=_source_group(sweep, config),
                                  trained_on=", ".join(config.get("include_labels") or ["its data"]),
                                  seeds=len(sweep.groups[g]), table=cells_, figures=figures_, points=points,
                                  held_out_test=test_set, metric=metric))
    return out


def _paired_half_width_bound(a: float, b: float, n: float) -> float:
    """The widest 95% half-width (normal approximation) that the paired difference b − a of two
    rates on the same n images can have: the variance of a per-image difference of 0/1
    outcomes is largest when as few images as possible are right under both,
    a(1 − a) + b(1 − b) + 2(ab − max(0, a + b − 1)). For a change whose per-image outcomes are
    stored on one side only (WiSE-FT points and a stage's end on an extra set)."""
    both = max(0.0, a + b - 1)
    variance = a * (1 - a) + b * (1 - b) + 2 * (a * b - both)
    return float(scipy_stats.norm.ppf(0.5 + stats.CONFIDENCE / 2) * np.sqrt(max(variance, 0.0) / n))


def wise_choice(f: Forgetting) -> tuple[str | None, pd.Series]:
    """The WiSE-FT ratio chosen on validation: the one that keeps most of both stages, scored as
    the mean of two shares, each 0 at one end of the mix and 1 at the other: the share of the
    stage's own-val gain it keeps, (own(α) − own(0)) / (own(1) − own(0)), and the share of the
    held-out figure it keeps, (held(α) − held(1)) / (held(0) − held(1)), on the means over seeds.
    None where there are no ratios or either stage did not move."""
    rows = f.figures[f.figures.index.str.startswith("WiSE-FT")]
    if len(rows) < 3:
        return None, pd.Series(dtype=float)
    own, held = rows[f"{f.metric} own val"], rows[f"{f.metric} {f.held_out}"]
    gain, loss = own.iloc[-1] - own.iloc[0], held.iloc[0] - held.iloc[-1]
    if not (gain > 0 and loss > 0):
        return None, pd.Series(dtype=float)
    score = ((own - own.iloc[0]) / gain + (held - held.iloc[-1]) / loss) / 2
    return str(score.idxmax()), score


def _source_group(sweep: Sweep, config: dict) -> str:
    """The configuration a run's init_from names (its run, one seed of it, is in the sweep)."""
    source = config.get("init_from")
    return sweep.group_of(source) if source in sweep.runs else source or "the pretrained model"


def forgetting_chart(sweep: Sweep, f: Forgetting) -> alt.Chart:
    """charts.forgetting_chart of one Forgetting, the seeds' mean, in its configuration's colour
    (named in the text: a legend of one entry says nothing)."""
    chart = charts.forgetting_chart(f.points, "i2t_R@1", f.held_out, colors={f.group: sweep.colors[f.group]})
    for layer in chart.layer:
        if layer.encoding is not alt.Undefined and layer.encoding.color is not alt.Undefined:
            layer.encoding.color.legend = None
    return chart.properties(width=480, height=260)


# ------------------------------------------------------------- texts the dataset does not hold


# Prompt templates for the emoji's Unicode groups, in the manner of CLIP's ImageNet ensemble.
TEMPLATES = ["an emoji of the category {}", "{}", "an emoji from the group {}", "a {} emoji", "an icon of {}",
             "a picture in the category {}"]
# Free-text queries that no caption holds, each with the captions a reader would accept as its
# answer (a regular expression, case-insensitive, over the caption): hits are counted by this rule
# and marked in the figure, not judged by eye. A query no validation image answers counts as such.
QUERIES = {
    "a red fruit": r"\b(?:cherries|strawberry|red apple|tomato)\b",
    "something you wear on your head": r"\b(?:hat|cap|crown|helmet|tiara|turban|headscarf)\b",
    "a very sad face": r"\b(?:sad|crying|disappointed|frowning|anguished|pensive|weary)\b",
    "a vehicle that flies": r"\b(?:airplane|helicopter|rocket|flying saucer|satellite|parachute)\b",
    "an animal that lives in the sea": r"\b(?:dolphin|whale|fish|octopus|shark|seal|crab|lobster|shrimp|squid"
                                       r"|jellyfish|coral|oyster|blowfish)\b(?! cake)",
    "a sport played with a ball": r"\b(?:soccer ball|baseball|softball|basketball|volleyball|american football"
                                  r"|rugby football|tennis|bowling|cricket game|ping pong|lacrosse|golfing"
                                  r"|flag in hole|handball|water polo|pool 8 ball|bouncing ball|field hockey)\b",
}


def encode_texts(run: run_store.Run, texts: list[str]) -> np.ndarray:
    """The run's embeddings of `texts` (training/encode_text.py in a subprocess: the text tower
    needs torch, which analysis/ and the notebook never import). RuntimeError with the script's
    last words where it fails (a hub model offline, weights that do not fit)."""
    done = subprocess.run([sys.executable, str(ROOT / "training" / "encode_text.py"), str(run.path), *texts],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode:
        raise RuntimeError((done.stderr.strip().splitlines() or ["no message"])[-1])
    return np.asarray(json.loads(done.stdout)["embeddings"], dtype=np.float32)


@dataclass(frozen=True)
class TextProbe:
    """A run's last validation embeddings with texts the dataset does not hold, embedded by its
    own text tower: free-text queries and zero-shot prompts under several templates."""

    rows: pd.DataFrame  # the images' embedding rows (no vectors)
    images: np.ndarray  # [images, dim], the stored vectors
    labels: list[str]  # the dataset's labels, the classes zero-shot chooses among
    queries: dict[str, np.ndarray]  # query -> [dim]
    prompts: dict[str, np.ndarray]  # template -> [labels, dim]
    template: str  # the run's own template (its stored zero-shot outcomes used it)
    accepts: dict[str, str]  # query -> the regular expression of the captions that answer it


def text_probe(run: run_store.Run, queries: dict[str, str] = QUERIES, templates: list[str] = TEMPLATES) -> TextProbe:
    """Embeds `queries` (query -> the captions it accepts, as QUERIES) and every template's
    prompts in one call of the run's text tower."""
    template = run.config.get("prompt_template") or "{}"
    templates = list(dict.fromkeys([template, *templates]))
    labels = label_list(load_manifest(run.config.get("data", ""))["label"])
    vectors = encode_texts(run, [*queries, *(t.format(n) for t in templates for n in labels)])
    rows, images = run_store.read_last_vectors(run.path)
    keep = (rows["modality"] == "image").to_numpy()
    prompts = vectors[len(queries):].reshape(len(templates), len(labels), -1)
    return TextProbe(rows=rows[keep].reset_index(drop=True), images=images[keep], labels=labels,
                     queries=dict(zip(queries, vectors[:len(queries)], strict=True)),
                     prompts=dict(zip(templates, prompts, strict=True)), template=template, accepts=dict(queries))


def accepted(probe: TextProbe, query: str) -> np.ndarray:
    """[images] bool: the validation images whose caption answers `query` by its rule."""
    return probe.rows["caption"].str.contains(probe.accepts[query], case=False, regex=True).to_numpy()


def query_hits(probe: TextProbe, k: int = 5) -> pd.DataFrame:
    """Per free-text query: the validation images its rule accepts, how many of the `k` nearest
    are accepted, the rank of the first accepted one, and that rank's expectation in a random order."""
    rows = {}
    for query, vector in probe.queries.items():
        ok = accepted(probe, query)
        order = np.argsort(-(probe.images @ vector), kind="stable")
        hits = np.flatnonzero(ok[order])
        rows[query] = {"accepted images": int(ok.sum()), f"accepted in the {k} nearest": int(ok[order[:k]].sum()),
                       "rank of the first accepted": int(hits[0]) + 1 if len(hits) else np.nan,
                       # the expected rank of the first of m marked items in a random order of n: (n + 1) / (m + 1)
                       "the same in a random order": (len(ok) + 1) / (ok.sum() + 1) if ok.any() else np.nan}
    table = pd.DataFrame(rows).T.rename_axis("query")
    counts = ["accepted images", f"accepted in the {k} nearest", "rank of the first accepted"]
    return table.astype({c: "Int64" for c in counts}).astype({"the same in a random order": float}).round(1)


def query_figure(probe: TextProbe, thumbs: dict[str, bytes], k: int = 5) -> Figure:
    """Each free-text query with its `k` nearest validation images and their cosines."""
    fig = Figure(figsize=(1.8 * k + 2.2, 2.0 * len(probe.queries)))
    axes = fig.subplots(len(probe.queries), k, squeeze=False)
    for row_axes, (query, vector) in zip(axes, probe.queries.items(), strict=True):
        scores = probe.images @ vector
        ok = accepted(probe, query)
        for ax, i in zip(row_axes, np.argsort(-scores, kind="stable")[:k], strict=True):
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():  # a dark frame: the query's rule accepts this image
                s.set_visible(bool(ok[i]))
                s.set(color=NEUTRAL[0], linewidth=2.5)
            image_id = probe.rows["image_id"].iloc[i]
            if image_id in thumbs:
                ax.imshow(_picture(thumbs[image_id]))
            caption = textwrap.wrap(probe.rows["caption"].iloc[i], 18, max_lines=2, placeholder="…")
            ax.set_xlabel("\n".join([("✔ " if ok[i] else "") + caption[0], *caption[1:], f"{scores[i]:.2f}"]),
                          fontsize=8)
        row_axes[0].set_ylabel("\n".join(textwrap.wrap(f"“{query}”", 18)), fontsize=9, rotation=0, ha="right",
                               va="center")
    fig.suptitle(f"Free-text queries: the {k} nearest validation images (caption, cosine; ✔ and a frame: "
                 "the query's rule accepts it)", fontsize=10)
    fig.tight_layout()
    return fig


def _class_embeddings(probe: TextProbe, template: str | None) -> np.ndarray:
    """[labels, dim]: one template's prompts, or with None the ensemble of all templates (the mean
    of their normalised embeddings, normalised again, as CLIP's prompt ensembles)."""
    if template is not None:
        return probe.prompts[template]
    mean = np.mean(list(probe.prompts.values()), axis=0)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True)


def zero_shot_outcomes(probe: TextProbe, template: str | None) -> pd.DataFrame:
    """Per validation image: its label, the predicted label (the nearest prompt) and whether it is
    right; a tie between its own label's prompt and another counts against it, as in evaluation."""
    sims = probe.images @ _class_embeddings(probe, template).T
    index = {n: i for i, n in enumerate(probe.labels)}
    target = probe.rows["label"].map(index).to_numpy()
    own = sims[np.arange(len(sims)), target]
    correct = (sims >= own[:, None]).sum(axis=1) == 1
    return pd.DataFrame({"image_id": probe.rows["image_id"], "label": probe.rows["label"],
                         "predicted": [probe.labels[i] for i in sims.argmax(axis=1)], "correct": correct.astype(float)})


def agreement(outcomes: pd.DataFrame, samples: pd.DataFrame) -> float:
    """The share of zero_shot_outcomes' images whose outcome is the one the run stored (samples:
    its samples.parquet rows): how faithfully the probe's rebuilt text tower repeats the evaluation."""
    stored = validation(samples).query("modality == 'image'").set_index("image_id")["zero_shot_correct"]
    return float((outcomes.set_index("image_id")["correct"] == stored.reindex(outcomes["image_id"])).mean())


def prompt_table(probe: TextProbe) -> pd.DataFrame:
    """Zero-shot accuracy of the validation images under each template and the ensemble of all,
    with bootstrap intervals over images, and each one's paired difference from the run's own
    template."""
    own = zero_shot_outcomes(probe, probe.template)["correct"].to_numpy()
    figures_, verdicts = {}, {}
    for template in [*probe.prompts, None]:
        out = zero_shot_outcomes(probe, template)
        name = "ensemble of all" if template is None else f"“{template}”"
        figures_[name] = {f"zero_shot_accuracy{end}": v
                          for end, v in zip(("", " low", " high"), _interval_cell(out["correct"]), strict=True)}
        paired = stats.paired_difference(own, out["correct"].to_numpy())
        verdicts[name] = ("(the run's own)" if template == probe.template else short_verdict(
            {"metric": "zero_shot_accuracy", "difference": paired.diff, "low": paired.low, "high": paired.high,
             "verdict": stats.verdict(paired.diff, paired.low, paired.high, "zero_shot_accuracy")}))
    table = cells(pd.DataFrame(figures_).T, ["zero_shot_accuracy"])
    return table.assign(**{"accuracy − the run's template's": pd.Series(verdicts)})


def prompt_holdout(probe: TextProbe, concept_of: dict[str, str] | None, seed: int = 0) -> dict:
    """A prompt chosen the way a user would choose one, and measured where it was not chosen: the
    validation concepts (images where there are none) are split in two halves at random; the
    template, or the ensemble, with the highest zero-shot accuracy on the first half is chosen,
    and its paired difference from the run's own template is measured on the second (a bootstrap
    over images, concept siblings resampled together). Returns chosen (its name), the halves'
    image counts, and difference, low, high and verdict on the second half."""
    ids = probe.rows["image_id"]
    groups = ids.map(concept_of).fillna(ids) if concept_of else ids
    names = groups.unique()
    first = set(names[np.random.default_rng(seed).permutation(len(names))[:len(names) // 2]])
    choose = groups.isin(first).to_numpy()
    outcomes = {t: zero_shot_outcomes(probe, t)["correct"].to_numpy() for t in [*probe.prompts, None]}
    chosen = max(outcomes, key=lambda t: outcomes[t][choose].mean())  # the first of equals: the run's own
    paired = stats.paired_difference(outcomes[probe.template][~choose], outcomes[chosen][~choose],
                                     groups[~choose].to_numpy())
    return {"chosen": "the ensemble of all" if chosen is None else f"“{chosen}”",
            "own": chosen == probe.template, "choose_images": int(choose.sum()), "measure_images": int((~choose).sum()),
            "difference": paired.diff, "low": paired.low, "high": paired.high,
            "verdict": stats.verdict(paired.diff, paired.low, paired.high, "zero_shot_accuracy")}


def answer_agreement(sweep: Sweep, a: str, b: str, split: str) -> dict[str, float]:
    """How alike configurations `a` and `b` answer on `split`: the share of images whose nearest
    caption is the same in a's and b's runs of one seed (mean over the seeds both have), and, for
    scale, the same share between two seeds of `a` (mean over its pairs of seeds)."""
    firsts = {}
    for n in {*sweep.groups[a], *sweep.groups[b]}:
        last = on_split(_samples(sweep.runs[n].path), split)
        images = last[(last["modality"] == "image") & (last["step"] == last["step"].max())]
        firsts[n] = images.set_index("sample_id")["topk_ids"].str[0]

    def same(x: str, y: str) -> float:
        return float((firsts[x] == firsts[y].reindex(firsts[x].index)).mean())

    by_seed = {name: {sweep.runs[n].config.get("seed"): n for n in sweep.groups[name]} for name in (a, b)}
    shared = [s for s in by_seed[a] if s in by_seed[b]]
    a_runs = list(by_seed[a].values())
    return {"same_seed": float(np.mean([same(by_seed[a][s], by_seed[b][s]) for s in shared])) if shared else np.nan,
            "seeds": len(shared),
            "across_seeds": float(np.mean([same(x, y) for i, x in enumerate(a_runs) for y in a_runs[i + 1:]]))
            if len(a_runs) > 1 else np.nan}


def confusion_figure(outcomes: pd.DataFrame, title: str) -> Figure:
    """The confusion matrix of zero-shot predictions: rows the true label, columns the predicted,
    each row as shares of its images (the counts in the cells)."""
    labels = sorted(set(outcomes["label"]) | set(outcomes["predicted"]))
    counts_ = pd.crosstab(outcomes["label"], outcomes["predicted"]).reindex(index=labels, columns=labels, fill_value=0)
    shares = counts_.div(counts_.sum(axis=1).replace(0, 1), axis=0)
    fig = Figure(figsize=(7.2, 5.6))
    ax = fig.subplots()
    image = ax.imshow(shares.to_numpy(), cmap="Greys", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(counts_.to_numpy()):
        if n:
            ax.text(j, i, str(n), ha="center", va="center", fontsize=9,
                    color="white" if shares.iloc[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=9)
    ax.set_yticks(range(len(labels)), [f"{n} ({counts_.loc[n].sum()})" for n in labels], fontsize=9)
    ax.set(xlabel="predicted label", ylabel="true label (images)", title=title)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the row's images")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ the literature


# What the literature found about each factor a comparison may change (its sweep-file `factor`).
LITERATURE = {
    "batch_size": "more negatives per step help (Radford et al. 2021; saturating near a batch of tens of thousands, "
                  "Zhai et al. 2023)",
    "learn_temperature": "learning the temperature spares a search for it (Radford et al. 2021)",
    "init_temperature": "a fixed temperature is a value to search for; CLIP learns it instead (Radford et al. 2021)",
    "data_fraction": "performance grows smoothly with data (Cherti et al. 2023)",
    "unlock_text": "a locked image tower with a trained text tower transfers best (Zhai et al. 2022)",
    "unlock_image": "a locked image tower with a trained text tower transfers best (Zhai et al. 2022)",
    "epochs": "more passes over small data help until the model overfits",
    "lr": "no general value: it is searched for",
    "data": "a test set sharing concepts with training overstates transfer",
}


# The factors whose literature claim has a direction: more of the factor should raise the figures
# (a larger batch, more data, an unlocked text tower, more passes over small data short of
# overfitting, a test set that shares concepts with training).
MORE_IS_BETTER = ["batch_size", "data_fraction", "unlock_text", "epochs", "data"]


def _expected_sign(sweep: Sweep, comparison: dict, run: str) -> int | None:
    """+1 or -1: the direction the literature expects run − reference to take; None where its claim
    has no direction (or the factor is not one whose values order)."""
    factor = next((f for f in comparison.get("factor") or [] if f in MORE_IS_BETTER), None)
    if factor is None:
        return None
    a, b = sweep.config(comparison["reference"]).get(factor), sweep.config(run).get(factor)
    if factor == "data":  # the split comparison: the leaky split is expected to score higher
        return 1 if "leaky" in str(b) and "leaky" not in str(a) else None
    try:
        return int(np.sign(float(b or 0) - float(a or 0))) or None
    except (TypeError, ValueError):
        return None


def literature_table(sweep: Sweep, effects: pd.DataFrame, metrics: tuple[str, ...] = ("i2t_R@1", "t2i_R@1")
                     ) -> pd.DataFrame:
    """Per comparison: what the literature found about its factor, what these runs measured of
    `metrics` for each of its configurations in a word (better, worse, n.d.: the effects table
    beside which this is read holds each difference with its interval), and whether that agrees:
    "agrees" where every metric moved detectably the expected way, "contrary" where one moved
    detectably against it, "not detectable" otherwise, "–" where the claim has no direction."""
    rows = {}
    for c in sweep.comparisons:
        found = effects[(effects["comparison"] == c["name"]) & (effects["metric"].isin(metrics))]
        if found.empty:
            continue
        claim = next((LITERATURE[f] for f in c.get("factor") or [] if f in LITERATURE), "–")
        words, checks = [], []
        for run, rs in found.groupby("run", sort=False):
            rs = rs.set_index("metric").reindex([m for m in metrics if m in set(rs["metric"])])
            words.append(f"{run}: " + ", ".join(short_verdict(r.to_dict() | {"metric": m}).rsplit(" ", 1)[-1]
                                                 for m, r in rs.iterrows()))
            expected = _expected_sign(sweep, c, run)
            signs = detectable(rs.reset_index())
            checks.append("–" if expected is None else "contrary" if (signs == -expected).any()
                          else "agrees" if (signs == expected).all() else "not detectable")
        rows[c["name"]] = {"the literature": claim, f"these runs ({', '.join(label(m) for m in metrics)})":
                           "; ".join(words), "agrees?": ", ".join(checks)}
    return pd.DataFrame(rows).T


# --------------------------------------------------------------------- the sweep to try next


def sweep_file_table(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A sweep file as two short tables: one row per [base], run and grid with the settings it
    sets ("lr 1e-05, ..."), and its comparisons; empty frames where the file is absent."""
    import tomllib

    if not path.is_file():
        return pd.DataFrame(), pd.DataFrame()
    spec = tomllib.loads(path.read_text())
    parts = {"[base]": spec.get("base", {}), **(spec.get("runs") or {}),
             **{f"[grid] {n}": o for n, o in (spec.get("grids") or {}).items()}}
    settings = pd.DataFrame({"settings": {n: ", ".join(f"{k} {v if isinstance(v, (list, dict)) else setting(v)}"
                                                       for k, v in o.items()) for n, o in parts.items()}})
    comparisons = pd.DataFrame([{"comparison": n, "reference": c.get("reference"), "runs": ", ".join(c.get("runs", [])),
                                 "factor": ", ".join(c.get("factor", [])), "note": c.get("note", "")}
                                for n, c in (spec.get("comparisons") or {}).items()])
    return settings, comparisons


def train_command(config: dict) -> tuple[Path, str]:
    """The sweep file a run came from and the command that trains that sweep. A run trained in
    another clone (a benchmark's) records that clone's absolute path: one of the project's sweep
    files is then named by its place in this checkout."""
    sweep_file = Path(str(config.get("sweep_file", "")))
    local = ROOT / "training" / "sweeps" / sweep_file.name
    if sweep_file.parent.name == "sweeps" and local.is_file():
        sweep_file = local.relative_to(ROOT)
    elif sweep_file.is_absolute() and sweep_file.is_relative_to(Path.cwd()):
        sweep_file = sweep_file.relative_to(Path.cwd())
    is_default = bool(sweep_file.name) and (ROOT / sweep_file).resolve() == DEFAULT_SWEEP.resolve()
    return sweep_file, "accelerate launch training/train.py" + ("" if is_default else f" --sweep {sweep_file}")


def run_table(sweep: Sweep, run: str, split: str, which: str = "last") -> pd.DataFrame:
    """One run's figures on `split` as a one-row figures table (m, m low, m high; its bootstrap
    interval over images), for interval_text."""
    f = _figures(sweep, run, split, which)
    return pd.DataFrame({f"{m}{end}": [f.loc[m, c]] for m in f.index for end, c in (("", "value"), (" low", "low"),
                                                                                     (" high", "high"))}, index=[run])


def disjoint(table: pd.DataFrame, a: str, b: str, metric: str) -> bool:
    """Whether two rows' intervals of `metric` do not overlap: a difference that shows without
    pairing (conservative where the pairing is not stored)."""
    lo_a, hi_a, lo_b, hi_b = (table.loc[r, f"{metric} {e}"] for r in (a, b) for e in ("low", "high"))
    return bool(hi_a < lo_b or hi_b < lo_a)


def interval_text(table: pd.DataFrame, row: str, metric: str) -> str:
    """One figure of a figures table for a sentence: "0.312 [0.280, 0.345]" ("NaN" where missing)."""
    if row not in table.index or metric not in table.columns:
        return "NaN"
    return interval_cells(table.loc[[row]], [metric]).iloc[0][metric]


def step0_answers(run: run_store.Run) -> dict | None:
    """Zero-shot at step 0 from the stored validation embeddings and prompts: the accuracy, the
    label answered most, the share of images given it and that label's own share of the images,
    and the image cone (mean cosine of two images). None without stored prompts."""
    try:
        space = spaces(run.path)[0]
    except ValueError:  # no embeddings
        return None
    if len(space.prompt_labels) == 0:
        return None
    answers = np.asarray(space.prompt_labels)[np.argmax(space.image_emb @ space.prompt_emb.T, axis=1)]
    top = pd.Series(answers).value_counts()
    truth = pd.Series(space.image_labels)
    return dict(accuracy=float(np.mean(answers == truth.to_numpy())), label=str(top.index[0]),
                answered=float(top.iloc[0] / len(answers)), share=float((truth == top.index[0]).mean()),
                labels_answered=int(len(top)), labels=int(len(space.prompt_labels)),
                cone=float(gap_table(space, space)["image_cone"].iloc[0]))
