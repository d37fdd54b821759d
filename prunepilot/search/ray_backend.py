"""The Ray backend: a strategy's trials as Ray Tune trials, on a local Ray or a cluster.

    driver evaluator -> Ray (local, or a cluster by address) -> Tune trials
    (:func:`prunepilot.search.trainable.search_trial`) -> each ``tune.report`` -> :class:`StoreCallback`
    -> :class:`~prunepilot.search.driver.Recorder` -> the run folder

``resume`` restores Tune's experiment (``tune/`` in the run folder) and seeds every trial's
evaluation cache with the stored candidates, so nothing stored is evaluated again. A strategy's
Optuna sampler runs inside Tune's ``OptunaSearch``; without one, Tune's variant generator draws
the uniforms, seeded by the search's seed.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ray.tune import Callback

from prunepilot.search.config import SearchConfig
from prunepilot.search.driver import Recorder
from prunepilot.search.evaluator import Evaluator
from prunepilot.search.records import Candidate
from prunepilot.search.space import to_tune
from prunepilot.search.store import RunStore
from prunepilot.search.strategies import TuneSetup
from prunepilot.search.trainable import SearchSetup, search_trial

# Tune's new console output prints an experiment box and hints on every run; our progress bar
# and tables replace it (set RAY_AIR_NEW_OUTPUT=1 to get Tune's own output back).
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def init_ray(cfg: SearchConfig) -> bool:
    """Connect to the configured cluster or start a local Ray; returns True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, **kwargs)
    else:
        ray.init(num_cpus=cfg.ray.num_cpus, **kwargs)
    return True


class StoreCallback(Callback):  # type: ignore[misc]
    """Driver-side Tune callback: hand each reported candidate and each failed trial to the Recorder.

    Holds only the run folder path and budget, so Tune can pickle it with the experiment
    state and a resumed search writes to the same folder.
    """

    def __init__(self, run_dir: str, budget_ms: float) -> None:
        self.run_dir = run_dir
        self.budget_ms = budget_ms
        self._recorder: Recorder | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"run_dir": self.run_dir, "budget_ms": self.budget_ms}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._recorder = None

    @property
    def recorder(self) -> Recorder:
        if self._recorder is None:
            self._recorder = Recorder(RunStore(self.run_dir), self.budget_ms)
        return self._recorder

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        text = result.get("candidate")
        if text:
            running = sum(1 for t in trials if t.status == "RUNNING")
            self.recorder.candidate(Candidate.from_json(json.loads(text)), running)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.recorder.failure(trial.trial_id, trial.config, _trial_error(trial))


def _trial_error(trial: Any) -> str:
    """The last lines of a failed trial's error (Tune keeps it in a file beside the trial)."""
    try:
        path = trial.error_file
        if path and Path(path).is_file():
            lines = Path(path).read_text().strip().splitlines()
            return "\n".join(lines[-3:])[-2000:]
        err = trial.get_error()
        return str(err)[-2000:] if err else "trial failed (no error recorded)"
    except Exception as exc:  # noqa: BLE001 - the record must be written whatever Tune offers
        return f"trial failed ({type(exc).__name__} while reading its error)"


def _search_alg(cfg: SearchConfig, tsetup: TuneSetup) -> tuple[Any, int | None]:
    """Tune's search algorithm for ``tsetup`` and the ``max_concurrent_trials`` to give Tune with it."""
    if tsetup.sampler is not None:
        from ray.tune.search.optuna import OptunaSearch

        # Tune's max_concurrent_trials wraps the searcher in a ConcurrencyLimiter.
        return OptunaSearch(sampler=tsetup.sampler, metric=tsetup.metric, mode=tsetup.mode), cfg.ray.max_concurrent
    from ray.tune.search import BasicVariantGenerator

    # A variant generator limits concurrency itself (Tune ignores max_concurrent_trials with one).
    return BasicVariantGenerator(random_state=cfg.seed, max_concurrent=cfg.ray.max_concurrent), None


def run_ray(
    cfg: SearchConfig, store: RunStore, ev: Evaluator, setup: SearchSetup, tsetup: TuneSetup, resume: bool
) -> None:
    """Run every trial of ``tsetup`` as Ray Tune trials; candidates land in ``store``."""
    from ray import tune

    started = init_ray(cfg)
    try:
        prior = [c.to_json() for c in store.ok()] if resume else []
        trainable = tune.with_resources(
            tune.with_parameters(search_trial, setup=setup.to_json(), base_state=ev.base_state(), prior=prior),
            {"cpu": cfg.ray.cpus_per_trial},
        )
        tune_dir = str(store.tune_dir.resolve())
        if resume and tune.Tuner.can_restore(tune_dir):
            tuner = tune.Tuner.restore(
                tune_dir, trainable=trainable, resume_unfinished=True, resume_errored=False, restart_errored=False
            )
        else:
            search_alg, max_concurrent = _search_alg(cfg, tsetup)
            tuner = tune.Tuner(
                trainable,
                param_space=to_tune(tsetup.param_space),
                tune_config=tune.TuneConfig(
                    num_samples=tsetup.num_samples,
                    search_alg=search_alg,
                    max_concurrent_trials=max_concurrent,
                    reuse_actors=cfg.ray.reuse_actors,
                    time_budget_s=cfg.strategy.time_limit_s,
                ),
                run_config=tune.RunConfig(
                    name="tune",
                    storage_path=str(store.dir.resolve()),
                    callbacks=[StoreCallback(str(store.dir.resolve()), setup.budget_ms)],
                    failure_config=tune.FailureConfig(max_failures=cfg.ray.max_failures),
                    verbose=0,
                ),
            )
        tuner.fit()
    finally:
        if started:
            import ray

            ray.shutdown()
