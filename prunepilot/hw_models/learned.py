"""Learned latency: gradient boosting on per-layer features, summed over the model.

Design (and why). A regressor predicts one layer's latency from its features (kind, in/out
channels, groups, kernel, stride, spatial sizes, FLOPs, bytes, channel counts modulo 8/16 for
vectorisation staircases, and the raw roofline estimate); the model's latency is
``scale * sum(layers) + offset``, with ``scale`` and ``offset`` fitted by least squares on a
handful of measured whole models (as for the roofline).

* **Per layer, not per model**: per-layer samples are cheap (hundreds a minute; a lookup-table
  profile already holds them) while whole-model measurements of one architecture are few,
  expensive and cover a narrow range; a per-model tree regressor on aggregated features cannot
  extrapolate outside the widths it saw and needs tens of full measurements per architecture.
  Per-layer predictors also transfer to layer types the table never saw (other spatial sizes).
* **Target = log(measured / roofline)**, the layer's *inefficiency* relative to the roofline:
  it varies slowly with the channel counts, so piecewise-constant trees fit it well, and the
  prediction ``roofline * exp(tree)`` stays smooth and monotone-ish in FLOPs.
* **No pickle**: the saved file is JSON of the training samples and settings; loading refits the
  regressor deterministically (about a second).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prunepilot.errors import ConfigError
from prunepilot.hw_models.base import HardwareError, LatencyModel, LatencyResult
from prunepilot.hw_models.layer_trace import conv_shape, linear_shape
from prunepilot.hw_models.registry import register_latency_model
from prunepilot.hw_models.roofline import DeviceProfile, load_profile
from prunepilot.pruning.layers import LayerShape

LEARNED_FORMAT = "prunepilot.learned/v1"
KINDS = ("conv", "depthwise", "linear", "attention")
#: A layer sample: (LayerShape, batch size, measured ms).
LayerSample = tuple[LayerShape, int, float]


def layer_features(shapes: Sequence[LayerShape], batch_size: int, reference: DeviceProfile) -> np.ndarray:
    """Feature matrix (one row per layer; see the module docstring). The last column is
    ``log(raw roofline ms)`` of the layer on ``reference``."""
    raw = np.array(
        [
            (KINDS.index(s.kind) if s.kind in KINDS else 0, s.in_channels, s.out_channels, s.groups,
             s.kernel[0] * s.kernel[1], s.stride[0], s.in_hw[0] * s.in_hw[1], s.out_hw[0] * s.out_hw[1],
             s.tokens, s.macs, s.bytes, s.params)
            for s in shapes
        ],
        dtype=float,
    ).reshape(-1, 12)  # fmt: skip
    kind, cin, cout = raw[:, 0].astype(int), raw[:, 1], raw[:, 2]
    flops = 2.0 * raw[:, 9] * batch_size
    weight = 4.0 * raw[:, 11]
    moved = weight + np.maximum(raw[:, 10] - weight, 0.0) * batch_size
    roof_ms = 1e3 * np.maximum(flops / reference.peak, moved / reference.bandwidth)
    onehot = np.eye(len(KINDS))[kind]
    return np.column_stack(
        [
            onehot, raw[:, 1:9], np.full(len(raw), float(batch_size)),
            np.log1p(flops), np.log1p(raw[:, 10] * batch_size), flops / np.maximum(raw[:, 10], 1.0),
            cin % 8, cout % 8, cin % 16, cout % 16, np.log(roof_ms + 1e-6),
        ]
    )  # fmt: skip


def lut_layer_samples(path_or_table: Any) -> list[LayerSample]:
    """Per-layer training samples from a lookup table: every grid point and off-grid sample."""
    from prunepilot.hw_models.lut import LookupTable, LutEntry

    table = path_or_table if isinstance(path_or_table, LookupTable) else LookupTable.load(path_or_table)

    def shape_of(e: LutEntry, cin: int, cout: int) -> LayerShape:
        if e.kind == "linear":
            return linear_shape(e.key, cin, cout, e.tokens)
        if e.kind == "depthwise":
            mult = max(1, int(e.key.rsplit(" m", 1)[1]))
            return conv_shape(e.key, cin, cin * mult, cin, e.kernel, e.stride, e.in_hw, e.out_hw)
        return conv_shape(e.key, cin, cout, e.groups, e.kernel, e.stride, e.in_hw, e.out_hw)

    out: list[LayerSample] = []
    b = table.batch_size
    for e in table.entries.values():
        for i, cin in enumerate(e.cin):
            for j, cout in enumerate(e.cout):
                out.append((shape_of(e, cin, cout), b, e.ms[i][j]))
        for c_in, c_out, t_ms in e.samples:
            out.append((shape_of(e, int(c_in), int(c_out)), b, float(t_ms)))
    return out


@register_latency_model("learned")
class LearnedLatency(LatencyModel):
    """Predicted: gradient-boosted per-layer latency, summed, with a fitted scale and offset.

    Args:
        path: A JSON written by :meth:`save` (training samples + calibration); refitted on load.
        lut: A lookup-table JSON to train on (its grid and off-grid samples).
        reference_profile: Roofline profile whose per-layer estimate is the baseline feature.
        regressor: ``"gbr"`` (``GradientBoostingRegressor``: fast single-call predictions) or
            ``"hgb"`` (``HistGradientBoostingRegressor``).
        seed: Random state of the regressor.
        scale, offset_ms: Model-level calibration (see :meth:`calibrate`).
    """

    requires_model = False

    def __init__(
        self,
        path: str | Path | None = None,
        lut: str | Path | None = None,
        reference_profile: str = "x86-avx2-core",
        regressor: str = "gbr",
        seed: int = 0,
        scale: float = 1.0,
        offset_ms: float = 0.0,
    ) -> None:
        if regressor not in ("gbr", "hgb"):
            raise ConfigError(f"learned regressor {regressor!r} is unknown; choose 'gbr' or 'hgb'")
        self.reference = load_profile(reference_profile)
        self.reference_name = reference_profile
        self.regressor = regressor
        self.seed = seed
        self.scale = float(scale)
        self.offset_ms = float(offset_ms)
        self.samples: list[LayerSample] = []
        self._model: Any = None
        if path is not None:
            self._load(Path(path))
        elif lut is not None:
            self.fit_layers(lut_layer_samples(lut))

    # --- training ------------------------------------------------------------------------
    def fit_layers(self, samples: Sequence[LayerSample]) -> LearnedLatency:
        """Fit the per-layer regressor on ``(shape, batch, ms)`` samples; returns ``self``."""
        if len(samples) < 5:
            raise HardwareError(f"the learned latency model needs at least 5 layer samples, got {len(samples)}")
        from sklearn.ensemble import GradientBoostingRegressor, HistGradientBoostingRegressor

        x = np.vstack([layer_features([s], b, self.reference) for s, b, _ in samples])
        y = np.log(np.maximum(np.array([ms for _, _, ms in samples]), 1e-6)) - x[:, -1]
        model: Any
        if self.regressor == "gbr":
            model = GradientBoostingRegressor(
                n_estimators=100, max_depth=4, learning_rate=0.15, subsample=0.8, random_state=self.seed
            )
        else:
            model = HistGradientBoostingRegressor(max_iter=100, learning_rate=0.15, random_state=self.seed)
        model.fit(x, y)
        self._model = model
        self.samples = list(samples)
        return self

    def layer_ms(self, layers: Sequence[LayerShape], batch_size: int = 1) -> np.ndarray:
        """Per-layer predictions in ms (one regressor call for all layers)."""
        if self._model is None:
            raise HardwareError("the learned latency model is not trained; give settings.lut or settings.path")
        if not layers:
            return np.zeros(0)
        x = layer_features(layers, batch_size, self.reference)
        return np.exp(x[:, -1] + self._model.predict(x))

    def calibrate(self, samples: Sequence[tuple[Sequence[LayerShape], float]], batch_size: int = 1) -> LearnedLatency:
        """Least-squares ``measured = scale * sum(layers) + offset`` on <= 10 whole models; returns ``self``."""
        samples = list(samples)[:10]
        s = np.array([float(self.layer_ms(layers, batch_size).sum()) for layers, _ in samples])
        y = np.array([float(ms) for _, ms in samples])
        if len(samples) >= 2 and np.ptp(s) > 1e-12:
            scale, offset = np.polyfit(s, y, 1)
        else:
            scale, offset = float(y.sum() / max(s.sum(), 1e-12)), 0.0
        if scale <= 0:
            scale, offset = float(y.sum() / max(s.sum(), 1e-12)), 0.0
        self.scale, self.offset_ms = float(scale), float(offset)
        return self

    def predict_layers(self, layers: Sequence[LayerShape], batch_size: int = 1) -> LatencyResult:
        total = float(self.layer_ms(layers, batch_size).sum())
        details = {
            "unit": "ms",
            "regressor": self.regressor,
            "layer_sum_ms": total,
            "scale": self.scale,
            "offset_ms": self.offset_ms,
            "batch_size": batch_size,
            "train_samples": len(self.samples),
        }
        return LatencyResult(
            ms=self.scale * total + self.offset_ms, kind="predicted", model_name=self.name, details=details
        )

    # --- persistence (JSON; refit on load) ----------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write training samples, settings and calibration as JSON."""
        rows = [
            [
                s.kind,
                s.in_channels,
                s.out_channels,
                s.groups,
                *s.kernel,
                *s.stride,
                *s.in_hw,
                *s.out_hw,
                s.tokens,
                b,
                ms,
            ]
            for s, b, ms in self.samples
        ]
        data = {
            "format": LEARNED_FORMAT,
            "regressor": self.regressor,
            "seed": self.seed,
            "reference_profile": self.reference_name,
            "scale": self.scale,
            "offset_ms": self.offset_ms,
            "columns": "kind cin cout groups kh kw sh sw ih iw oh ow tokens batch ms".split(),
            "samples": rows,
        }
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(data))
        return p

    def _load(self, p: Path) -> None:
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{p}: learned latency model file not found") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{p}: not readable JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != LEARNED_FORMAT:
            raise ConfigError(f"{p}: field 'format' must be {LEARNED_FORMAT!r}")
        samples: list[LayerSample] = []
        for i, r in enumerate(data.get("samples", [])):
            try:
                kind, cin, cout, g, kh, kw, sh, sw, ih, iw, oh, ow, tokens, b, ms = r
                if kind == "linear":
                    shape = linear_shape("sample", int(cin), int(cout), int(tokens))
                else:
                    shape = conv_shape("sample", int(cin), int(cout), int(g), (kh, kw), (sh, sw), (ih, iw), (oh, ow))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{p}: field 'samples[{i}]' is malformed ({exc})") from None
            samples.append((shape, int(b), float(ms)))
        self.regressor = str(data.get("regressor", self.regressor))
        self.seed = int(data.get("seed", self.seed))
        self.fit_layers(samples)
        self.scale = float(data.get("scale", 1.0))
        self.offset_ms = float(data.get("offset_ms", 0.0))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "regressor": self.regressor, "scale": self.scale, "offset_ms": self.offset_ms}
