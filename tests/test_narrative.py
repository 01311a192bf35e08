"""The write-up's newer measurements (writeup/report.py) and the sentences that state them
(writeup/narrative.py), on hand-made inputs whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.test_analysis import seeded_sweep
from writeup import narrative, report


def test_identical_images_are_counted_within_their_split(tmp_path):
    files = {"a": b"same", "b": b"same", "c": b"same", "d": b"other", "e": b"lone"}
    for name, data in files.items():
        (tmp_path / f"{name}.png").write_bytes(data)
    manifest = pd.DataFrame({"image_id": list(files), "image_path": [str(tmp_path / f"{n}.png") for n in files],
                             "split": ["val", "val", "train", "val", "train"]})
    twins = report.identical_in_split(manifest)
    assert twins["val"] == 2  # a and b; d has no twin
    assert twins["train"] == 0  # c's twins are in val: a retrieval on train cannot confuse them


def probe(captions: list[str], images: np.ndarray, queries: dict[str, tuple[np.ndarray, str]],
          labels: list[str] | None = None, prompts: dict | None = None, template: str = "{}") -> report.TextProbe:
    rows = pd.DataFrame({"image_id": [f"i{k}" for k in range(len(captions))], "caption": captions,
                         "label": labels or ["x"] * len(captions)})
    return report.TextProbe(rows=rows, images=images, labels=sorted(set(rows["label"])),
                            queries={q: v for q, (v, _) in queries.items()}, prompts=prompts or {},
                            template=template, accepts={q: rule for q, (_, rule) in queries.items()})


def test_query_hits_rank_the_first_accepted_image_against_a_random_order():
    images = np.eye(4, dtype=np.float32)
    p = probe(["red apple", "cherries", "pineapple", "fish cake"], images,
              {"red fruit": (np.array([0.1, 0.2, 0.9, 0.0]), r"\b(?:cherries|red apple)\b"),
               "sea animal": (np.array([0.0, 0.0, 0.0, 1.0]), r"\bfish\b(?! cake)")})
    hits = report.query_hits(p, k=2)
    assert hits.loc["red fruit", "accepted images"] == 2  # "pineapple" does not pass for "apple"
    assert hits.loc["red fruit", "rank of the first accepted"] == 2  # pineapple first, cherries second
    assert hits.loc["red fruit", "accepted in the 2 nearest"] == 1
    assert hits.loc["red fruit", "the same in a random order"] == pytest.approx(5 / 3, abs=0.05)  # one decimal
    assert pd.isna(hits.loc["sea animal", "rank of the first accepted"])  # no image answers it
    text = narrative.queries(hits, k=2)
    assert "Of the 1 queries that some validation image answers, 0 get" in text
    assert "most first answers are wrong" in text


def test_a_prompt_chosen_on_one_half_is_measured_on_the_other():
    n = 80
    labels = ["a" if k % 2 else "b" for k in range(n)]
    images = np.array([[1.0, 0.0] if lab == "a" else [0.0, 1.0] for lab in labels], dtype=np.float32)
    right = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)  # prompts of labels a, b
    p = probe([f"c{k}" for k in range(n)], images, {}, labels=labels,
              prompts={"own {}": right[::-1], "good {}": right}, template="own {}")
    concepts = {f"i{k}": f"concept{k // 4}" for k in range(n)}
    held = report.prompt_holdout(p, concepts)
    assert held["chosen"] == "“good {}”" and not held["own"]
    assert held["choose_images"] + held["measure_images"] == n and held["choose_images"] % 4 == 0  # whole concepts
    assert held["difference"] == pytest.approx(1.0) and held["low"] > 0
    assert "better" in held["verdict"] or "higher" in held["verdict"]


def test_answer_agreement_and_interval_labels(tmp_path):
    sweep = seeded_sweep(tmp_path, [{"name": "lr", "reference": "base", "runs": ["better"], "factor": ["lr"]}])
    same = report.answer_agreement(sweep, "base", "base", "val")
    assert same["same_seed"] == 1.0 and same["seeds"] == len(sweep.groups["base"])
    assert 0 <= same["across_seeds"] <= 1
    single = [g for g, runs in sweep.groups.items() if len(runs) == 1]
    assert report.interval_label(sweep, ["base"]) == report.CONFIGURATION_INTERVAL
    assert report.interval_label(sweep, ["base", single[0]]).endswith(f"{single[0]}: one run, images only")
    assert report.interval_label(sweep, single[:1]).startswith("95% bootstrap interval over images")


def test_settings_table_says_shared_settings_once(tmp_path):
    sweep = seeded_sweep(tmp_path, [])
    table, common = report.settings_table(sweep)
    assert common and not set(common) & set(table.columns)
    assert all(table[c].nunique() > 1 for c in table.columns)
