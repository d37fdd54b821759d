"""Measured latency in ONNX Runtime (CPU), the second local runtime.

The model is exported to ONNX in memory (no file), loaded in an ``InferenceSession`` with an
explicit intra-op thread count, and timed with the same :class:`MeasureProtocol` as torch.
The device server uses :func:`time_onnx_bytes` for uploaded ONNX models.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from prunepilot.hw_models.base import HardwareError, LatencyModel, LatencyResult, batched_input_shape, runtime_versions
from prunepilot.hw_models.measure import (
    MeasureProtocol,
    TimingStats,
    measured_result,
    protocol_from_settings,
    time_cpu_callable,
)
from prunepilot.hw_models.registry import register_latency_model

_EXPORTERS = ("dynamo", "legacy")


def export_onnx_bytes(model: nn.Module, input_shape: Sequence[int], exporter: str = "dynamo") -> bytes:
    """Export ``model`` (eval mode) on zeros of ``input_shape`` to ONNX bytes, in memory.

    Args:
        exporter: ``"dynamo"`` (``torch.onnx.export(dynamo=True)``, torch's default) or
            ``"legacy"`` (the TorchScript-based exporter: faster, deprecated upstream).
    """
    if exporter not in _EXPORTERS:
        raise HardwareError(f"unknown ONNX exporter {exporter!r}; choose 'dynamo' or 'legacy'")
    was_training = model.training
    model.eval()
    x = torch.zeros(*[int(s) for s in input_shape])
    try:
        if exporter == "dynamo":
            prog = torch.onnx.export(model, (x,), dynamo=True, verbose=False, external_data=False)
            if prog is None:  # pragma: no cover - dynamo export always returns a program
                raise HardwareError("torch.onnx.export returned no program")
            return bytes(prog.model_proto.SerializeToString())
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            target: Any = buf  # the legacy exporter writes to file objects too
            torch.onnx.export(model, (x,), target, dynamo=False, input_names=["input"], output_names=["output"])
        return buf.getvalue()
    except HardwareError:
        raise
    except Exception as exc:
        raise HardwareError(
            f"cannot export {type(model).__name__} to ONNX ({exporter} exporter): {exc}; "
            "try exporter='legacy' or measure with 'torch-cpu'"
        ) from exc
    finally:
        model.train(was_training)


def onnx_input_shape(data: bytes) -> tuple[int, ...] | None:
    """Static shape of the first graph input of an ONNX model, or ``None`` if it is dynamic."""
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    dims = sess.get_inputs()[0].shape
    if all(isinstance(d, int) and d > 0 for d in dims):
        return tuple(int(d) for d in dims)
    return None


def time_onnx_bytes(
    data: bytes, input_shape: Sequence[int] | None, protocol: MeasureProtocol
) -> tuple[TimingStats, tuple[int, ...], int]:
    """Time an ONNX model in ONNX Runtime on CPU.

    Returns:
        ``(stats, input shape used, intra-op threads)``. ``input_shape`` may be ``None`` when
        the model's first input has a static shape.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    threads = protocol.threads or 0  # 0 = ONNX Runtime's default
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise HardwareError(f"ONNX Runtime cannot load the model: {exc}") from exc
    inp = sess.get_inputs()
    if len(inp) != 1:
        raise HardwareError(f"the ONNX model has {len(inp)} inputs; prunepilot times single-input models only")
    if input_shape is None:
        dims = inp[0].shape
        if not all(isinstance(d, int) and d > 0 for d in dims):
            raise HardwareError(f"the ONNX model's input shape {dims} is dynamic; give an input shape")
        input_shape = [int(d) for d in dims]
    shape = tuple(int(s) for s in input_shape)
    rng = np.random.default_rng(protocol.seed)
    feed = {inp[0].name: rng.standard_normal(shape).astype(np.float32)}
    try:
        sess.run(None, feed)
    except Exception as exc:
        raise HardwareError(f"ONNX Runtime cannot run the model on input shape {list(shape)}: {exc}") from exc
    stats = time_cpu_callable(lambda: sess.run(None, feed), protocol)
    return stats, shape, threads


@register_latency_model("onnxruntime-cpu")
class OnnxRuntimeLatency(LatencyModel):
    """Measured: export to ONNX in memory and time in ONNX Runtime's CPU execution provider."""

    requires_model = True

    def __init__(self, exporter: str = "dynamo", **protocol: Any) -> None:
        if exporter not in _EXPORTERS:
            raise HardwareError(f"unknown ONNX exporter {exporter!r}; choose 'dynamo' or 'legacy'")
        self.exporter = exporter
        self.protocol = protocol_from_settings(protocol)

    def measure_ms(self, model: nn.Module, input_shape: Sequence[int], batch_size: int = 1) -> LatencyResult:
        shape = batched_input_shape(input_shape, batch_size)
        data = export_onnx_bytes(model, shape, self.exporter)
        stats, shape, threads = time_onnx_bytes(data, shape, self.protocol)
        return measured_result(
            stats,
            self.name,
            "onnxruntime-cpu",
            self.protocol,
            threads,
            shape,
            runtime_versions("onnxruntime", "onnx"),
            exporter=self.exporter,
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "exporter": self.exporter, "protocol": self.protocol.record()}
