"""The locked image stages at fp32 on a CPU through ONNX Runtime, for the one pass that
extracts their features (training/features.py).

At fp32 on a CPU, a runtime made for inference runs EfficientNet-Lite0's frozen stages
(batch norms folded) about twice as fast as PyTorch's channels-last eager forward, outputs
within float rounding of each other (tests/test_cpu_inference.py checks them; bench/main_job.py's
features stage is the figure). Where a CPU computes bf16 natively the run's autocast keeps
PyTorch (its AMX kernels), and on a GPU PyTorch is the runtime made for it.
When onnxruntime is not installed, or the export fails, PyTorch runs the stages and the
reason is printed once.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

_warned: set[str] = set()


def available() -> str | None:
    """Why ONNX Runtime cannot serve here (None: it can)."""
    if torch.is_autocast_enabled("cpu"):
        return "the run computes at bf16 (PyTorch's kernels)"
    try:
        import onnx  # noqa: F401  the exporter writes through it
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed"
    return None


def _note(why: str) -> None:
    if why not in _warned:
        _warned.add(why)
        print(f"frozen image features in PyTorch: {why}", file=sys.stderr)


def runner(stages: torch.nn.Module, example: torch.Tensor):
    """A function batch -> stages(batch), through ONNX Runtime where it can run them (the key
    of the runtime that ran, for the feature cache, as its second value)."""
    why = available()
    if why is None:
        try:
            return _onnx_runner(stages, example), "onnxruntime"
        except Exception as e:  # an operator the exporter does not know, a broken install
            why = f"the ONNX export failed ({e.__class__.__name__}: {str(e)[:200]})"
    if why != "the run computes at bf16 (PyTorch's kernels)":
        _note(why)
    return stages, "torch"


def _onnx_runner(stages: torch.nn.Module, example: torch.Tensor):
    import warnings

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stages.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
            warnings.simplefilter("ignore")
            torch.onnx.export(stages.eval(), (example[:2].contiguous(),), str(path), input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                              dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"x": x.contiguous().numpy()})[0])

    return run
