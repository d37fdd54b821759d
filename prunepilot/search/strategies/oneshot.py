"""One-shot strategies: ``autoslim`` and ``metapruning`` (:mod:`prunepilot.oneshot`).

Both are ``session`` strategies: one trial runs the whole method with its own seed
(``seed + trial_index``). The expensive phase -- training the supernet (AutoSlim) or the
PruningNet (MetaPruning) -- checkpoints to ``checkpoint_dir`` and resumes from there when a
trial is restarted (or skips training when it had finished). The search phase trains nothing:
it only recalibrates batch-norm statistics per scored width assignment.

**What a reported candidate's accuracy is.** With ``score_with: evaluator`` (the default) every
candidate is scored by ``ctx.evaluator.evaluate(policy)``: the *base model's* weights pruned by
``apply_policy``, BN recalibrated, accuracy on the held-out split -- exactly how ``random``,
``uniform`` and the others score, so fronts are comparable. The one-shot proxy accuracy that
chose the candidate is kept beside it (``proxy_accuracy``). With ``score_with: supernet`` the
accuracy is that of the one-shot weights themselves (the exported slimmable supernet, or the
PruningNet's generated weights), BN recalibrated, scored by ``ctx.evaluator.score`` on the same
held-out split; records then say ``accuracy_source: supernet-weights``.

Example config (``configs/fmnist-resnet20-autoslim.yaml``)::

    strategy:
      name: autoslim
      settings:
        train: {steps: 600, random_widths: 2}
        slim: {step_fraction: 0.1}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from prunepilot.oneshot.autoslim import GreedySlimming, SlimmableTraining, greedy_slim, train_slimmable
from prunepilot.oneshot.evolution import EvolutionSearch, evolve
from prunepilot.oneshot.metapruning import PruningNet, PruningNetTraining, train_pruningnet
from prunepilot.oneshot.supernet import Supernet
from prunepilot.oneshot.training import BatchStream, OneShotTraining, fingerprint
from prunepilot.oneshot.widths import WidthGrid
from prunepilot.search.space import Grid
from prunepilot.search.strategies.base import Strategy, StrategySettings, register_strategy
from prunepilot.search.strategies.context import DriverContext, TrialContext, TuneSetup

log = logging.getLogger(__name__)


class OneShotSettings(StrategySettings):
    """Settings shared by ``autoslim`` and ``metapruning``."""

    checkpoint_dir: Path | None = Field(
        None,
        description="Where training checkpoints go (resumed when present); None: <model.cache_dir>/oneshot, "
        "relative to the trial's working directory.",
    )
    bn_batches: int | None = Field(
        None, ge=1, description="Calibration batches per proxy score (None: all the evaluator's bn_batches)."
    )
    val_batches: int | None = Field(
        None, ge=1, description="Held-out batches per proxy score (None: all the evaluator's val batches)."
    )
    score_with: Literal["evaluator", "supernet"] = Field(
        "evaluator",
        description="Accuracy of reported candidates: evaluator.evaluate(policy) on the pruned base model, "
        "or the one-shot weights themselves (see the module docs).",
    )


class AutoSlimSettings(OneShotSettings):
    """Settings of ``autoslim``."""

    train: SlimmableTraining = Field(default_factory=SlimmableTraining, description="Slimmable training.")
    slim: GreedySlimming = Field(default_factory=GreedySlimming, description="Greedy slimming.")
    stop_fraction: float | None = Field(
        None,
        gt=0,
        le=1,
        description="End the path at this fraction of the base model's predicted latency (None: at the budget).",
    )


class MetaPruningSettings(OneShotSettings):
    """Settings of ``metapruning``."""

    train: PruningNetTraining = Field(default_factory=PruningNetTraining, description="PruningNet training.")
    search: EvolutionSearch = Field(default_factory=EvolutionSearch, description="Evolutionary search.")
    budget_scales: list[float] = Field(
        default_factory=lambda: [1.0],
        description="Budgets searched with the one trained PruningNet, as multiples of the trial's budget.",
    )
    report_top: int = Field(5, ge=1, description="Best individuals (by proxy score) reported per budget.")


class _Session:
    """What both strategies do around their method: build, train (resumably), report."""

    def __init__(self, ctx: TrialContext, settings: OneShotSettings, method: str, train: OneShotTraining) -> None:
        self.ctx, self.settings, self.method, self.train = ctx, settings, method, train
        self.grid = WidthGrid.from_space(ctx.space, ctx.lower_bound, ctx.round_to)
        self.calib = list(ctx.calib_batches)[: settings.bn_batches or None]
        self.val = list(ctx.val_batches)[: settings.val_batches or None]
        started = time.perf_counter()
        self.supernet = Supernet.build(
            ctx.base_model, ctx.example, space=ctx.space, importance=ctx.importance, calib_batches=ctx.calib_batches
        )
        self.build_seconds = time.perf_counter() - started
        loader = ctx.train_loader
        if loader is None:
            raise ValueError(f"strategy {method!r} trains a supernet and needs the training split (ctx.train_loader)")
        self.stream = BatchStream(loader.dataset, self.train.batch_size or loader.batch_size or 128, ctx.seed)
        self.timings: dict[str, float] = {"build_seconds": self.build_seconds}

    def checkpoint(self) -> Path:
        folder = self.settings.checkpoint_dir or self.ctx.work_dir / "oneshot"
        key = fingerprint(
            {
                "evaluator": self.ctx.evaluator_key,
                "method": self.method,
                "seed": self.ctx.seed,
                "train": self.train.model_dump(mode="json"),
                "lower_bound": self.ctx.lower_bound,
            }
        )
        return Path(folder) / f"{self.method}-{key}.pt"

    def latency(self, widths: Mapping[str, int]) -> float:
        return float(self.ctx.predict_latency_ms(widths))

    def report(
        self,
        widths: Mapping[str, int],
        extra: dict[str, Any],
        weights: Callable[[Mapping[str, int]], dict[str, torch.Tensor]] | None = None,
    ) -> None:
        ctx = self.ctx
        meta = {k: v for k, v in extra.items() if k in ("search_budget_ms", "path_step", "rank")}
        policy = self.grid.policy(ctx.space, widths, ctx.importance, strategy=self.method, **meta)
        if self.settings.score_with == "evaluator":
            metrics = ctx.evaluator.evaluate(policy)
            source = "evaluator"
        else:
            started = time.perf_counter()
            with torch.no_grad():
                generated = weights(widths) if weights is not None else None
            self.supernet.recalibrate(widths, ctx.calib_batches, generated)
            model = self.supernet.export(widths, generated)
            metrics = ctx.evaluator.score(model, policy.channels, started=started, protocol=f"{self.method}-weights")
            source = "supernet-weights"
        ctx.report(policy, metrics, {"method": self.method, "accuracy_source": source, **self.timings, **extra})


def _session_setup(ctx: DriverContext) -> TuneSetup:
    """One trial per seed (``trial_index`` 0 .. trials-1)."""
    return TuneSetup({"trial_index": Grid(range(ctx.trials))}, num_samples=1)


@register_strategy
class AutoSlimStrategy(Strategy):
    """AutoSlim: slimmable training, then greedy slimming; every path step is a candidate."""

    name = "autoslim"
    kind = "session"
    description = "AutoSlim: slimmable supernet (sandwich rule, in-place distillation) + greedy slimming path"
    Settings = AutoSlimSettings
    settings: AutoSlimSettings

    def tune_setup(self, ctx: DriverContext) -> TuneSetup:
        return _session_setup(ctx)

    def run_trial(self, ctx: TrialContext, params: Mapping[str, Any]) -> None:
        s = self.settings
        run = _Session(ctx, s, self.name, s.train)
        trained = train_slimmable(
            run.supernet, run.grid, run.stream, s.train, seed=ctx.seed, checkpoint=run.checkpoint(), log=log.info
        )
        run.timings.update(train_seconds=trained.seconds, resumed_from=float(trained.resumed_from))
        full_ms = run.latency(run.grid.full())
        stop = s.stop_fraction * full_ms if s.stop_fraction is not None else ctx.budget_ms
        with torch.no_grad():
            path = greedy_slim(
                run.supernet,
                run.grid,
                run.latency,
                run.calib,
                run.val,
                stop_ms=stop,
                cfg=s.slim,
                gen=torch.Generator().manual_seed(ctx.seed),
                log=log.info,
            )
        run.timings["search_seconds"] = path.seconds
        for step in path.path:
            run.report(
                step.widths,
                {
                    "path_step": step.index,
                    "proxy_accuracy": step.score.accuracy,
                    "proxy_loss": step.score.loss,
                    "predicted_latency_ms": step.latency_ms,
                    "slimmed": step.slimmed,
                    "path_length": len(path.path),
                },
            )


@register_strategy
class MetaPruningStrategy(Strategy):
    """MetaPruning: a PruningNet, then evolutionary search per budget; the best are candidates."""

    name = "metapruning"
    kind = "session"
    description = "MetaPruning: PruningNet weight generators + evolutionary search under the latency budget"
    Settings = MetaPruningSettings
    settings: MetaPruningSettings

    def tune_setup(self, ctx: DriverContext) -> TuneSetup:
        return _session_setup(ctx)

    def run_trial(self, ctx: TrialContext, params: Mapping[str, Any]) -> None:
        s = self.settings
        run = _Session(ctx, s, self.name, s.train)
        net = PruningNet(run.supernet, hidden=s.train.hidden, seed=ctx.seed)
        trained = train_pruningnet(
            net, run.grid, run.stream, s.train, seed=ctx.seed, checkpoint=run.checkpoint(), log=log.info
        )
        run.timings.update(train_seconds=trained.seconds, resumed_from=float(trained.resumed_from))
        net.eval()
        for i, scale in enumerate(s.budget_scales):
            budget = scale * ctx.budget_ms
            gen = torch.Generator().manual_seed(ctx.seed * 1000 + i)
            with torch.no_grad():
                found = evolve(
                    lambda w: net.score(w, run.calib, run.val),
                    run.grid,
                    run.latency,
                    budget,
                    s.search,
                    gen,
                    log=log.info,
                )
            run.timings["search_seconds"] = found.seconds
            for rank, ind in enumerate(found.ranked[: s.report_top]):
                run.report(
                    ind.widths,
                    {
                        "search_budget_ms": budget,
                        "rank": rank,
                        "generation": ind.generation,
                        "proxy_accuracy": ind.score.accuracy,
                        "proxy_loss": ind.score.loss,
                        "predicted_latency_ms": ind.latency_ms,
                        "scored": len(found.individuals),
                        "rejected_over_budget": found.rejected_over,
                        "rejected_under_floor": found.rejected_under,
                        "floor_relaxed": found.floor_relaxed,
                    },
                    weights=lambda w: net.generate(w),
                )
