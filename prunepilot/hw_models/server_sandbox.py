"""Locking the measurement worker down: warm up everything a job needs, then take its resources away.

The worker (:mod:`prunepilot.hw_models.server_worker`) calls :func:`warm_up` and then
:func:`lock_down` once, before it reads its first job:

1. :func:`warm_up` imports onnx, ONNX Runtime and torch and runs a tiny model of each format
   through the same code path as a job, so nothing needs loading from disk later;
2. :func:`lock_down` applies ``resource`` limits: ``RLIMIT_NOFILE`` 0 (no file, socket or pipe
   can be opened any more, so ``aten::from_file`` or an external-data path fails even if a check
   missed it), ``RLIMIT_AS`` at the process's own footprint plus ``memory_mb``, ``RLIMIT_CORE`` 0.

This is defence in depth, not a full sandbox (no seccomp, no namespaces): the format checks of
:mod:`prunepilot.hw_models.server_models` come first, these limits second. Unix only.

Example::

    versions = warm_up()
    applied = lock_down(memory_mb=2048)  # {"footprint_mb": ..., "address_space_mb": ..., "open_files": 0}
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prunepilot.hw_models.server_models import MeasureJob


def warm_up() -> dict[str, Any]:
    """Run a tiny ONNX and a tiny TorchScript model through :func:`run_job`, so that every module
    and library a job needs is loaded before the worker can no longer open files."""
    import io
    import warnings

    import onnx
    import torch
    from onnx import TensorProto, helper

    from prunepilot.hw_models.base import runtime_versions
    from prunepilot.hw_models.measure import MeasureProtocol
    from prunepilot.hw_models.server_models import run_job

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "warm_up",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    onnx_bytes = onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(torch.nn.Linear(4, 2).eval(), torch.zeros(1, 4)), buf)
    protocol = asdict(MeasureProtocol(warmup=1, min_runs=3, max_runs=3, min_seconds=0.0, max_attempts=1))
    for fmt, data, shape in (("onnx", onnx_bytes, None), ("torchscript", buf.getvalue(), (1, 4)), ("onnx", b"x", None)):
        answer = run_job(MeasureJob(fmt, shape, protocol, 30.0, 1 << 20), data)
        if (answer["status"] == 200) != (data != b"x"):
            raise RuntimeError(f"warm-up of the {fmt} path failed: {answer}")
    return runtime_versions("onnxruntime", "onnx")


def footprint_bytes() -> int | None:
    """This process's virtual memory size (``VmSize``), or None where ``/proc`` cannot be read."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def lock_down(memory_mb: int) -> dict[str, Any]:
    """Apply the worker's resource limits (see the module docstring); returns what was applied.

    Call it once, after :func:`warm_up`: afterwards the process can open no file.
    """
    applied: dict[str, Any] = {}
    try:
        import resource
    except ImportError:  # pragma: no cover - not Unix
        return {"resource_limits": False}
    footprint = footprint_bytes()
    if footprint is not None:
        cap = footprint + memory_mb * 1024 * 1024
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)  # an unprivileged process cannot raise its hard limit
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        applied.update(footprint_mb=footprint // (1 << 20), address_space_mb=cap // (1 << 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (0, 0))
    applied["open_files"] = 0
    return applied
