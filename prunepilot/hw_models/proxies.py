"""MACs and parameter-count proxies behind the :class:`LatencyModel` interface.

Any search can run on them without a device. Their figures are ``kind="predicted"`` and, unless
a linear calibration to milliseconds is given, **not in milliseconds**: ``details["unit"]``
says ``"MMACs"`` or ``"Mparams"``. With ``ms_per_unit`` (and ``offset_ms``) set, e.g. by
:meth:`LinearProxy.fit`, the figure is ``offset_ms + ms_per_unit * value`` in ms: the
"MACs alone" baseline that the hardware models must beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from prunepilot.hw_models.base import LatencyModel, LatencyResult
from prunepilot.hw_models.registry import register_latency_model
from prunepilot.pruning.layers import LayerShape

P = TypeVar("P", bound="LinearProxy")


class LinearProxy(LatencyModel):
    """A per-model count (in millions) as a latency proxy, optionally mapped linearly to ms.

    Args:
        ms_per_unit: Milliseconds per million counted units; ``None`` reports the raw count.
        offset_ms: Fixed milliseconds added when ``ms_per_unit`` is set.
    """

    requires_model = False
    unit: ClassVar[str] = "M"

    def __init__(self, ms_per_unit: float | None = None, offset_ms: float = 0.0) -> None:
        self.ms_per_unit = ms_per_unit
        self.offset_ms = float(offset_ms)

    def count(self, layers: Sequence[LayerShape], batch_size: int = 1) -> float:
        """The proxy's raw value, in millions."""
        raise NotImplementedError

    def predict_layers(self, layers: Sequence[LayerShape], batch_size: int = 1) -> LatencyResult:
        value = self.count(layers, batch_size)
        if self.ms_per_unit is None:
            details: dict[str, Any] = {"unit": self.unit, "batch_size": batch_size, "calibrated": False}
            return LatencyResult(ms=value, kind="predicted", model_name=self.name, details=details)
        details = {"unit": "ms", "proxy_value": value, "proxy_unit": self.unit, "calibrated": True}
        return LatencyResult(
            ms=self.offset_ms + self.ms_per_unit * value, kind="predicted", model_name=self.name, details=details
        )

    @classmethod
    def fit(cls: type[P], samples: Sequence[tuple[Sequence[LayerShape], float]], batch_size: int = 1) -> P:
        """Least-squares ``ms = offset + ms_per_unit * value`` from ``(layers, measured ms)`` samples."""
        proto = cls()
        x = np.array([proto.count(layers, batch_size) for layers, _ in samples])
        y = np.array([float(ms) for _, ms in samples])
        if len(samples) >= 2 and np.ptp(x) > 0:
            slope, offset = np.polyfit(x, y, 1)
        else:
            slope, offset = float(y.sum() / max(x.sum(), 1e-12)), 0.0
        return cls(ms_per_unit=float(slope), offset_ms=float(offset))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "ms_per_unit": self.ms_per_unit, "offset_ms": self.offset_ms}


@register_latency_model("macs")
class MacsProxy(LinearProxy):
    """Predicted: multiply-accumulates of the model (millions, ``MMACs``) for the whole batch."""

    unit = "MMACs"

    def count(self, layers: Sequence[LayerShape], batch_size: int = 1) -> float:
        return sum(s.macs for s in layers) * batch_size / 1e6


@register_latency_model("params")
class ParamsProxy(LinearProxy):
    """Predicted: parameters of the compute layers (millions, ``Mparams``); batch-independent."""

    unit = "Mparams"

    def count(self, layers: Sequence[LayerShape], batch_size: int = 1) -> float:
        return sum(s.params for s in layers) / 1e6
