"""The ``autoslim`` and ``metapruning`` strategies: registry, YAML settings, whole trials in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from oneshot_helpers import search_config

from prunepilot.errors import ConfigError
from prunepilot.pruning import PruningPolicy
from prunepilot.search.config import load_config, validate_config
from prunepilot.search.evaluator import Evaluator
from prunepilot.search.strategies import DriverContext, TrialContext, get_strategy, strategy_class, strategy_names

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
        assert setup.param_space == {"trial_index": {"grid_search": [0, 1, 2]}} and setup.num_samples == 1


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


def _run(tmp_path: Path, name: str, settings: dict[str, Any]) -> tuple[Evaluator, float, list[tuple[Any, ...]]]:
    cfg = validate_config(search_config(tmp_path, name, {**settings, "checkpoint_dir": str(tmp_path / "ckpt")}))
    ev = Evaluator(cfg)
    budget = 0.5 * ev.predict_latency_ms(ev.space.full_widths())
    records: list[tuple[Any, ...]] = []
    ctx = TrialContext(
        evaluator=ev,
        budget_ms=budget,
        lower_bound=cfg.evaluation.lower_bound,
        evaluations=4,
        seed=0,
        trial_id="t0",
        report=lambda p, m, e: records.append((p, m, dict(e))),
    )
    get_strategy(name, cfg.strategy.settings).run_trial(ctx, {"trial_index": 0})
    return ev, budget, records


def test_autoslim_trial_reports_its_path_and_resumes(tmp_path: Path) -> None:
    ev, budget, records = _run(tmp_path, "autoslim", AUTOSLIM)
    assert len(records) >= 3
    lats = [m.latency_ms for _, m, _ in records]
    assert all(b < a for a, b in zip(lats, lats[1:], strict=False)) and lats[-1] <= budget < lats[-2]
    for i, (policy, metrics, extra) in enumerate(records):
        assert isinstance(policy, PruningPolicy)
        policy.check(ev.space)
        assert extra["path_step"] == i and extra["method"] == "autoslim" and extra["accuracy_source"] == "evaluator"
        assert metrics.accuracy == ev.evaluate(policy).accuracy  # scored like every other strategy
        assert extra["resumed_from"] == 0 and extra["train_seconds"] > 0
    # A restarted trial finds the finished checkpoint, trains nothing and finds the same path.
    _, _, again = _run(tmp_path, "autoslim", AUTOSLIM)
    assert [e["resumed_from"] for _, _, e in again] == [4.0] * len(again)
    assert [p.channels for p, _, _ in again] == [p.channels for p, _, _ in records]


def test_metapruning_trial_reports_within_each_budget(tmp_path: Path) -> None:
    ev, budget, records = _run(tmp_path, "metapruning", {**META, "score_with": "supernet"})
    assert len(records) == 4
    for policy, metrics, extra in records:
        target = extra["search_budget_ms"]
        assert target in (pytest.approx(budget), pytest.approx(0.7 * budget))
        assert 0.7 * target <= metrics.latency_ms <= target  # MACs latency: predicted == reported
        assert extra["accuracy_source"] == "supernet-weights" and 0 <= metrics.accuracy <= 1
        policy.check(ev.space)


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
    assert len(ok) >= 3 and all(r["strategy"] == "autoslim" and r["method"] == "autoslim" for r in ok)
    assert [r["path_step"] for r in ok] == list(range(len(ok)))
    for rec in ok:
        PruningPolicy.model_validate(rec["policy"])
    assert any(r["metrics"]["within_budget"] for r in ok)
    assert result.front == pareto_front(ok)
