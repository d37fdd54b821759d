"""Baselines: random search and the uniform-width sweep.

* ``random``: keep ratios drawn uniformly from ``[lower_bound, 1]`` per group (by Tune's
  generator on Ray, by :func:`prunepilot.search.space.trial_params` locally; both seeded by the
  search's seed), then projected into the latency budget (the shape of the draw is kept; see
  :func:`prunepilot.search.space.project_to_budget`). One trial per candidate. With
  ``evaluation.depth`` each removable block is also removed or kept, with even odds; the
  projection then shrinks the widths with those blocks removed.

  On several devices (``device.also``) trial ``i`` aims at the devices' budgets in turn
  (:meth:`TrialContext.aim <prunepilot.search.strategies.context.TrialContext.aim>`: the search's
  own for ``i`` = 0, 3, ... with two others): its proposal is projected into that device's budget
  with that device's own latency estimate (the trial parameter ``turn`` numbers the trials;
  ``aimed_at`` in the record names the device, None for the search's own). The draws themselves are
  those of a search on one device; without ``device.also`` nothing changes.
* ``uniform``: every group keeps the same ratio; a sweep of ratios from the lower bound to 1
  (the curve every Pareto front is drawn against). One trial per ratio.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field

from prunepilot.search import space as tune_space
from prunepilot.search.strategies.base import Strategy, StrategySettings, register_strategy
from prunepilot.search.strategies.context import DeviceTarget, DriverContext, TrialContext, TuneSetup

#: The trial parameter numbering ``random``'s trials on several devices (which budget each aims at).
TURN = "turn"


def evaluate_ratios(
    ctx: TrialContext,
    ratios: Mapping[str, float],
    project: bool,
    removed: Sequence[str] = (),
    depth: bool = False,
    aim: DeviceTarget | None = None,
    **extra: Any,
) -> None:
    """Project (optionally) into the budget, evaluate, report: the body of candidate trials.

    ``removed``: blocks the candidate removes; the projection shrinks the widths with them removed.
    ``depth``: the search proposes blocks, so a proposal the lower bound cannot bring into the
    budget removes further blocks first (:func:`fit_blocks`; ``blocks_added`` in its record).
    ``aim``: the budget to project into, with its device's latency estimate (None: the search's
    own, ``ctx.aim(0)``); given, the record's ``aimed_at`` names its device.
    """
    target = ctx.aim(0) if aim is None else aim
    if aim is not None:
        extra = {**extra, "aimed_at": aim.device}
    scale = 1.0
    if project:
        if depth:
            removed, added = fit_blocks(ctx, removed, target)
            extra = {**extra, "blocks_added": added}
        ratios, scale = tune_space.project_to_budget(
            ratios,
            ctx.lower_bound,
            target.budget_ms,
            lambda r: target.predict_latency_ms(ctx.make_policy(r).channels, removed),
        )
    policy = ctx.make_policy(ratios, removed)
    metrics = ctx.evaluator.evaluate(policy)
    ctx.report(policy, metrics, {"projection_scale": scale, **extra})


def fit_blocks(
    ctx: TrialContext, removed: Sequence[str], aim: DeviceTarget | None = None
) -> tuple[tuple[str, ...], int]:
    """``removed`` plus as many further blocks as needed (largest MACs first) for the narrowest
    widths to fit the budget (``aim``'s, on its device's estimate; None: the search's own), so that
    the projection can reach it; and how many were added.

    Without this, a depth proposal that keeps too many blocks lies over the budget even at the
    lower bound, however far its widths shrink.
    """
    target = ctx.aim(0) if aim is None else aim
    floor = ctx.make_policy({g.name: ctx.lower_bound for g in ctx.space.groups}).channels
    out = list(removed)
    rest = sorted((b for b in ctx.space.blocks if b.name not in out), key=lambda b: -b.macs)
    while rest and target.predict_latency_ms(floor, out) > target.budget_ms:
        out.append(rest.pop(0).name)
    return tuple(out), len(out) - len(removed)


def proposal_turn(params: Mapping[str, Any]) -> int:
    """Which device's budget a trial aims at (:meth:`TrialContext.aim`): its ``turn`` parameter
    when it has one (``random``: the trials in order), else a number drawn from its proposal (a
    sampler's trials carry no index): a hash of the parameters, the same on every run and backend,
    which the sampler cannot steer."""
    if TURN in params:
        return int(params[TURN])
    text = json.dumps({k: params[k] for k in sorted(params)}, default=str)
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


class ProjectedSettings(StrategySettings):
    """Settings shared by strategies that propose one keep ratio per group."""

    project: bool = Field(True, description="Shrink each proposal into the latency budget before evaluating it.")


class RatioProposal(Strategy):
    """Base of candidate strategies whose trial parameters are one keep ratio per group and, with
    depth, whether to remove each removable block (:func:`prunepilot.search.space.ratio_param_space`).

    With ``project`` and ``device.also``, each proposal is projected into the budget of the device
    :func:`proposal_turn` picks, with that device's latency estimate (:meth:`TrialContext.aim`).
    """

    kind = "candidate"
    searches_depth = True
    Settings = ProjectedSettings
    settings: ProjectedSettings

    def param_space(self, ctx: DriverContext) -> tune_space.ParamSpace:
        """The trial parameters: keep ratios, and the blocks' parameters when ``ctx.depth``."""
        return tune_space.ratio_param_space(ctx.space, ctx.lower_bound, depth=ctx.depth)

    def run_trial(self, ctx: TrialContext, params: Mapping[str, Any]) -> None:
        ratios = tune_space.params_to_ratios(params, ctx.space)
        removed = tune_space.params_to_removed_blocks(params, ctx.space)
        depth = any(tune_space.block_key(i) in params for i in range(len(ctx.space.blocks)))
        project = bool(self.settings.project)
        aim = ctx.aim(proposal_turn(params)) if project and ctx.targets else None
        evaluate_ratios(ctx, ratios, project=project, removed=removed, depth=depth, aim=aim)


class RandomSettings(ProjectedSettings):
    """Settings of ``random``."""


@register_strategy
class RandomSearch(RatioProposal):
    """Random keep ratios per group, projected into the budget (on several devices, into each
    device's budget in turn: trial ``turn`` ``i`` aims at ``TrialContext.aim(i)``)."""

    name = "random"
    description = "uniformly random keep ratios per group, projected into the latency budget"
    Settings = RandomSettings
    settings: RandomSettings

    def tune_setup(self, ctx: DriverContext) -> TuneSetup:
        space = self.param_space(ctx)
        if ctx.also and self.settings.project:  # number the trials: each aims at the next device's budget
            return TuneSetup({**space, TURN: tune_space.Grid(range(ctx.evaluations))}, num_samples=1)
        return TuneSetup(space, num_samples=ctx.evaluations)


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
