"""Roofline arithmetic on a hand-computed case, and calibration by least squares."""

from __future__ import annotations

import pytest

from prunepilot.hw_models.layer_trace import conv_shape
from prunepilot.hw_models.roofline import (
    DeviceProfile,
    Quantity,
    RooflineLatency,
    calibrate_profile,
    predict_roofline_ms,
    roofline_sum_ms,
)
from prunepilot.hw_models.testing import toy_layers


def profile(overhead_us: float = 0.0) -> DeviceProfile:
    return DeviceProfile(
        name="hand",
        peak_flops=Quantity(value=1.0, unit="GFLOP/s", source="test"),
        memory_bandwidth=Quantity(value=1.0, unit="GB/s", source="test"),
        layer_overhead=Quantity(value=overhead_us, unit="us", source="test"),
    )


def test_hand_computed_roofline() -> None:
    # conv 4->8, 3x3, 8x8 -> 8x8, no bias: weight 288, MACs 64 * 288 = 18432 -> 36864 FLOPs
    # bytes = 4 * (288 + 4*64 + 8*64) = 4224.  1 GFLOP/s: 36.864 us; 1 GB/s: 4.224 us -> compute bound.
    compute = conv_shape("c", 4, 8, 1, (3, 3), (1, 1), (8, 8), (8, 8))
    assert compute.macs == 18432 and compute.bytes == 4224
    # depthwise 64 ch, 3x3, 8x8: weight 576, MACs 64*576 = 36864 -> 73728 FLOPs (73.728 us);
    # bytes = 4 * (576 + 2 * 64*64) = 35072 -> 35.072 us: compute bound as well.
    dw = conv_shape("d", 64, 64, 64, (3, 3), (1, 1), (8, 8), (8, 8))
    # 1x1 conv 256->256 at 1x1: MACs 65536 -> 131 us; bytes 4*(65536 + 512) = 264192 -> 264 us: memory bound
    mem = conv_shape("m", 256, 256, 1, (1, 1), (1, 1), (1, 1), (1, 1))
    prof = profile(overhead_us=10.0)
    assert roofline_sum_ms(prof, [compute]) == pytest.approx(0.036864)
    assert roofline_sum_ms(prof, [mem]) == pytest.approx(0.264192)
    total = predict_roofline_ms(prof, [compute, dw, mem])
    assert total == pytest.approx(0.036864 + 0.073728 + 0.264192 + 3 * 0.010)
    # batch 2: FLOPs double, weights are read once, activations twice
    assert roofline_sum_ms(prof, [mem], batch_size=2) == pytest.approx(max(0.262144, (262144 + 2 * 2048) / 1e6))


def test_calibration_recovers_scale_and_overhead() -> None:
    prof = profile()
    samples = [(toy_layers(c), 0.0) for c in (8, 16, 24, 32, 48)]
    truth = [(layers, 2.5 * roofline_sum_ms(prof, layers) + 0.7) for layers, _ in samples]
    cal = calibrate_profile(prof, truth)
    assert cal.scale == pytest.approx(2.5) and cal.fixed_overhead_ms == pytest.approx(0.7)
    assert cal.calibration is not None and cal.calibration.samples == 5 and cal.calibration.mape < 1e-9
    res = RooflineLatency(cal).predict_layers(toy_layers(40))
    assert res.kind == "predicted" and res.ms == pytest.approx(2.5 * roofline_sum_ms(prof, toy_layers(40)) + 0.7)
    assert res.details["calibrated"] is True


def test_calibration_uses_at_most_ten_models() -> None:
    prof = profile()
    truth = [(toy_layers(c), roofline_sum_ms(prof, toy_layers(c))) for c in range(8, 40, 2)]
    assert calibrate_profile(prof, truth).calibration.samples == 10  # type: ignore[union-attr]
