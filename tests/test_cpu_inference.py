"""The frozen image stages through ONNX Runtime (training/cpu_inference.py): the same
features as PyTorch's, and PyTorch when the runtime cannot serve."""

import pytest
import torch

from core.config import RunConfig
from training import cpu_inference
from training.models import build_model


@pytest.fixture(scope="module")
def frozen_stages():
    model = build_model(RunConfig(name="x", data="openmoji"))
    tower = model.image_tower
    return tower.inference_stages(0, tower.cache_point).eval()


def test_onnx_runtime_gives_pytorch_s_features(frozen_stages):
    pytest.importorskip("onnxruntime")
    x = torch.randn(5, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    run, runtime = cpu_inference.runner(frozen_stages, x)
    assert runtime == "onnxruntime"
    with torch.inference_mode():
        expected = frozen_stages(x)
        got = run(x[:3])  # another batch size than the export's example
    assert got.shape == expected[:3].shape and got.dtype == torch.float32
    assert torch.allclose(got, expected[:3], atol=1e-4, rtol=1e-4)


def test_pytorch_runs_the_stages_when_the_runtime_cannot(frozen_stages, monkeypatch, capsys):
    monkeypatch.setattr(cpu_inference, "available", lambda: "onnxruntime is not installed")
    monkeypatch.setattr(cpu_inference, "_warned", set())
    run, runtime = cpu_inference.runner(frozen_stages, torch.zeros(2, 3, 224, 224))
    assert runtime == "torch" and run is frozen_stages
    assert "onnxruntime is not installed" in capsys.readouterr().err


def test_bf16_autocast_keeps_pytorch():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "bf16" in cpu_inference.available()
