"""Search strategies, registered by name (see :func:`strategy_names`)."""

from __future__ import annotations

from prunepilot.search.strategies.base import (
    DriverContext,
    Strategy,
    StrategySettings,
    TrialContext,
    TuneSetup,
    check_strategy,
    get_strategy,
    register_strategy,
    strategy_class,
    strategy_names,
)

__all__ = [
    "DriverContext",
    "Strategy",
    "StrategySettings",
    "TrialContext",
    "TuneSetup",
    "check_strategy",
    "get_strategy",
    "register_strategy",
    "strategy_class",
    "strategy_names",
]
