"""The learned model beats the MACs proxy where latency is not proportional to MACs."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from prunepilot.hw_models.evaluate import hw_metrics
from prunepilot.hw_models.layer_trace import conv_shape
from prunepilot.hw_models.learned import LearnedLatency
from prunepilot.hw_models.proxies import MacsProxy
from prunepilot.pruning.layers import LayerShape


def true_ms(s: LayerShape) -> float:
    """A synthetic device: dense convs compute-bound with a 16-channel staircase, depthwise
    convs memory-bound, plus 20 us per layer."""
    if s.kind == "depthwise":
        return s.bytes / 2e6 + 0.02  # 2 GB/s
    blocks = -(-s.out_channels // 16) * 16
    return 2 * s.macs * blocks / s.out_channels / 50e6 + 0.02  # 50 GFLOP/s on padded channels


def random_model(rng: random.Random) -> list[LayerShape]:
    """A MobileNet-like stack: pointwise expand, depthwise 3x3, pointwise project, at 3 sizes."""
    layers = []
    for hw, base in ((32, 24), (16, 48), (8, 96)):
        c = max(4, int(base * rng.uniform(0.2, 1.0)))
        e = max(8, int(base * 4 * rng.uniform(0.2, 1.0)))
        layers += [
            conv_shape("pw1", c, e, 1, (1, 1), (1, 1), (hw, hw), (hw, hw)),
            conv_shape("dw", e, e, e, (3, 3), (1, 1), (hw, hw), (hw, hw)),
            conv_shape("pw2", e, c, 1, (1, 1), (1, 1), (hw, hw), (hw, hw)),
        ]
    return layers


def test_learned_beats_macs_on_synthetic_device(tmp_path: Path) -> None:
    rng = random.Random(0)
    layer_samples = [(s, 1, true_ms(s)) for _ in range(60) for s in random_model(rng)]
    calib = [(m, sum(true_ms(s) for s in m)) for m in (random_model(rng) for _ in range(10))]
    test = [random_model(rng) for _ in range(40)]
    measured = [sum(true_ms(s) for s in m) for m in test]

    learned = LearnedLatency(reference_profile="x86-avx2-core").fit_layers(layer_samples).calibrate(calib)
    macs = MacsProxy.fit(calib)
    m_learned = hw_metrics(measured, [learned.predict_layers(m).ms for m in test])
    m_macs = hw_metrics(measured, [macs.predict_layers(m).ms for m in test])
    assert m_learned.mape < 0.5 * m_macs.mape
    assert m_learned.spearman > m_macs.spearman
    assert m_learned.within_10 >= 0.9

    # saved as JSON (no pickle) and refitted identically on load
    path = learned.save(tmp_path / "learned.json")
    assert path.read_text().startswith("{")
    again = LearnedLatency(path=path)
    assert again.predict_layers(test[0]).ms == pytest.approx(learned.predict_layers(test[0]).ms)
    res = again.predict_layers(test[0])
    assert res.kind == "predicted" and res.model_name == "learned" and res.details["unit"] == "ms"
