"""prunepilot.search: latency-budgeted search for pruning policies.

One call runs a search, with Ray or in this process::

    import prunepilot.search

    result = prunepilot.search.run("configs/quickstart.yaml", backend="local", run_dir="runs/nb")
    for cand in result.front:                       # typed records: Candidate, Metrics
        print(cand.id, cand.metrics.accuracy, cand.budget_latency_ms, cand.within_budget)
    store = prunepilot.search.RunStore(result.run_dir)   # everything in the run folder
    store.export_policy(result.front[-1], "policy.json")

The names below are imported on first use, so ``import prunepilot.search.config`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prunepilot.search.config import SearchConfig, load_config
    from prunepilot.search.devices import DeviceView, device_view
    from prunepilot.search.records import Candidate, DeviceLatency, FailedTrial, Measurement, Metrics
    from prunepilot.search.runner import SearchResult, run, run_search
    from prunepilot.search.store import RunStore

__all__ = [
    "Candidate",
    "DeviceLatency",
    "DeviceView",
    "FailedTrial",
    "Measurement",
    "Metrics",
    "RunStore",
    "SearchConfig",
    "SearchResult",
    "device_view",
    "load_config",
    "run",
    "run_search",
]

_HOMES = {
    "Candidate": "records",
    "DeviceLatency": "records",
    "DeviceView": "devices",
    "device_view": "devices",
    "FailedTrial": "records",
    "Measurement": "records",
    "Metrics": "records",
    "RunStore": "store",
    "SearchConfig": "config",
    "load_config": "config",
    "SearchResult": "runner",
    "run": "runner",
    "run_search": "runner",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'prunepilot.search' has no attribute {name!r}")
    return getattr(importlib.import_module(f"prunepilot.search.{home}"), name)
