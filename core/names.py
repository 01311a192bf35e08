"""Metric names and the names a reader sees for them, shared by the dashboard, the write-up
and train.py's summary: what a run's eval.parquet calls a figure is written here once."""

from __future__ import annotations

KS = (1, 5, 10)  # the CLIP paper's R@k
RECALL_AT_K = [f"{direction}_R@{k}" for direction in ("i2t", "t2i") for k in KS]
RETRIEVAL = ["i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5"]  # the bars of the final retrieval chart
# The comparison table's metrics; train.py's end-of-sweep summary prints them without the ranks.
TABLE_METRICS = [*RECALL_AT_K, "i2t_median_rank", "t2i_median_rank", "zero_shot_accuracy", "modality_gap"]
# train.py's end-of-sweep table: what fits in a terminal, each with its interval.
SUMMARY_METRICS = ["i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5", "zero_shot_accuracy"]
# The figures that are means of per-query outcomes (samples.parquet), so that two runs can be
# compared query by query; medians are not, and stay out of paired comparisons.
COMPARED_METRICS = [*RECALL_AT_K, "i2t_mean_rank", "t2i_mean_rank", "zero_shot_accuracy"]
# The Runs view's columns: every figure with an interval, and the modality gap (no better direction).
RUNS_METRICS = [*COMPARED_METRICS, "modality_gap"]
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
OUTCOMES = ["right at R@1", "wrong at R@1"]  # R@1: the strictest test a point can pass
MODALITIES = ["image", "text"]  # the values of the modality column in embeddings, umap and samples


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
