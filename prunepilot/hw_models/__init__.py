"""Hardware models: latency of a (pruned) model on a named device, measured or predicted.

Every figure is a :class:`LatencyResult` that says whether it was ``measured`` or
``predicted`` and by which latency model. Latency models are registered by name::

    from prunepilot.hw_models import get_latency_model, load_device

    lm = load_device("local-cpu").build()          # a device config under configs/devices/
    if lm.requires_model:
        res = lm.measure_ms(pruned_model, (1, 3, 32, 32), batch_size=1)
    else:
        res = lm.predict_ms(space, policy.channels, batch_size=1)   # no model is built

Registered models: ``torch-cpu``, ``torch-cuda``, ``onnxruntime-cpu``, ``remote`` (measured);
``lut``, ``roofline``, ``learned``, ``macs``, ``params`` (predicted).
"""

from __future__ import annotations

from prunepilot.hw_models.base import HardwareError, LatencyModel, LatencyResult
from prunepilot.hw_models.devices import DeviceConfig, list_devices, load_device
from prunepilot.hw_models.evaluate import HwMetrics, hw_metrics
from prunepilot.hw_models.measure import MeasureProtocol
from prunepilot.hw_models.registry import get_latency_model, latency_model_names, register_latency_model

__all__ = [
    "DeviceConfig",
    "HardwareError",
    "HwMetrics",
    "LatencyModel",
    "LatencyResult",
    "MeasureProtocol",
    "get_latency_model",
    "hw_metrics",
    "latency_model_names",
    "list_devices",
    "load_device",
    "register_latency_model",
]
