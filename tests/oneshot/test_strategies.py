"""The ``autoslim`` and ``metapruning`` strategies: registry, YAML settings, whole searches in-process
(the local backend) and one on Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from oneshot_helpers import search_config

import prunepilot.search
from prunepilot.errors import ConfigError
from prunepilot.pruning import PruningPolicy
from prunepilot.search.config import load_config, validate_config
from prunepilot.search.evaluator import Evaluator, get_evaluator
from prunepilot.search.records import Candidate
from prunepilot.search.space import Grid
from prunepilot.search.strategies import DriverContext, get_strategy, strategy_class, strategy_names

REPO = Path(__file__).resolve().parents[2]
AUTOSLIM = {"train": {"steps": 4, "checkpoint_every": 2, "random_widths": 1}, "slim": {"step_fraction": 0.5}}
META = {
    "train": {"steps": 4, "hidden": 2},
    "search": {"population": 4, "parents": 2, "generations": 2, "min_budget_use": 0.7},
    "budget_scales": [1.0, 0.7],
    "report_top": 2,
}


def test_registered_as_session_strategies() -> None:
    assert {"autoslim", "metapruning"} <= set(strategy_names())
    for name in ("autoslim", "metapruning"):
        cls = strategy_class(name)
        assert cls.kind == "session" and cls.description
        driver = DriverContext(
            space=None,  # type: ignore[arg-type]  # session strategies do not look at the space here
            budget_ms=1.0,
            lower_bound=0.2,
            evaluations=4,
            trials=3,
            seed=0,
            base_latency_ms=2.0,
        )
        setup = get_strategy(name).tune_setup(driver)
        assert setup.param_space == {"trial_index": Grid([0, 1, 2])} and setup.num_samples == 1


@pytest.mark.parametrize("name", ["autoslim", "metapruning"])
def test_shipped_yaml_configs_validate(name: str) -> None:
    cfg = load_config(REPO / "configs" / f"fmnist-resnet20-{name}.yaml")
    assert cfg.strategy.name == name
    strategy = get_strategy(name, cfg.strategy.settings)
    assert strategy.settings.train.steps > 0  # type: ignore[attr-defined]


def test_bad_settings_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"strategy\.settings\.train\.stepz"):
        validate_config(search_config(tmp_path, "autoslim", {"train": {"stepz": 3}}))
    with pytest.raises(ConfigError, match=r"search\.min_budget_use"):
        validate_config(search_config(tmp_path, "metapruning", {"search": {"min_budget_use": 1.5}}))


def _run(
    tmp_path: Path, name: str, settings: dict[str, Any], run: str = "run"
) -> tuple[Evaluator, float, list[Candidate]]:
    """One trial of ``name`` as a whole search in this process (budget: half the base latency)."""
    cfg = validate_config(
        search_config(
            tmp_path, name, {**settings, "checkpoint_dir": str(tmp_path / "ckpt")}, **{"evaluation.uniform_baseline": 0}
        )
    )
    result = prunepilot.search.run(cfg, backend="local", run_dir=tmp_path / run, progress=False)
    return get_evaluator(cfg), result.budget_ms, result.candidates  # the evaluator the search used


def test_autoslim_trial_reports_its_path_and_resumes(tmp_path: Path) -> None:
    ev, budget, records = _run(tmp_path, "autoslim", AUTOSLIM)
    assert len(records) >= 3
    lats = [c.metrics.latency_ms for c in records]
    assert all(b < a for a, b in zip(lats, lats[1:], strict=False)) and lats[-1] <= budget < lats[-2]
    for i, c in enumerate(records):
        c.policy.check(ev.space)
        assert c.extra["path_step"] == i and c.extra["method"] == "autoslim"
        assert c.extra["accuracy_source"] == "evaluator"
        assert c.metrics.accuracy == ev.evaluate(c.policy).accuracy  # scored like every other strategy
        assert c.extra["resumed_from"] == 0 and c.extra["train_seconds"] > 0
    # A restarted trial finds the finished checkpoint, trains nothing and finds the same path.
    _, _, again = _run(tmp_path, "autoslim", AUTOSLIM, run="again")
    assert [c.extra["resumed_from"] for c in again] == [4.0] * len(again)
    assert [c.policy.channels for c in again] == [c.policy.channels for c in records]


def test_metapruning_trial_reports_within_each_budget(tmp_path: Path) -> None:
    ev, budget, records = _run(tmp_path, "metapruning", {**META, "score_with": "supernet"})
    assert len(records) == 4
    for c in records:
        target = c.extra["search_budget_ms"]
        assert target in (pytest.approx(budget), pytest.approx(0.7 * budget))
        assert 0.7 * target <= c.metrics.latency_ms <= target  # MACs latency: predicted == reported
        assert c.extra["accuracy_source"] == "supernet-weights" and 0 <= c.metrics.accuracy <= 1
        c.policy.check(ev.space)


@pytest.mark.slow
def test_autoslim_search_on_ray_end_to_end(tmp_path: Path) -> None:
    import ray

    from prunepilot.search.pareto import pareto_front
    from prunepilot.search.runner import run_search
    from prunepilot.search.store import RunStore

    cfg = validate_config(search_config(tmp_path, "autoslim", {**AUTOSLIM, "checkpoint_dir": str(tmp_path / "ckpt")}))
    result = run_search(cfg, tmp_path / "run", progress=False)
    assert not ray.is_initialized()
    ok = RunStore(tmp_path / "run").ok()
    assert len(ok) >= 3 and all(r.strategy == "autoslim" and r.extra["method"] == "autoslim" for r in ok)
    assert [r.extra["path_step"] for r in ok] == list(range(len(ok)))
    for rec in ok:
        assert isinstance(rec.policy, PruningPolicy)
    assert any(r.within_budget for r in ok)
    assert result.front == pareto_front(ok)
