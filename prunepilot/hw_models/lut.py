"""Lookup-table latency (NetAdapt / OFA style): a profiled table of layer latencies, summed.

A table (made by :mod:`prunepilot.hw_models.lut_profile`, ``prunepilot profile``) holds, for
every layer type of a model (same kind, kernel, stride, input and output size), the latency
of the block it runs in over a grid of input x output channel counts. A prediction is the sum
over layers of the table, bilinearly interpolated between grid points (linearly extrapolated
outside; optionally stepped at the device's channel block), times ``scale``, plus
``overhead_ms``. Both are measured when profiling: the whole model is timed at full width and
uniformly pruned, and a line through those points gives the scale (layers timed alone run
faster than inside the network, warm caches) and the overhead (pooling, residual adds,
dispatch); with a single point the scale is 1 and the overhead ``measured - table``.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prunepilot.errors import ConfigError
from prunepilot.hw_models.base import HardwareError, LatencyModel, LatencyResult
from prunepilot.hw_models.registry import register_latency_model
from prunepilot.pruning.layers import LayerShape

LUT_FORMAT = "prunepilot.lut/v1"


def layer_key(shape: LayerShape) -> str:
    """The table key of a layer: everything but its channel counts."""
    kh, kw = shape.kernel
    sh, sw = shape.stride
    if shape.kind == "linear":
        return f"linear t{shape.tokens}"
    if shape.kind not in ("conv", "depthwise"):
        raise HardwareError(
            f"layer {shape.name!r} is of kind {shape.kind!r}, which lookup tables do not cover "
            "(conv, depthwise and linear only); use the 'roofline' or 'learned' latency model"
        )
    (h, w), (oh, ow) = shape.in_hw, shape.out_hw
    where = f"k{kh}x{kw} s{sh}x{sw} in{h}x{w} out{oh}x{ow}"
    if shape.kind == "depthwise":
        return f"depthwise {where} m{max(1, shape.out_channels // max(1, shape.in_channels))}"
    return f"conv {where}" + (f" g{shape.groups}" if shape.groups > 1 else "")


def quantize(c: float, block: int) -> float:
    """``c`` rounded up to a multiple of ``block`` (channel-count staircase)."""
    if block <= 1 or c <= 0:
        return c
    return float(block * math.ceil(c / block))


def _interp_weights(xs: Sequence[int], x: float) -> tuple[int, int, float]:
    """Indices ``(i, j)`` and weight ``t`` so that ``f(x) ~ (1-t) f[i] + t f[j]`` (linear extrapolation)."""
    if len(xs) == 1:
        return 0, 0, 0.0
    i = min(max(bisect.bisect_right(xs, x) - 1, 0), len(xs) - 2)
    return i, i + 1, (x - xs[i]) / (xs[i + 1] - xs[i])


@dataclass
class LutEntry:
    """One layer type: its block's latency over a grid of (in, out) channel counts.

    Depthwise layers have one channel axis (``cout == [0]``): input = output channels.
    """

    key: str
    kind: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    groups: int
    tokens: int
    cin: list[int]
    cout: list[int]
    ms: list[list[float]]
    #: Channel block of the device (grid points sit on its multiples where the axis is wide).
    block: int = 1
    #: True: queries are rounded up to a multiple of ``block`` first (latency steps there);
    #: chosen per entry by :func:`choose_step_mode` from the off-grid samples.
    step: bool = False
    cv: list[list[float]] = field(default_factory=list)
    #: Off-grid measurements ``[cin, cout, ms]`` (training data for the learned model).
    samples: list[list[float]] = field(default_factory=list)

    def lookup(self, cin: float, cout: float) -> float:
        """Bilinear interpolation (linear extrapolation outside the grid) at the channel counts
        rounded up to the block, floored at 0."""
        if self.step and len(self.cin) > 1:
            cin = quantize(cin, self.block)
        if self.step and len(self.cout) > 1:
            cout = quantize(cout, self.block)
        i0, i1, t = _interp_weights(self.cin, cin)
        j0, j1, u = _interp_weights(self.cout, cout)
        m = self.ms
        v = (1 - t) * ((1 - u) * m[i0][j0] + u * m[i0][j1]) + t * ((1 - u) * m[i1][j0] + u * m[i1][j1])
        return max(v, 0.0)


def _query(shape: LayerShape) -> tuple[int, int]:
    if shape.kind == "depthwise":
        return shape.in_channels, 0
    return shape.in_channels, shape.out_channels


@dataclass
class LookupTable:
    """A profiled lookup table (see the module docstring); JSON via :meth:`save`/:meth:`load`."""

    entries: dict[str, LutEntry]
    overhead_ms: float
    batch_size: int
    meta: dict[str, Any] = field(default_factory=dict)
    #: Multiplier on the table sum: 1.0 as profiled; fitted by :meth:`LutLatency.calibrate`.
    scale: float = 1.0

    def layer_ms(self, shape: LayerShape) -> float:
        """Table latency of one layer (its block)."""
        key = layer_key(shape)
        entry = self.entries.get(key)
        if entry is None:
            raise HardwareError(
                f"layer {shape.name!r} ({key}) is not in the lookup table "
                f"{self.meta.get('source', '')} (profiled for {self.meta.get('model', '?')}); "
                "profile this model: prunepilot profile --device NAME --model SPEC --out LUT.json"
            )
        return entry.lookup(*_query(shape))

    def table_ms(self, layers: Sequence[LayerShape]) -> float:
        """Sum of the table over ``layers`` (no overhead, no scale), in ms."""
        return sum(self.layer_ms(s) for s in layers)

    def predict(self, layers: Sequence[LayerShape]) -> float:
        """``scale`` x the table sum over ``layers`` plus the fixed overhead, in ms."""
        return self.scale * self.table_ms(layers) + self.overhead_ms

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "format": LUT_FORMAT,
            **self.meta,
            "batch_size": self.batch_size,
            "overhead_ms": self.overhead_ms,
            "scale": self.scale,
            "entries": [asdict(e) for e in self.entries.values()],
        }

    def save(self, path: str | Path) -> Path:
        """Write the table as JSON; returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_json(), indent=1))
        return p

    @classmethod
    def load(cls, path: str | Path) -> LookupTable:
        """Read a table written by :meth:`save`; errors name the file and the bad field."""
        p = Path(path)
        try:
            raw = json.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"{p}: lookup table not found; create it with `prunepilot profile ... --out {p}`"
            ) from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{p}: not a readable JSON lookup table ({exc})") from None
        return cls.from_json(raw, source=str(p))

    @classmethod
    def from_json(cls, raw: Any, source: str = "(in memory)") -> LookupTable:
        """A table from its :meth:`to_json` form; errors name ``source`` and the bad field."""
        p = source
        if not isinstance(raw, dict) or raw.get("format") != LUT_FORMAT:
            got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise ConfigError(f"{p}: field 'format' is {got!r}, expected {LUT_FORMAT!r}")
        entries = {}
        for i, e in enumerate(raw.get("entries", [])):
            try:
                entry = LutEntry(
                    key=str(e["key"]), kind=str(e["kind"]), kernel=tuple(e["kernel"]), stride=tuple(e["stride"]),
                    in_hw=tuple(e["in_hw"]), out_hw=tuple(e["out_hw"]),
                    groups=int(e["groups"]), tokens=int(e["tokens"]),
                    cin=[int(c) for c in e["cin"]], cout=[int(c) for c in e["cout"]],
                    ms=[[float(v) for v in row] for row in e["ms"]], block=int(e.get("block", 1)),
                    step=bool(e.get("step", False)),
                    cv=e.get("cv", []), samples=e.get("samples", []),
                )  # fmt: skip
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"{p}: field 'entries[{i}]' is malformed ({type(exc).__name__}: {exc})") from None
            if len(entry.ms) != len(entry.cin) or any(len(r) != len(entry.cout) for r in entry.ms):
                raise ConfigError(f"{p}: field 'entries[{i}].ms' does not match the cin x cout grid")
            entries[entry.key] = entry
        for name in ("overhead_ms", "batch_size"):
            if not isinstance(raw.get(name), (int, float)):
                raise ConfigError(f"{p}: field {name!r} is missing or not a number")
        scale = raw.get("scale", 1.0)
        if not isinstance(scale, (int, float)) or scale <= 0:
            raise ConfigError(f"{p}: field 'scale' must be a positive number, got {scale!r}")
        skip = ("format", "entries", "overhead_ms", "batch_size", "scale")
        meta = {k: v for k, v in raw.items() if k not in skip}
        meta["source"] = p
        return cls(entries, float(raw["overhead_ms"]), int(raw["batch_size"]), meta, float(scale))


@register_latency_model("lut")
class LutLatency(LatencyModel):
    """Predicted: sum of a profiled lookup table (see :mod:`prunepilot.hw_models.lut_profile`).

    Args:
        path: The LUT JSON written by ``prunepilot profile``.
        table: An in-memory table instead of ``path``.
    """

    requires_model = False

    def __init__(self, path: str | Path | None = None, table: LookupTable | None = None) -> None:
        if table is None:
            if path is None:
                raise ConfigError("latency model 'lut' needs settings.path (a LUT JSON from `prunepilot profile`)")
            table = LookupTable.load(path)
        self.table = table

    def predict_layers(self, layers: Sequence[LayerShape], batch_size: int = 1) -> LatencyResult:
        if batch_size != self.table.batch_size:
            raise HardwareError(
                f"the lookup table was profiled at batch size {self.table.batch_size}, not {batch_size}; "
                f"profile again with --batch-size {batch_size}"
            )
        ms = self.table.predict(layers)
        details: dict[str, Any] = {
            "unit": "ms",
            "device": self.table.meta.get("device"),
            "runtime": self.table.meta.get("runtime"),
            "threads": self.table.meta.get("threads"),
            "batch_size": batch_size,
            "overhead_ms": self.table.overhead_ms,
            "scale": self.table.scale,
            "table": self.table.meta.get("source", "(in memory)"),
        }
        return LatencyResult(ms=ms, kind="predicted", model_name=self.name, details=details)

    def calibrate(self, samples: Sequence[tuple[Sequence[LayerShape], float]]) -> LutLatency:
        """A copy whose table ``scale`` and ``overhead_ms`` are fitted (least squares) on <= 10
        ``(layers, measured ms)`` whole-model samples; the profiled table is unchanged."""
        import copy

        import numpy as np

        samples = list(samples)[:10]
        x = np.array([self.table.table_ms(layers) for layers, _ in samples])
        y = np.array([float(ms) for _, ms in samples])
        if len(samples) >= 2 and np.ptp(x) > 1e-12:
            scale, offset = (float(v) for v in np.polyfit(x, y, 1))
        else:
            scale, offset = 1.0, float(np.mean(y - x))
        if scale <= 0:
            scale, offset = 1.0, float(np.mean(y - x))
        table = copy.copy(self.table)
        table.scale, table.overhead_ms = scale, offset
        table.meta = {**self.table.meta, "calibrated_on": len(samples)}
        return LutLatency(table=table)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "table": self.table.meta.get("source", "(in memory)"), "scale": self.table.scale}
