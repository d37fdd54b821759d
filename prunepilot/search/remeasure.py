"""Re-measure the front's predicted latencies on the device (both figures are kept)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from prunepilot.search.records import Candidate, Measurement

if TYPE_CHECKING:
    from prunepilot.search.evaluator import Evaluator


def remeasure_front(front: Sequence[Candidate], ev: Evaluator, meter: str | None, top: int) -> dict[str, Measurement]:
    """Measure up to ``top`` front candidates whose latency was predicted; by candidate id.

    ``meter`` is a measured latency model for the device (``device.remeasure_with``; None, or a
    search that already measures, does nothing). The most accurate predicted candidates go
    first. The store keeps the result beside the candidates (:meth:`RunStore.add_measurements`),
    so every later front carries ``metrics.measured_latency_ms`` next to the predicted figure.
    """
    predicted = [c for c in front if c.metrics.latency_kind == "predicted"]
    if not predicted or top <= 0 or not meter:
        return {}
    from prunepilot.hw_models.registry import get_latency_model

    model = get_latency_model(str(meter))
    out: dict[str, Measurement] = {}
    for cand in sorted(predicted, key=lambda c: -c.metrics.accuracy)[:top]:
        res = model.measure_ms(ev.prune(cand.policy), ev.input_shape, ev.batch_size)
        out[cand.id] = Measurement(float(res.ms), res.cv, res.model_name)
    return out
