"""Altair charts and small frame helpers for comparing CLIP runs.

Pure functions of pandas frames, shared by dashboard.py and the write-up notebook: nothing
here reads run files or imports streamlit. Frames come from training/run_store.py readers.

    import charts
    loss = metrics[metrics["name"] == "loss"].assign(run="a", evaluated=False)  # metrics: read_metrics(path)
    charts.curves_chart(charts.smooth(loss, 0.6), "loss")
"""

from __future__ import annotations

import base64
import json
import math

import altair as alt
import numpy as np
import pandas as pd

from training.config import differing_keys

# Callers trim frames to what is drawn (no embedding vectors), so Altair's 5,000-row guard
# would only get in the way of a 4,000-image UMAP.
alt.data_transformers.disable_max_rows()

RETRIEVAL = ["i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5"]
TABLE_METRICS = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10",
                 "i2t_median_rank", "t2i_median_rank", "zero_shot_accuracy", "modality_gap"]
LABELS = {
    "i2t_R@1": "image→text R@1", "i2t_R@5": "image→text R@5", "i2t_R@10": "image→text R@10",
    "t2i_R@1": "text→image R@1", "t2i_R@5": "text→image R@5", "t2i_R@10": "text→image R@10",
    "i2t_mean_rank": "image→text mean rank", "i2t_median_rank": "image→text median rank",
    "t2i_mean_rank": "text→image mean rank", "t2i_median_rank": "text→image median rank",
    "zero_shot_accuracy": "zero-shot accuracy", "zero_shot_chance": "zero-shot chance",
    "modality_gap": "modality gap (centroid distance)", "positive_cosine": "mean cosine of true pairs",
    "negative_cosine": "mean cosine of wrong pairs", "temperature": "temperature",
    "logit_scale": "logit scale (1/temperature)", "loss": "contrastive loss (nats)",
    "lr": "learning rate", "grad_norm": "gradient norm", "chance_R@1": "chance R@1",
}
X_TITLES = {"step": "optimizer step", "epoch": "epoch", "wall_time": "wall time since training start (s)"}
COLOR_BY = {"modality": "modality", "label": "label", "right/wrong at R@1": "outcome"}
OUTCOMES = ["right at R@1", "wrong at R@1"]
MODALITIES = ["image", "text"]
# Blue/orange pairs stay apart for red-green colour blindness.
FIXED_COLORS = {"outcome": (OUTCOMES, ["#4c78a8", "#f58518"]), "modality": (MODALITIES, ["#f58518", "#4c78a8"])}


def label(metric: str) -> str:
    """A readable name for a logged metric (the raw name if it has none)."""
    return LABELS.get(metric, metric)


def better(metric: str) -> str | None:
    """'max' or 'min' where one direction of a metric is better, else None."""
    if "_R@" in metric or metric == "zero_shot_accuracy":
        return "max"
    if metric.endswith("_rank") or metric == "loss":
        return "min"
    return None


# ------------------------------------------------------------------------ frame helpers


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


def style_best(table: pd.DataFrame):
    """A Styler that marks the best value of each metric column where runs differ (NaN shown as NaN)."""
    metrics = [c for c in table.columns if c in TABLE_METRICS]
    config = [c for c in table.columns if c not in metrics]
    # Config values keep their own precision (a learning rate of 1e-4 is not 0.000).
    styler = table.style.format(precision=3, na_rep="NaN", subset=metrics).format(
        lambda v: f"{v:g}" if isinstance(v, float) else v, subset=config)
    props = "font-weight: bold; background-color: rgba(60, 180, 75, 0.3)"
    for column in table.columns:
        way = better(column) if table[column].nunique() > 1 else None  # a tie for all is no best
        if way == "max":
            styler = styler.highlight_max(subset=[column], props=props)
        elif way == "min":
            styler = styler.highlight_min(subset=[column], props=props)
    return styler


def retrieval_frame(evals: pd.DataFrame) -> pd.DataFrame:
    """Per run and retrieval metric: the final validation value and the step-0 baseline."""
    val = evals[(evals["split"] == "val") & evals["metric"].isin(RETRIEVAL)]
    last = val[val["step"] == val.groupby("run")["step"].transform("max")]
    first = val[val["step"] == 0][["run", "metric", "value"]].rename(columns={"value": "baseline"})
    out = last[["run", "metric", "value", "step"]].rename(columns={"value": "final"})
    out = out.merge(first, on=["run", "metric"], how="left")
    out["measure"] = out["metric"].map(label)
    return out


def data_uri(png: bytes | None) -> str | None:
    """A PNG as a data: URI that a table cell or a chart tooltip can show."""
    return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode()


def image_outcomes(samples: pd.DataFrame, top: int = 3) -> pd.DataFrame:
    """One row per validation image: rank of its first right caption, its top captions with
    cosines, and its margin (true-pair cosine minus the best wrong caption's cosine; below
    zero means a wrong caption wins). NaN margin: no wrong caption in the stored top-k."""
    texts = samples[samples["kind"] == "text"]
    caption_of = dict(zip(texts["sample_id"], texts["caption"]))
    image_of = dict(zip(texts["sample_id"], texts["image_id"]))
    images = samples[samples["kind"] == "image"].reset_index(drop=True)
    tops, margins = [], []
    for image_id, pos, ids, scores in zip(images["image_id"], images["positive_cosine"],
                                          images["topk_ids"], images["topk_scores"]):
        tops.append(" | ".join(f"{caption_of.get(i, i)} ({s:.2f})" for i, s in zip(ids[:top], scores[:top])))
        wrong = [s for i, s in zip(ids, scores) if image_of.get(i) != image_id]
        margins.append(float(pos) - float(wrong[0]) if wrong else np.nan)
    out = images[["image_id", "caption", "label", "rank", "positive_cosine"]].copy()
    out["top_captions"] = tops
    out["margin"] = margins
    return out


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
    sims = _unit(vectors[img["position"].to_numpy()]) @ _unit(vectors[txt["position"].to_numpy()]).T
    return pd.DataFrame([
        {"image": i, "caption": c, "caption_of": j, "cosine": float(sims[p, q]), "true_pair": i == j}
        for p, i in enumerate(img.index) for q, (j, c) in enumerate(zip(txt.index, names))],
        columns=["image", "caption", "caption_of", "cosine", "true_pair"])


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} #{seen[n]}")
    return out


def pair_lines(points: pd.DataFrame, label_value: str) -> pd.DataFrame:
    """Two rows per caption of `label_value` (its image's point, then its own) for lines
    that join each image to its captions in a UMAP chart."""
    chosen = points[points["label"] == label_value]
    images = chosen[chosen["modality"] == "image"].set_index("image_id")[["umap_x", "umap_y"]]
    texts = chosen[(chosen["modality"] == "text") & chosen["image_id"].isin(images.index)]
    ends = images.loc[texts["image_id"]].reset_index(drop=True)
    ends["pair"] = texts["sample_id"].to_numpy()
    starts = texts[["sample_id", "umap_x", "umap_y"]].rename(columns={"sample_id": "pair"})
    return pd.concat([ends, starts], ignore_index=True)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def cosine_difference(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Cell-wise cosine of run B minus run A, for matrices over the same samples."""
    keys = ["image", "caption", "caption_of", "true_pair"]
    both = a.merge(b, on=keys, suffixes=("_a", "_b"))
    return both.assign(cosine=both["cosine_b"] - both["cosine_a"])[keys + ["cosine"]]


# ------------------------------------------------------------------------------- charts


def curve_rows(frame: pd.DataFrame, x: str = "step", log: bool = False) -> pd.DataFrame:
    """The columns curves_chart draws; on a log axis, values <= 0 become gaps (a log scale
    cannot place them, and clipping would draw a value that was never logged)."""
    data = frame[[c for c in dict.fromkeys(["run", "step", x, "value", "smoothed", "evaluated"])
                  if c in frame.columns]].copy()
    if log:
        data[["value", "smoothed"]] = data[["value", "smoothed"]].where(data[["value", "smoothed"]] > 0)
    return data


def curves_chart(frame: pd.DataFrame, metric: str, x: str = "step", log: bool = False,
                 height: int = 360, raw: bool = True) -> alt.Chart:
    """One metric over training for several runs: faint raw values (unless not `raw`), the
    smoothed line, and a point wherever the model was evaluated (`evaluated` column).

    Drawing cost in the browser grows with points times per-point expressions, so only the
    columns drawn travel, the lines carry no per-point ARIA text, and the line's tooltip names
    its run only (a line's tooltip shows one fixed point of the line, not the one under the cursor);
    values are in the tooltips of the evaluation points."""
    data = curve_rows(frame, x, log)
    y_title = label(metric) + (" (log scale)" if log else "")
    scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
    base = alt.Chart().encode(  # the layer holds the data: Altair then has no layers' data to compare
        x=alt.X(f"{x}:Q", title=X_TITLES[x]),
        color=alt.Color("run:N", title="run", legend=alt.Legend(symbolOpacity=1)))
    faint = base.mark_line(opacity=0.25, strokeWidth=1, aria=False).encode(
        y=alt.Y("value:Q", scale=scale, title=y_title))
    line = base.mark_line(strokeWidth=2, aria=False).encode(
        y=alt.Y("smoothed:Q", scale=scale, title=y_title), tooltip=["run:N"])
    points = base.transform_filter("datum.evaluated").mark_point(filled=True, size=45).encode(
        y=alt.Y("smoothed:Q", scale=scale),
        tooltip=["run:N", "step:Q", alt.Tooltip("value:Q", format=".4g"), alt.Tooltip("smoothed:Q", format=".4g")])
    layers = [faint, line, points] if raw else [line, points]
    return alt.layer(*layers, data=data).properties(height=height, title=f"{label(metric)} by {X_TITLES[x]}")


def retrieval_bars(frame: pd.DataFrame, height: int = 320) -> alt.Chart:
    """Final validation R@1/R@5 both ways, one bar per run, a black tick at the step-0 value."""
    base = alt.Chart().encode(
        x=alt.X("measure:N", title=None, sort=[label(m) for m in RETRIEVAL], axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("run:N"))
    bars = base.mark_bar().encode(
        y=alt.Y("final:Q", title="recall (share of queries right)"),
        color=alt.Color("run:N", title="run"),
        tooltip=["run:N", "measure:N", alt.Tooltip("final:Q", format=".3f", title="final"),
                 alt.Tooltip("baseline:Q", format=".3f", title="step 0"), "step:Q"])
    # A zero-height bar, not a tick: ticks ignore xOffset and would span every run's bar.
    ticks = base.mark_bar(fill=None, stroke="black", strokeWidth=2).encode(
        y="baseline:Q", y2="baseline:Q", tooltip=["run:N", alt.Tooltip("baseline:Q", format=".3f", title="step 0")])
    title = alt.TitleParams("Final validation retrieval",
                            subtitle="black tick: the same run before fine-tuning (step 0)")
    return alt.layer(bars, ticks, data=frame).properties(height=height, title=title)


def umap_chart(points: pd.DataFrame, color_by: str, title: str, labels: list[str] | None = None,
               lines: pd.DataFrame | None = None, height: int = 380) -> alt.Chart:
    """UMAP scatter of one run's validation embeddings: images as circles, captions as
    crosses; optional grey lines join each image to its captions (`lines`: pair, umap_x/y)."""
    field = COLOR_BY[color_by]
    domain, colors = FIXED_COLORS.get(field, (labels, None))
    scale = alt.Scale(domain=domain, range=colors) if colors else alt.Scale(domain=domain, scheme="tableau20")
    color = alt.Color(f"{field}:N", title=color_by, scale=scale,
                      legend=alt.Legend(symbolLimit=30, labelLimit=160))
    tooltip = ["caption:N", "label:N", "modality:N", "rank:Q"]
    if "image" in points.columns:  # vega-tooltip draws a field named "image" as a picture
        tooltip.append("image:N")
    xy = {"x": alt.X("umap_x:Q", title="UMAP 1", axis=alt.Axis(labels=False, ticks=False)),
          "y": alt.Y("umap_y:Q", title="UMAP 2", axis=alt.Axis(labels=False, ticks=False))}
    # No per-point ARIA text: thousands of formatted descriptions slow every redraw.
    scatter = alt.Chart(points).mark_point(filled=True, size=30, opacity=0.7, aria=False).encode(
        **xy, color=color, tooltip=tooltip,
        shape=alt.Shape("modality:N", scale=alt.Scale(domain=MODALITIES, range=["circle", "cross"])))
    layers = scatter
    if lines is not None and not lines.empty:
        layers = alt.Chart(lines).mark_line(color="#444", strokeWidth=1, aria=False).encode(
            **xy, detail="pair:N") + scatter
    # Thousands of SVG nodes make the browser crawl; a canvas draws them in one go.
    return layers.properties(height=height, title=title, usermeta={"embedOptions": {"renderer": "canvas"}})


def cosine_heatmap(matrix: pd.DataFrame, title: str, difference: bool = False, height: int = 420) -> alt.Chart:
    """Images × captions cosine heatmap; outlined cells are true image-caption pairs.
    With `difference`, a diverging scale centred on zero (run B minus run A)."""
    order_img = list(dict.fromkeys(matrix["image"]))
    order_cap = list(dict.fromkeys(matrix["caption"]))
    if difference:  # symmetric around zero, so white means "no change" and both signs read alike
        reach = float(matrix["cosine"].abs().max()) or 1.0
        scale = alt.Scale(scheme="redblue", domain=[-reach, reach], reverse=True)
    else:
        scale = alt.Scale(scheme="viridis")
    legend = "cosine B − A (red: B higher)" if difference else "cosine"
    base = alt.Chart().encode(
        x=alt.X("caption:N", sort=order_cap, title="caption",
                axis=alt.Axis(labelAngle=-45, labelLimit=160, labelOverlap=False)),
        y=alt.Y("image:N", sort=order_img, title="image"))
    cells = base.mark_rect().encode(
        color=alt.Color("cosine:Q", scale=scale, title=legend),
        tooltip=["image:N", "caption:N", alt.Tooltip("cosine:Q", format=".3f")])
    outline = base.transform_filter("datum.true_pair").mark_rect(fill=None, stroke="black", strokeWidth=2)
    return alt.layer(cells, outline, data=matrix).properties(height=height, title=title)


def split_curves_chart(frame: pd.DataFrame, metric: str, height: int = 320) -> alt.Chart:
    """An evaluation metric over steps, one colour per run and one dash per evaluation split.
    The chart grows with its legends (runs, then splits, beside it), so that none is cut off."""
    legends = 30 * (frame["run"].nunique() + frame["split"].nunique()) + 90  # px: entries, titles
    base = alt.Chart(frame).encode(
        x=alt.X("step:Q", title=X_TITLES["step"]),
        y=alt.Y("value:Q", title=label(metric), scale=alt.Scale(zero=False)),
        color=alt.Color("run:N", title="run"),
        tooltip=["run:N", "split:N", "step:Q", alt.Tooltip("value:Q", format=".4g")])
    # the dash legend comes from the lines alone, so that its symbols are dashed strokes
    lines = base.mark_line().encode(strokeDash=alt.StrokeDash("split:N", title="evaluation split"))
    points = base.mark_point(filled=True, size=25).encode(detail="split:N")
    return alt.layer(lines, points).properties(height=max(height, legends),
                                               title=f"{label(metric)} per evaluation split")


def forgetting_frame(evals: pd.DataFrame, wise: pd.DataFrame, metric: str, held_out: str) -> pd.DataFrame:
    """Per run that evaluated `held_out` (an extra evaluation set): the metric on its own
    validation data (the fine-tuning data) and on `held_out`, at the end of training and at
    each WiSE-FT ratio, each as a change from the run's step 0. `evals` and `wise` are
    read_eval frames (ordinary and WiSE-FT rows) stacked with a `run` column."""
    rows = []
    for run, own in evals[evals["metric"] == metric].groupby("run", sort=True):
        if held_out not in set(own["split"]):
            continue
        first = own[own["step"] == own["step"].min()].set_index("split")["value"]
        last = own[own["step"] == own["step"].max()].set_index("split")["value"]
        if not {"val", held_out} <= set(first.index) & set(last.index):
            continue
        points = [("end of training", math.nan, last["val"], last[held_out])]
        mixed = wise[(wise["run"] == run) & (wise["metric"] == metric)] if not wise.empty else wise
        for ratio, at in mixed.groupby("wise_ft_ratio", sort=True):
            values = at.set_index("split")["value"]
            if {"val", held_out} <= set(values.index):
                points.append((f"WiSE-FT {ratio:g}", float(ratio), values["val"], values[held_out]))
        for point, ratio, own_value, held_value in points:
            rows.append({"run": run, "point": point, "wise_ft_ratio": ratio,
                         "fine_tuning_data": own_value, "held_out": held_value,
                         "gain_on_fine_tuning_data": own_value - first["val"],
                         "change_on_held_out": held_value - first[held_out]})
    return pd.DataFrame(rows, columns=["run", "point", "wise_ft_ratio", "fine_tuning_data", "held_out",
                                       "gain_on_fine_tuning_data", "change_on_held_out"])


def forgetting_chart(frame: pd.DataFrame, metric: str, held_out: str, height: int = 360) -> alt.Chart:
    """Gain on the fine-tuning data (x) against the change on a held-out set (y, below zero is
    forgetting), both from step 0; one line per run through its WiSE-FT ratios, a diamond for
    the end of training."""
    x = alt.X("gain_on_fine_tuning_data:Q", title=f"gain in {label(metric)} on the run's own val data")
    y = alt.Y("change_on_held_out:Q", title=f"change in {label(metric)} on {held_out}")
    tooltip = ["run:N", "point:N", alt.Tooltip("fine_tuning_data:Q", format=".3f", title="own val"),
               alt.Tooltip("held_out:Q", format=".3f", title=held_out),
               alt.Tooltip("gain_on_fine_tuning_data:Q", format="+.3f", title="gain"),
               alt.Tooltip("change_on_held_out:Q", format="+.3f", title="held-out change")]
    base = alt.Chart(frame).encode(x=x, y=y, color=alt.Color("run:N", title="run"), tooltip=tooltip)
    wise = base.transform_filter("isValid(datum.wise_ft_ratio)")
    line = wise.mark_line(point=True).encode(order="wise_ft_ratio:Q")
    ratios = wise.mark_text(dx=8, dy=-8, fontSize=11).encode(text=alt.Text("wise_ft_ratio:Q", format=".2~f"))
    end = base.transform_filter("!isValid(datum.wise_ft_ratio)").mark_point(shape="diamond", size=120, filled=True)
    zero = alt.Chart(pd.DataFrame({"zero": [0.0]}))
    rules = zero.mark_rule(color="gray", strokeDash=[4, 4]).encode(y="zero:Q") + \
        zero.mark_rule(color="gray", strokeDash=[4, 4]).encode(x="zero:Q")
    return (rules + line + ratios + end).properties(
        height=height, title=f"Gain vs forgetting: {label(metric)} (numbers: WiSE-FT ratio; diamond: end of training)")
