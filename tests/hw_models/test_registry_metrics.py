"""Registry, proxies and hw-eval metrics."""

from __future__ import annotations

import math

import pytest

from prunepilot.errors import ConfigError
from prunepilot.hw_models import get_latency_model, latency_model_names, register_latency_model
from prunepilot.hw_models.base import LatencyModel
from prunepilot.hw_models.evaluate import hw_metrics, rankdata, spearman
from prunepilot.hw_models.proxies import MacsProxy, ParamsProxy
from prunepilot.hw_models.testing import toy_layers

BUILTIN = {"torch-cpu", "torch-cuda", "onnxruntime-cpu", "remote", "lut", "roofline", "learned", "macs", "params"}


def test_registry_lists_builtins_and_unknown_name_lists_valid_ones() -> None:
    assert BUILTIN <= set(latency_model_names())
    with pytest.raises(ConfigError) as exc:
        get_latency_model("sundial")
    for name in BUILTIN:
        assert repr(name) in str(exc.value)


def test_registry_settings_and_flags() -> None:
    assert get_latency_model("torch-cpu", threads=1).requires_model
    assert not get_latency_model("macs").requires_model
    with pytest.raises(ConfigError, match="does not accept settings"):
        get_latency_model("macs", bandwidth=3)


def test_register_a_custom_model() -> None:
    @register_latency_model("test-constant")
    class Constant(LatencyModel):
        pass

    assert isinstance(get_latency_model("test-constant"), Constant) and Constant.name == "test-constant"
    with pytest.raises(ConfigError, match="already registered"):
        register_latency_model("test-constant")(type("Other", (LatencyModel,), {}))


def test_proxies_units_and_fit() -> None:
    layers = toy_layers(16)
    raw = MacsProxy().predict_layers(layers)
    assert raw.kind == "predicted" and raw.details["unit"] == "MMACs"
    assert raw.ms == pytest.approx(sum(s.macs for s in layers) / 1e6)
    assert ParamsProxy().predict_layers(layers).details["unit"] == "Mparams"
    samples = [(toy_layers(c), 3.0 * sum(s.macs for s in toy_layers(c)) / 1e6 + 0.5) for c in (8, 16, 32)]
    fitted = MacsProxy.fit(samples)
    res = fitted.predict_layers(toy_layers(24))
    assert res.details["unit"] == "ms" and res.ms == pytest.approx(
        3.0 * sum(s.macs for s in toy_layers(24)) / 1e6 + 0.5
    )


def test_metrics_hand_case() -> None:
    meas = [10.0, 20.0, 30.0, 40.0]
    pred = [10.4, 21.5, 26.0, 41.0]  # errors 4%, 7.5%, 13.3%, 2.5%
    m = hw_metrics(meas, pred)
    assert m.n == 4 and m.mape == pytest.approx((0.04 + 0.075 + 4 / 30 + 0.025) / 4)
    assert m.within_5 == 0.5 and m.within_10 == 0.75 and m.spearman == pytest.approx(1.0)
    # budget = median 25: over budget are 30 and 40; 30 is predicted 26 (> 25): none called within
    assert m.budget_ms == 25.0 and m.over_budget == 2 and m.false_within_budget == 0.0
    m = hw_metrics(meas, [10, 20, 24, 30], budget_ms=35)  # 40 -> 30 <= 35: a false "within budget"
    assert m.false_within_budget == 1.0


def test_spearman_ties_and_degenerate() -> None:
    assert list(rankdata([3, 1, 3, 2])) == [3.5, 1.0, 3.5, 2.0]
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))
    with pytest.raises(ConfigError):
        hw_metrics([1.0], [1.0, 2.0])
