"""``prunepilot search``: the driver that runs a strategy as Ray Tune trials.

    config -> driver evaluator (base model, budget, latency fit; refuse unreachable budgets)
           -> Ray (local, or a cluster by address) -> Tune trials (prunepilot.search.trainable)
           -> every reported candidate appended to the run folder (RunStore) by a callback
           -> Pareto front (+ re-measurement of predicted front points) -> front.json

``--resume RUN`` restores Tune's experiment and seeds every trial's evaluation cache with
the stored candidates, so nothing stored is evaluated again.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from prunepilot.errors import ConfigError
from prunepilot.search.config import SearchConfig
from prunepilot.search.evaluator import Evaluator, get_evaluator
from prunepilot.search.store import RunStore
from prunepilot.search.strategies import DriverContext, TuneSetup, get_strategy
from prunepilot.search.trainable import VERSIONS, SearchSetup, search_trial

console = Console()
# Tune's new console output prints an experiment box and hints on every run; our progress bar
# and tables replace it (set RAY_AIR_NEW_OUTPUT=1 to get Tune's own output back).
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchResult:
    """What a finished search leaves: the run folder, its candidates and its front."""

    run_dir: Path
    candidates: list[dict[str, Any]]
    front: list[dict[str, Any]]
    budget_ms: float
    base: dict[str, Any]
    failed_trials: int


def default_run_dir(cfg: SearchConfig) -> Path:
    """``runs/<name>-<timestamp>``."""
    return Path("runs") / f"{cfg.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


#: Safety factor of the analytic floor (:func:`check_budget_floor`): a pruned model's latency is
#: taken to shrink at most twice as fast as its MACs (in practice it shrinks slower: fixed
#: per-layer costs and memory traffic stay), so no reachable budget is refused on MACs alone.
FLOOR_MARGIN = 0.5


def _up(x: float, digits: int = 3) -> float:
    """``x`` rounded up at ``digits`` decimals, so a shown minimum is itself accepted."""
    return math.ceil(x * 10**digits) / 10**digits


def _resolve_budget(cfg: SearchConfig, base_ms: float, min_ms: float) -> float:
    """The budget in ms; refuses one below ``min_ms`` (every group at the lower bound)."""
    if cfg.budget.ms is not None:
        budget, given = cfg.budget.ms, f"budget.ms {cfg.budget.ms:g}"
    else:
        budget = float(cfg.budget.fraction or 1.0) * base_ms
        given = f"budget.fraction {cfg.budget.fraction:g} ({budget:.3f} ms of the base model's {base_ms:.3f} ms)"
    if budget < min_ms:
        raise ConfigError(
            f"field 'budget': {given} is below the reachable minimum of {min_ms:.3f} ms (every group at "
            f"evaluation.lower_bound {cfg.evaluation.lower_bound}); accepted: budget.ms >= {_up(min_ms)} (the "
            f"base model takes {base_ms:.3f} ms) or budget.fraction from {_up(min_ms / base_ms, 4)} to 1; raise "
            "the budget or lower evaluation.lower_bound"
        )
    return budget


def check_budget_floor(cfg: SearchConfig, ev: Evaluator) -> None:
    """Refuse a budget below anything reachable before measuring (or pruning) anything.

    A predicted latency model gives the exact range from the widths alone. For a measured one a
    ``budget.fraction`` below :data:`FLOOR_MARGIN` times the all-lower-bound model's share of
    the base MACs is refused; the exact check follows as soon as the two ends are measured
    (:meth:`Evaluator.calibrate_fit`'s ``on_range``).
    """
    predicted = ev.predicted_range_ms()
    if predicted is not None:
        _resolve_budget(cfg, *predicted)
        return
    fraction = cfg.budget.fraction
    floor = FLOOR_MARGIN * ev.lowest_macs_share()
    if fraction is not None and fraction < floor:
        lower = cfg.evaluation.lower_bound
        raise ConfigError(
            f"field 'budget.fraction': {fraction:g} is below what any policy can reach: with every group at "
            f"evaluation.lower_bound {lower} the model keeps {ev.lowest_macs_share():.2%} of the base MACs, and "
            f"latency does not shrink below {FLOOR_MARGIN:g} x that share; accepted: budget.fraction from about "
            f"{_up(floor, 4)} to 1 (the exact minimum is measured next); raise the budget or lower "
            "evaluation.lower_bound"
        )


def prepare(cfg: SearchConfig, store: RunStore, resume: bool) -> tuple[Evaluator, SearchSetup, dict[str, Any]]:
    """Driver-side set-up before Ray starts: budget floor, base metrics, latency fit, budget check."""
    info = store.read_info() if resume else {}
    ev = get_evaluator(cfg)
    if resume and "fit" in info:
        from prunepilot.search.evaluator import LatencyFit

        ev.fit = LatencyFit(**info["fit"])
        base = info["base"]
        budget_ms = float(info["budget_ms"])
    else:
        check_budget_floor(cfg, ev)
        console.print(f"[bold]prunepilot search[/] {cfg.name}: measuring the base model ...")
        full, low = ev.calibrate_fit(on_range=lambda base, lowest: _resolve_budget(cfg, base.ms, lowest.ms))
        base = ev.base_metrics().to_dict()
        budget_ms = _resolve_budget(cfg, base["latency_ms"], low.ms)
        info = {
            "name": cfg.name,
            "status": "running",
            "strategy": cfg.strategy.name,
            "budget_ms": budget_ms,
            "base": base,
            "reachable_min_ms": low.ms,
            "fit": asdict(ev.fit) if ev.fit else None,
            "groups": len(ev.space.groups),
            "base_checkpoint": ev.base_checkpoint,
            "signature": ev.space.signature,
            "data": {"name": ev.data.name, "val": ev.data.num_val, "scored_on": "held-out split of train"},
            "versions": VERSIONS,
            "started": time.time(),
        }
        store.write_info(info)
    fit = ev.fit
    setup = SearchSetup(
        config=cfg.model_dump(mode="json"),
        budget_ms=budget_ms,
        fit=asdict(fit) if fit else None,
        run_id=str(store.dir.resolve()),
        base_latency_ms=float(base["latency_ms"]),
    )
    return ev, setup, info


def _init_ray(cfg: SearchConfig) -> bool:
    """Connect to the configured cluster or start a local Ray; returns True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
    }
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, **kwargs)
    else:
        ray.init(num_cpus=cfg.ray.num_cpus, **kwargs)
    return True


_ACTIVE: dict[str, Any] = {}  # the driver's progress bar (never pickled with the callback)


class StoreCallback(Callback):  # type: ignore[misc]
    """Driver-side Tune callback: append each reported candidate; record failed trials.

    Holds only the run folder path and budget, so Tune can pickle it with the experiment
    state and a resumed search writes to the same folder.
    """

    def __init__(self, run_dir: str, budget_ms: float) -> None:
        self.run_dir = run_dir
        self.budget_ms = budget_ms
        self.best = float("nan")
        self._store: RunStore | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"run_dir": self.run_dir, "budget_ms": self.budget_ms, "best": self.best}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._store = None

    @property
    def store(self) -> RunStore:
        if self._store is None:
            self._store = RunStore(self.run_dir)
        return self._store

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        import json

        text = result.get("candidate")
        if not text:
            return
        rec = json.loads(text)
        if not self.store.append(rec):
            return
        m = rec["metrics"]
        if m["latency_ms"] <= self.budget_ms and not (m["accuracy"] <= self.best):
            self.best = m["accuracy"]
        bar, task = _ACTIVE.get("progress"), _ACTIVE.get("task")
        if bar is not None:
            running = sum(1 for t in trials if t.status == "RUNNING")
            bar.update(
                task,
                advance=1,
                description=f"trials running {running} | best acc within {self.budget_ms:.2f} ms: {self.best:.4f}",
            )

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        n = sum(1 for r in self.store.read() if r.get("trial") == trial.trial_id and r.get("status") == "failed")
        error = _trial_error(trial)
        self.store.append(
            {
                "id": f"{trial.trial_id}-failed-{n}",
                "status": "failed",
                "trial": trial.trial_id,
                "config": {k: v for k, v in trial.config.items() if not str(k).startswith("_")},
                "error": error,
                "wall_time": time.time(),
            }
        )


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


def run_search(
    cfg: SearchConfig, run_dir: Path | None = None, *, resume: bool = False, progress: bool = True
) -> SearchResult:
    """Run (or resume) a search and return its candidates and Pareto front.

    A search that fails leaves no folder in the way of the next try: with nothing evaluated,
    what it wrote is removed (:meth:`RunStore.abandon`); otherwise every record stays and
    ``run.json`` says ``failed``, ready for ``--resume``.
    """
    run_dir = Path(run_dir or cfg.run_dir or default_run_dir(cfg))
    store = RunStore(run_dir)
    if resume:
        stored = store.read_config()
        if stored.get("strategy") != cfg.model_dump(mode="json").get("strategy"):
            log.info("resuming with the stored config of %s", run_dir)
        cfg = SearchConfig.model_validate(stored)
    else:
        if (store.dir / "config.yaml").exists():
            raise ConfigError(f"run folder {str(run_dir)!r} already holds a search; use --resume or another --run-dir")
        store.write_config(cfg.model_dump(mode="json"))
    try:
        return _search(cfg, store, resume, progress)
    except BaseException as exc:
        try:
            store.abandon(f"{type(exc).__name__}: {exc}")
        except OSError as cleanup:  # never hide the search's own error behind the clean-up's
            log.warning("could not clean up run folder %s: %s", run_dir, cleanup)
        raise


def _search(cfg: SearchConfig, store: RunStore, resume: bool, progress: bool) -> SearchResult:
    from ray import tune

    ev, setup, info = prepare(cfg, store, resume)
    strategy = get_strategy(cfg.strategy.name, cfg.strategy.settings)
    ctx = DriverContext(
        space=ev.space,
        budget_ms=setup.budget_ms,
        lower_bound=cfg.evaluation.lower_bound,
        evaluations=cfg.strategy.evaluations,
        trials=cfg.strategy.trials,
        seed=cfg.seed,
        base_latency_ms=float(info["base"]["latency_ms"]),
    )
    tsetup: TuneSetup = strategy.tune_setup(ctx)
    started = _init_ray(cfg)
    try:
        prior = store.ok() if resume else []
        trainable = tune.with_resources(
            tune.with_parameters(search_trial, setup=setup.to_json(), base_state=ev.base_state(), prior=prior),
            {"cpu": cfg.ray.cpus_per_trial},
        )
        expected = tsetup.num_samples * _grid_size(tsetup.param_space)
        if strategy.kind == "session":
            expected *= cfg.strategy.evaluations
        with _progress(progress) as bar:
            task = bar.add_task("starting trials", total=expected) if bar else None
            _ACTIVE.update(progress=bar, task=task)
            callbacks: list[Callback] = [StoreCallback(str(store.dir.resolve()), setup.budget_ms)]
            if resume and tune.Tuner.can_restore(str(store.tune_dir.resolve())):
                tuner = tune.Tuner.restore(
                    str(store.tune_dir.resolve()),
                    trainable=trainable,
                    resume_unfinished=True,
                    resume_errored=False,
                    restart_errored=False,
                )
            else:
                tuner = tune.Tuner(
                    trainable,
                    param_space=tsetup.param_space,
                    tune_config=tune.TuneConfig(
                        num_samples=tsetup.num_samples,
                        search_alg=tsetup.search_alg,
                        max_concurrent_trials=cfg.ray.max_concurrent,
                        reuse_actors=cfg.ray.reuse_actors,
                    ),
                    run_config=tune.RunConfig(
                        name="tune",
                        storage_path=str(store.dir.resolve()),
                        callbacks=callbacks,
                        failure_config=tune.FailureConfig(max_failures=cfg.ray.max_failures),
                        verbose=0,
                    ),
                )
            tuner.fit()
    finally:
        _ACTIVE.clear()
        if started:
            import ray

            ray.shutdown()
    return finish(store, cfg, ev, setup.budget_ms, info)


def _grid_size(space: dict[str, Any]) -> int:
    n = 1
    for v in space.values():
        if isinstance(v, dict) and "grid_search" in v:
            n *= len(v["grid_search"])
    return n


class _NoProgress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(show: bool) -> Any:
    if not show:
        return _NoProgress()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _uniform_baseline(store: RunStore, ev: Evaluator, cfg: SearchConfig, budget_ms: float) -> None:
    """Evaluate a few uniform policies in the driver: the comparison curve for the front."""
    import numpy as np

    from prunepilot.search.trainable import candidate_record

    for i, r in enumerate(np.linspace(cfg.evaluation.lower_bound, 1.0, cfg.evaluation.uniform_baseline)):
        policy = ev.make_policy([float(r)] * len(ev.space.groups))
        rec = candidate_record(
            trial_id="baseline",
            index=i,
            strategy="uniform",
            seed=cfg.seed,
            policy=policy,
            metrics=ev.evaluate(policy),
            budget_ms=budget_ms,
            extra={"uniform_ratio": float(r)},
            cached=ev.last_cached,
        )
        store.append_baseline(rec)


def finish(store: RunStore, cfg: SearchConfig, ev: Evaluator, budget_ms: float, info: dict[str, Any]) -> SearchResult:
    """Front, re-measurement of predicted front points, ``front.json``, run status."""
    import json

    from prunepilot.search.pareto import pareto_front
    from prunepilot.search.remeasure import remeasure_front

    records = store.read()
    ok = [r for r in records if r.get("status") == "ok"]
    if cfg.strategy.name != "uniform" and cfg.evaluation.uniform_baseline > 0 and not store.baseline():
        _uniform_baseline(store, ev, cfg, budget_ms)
    front = pareto_front(ok)
    front = remeasure_front(front, ev, cfg.evaluation.remeasure_top)
    (store.dir / "front.json").write_text(json.dumps(front, indent=2, default=str) + "\n")
    failed = sum(1 for r in records if r.get("status") == "failed")
    info = {k: v for k, v in info.items() if k not in ("error", "failed_at")}  # an earlier try's failure
    info = {**info, "status": "finished", "finished": time.time(), "candidates": len(ok), "failed": failed}
    store.write_info(info)
    return SearchResult(store.dir, ok, front, budget_ms, info["base"], failed)
