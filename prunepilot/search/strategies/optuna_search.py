"""Optuna samplers; one trial evaluates one candidate.

* ``optuna-tpe``: TPE (Bergstra et al. 2011) maximising held-out accuracy; proposals are
  projected into the latency budget like ``random``, so every evaluation counts.
* ``optuna-nsga2``: NSGA-II (Deb et al. 2002), multi-objective: accuracy (max) and latency
  (min), no projection: it traces the whole front.

With ``evaluation.depth`` both also sample, per removable block, whether to remove it (a
categorical parameter beside the keep ratios).

On several devices (``device.also``) a projected proposal is projected into the budget of one
device drawn from the proposal itself (:func:`~prunepilot.search.strategies.sampling.proposal_turn`:
a hash of its parameters, since a sampler's trials carry no index and a sampled parameter would be
steered by the sampler), with that device's own latency estimate; ``aimed_at`` in the record names
it. The sampler still learns from the search's own device's ``score``, so a proposal aimed at a
device whose budget maps above the search's own budget is scored as over budget. Without
``device.also`` nothing changes.

A strategy hands its sampler over in :class:`TuneSetup` and never drives it itself. The Ray
backend wraps it in Tune's ``OptunaSearch`` (which asks a study for each trial's parameters and
tells it the trial's last result); the local backend asks and tells an Optuna study with the
same sampler directly (:mod:`prunepilot.search.local_backend`), so no Ray is imported and a
serial Ray search proposes the same parameters.
"""

from __future__ import annotations

from pydantic import Field

from prunepilot.search.strategies.base import register_strategy
from prunepilot.search.strategies.context import DriverContext, TuneSetup
from prunepilot.search.strategies.sampling import ProjectedSettings, RatioProposal


class TPESettings(ProjectedSettings):
    """Settings of ``optuna-tpe``."""

    n_startup_trials: int = Field(8, ge=1, description="Random trials before TPE takes over.")


class NSGA2Settings(ProjectedSettings):
    """Settings of ``optuna-nsga2``."""

    population_size: int = Field(16, ge=2, description="NSGA-II population size.")
    project: bool = Field(False, description="Shrink proposals into the latency budget.")


@register_strategy
class OptunaTPE(RatioProposal):
    """Optuna's TPE sampler maximising accuracy within the budget."""

    name = "optuna-tpe"
    description = "Optuna TPE on held-out accuracy, proposals projected into the budget"
    Settings = TPESettings
    settings: TPESettings

    def tune_setup(self, ctx: DriverContext) -> TuneSetup:
        import optuna

        s = self.settings
        # The sampler carries the seed (Tune's OptunaSearch ignores its own when given a sampler).
        sampler = optuna.samplers.TPESampler(seed=ctx.seed, n_startup_trials=s.n_startup_trials)
        return TuneSetup(
            self.param_space(ctx),
            num_samples=ctx.evaluations,
            sampler=sampler,
            metric="score",
            mode="max",
        )


@register_strategy
class OptunaNSGA2(RatioProposal):
    """Optuna's NSGA-II sampler on (accuracy, latency)."""

    name = "optuna-nsga2"
    description = "Optuna NSGA-II, multi-objective accuracy (max) / latency (min)"
    Settings = NSGA2Settings
    settings: NSGA2Settings

    def tune_setup(self, ctx: DriverContext) -> TuneSetup:

        s = self.settings
        from prunepilot.search.strategies.picklable_samplers import PicklableNSGAIISampler

        sampler = PicklableNSGAIISampler(seed=ctx.seed, population_size=s.population_size)
        return TuneSetup(
            self.param_space(ctx),
            num_samples=ctx.evaluations,
            sampler=sampler,
            metric=["accuracy", "latency_ms"],
            mode=["max", "min"],
        )
