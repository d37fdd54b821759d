"""Search strategies, registered by name (see :func:`strategy_names`), and their contract."""

from __future__ import annotations

from prunepilot.search.strategies.base import (
    Strategy,
    StrategySettings,
    check_depth,
    check_strategy,
    depth_strategies,
    get_strategy,
    register_strategy,
    strategy_class,
    strategy_names,
)
from prunepilot.search.strategies.context import (
    Batch,
    DriverContext,
    PolicyEvaluator,
    ReportFn,
    TrialContext,
    TuneSetup,
)

__all__ = [
    "Batch",
    "DriverContext",
    "PolicyEvaluator",
    "ReportFn",
    "Strategy",
    "StrategySettings",
    "TrialContext",
    "TuneSetup",
    "check_depth",
    "check_strategy",
    "depth_strategies",
    "get_strategy",
    "register_strategy",
    "strategy_class",
    "strategy_names",
]
