"""End-to-end searches on a local Ray with 2 CPUs, one per candidate strategy, plus faults."""

from __future__ import annotations

import pytest
import ray
from search_helpers import tiny_config

from prunepilot.pruning import PruningPolicy
from prunepilot.search.config import validate_config
from prunepilot.search.pareto import pareto_front
from prunepilot.search.records import FailedTrial
from prunepilot.search.runner import run_search
from prunepilot.search.store import RunStore

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("strategy", ["random", "uniform", "optuna-tpe", "optuna-nsga2"])
def test_candidate_strategy_end_to_end(tmp_path, strategy: str) -> None:
    cfg = validate_config(tiny_config(tmp_path, **{"strategy.name": strategy}))
    result = run_search(cfg, tmp_path / "run", progress=False)
    assert not ray.is_initialized()  # the runner shuts down the Ray it started
    store = RunStore(tmp_path / "run")
    ok = store.ok()
    assert len(ok) == 6 and len({r.id for r in ok}) == 6
    for rec in ok:
        assert rec.strategy == strategy
        assert rec.metrics.latency_kind == "predicted" and rec.metrics.latency_model == "macs"
        assert 0.0 <= rec.metrics.accuracy <= 1.0
        assert rec.versions["torch_pruning"]
        assert isinstance(rec.policy, PruningPolicy)  # every record carries a usable policy
    if strategy in ("random", "optuna-tpe"):  # projected into the budget
        assert all(r.metrics.latency_ms <= result.budget_ms * 1.0001 for r in ok)
    if strategy == "uniform":
        ratios = sorted(r.extra["uniform_ratio"] for r in ok)
        assert ratios[0] == pytest.approx(0.25) and ratios[-1] == pytest.approx(1.0)
        assert store.baseline() == []  # a uniform search is its own baseline
    else:  # the driver evaluates the uniform curve every front is drawn against
        base_ratios = [r.extra["uniform_ratio"] for r in store.baseline()]
        assert base_ratios == pytest.approx([0.25, 0.4375, 0.625, 0.8125, 1.0])
    assert result.front == pareto_front(ok)
    info = store.read_info()
    assert info["status"] == "finished" and info["base"]["accuracy"] > 0.5 and info["backend"] == "ray"
    assert (tmp_path / "run" / "tune").is_dir() and (tmp_path / "run" / "front.json").is_file()


def test_failing_trial_is_recorded_and_search_completes(tmp_path) -> None:
    # tiny-fragile fails when its first group has 5 channels: uniform 0.625 of 8 channels.
    cfg = validate_config(
        tiny_config(
            tmp_path,
            **{
                "model.spec": "testing:tiny-fragile?fail_width=5",
                "strategy.name": "uniform",
                "strategy.settings": {"ratios": [0.25, 0.625, 1.0]},
            },
        )
    )
    result = run_search(cfg, tmp_path / "run", progress=False)
    records = RunStore(tmp_path / "run").read()
    failed = [r for r in records if isinstance(r, FailedTrial)]
    assert len(failed) == 1 and "fails at" in failed[0].error
    assert failed[0].config["uniform_ratio"] == pytest.approx(0.625)
    assert sorted(r.extra["uniform_ratio"] for r in result.candidates) == [0.25, 1.0]
    assert result.failed_trials == 1


def test_run_folder_is_not_overwritten(tmp_path) -> None:
    from prunepilot.errors import ConfigError

    cfg = validate_config(tiny_config(tmp_path, **{"strategy.evaluations": 2}))
    run_search(cfg, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "candidates.jsonl").read_text()
    with pytest.raises(ConfigError, match="--resume"):
        run_search(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "candidates.jsonl").read_text() == before


@pytest.mark.parametrize("strategy", ["amc-ddpg", "ppo", "sac", "td3"])
def test_agent_strategy_end_to_end(tmp_path, strategy: str) -> None:
    settings = {"budgets": [0.5, 0.8]} if strategy == "amc-ddpg" else {}
    if strategy != "ppo":
        settings["warmup_episodes"] = 2
    cfg = validate_config(
        tiny_config(
            tmp_path,
            **{
                "strategy.name": strategy,
                "strategy.evaluations": 4,
                "strategy.trials": 1,
                "strategy.settings": settings,
            },
        )
    )
    result = run_search(cfg, tmp_path / "run", progress=False)
    ok = RunStore(tmp_path / "run").ok()
    trials = {r.trial for r in ok}
    assert len(trials) == (2 if strategy == "amc-ddpg" else 1)
    assert len(ok) == 4 * len(trials)  # every episode is reported
    for rec in ok:
        assert rec.strategy == strategy and rec.extra["episode"] in range(4)
        # AMC's resource-constrained episodes: within the trial's budget by the same predictor
        assert rec.metrics.latency_ms <= rec.extra["trial_budget_ms"] * 1.0001
    if strategy == "amc-ddpg":
        budgets = sorted({r.extra["trial_budget_ms"] for r in ok})
        assert budgets[0] == pytest.approx(0.5 * result.base.latency_ms, rel=1e-6)
        assert budgets[1] == pytest.approx(0.8 * result.base.latency_ms, rel=1e-6)


def test_agent_strategy_bad_settings(tmp_path) -> None:
    from prunepilot.errors import ConfigError

    with pytest.raises(ConfigError, match="reward"):
        validate_config(tiny_config(tmp_path, **{"strategy.name": "amc-ddpg", "strategy.settings": {"reward": "x"}}))
    with pytest.raises(ConfigError, match="budgets"):
        validate_config(tiny_config(tmp_path, **{"strategy.name": "amc-ddpg", "strategy.settings": {"budgets": [2]}}))
