"""A search, start to end: :func:`run` (``prunepilot.search.run``) and ``prunepilot search``.

The whole path, one way through::

    config (SearchConfig, validated before anything heavy)
      -> RunStore(run_dir): config.yaml                                   (prunepilot.search.store)
      -> driver.prepare: evaluator, budget floor, base metrics, latency fit -> run.json
      -> strategy.tune_setup(DriverContext) -> TuneSetup                  (prunepilot.search.strategies)
      -> backend: "ray"   -> Tune trials on a local Ray or a cluster      (prunepilot.search.ray_backend)
                  "local" -> the same trials, serially, in this process   (prunepilot.search.local_backend)
         each trial: strategy.run_trial(TrialContext) proposes PruningPolicies
           -> evaluator (prune, recalibrate BN, held-out accuracy; latency from the device's model)
           -> report -> Candidate                                         (prunepilot.search.trainable)
           -> driver.Recorder -> candidates.jsonl (failed trials recorded beside them)
      -> finish: uniform baseline -> Pareto front -> re-measurement of predicted front points and of
         the best candidate within the budget -> budget fill (the best widened to use the budget,
         scored and stored; prunepilot.search.fill) -> remeasured.json, front.json, run.json (status:
         finished, best_within_budget with its budget use, fill); the same on each measuring device of
         device.also, on its own front and budget (prunepilot.search.devices) -> SearchResult
      -> later: `prunepilot pareto` (front, plots, --export) and `prunepilot apply`, through RunStore

``resume`` continues a search in its run folder with the stored config: nothing stored is
evaluated or stored again (the Ray backend restores Tune's experiment; the local one replays its
trials against a seeded evaluation cache).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from prunepilot.errors import ConfigError, one_of
from prunepilot.search.config import SearchConfig, load_config, validate_config
from prunepilot.search.driver import expected_candidates, prepare, progress_bar
from prunepilot.search.evaluator import Evaluator
from prunepilot.search.records import Candidate, Metrics
from prunepilot.search.store import RunStore
from prunepilot.search.strategies import DriverContext, check_depth, get_strategy

log = logging.getLogger(__name__)

Backend = Literal["ray", "local"]
BACKENDS: tuple[Backend, ...] = ("ray", "local")


@dataclass(frozen=True)
class SearchResult:
    """What a finished search leaves: the run folder, its candidates and its front."""

    run_dir: Path
    candidates: list[Candidate]
    front: list[Candidate]
    budget_ms: float
    base: Metrics
    failed_trials: int


def default_run_dir(cfg: SearchConfig) -> Path:
    """``runs/<name>-<timestamp>``."""
    return Path("runs") / f"{cfg.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def run(
    config: SearchConfig | Mapping[str, Any] | str | Path,
    backend: Backend = "ray",
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
) -> SearchResult:
    """Run (or resume) a search; return its candidates and Pareto front.

    Args:
        config: A :class:`SearchConfig`, a dict of its fields, or a YAML file.
        backend: ``"ray"`` (Tune trials on a local Ray, or the cluster of ``ray.address``) or
            ``"local"`` (the same trials, serially, in this process: no Ray is imported; for
            notebooks, tests and benchmarks).
        run_dir: The run folder (default: ``config.run_dir`` or ``runs/<name>-<timestamp>``).
        resume: Continue the search in ``run_dir`` with its stored config (``config`` is then
            only checked to name the same strategy).
        progress: Show a progress bar.

    Example:
        >>> import prunepilot.search
        >>> result = prunepilot.search.run("configs/quickstart.yaml", backend="local")  # doctest: +SKIP
        >>> best = result.front[-1]                                                   # doctest: +SKIP
        >>> best.metrics.accuracy, best.within_budget, best.policy.keep_ratios        # doctest: +SKIP

    A search that fails leaves no folder in the way of the next try: with nothing evaluated,
    what it wrote is removed (:meth:`RunStore.abandon`); otherwise every record stays and
    ``run.json`` says ``failed``, ready for ``resume``.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown search backend {backend!r}; choose {one_of(BACKENDS)}")
    if isinstance(config, SearchConfig):
        cfg = config
    elif isinstance(config, Mapping):
        cfg = validate_config(dict(config))
    else:
        cfg = load_config(config)
    return run_search(
        cfg, Path(run_dir) if run_dir is not None else None, resume=resume, progress=progress, backend=backend
    )


def run_search(
    cfg: SearchConfig,
    run_dir: Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    backend: Backend = "ray",
) -> SearchResult:
    """:func:`run` for a validated config (what ``prunepilot search`` calls)."""
    run_dir = Path(run_dir or cfg.run_dir or default_run_dir(cfg))
    store = RunStore(run_dir)
    if resume:
        stored = store.read_config()
        if stored.get("strategy") != cfg.model_dump(mode="json").get("strategy"):
            log.info("resuming with the stored config of %s", run_dir)
        cfg = SearchConfig.model_validate(stored)
    else:
        if store.is_run:
            raise ConfigError(f"run folder {str(run_dir)!r} already holds a search; use --resume or another --run-dir")
        store.write_config(cfg.model_dump(mode="json"))
    try:
        return _search(cfg, store, resume, progress, backend)
    except BaseException as exc:
        try:
            store.abandon(f"{type(exc).__name__}: {exc}")
        except OSError as cleanup:  # never hide the search's own error behind the clean-up's
            log.warning("could not clean up run folder %s: %s", run_dir, cleanup)
        raise


def _search(cfg: SearchConfig, store: RunStore, resume: bool, progress: bool, backend: Backend) -> SearchResult:
    check_depth(cfg.strategy.name, cfg.evaluation.depth)  # before anything is built (configs given as objects)
    ev, setup, info = prepare(cfg, store, resume, backend)
    strategy = get_strategy(cfg.strategy.name, cfg.strategy.settings)
    ctx = DriverContext(
        space=ev.space,
        budget_ms=setup.budget_ms,
        lower_bound=cfg.evaluation.lower_bound,
        evaluations=cfg.strategy.evaluations,
        trials=cfg.strategy.trials,
        seed=cfg.seed,
        base_latency_ms=setup.base_latency_ms,
        depth=cfg.evaluation.depth,
        also=cfg.device.also,
    )
    tsetup = strategy.tune_setup(ctx)
    with progress_bar(progress, expected_candidates(cfg, strategy, tsetup)):
        if backend == "local":
            from prunepilot.search.local_backend import run_local

            run_local(cfg, store, ev, setup, strategy, tsetup, resume)
        else:
            from prunepilot.search.ray_backend import run_ray

            run_ray(cfg, store, ev, setup, tsetup, resume)
    return finish(store, cfg, ev, setup.budget_ms, info)


def _uniform_baseline(store: RunStore, ev: Evaluator, cfg: SearchConfig, budget_ms: float) -> None:
    """Evaluate a few uniform policies in the driver: the comparison curve for the front."""
    import numpy as np

    for i, r in enumerate(np.linspace(cfg.evaluation.lower_bound, 1.0, cfg.evaluation.uniform_baseline)):
        policy = ev.make_policy([float(r)] * len(ev.space.groups))
        metrics = ev.evaluate(policy)
        store.append_baseline(
            Candidate.new(
                trial="baseline",
                index=i,
                strategy="uniform",
                seed=cfg.seed,
                policy=policy,
                metrics=metrics,
                budget_ms=budget_ms,
                extra={"uniform_ratio": float(r)},
                cached=ev.last_cached,
            )
        )


def finish(store: RunStore, cfg: SearchConfig, ev: Evaluator, budget_ms: float, info: dict[str, Any]) -> SearchResult:
    """Uniform baseline, front, re-measurement of predicted front points and of the best candidate
    within the budget, budget fill, ``front.json``, run status and the best candidate's budget use."""
    from prunepilot.search.fill import fill_budget, policy_timer, uniform_at_budget
    from prunepilot.search.pareto import pareto_front
    from prunepilot.search.remeasure import budget_use, meter_for, remeasure_best, remeasure_front

    if cfg.strategy.name != "uniform" and cfg.evaluation.uniform_baseline > 0 and not store.baseline():
        _uniform_baseline(store, ev, cfg, budget_ms)
    measure = meter_for(ev, cfg.device.remeasure_with)
    uniform = None
    own = {c.metrics.protocol or "bn-recal" for c in store.ok()} <= {ev.protocol.name}  # one-shot: their own scores
    if cfg.evaluation.uniform_at_budget and cfg.strategy.name != "uniform" and own:  # a candidate the pick must beat
        uniform = uniform_at_budget(store, ev, budget_ms, policy_timer(ev, cfg.device.remeasure_with), cfg.seed)
    store.add_measurements(remeasure_front(pareto_front(store.ok()), ev, None, cfg.evaluation.remeasure_top, measure))
    store.add_measurements(remeasure_best(store.ok(), budget_ms, ev, None, measure))
    filled = fill_budget(
        store, ev, budget_ms, cfg.evaluation.fill_below, policy_timer(ev, cfg.device.remeasure_with), cfg.seed
    )
    front = pareto_front(store.ok())
    if filled is not None and filled.get("filled"):  # the widened candidate may join the front: timed already
        unmeasured = [c for c in front if c.measured is None]
        store.add_measurements(remeasure_front(unmeasured, ev, None, cfg.evaluation.remeasure_top, measure))
    store.write_front(front)
    ok, front = store.ok(), store.read_front()
    failed = len(store.failed())
    info = {k: v for k, v in info.items() if k not in ("error", "failed_at")}  # an earlier try's failure
    info = {**info, "status": "finished", "finished": time.time(), "candidates": len(ok), "failed": failed}
    info["best_within_budget"] = budget_use(ok, budget_ms)
    if filled is not None:
        info["fill"] = filled
    if uniform is not None:
        info["uniform_at_budget"] = uniform
    if info.get("devices"):
        from prunepilot.search.devices import finish_devices

        info["devices"] = finish_devices(store, ev, info["devices"])
    store.write_info(info)
    return SearchResult(store.dir, ok, front, budget_ms, Metrics.from_json(info["base"]), failed)
