"""The budget-check latency fit: least squares on MACs and bytes, fitted from uniform points."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from search_helpers import tiny_config

from prunepilot.pruning import PruningPolicy
from prunepilot.search.config import validate_config
from prunepilot.search.evaluator import Evaluator, LatencyFit


def test_from_points_recovers_a_latency_that_is_affine_in_macs_and_bytes() -> None:
    macs = [1e6, 3e6, 6e6, 10e6, 20e6]
    moved = [4e5, 5e5, 9e5, 1.0e6, 1.6e6]  # not proportional to macs: both slopes identifiable
    ms = [0.5 + 2e-6 * m + 5e-6 * b for m, b in zip(macs, moved, strict=True)]
    fit = LatencyFit.from_points(macs, moved, ms)
    assert fit.intercept == pytest.approx(0.5, rel=1e-6)
    assert fit.slope == pytest.approx(2e-6, rel=1e-6)
    assert fit.byte_slope == pytest.approx(5e-6, rel=1e-6)
    assert fit(4e6, 7e5) == pytest.approx(0.5 + 8 + 3.5)


def test_from_points_never_gets_negative_coefficients() -> None:
    # latency that *falls* with bytes cannot be fitted with a negative byte cost
    fit = LatencyFit.from_points([1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0])
    assert min(fit.intercept, fit.slope, fit.byte_slope) >= 0.0


def test_two_points_give_the_line_through_them() -> None:
    fit = LatencyFit.from_points([2e6, 10e6], [0.0, 0.0], [3.0, 7.0])
    assert (fit(2e6), fit(10e6)) == (pytest.approx(3.0), pytest.approx(7.0))
    assert fit.byte_slope == 0.0


class _Concave:
    """A measured-like latency model whose ms grow with the widths, not their squares."""

    name = "concave"
    requires_model = True

    def measure_ms(self, model: torch.nn.Module, shape: tuple[int, ...], batch: int):  # noqa: ANN201
        from prunepilot.hw_models.base import LatencyResult

        channels = sum(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        return LatencyResult(ms=1.0 + 0.05 * channels, kind="measured", model_name=self.name)


def test_calibrate_fit_measures_fit_points_uniform_models_and_predicts_between_them(tmp_path: Path) -> None:
    cfg = validate_config(tiny_config(tmp_path, **{"evaluation.fit_points": 4}))
    ev = Evaluator(cfg)
    calls: list[int] = []
    concave = _Concave()
    measure = concave.measure_ms

    def counted(model: torch.nn.Module, shape: tuple[int, ...], batch: int):  # noqa: ANN202
        calls.append(1)
        return measure(model, shape, batch)

    concave.measure_ms = counted  # type: ignore[method-assign]
    ev.latency = concave  # type: ignore[assignment]
    full, low = ev.calibrate_fit()
    assert len(calls) == 4
    assert full.ms > low.ms
    assert ev.fit is not None and ev.fit.byte_slope > 0  # the linear-in-width part is picked up
    mid = PruningPolicy.uniform(ev.space, 0.6)
    truth = measure(ev.prune(mid), (), 1).ms
    two_point = LatencyFit.from_points(
        [ev.space.macs(PruningPolicy.uniform(ev.space, r).channels) for r in (0.25, 1.0)], [0, 0], [low.ms, full.ms]
    )
    # the fitted predictor is closer to the truth than the old line through the two ends
    assert abs(ev.predict_latency_ms(mid.channels) - truth) < abs(two_point(ev.space.macs(mid.channels)) - truth)


def test_calibrated_fit_passes_through_the_measured_lower_bound(tmp_path: Path) -> None:
    """The budget check (driver, measured) and the strategies (fit) agree on the reachable minimum."""
    cfg = validate_config(tiny_config(tmp_path, **{"evaluation.fit_points": 5}))
    ev = Evaluator(cfg)
    ev.latency = _Concave()  # type: ignore[assignment]
    _, low = ev.calibrate_fit()
    lowest = PruningPolicy.uniform(ev.space, cfg.evaluation.lower_bound)
    assert ev.predict_latency_ms(lowest.channels) == pytest.approx(low.ms, rel=1e-9)
