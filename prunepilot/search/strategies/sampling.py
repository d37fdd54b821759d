"""Baselines: random search and the uniform-width sweep.

* ``random``: keep ratios drawn uniformly from ``[lower_bound, 1]`` per group (by Tune's
  generator on Ray, by :func:`prunepilot.search.space.trial_params` locally; both seeded by the
  search's seed), then projected into the latency budget (the shape of the draw is kept; see
  :func:`prunepilot.search.space.project_to_budget`). One trial per candidate.
* ``uniform``: every group keeps the same ratio; a sweep of ratios from the lower bound to 1
  (the curve every Pareto front is drawn against). One trial per ratio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import Field

from prunepilot.search import space as tune_space
from prunepilot.search.strategies.base import Strategy, StrategySettings, register_strategy
from prunepilot.search.strategies.context import DriverContext, TrialContext, TuneSetup


def evaluate_ratios(ctx: TrialContext, ratios: Mapping[str, float], project: bool, **extra: Any) -> None:
    """Project (optionally) into the budget, evaluate, report: the body of candidate trials."""
    scale = 1.0
    if project:
        ratios, scale = tune_space.project_to_budget(
            ratios,
            ctx.lower_bound,
            ctx.budget_ms,
            lambda r: ctx.predict_latency_ms(ctx.make_policy(r).channels),
        )
    policy = ctx.make_policy(ratios)
    metrics = ctx.evaluator.evaluate(policy)
    ctx.report(policy, metrics, {"projection_scale": scale, **extra})


class ProjectedSettings(StrategySettings):
    """Settings shared by strategies that propose one keep ratio per group."""

    project: bool = Field(True, description="Shrink each proposal into the latency budget before evaluating it.")


class RatioProposal(Strategy):
    """Base of candidate strategies whose trial parameters are one keep ratio per group."""

    kind = "candidate"
    Settings = ProjectedSettings
    settings: ProjectedSettings

    def run_trial(self, ctx: TrialContext, params: Mapping[str, Any]) -> None:
        ratios = tune_space.params_to_ratios(params, ctx.space)
        evaluate_ratios(ctx, ratios, project=bool(self.settings.project))


class RandomSettings(ProjectedSettings):
    """Settings of ``random``."""


@register_strategy
class RandomSearch(RatioProposal):
    """Random keep ratios per group, projected into the budget."""

    name = "random"
    description = "uniformly random keep ratios per group, projected into the latency budget"
    Settings = RandomSettings
    settings: RandomSettings

    def tune_setup(self, ctx: DriverContext) -> TuneSetup:
        return TuneSetup(tune_space.ratio_param_space(ctx.space, ctx.lower_bound), num_samples=ctx.evaluations)


class UniformSettings(StrategySettings):
    """Settings of ``uniform``."""

    ratios: list[float] | None = Field(
        None, description="Keep ratios to sweep; default: `evaluations` ratios evenly from lower_bound to 1."
    )


@register_strategy
class UniformSweep(Strategy):
    """The same keep ratio for every group, swept over a range."""

    name = "uniform"
    kind = "candidate"
    description = "the same keep ratio in every group, swept from the lower bound to 1 (the baseline)"
    Settings = UniformSettings
    settings: UniformSettings

    def tune_setup(self, ctx: DriverContext) -> TuneSetup:
        ratios = self.settings.ratios
        if ratios is None:
            ratios = [float(r) for r in np.linspace(ctx.lower_bound, 1.0, max(2, ctx.evaluations))]
        return TuneSetup({"uniform_ratio": tune_space.Grid(round(r, 6) for r in ratios)}, num_samples=1)

    def run_trial(self, ctx: TrialContext, params: Mapping[str, Any]) -> None:
        r = float(params["uniform_ratio"])
        ratios = {g.name: r for g in ctx.space.groups}
        evaluate_ratios(ctx, ratios, project=False, uniform_ratio=r)
