"""Roofline latency from a device profile: peak FLOP/s, memory bandwidth, per-layer overhead.

A prediction is ``scale * sum_l max(FLOPs_l / peak, bytes_l / bandwidth) + n_layers *
layer_overhead + fixed_overhead`` (FLOPs = 2 x MACs). Raw rooflines miss launch overhead,
cache effects and channel-count staircases, so :func:`calibrate_profile` fits ``scale`` and
``fixed_overhead`` by least squares from a handful (<= 10) of measured models and the result is
written as a calibrated profile (same YAML schema, with a ``calibration`` record).

Profile YAML (shipped ones live in ``prunepilot/hw_models/profiles/``)::

    name: rpi4
    description: Raspberry Pi 4 Model B, 4x Cortex-A72 @ 1.5 GHz, fp32
    peak_flops: {value: 48, unit: GFLOP/s, source: "4 cores x 1.5 GHz x 8 FLOP/cycle"}
    memory_bandwidth: {value: 12.8, unit: GB/s, source: "LPDDR4-3200, 32-bit bus"}
    layer_overhead: {value: 20, unit: us, source: "estimate: eager dispatch per layer"}
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from prunepilot.errors import ConfigError, one_of
from prunepilot.hw_models.base import LatencyModel, LatencyResult
from prunepilot.hw_models.registry import register_latency_model
from prunepilot.pruning.layers import LayerShape

PROFILES_DIR = Path(__file__).parent / "profiles"

FLOPS_UNITS = {"FLOP/s": 1.0, "GFLOP/s": 1e9, "TFLOP/s": 1e12, "PFLOP/s": 1e15}
BANDWIDTH_UNITS = {"B/s": 1.0, "MB/s": 1e6, "GB/s": 1e9, "GiB/s": 2.0**30, "TB/s": 1e12}
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


class Quantity(BaseModel):
    """A number with its unit and where it comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: float = Field(ge=0, description="The number, in `unit`; never negative.")
    unit: str = Field(description="Unit of `value`; the accepted units depend on the field.")
    source: str = Field(min_length=1, description="Datasheet, paper or measurement the number comes from.")

    def si(self, units: dict[str, float]) -> float:
        """``value`` in base SI units (FLOP/s, B/s or s)."""
        return self.value * units[self.unit]


def _check_unit(q: Quantity, units: dict[str, float]) -> Quantity:
    if q.unit not in units:
        raise ValueError(f"unknown unit {q.unit!r}; accepted units are {one_of(units)}")
    return q


class Calibration(BaseModel):
    """How a calibrated profile was fitted."""

    model_config = ConfigDict(extra="allow")

    samples: int = Field(description="Measured models the fit used.")
    rmse_ms: float = Field(description="Root-mean-square error of the fit on those samples, ms.")
    mape: float = Field(description="Mean absolute percentage error of the fit on those samples.")
    measured_with: str = Field(default="", description="Latency model / runtime that measured the samples.")
    fitted_at: str = Field(default="", description="ISO time of the fit.")


class DeviceProfile(BaseModel):
    """A roofline device profile. Every hardware number carries its unit and source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Profile name (``prunepilot devices`` lists it).")
    description: str = Field(default="", description="The device: chip, cores, clock, precision.")
    precision: str = Field(default="fp32", description="Number format the peak refers to.")
    peak_flops: Quantity = Field(description="Dense peak FLOP/s at `precision` (FLOP/s, GFLOP/s, TFLOP/s).")
    memory_bandwidth: Quantity = Field(description="Peak DRAM bandwidth (B/s, MB/s, GB/s, GiB/s, TB/s); > 0.")
    layer_overhead: Quantity = Field(description="Fixed time per layer: launch/dispatch (s, ms, us, ns).")
    scale: float = Field(default=1.0, gt=0, description="Multiplier on the roofline sum (1 = raw; fitted).")
    fixed_overhead_ms: float = Field(default=0.0, description="Per-model fixed time in ms (fitted).")
    calibration: Calibration | None = Field(default=None, description="Set by `prunepilot calibrate`.")

    @field_validator("peak_flops")
    @classmethod
    def _flops_unit(cls, q: Quantity) -> Quantity:
        if q.value <= 0:
            raise ValueError("peak FLOP/s must be > 0")
        return _check_unit(q, FLOPS_UNITS)

    @field_validator("memory_bandwidth")
    @classmethod
    def _bw_unit(cls, q: Quantity) -> Quantity:
        if q.value <= 0:
            raise ValueError("memory bandwidth must be > 0")
        return _check_unit(q, BANDWIDTH_UNITS)

    @field_validator("layer_overhead")
    @classmethod
    def _time_unit(cls, q: Quantity) -> Quantity:
        return _check_unit(q, TIME_UNITS)

    @property
    def peak(self) -> float:
        """Peak FLOP/s."""
        return self.peak_flops.si(FLOPS_UNITS)

    @property
    def bandwidth(self) -> float:
        """Bandwidth in B/s."""
        return self.memory_bandwidth.si(BANDWIDTH_UNITS)

    @property
    def layer_overhead_s(self) -> float:
        """Per-layer overhead in seconds."""
        return self.layer_overhead.si(TIME_UNITS)


def validation_message(path: Path | str, exc: ValidationError) -> str:
    """One line per problem: ``FILE: field 'a.b': message``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "field is required" if err["type"] == "missing" else err["msg"]
        lines.append(f"{path}: field '{loc}': {msg}")
    return "; ".join(lines)


def shipped_profiles() -> list[str]:
    """Names of the profiles shipped with prunepilot."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Load a shipped profile by name or a profile YAML by path; validated.

    Raises:
        ConfigError: unknown name (lists shipped ones), unreadable YAML, or a field that fails
            validation (the message names the file and the field).
    """
    p = Path(name_or_path)
    if not p.suffix and not p.exists():
        p = PROFILES_DIR / f"{name_or_path}.yaml"
        if not p.exists():
            raise ConfigError(
                f"unknown device profile {str(name_or_path)!r}; shipped profiles are {one_of(shipped_profiles())}, "
                "or give the path of a profile YAML"
            )
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: device profile file not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: not readable YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a device profile must be a mapping of fields, got {type(raw).__name__}")
    try:
        return DeviceProfile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(validation_message(p, exc)) from None


def save_profile(profile: DeviceProfile, path: str | Path) -> Path:
    """Write ``profile`` as YAML."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(profile.model_dump(exclude_none=True), sort_keys=False))
    return p


def layer_seconds(profile: DeviceProfile, shape: LayerShape, batch_size: int = 1) -> float:
    """Raw roofline time of one layer: ``max(FLOPs / peak, bytes / bandwidth)`` in seconds.

    Weights are read once per batch; activations scale with the batch.
    """
    flops = 2.0 * shape.macs * batch_size
    weight_bytes = 4.0 * shape.params
    act_bytes = max(0.0, shape.bytes - weight_bytes)
    moved = weight_bytes + act_bytes * batch_size
    return max(flops / profile.peak, moved / profile.bandwidth)


def roofline_sum_ms(profile: DeviceProfile, layers: Sequence[LayerShape], batch_size: int = 1) -> float:
    """Unscaled sum of the per-layer roofline times, in ms (no overheads)."""
    return 1e3 * sum(layer_seconds(profile, s, batch_size) for s in layers)


def predict_roofline_ms(profile: DeviceProfile, layers: Sequence[LayerShape], batch_size: int = 1) -> float:
    """The profile's full prediction in ms (scale, per-layer and fixed overheads included)."""
    return (
        profile.scale * roofline_sum_ms(profile, layers, batch_size)
        + 1e3 * profile.layer_overhead_s * len(layers)
        + profile.fixed_overhead_ms
    )


def calibrate_profile(
    profile: DeviceProfile,
    samples: Sequence[tuple[Sequence[LayerShape], float]],
    batch_size: int = 1,
    measured_with: str = "",
    name: str | None = None,
) -> DeviceProfile:
    """Fit ``scale`` and ``fixed_overhead_ms`` by least squares on ``(layers, measured ms)`` samples.

    ``measured = scale * roofline_sum + n_layers * layer_overhead + fixed_overhead``. At most 10
    samples are used (the protocol's "handful"); one sample fits the scale only.
    """
    if not samples:
        raise ConfigError("calibration needs at least 1 measured model (at most 10)")
    samples = list(samples)[:10]
    roof = np.array([roofline_sum_ms(profile, layers, batch_size) for layers, _ in samples])
    per_layer = np.array([1e3 * profile.layer_overhead_s * len(layers) for layers, _ in samples])
    y = np.array([float(ms) for _, ms in samples]) - per_layer
    if len(samples) >= 2 and np.ptp(roof) > 1e-12:
        a = np.stack([roof, np.ones_like(roof)], axis=1)
        (scale, fixed), *_ = np.linalg.lstsq(a, y, rcond=None)
    else:
        scale, fixed = float(y.sum() / max(roof.sum(), 1e-12)), 0.0
    if scale <= 0:  # a degenerate fit: fall back to a pure scale through the origin
        scale, fixed = float(y.sum() / max(roof.sum(), 1e-12)), 0.0
    pred = scale * roof + fixed + per_layer
    meas = y + per_layer
    cal = Calibration(
        samples=len(samples),
        rmse_ms=float(np.sqrt(np.mean((pred - meas) ** 2))),
        mape=float(np.mean(np.abs(pred - meas) / meas)),
        measured_with=measured_with,
        fitted_at=_dt.datetime.now().isoformat(timespec="seconds"),
    )
    return profile.model_copy(
        update={
            "name": name or f"{profile.name}-calibrated",
            "scale": float(scale),
            "fixed_overhead_ms": float(fixed),
            "calibration": cal,
        }
    )


@register_latency_model("roofline")
class RooflineLatency(LatencyModel):
    """Predicted: roofline of a device profile (shipped name or YAML path).

    Example:
        >>> lm = RooflineLatency(profile="x86-avx2-core")
        >>> lm.profile.peak > 0
        True
    """

    requires_model = False

    def __init__(self, profile: str | Path | DeviceProfile = "x86-avx2-core") -> None:
        self.profile = profile if isinstance(profile, DeviceProfile) else load_profile(profile)

    def predict_layers(self, layers: Sequence[LayerShape], batch_size: int = 1) -> LatencyResult:
        ms = predict_roofline_ms(self.profile, layers, batch_size)
        details: dict[str, Any] = {
            "unit": "ms",
            "profile": self.profile.name,
            "calibrated": self.profile.calibration is not None,
            "scale": self.profile.scale,
            "batch_size": batch_size,
        }
        return LatencyResult(ms=ms, kind="predicted", model_name=self.name, details=details)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "profile": self.profile.name, "scale": self.profile.scale}
