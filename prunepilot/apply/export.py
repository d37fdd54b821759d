"""Exporting a pruned model, each format checked against the eager model on a batch.

=================  ==================  ==============================================================
format             file                check
=================  ==================  ==============================================================
onnx               ``model.onnx``      ``onnx.checker.check_model(full_check=True)``, then run in
                                       ONNX Runtime (CPU) on the check batch vs eager
torchscript        ``model.ts``        ``torch.jit.trace``, save, ``torch.jit.load``, run vs eager
exported-program   ``model.pt2``       ``torch.export.export``, ``torch.export.save``, ``load``, run
                                       ``.module()`` vs eager
=================  ==================  ==============================================================

Every export is traced on an example batch of 2 with a **dynamic batch dimension** and checked
on the check batch (another batch size, real data when a dataset is given), so the check also
shows that other batch sizes work. A check passes when the largest absolute difference of the
outputs is at most the tolerance (default ``1e-4``); the report keeps the difference, the
largest absolute output (its scale) and the tolerance. When a model cannot be exported with a
dynamic batch, it is exported at the check batch's size and the report says so
(``dynamic_batch: false``); an export only counts when the written file runs the check batch
(tracing at batch 1 can fix the batch silently, as with torchvision's ViT). A model with more
than 1.5 GiB of weights is written as ``model.onnx`` plus ``model.onnx.data`` (ONNX's external
data: one protobuf cannot exceed 2 GiB).

``torch.jit`` is deprecated upstream in favour of ``torch.export``; its deprecation warnings
are kept in the check's ``warnings``.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunepilot.errors import ConfigError, one_of

#: Supported formats and the file each writes.
EXPORT_FORMATS: dict[str, str] = {
    "onnx": "model.onnx",
    "torchscript": "model.ts",
    "exported-program": "model.pt2",
}
_ALIASES = {"ts": "torchscript", "jit": "torchscript", "torch.export": "exported-program", "pt2": "exported-program"}
ONNX_EXPORTERS = ("dynamo", "legacy")
DEFAULT_TOLERANCE = 1e-4
_NOTED = (DeprecationWarning, FutureWarning)  # warnings kept in a check's record


@dataclass(frozen=True)
class ExportCheck:
    """The outcome of exporting one format and comparing it with the eager model.

    Attributes:
        format: ``onnx``, ``torchscript`` or ``exported-program``.
        path: File written (None if the export failed before writing).
        ok: The export worked and ``max_abs_diff <= tolerance``.
        max_abs_diff: Largest absolute difference from the eager outputs on the check batch.
        max_abs_output: Largest absolute eager output (the scale the difference is judged at).
        tolerance: The absolute tolerance used.
        check: What was checked, in words.
        batch_size: Batch size of the check batch.
        dynamic_batch: Whether the export accepts any batch size.
        seconds: Time to export and check.
        error: Why the export or its check failed (None when it worked).
        warnings: Warnings raised while exporting (deprecations and the like).
    """

    format: str
    path: str | None
    ok: bool
    max_abs_diff: float | None
    max_abs_output: float | None
    tolerance: float
    check: str
    batch_size: int
    dynamic_batch: bool
    seconds: float
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for ``report.json``)."""
        return asdict(self)


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """Canonical format names from ``"onnx,torchscript"`` or a sequence; duplicates dropped.

    Raises:
        ConfigError: an unsupported name (the message lists the supported ones).
    """
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out: list[str] = []
    for raw in items:
        name = raw.strip().lower()
        if not name:
            continue
        name = _ALIASES.get(name, name)
        if name not in EXPORT_FORMATS:
            raise ConfigError(
                f"export format {raw.strip()!r} is not supported; choose {one_of(EXPORT_FORMATS)} "
                "(comma-separated, e.g. --export onnx,torchscript)"
            )
        if name not in out:
            out.append(name)
    return tuple(out)


def export_and_check(
    model: nn.Module,
    fmt: str,
    out_dir: str | Path,
    example: torch.Tensor,
    check_batch: torch.Tensor,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    onnx_exporter: str = "dynamo",
) -> ExportCheck:
    """Export ``model`` (eval mode) in ``fmt`` to ``out_dir`` and compare it with eager.

    Errors during export or loading do not raise: they come back as a failed check with the
    reason, so one format's failure does not hide the others' results.
    """
    fmt = parse_formats([fmt])[0]
    if onnx_exporter not in ONNX_EXPORTERS:
        raise ConfigError(f"onnx exporter {onnx_exporter!r} is unknown; choose {one_of(ONNX_EXPORTERS)}")
    path = Path(out_dir) / EXPORT_FORMATS[fmt]
    exporter: Callable[[nn.Module, torch.Tensor, Path, bool], Callable[[torch.Tensor], torch.Tensor]]
    if fmt == "onnx":

        def exporter(m: nn.Module, x: torch.Tensor, p: Path, dyn: bool) -> Callable[[torch.Tensor], torch.Tensor]:
            return _export_onnx(m, x, p, dyn, onnx_exporter)

        what = (
            f"onnx.checker (full_check) + ONNX Runtime CPU vs eager ({onnx_exporter} exporter), max |diff| <= "
            f"{tolerance:g}"
        )
    elif fmt == "torchscript":
        exporter = _export_torchscript
        what = f"torch.jit.trace -> save -> torch.jit.load, run vs eager, max |diff| <= {tolerance:g}"
    else:
        exporter = _export_program
        what = f"torch.export.export -> save -> load, run .module() vs eager, max |diff| <= {tolerance:g}"

    was_training = model.training
    model.eval()
    start = time.perf_counter()
    caught: list[warnings.WarningMessage] = []
    dynamic = False
    diff: float | None = None
    scale: float | None = None
    try:
        with torch.no_grad():
            reference = model(check_batch)
        with warnings.catch_warnings(record=True) as caught, _quiet():
            warnings.simplefilter("always")
            got, dynamic = _export_and_run(exporter, model, example, check_batch, path)
        diff = float((got.float() - reference.float()).abs().max())
        scale = float(reference.abs().max())
        ok = diff <= tolerance
        error = None if ok else f"outputs differ by {diff:.3g} > tolerance {tolerance:g}"
    except Exception as exc:  # noqa: BLE001 - the report carries the reason
        ok, error = False, f"{type(exc).__name__}: {_first_line(exc)}"
    finally:
        model.train(was_training)
    return ExportCheck(
        format=fmt,
        path=str(path) if path.exists() else None,
        ok=ok,
        max_abs_diff=diff,
        max_abs_output=scale,
        tolerance=tolerance,
        check=what,
        batch_size=int(check_batch.shape[0]),
        dynamic_batch=dynamic,
        seconds=time.perf_counter() - start,
        error=error,
        warnings=sorted({_first_line(w.message) for w in caught if issubclass(w.category, _NOTED)}),
    )


def _export_and_run(
    exporter: Callable[[nn.Module, torch.Tensor, Path, bool], Callable[[torch.Tensor], torch.Tensor]],
    model: nn.Module,
    example: torch.Tensor,
    check_batch: torch.Tensor,
    path: Path,
) -> tuple[torch.Tensor, bool]:
    """Export with a dynamic batch and run the check batch through the file; ``(output, dynamic)``.

    An export can succeed yet fix the batch size: tracing at batch 1 lets the exporter specialise
    the batch dimension (torchvision's ViT comes out with a static input of batch 1, which ONNX
    Runtime then refuses at batch 2). So each attempt counts only when the written file runs the
    check batch: dynamic at the example, dynamic at the check batch (a batch > 1 is not
    specialised), then fixed at the check batch; the last attempt's error is the one reported.
    """
    attempts = [(example, True)]
    if int(check_batch.shape[0]) != int(example.shape[0]):
        attempts.append((check_batch, True))
    attempts.append((check_batch, False))
    for x, dynamic in attempts[:-1]:
        try:
            return exporter(model, x, path, dynamic)(check_batch), dynamic
        except Exception:  # noqa: BLE001 - the next attempt
            pass
    x, dynamic = attempts[-1]
    return exporter(model, x, path, dynamic)(check_batch), dynamic  # its error is the caller's report


# --- the three exporters: each writes ``path`` and returns a runner of the written file ----------
def _batch_dim(dynamic: bool) -> tuple[dict[int, Any], ...] | None:
    return ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic else None


ONNX_SINGLE_FILE_BYTES = 1536 * 2**20
"""Weights above this go to ``model.onnx.data`` beside ``model.onnx``: one ONNX protobuf cannot
exceed 2 GiB (vit_h_14 pruned by half still has 1.7 GB of weights)."""


def needs_external_data(model: nn.Module) -> bool:
    """Whether ``model``'s parameters and buffers are too large for one ONNX file."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) > ONNX_SINGLE_FILE_BYTES


def _export_onnx(
    model: nn.Module, x: torch.Tensor, path: Path, dynamic: bool, exporter: str
) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnx
    import onnxruntime as ort

    if exporter == "dynamo":
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=True,
            external_data=needs_external_data(model),
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=_batch_dim(dynamic),
            verbose=False,
        )
    else:
        axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, input_names=["input"], output_names=["logits"], dynamic_axes=axes
        )
    onnx.checker.check_model(str(path), full_check=True)  # a path: the checker reads external data too
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: batch.numpy()})[0])

    return run


def _export_torchscript(
    model: nn.Module, x: torch.Tensor, path: Path, dynamic: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    traced = torch.jit.trace(model, (x,), check_trace=False)
    torch.jit.save(traced, str(path))
    loaded = torch.jit.load(str(path), map_location="cpu")
    loaded.eval()

    def run(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return loaded(batch)  # type: ignore[no-any-return]

    return run


def _export_program(
    model: nn.Module, x: torch.Tensor, path: Path, dynamic: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    program = torch.export.export(model, (x,), dynamic_shapes=_batch_dim(dynamic))
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()

    def run(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return loaded(batch)  # type: ignore[no-any-return]

    return run


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence the exporters' progress prints (the ONNX exporter writes to stdout)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def _first_line(obj: object) -> str:
    text = str(obj).strip()
    return text.splitlines()[0] if text else type(obj).__name__


def export_batches(
    check_batch_size: int, data: Any | None, input_shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """An example batch of 2 for tracing and the check batch (test images of a
    :class:`~prunepilot.data.DataBundle` when there are data, else seeded noise)."""
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2, *input_shape[1:], generator=gen)
    if data is not None:
        images = torch.cat([x for x, _ in _take(data.test, check_batch_size)])[:check_batch_size]
        return example, images
    return example, torch.randn(check_batch_size, *input_shape[1:], generator=gen)


def _take(loader: Any, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out, seen = [], 0
    for x, y in loader:
        out.append((x, y))
        seen += x.shape[0]
        if seen >= n:
            break
    return out
