"""One-shot pruning-policy search: a supernet over the pruning space, AutoSlim and MetaPruning.

Public API::

    sup = Supernet.build(model, example, space=space, importance="l1")  # leading channels = most important
    with sup.at(policy.channels):
        logits = sup(x)                        # == apply_policy(model, policy)(x) before training
    grid = WidthGrid.from_space(space, lower_bound=0.25, round_to=1)

    # AutoSlim: slimmable training (sandwich rule, in-place distillation), then greedy slimming
    train_slimmable(sup, grid, BatchStream(train_ds, 128, seed), SlimmableTraining(steps=600),
                    seed=seed, checkpoint=Path("ckpt/autoslim.pt"))
    path = greedy_slim(sup, grid, latency_of, calib, val, stop_ms=budget, cfg=GreedySlimming())

    # MetaPruning: a PruningNet of weight generators, then evolutionary search under a budget
    net = PruningNet(sup, hidden=32)
    train_pruningnet(net, grid, stream, PruningNetTraining(steps=600), seed=seed, checkpoint=...)
    found = evolve(lambda w: net.score(w, calib, val), grid, latency_of, budget, EvolutionSearch(), gen)

The search strategies ``autoslim`` and ``metapruning`` (:mod:`prunepilot.search.strategies.oneshot`)
run these against the search's :class:`~prunepilot.search.evaluator.Evaluator`.
"""

from __future__ import annotations

from prunepilot.oneshot.autoslim import GreedySlimming, PathStep, SlimmableTraining, greedy_slim, train_slimmable
from prunepilot.oneshot.evolution import EvolutionResult, EvolutionSearch, Individual, evolve
from prunepilot.oneshot.metapruning import PruningNet, PruningNetTraining, WeightGenerator, train_pruningnet
from prunepilot.oneshot.supernet import LayerInfo, Score, Supernet, SupernetError
from prunepilot.oneshot.training import BatchStream, OneShotTraining, TrainResult, load_state, train_steps
from prunepilot.oneshot.widths import WidthGrid

__all__ = [
    "BatchStream",
    "EvolutionResult",
    "EvolutionSearch",
    "GreedySlimming",
    "Individual",
    "LayerInfo",
    "OneShotTraining",
    "PathStep",
    "PruningNet",
    "PruningNetTraining",
    "Score",
    "SlimmableTraining",
    "Supernet",
    "SupernetError",
    "TrainResult",
    "WeightGenerator",
    "WidthGrid",
    "evolve",
    "greedy_slim",
    "load_state",
    "train_pruningnet",
    "train_slimmable",
    "train_steps",
]
