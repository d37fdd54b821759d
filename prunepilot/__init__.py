"""prunepilot: latency-budgeted pruning-policy search for PyTorch models.

The flow, one way through::

    config -> search (Ray Tune) -> strategy proposes a PruningPolicy
           -> evaluator (prune, recalibrate BN, accuracy; latency from a hw model)
           -> results store -> Pareto front -> apply

Public entry points are re-exported here; see README.md for a tour.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
