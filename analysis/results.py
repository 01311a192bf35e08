"""The results step: a sweep's figures and comparisons, computed once from its runs and written
as tidy tables under runs/<sweep>/results/ (core/run_store.py), which the dashboard, the
write-up and train.py's summary read. train.py runs it at the end of every sweep; for a sweep
trained before it existed, or after its runs changed:

    python -m analysis.results                         # every sweep under runs/ whose tables are stale
    python -m analysis.results --runs-dir runs default # one sweep

The tables (columns in the README's "Run store" section):
- figures: each configuration's figure per split, at the start (step 0) and the end, with its
  95% interval (analysis.runs.group_table: seeds and images; one run: images alone).
- comparisons: every comparison of the sweep (each run of the sweep file's [comparisons.*]
  against its reference, and the reference against each closed-form fit), per split both
  sides have and per metric, by analysis.compare.compare: the difference, its interval,
  p-value, minimum detectable effect and verdict; and the p-value adjusted for the sweep's
  many comparisons, with the verdict it gives.
- best: per metric, the configurations that are the best on val or cannot be told apart from
  it (the Runs view's highlight).

Torch-free: it reads run files through core.run_store and computes with pandas and scipy.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.compare import SAMPLE_COLUMNS, best_of, compare_outcomes, on_split, query_outcomes
from analysis.runs import final_figures, group_names, group_table
from core import run_store, stats
from core.config import changes, closest_to_all
from core.names import COMPARED_METRICS, RUNS_METRICS

TABLES = ("figures", "comparisons", "best")
SPLITS = ("val", "test")  # choices are made on val; reported figures are test's
HEADLINE = ("test", "i2t_R@1")  # the split and metric a sweep's verdicts are read on
CLOSED_FORM = "closed form"  # the comparison of the reference against each closed-form fit
STAGES = {"first": "start", "last": "end"}  # figures' `step`: step 0, or the last evaluation
INPUT_FILES = (run_store.CONFIG, run_store.EVAL, run_store.SAMPLES)  # what the tables are computed from
COMPARISON_COLUMNS = ["comparison", "reference", "configuration", "changes", "split", "interval", "metric", "a", "b",
                      "difference", "low", "high", "p_value", "mde", "verdict", "p_adjusted", "family_size",
                      "adjusted_verdict", "image_low", "image_high", "seed_sd", "image_se", "mcnemar_p"]


# ---------------------------------------------------------------------------- a sweep's runs


@dataclass(frozen=True)
class SweepRuns:
    """A sweep's usable runs grouped into configurations (a configuration's runs are its seeds)."""

    root: Path
    name: str
    runs: dict[str, run_store.Run]  # usable runs by name, in the order they started
    groups: dict[str, list[str]]  # configuration -> its runs, lowest seed first
    evals: dict[str, pd.DataFrame]  # run -> read_eval
    comparisons: list[dict]  # sweep.json's comparisons whose configurations are here
    reference: str  # the configuration most comparisons are against ("" in a sweep with no usable run)

    def config(self, group: str) -> dict:
        """The resolved config of a configuration's first seed."""
        return self.runs[self.groups[group][0]].config

    def fixed(self, group: str) -> bool:
        """Whether a configuration is a deterministic fit (a closed form), which no seed changes."""
        return bool(self.config(group).get("closed_form"))

    def subset(self, group: str) -> bool:
        """Whether a configuration trains and validates on a label subset (fewer, other images)."""
        return _on_subset(self.config(group))


def _on_subset(config: dict) -> bool:
    return bool(config.get("include_labels") or config.get("exclude_labels"))


def sweep_names(root: Path | str) -> list[str]:
    """The sweeps under `root`, the one with the most runs first."""
    sizes = pd.Series([r.sweep for r in run_store.list_runs(root)], dtype=object).value_counts()
    return list(sizes.index)


def read_sweep(root: Path | str, sweep: str) -> SweepRuns:
    """The runs of `sweep` that have a readable config and an evaluation on val (a run still
    going, or killed, counts with its last evaluation), grouped into configurations."""
    root = Path(root)
    in_sweep = [r for r in run_store.list_runs(root) if r.sweep == sweep]
    evals = {r.name: run_store.read_eval(r.path) for r in in_sweep}
    usable = [r for r in in_sweep if r.config and (evals[r.name]["split"] == "val").any()]
    runs = {r.name: r for r in sorted(usable, key=lambda r: r.status.get("start_time") or float("inf"))}
    keys = group_names([(r.key, r.config) for r in runs.values()])
    groups: dict[str, list[str]] = {}
    for n, r in runs.items():
        groups.setdefault(keys[r.key].split("/", 1)[1], []).append(n)
    groups = {g: sorted(ns, key=lambda n: str(runs[n].config.get("seed"))) for g, ns in groups.items()}
    comparisons = [c for c in run_store.read_sweep_summary(root, sweep).get("comparisons") or []
                   if c["reference"] in groups and any(r in groups for r in c["runs"])]
    references = Counter(c["reference"] for c in comparisons).most_common(1)
    firsts = {g: runs[ns[0]].config for g, ns in groups.items()}
    configs = {g: c for g, c in firsts.items() if not _on_subset(c)} or firsts
    reference = references[0][0] if references else closest_to_all(configs) if configs else ""
    return SweepRuns(root=root, name=sweep, runs=runs, groups=groups, evals={n: evals[n] for n in runs},
                     comparisons=comparisons, reference=reference)


def pairs(sweep: SweepRuns) -> list[tuple[str, str, str]]:
    """(comparison, reference, configuration) of every comparison the results step computes:
    the sweep file's, then the reference against each closed-form fit (trained minus fitted)."""
    named = [(c["name"], c["reference"], g) for c in sweep.comparisons for g in c["runs"] if g in sweep.groups]
    fitted = [(CLOSED_FORM, g, sweep.reference) for g in sweep.groups if sweep.fixed(g) and g != sweep.reference]
    return named + fitted


def inputs(sweep: SweepRuns) -> dict:
    """The stamps of the files the tables are computed from: equal stamps, equal tables."""
    stamps = {n: run_store.file_stamp(r.path, INPUT_FILES) for n, r in sweep.runs.items()}
    return json.loads(json.dumps({"runs": stamps, "comparisons": sweep.comparisons}))


# ---------------------------------------------------------------------------- the tables


def figures_table(sweep: SweepRuns) -> pd.DataFrame:
    """Long: configuration, split, step (start or end), metric, value, low, high, runs."""
    rows = []
    member = {n: g for g, names in sweep.groups.items() for n in names}
    for split in sorted({s for e in sweep.evals.values() for s in e["split"].unique()}):
        for which, step in STAGES.items():
            runs = [{"run": n, "state": sweep.runs[n].state, "config": sweep.runs[n].config,
                     "figures": _figures(sweep.evals[n], split, which)} for n in sweep.runs]
            runs = [r for r in runs if not r["figures"].empty]
            if not runs:
                continue
            table = group_table(runs, {r["run"]: member[r["run"]] for r in runs}, RUNS_METRICS)
            for group, row in table.iterrows():
                rows += [{"configuration": group, "split": split, "step": step, "metric": m, "value": row[m],
                          "low": row[f"{m} low"], "high": row[f"{m} high"], "runs": int(row["seeds"])}
                         for m in RUNS_METRICS if np.isfinite(row[m])]
    return pd.DataFrame(rows, columns=["configuration", "split", "step", "metric", "value", "low", "high", "runs"])


def _figures(evals: pd.DataFrame, split: str, which: str) -> pd.DataFrame:
    rows = evals[evals["split"] == split]
    if which == "first" and len(rows):
        rows = rows[rows["step"] == rows["step"].min()]
    return final_figures(rows, split)


class Samples:
    """Each run's per-sample results, read once, by split."""

    def __init__(self, sweep: SweepRuns):
        self.sweep, self.frames, self.outcomes = sweep, {}, {}

    def of(self, run: str) -> pd.DataFrame:
        if run not in self.frames:
            self.frames[run] = run_store.read_samples(self.sweep.runs[run].path, columns=SAMPLE_COLUMNS)
        return self.frames[run]

    def side(self, group: str, split: str) -> dict[str, pd.DataFrame] | None:
        """run -> its query_outcomes on `split`, for every run of a configuration; None unless
        all have them."""
        for n in self.sweep.groups[group]:
            if (n, split) not in self.outcomes:
                self.outcomes[n, split] = query_outcomes(on_split(self.of(n), split))
        frames = {n: self.outcomes[n, split] for n in self.sweep.groups[group]}
        return frames if all(len(f) for f in frames.values()) else None


def comparisons_table(sweep: SweepRuns, samples: Samples) -> pd.DataFrame:
    """Every comparison (pairs) on each split both sides have, one row per metric, then the
    p-values adjusted (adjust)."""
    rows = []
    for name, reference, group in pairs(sweep):
        for split in SPLITS:
            side_a, side_b = samples.side(reference, split), samples.side(group, split)
            if side_a is None or side_b is None:
                continue
            table, interval = compare_outcomes(side_a, side_b, sweep.fixed(reference), sweep.fixed(group))
            rows += [{"comparison": name, "reference": reference, "configuration": group,
                      "changes": changes(sweep.config(reference), sweep.config(group)), "split": split,
                      "interval": interval, "metric": metric, **row.to_dict()} for metric, row in table.iterrows()]
    return adjust(pd.DataFrame(rows, columns=[c for c in COMPARISON_COLUMNS if c not in
                                              ("p_adjusted", "family_size", "adjusted_verdict")]))


def adjust(comparisons: pd.DataFrame) -> pd.DataFrame:
    """p_adjusted, family_size and adjusted_verdict: a family is every comparison of the sweep
    on one split and metric (the headline family: HEADLINE), adjusted by Benjamini-Hochberg
    (core.stats.adjust_p_values)."""
    out = comparisons.assign(p_adjusted=np.nan, family_size=0, adjusted_verdict="not tested")
    for _, family in out.groupby(["split", "metric"], sort=False):
        out.loc[family.index, "p_adjusted"] = stats.adjust_p_values(family["p_value"])
        out.loc[family.index, "family_size"] = int(family["p_value"].notna().sum())
    out["adjusted_verdict"] = [stats.adjusted_verdict(d, p, m) for d, p, m in
                               zip(out["difference"], out["p_adjusted"], out["metric"])]
    return out[COMPARISON_COLUMNS]


def best_table(sweep: SweepRuns, samples: Samples, split: str = "val") -> pd.DataFrame:
    """Per metric, each configuration on the full dataset: best (the best or indistinguishable
    from it, analysis.compare.best_of) or left out (evaluated on other images)."""
    groups = [g for g in sweep.groups if not sweep.subset(g) and samples.side(g, split) is not None]
    outcomes = {g: list(samples.side(g, split).values()) for g in groups}
    rows = []
    for metric in COMPARED_METRICS:
        marks, left_out = best_of(outcomes, metric)
        rows += [{"split": split, "metric": metric, "configuration": g, "best": bool(marks[g]),
                  "left_out": g in left_out} for g in groups]
    return pd.DataFrame(rows, columns=["split", "metric", "configuration", "best", "left_out"])


def compute(sweep: SweepRuns) -> dict[str, pd.DataFrame]:
    samples = Samples(sweep)
    return {"figures": figures_table(sweep), "comparisons": comparisons_table(sweep, samples),
            "best": best_table(sweep, samples)}


# ---------------------------------------------------------------------------- reading and writing


@dataclass(frozen=True)
class Results:
    """A sweep's runs and its results tables."""

    sweep: SweepRuns
    figures: pd.DataFrame
    comparisons: pd.DataFrame
    best: pd.DataFrame

    def headline(self) -> pd.DataFrame:
        """Every comparison on the headline split and metric (val where a side has no test split)."""
        split, metric = HEADLINE
        return on_split_or_val(self.comparisons[self.comparisons["metric"] == metric], split)


def on_split_or_val(comparisons: pd.DataFrame, split: str) -> pd.DataFrame:
    """Each comparison's rows on `split`, or on val where a side lacks that split (a sweep's
    leaky split has no test split): where a comparison is reported."""
    key = comparisons["comparison"] + "\0" + comparisons["reference"] + "\0" + comparisons["configuration"]
    there = set(key[comparisons["split"] == split])
    keep = (comparisons["split"] == split) | ((comparisons["split"] == "val") & ~key.isin(there))
    return comparisons[keep].reset_index(drop=True)


def comparison_rows(comparisons: pd.DataFrame, reference: str, group: str, split: str) -> pd.DataFrame | None:
    """The comparisons table's rows of `group` against `reference` on `split`, indexed by metric
    (compare's table with the adjusted columns), or None where the sweep does not compare them."""
    rows = comparisons[(comparisons["reference"] == reference) & (comparisons["configuration"] == group)
                       & (comparisons["split"] == split)]
    return None if rows.empty else rows.drop_duplicates("metric").set_index("metric")


def verdicts_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Comparison rows as read: what changes, B − A with its 95% interval, the minimum
    detectable effect, the raw and adjusted p-values and the adjusted verdict; one row per
    comparison and configuration."""
    d = stats._decimals
    differences = zip(rows["difference"], rows["low"], rows["high"], rows["metric"])
    return pd.DataFrame({
        "comparison": rows["comparison"], "configuration": rows["configuration"], "reference": rows["reference"],
        "split": rows["split"],
        "B − A [95% interval]": [f"{x:+.{d(m)}f} [{lo:.{d(m)}f}, {hi:.{d(m)}f}]" if np.isfinite(x) else "-"
                                 for x, lo, hi, m in differences],
        "MDE": [f"{x:.{d(m)}f}" if np.isfinite(x) else "-" for x, m in zip(rows["mde"], rows["metric"])],
        "p": [_p(x) for x in rows["p_value"]], "adjusted p": [_p(x) for x in rows["p_adjusted"]],
        "verdict (adjusted)": [v.split(",")[0] for v in rows["adjusted_verdict"]],
    }).reset_index(drop=True)


def _p(p: float) -> str:
    return "-" if not np.isfinite(p) else "< 0.001" if p < 0.001 else f"{p:.3f}"


def write(root: Path | str, sweep: str) -> tuple[Results, float]:
    """Compute a sweep's tables and write them; (results, seconds it took)."""
    t0 = time.perf_counter()
    runs = read_sweep(root, sweep)
    tables = compute(runs)
    run_store.write_results(root, sweep, tables, inputs(runs))
    return Results(runs, **tables), time.perf_counter() - t0


def load(root: Path | str, sweep: str) -> Results:
    """A sweep's results tables as the results step wrote them; computed (and written, where the
    folder can be written) when they are missing or older than the runs."""
    runs = read_sweep(root, sweep)
    stored = run_store.read_results(root, sweep, list(TABLES))
    if stored is not None and stored[1] == inputs(runs):
        return Results(runs, **stored[0])
    tables = compute(runs)
    try:
        run_store.write_results(root, sweep, tables, inputs(runs))
    except OSError:  # a read-only runs folder: the tables are used, not kept
        pass
    return Results(runs, **tables)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="*", help="sweep names (default: every sweep whose tables are stale)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--force", action="store_true", help="compute even where the tables are current")
    args = parser.parse_args(argv)
    for name in args.sweeps or sweep_names(args.runs_dir):
        stored = run_store.read_results(args.runs_dir, name, list(TABLES))
        if not args.force and stored is not None and stored[1] == inputs(read_sweep(args.runs_dir, name)):
            print(f"{name}: current")
            continue
        results, seconds = write(args.runs_dir, name)
        print(f"{name}: {len(results.comparisons)} comparison rows, {len(results.figures)} figures "
              f"in {seconds:.1f} s -> {args.runs_dir / name / run_store.RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
