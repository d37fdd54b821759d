"""What the device server accepts and how it times it; everything here that touches a model runs
in the measurement worker (:mod:`prunepilot.hw_models.server_worker`), never in the HTTP process.

* **ONNX** (always accepted): parsed with ``onnx``; every tensor in the file is walked (graph
  initializers, sparse initializers, node attributes ``t``/``tensors``/``sparse_tensor``/
  ``sparse_tensors``, subgraphs ``g``/``graphs`` at any depth, local functions and training
  graphs) and **any external-data reference is refused**: ONNX Runtime would resolve it as a
  path on the server. Then ``onnx.checker`` and timing in ONNX Runtime; the runs are stopped by
  ``RunOptions.terminate`` when the measurement limit passes (a long ``Loop`` included).
* **TorchScript** (only when the server was started with ``--allow-torchscript``): loaded from
  bytes with ``torch.jit.load``; then every method of every submodule is scanned (inlined graphs,
  nested blocks) and an archive is refused unless all its operators are in the ``aten`` or
  ``prim`` namespaces and none is in :data:`REFUSED_TORCHSCRIPT_OPS`. Among the ~3,900 aten/prim
  schemas of torch 2.14 the only ones taking a file name are ``aten::from_file`` and
  ``aten::save``; ``prim::Print`` and ``aten::warn`` write to the server's streams, and
  ``prim::PythonOp`` would call Python. A TorchScript run cannot be interrupted in-process, so
  the server kills the worker when the limit passes. Code in an archive's ``__setstate__`` runs
  at load time, before the scan: that is why loading happens in the worker too (no new file can
  be opened there).
* **Never**: pickles and ``torch.save`` checkpoints (refused on sight, :func:`sniff_format`).
"""

from __future__ import annotations

import io
import math
import threading
import time
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

#: Formats the server knows; TorchScript is accepted only on a server started with it allowed.
FORMATS = ("onnx", "torchscript")
#: Operator namespaces a TorchScript upload may use (tensor maths and control flow).
ALLOWED_TORCHSCRIPT_NAMESPACES = ("aten", "prim")
#: Operators refused even in those namespaces: they read or write files, print, or call Python.
REFUSED_TORCHSCRIPT_OPS = frozenset({"aten::from_file", "aten::save", "prim::Print", "aten::warn", "prim::PythonOp"})
_MESSAGE_CHARS = 300


class RequestError(Exception):
    """An HTTP error answer: status code and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class MeasureJob:
    """One measurement, as the HTTP process hands it to the worker (JSON on the wire).

    Attributes:
        fmt: ``"onnx"`` or ``"torchscript"`` (already sniffed and allowed by the server).
        shape: Input shape, or ``None`` for an ONNX model whose input shape is static.
        protocol: :meth:`MeasureProtocol.record` of the server's timing protocol.
        limit_s: Seconds the whole job (load, checks, warm-up, timing) may take.
        max_input_elements: Largest accepted product of the input shape.
    """

    fmt: str
    shape: tuple[int, ...] | None
    protocol: dict[str, Any]
    limit_s: float
    max_input_elements: int


def sniff_format(data: bytes) -> str:
    """``"onnx"``, ``"torchscript"``, or a RequestError(415) for pickles and other files."""
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        raise RequestError(
            415,
            "pickled objects are never accepted; export the model to ONNX (torch.onnx.export) "
            "or TorchScript (torch.jit.script(model).save(path)) and upload that",
        )
    if data[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile:
            raise RequestError(415, "the upload looks like a zip file but cannot be read") from None
        if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
            return "torchscript"
        raise RequestError(
            415,
            "this zip is not a TorchScript archive (a torch.save checkpoint is a pickle and is never "
            "accepted); save with torch.jit.script(model).save(path) or upload ONNX",
        )
    return "onnx"


def check_input_elements(shape: Sequence[int], cap: int) -> None:
    """Refuse (400) an input shape whose element count is above ``cap``."""
    elements = math.prod(int(d) for d in shape)
    if elements > cap:
        raise RequestError(
            400,
            f"input shape {'x'.join(str(d) for d in shape)} has {elements} elements; this server accepts at most "
            f"{cap} (its --max-input-elements); send a smaller shape or batch",
        )


# --- ONNX ---------------------------------------------------------------------------------------
def onnx_tensors(model: Any) -> Iterator[tuple[str, Any]]:
    """Every ``TensorProto`` in an ONNX ``ModelProto``, with where it sits (for messages)."""

    def sparse(where: str, st: Any) -> Iterator[tuple[str, Any]]:
        yield f"{where} (values)", st.values
        yield f"{where} (indices)", st.indices

    def nodes(where: str, node_list: Any) -> Iterator[tuple[str, Any]]:
        for node in node_list:
            at = f"{where} node {node.name or node.op_type!r}"
            for attr in node.attribute:
                a = f"{at} attribute {attr.name!r}"
                if attr.HasField("t"):
                    yield a, attr.t
                for t in attr.tensors:
                    yield a, t
                if attr.HasField("sparse_tensor"):
                    yield from sparse(a, attr.sparse_tensor)
                for st in attr.sparse_tensors:
                    yield from sparse(a, st)
                if attr.HasField("g"):
                    yield from graph(f"{a} subgraph", attr.g)
                for g in attr.graphs:
                    yield from graph(f"{a} subgraph", g)

    def graph(where: str, g: Any) -> Iterator[tuple[str, Any]]:
        for t in g.initializer:
            yield f"{where} initializer", t
        for st in g.sparse_initializer:
            yield from sparse(f"{where} sparse initializer", st)
        yield from nodes(where, g.node)

    yield from graph("graph", model.graph)
    for fn in model.functions:
        yield from nodes(f"function {fn.name!r}", fn.node)
    for info in model.training_info:
        yield from graph("training initialization", info.initialization)
        yield from graph("training algorithm", info.algorithm)


def check_onnx(data: bytes) -> Any:
    """Parse an ONNX model, refuse any external-data reference (they read server files), check it."""
    import onnx

    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:
        raise RequestError(415, f"not a valid ONNX model ({type(exc).__name__}: {str(exc)[:_MESSAGE_CHARS]})") from None
    for where, tensor in onnx_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0:
            raise RequestError(
                415,
                f"ONNX tensor {tensor.name!r} in the {where} refers to external data; external data is refused "
                "(it would be read from the server's disk): export one self-contained file (external_data=False)",
            )
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise RequestError(415, f"not a valid ONNX model ({type(exc).__name__}: {str(exc)[:_MESSAGE_CHARS]})") from None
    if len(model.graph.node) == 0:
        raise RequestError(415, "not a valid ONNX model (the graph has no nodes)")
    return model


def _timed_out(limit_s: float) -> RequestError:
    return RequestError(
        422,
        f"the model did not finish within the server's measurement limit of {limit_s:g} s "
        "(its --measure-timeout); measure a smaller model or ask for a longer limit",
    )


def time_onnx(data: bytes, job: MeasureJob, deadline: float) -> dict[str, Any]:
    """Check and time an ONNX model in ONNX Runtime; every run stops at ``deadline``
    (``time.monotonic``) through ``RunOptions.terminate``."""
    import numpy as np
    import onnxruntime as ort

    from prunepilot.hw_models.measure import MeasureProtocol, time_cpu_callable

    protocol = MeasureProtocol(**job.protocol)
    model = check_onnx(data)
    opts = ort.SessionOptions()
    threads = protocol.threads or 0  # 0 = ONNX Runtime's default
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 4  # fatal only: a model's errors are answered, not logged by ORT
    try:
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise _model_error("ONNX Runtime cannot load the model", exc) from None
    del model
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise RequestError(422, f"the ONNX model has {len(inputs)} inputs; the server times single-input models only")
    shape = job.shape
    if shape is None:
        dims = inputs[0].shape
        if not all(isinstance(d, int) and d > 0 for d in dims):
            raise RequestError(400, f"the ONNX model's input shape {dims} is dynamic; give ?shape=NxCxHxW")
        shape = tuple(int(d) for d in dims)
    check_input_elements(shape, job.max_input_elements)
    feed = {inputs[0].name: np.random.default_rng(protocol.seed).standard_normal(shape).astype(np.float32)}
    run_options = ort.RunOptions()
    run_options.log_severity_level = 4
    left = deadline - time.monotonic()
    if left <= 0:
        raise _timed_out(job.limit_s)
    stopper = threading.Timer(left, lambda: setattr(run_options, "terminate", True))
    stopper.daemon = True
    stopper.start()
    try:
        sess.run(None, feed, run_options)
        stats = time_cpu_callable(lambda: sess.run(None, feed, run_options), protocol)
    except Exception as exc:
        if run_options.terminate:
            raise _timed_out(job.limit_s) from None
        raise _model_error(f"ONNX Runtime cannot run the model on input shape {list(shape)}", exc) from None
    finally:
        stopper.cancel()
    return {"stats": stats, "input_shape": shape, "threads": threads, "runtime": "onnxruntime-cpu"}


# --- TorchScript --------------------------------------------------------------------------------
def torchscript_ops(module: Any) -> set[str]:
    """Every operator kind in every method of every submodule of a loaded TorchScript module."""
    kinds: set[str] = set()

    def walk(block: Any) -> None:
        for node in block.nodes():
            kinds.add(node.kind())
            for inner in node.blocks():
                walk(inner)

    for _, sub in module.named_modules():
        for name in sub._c._method_names():
            walk(sub._c._get_method(name).inlined_graph)
    return kinds


def check_torchscript_ops(module: Any) -> None:
    """Refuse (415) a TorchScript module that uses file, print or Python operators, or any
    operator outside :data:`ALLOWED_TORCHSCRIPT_NAMESPACES`."""
    kinds = torchscript_ops(module)
    bad = sorted(
        k for k in kinds if k in REFUSED_TORCHSCRIPT_OPS or k.split("::", 1)[0] not in ALLOWED_TORCHSCRIPT_NAMESPACES
    )
    if bad:
        raise RequestError(
            415,
            f"the TorchScript archive uses operators this server refuses: {', '.join(bad)}; only aten/prim tensor "
            f"operators are timed, never {', '.join(sorted(REFUSED_TORCHSCRIPT_OPS))}: remove them or upload ONNX",
        )


def time_torchscript(data: bytes, job: MeasureJob) -> dict[str, Any]:
    """Load a TorchScript archive from bytes, scan its operators, and time it in torch (CPU)."""
    import torch

    from prunepilot.hw_models.measure import MeasureProtocol, time_cpu_callable, torch_threads

    if job.shape is None:
        raise RequestError(400, "TorchScript uploads need ?shape=NxCxHxW")
    check_input_elements(job.shape, job.max_input_elements)
    protocol = MeasureProtocol(**job.protocol)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript is deprecated upstream
            module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:
        raise RequestError(415, f"not a loadable TorchScript archive ({str(exc)[:_MESSAGE_CHARS]})") from None
    check_torchscript_ops(module)
    module.eval()
    x = torch.randn(*job.shape, generator=torch.Generator().manual_seed(protocol.seed))
    with torch_threads(protocol.threads) as threads, torch.inference_mode():
        try:
            module(x)
            stats = time_cpu_callable(lambda: module(x), protocol)
        except Exception as exc:
            raise _model_error(f"the TorchScript model fails on input shape {list(job.shape)}", exc) from None
    return {"stats": stats, "input_shape": job.shape, "threads": threads, "runtime": "torch-eager-cpu"}


def _model_error(what: str, exc: BaseException) -> RequestError:
    text = str(exc)
    if isinstance(exc, MemoryError) or "alloc" in text.lower():
        return RequestError(422, f"{what}: it needs more memory than this server allows (its --worker-memory-mb)")
    if len(text) > _MESSAGE_CHARS:  # the head names the failing node, the tail the reason
        text = f"{text[: _MESSAGE_CHARS // 2]} ... {text[-_MESSAGE_CHARS // 2 :]}"
    return RequestError(422, f"{what}: {text}")


def run_job(job: MeasureJob, data: bytes) -> dict[str, Any]:
    """Run one job; the answer is ``{"status": 200, "result": ...}`` or ``{"status": N, "error": ...}``.

    A status of 500 carries the detail for the server's log only; the client gets a generic line.
    """
    deadline = time.monotonic() + job.limit_s
    try:
        out = time_onnx(data, job, deadline) if job.fmt == "onnx" else time_torchscript(data, job)
    except RequestError as exc:
        return {"status": exc.status, "error": exc.message}
    except MemoryError:
        return {"status": 422, "error": "the model needs more memory than this server allows (its --worker-memory-mb)"}
    except Exception as exc:  # noqa: BLE001 - answered as a generic 500, detail logged by the server
        return {"status": 500, "error": f"{type(exc).__name__}: {exc}"}
    stats = out.pop("stats")
    return {"status": 200, "result": {**out, "input_shape": list(out["input_shape"]), "stats": stats.record()}}
