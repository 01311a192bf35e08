"""Altair charts for comparing CLIP runs, shared by the dashboard's views and the write-up
notebook: pure functions of the frames that analysis/runs.py computes; nothing here reads run
files or imports streamlit.

    import charts
    from analysis.runs import smooth
    loss = metrics[metrics["name"] == "loss"].assign(run="a", evaluated=False)  # metrics: read_metrics(path)
    charts.curves_chart(smooth(loss, 0.6), "loss")
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from analysis.runs import curve_rows
from core.names import MODALITIES, OUTCOMES, RETRIEVAL, X_TITLES, label

# Callers trim frames to what is drawn (no embedding vectors), so Altair's 5,000-row guard
# would only get in the way of a 4,000-image UMAP.
alt.data_transformers.disable_max_rows()

# Greys: colour means a configuration (PALETTE) in every chart, so the outcome and the modality
# (which the shapes also tell apart) take none of its hues.
FIXED_COLORS = {"outcome": (OUTCOMES, ["#2b2b2b", "#b3b3b3"]), "modality": (MODALITIES, ["#9a9a9a", "#2b2b2b"])}
# Tableau's first nine colours, then eleven of other hues and lightness, chosen so that no two
# of the twenty are closer than 30 in CIELAB (ΔE*76; tests/test_charts.py checks it): a sweep's
# configurations are told apart by colour alone in a legend, which Tableau's light halves and
# Vega's category20b (navy beside steel blue, two browns) did not allow.
PALETTE = ["#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d",
           "#00bfff", "#1a1a7a", "#bf03b8", "#000000", "#808000", "#6e0000", "#005f3a", "#8c3bff", "#00e000",
           "#600040", "#e00080"]


def group_colors(names: list[str]) -> dict[str, str]:
    """name -> colour, fixed by position in `names` (a sweep's configurations in the order they
    started, or the dashboard's sorted selection), so that one configuration has one colour in
    every chart it is drawn in."""
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(dict.fromkeys(names))}


def _color(field: str, title: str, colors: dict[str, str] | None, **legend) -> alt.Color:
    """A nominal colour encoding, on the fixed `colors` (name -> colour) where given."""
    scale = alt.Scale(domain=list(colors), range=list(colors.values())) if colors else alt.Undefined
    return alt.Color(f"{field}:N", title=title, scale=scale, legend=alt.Legend(**legend))


def curves_chart(frame: pd.DataFrame, metric: str, x: str = "step", log: bool = False,
                 height: int = 360, raw: bool = True, colors: dict[str, str] | None = None) -> alt.Chart:
    """One metric over training for several runs: faint raw values (unless not `raw`), the
    smoothed line, and a point wherever the model was evaluated (`evaluated` column).

    Drawing cost in the browser grows with points times per-point expressions, so only the
    columns drawn travel, the lines carry no per-point ARIA text, and the line's tooltip names
    its run only (a line's tooltip shows one fixed point of the line, not the one under the cursor);
    values are in the tooltips of the evaluation points. `colors`: run -> colour (group_colors)."""
    data = curve_rows(frame, x, log)
    y_title = label(metric) + (" (log scale)" if log else "")
    scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
    base = alt.Chart().encode(  # the layer holds the data: Altair then has no layers' data to compare
        x=alt.X(f"{x}:Q", title=X_TITLES[x]),
        color=_color("run", "run", colors, symbolOpacity=1))
    faint = base.mark_line(opacity=0.25, strokeWidth=1, aria=False).encode(
        y=alt.Y("value:Q", scale=scale, title=y_title))
    line = base.mark_line(strokeWidth=2, aria=False).encode(
        y=alt.Y("smoothed:Q", scale=scale, title=y_title), tooltip=["run:N"])
    points = base.transform_filter("datum.evaluated").mark_point(filled=True, size=45).encode(
        y=alt.Y("smoothed:Q", scale=scale),
        tooltip=["run:N", "step:Q", alt.Tooltip("value:Q", format=".4g"), alt.Tooltip("smoothed:Q", format=".4g")])
    layers = [faint, line, points] if raw else [line, points]
    return alt.layer(*layers, data=data).properties(height=height, title=f"{label(metric)} by {X_TITLES[x]}")


def seed_band_chart(rows: pd.DataFrame, metric: str, x: str = "step", log: bool = False, seeds: bool = False,
                    height: int = 360, colors: dict[str, str] | None = None) -> alt.Chart:
    """One metric over training per configuration, from analysis.runs.band_rows: the mean of its
    seeds' smoothed curves (bold), a band from the lowest seed to the highest (min–max: with two
    or three seeds an SD says little more than the seeds themselves), a point wherever the model
    was evaluated, and with `seeds` each seed's own curve as a thin line. All layers read one
    frame (rows of kind "mean" and "seed"), so that a view can cache the spec without its rows.
    `colors`: configuration -> colour (group_colors), the same in every chart."""
    scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
    y_title = label(metric) + (" (log scale)" if log else "")
    base = alt.Chart().encode(x=alt.X(f"{x}:Q", title=X_TITLES[x]),
                              color=_color("group", "configuration", colors, symbolOpacity=1))
    mean = base.transform_filter("datum.kind == 'mean'")
    band = mean.mark_area(opacity=0.2, aria=False).encode(y=alt.Y("low:Q", scale=scale, title=y_title), y2="high:Q")
    line = mean.mark_line(strokeWidth=2, aria=False).encode(y=alt.Y("smoothed:Q", scale=scale), tooltip=["group:N"])
    points = mean.transform_filter("datum.evaluated").mark_point(filled=True, size=45).encode(
        y=alt.Y("smoothed:Q", scale=scale),
        tooltip=["group:N", "step:Q", alt.Tooltip("smoothed:Q", format=".4g", title="mean over seeds"),
                 alt.Tooltip("low:Q", format=".4g", title="lowest seed"),
                 alt.Tooltip("high:Q", format=".4g", title="highest seed"), "seeds:Q"])
    layers = [band, line, points]
    if seeds:
        layers.insert(1, base.transform_filter("datum.kind == 'seed'").mark_line(
            strokeWidth=1, opacity=0.6, aria=False).encode(y=alt.Y("smoothed:Q", scale=scale), detail="run:N",
                                                           tooltip=["run:N"]))
    return alt.layer(*layers, data=rows).properties(height=height,
                                                    title=f"{label(metric)} by {X_TITLES[x]}, mean over seeds")


def retrieval_bars(frame: pd.DataFrame, height: int = 320) -> alt.Chart:
    """Final validation R@1/R@5 both ways, one bar per run, a black tick at the step-0 value."""
    base = alt.Chart().encode(
        x=alt.X("measure:N", title=None, sort=[label(m) for m in RETRIEVAL], axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("run:N"))
    bars = base.mark_bar().encode(
        y=alt.Y("final:Q", title="recall (share of queries right)"),
        # The fixed palette: Vega's default ten colours repeat from the eleventh run on.
        color=_color("run", "run", group_colors(sorted(frame["run"].unique()))),  # as the Curves view's
        tooltip=["run:N", "measure:N", alt.Tooltip("final:Q", format=".3f", title="final"),
                 alt.Tooltip("baseline:Q", format=".3f", title="step 0"), "step:Q"])
    # A zero-height bar, not a tick: ticks ignore xOffset and would span every run's bar.
    ticks = base.mark_bar(fill=None, stroke="black", strokeWidth=2).encode(
        y="baseline:Q", y2="baseline:Q", tooltip=["run:N", alt.Tooltip("baseline:Q", format=".3f", title="step 0")])
    title = alt.TitleParams("Final validation retrieval",
                            subtitle="black tick: the same run before fine-tuning (step 0)")
    return alt.layer(bars, ticks, data=frame).properties(height=height, title=title)


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


def forgetting_chart(frame: pd.DataFrame, metric: str, held_out: str, height: int = 360,
                     colors: dict[str, str] | None = None) -> alt.Chart:
    """Gain on the fine-tuning data (x) against the change on a held-out set (y, below zero is
    forgetting), both from step 0; one line per run through its WiSE-FT ratios, a diamond for
    the end of training. `colors`: run -> colour (group_colors)."""
    x = alt.X("gain_on_fine_tuning_data:Q", title=f"gain in {label(metric)} on the run's own val data")
    y = alt.Y("change_on_held_out:Q", title=f"change in {label(metric)} on {held_out}")
    tooltip = ["run:N", "point:N", alt.Tooltip("fine_tuning_data:Q", format=".3f", title="own val"),
               alt.Tooltip("held_out:Q", format=".3f", title=held_out),
               alt.Tooltip("gain_on_fine_tuning_data:Q", format="+.3f", title="gain"),
               alt.Tooltip("change_on_held_out:Q", format="+.3f", title="held-out change")]
    base = alt.Chart(frame).encode(x=x, y=y, color=_color("run", "run", colors), tooltip=tooltip)
    wise = base.transform_filter("isValid(datum.wise_ft_ratio)")
    line = wise.mark_line(point=True).encode(order="wise_ft_ratio:Q")
    ratios = wise.mark_text(dx=8, dy=-8, fontSize=11).encode(text=alt.Text("wise_ft_ratio:Q", format=".2~f"))
    end = base.transform_filter("!isValid(datum.wise_ft_ratio)").mark_point(shape="diamond", size=120, filled=True)
    zero = alt.Chart(pd.DataFrame({"zero": [0.0]}))
    rules = zero.mark_rule(color="gray", strokeDash=[4, 4]).encode(y="zero:Q") + \
        zero.mark_rule(color="gray", strokeDash=[4, 4]).encode(x="zero:Q")
    return (rules + line + ratios + end).properties(
        height=height, title=f"Gain vs forgetting: {label(metric)} (numbers: WiSE-FT ratio; diamond: end of training)")


def gap_probe_chart(frame: pd.DataFrame, title: str, colors: dict[str, str], height: int = 500) -> alt.Chart:
    """One measure of Liang et al.'s gap-shift probe (views/drift.gap_probe, with a `run` column)
    against the shift (0: the stored vectors; 1: the gap mostly closed; -1: widened): a line per
    run in its colour, step 0 dashed. The y axis spans the values, not 0 to 1: a change of a few
    hundredths is then visible, and a flat line is still flat. `height` holds the legends below
    the plot too (Streamlit fits the chart to it): about 300 px are left for the lines."""
    base = alt.Chart(frame).encode(
        x=alt.X("shift:Q", title="shift (1: centroids together · −1: apart)",
                axis=alt.Axis(values=[-1, -0.5, 0, 0.5, 1])),
        y=alt.Y("value:Q", title="share right", scale=alt.Scale(zero=False, nice=True)),
        color=_color("run", "run", colors, orient="bottom", columns=1, labelLimit=200),
        strokeDash=alt.StrokeDash("state:N", title="state", sort=["end", "step 0"],
                                  legend=alt.Legend(orient="bottom", columns=1)),
        tooltip=["run:N", "state:N", alt.Tooltip("shift:Q", format="+.2f"), alt.Tooltip("value:Q", format=".3f"),
                 alt.Tooltip("gap:Q", format=".3f", title="gap after the shift")])
    zero = alt.Chart(pd.DataFrame({"shift": [0.0]})).mark_rule(color="gray", strokeDash=[2, 2]).encode(x="shift:Q")
    return (zero + base.mark_line(point=True, strokeWidth=2)).properties(height=height, title=title)


def zero_shot_chart(frame: pd.DataFrame, colors: dict[str, str] | None = None, height: int | None = None) -> alt.Chart:
    """Zero-shot probabilities of one image over typed class prompts, a bar per run and prompt
    (`frame`: run, prompt, probability); `colors`: run -> colour (group_colors)."""
    prompts = list(dict.fromkeys(frame["prompt"]))
    rows = len(prompts) * max(1, frame["run"].nunique())
    return alt.Chart(frame).mark_bar().encode(
        y=alt.Y("prompt:N", sort=prompts, title=None, axis=alt.Axis(labelLimit=260)),
        yOffset=alt.YOffset("run:N"),
        x=alt.X("probability:Q", title="probability (softmax of cosine / the run's temperature)",
                scale=alt.Scale(domain=[0, 1])),
        color=_color("run", "run", colors, orient="bottom", labelLimit=260),
        tooltip=["run:N", "prompt:N", alt.Tooltip("probability:Q", format=".3f"),
                 alt.Tooltip("cosine:Q", format=".3f")],
    ).properties(height=height or max(120, 18 * rows), title="Zero-shot probabilities over the typed prompts")
