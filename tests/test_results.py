"""The results step (analysis/results.py): its tables, when it computes them again, and that the
dashboard and the write-up read the same numbers from them."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import results
from core import run_store, stats
from tests.synthetic_runs import known_ranks, make_seeded_runs, samples_frame, write_run
from tests.test_dashboard import app, assert_clean, widget
from writeup import report

COMPARISONS = [{"name": "lr", "reference": "base", "runs": ["better", "close", "worse"], "factor": ["lr"]}]


@pytest.fixture()
def seeded(tmp_path):
    make_seeded_runs(tmp_path)
    run_store.write_sweep_summary(tmp_path, "s", {"comparisons": COMPARISONS})
    return tmp_path


def test_the_tables_hold_every_comparison_figure_and_highlight(seeded):
    found = results.load(seeded, "s")
    rows = found.comparisons[found.comparisons["metric"] == "i2t_R@1"].set_index("configuration")
    assert list(rows.index) == ["better", "close", "worse"] and set(rows["split"]) == {"val"}  # no test split here
    assert rows.loc["better", "interval"] == "seeds by Welch's t, images by a paired bootstrap"
    assert rows.loc["close", "interval"] == "single runs, images resampled"  # one seed: images only
    assert rows.loc["better", "difference"] == pytest.approx(31.5 / 40 - 12 / 40)
    assert (rows["mde"] > 0).all() and (rows["family_size"] == 3).all()
    np.testing.assert_allclose(rows["p_adjusted"], stats.adjust_p_values(rows["p_value"]))
    assert rows.loc["better", "adjusted_verdict"].startswith("higher (better), adjusted p")
    figures = found.figures.set_index(["configuration", "split", "step", "metric"])
    assert figures.loc[("base", "val", "end", "i2t_R@1"), "value"] == pytest.approx(12 / 40)
    assert figures.loc[("base", "val", "end", "i2t_R@1"), "runs"] == 3
    best = found.best[found.best["metric"] == "i2t_R@1"].set_index("configuration")["best"]
    assert best["better"] and best["close"] and not best["base"] and not best["worse"]
    assert "subset" not in best.index  # validated on other images: left out of the highlight


def test_the_tables_are_kept_until_a_run_changes(seeded, monkeypatch):
    results.load(seeded, "s")
    calls = []
    monkeypatch.setattr(results, "compute", lambda sweep: calls.append(sweep.name) or {})
    results.load(seeded, "s")
    assert calls == []  # current: read, not computed
    write_run(seeded, "s/worse", samples_frame(known_ranks(5)), {"lr": 1e-2})  # retrained
    with pytest.raises(TypeError):  # computed again (the stub returns no tables)
        results.load(seeded, "s")
    assert calls == ["s"]


def test_the_command_writes_the_tables_of_every_stale_sweep(seeded, capsys):
    assert results.main(["--runs-dir", str(seeded)]) == 0
    assert "s: 27 comparison rows" in capsys.readouterr().out  # 3 comparisons x 9 metrics (zero-shot: not measured)
    assert run_store.read_results(seeded, "s", list(results.TABLES)) is not None
    assert results.main(["--runs-dir", str(seeded)]) == 0
    assert capsys.readouterr().out.strip() == "s: current"
    assert not [r for r in run_store.list_runs(seeded) if r.name == run_store.RESULTS]  # not taken for a run


def test_the_compare_view_shows_the_write_ups_numbers_for_every_comparison(seeded, monkeypatch):
    """For every comparison of the sweep, the Compare view's difference, interval and adjusted
    p-value equal the write-up's effects table, cell for cell."""
    effects = report.effects(report.load_sweep(seeded), "val", metrics=["i2t_R@1", "t2i_R@1"])
    for run, cell in zip(effects["run"], [report.short_verdict(r) for _, r in effects.iterrows()]):
        assert run in {"better", "close", "worse"} and cell  # every comparison has a written cell
    at = app(seeded, monkeypatch, "Compare")
    shown = 0
    for group in ("better", "close", "worse"):
        widget(at.selectbox, "Configuration A").set_value("s/base")
        widget(at.selectbox, "Configuration B").set_value(f"s/{group}").run()
        assert_clean(at)
        table = at.dataframe[0].value
        for _, row in effects[effects["run"] == group].iterrows():
            on_screen = table.loc["image→text R@1" if row["metric"] == "i2t_R@1" else "text→image R@1"]
            assert report.short_verdict(row).startswith(f"{on_screen['B − A']} {on_screen['95% interval']}")
            assert on_screen["adjusted p"] == f"{row['p_adjusted']:.4f}"
            shown += 1
    assert shown == len(effects) == 6
