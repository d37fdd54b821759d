"""The local backend: the same trials, one after another in this process, without Ray.

    driver evaluator (shared by every trial) -> for each trial of the strategy's TuneSetup:
    :func:`~prunepilot.search.trainable.run_trial` -> each candidate -> :class:`Recorder` -> the run folder

The trials are those the Ray backend runs: every grid variant times ``num_samples``, uniforms
drawn from a generator seeded by the search's seed (:func:`prunepilot.search.space.trial_params`).
A strategy's Optuna sampler is driven here directly: an Optuna study with that sampler is asked
for each trial's parameters and told the trial's last result (``TuneSetup.metric``), as Tune's
``OptunaSearch`` does. So one strategy has one code path (``tune_setup`` + ``run_trial``) and a
serial Ray search of an Optuna strategy proposes what this one proposes.

A trial that raises is retried ``ray.max_failures`` times, then recorded as a failed trial, and
the search goes on. ``resume`` replays the same trials with the evaluation cache seeded by the
stored candidates: stored candidates are neither evaluated nor stored again, trials recorded as
failed are skipped (as Tune does not restart errored trials), and the rest run as before.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prunepilot.search.config import SearchConfig
from prunepilot.search.driver import Recorder
from prunepilot.search.evaluator import Evaluator
from prunepilot.search.records import Candidate
from prunepilot.search.space import Choice, sampled, trial_params
from prunepilot.search.store import RunStore
from prunepilot.search.strategies import Strategy, TuneSetup
from prunepilot.search.trainable import SearchSetup, run_trial, trial_metrics

log = logging.getLogger(__name__)

#: Called after a trial with its reported figures (None: the trial failed).
TellFn = Callable[[list[dict[str, float]] | None], None]


def _plain_trials(tsetup: TuneSetup, seed: int) -> Iterator[tuple[dict[str, Any], TellFn]]:
    for params in trial_params(tsetup.param_space, tsetup.num_samples, seed):
        yield params, lambda results: None


def _optuna_trials(tsetup: TuneSetup) -> Iterator[tuple[dict[str, Any], TellFn]]:
    """Ask a study for each trial's uniforms and choices; tell it the trial's last result (Tune's
    OptunaSearch protocol)."""
    import optuna

    space = sampled(tsetup.param_space)
    if len(space) != len(tsetup.param_space):
        raise ValueError(
            "a strategy with a sampler may only have Uniform and Choice parameters; give grids without a sampler"
        )
    metrics = tsetup.metric if isinstance(tsetup.metric, list) else [tsetup.metric or "score"]
    modes = tsetup.mode if isinstance(tsetup.mode, list) else [tsetup.mode or "max"]
    directions: list[optuna.study.StudyDirection] = [
        optuna.study.StudyDirection.MINIMIZE if m == "min" else optuna.study.StudyDirection.MAXIMIZE for m in modes
    ]
    study = optuna.create_study(sampler=tsetup.sampler, directions=directions)
    distributions: dict[str, optuna.distributions.BaseDistribution] = {
        k: optuna.distributions.CategoricalDistribution(u.values)
        if isinstance(u, Choice)
        else optuna.distributions.FloatDistribution(u.low, u.high)
        for k, u in space.items()
    }
    for _ in range(tsetup.num_samples):
        trial = study.ask(fixed_distributions=distributions)

        def tell(results: list[dict[str, float]] | None, trial: optuna.trial.Trial = trial) -> None:
            if not results:
                state = optuna.trial.TrialState.FAIL if results is None else optuna.trial.TrialState.PRUNED
                study.tell(trial, state=state)
                return
            values = [float(results[-1][m]) for m in metrics]
            study.tell(trial, values if len(values) > 1 else values[0])

        yield dict(trial.params), tell


def _error(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    return "".join(lines).strip()[-2000:]


def run_local(
    cfg: SearchConfig,
    store: RunStore,
    ev: Evaluator,
    setup: SearchSetup,
    strategy: Strategy,
    tsetup: TuneSetup,
    resume: bool,
) -> None:
    """Run every trial of ``tsetup`` serially in this process; candidates land in ``store``."""
    recorder = Recorder(store, setup.budget_ms)
    failed_before = {r.trial for r in store.failed()} if resume else set()
    if resume:
        ev.seed_cache(store.ok())
    trials = _optuna_trials(tsetup) if tsetup.sampler is not None else _plain_trials(tsetup, cfg.seed)
    with _quiet_optuna(tsetup.sampler is not None):
        _run_trials(cfg, ev, setup, strategy, trials, recorder, failed_before)


@contextmanager
def _quiet_optuna(active: bool) -> Iterator[None]:
    """Optuna logs every told trial at INFO; the progress bar says enough. Restored afterwards."""
    if not active:
        yield
        return
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def _run_trials(
    cfg: SearchConfig,
    ev: Evaluator,
    setup: SearchSetup,
    strategy: Strategy,
    trials: Iterator[tuple[dict[str, Any], TellFn]],
    recorder: Recorder,
    failed_before: set[str],
) -> None:
    limit = cfg.strategy.time_limit_s
    deadline = None if limit is None else time.monotonic() + limit
    for n, (params, tell) in enumerate(trials):
        trial_id = f"local_{n:05d}"
        if trial_id in failed_before:
            tell(None)
            continue
        for attempt in range(cfg.ray.max_failures + 1):
            results: list[dict[str, float]] = []

            def emit(cand: Candidate, results: list[dict[str, float]] = results) -> None:
                recorder.candidate(cand, running=1)
                results.append(trial_metrics(cand))

            try:
                run_trial(strategy, ev, cfg, setup, params, trial_id, emit)
            except Exception as exc:  # noqa: BLE001 - a failing trial is a record, as on Ray
                if attempt < cfg.ray.max_failures:
                    log.warning("trial %s failed (%s); retrying", trial_id, exc)
                    continue
                recorder.failure(trial_id, params, _error(exc))
                tell(None)
            else:
                tell(results)
            break
        if deadline is not None and time.monotonic() >= deadline:
            log.info("strategy.time_limit_s (%.1f s) reached after %d trial(s)", limit, n + 1)
            return
