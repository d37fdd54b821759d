"""prunepilot: latency-budgeted pruning-policy search for PyTorch models.

The flow, one way through::

    config -> search (Ray Tune trials, or the same trials in this process)
           -> strategy proposes a PruningPolicy
           -> evaluator (prune, recalibrate BN, accuracy; latency from a hw model)
           -> run store (typed Candidate records) -> Pareto front -> apply

Public entry points are re-exported here; see README.md for a tour. They are imported lazily,
so ``import prunepilot`` does not import torch::

    result = prunepilot.search.run("configs/quickstart.yaml", backend="local")  # no Ray needed
    model = prunepilot.load_pruned("out/pruned")   # a folder written by `prunepilot apply`/`prune`
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from prunepilot import search
    from prunepilot.pruning.io import load_pruned

__all__ = ["__version__", "load_pruned", "search"]


def __getattr__(name: str) -> Any:
    if name == "load_pruned":
        from prunepilot.pruning.io import load_pruned

        return load_pruned
    if name == "search":
        return importlib.import_module("prunepilot.search")
    raise AttributeError(f"module 'prunepilot' has no attribute {name!r}")
