"""The driver's steps both backends share: set-up before any trial, and recording what trials report.

* :func:`prepare`: the analytic budget floor, the base model's metrics, the latency fit, the
  budget check (refusing an unreachable budget) and, on measured devices, the in-loop latency
  predictor and the budget margin strategies keep (:mod:`prunepilot.search.inloop`), and the
  other devices' base latency, budget (and the one proposals aim at there) and in-loop predictors
  (:mod:`prunepilot.search.devices`), written to ``run.json``;
* :class:`Recorder`: every reported candidate into the run folder (:class:`RunStore`), every
  failed trial as a record, and the progress bar: the Ray backend's Tune callback and the local
  backend's loop both call it, so a run folder looks the same whichever ran it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from prunepilot.errors import ConfigError
from prunepilot.hw_models.base import LatencyResult
from prunepilot.pruning import PruningPolicy
from prunepilot.search.config import SearchConfig
from prunepilot.search.evaluator import Evaluator, LatencyFit, get_evaluator
from prunepilot.search.records import VERSIONS, Candidate, FailedTrial
from prunepilot.search.store import RunStore
from prunepilot.search.strategies import Strategy, TuneSetup
from prunepilot.search.trainable import SearchSetup, anchor_ms

console = Console()

#: Safety factor of the analytic floor (:func:`check_budget_floor`): a pruned model's latency is
#: taken to shrink at most twice as fast as its MACs (in practice it shrinks slower: fixed
#: per-layer costs and memory traffic stay), so no reachable budget is refused on MACs alone.
FLOOR_MARGIN = 0.5


def _up(x: float, digits: int = 3) -> float:
    """``x`` rounded up at ``digits`` decimals, so a shown minimum is itself accepted."""
    return math.ceil(x * 10**digits) / 10**digits


def resolve_budget(cfg: SearchConfig, base_ms: float, min_ms: float) -> float:
    """The budget in ms; refuses one below ``min_ms`` (every group at the lower bound)."""
    if cfg.budget.ms is not None:
        budget, given = cfg.budget.ms, f"budget.ms {cfg.budget.ms:g}"
    else:
        budget = float(cfg.budget.fraction or 1.0) * base_ms
        given = f"budget.fraction {cfg.budget.fraction:g} ({budget:.3f} ms of the base model's {base_ms:.3f} ms)"
    if budget < min_ms:
        raise ConfigError(
            f"field 'budget': {given} is below the reachable minimum of {min_ms:.3f} ms (every group at "
            f"evaluation.lower_bound {cfg.evaluation.lower_bound}"
            f"{', every removable block removed' if cfg.evaluation.depth else ''}); accepted: budget.ms >= "
            f"{_up(min_ms)} (the "
            f"base model takes {base_ms:.3f} ms) or budget.fraction from {_up(min_ms / base_ms, 4)} to 1; raise "
            "the budget or lower evaluation.lower_bound"
        )
    return budget


def fastest_policy(ev: Evaluator) -> PruningPolicy:
    """The fastest policy a strategy can propose: every group at ``evaluation.lower_bound`` and,
    with ``evaluation.depth``, every removable block removed too."""
    lowest = PruningPolicy.uniform(ev.space, ev.cfg.evaluation.lower_bound)
    return lowest.with_removed_blocks(ev.space, ev.space.block_names) if ev.cfg.evaluation.depth else lowest


def predicted_range_ms(ev: Evaluator) -> tuple[float, float] | None:
    """``(base, lowest)`` latency from a predicted latency model without pruning anything.

    Exact for predicted models (their figure depends on the widths only); None for measured
    ones, which must time the models.
    """
    if ev.latency.requires_model:
        return None
    lowest = fastest_policy(ev)

    def ms(widths: Mapping[str, int], removed: Sequence[str] = ()) -> float:
        return float(ev.latency.predict_ms(ev.space, widths, ev.batch_size, removed).ms)

    return ms(ev.space.full_widths()), ms(lowest.channels, lowest.removed_blocks)


def lowest_macs_share(ev: Evaluator) -> float:
    """MACs of the fastest policy (:func:`fastest_policy`) over the base model's (analytic, no pruning)."""
    lowest = fastest_policy(ev)
    return ev.space.macs(lowest.channels, lowest.removed_blocks) / max(1, ev.space.base_macs)


def reachable_minimum(ev: Evaluator, width_lowest: LatencyResult) -> LatencyResult:
    """The measured latency of :func:`fastest_policy`: ``width_lowest`` (the all-lower-bound
    model, which the latency fit measured) unless ``evaluation.depth`` removes blocks too, when
    that model is pruned and measured (once)."""
    if not ev.cfg.evaluation.depth:
        return width_lowest
    fastest = fastest_policy(ev)
    return ev.measure_latency(None, fastest.channels, fastest.removed_blocks)


def check_budget_floor(cfg: SearchConfig, ev: Evaluator) -> None:
    """Refuse a budget below anything reachable before measuring (or pruning) anything.

    A predicted latency model gives the exact range from the widths alone. For a measured one a
    ``budget.fraction`` below :data:`FLOOR_MARGIN` times the all-lower-bound model's share of
    the base MACs is refused; the exact check follows as soon as the two ends are measured
    (:meth:`Evaluator.calibrate_fit`'s ``on_range``).
    """
    predicted = predicted_range_ms(ev)
    if predicted is not None:
        resolve_budget(cfg, *predicted)
        return
    fraction = cfg.budget.fraction
    floor = FLOOR_MARGIN * lowest_macs_share(ev)
    if fraction is not None and fraction < floor:
        lower = cfg.evaluation.lower_bound
        raise ConfigError(
            f"field 'budget.fraction': {fraction:g} is below what any policy can reach: with every group at "
            f"evaluation.lower_bound {lower} the model keeps {lowest_macs_share(ev):.2%} of the base MACs, and "
            f"latency does not shrink below {FLOOR_MARGIN:g} x that share; accepted: budget.fraction from about "
            f"{_up(floor, 4)} to 1 (the exact minimum is measured next); raise the budget or lower "
            "evaluation.lower_bound"
        )


def prepare(
    cfg: SearchConfig, store: RunStore, resume: bool, backend: str
) -> tuple[Evaluator, SearchSetup, dict[str, Any]]:
    """Driver-side set-up before any trial: budget floor, base metrics, latency fit, budget check,
    in-loop predictor and the budget strategies aim at (the budget less its margin)."""
    from prunepilot.search.devices import device_budgets, prepare_devices
    from prunepilot.search.inloop import prepare_in_loop, restore_in_loop

    info = store.read_info() if resume else {}
    ev = get_evaluator(cfg)
    if resume and "fit" in info:
        ev.fit = LatencyFit(**info["fit"]) if info["fit"] else None
        base = info["base"]
        budget_ms = float(info["budget_ms"])
        trial_budget_ms = restore_in_loop(ev, info) or budget_ms
        ev.devices.restore_from_run(info.get("devices") or {})
    else:
        check_budget_floor(cfg, ev)
        console.print(f"[bold]prunepilot search[/] {cfg.name}: measuring the base model ...")
        reached: list[LatencyResult] = []  # the reachable minimum, measured once in the range check

        def check_range(base: LatencyResult, lowest: LatencyResult) -> None:
            reached.append(reachable_minimum(ev, lowest))
            resolve_budget(cfg, base.ms, reached[0].ms)

        measured_base, _width_low = ev.calibrate_fit(on_range=check_range)
        low = reached[0]
        if cfg.device.also:
            console.print(
                f"latency on the other devices {', '.join(cfg.device.also)}: base model, in-loop predictors ..."
            )
        devices = prepare_devices(cfg, ev)  # before the base is scored: its metrics carry every device
        # the base is measured once per search: the budget's base is the fit's full-width point
        base = ev.base_metrics(measured_base if ev.latency.requires_model else None).to_dict()
        budget_ms = resolve_budget(cfg, base["latency_ms"], low.ms)
        if ev.latency.requires_model and cfg.evaluation.in_loop_latency in ("predicted", "anchored"):
            console.print("calibrating the in-loop latency predictor on the device ...")
        in_loop = prepare_in_loop(cfg, ev, budget_ms)
        trial_budget_ms = float(in_loop["trial_budget_ms"])
        others = device_budgets(devices, budget_ms / base["latency_ms"], ev)
        ev.devices.set_budgets(others)  # what proposals aim at on each (shipped to trials with the predictors)
        for name in (n for n, rec in others.items() if not rec["budget_reachable"]):
            console.print(
                f"[yellow]note[/]: on {name} the budget {others[name]['budget_ms']:.4g} is below the reachable minimum "
                f"{others[name]['reachable_min_ms']:.4g}; `prunepilot pareto RUN --device {name} --budget MS` picks "
                "within another"
            )
        if ev.protocol_fallback_reason:
            console.print(f"[yellow]note[/]: {ev.protocol_fallback_reason}")
        info = {
            "name": cfg.name,
            "status": "running",
            "strategy": cfg.strategy.name,
            "backend": backend,
            "budget_ms": budget_ms,
            "base": base,
            "reachable_min_ms": low.ms,
            "reachable_min_cv": low.cv,
            "fit": asdict(ev.fit) if ev.fit else None,
            "trial_budget_ms": trial_budget_ms,
            "in_loop_latency": in_loop,
            **({"devices": others} if others else {}),
            "scoring": {
                "protocol": ev.protocol.name,
                "path": ev.scoring_path,
                "fallback_reason": ev.scoring_fallback_reason,
                "protocol_fallback_reason": ev.protocol_fallback_reason,
            },  # fmt: skip
            "groups": len(ev.space.groups),
            "base_checkpoint": ev.base_checkpoint,
            "signature": ev.space.signature,
            "data": {"name": ev.data.name, "val": ev.data.num_val, "scored_on": "held-out split of train"},
            "versions": VERSIONS,
            "started": time.time(),
        }
        store.write_info(info)
    setup = SearchSetup(
        config=cfg.model_dump(mode="json"),
        budget_ms=budget_ms,
        fit=asdict(ev.fit) if ev.fit else None,
        run_id=str(store.dir.resolve()),
        base_latency_ms=float(base["latency_ms"]),
        predictor=ev.in_loop.to_json() if ev.in_loop is not None else None,
        trial_budget_ms=trial_budget_ms,
        devices=ev.devices.to_json() or None,
    )
    ev.anchor_ms = anchor_ms(cfg, ev, setup.base_latency_ms)
    ev.base_latency_ms = setup.base_latency_ms if ev.latency.requires_model else None
    return ev, setup, info


def expected_candidates(cfg: SearchConfig, strategy: Strategy, tsetup: TuneSetup) -> int:
    """How many candidates the trials will report (the progress bar's total)."""
    from prunepilot.search.space import grid_size

    expected = tsetup.num_samples * grid_size(tsetup.param_space)
    return expected * cfg.strategy.evaluations if strategy.kind == "session" else expected


_ACTIVE: dict[str, Any] = {}  # the driver's progress bar (never pickled with a Tune callback)


@contextmanager
def progress_bar(show: bool, total: int) -> Iterator[None]:
    """Show a progress bar for ``total`` candidates (nothing when ``show`` is False)."""
    if not show:
        yield
        return
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    with bar:
        _ACTIVE.update(progress=bar, task=bar.add_task("starting trials", total=total))
        try:
            yield
        finally:
            _ACTIVE.clear()


class Recorder:
    """Write what trials report into the run folder: the one reporting path of both backends."""

    def __init__(self, store: RunStore, budget_ms: float) -> None:
        self.store = store
        self.budget_ms = budget_ms
        self.best = float("nan")

    def candidate(self, cand: Candidate, running: int | None = None) -> bool:
        """Append one reported candidate; False when its id was stored already (a resumed trial)."""
        if not self.store.append(cand):
            return False
        if cand.metrics.latency_ms <= self.budget_ms and not (cand.metrics.accuracy <= self.best):
            self.best = cand.metrics.accuracy
        bar, task = _ACTIVE.get("progress"), _ACTIVE.get("task")
        if isinstance(bar, Progress) and task is not None:
            shown = f"trials running {running} | " if running is not None else ""
            bar.update(
                TaskID(task),
                advance=1,
                description=f"{shown}best acc within {self.budget_ms:.2f} ms: {self.best:.4f}",
            )
        return True

    def failure(self, trial_id: str, params: Mapping[str, Any], error: str) -> FailedTrial:
        """Record a trial that failed (after its retries)."""
        n = sum(1 for r in self.store.failed() if r.trial == trial_id)
        rec = FailedTrial(
            id=f"{trial_id}-failed-{n}",
            trial=trial_id,
            config={k: v for k, v in params.items() if not str(k).startswith("_")},
            error=error[-2000:],
            wall_time=time.time(),
        )
        self.store.append(rec)
        return rec
