"""Frames computed from runs: a run's last evaluation, per-sample outcomes, comparisons,
curves, similarity matrices and UMAP points, for the dashboard, the write-up and train.py's
summary alike.

Pure functions of the frames that core/run_store.py's readers return; nothing here
reads files or imports streamlit or torch.

    from analysis.runs import last_eval, stack
    evals = stack([read_eval(r.path).assign(run=r.key) for r in runs])
    last_eval(evals, run="sweep/locked")["i2t_R@1"]
"""

from __future__ import annotations

import base64
import json
import math
from collections import Counter

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from analysis.geometry import unit
from core.config import differing_keys
from core.names import OUTCOMES, RETRIEVAL, RUNS_METRICS, SUMMARY_METRICS, TABLE_METRICS, label
from core.stats import CONFIDENCE
from core.stats import _decimals as decimals  # verdict()'s rule: the table reads like its sentences

NO_LABEL = {"", "None", "nan"}  # how a missing label reads once written as text


def stack(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Frames of several runs as one (an empty frame for none)."""
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---------------------------------------------------------------------- evaluations


def last_eval(evals: pd.DataFrame, split: str = "val", which: str = "last", run: str | None = None) -> dict[str, float]:
    """metric -> value of a run's last (or, with which="first", first) evaluation on `split`.

    `evals`: read_eval's rows of one run, or with `run` a stack of several runs' rows with a
    `run` column; {} where the run has no evaluation on `split`."""
    rows = _split_rows(evals, split, run)
    if rows.empty:
        return {}
    rows = rows[rows["step"] == _pick_step(rows, which)]
    return dict(zip(rows["metric"], rows["value"], strict=True))


def eval_step(evals: pd.DataFrame, split: str = "val", which: str = "last", run: str | None = None) -> int | None:
    """The step of the evaluation last_eval() returns (None where it returns {})."""
    rows = _split_rows(evals, split, run)
    return None if rows.empty else int(_pick_step(rows, which))


def _split_rows(evals: pd.DataFrame, split: str, run: str | None) -> pd.DataFrame:
    if evals.empty:  # a stack of no runs has no columns to filter on
        return evals
    rows = evals[evals["split"] == split]
    return rows if run is None else rows[rows["run"] == run]


def _pick_step(rows: pd.DataFrame, which: str):
    return rows["step"].max() if which == "last" else rows["step"].min()


def comparison_table(runs: list[dict]) -> pd.DataFrame:
    """One row per run: state, the config values that differ between the runs, final metrics.

    Each item of `runs` has keys run, state, config (dict) and final (metric -> value)."""
    keys = differing_keys([r["config"] for r in runs])
    rows = [{"run": r["run"], "state": r["state"], **{k: _cell(r["config"].get(k)) for k in keys},
             **{m: r["final"].get(m, np.nan) for m in TABLE_METRICS}} for r in runs]
    return pd.DataFrame(rows, columns=["run", "state", *keys, *TABLE_METRICS]).set_index("run")


def _cell(value):
    """A config value as a table cell: lists and tables (label subsets, extra evaluation sets)
    become compact text, so a column can be compared and styled."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return value


BEST_STYLE = "font-weight: bold; background-color: rgba(60, 180, 75, 0.3)"


def style_best(table: pd.DataFrame, marks: pd.DataFrame | None = None):
    """A Styler of a runs table: metric figures to three decimals, NaN shown as NaN, and the
    cells that `marks` (True, same index and columns) sets highlighted. The marks come from
    paired intervals (analysis.compare.best_of): a raw maximum alone says nothing about noise."""
    metrics = [c for c in table.columns if c in TABLE_METRICS or c in RUNS_METRICS]
    config = [c for c in table.columns if c not in metrics]
    # Config values keep their own precision (a learning rate of 1e-4 is not 0.000).
    styler = table.style.format(precision=3, na_rep="NaN", subset=metrics).format(
        lambda v: f"{v:g}" if isinstance(v, float) else v, subset=config)
    if marks is None:
        return styler
    marked = marks.reindex(index=table.index, columns=table.columns, fill_value=False).fillna(False).astype(bool)
    return styler.apply(lambda _: marked.replace({True: BEST_STYLE, False: ""}), axis=None)


# --------------------------------------------------------------- configuration groups


def group_names(runs: list[tuple[str, dict]]) -> dict[str, str]:
    """run key ("<sweep>/<run>") -> its configuration group, "<sweep>/<group>" (config.json's
    `group`; a run without one is its own group, named by its key).

    Runs that claim one group but are not its seeds (the same seed twice, or configs that
    differ in more than the seed, e.g. a copied run folder) are each their own group: a mean
    over them would pass different configurations off as replicates."""
    claimed: dict[str, list[tuple[str, dict]]] = {}
    for key, config in runs:
        sweep, name = key.rsplit("/", 1)
        claimed.setdefault(f"{sweep}/{config.get('group') or name}", []).append((key, config))
    out = {}
    for group, members in claimed.items():
        configs = [_without_seed_suffix(c) for _, c in members]
        seeds = [repr(c.get("seed")) for c in configs]
        replicates = len(set(seeds)) == len(seeds) and set(differing_keys(configs)) <= {"seed"}
        out |= {key: group if replicates or len(members) == 1 else key for key, _ in members}
    return out


def _without_seed_suffix(config: dict) -> dict:
    """The config with an init_from that follows the run's seed ("stage1.s2" for seed 2, as
    core/config.py's replicate names it) read as the configuration it names ("stage1")."""
    source, suffix = config.get("init_from"), f".s{config.get('seed')}"
    if isinstance(source, str) and source.endswith(suffix):
        return dict(config, init_from=source[: -len(suffix)])
    return config


def final_figures(evals: pd.DataFrame, split: str = "val", run: str | None = None) -> pd.DataFrame:
    """metric -> value, low, high of a run's last evaluation on `split` (last_eval with the
    stored 95% intervals; NaN where none was computed or the file predates them)."""
    rows = _split_rows(evals, split, run)
    if rows.empty:
        return pd.DataFrame(columns=["value", "low", "high"], dtype=float)
    rows = rows[rows["step"] == _pick_step(rows, "last")]
    nan = pd.Series(np.nan, index=rows.index)
    return pd.DataFrame({"value": rows["value"], "low": rows.get("low", nan), "high": rows.get("high", nan)}
                        ).set_axis(rows["metric"]).astype(float)


def group_table(runs: list[dict], groups: dict[str, str] | None = None,
                metrics: list[str] = RUNS_METRICS) -> pd.DataFrame:
    """One row per configuration group: seeds (runs in it), their states, the config values
    that differ between groups (a group's `seed` is the list of its seeds), and per metric the
    mean over seeds with a 95% interval, as columns `m`, `m low`, `m high`.

    Each item of `runs` has keys run (key), state, config and figures (final_figures of the
    run); `groups`: run key -> group, default group_names (pass {key: key} for one row per run).

    One seed: the run's stored bootstrap interval over validation images. Several seeds: the
    mean over seeds, mean +- sqrt((t(R-1) * sd / sqrt(R))^2 + h^2), where sd is the seeds'
    standard deviation and h the mean half-width of their stored bootstrap intervals. The
    first term is the t-interval of the seed means, which prices the few seeds a sweep affords
    (t = 4.3 for three); the second keeps the image-to-image variation, which averaging seeds
    on the same images does not remove: seeds that agree exactly are not a certain figure.
    Both come from eval.parquet alone, so the grouped table opens as fast as the per-run one;
    the Compare view's differences combine the same two parts."""
    groups = groups or group_names([(r["run"], r["config"]) for r in runs])
    members: dict[str, list[dict]] = {}
    for r in runs:
        members.setdefault(groups[r["run"]], []).append(r)
    configs = {g: _group_config(rs) for g, rs in members.items()}
    keys = differing_keys(list(configs.values()))
    rows = [{"group": g, "seeds": len(rs), "state": _states(rs), **{k: _cell(configs[g].get(k)) for k in keys},
             **{k: v for m in metrics for k, v in _mean_interval(m, [r["figures"] for r in rs]).items()}}
            for g, rs in members.items()]
    columns = ["group", "seeds", "state", *keys, *[c for m in metrics for c in (m, f"{m} low", f"{m} high")]]
    table = pd.DataFrame(rows, columns=columns).set_index("group")
    for k in keys:  # a group's list of seeds beside one run's seed: one type per column, as a table needs
        if table[k].map(type).nunique() > 1:
            table[k] = table[k].map(lambda v: v if isinstance(v, str) else json.dumps(v))
    return table


def _group_config(runs: list[dict]) -> dict:
    config = dict(runs[0]["config"])
    if len(runs) > 1:
        config["seed"] = sorted(r["config"].get("seed") for r in runs)
    return config


def _states(runs: list[dict]) -> str:
    """The runs' state, or "2 FINISHED, 1 RUNNING" for a group whose runs are in several states."""
    counts = Counter(r["state"] for r in runs)
    return runs[0]["state"] if len(counts) == 1 else ", ".join(f"{n} {s}" for s, n in counts.items())


def _mean_interval(metric: str, figures: list[pd.DataFrame]) -> dict[str, float]:
    """{metric, metric low, metric high}: see group_table. NaN in any seed stays NaN."""
    values = np.array([f["value"].get(metric, np.nan) for f in figures], dtype=float)
    mean = float(values.mean())
    if len(values) == 1:
        low, high = (float(figures[0][c].get(metric, np.nan)) for c in ("low", "high"))
    else:
        seeds = scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
        widths = np.array([f["high"].get(metric, np.nan) - f["low"].get(metric, np.nan) for f in figures]) / 2
        images = widths[np.isfinite(widths)].mean() if np.isfinite(widths).any() else np.nan
        half = np.hypot(seeds, images) if np.isfinite(images) else seeds  # a run from before intervals: seeds only
        low, high = np.clip([mean - half, mean + half], *_possible(metric))
    return {metric: mean, f"{metric} low": float(low), f"{metric} high": float(high)}


def _possible(metric: str) -> tuple[float, float]:
    """Where a figure can lie: a t-interval of two or three seeds reaches past it, to values no run can have."""
    if "_R@" in metric or metric == "zero_shot_accuracy":
        return 0.0, 1.0
    return (1.0, np.inf) if metric.endswith("_rank") else (-np.inf, np.inf)


def interval_cells(table: pd.DataFrame, metrics: list[str] = RUNS_METRICS) -> pd.DataFrame:
    """group_table for the screen: each metric as one text cell "0.312 [0.280, 0.345]" (the
    figure alone where it has no interval, "NaN" where it is missing)."""
    out = table.drop(columns=[f"{m} {end}" for m in metrics for end in ("low", "high")], errors="ignore")
    for m in metrics:
        if m in table.columns:
            d = decimals(m)
            out[m] = [("NaN" if np.isnan(v) else f"{v:.{d}f}" if np.isnan(lo) or np.isnan(hi)
                       else f"{v:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]")
                      for v, lo, hi in zip(table[m], table[f"{m} low"], table[f"{m} high"], strict=True)]
    return out


def summary_table(runs: list[dict]) -> pd.DataFrame:
    """train.py's end-of-sweep table: one row per configuration group, its seeds and state, per
    metric of SUMMARY_METRICS the val figure (the mean over seeds) with its 95% interval as
    group_table gives it ("0.312 [0.280, 0.345]"), i2t R@1 on test likewise, and the seconds
    its runs took.

    Each item of `runs` has keys run (key), state, config, evals (read_eval's rows of the run)
    and timings (stage -> seconds, from its status)."""
    groups = group_names([(r["run"], r["config"]) for r in runs])
    val = group_table([dict(r, figures=final_figures(r["evals"])) for r in runs], groups, SUMMARY_METRICS)
    test = group_table([dict(r, figures=final_figures(r["evals"], "test")) for r in runs], groups, ["i2t_R@1"])
    out = interval_cells(val, SUMMARY_METRICS)[["seeds", "state", *SUMMARY_METRICS]]
    out["test i2t_R@1"] = interval_cells(test, ["i2t_R@1"])["i2t_R@1"]
    seconds = pd.Series([sum(r["timings"].values()) for r in runs], index=[groups[r["run"]] for r in runs])
    out["seconds"] = seconds.groupby(level=0).sum().round(1)
    return out


def retrieval_frame(evals: pd.DataFrame) -> pd.DataFrame:
    """Per run and retrieval metric: the final validation value and the step-0 baseline
    (`evals`: read_eval frames stacked with a `run` column)."""
    rows = []
    for run in evals["run"].unique():
        final, first = last_eval(evals, run=run), last_eval(evals, which="first", run=run)
        step = eval_step(evals, run=run)
        rows += [{"run": run, "metric": m, "final": v, "step": step, "baseline": first.get(m, np.nan)}
                 for m, v in final.items() if m in RETRIEVAL]
    out = pd.DataFrame(rows, columns=["run", "metric", "final", "step", "baseline"])
    out["measure"] = out["metric"].map(label)
    return out


def forgetting_frame(evals: pd.DataFrame, wise: pd.DataFrame, metric: str, held_out: str) -> pd.DataFrame:
    """Per run that evaluated `held_out` (an extra evaluation set): the metric on its own
    validation data (the fine-tuning data) and on `held_out`, at the end of training and at
    each WiSE-FT ratio, each as a change from the run's step 0. `evals` and `wise` are
    read_eval frames (ordinary and WiSE-FT rows) stacked with a `run` column."""
    rows = []
    for run, own in evals[evals["metric"] == metric].groupby("run", sort=True):
        first, last = (_own_and_held_out(own, metric, held_out, which) for which in ("first", "last"))
        if first is None or last is None:
            continue
        points = [("end of training", math.nan, *last)]
        mixed = wise[(wise["run"] == run) & (wise["metric"] == metric)] if not wise.empty else wise
        for ratio, at in mixed.groupby("wise_ft_ratio", sort=True):
            values = at.set_index("split")["value"]
            if {"val", held_out} <= set(values.index):
                points.append((f"WiSE-FT {ratio:g}", float(ratio), values["val"], values[held_out]))
        for point, ratio, own_value, held_value in points:
            rows.append({"run": run, "point": point, "wise_ft_ratio": ratio,
                         "fine_tuning_data": own_value, "held_out": held_value,
                         "gain_on_fine_tuning_data": own_value - first[0],
                         "change_on_held_out": held_value - first[1]})
    return pd.DataFrame(rows, columns=["run", "point", "wise_ft_ratio", "fine_tuning_data", "held_out",
                                       "gain_on_fine_tuning_data", "change_on_held_out"])


def _own_and_held_out(own: pd.DataFrame, metric: str, held_out: str, which: str) -> tuple | None:
    """(value on val, value on held_out) of one run's first or last evaluation; None unless both exist."""
    values = tuple(last_eval(own, split, which).get(metric) for split in ("val", held_out))
    return None if None in values else values


# ------------------------------------------------------------------------ samples


def label_list(values) -> list[str]:
    """The distinct labels among `values`, sorted, without the blanks, None and NaN of
    images that have no label."""
    return sorted({str(v) for v in values if not pd.isna(v)} - NO_LABEL)


def image_outcomes(samples: pd.DataFrame, top: int = 3) -> pd.DataFrame:
    """One row per validation image: rank of its first right caption, its top captions with
    cosines, and its margin (true-pair cosine minus the best wrong caption's cosine; below
    zero means a wrong caption wins). NaN margin: no wrong caption in the stored top-k."""
    texts = samples[samples["modality"] == "text"]
    caption_of = dict(zip(texts["sample_id"], texts["caption"], strict=True))
    image_of = dict(zip(texts["sample_id"], texts["image_id"], strict=True))
    images = samples[samples["modality"] == "image"].reset_index(drop=True)
    tops, margins = [], []
    for image_id, pos, ids, scores in zip(images["image_id"], images["positive_cosine"],
                                          images["topk_ids"], images["topk_scores"], strict=True):
        # not strict: a top-k list cut short on disk still shows the pairs it has
        pairs = list(zip(ids, scores, strict=False))
        tops.append(" | ".join(f"{caption_of.get(i, i)} ({s:.2f})" for i, s in pairs[:top]))
        wrong = [s for i, s in pairs if image_of.get(i) != image_id]
        margins.append(float(pos) - float(wrong[0]) if wrong else np.nan)
    out = images[["image_id", "caption", "label", "rank", "positive_cosine"]].copy()
    out["top_captions"] = tops
    out["margin"] = margins
    return out


def data_uri(png: bytes | None) -> str | None:
    """A PNG as a data: URI that a table cell or a chart tooltip can show."""
    return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode()


# ------------------------------------------------------------------------- curves


def ema(values: pd.Series, weight: float) -> pd.Series:
    """Debiased exponential moving average with TensorBoard's weight in [0, 1); NaN stays NaN."""
    values = values.astype(float)
    if weight <= 0:
        return values
    smoothed = values.ewm(alpha=1.0 - weight, adjust=True, ignore_na=True).mean()
    return smoothed.where(values.notna())


def smooth(frame: pd.DataFrame, weight: float, by: str = "run") -> pd.DataFrame:
    """The frame in step order with a `smoothed` column: the EMA of `value` within each `by`."""
    out = frame.sort_values([by, "step"]).reset_index(drop=True)
    out["smoothed"] = out.groupby(by, sort=False)["value"].transform(lambda s: ema(s, weight))
    return out


def thin(frame: pd.DataFrame, max_points: int = 150, by: str = "run") -> pd.DataFrame:
    """Every k-th row of each run so that at most about `max_points` are drawn per run; the
    evaluated rows and each run's last row are always kept. A chart is a few hundred pixels
    wide, and browsers slow down badly on tens of thousands of points."""
    position = frame.groupby(by).cumcount()
    size = frame.groupby(by)[by].transform("size")
    stride = np.ceil(size / max_points).astype(int)
    keep = (position % stride == 0) | (position == size - 1) | frame.get("evaluated", False)
    return frame[keep]


def with_wall_time(evals: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Evaluation rows with the wall time of the training step they follow (0 before training)."""
    clock = metrics.drop_duplicates(["run", "step"])[["run", "step", "wall_time"]]
    out = evals.drop(columns="wall_time", errors="ignore").merge(clock, on=["run", "step"], how="left")
    out.loc[out["step"] == 0, "wall_time"] = 0.0
    return out


def seed_band(frame: pd.DataFrame, groups: dict[str, str]) -> pd.DataFrame:
    """Per configuration group and step of a smoothed curve frame (run, step, epoch, wall_time,
    smoothed, evaluated): the mean of its runs' smoothed values, and the band from the lowest of
    them to the highest (`low`, `high`), with `seeds` counted. Seeds log the same steps; their
    epochs and wall times are averaged. A step where a seed is NaN has a NaN mean, as a single
    run's curve has a gap there."""
    data = frame.assign(group=frame["run"].map(groups))
    by = data.groupby(["group", "step"], sort=True)
    out = by.agg(epoch=("epoch", "mean"), wall_time=("wall_time", "mean"), smoothed=("smoothed", "mean"),
                 low=("smoothed", "min"), high=("smoothed", "max"), seeds=("run", "nunique"),
                 valid=("smoothed", "count"), evaluated=("evaluated", "any"))
    gaps = out["valid"] < out["seeds"]
    out.loc[gaps, "smoothed"] = np.nan
    return out.drop(columns="valid").reset_index()


BAND_COLUMNS = {"kind": str, "group": str, "run": str, "step": int, "epoch": float, "wall_time": float,
                "smoothed": float, "low": float, "high": float, "seeds": float, "evaluated": bool}


def band_rows(frame: pd.DataFrame, groups: dict[str, str], seeds: bool, log: bool = False) -> pd.DataFrame:
    """What a seed-band chart draws (charts.seed_band_chart) from a smoothed curve frame: the
    seed_band rows (kind "mean") and, with `seeds`, each run's own rows (kind "seed"); on a
    log axis, values <= 0 become gaps, as in curve_rows."""
    parts = [seed_band(frame, groups).assign(kind="mean", run="")]
    if seeds:
        parts.append(frame.assign(kind="seed", group=frame["run"].map(groups), low=np.nan, high=np.nan, seeds=np.nan))
    rows = pd.concat(parts, ignore_index=True)[list(BAND_COLUMNS)]
    if log:
        values = ["smoothed", "low", "high"]
        rows[values] = rows[values].where(rows[values] > 0)
    return rows


def curve_rows(frame: pd.DataFrame, x: str = "step", log: bool = False) -> pd.DataFrame:
    """The columns a curves chart draws; on a log axis, values <= 0 become gaps (a log scale
    cannot place them, and clipping would draw a value that was never logged)."""
    data = frame[[c for c in dict.fromkeys(["run", "step", x, "value", "smoothed", "evaluated"])
                  if c in frame.columns]].copy()
    if log:
        data[["value", "smoothed"]] = data[["value", "smoothed"]].where(data[["value", "smoothed"]] > 0)
    return data


# ------------------------------------------------------------- embeddings and UMAP


def cosine_matrix(embeddings: pd.DataFrame, vectors: np.ndarray, image_ids: list[str]) -> pd.DataFrame:
    """Long frame of cosines between the chosen images and the first caption of each.

    `embeddings` holds one step's rows (modality, image_id, caption), row i of it being
    vectors[i]. Captions that read alike get a "#n" suffix so each keeps its own column."""
    meta = embeddings.reset_index(drop=True).assign(position=lambda f: f.index)
    meta = meta[meta["image_id"].isin(image_ids)]
    img = meta[meta["modality"] == "image"].drop_duplicates("image_id").set_index("image_id")
    txt = meta[meta["modality"] == "text"].drop_duplicates("image_id").set_index("image_id")
    img = img.reindex([i for i in image_ids if i in img.index])
    txt = txt.reindex([i for i in image_ids if i in txt.index])
    names = _unique(txt["caption"].tolist())
    sims = unit(vectors[img["position"].to_numpy()]) @ unit(vectors[txt["position"].to_numpy()]).T
    return pd.DataFrame([
        {"image": i, "caption": c, "caption_of": j, "cosine": float(sims[p, q]), "true_pair": i == j}
        for p, i in enumerate(img.index) for q, (j, c) in enumerate(zip(txt.index, names, strict=True))],
        columns=["image", "caption", "caption_of", "cosine", "true_pair"])


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} #{seen[n]}")
    return out


def cosine_difference(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Cell-wise cosine of run B minus run A, for matrices over the same samples."""
    keys = ["image", "caption", "caption_of", "true_pair"]
    both = a.merge(b, on=keys, suffixes=("_a", "_b"))
    return both.assign(cosine=both["cosine_b"] - both["cosine_a"])[keys + ["cosine"]]


def umap_points(embeddings: pd.DataFrame, umap: pd.DataFrame, samples_ranks: pd.DataFrame) -> pd.DataFrame:
    """The points of a UMAP chart: the `embeddings` rows (one step, no vectors) that `umap` has
    coordinates for, with each sample's rank (`samples_ranks`: sample_id, modality, rank) and
    whether it is right at R@1."""
    points = embeddings.merge(umap, on=["sample_id", "modality", "step"])
    points = points.merge(samples_ranks, on=["sample_id", "modality"], how="left")
    points["outcome"] = np.where(points["rank"] == 1, OUTCOMES[0], OUTCOMES[1])
    return points.reset_index(drop=True)

