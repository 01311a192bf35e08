"""The write-up's helpers (writeup.ipynb): one sweep's runs read once, figures formatted for
its sentences, charts and figures shown as PNG, and the comparisons its sections draw.

The notebook states what these return; the sentences live in its cells, not here. Torch-free
like the rest of analysis/; it also imports IPython, matplotlib and vl-convert to show what it
computes, which is why the dashboard does not import it.

    from analysis import report
    sweep = report.load_sweep("runs")
    report.say(f"Baseline **{sweep.base}**: R@1 {report.num(sweep.final[sweep.base].get('i2t_R@1'))}")
"""

from __future__ import annotations

import io
import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import vl_convert
from IPython.display import Image, Markdown, display
from matplotlib.figure import Figure
from PIL import Image as PILImage

import charts
from analysis.names import RECALL_AT_K, label
from analysis.runs import NO_LABEL, comparison_table, cosine_matrix, forgetting_frame, last_eval, smooth, stack
from data.manifest import REPORT, dataset_dir
from training import run_store
from training.config import DEFAULT_SWEEP, differing_keys

# The knobs the default sweep turns, by the config keys that turn them.
KNOBS = {
    "Learning rate": ["lr", "schedule", "warmup_steps"],
    "Batch size": ["batch_size"],
    "Locked vs trainable towers": ["unlock_image", "unlock_text", "tower_lr"],
    "Temperature": ["learn_temperature", "init_temperature"],
    "Data subset size": ["data_fraction"],
}
KNOB_OF = {key: knob for knob, keys in KNOBS.items() for key in keys}
SAME = 0.005  # an R@1 difference below half a percentage point is "about the same"
# What each built-in model is; any other name is a Hugging Face CLIP checkpoint.
MODELS = {
    "offline-default": "image tower: EfficientNet-Lite0 with ImageNet weights (1280-d features); text tower: "
                       "all-MiniLM-L6-v2 sentence encoder (6 transformer layers, mean-pooled 384-d features)",
    "tiny-clip": "a tiny, randomly initialised CLIP (for tests: its towers know nothing before training)",
}
FRESH_HEADS = ("offline-default", "tiny-clip")  # models whose projection heads start random
EVALUATION_METRICS = [*RECALL_AT_K, "zero_shot_accuracy"]


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


def side_by_side(*parts, **resolve):
    """Charts in one row; `resolve` says which scales they share (color="shared", ...)."""
    parts = [p.copy(deep=False) for p in parts]
    for p in parts:
        p.usermeta = alt.Undefined  # a top-level-only setting: a concatenated part may not carry it
    return alt.hconcat(*parts).resolve_scale(**resolve)


def num(x, digits: int = 3) -> str:
    """A figure for a sentence, to `digits` significant digits; "NaN" where it is missing."""
    return "NaN" if _missing(x) else f"{x:.{digits}g}"


def signed(x, digits: int = 3) -> str:
    """A change for a sentence, with its sign and `digits` decimals; "NaN" where it is missing."""
    return "NaN" if _missing(x) else f"{x:+.{digits}f}"


def pct(x) -> str:
    """A share as a percentage with one decimal; "NaN" where it is missing."""
    return "NaN" if _missing(x) else f"{100 * x:.1f}%"


def counts(values: pd.Series) -> str:
    """Counts by name as "3,126 train, 818 val", in the order given."""
    return ", ".join(f"{n:,} {name}" for name, n in values.items())


def _missing(x) -> bool:
    """Whether a figure is absent: None, NaN or pandas' NA."""
    return x is None or bool(pd.isna(x))


# ------------------------------------------------------------------------- the sweep


@dataclass(frozen=True)
class Sweep:
    """The usable runs of one sweep, read once: what every section of the write-up starts from."""

    root: Path
    name: str
    runs: dict[str, run_store.Run]  # usable runs by name, in the order they started
    names: list[str]  # the runs ranked together: all but the label-subset runs
    subset_runs: list[str]  # trained and validated on a label subset, so on another validation set
    evals: pd.DataFrame  # every usable run's evaluations, with a run column
    wise: pd.DataFrame  # their WiSE-FT evaluations likewise
    metrics: pd.DataFrame  # their training metrics likewise
    final: dict[str, dict[str, float]]  # run -> metric -> value at its last validation evaluation
    step0: dict[str, dict[str, float]]  # the same at its first one (step 0, before training)
    base: str  # the run every other run is compared with
    best: str  # the run the qualitative sections look at
    damaged: list[str]  # a warning per damaged run of the sweep

    @property
    def configs(self) -> dict[str, dict]:
        """run -> its resolved config (config.json)."""
        return {n: r.config for n, r in self.runs.items()}


def load_sweep(runs_dir: Path | str, sweep: str | None = None) -> Sweep:
    """The runs of `sweep` under `runs_dir` (default: the sweep with the most runs) that the
    write-up can use: a readable config and at least one validation evaluation."""
    root = Path(runs_dir)
    every = run_store.list_runs(root)
    sizes = pd.Series([r.sweep for r in every]).value_counts()
    # SystemExit: the notebook then shows the message without a traceback
    if sizes.empty:
        raise SystemExit(f"No runs under {root.resolve()}: train some with `accelerate launch training/train.py`.")
    name = sweep or sizes.index[0]
    in_sweep = [r for r in every if r.sweep == name]
    evals = {r.name: run_store.read_eval(r.path) for r in in_sweep}
    usable = [r for r in in_sweep if r.config and (evals[r.name]["split"] == "val").any()]
    if not usable:
        raise SystemExit(f"Sweep {name!r} under {root} has no run with a validation evaluation.")
    runs = {r.name: r for r in sorted(usable, key=lambda r: r.status.get("start_time") or math.inf)}
    subset = [n for n, r in runs.items() if r.config.get("include_labels") or r.config.get("exclude_labels")]
    names = [n for n in runs if n not in subset] or list(runs)
    stacked = stack([evals[n].assign(run=n) for n in runs])
    final = {n: last_eval(stacked, run=n) for n in runs}
    base = baseline({n: runs[n].config for n in names})
    detailed = [n for n in names if _has_samples(runs[n])]
    return Sweep(root=root, name=name, runs=runs, names=names, subset_runs=subset, evals=stacked,
                 wise=stack([run_store.read_eval(r.path, wise_ft=True).assign(run=n) for n, r in runs.items()]),
                 metrics=stack([run_store.read_metrics(r.path).assign(run=n) for n, r in runs.items()]),
                 final=final, step0={n: last_eval(stacked, which="first", run=n) for n in runs},
                 base=base, best=best_run({n: final[n] for n in detailed or names}),
                 damaged=[f"run {r.key} ({r.state}) is damaged: {'; '.join(r.problems)}"
                          for r in in_sweep if r.problems])


def _has_samples(run: run_store.Run) -> bool:
    """Whether the run wrote the per-sample results and embeddings the detailed sections draw."""
    return (not run_store.read_samples(run.path, columns=["rank"]).empty
            and not run_store.read_embeddings(run.path, with_vectors=False, last_step=True).empty)


def header(sweep: Sweep) -> str:
    """The lines that open the write-up: where its runs come from and which ones it looks at."""
    revisions = sorted({str(c.get("provenance", {}).get("git_revision", "unknown")) for c in sweep.configs.values()})
    lines = [f"warning: {w}" for w in sweep.damaged] + [
        f"runs folder : {sweep.root.resolve()}",
        f"sweep       : {sweep.name} ({len(sweep.runs)} usable run(s): {', '.join(sweep.names)})",
        f"git revision: {', '.join(revisions)}",
        f"baseline run: {sweep.base}; run shown in detail: {sweep.best}"]
    if sweep.subset_runs:
        lines.append(f"label-subset runs (forgetting section): {', '.join(sweep.subset_runs)}")
    lines += [f"note: run {n} is {sweep.runs[n].state}; its numbers are those of its last evaluation"
              for n in sweep.names if sweep.runs[n].state != "FINISHED"]
    return "\n".join(lines)


def config_diff(a: dict, b: dict) -> dict[str, tuple]:
    """The config keys whose values differ between two runs: key -> (value in a, value in b)."""
    return {k: (a.get(k), b.get(k)) for k in differing_keys([a, b])}


def changes(a: dict, b: dict) -> str:
    """What turns config `a` into config `b`, as "`lr` 0.001 → 0.0001, ..."."""
    return ", ".join(f"`{k}` {x} → {y}" for k, (x, y) in config_diff(a, b).items())


def baseline(configs: dict[str, dict]) -> str:
    """The run whose config differs least from all the others' (the first one on a tie): the
    one-factor-at-a-time comparisons are against it."""
    return min(configs, key=lambda n: sum(len(config_diff(configs[n], c)) for c in configs.values()))


def best_run(final: dict[str, dict[str, float]], metric: str = "i2t_R@1") -> str:
    """The run with the highest final `metric`; a run without it comes last."""
    return max(final, key=lambda n: np.nan_to_num(final[n].get(metric, np.nan), nan=-np.inf))


def metric_of(sweep: Sweep, metric: str, names: list[str] | None = None, first: bool = False) -> pd.Series:
    """run -> `metric` at the last (or with `first`, the first) validation evaluation; NaN where missing."""
    values = sweep.step0 if first else sweep.final
    return pd.Series({n: values[n].get(metric, np.nan) for n in names or sweep.names}, dtype=float)


# ---------------------------------------------------------------------- the dataset


@dataclass(frozen=True)
class Dataset:
    """What data preparation says about the runs' dataset."""

    name: str
    source: str
    attribution: str | None  # the licence line the dataset asks for, if any
    size: int | None  # image side in pixels, where preparation rendered the images
    images: pd.DataFrame  # one manifest row per image
    per_split: pd.Series  # images per split
    labels: pd.Series  # image-caption pairs per label, most first


def dataset(data: str, manifest: pd.DataFrame) -> Dataset:
    """The facts the data section states about `manifest`, the prepared dataset `data`."""
    report_file = dataset_dir(data) / REPORT
    prepared = json.loads(report_file.read_text()) if report_file.exists() else {}
    source = prepared.get("source", Path(str(data)).name)
    attribution = None
    if source == "openmoji":
        from data.sources.openmoji import ATTRIBUTION  # only this source needs its module
        attribution = ATTRIBUTION
    images = manifest.drop_duplicates("image_id")
    labels = manifest["label"].replace("", np.nan).dropna().value_counts()
    return Dataset(name=Path(str(data)).name, source=source, attribution=attribution, size=prepared.get("size"),
                   images=images, per_split=images["split"].value_counts(), labels=labels)


def balanced(labels: pd.Series) -> bool:
    """Whether no label holds more than 1.5 times an equal share of the pairs (`labels`: counts)."""
    return bool(len(labels)) and labels.max() / labels.sum() < 1.5 / len(labels)


def label_split_table(images: pd.DataFrame) -> pd.DataFrame:
    """Images per label and split, with each label's share of all images, largest label first."""
    table = (images.assign(label=images["label"].replace("", "(none)"))
             .groupby(["label", "split"]).size().unstack(fill_value=0))
    table["share of images"] = (table.sum(axis=1) / table.to_numpy().sum()).map(pct)
    return table.sort_values(table.columns[0], ascending=False)


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
    a.hist(words, bins=np.arange(0.5, words.max() + 1.5), color="#4c78a8")
    a.set(xlabel="caption length (words)", ylabel="captions", title="Caption lengths")
    ordered = labels.sort_values()  # barh draws bottom up: the largest label on top
    b.barh(ordered.index, ordered.values, color="#f58518")
    b.set(xlabel="image-caption pairs", title="Labels")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- the training


def tower(unlocked: int) -> str:
    """How much of a tower trains, from its unlock_image / unlock_text value."""
    return "locked" if unlocked == 0 else "all trained" if unlocked == -1 else f"top {unlocked} blocks trained"


def settings_table(sweep: Sweep) -> pd.DataFrame:
    """Per ranked run: its towers, learning rates, temperature, batch, epochs and data fraction."""
    rows = []
    for n in sweep.names:
        c = sweep.runs[n].config
        unlocked = c.get("unlock_image") or c.get("unlock_text")
        rows.append({"run": n, "image tower": tower(c.get("unlock_image", 0)),
                     "text tower": tower(c.get("unlock_text", 0)),
                     "heads lr": c.get("lr"), "tower lr": c.get("tower_lr") if unlocked else "-",
                     "temperature": "learned" if c.get("learn_temperature", True)
                     else f"fixed at {c.get('init_temperature') or 0.07}",
                     "batch": c.get("batch_size"), "epochs": c.get("epochs"), "data fraction": c.get("data_fraction")})
    return pd.DataFrame(rows).set_index("run")


def train_command(config: dict) -> tuple[Path, str]:
    """The sweep file a run came from (relative to the working folder where it lies inside it)
    and the command that trains that sweep."""
    sweep_file = Path(str(config.get("sweep_file", "")))
    is_default = bool(sweep_file.name) and sweep_file.resolve() == DEFAULT_SWEEP.resolve()
    if sweep_file.is_absolute() and sweep_file.is_relative_to(Path.cwd()):
        sweep_file = sweep_file.relative_to(Path.cwd())
    return sweep_file, "accelerate launch training/train.py" + ("" if is_default else f" --sweep {sweep_file}")


def provenance(sweep: Sweep) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs' recorded hardware and software: (what every run shares, as one "value" column;
    the columns that differ, one row per run)."""
    prov = pd.DataFrame([{"run": n, **{k: v for k, v in sweep.runs[n].config.get("provenance", {}).items()
                                       if k != "versions"},
                          **sweep.runs[n].config.get("provenance", {}).get("versions", {})}
                         for n in sweep.names]).set_index("run")
    distinct = prov.nunique(dropna=False)
    shared = prov.loc[:, distinct <= 1].iloc[[0]].T
    return shared.set_axis(["value"], axis=1), prov.loc[:, distinct > 1]


def timings(sweep: Sweep) -> pd.DataFrame:
    """Per ranked run: its state, seconds per stage, and its wall time from start to end."""
    rows = []
    for n in sweep.names:
        status = sweep.runs[n].status
        rows.append({"run": n, "state": sweep.runs[n].state, **(status.get("timings") or {}),
                     "total wall (s)": (status.get("end_time") or np.nan) - (status.get("start_time") or np.nan)})
    return pd.DataFrame(rows).set_index("run")


# ------------------------------------------------------------------------ curves


def eval_curve(sweep: Sweep, metric: str, names: list[str], split: str = "val") -> pd.DataFrame:
    """The evaluations of `metric` on `split` of the runs `names`, as a curves_chart frame."""
    e = sweep.evals
    rows = e[(e["metric"] == metric) & (e["split"] == split) & e["run"].isin(names)]
    return rows[["run", "step", "epoch", "value"]].assign(smoothed=rows["value"], evaluated=True)


def train_curve(sweep: Sweep, name: str, names: list[str], weight: float = 0.3) -> pd.DataFrame:
    """The logged training metric `name` of the runs `names`, smoothed, as a curves_chart frame."""
    m = sweep.metrics
    rows = m[(m["name"] == name) & m["run"].isin(names)]
    return smooth(rows, weight).assign(evaluated=False) if not rows.empty else rows


def curves(panels: list[tuple], width: int = 330, height: int = 240):
    """Curves charts side by side, one colour per run across them; `panels` are (frame, metric,
    x, title) and those with no rows are left out."""
    made = [charts.curves_chart(f, m, x=x, height=height).properties(width=width, title=t)
            for f, m, x, t in panels if not f.empty]
    return side_by_side(*made, color="shared")


def knob_curves(sweep: Sweep, names: list[str], right: str = "loss"):
    """The baseline and `names` side by side: validation image → text R@1 by epoch on the left;
    on the right the training loss ("loss"), the temperature by step ("temperature"), or R@1 on
    the training probe ("probe")."""
    runs = [sweep.base, *names]
    second = {"loss": (train_curve(sweep, "loss", runs), "loss", "epoch", "training loss"),
              "temperature": (train_curve(sweep, "temperature", runs, 0), "temperature", "step",
                              "temperature during training"),
              "probe": (eval_curve(sweep, "i2t_R@1", runs, "train"), "i2t_R@1", "epoch",
                        "R@1 on a probe of training images")}[right]
    first = (eval_curve(sweep, "i2t_R@1", runs), "i2t_R@1", "epoch", "validation image → text R@1")
    return curves([first, second], width=300, height=200)


def series(sweep: Sweep, run: str, metric: str = "i2t_R@1", split: str = "val") -> pd.Series:
    """A run's evaluations of `metric` on `split`, indexed by epoch, in step order, NaN left out."""
    e = sweep.evals
    rows = e[(e["run"] == run) & (e["split"] == split) & (e["metric"] == metric)].sort_values("step")
    return rows.set_index("epoch")["value"].dropna()


def one_image(sweep: Sweep, run: str) -> float:
    """The R@1 that one validation image is worth in `run`: differences below it are noise."""
    return 1.0 / max(sweep.final[run].get("n_images", 1.0), 1.0)


# ------------------------------------------------------------- samples and embeddings


def thumbnails(samples: pd.DataFrame) -> dict[str, bytes]:
    """image_id -> PNG thumbnail of the validation images that have one."""
    images = samples[samples["modality"] == "image"]
    return {i: t for i, t in zip(images["image_id"], images["thumbnail"], strict=True) if t is not None}


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


def step_matrix(embeddings: pd.DataFrame, step: int, image_ids: list[str]) -> pd.DataFrame:
    """cosine_matrix of `image_ids` at `step`, each image named by its caption ("image of: ...")."""
    rows, vectors = step_rows(embeddings, step)
    matrix = cosine_matrix(rows, vectors, image_ids)
    images = rows[rows["modality"] == "image"]
    caption = dict(zip(images["image_id"], images["caption"], strict=True))
    return matrix.assign(image=matrix["image"].map(lambda i: f"image of: {caption.get(i, i)}"))


def pair_summary(matrix: pd.DataFrame) -> tuple[float, float, int]:
    """(mean cosine of true pairs, mean cosine of wrong pairs, images whose true caption scores
    highest in their row) of a cosine matrix."""
    right = int(matrix.loc[matrix.groupby("image")["cosine"].idxmax(), "true_pair"].sum())
    return matrix.loc[matrix["true_pair"], "cosine"].mean(), matrix.loc[~matrix["true_pair"], "cosine"].mean(), right


def thumbnail_row(thumbs: dict[str, bytes], image_ids: list[str], matrix: pd.DataFrame) -> Figure:
    """The thumbnails of a cosine matrix's images, in its order, each titled with its caption."""
    fig = Figure(figsize=(1.5 * len(image_ids), 1.9))
    for ax, i in zip(fig.subplots(1, len(image_ids), squeeze=False).flat, image_ids, strict=True):
        ax.axis("off")
        if i in thumbs:
            ax.imshow(_picture(thumbs[i]))
        caption = matrix.loc[matrix["caption_of"] == i, "caption"].iloc[0]
        ax.set_title("\n".join(textwrap.wrap(caption, 16)[:2]), fontsize=7)
    return fig


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


def image_examples(samples: pd.DataFrame, run: str, each: int = 3, seed: int = 2) -> Figure:
    """`each` validation images the run gets right at rank 1 and `each` it gets wrong, with their
    top captions and cosines (✔: a true caption of the image)."""
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
        lines = [f"image of: {row['caption']}  (its rank: {row['rank']})"]
        for k, (sid, score) in enumerate(zip(row["topk_ids"][:3], row["topk_scores"][:3], strict=False), 1):
            lines.append(f"{k}. {caption_of.get(sid, sid)} ({score:.2f})"
                         + ("  ✔" if image_of.get(sid) == row["image_id"] else ""))
        ax_txt.text(0, 0.5, "\n".join(lines), va="center", fontsize=9)
    fig.suptitle(f"{run}: image → top captions", fontsize=10)
    fig.tight_layout()
    return fig


def caption_examples(samples: pd.DataFrame, thumbs: dict[str, bytes], run: str, each: int = 2,
                     seed: int = 3) -> Figure:
    """`each` validation captions whose image the run ranks first and `each` it does not, with
    their top images and cosines (the true image framed in green)."""
    texts = samples[samples["modality"] == "text"]
    queries = pd.concat([texts[texts["rank"] == 1].sample(frac=1, random_state=seed).head(each),
                         texts[texts["rank"] != 1].sample(frac=1, random_state=seed).head(each)])
    k = max(len(ids) for ids in queries["topk_ids"])
    fig = Figure(figsize=(1.7 * k, 2.0 * len(queries)))
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
                    s.set(visible=True, color="#2ca02c", linewidth=3)
        name = textwrap.wrap(f"“{q['caption']}”", 18)[:3] + [f"(true image: rank {q['rank']})"]
        row_axes[0].set_ylabel("\n".join(name), fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(f"{run}: caption → top {k} images (cosine below each)", fontsize=10)
    fig.tight_layout()
    return fig


def majority_label(samples: pd.DataFrame) -> tuple[str | None, float]:
    """The most common label of the validation images and its share ((None, NaN) without labels):
    the accuracy of a classifier that always answers it."""
    labels = samples.loc[samples["modality"] == "image", "label"].dropna().astype(str)
    shares = labels[~labels.isin(NO_LABEL)].value_counts(normalize=True)
    return (shares.index[0], float(shares.iloc[0])) if len(shares) else (None, np.nan)


# -------------------------------------------------------------------- the experiments


def comparison(sweep: Sweep) -> pd.DataFrame:
    """The ranked runs' comparison_table: state, the config values that differ, final metrics."""
    return comparison_table([{"run": n, "state": sweep.runs[n].state, "config": sweep.runs[n].config,
                              "final": sweep.final[n]} for n in sweep.names])


def knob_groups(configs: dict[str, dict], base: str, names: list[str]) -> dict[str, list[str]]:
    """knob -> the runs of `names` that turn it against `base` (configs: run -> config).

    A run that changes keys of several knobs is in each of their groups; a key of no knob makes
    its own "Other (key)" group, and a run that differs only in epochs is in "Epochs only".
    Knobs come in KNOBS' order, then the others by name; runs in the order of `names`."""
    groups: dict[str, list[str]] = {}
    for n in names:
        if n == base:
            continue
        keys = [k for k in config_diff(configs[base], configs[n]) if k != "epochs"]
        for knob in dict.fromkeys(KNOB_OF.get(k, f"Other ({k})") for k in keys) or ["Epochs only"]:
            groups.setdefault(knob, []).append(n)
    order = [k for k in KNOBS if k in groups] + sorted(k for k in groups if k not in KNOBS)
    return {k: groups[k] for k in order}


def verdict(difference: float, tolerance: float = SAME) -> str:
    """How a run compares with the baseline by the difference of their R@1 (NaN: one has none)."""
    if _missing(difference):
        return "not comparable with"
    return "better than" if difference > tolerance else "worse than" if difference < -tolerance else "about the same as"


def knob_effects(sweep: Sweep, groups: dict[str, list[str]]) -> pd.DataFrame:
    """One row per knob and run of `groups`, against the baseline: both runs' _knob_facts (the
    baseline's prefixed "base_"), the R@1 difference and its verdict, the baseline's R@1 at the
    epoch where a run that stopped earlier stopped, and whether the run, behind the baseline,
    was still at its best when it stopped."""
    base, cfg = sweep.base, sweep.configs
    of_base, b = _knob_facts(sweep, base), series(sweep, base)
    columns = ["knob", "run", "changes", *of_base, *(f"base_{k}" for k in of_base), "difference", "verdict",
               "stopped_at", "base_when_stopped", "still_best"]
    rows = []
    for knob, names in groups.items():
        for n in names:
            facts, v = _knob_facts(sweep, n), series(sweep, n)
            # At the epoch where a shorter run stopped, the baseline's R@1 is the fairer comparison.
            shorter = len(v) and len(b) and v.index[-1] != b.index[-1] and v.index[-1] in b.index
            rows.append({"knob": knob, "run": n, "changes": changes(cfg[base], cfg[n]), **facts,
                         **{f"base_{k}": x for k, x in of_base.items()},
                         "difference": facts["r1"] - of_base["r1"], "verdict": verdict(facts["r1"] - of_base["r1"]),
                         "stopped_at": v.index[-1] if shorter else np.nan,
                         "base_when_stopped": float(b.loc[[v.index[-1]]].iloc[-1]) if shorter else np.nan,
                         "still_best": bool(len(v) > 1 and v.iloc[-1] >= v.max() - one_image(sweep, n)
                                            and facts["r1"] < of_base["r1"])})
    return pd.DataFrame(rows, columns=columns)


def _knob_facts(sweep: Sweep, run: str) -> dict:
    """What the knob sections state about one run: final validation image → text R@1 and
    zero-shot accuracy, optimiser steps, negatives per query, its temperature at the start and
    the end, R@1 on the training probe minus validation R@1, training pairs, training seconds
    (NaN where the run did not record it)."""
    m, final, status = sweep.metrics, sweep.final[run], sweep.runs[run].status
    own = m[m["run"] == run]
    temperature = own[own["name"] == "temperature"].sort_values("step")["value"]
    probe = last_eval(sweep.evals, "train", run=run).get("i2t_R@1", np.nan)
    return {"r1": final.get("i2t_R@1", np.nan), "zero_shot": final.get("zero_shot_accuracy", np.nan),
            "steps": int(own["step"].max()) if len(own) else 0,
            "negatives": sweep.configs[run].get("batch_size", 2) - 1,
            "temperature_start": temperature.iloc[0] if len(temperature) else np.nan,
            "temperature": temperature.iloc[-1] if len(temperature) else np.nan,
            "probe_gap": probe - final.get("i2t_R@1", np.nan),
            "train_pairs": status.get("train_pairs") or np.nan,
            "training_s": (status.get("timings") or {}).get("training") or np.nan}


# --------------------------------------------------------------------- the evaluation


def evaluation_table(sweep: Sweep) -> pd.DataFrame:
    """Retrieval and zero-shot figures of every ranked run at step 0 and at the end."""
    rows = {}
    for n in sweep.names:
        rows[(n, "step 0")] = {m: sweep.step0[n].get(m, np.nan) for m in EVALUATION_METRICS}
        rows[(n, "final")] = {m: sweep.final[n].get(m, np.nan) for m in EVALUATION_METRICS}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=EVALUATION_METRICS).rename(columns=label)
    table.index.names = ["run", "when"]
    return table


def peaks(sweep: Sweep) -> pd.DataFrame:
    """Per ranked run: the epoch of its best validation image → text R@1, that R@1 and the final
    one, whether it ended more than one validation image below its best ("early"), and whether
    R@1 on the training probe was still rising after that peak ("rising")."""
    rows = []
    for n in sweep.names:
        val, probe = series(sweep, n), series(sweep, n, split="train")
        if val.empty:
            continue
        peak = val.idxmax()
        early = bool(val.max() - val.iloc[-1] > one_image(sweep, n) + 1e-9)
        rows.append({"run": n, "peak_epoch": peak, "best": val.max(), "final": val.iloc[-1], "early": early,
                     "rising": early and bool(len(probe) and probe.iloc[-1] > probe.get(peak, np.inf))})
    return pd.DataFrame(rows, columns=["run", "peak_epoch", "best", "final", "early", "rising"])


def forgetting(sweep: Sweep, metric: str = "i2t_R@1") -> pd.DataFrame:
    """Per run and extra evaluation set (the data the run's starting point was trained on): where
    it started from and what it trained on, and `metric` on its own validation data and on the
    extra set at its start and at its end."""
    rows = []
    for n, run in sweep.runs.items():
        for held_out in [e["name"] for e in run.config.get("extra_evals") or []]:
            frame = forgetting_frame(sweep.evals[sweep.evals["run"] == n], sweep.wise, metric, held_out)
            if frame.empty:
                continue
            end = frame.iloc[0]  # forgetting_frame's first point is the end of training
            rows.append({"run": n, "held_out": held_out,
                         "source": run.config.get("init_from") or "the pretrained model",
                         "trained_on": ", ".join(run.config.get("include_labels") or ["its data"]),
                         "own_start": end["fine_tuning_data"] - end["gain_on_fine_tuning_data"],
                         "own_end": end["fine_tuning_data"],
                         "held_start": end["held_out"] - end["change_on_held_out"], "held_end": end["held_out"]})
    out = pd.DataFrame(rows, columns=["run", "held_out", "source", "trained_on", "own_start", "own_end",
                                      "held_start", "held_end"])
    out["lost"] = ((out["held_start"] - out["held_end"]) / out["held_start"]).where(out["held_start"] != 0)
    return out


def wise_table(sweep: Sweep, run: str) -> pd.DataFrame:
    """A run's WiSE-FT evaluations: R@1 both ways per split (columns) and mixing ratio α (rows)."""
    w = sweep.wise
    mixed = w[(w["run"] == run) & w["metric"].isin(["i2t_R@1", "t2i_R@1"])] if not w.empty else w
    if mixed.empty:
        return pd.DataFrame()
    table = mixed.pivot_table(index="wise_ft_ratio", columns=["split", "metric"], values="value", aggfunc="last")
    table.index.name = "WiSE-FT ratio α"
    return table


def balanced_ratio(table: pd.DataFrame, held_out: str, metric: str = "i2t_R@1") -> float:
    """The WiSE-FT ratio that keeps most of both: the largest sum of the shares of their best
    values that `metric` reaches on the run's own validation data and on `held_out`."""
    own, held = table[("val", metric)], table[(held_out, metric)]
    return float((own / own.max() + held / held.max()).idxmax())
