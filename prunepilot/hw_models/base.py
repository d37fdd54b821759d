"""The :class:`LatencyModel` plug-in point and the :class:`LatencyResult` every model returns.

A latency model answers one of two questions, and says which one it answered:

* **measured** (``requires_model = True``): time a real (pruned) ``nn.Module`` at an input
  shape and batch size, on this machine, another runtime, or a remote device;
* **predicted** (``requires_model = False``): estimate the latency of a set of group widths on
  a ``PruningSpace`` from its per-layer shapes alone, without building the pruned model.

Example:
    >>> from prunepilot.hw_models import get_latency_model
    >>> lm = get_latency_model("macs")
    >>> lm.requires_model
    False
"""

from __future__ import annotations

import platform
import sys
from abc import ABC
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from prunepilot.errors import PrunepilotError

if TYPE_CHECKING:
    from torch import nn

    from prunepilot.pruning.layers import LayerShape

LatencyKind = Literal["measured", "predicted"]


class HardwareError(PrunepilotError, RuntimeError):
    """A latency cannot be measured or predicted (missing runtime, device, table entry...)."""


class SupportsLayers(Protocol):
    """What predictors need from a ``PruningSpace``: per-layer shapes at given widths."""

    def layers(self, widths: Mapping[str, int], removed_blocks: Sequence[str] = ...) -> list[LayerShape]: ...


@dataclass(frozen=True)
class LatencyResult:
    """One latency figure and how it was obtained.

    Attributes:
        ms: Latency in milliseconds (the median for measurements). Proxies that are not in
            milliseconds say their unit in ``details["unit"]``.
        kind: ``"measured"`` (timed on a device) or ``"predicted"`` (from a hardware model).
        model_name: Registry name of the latency model that gave the figure (``"torch-cpu"``).
        cv: Coefficient of variation (std / mean) of the timed runs; ``None`` for predictions.
        iqr_ms: Interquartile range of the timed runs in ms; ``None`` for predictions.
        details: Protocol record: runtime, versions, threads, batch size, input shape, runs,
            and ``unstable`` when the spread stayed above the threshold after re-measuring.
    """

    ms: float
    kind: LatencyKind
    model_name: str
    cv: float | None = None
    iqr_ms: float | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str:
        """Alias of :attr:`model_name` (which latency model produced this figure)."""
        return self.model_name

    @property
    def unstable(self) -> bool:
        """True when a measurement's spread stayed above the protocol's CV threshold."""
        return bool(self.details.get("unstable", False))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for candidate records)."""
        return {
            "ms": self.ms,
            "kind": self.kind,
            "model_name": self.model_name,
            "cv": self.cv,
            "iqr_ms": self.iqr_ms,
            "details": dict(self.details),
        }


def runtime_versions(*extra: str) -> dict[str, str]:
    """Versions of Python, torch, prunepilot and (when named in ``extra``) other packages."""
    import importlib

    from prunepilot import __version__

    out = {"python": sys.version.split()[0], "prunepilot": __version__, "platform": platform.platform()}
    for name in ("torch", "torch_pruning", *extra):
        try:
            out[name] = str(importlib.import_module(name).__version__)
        except Exception:  # noqa: BLE001 - a missing optional runtime is simply not recorded
            continue
    return out


class LatencyModel(ABC):  # noqa: B024 - subclasses override measure_ms or predict_layers, either one
    """A way to get the latency of a (pruned) model on one device.

    Subclasses set :attr:`requires_model` and implement :meth:`measure_ms` (measured models)
    or :meth:`predict_layers` (predictors; :meth:`predict_ms` then works on any
    ``PruningSpace``). The search evaluator calls::

        if lm.requires_model:
            res = lm.measure_ms(pruned_model, input_shape, batch_size)
        else:
            res = lm.predict_ms(space, policy.channels, batch_size)
    """

    #: Registry name, set by :func:`~prunepilot.hw_models.registry.register_latency_model`.
    name: ClassVar[str] = "?"
    #: True: call :meth:`measure_ms` with a built model. False: call :meth:`predict_ms`.
    requires_model: ClassVar[bool] = False

    def predict_ms(
        self, space: SupportsLayers, widths: Mapping[str, int], batch_size: int = 1, removed_blocks: Sequence[str] = ()
    ) -> LatencyResult:
        """Predicted latency of ``space`` at group ``widths`` without ``removed_blocks`` (no model is built)."""
        return self.predict_layers(
            space.layers(widths, removed_blocks) if removed_blocks else space.layers(widths), batch_size
        )

    def predict_layers(self, layers: Sequence[LayerShape], batch_size: int = 1) -> LatencyResult:
        """Predicted latency of a model made of ``layers`` (per-sample shapes)."""
        raise HardwareError(
            f"latency model {self.name!r} measures and cannot predict from layer shapes; "
            "call measure_ms(model, input_shape, batch_size) instead (requires_model is True)"
        )

    def measure_ms(self, model: nn.Module, input_shape: Sequence[int], batch_size: int = 1) -> LatencyResult:
        """Latency of ``model`` on inputs of ``(batch_size, *input_shape[1:])``.

        Predictors that can read a built model (``macs``, ``params``, ``roofline``...) answer
        from its traced layer shapes; measured models time it.
        """
        from prunepilot.hw_models.layer_trace import trace_layers

        return self.predict_layers(trace_layers(model, input_shape), batch_size)

    # Short names for callers that prefer them; same behaviour.
    def predict(self, space: SupportsLayers, widths: Mapping[str, int], batch_size: int = 1) -> LatencyResult:
        """Same as :meth:`predict_ms`."""
        return self.predict_ms(space, widths, batch_size)

    def measure(self, model: nn.Module, input_shape: Sequence[int], batch_size: int = 1) -> LatencyResult:
        """Same as :meth:`measure_ms`."""
        return self.measure_ms(model, input_shape, batch_size)

    def describe(self) -> dict[str, Any]:
        """Settings of this latency model, for run records."""
        return {"name": self.name, "requires_model": self.requires_model}


def batched_input_shape(input_shape: Sequence[int], batch_size: int) -> tuple[int, ...]:
    """``input_shape`` with its first dimension replaced by ``batch_size``."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 2 or any(s <= 0 for s in shape) or batch_size <= 0:
        raise HardwareError(
            f"input shape {shape} with batch size {batch_size} is invalid; give (N, C, H, W) or (N, F) "
            "with positive sizes, e.g. 1,3,32,32"
        )
    return (int(batch_size), *shape[1:])
