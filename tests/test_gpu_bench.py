"""bench/gpu_step.py on the CPU (--smoke): one GPU session is rare, so the script must run
through, and a case group that fails must not cost the figures of the others."""

import json

import pytest

import bench.gpu_step as gpu_step
import bench.results as results


@pytest.fixture
def results_file(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS", tmp_path / "results.json")
    monkeypatch.setattr(results, "MARKDOWN", tmp_path / "RESULTS.md")
    return tmp_path / "results.json"


def test_a_failing_case_group_is_recorded_and_the_others_still_run(tmp_path, monkeypatch, results_file):
    build = gpu_step.project_model

    def no_cuda_graphs(*args, compile_mode="default", **kwargs):
        if compile_mode == "reduce-overhead":
            raise RuntimeError("CUDA graph capture failed (injected)")
        return build(*args, compile_mode=compile_mode, **kwargs)

    monkeypatch.setattr(gpu_step, "project_model", no_cuda_graphs)
    rc = gpu_step.main(["--smoke", "--skip-e2e", "--out", str(tmp_path)])

    assert rc == 1  # the run says it was incomplete
    out = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert out["errors"] == {"project+cudagraphs": "RuntimeError: CUDA graph capture failed (injected)"}
    assert set(out["step"]) == {"open_clip@77", "open_clip@coco", "project@77", "project@coco-random",
                                "project@coco-grouped"}
    assert all(row["samples_per_s"] > 0 and row["flops_per_sample"] > 0 for row in out["step"].values())
    # every ratio still has its cases
    assert set(gpu_step.best_ratios(out["step"])) == {"77_tokens", "coco_random", "coco_grouped"}

    gpu_step.record_results(tmp_path / "gpu_bench.json")
    recorded = json.loads(results_file.read_text())
    assert recorded["gpu.failed_case_groups"]["value"] == 1
    assert "CUDA graph capture failed" in recorded["gpu.failed_case_groups"]["notes"]
    assert "gpu.step.ratio_coco_grouped" in recorded
    assert "gpu.input_pipeline_ratio" not in recorded  # benchmark 2 was not run: no row is made up


def test_ratios_leave_out_what_was_not_measured():
    step = {"open_clip@77": {"samples_per_s": 100.0}, "project@77": {"samples_per_s": 120.0},
            "project@77+compile": {"samples_per_s": 150.0}, "project@coco-random": {"samples_per_s": 90.0}}
    ratios = gpu_step.best_ratios(step)
    assert ratios == {"77_tokens": ("project@77+compile", 1.5)}  # no open_clip@coco: no COCO ratios


def test_recorded_figures_name_the_code_they_measured(tmp_path, results_file):
    run = {"device": "NVIDIA H200", "torch": "2.11.0", "matmul_tflops": 700.0, "step": {}}
    gpu_run = tmp_path / "gpu_bench.json"

    gpu_run.write_text(json.dumps({**run, "revision": "abc1234567"}))  # the device's copy had git
    gpu_step.record_results(gpu_run)
    assert json.loads(results_file.read_text())["gpu.matmul_bf16_tflops"]["revision"] == "abc1234567"

    gpu_run.write_text(json.dumps({**run, "revision": None, "source_digest": gpu_step.source_digest()}))
    gpu_step.record_results(gpu_run)  # no git there, but the same sources as here: this checkout's commit
    assert json.loads(results_file.read_text())["gpu.matmul_bf16_tflops"]["revision"] == results.code_revision()

    gpu_run.write_text(json.dumps({**run, "revision": None, "source_digest": "0" * 16}))
    gpu_step.record_results(gpu_run)
    row = json.loads(results_file.read_text())["gpu.matmul_bf16_tflops"]
    assert row["revision"] == "unknown: the code changed after the run"
    assert f"| {row['revision']} |" in results.MARKDOWN.read_text()


def test_pipeline_stalls_separate_the_pace_from_the_pauses():
    wall = [0.1 * i for i in range(11)]  # ten steps of 0.1 s
    wall[6:] = [t + 0.9 for t in wall[6:]]  # the sixth step waited 0.9 s for its batch
    st = gpu_step.pipeline_stalls(wall, batch=256)
    assert st["median_samples_per_s"] == pytest.approx(2560)
    assert st["stalls"] == 1 and st["stall_s"] == pytest.approx(0.9) and st["slowest_s"] == pytest.approx(1.0)
    assert st["total_s"] == pytest.approx(1.9)
