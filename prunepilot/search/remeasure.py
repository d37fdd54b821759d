"""Re-measure the front's predicted latencies on the device (both figures are kept)."""

from __future__ import annotations

from typing import Any

from prunepilot.pruning import PruningPolicy


def remeasure_front(front: list[dict[str, Any]], ev: Any, top: int) -> list[dict[str, Any]]:
    """Measure up to ``top`` front candidates whose latency was predicted.

    Needs a measured latency model for the device: ``device.remeasure_with`` (when the
    search already measures, nothing is predicted and nothing is done).
    Adds ``metrics.measured_latency_ms`` (and its CV) to those candidates; the predicted
    figure stays in ``metrics.latency_ms``.
    """
    predicted = [c for c in front if c["metrics"].get("latency_kind") == "predicted"]
    name = ev.cfg.device.remeasure_with
    if not predicted or top <= 0 or not name:
        return front
    from prunepilot.hw_models.registry import get_latency_model

    meter = get_latency_model(str(name))
    best = sorted(predicted, key=lambda c: -c["metrics"]["accuracy"])[:top]
    for cand in best:
        policy = PruningPolicy.model_validate(cand["policy"])
        model = ev.prune(policy)
        res = meter.measure_ms(model, ev.input_shape, ev.batch_size)
        cand["metrics"]["measured_latency_ms"] = res.ms
        cand["metrics"]["measured_latency_cv"] = res.cv
        cand["metrics"]["measured_with"] = res.model_name
    return front
