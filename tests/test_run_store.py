"""The run store: round trip, atomic files, damage reporting, path safety."""

import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from analysis.runs import last_eval
from core import run_store


def _write_run(root, sweep="s", name="r", state="FINISHED"):
    w = run_store.RunWriter(run_store.run_dir(root, sweep, name))
    w.write_config({"name": name, "lr": 0.001})
    w.set_status("RUNNING")
    w.log_metrics(1, 0.5, 1.0, {"loss": 2.0, "lr": 1e-3})
    w.log_metrics(2, 1.0, 2.0, {"loss": float("nan"), "lr": 1e-3})
    w.log_eval(0, 0.0, "val", {"i2t_R@1": 0.1})
    w.log_eval(2, 1.0, "val", {"i2t_R@1": 0.4})
    w.flush()
    emb = pd.DataFrame(dict(sample_id=["img:a", "txt:0"], modality=["image", "text"], image_id=["a", "a"],
                            caption=["x", "x"], label=["l", "l"], split="val", step=2,
                            embedding=[np.ones(3, np.float32), np.zeros(3, np.float32)]))
    w.write_embeddings(emb)
    samples = pd.DataFrame(dict(modality=["image"], sample_id=["img:a"], image_id=["a"], caption=["x"], label=["l"],
                                step=[2], rank=[1], positive_cosine=np.float32([0.5]), topk_ids=[["txt:0"]],
                                topk_scores=[np.float32([0.5])], thumbnail=[b"png"]))
    w.write_samples(samples)
    w.set_status(state, step=2)
    return w.path


def test_round_trip_keeps_values_and_nan(tmp_path):
    path = _write_run(tmp_path)
    [run] = run_store.list_runs(tmp_path)
    assert (run.key, run.state, run.problems) == ("s/r", "FINISHED", [])
    assert run.config["lr"] == 0.001
    m = run_store.read_metrics(path)
    assert list(m.columns) == run_store.METRICS_SCHEMA.names
    assert math.isnan(m[(m.step == 2) & (m.name == "loss")].value.iloc[0])
    assert last_eval(run_store.read_eval(path)) == {"i2t_R@1": 0.4}
    e = run_store.read_embeddings(path, with_vectors=False)
    assert "embedding" not in e.columns and len(e) == 2
    assert list(run_store.read_embeddings(path).embedding.iloc[0]) == [1.0, 1.0, 1.0]
    assert run_store.has_embeddings(path) and run_store.read_umap(path).empty and run_store.umap_maps(path) == []
    one_map = dict(sample_id=["img:a"], modality=["image"], step=[2], umap_x=np.float32([1.0]),
                   umap_y=np.float32([2.0]))
    run_store.write_umap(path, pd.DataFrame(dict(one_map, map=["towers"])))
    run_store.write_umap(path, pd.DataFrame(dict(one_map, umap_x=np.float32([5.0]), map=["data"])))
    run_store.write_umap(path, pd.DataFrame(dict(one_map, umap_x=np.float32([3.0]), map=["towers"])))  # a refit
    assert run_store.umap_maps(path) == ["data", "towers"]
    xy = run_store.read_umap(path, "towers")
    assert list(xy.columns) == run_store.UMAP_SCHEMA.names and list(xy.umap_x) == [3.0]
    assert list(run_store.read_umap(path, "data").umap_x) == [5.0]
    assert run_store.read_samples(path).thumbnail.iloc[0] == b"png"


def test_each_embedding_step_is_its_own_row_group_and_the_last_reads_alone(tmp_path):
    import pyarrow.parquet as pq

    w = run_store.RunWriter(tmp_path / "s" / "r")
    rows = [dict(sample_id=f"img:{i}", modality="image", image_id=str(i), caption="c", label="l", split="val",
                 step=step, embedding=np.full(4, step + i, np.float32), umap_x=np.nan, umap_y=np.nan)
            for step in (40, 0) for i in range(3)]  # written out of step order
    w.write_embeddings(pd.DataFrame(rows))
    file = pq.ParquetFile(w.path / run_store.EMBEDDINGS)
    assert [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)] == [3, 3]
    assert file.read_row_group(0).column("step").to_pylist() == [0, 0, 0]
    last = run_store.read_embeddings(w.path, last_step=True)
    assert list(last["step"]) == [40] * 3 and [v[0] for v in last["embedding"]] == [40.0, 41.0, 42.0]
    assert run_store.read_embeddings(tmp_path / "missing", last_step=True).empty


def test_samples_written_before_the_rename_read_with_modality(tmp_path):
    """samples.parquet once called its modality column `kind`: such a run is whole, and reads
    under the new name, whole or column by column."""
    path = _write_run(tmp_path)
    old = pd.read_parquet(path / run_store.SAMPLES).rename(columns={"modality": "kind"})
    old.to_parquet(path / run_store.SAMPLES)
    assert run_store.load_run(path).problems == []
    assert list(run_store.read_samples(path)["modality"]) == ["image"]
    assert list(run_store.read_samples(path, columns=["modality", "rank"]).columns) == ["modality", "rank"]


def test_no_temporary_files_left_and_none_listed(tmp_path):
    path = _write_run(tmp_path)
    assert not [p for p in os.listdir(path) if p.startswith(".")]
    (path / ".metrics.parquet.123.tmp").write_bytes(b"half")  # what a killed writer leaves
    (tmp_path / "s" / ".hidden-run").mkdir()
    assert [r.key for r in run_store.list_runs(tmp_path)] == ["s/r"]


def test_damaged_runs_are_reported_not_fatal(tmp_path):
    good = _write_run(tmp_path, name="good")
    trunc = _write_run(tmp_path, name="truncated")
    data = (trunc / "eval.parquet").read_bytes()
    (trunc / "eval.parquet").write_bytes(data[: len(data) // 2])
    zero = _write_run(tmp_path, name="zero")
    (zero / "metrics.parquet").write_bytes(b"")
    noconf = _write_run(tmp_path, name="noconfig")
    (noconf / "config.json").unlink()
    badjson = _write_run(tmp_path, name="badjson")
    (badjson / "status.json").write_text("{not json")
    (tmp_path / "s" / "notes").mkdir()  # a non-run folder: ignored
    runs = {r.name: r for r in run_store.list_runs(tmp_path)}
    assert set(runs) == {"good", "truncated", "zero", "noconfig", "badjson"}
    assert runs["good"].problems == []
    assert "eval.parquet is unreadable" in runs["truncated"].problems[0]
    assert "metrics.parquet is unreadable" in runs["zero"].problems[0]
    assert runs["noconfig"].problems == ["config.json is missing"]
    assert "status.json is unreadable" in runs["badjson"].problems[0]
    assert run_store.read_eval(trunc).empty and list(run_store.read_eval(trunc).columns) == run_store.EVAL_SCHEMA.names
    assert not run_store.read_metrics(good).empty


def test_missing_column_is_a_problem(tmp_path):
    path = _write_run(tmp_path)
    frame = pd.read_parquet(path / "metrics.parquet").drop(columns=["wall_time"])
    frame.to_parquet(path / "metrics.parquet")
    [run] = run_store.list_runs(tmp_path)
    assert run.problems == ["metrics.parquet lacks column(s) wall_time"]


def test_interrupted_when_pid_gone_or_heartbeat_stale(tmp_path):
    path = _write_run(tmp_path, state="RUNNING")
    status = json.loads((path / "status.json").read_text())
    assert run_store.display_state(status) == "RUNNING"  # this very process
    assert run_store.display_state(dict(status, pid=2**22 + 12345)) == "INTERRUPTED"
    assert run_store.display_state(status, now=status["heartbeat"] + 3600) == "INTERRUPTED"


def test_resolve_run_refuses_escapes(tmp_path):
    _write_run(tmp_path / "runs")
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "runs" / "s" / "link")
    assert run_store.resolve_run(tmp_path / "runs", "s/r").name == "r"
    for bad in ("../x", "s/..", "/etc/passwd", "s/r/../../x", "s/link", "s/missing"):
        with pytest.raises(run_store.RunStoreError):
            run_store.resolve_run(tmp_path / "runs", bad)


def test_readers_do_not_import_torch():
    import subprocess
    import sys
    code = "import core.run_store, core.config, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_older_umap_file_reads_as_the_run_s_own_map_and_prompts_are_opt_in(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    w = run_store.RunWriter(tmp_path / "s" / "r")
    rows = [dict(sample_id=sid, modality=mod, image_id="a", caption="c", label="l", split="val", step=0,
                 embedding=np.ones(2, np.float32))
            for sid, mod in (("img:a", "image"), ("txt:0", "text"), ("prompt:l", run_store.PROMPT))]
    w.write_embeddings(pd.DataFrame(rows))
    assert list(run_store.read_embeddings(w.path).modality) == ["image", "text"]
    assert list(run_store.read_embeddings(w.path, prompts=True).modality) == ["image", "text", "prompt"]
    old = pa.table(dict(sample_id=["img:a"], modality=["image"], step=pa.array([0], pa.int64()),
                        umap_x=pa.array([1.0], pa.float32()), umap_y=pa.array([2.0], pa.float32())))
    pq.write_table(old, w.path / run_store.UMAP)  # written before maps were aligned
    assert run_store.umap_maps(w.path) == [""] and run_store.read_umap(w.path, "").umap_y.iloc[0] == 2.0
