"""The Optuna strategies' samplers survive the pickling Ray Tune does when a Tuner starts."""

from __future__ import annotations

import pickle

import optuna
import pytest
import ray.cloudpickle as cloudpickle

from prunepilot.search.strategies.picklable_samplers import PicklableNSGAIISampler


def _proposals(sampler: optuna.samplers.BaseSampler, n: int) -> list[dict[str, float]]:
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    out = []
    for _ in range(n):
        trial = study.ask()
        params = {f"g{i}": trial.suggest_float(f"g{i}", 0.2, 1.0) for i in range(3)}
        study.tell(trial, [sum(params.values()), params["g0"]])
        out.append(params)
    return out


@pytest.mark.parametrize("module", [pickle, cloudpickle], ids=["pickle", "cloudpickle"])
def test_nsga2_sampler_pickles_and_samples_as_before(module) -> None:
    # Tune uses cloudpickle when the Tuner starts and plain pickle at experiment checkpoints.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    original = PicklableNSGAIISampler(seed=3, population_size=4)
    copy = module.loads(module.dumps(original))
    assert isinstance(copy, optuna.samplers.NSGAIISampler)
    # Past one generation (population 4), so the genetic operators under the lock run too.
    assert _proposals(copy, 10) == _proposals(PicklableNSGAIISampler(seed=3, population_size=4), 10)
    # The original is untouched by pickling: its lock is still there and it still samples.
    assert len(_proposals(original, 5)) == 5
