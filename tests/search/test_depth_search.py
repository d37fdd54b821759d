"""Depth search (``evaluation.depth``): the ratio strategies also propose which residual blocks to
remove; projection, budget checks and the run folder carry the removed blocks; refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from search_helpers import tiny_config

import prunepilot.search
from prunepilot.errors import ConfigError
from prunepilot.hw_models.registry import get_latency_model
from prunepilot.models import build_model
from prunepilot.models.checkpoint import save_checkpoint
from prunepilot.pruning import POLICY_FORMAT, POLICY_FORMAT_V2, PruningPolicy
from prunepilot.search import space as tune_space
from prunepilot.search.config import SearchConfig, validate_config
from prunepilot.search.evaluator import Evaluator, LatencyFit
from prunepilot.search.inloop import InLoopPredictor, prepare_in_loop
from prunepilot.search.local_backend import _optuna_trials
from prunepilot.search.store import RunStore
from prunepilot.search.strategies import DriverContext, depth_strategies, get_strategy

LOWER = 0.25


@pytest.fixture(scope="module")
def resnet20_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained resnet20 weights for digits (1 channel, 10 classes): no base training in these tests."""
    torch.manual_seed(0)
    return save_checkpoint(
        build_model("resnet20", num_classes=10, in_channels=1), tmp_path_factory.mktemp("r20") / "r20.pt"
    )


def _config(tmp_path: Path, checkpoint: Path, **changes: Any) -> dict[str, Any]:
    return tiny_config(
        tmp_path,
        **{
            "model.spec": "resnet20",
            "model.checkpoint": str(checkpoint),
            "evaluation.val_batches": 2,
            "evaluation.uniform_baseline": 2,
            "budget.fraction": 0.5,
            **changes,
        },
    )


def _evaluator(tmp_path: Path, checkpoint: Path, **changes: Any) -> Evaluator:
    return Evaluator(SearchConfig.model_validate(_config(tmp_path, checkpoint, **changes)))


def _driver(ev: Evaluator, depth: bool, evaluations: int = 4) -> DriverContext:
    return DriverContext(ev.space, 1.0, LOWER, evaluations, 1, 0, 2.0, depth=depth)


def test_param_space_has_one_choice_per_block_only_with_depth(tmp_path: Path, resnet20_checkpoint: Path) -> None:
    ev = _evaluator(tmp_path, resnet20_checkpoint)
    space = ev.space
    assert len(space.blocks) == 7
    width_only = tune_space.ratio_param_space(space, LOWER)
    assert width_only == tune_space.ratio_param_space(space, LOWER, depth=False)
    assert set(width_only) == {tune_space.key(g.index) for g in space.groups}
    deep = tune_space.ratio_param_space(space, LOWER, depth=True)
    blocks = {k: v for k, v in deep.items() if k not in width_only}
    assert blocks == {tune_space.block_key(i): tune_space.Choice((False, True)) for i in range(7)}
    for name in ("random", "optuna-tpe", "optuna-nsga2"):
        assert get_strategy(name).tune_setup(_driver(ev, depth=True)).param_space == deep
        assert get_strategy(name).tune_setup(_driver(ev, depth=False)).param_space == width_only
    # locally drawn: booleans, both values, and the named blocks come back from the parameters
    drawn = list(tune_space.trial_params(deep, 20, seed=0))
    values = {p[k] for p in drawn for k in blocks}
    assert values == {False, True}
    assert all(isinstance(p[k], bool) for p in drawn for k in blocks)
    removed = tune_space.params_to_removed_blocks(drawn[0], space)
    assert removed == tuple(b.name for i, b in enumerate(space.blocks) if drawn[0][tune_space.block_key(i)])
    assert tune_space.params_to_removed_blocks(drawn[0], space) and tune_space.params_to_removed_blocks({}, space) == ()


def test_ray_param_space_samples_the_blocks_as_a_choice() -> None:
    from ray.tune.search.sample import Categorical

    tuned = tune_space.to_tune({"g000": tune_space.Uniform(0.1, 1.0), "b000": tune_space.Choice((False, True))})
    assert isinstance(tuned["b000"], Categorical) and list(tuned["b000"].categories) == [False, True]


def test_optuna_samplers_ask_for_the_blocks(tmp_path: Path, resnet20_checkpoint: Path) -> None:
    ev = _evaluator(tmp_path, resnet20_checkpoint)
    for name in ("optuna-tpe", "optuna-nsga2"):
        tsetup = get_strategy(name, {}).tune_setup(_driver(ev, depth=True, evaluations=6))
        asked = []
        for params, tell in _optuna_trials(tsetup):
            asked.append(params)
            tell([{"score": 0.5, "accuracy": 0.5, "latency_ms": 1.0}])
        keys = {tune_space.block_key(i) for i in range(len(ev.space.blocks))}
        assert all(keys <= set(p) for p in asked)
        assert {p[k] for p in asked for k in keys} == {False, True}


def test_predicted_latency_leaves_removed_blocks_out(tmp_path: Path, resnet20_checkpoint: Path) -> None:
    ev = _evaluator(tmp_path, resnet20_checkpoint)
    space, widths = ev.space, PruningPolicy.uniform(ev.space, 0.5).channels
    gone = space.block_names[:3]
    assert ev.predict_latency_ms(widths, gone) < ev.predict_latency_ms(widths)  # the device predicts (macs)
    assert ev.predict_latency_ms(widths, ()) == ev.predict_latency_ms(widths)
    fit = LatencyFit(intercept=0.2, slope=1e-6, byte_slope=1e-7)
    ev.latency = get_latency_model("torch-cpu")  # a measured device: the driver's fit answers
    ev.fit = fit
    expected = fit(space.macs(widths, gone), float(sum(s.bytes for s in space.layers(widths, gone))))
    assert ev.predict_latency_ms(widths, gone) == pytest.approx(expected)
    assert ev.predict_latency_ms(widths, gone) < ev.predict_latency_ms(widths)
    ev.in_loop = InLoopPredictor("torch-cpu", ev.batch_size, fit=fit)  # the in-loop predictor answers
    assert ev.predict_latency_ms(widths, gone) == pytest.approx(expected)
    assert ev.predict_latency_ms(widths, gone) < ev.predict_latency_ms(widths)
    policy = ev.make_policy([0.5] * len(space.groups), gone)
    assert policy.removed_blocks == tuple(sorted(gone)) and policy.channels == widths


@pytest.mark.parametrize("depth", [False, True])
def test_reachable_minimum_removes_every_block_only_with_depth(
    tmp_path: Path, resnet20_checkpoint: Path, depth: bool
) -> None:
    ev = _evaluator(tmp_path, resnet20_checkpoint, **{"evaluation.depth": depth})
    record = prepare_in_loop(ev.cfg, ev, budget_ms=1e-9)  # far below anything: the trial budget is the minimum
    lowest = PruningPolicy.uniform(ev.space, LOWER).channels
    expected = ev.predict_latency_ms(lowest, ev.space.block_names if depth else ())
    assert record["predicted_reachable_min_ms"] == record["trial_budget_ms"] == expected
    assert (expected < ev.predict_latency_ms(lowest)) is depth


def test_random_depth_search_removes_blocks_within_budget_and_stores_v2(
    tmp_path: Path, resnet20_checkpoint: Path
) -> None:
    changes = {"evaluation.depth": True, "strategy.evaluations": 6, "budget.fraction": 0.25}
    cfg = _config(tmp_path, resnet20_checkpoint, **changes)
    result = prunepilot.search.run(cfg, backend="local", run_dir=tmp_path / "run", progress=False)
    assert len(result.candidates) == 6
    ev = _evaluator(tmp_path, resnet20_checkpoint, **{"evaluation.depth": True})
    removing = [c for c in result.candidates if c.policy.removed_blocks]
    assert removing and len({c.policy.removed_blocks for c in removing}) > 1
    for c in result.candidates:
        gone = c.policy.removed_blocks
        assert set(gone) <= set(ev.space.block_names)
        assert c.policy.format == (POLICY_FORMAT_V2 if gone else POLICY_FORMAT)
        assert c.metrics.macs == ev.space.macs(c.policy.channels, gone)
        assert c.metrics.latency_ms <= result.budget_ms
        assert ev.predict_latency_ms(c.policy.channels, gone) <= result.budget_ms
        if 0.0 < c.extra["projection_scale"] < 1.0:  # shrunk just into the budget, measured with the blocks gone
            assert c.metrics.latency_ms >= 0.95 * result.budget_ms
    assert any(c.policy.removed_blocks and c.extra["projection_scale"] < 1.0 for c in result.candidates)
    store = RunStore(tmp_path / "run")
    assert [c.policy for c in store.ok()] == [c.policy for c in result.candidates]
    assert [c.policy for c in store.read_front()] == [c.policy for c in result.front]
    assert all(not c.policy.removed_blocks for c in store.baseline())  # the uniform baseline is width-only
    chosen = removing[0]
    loaded = PruningPolicy.load(store.export_policy(chosen, tmp_path / "policy.json"))
    assert loaded.format == POLICY_FORMAT_V2 and loaded.removed_blocks == chosen.policy.removed_blocks
    assert loaded.channels == chosen.policy.channels
    loaded.check(ev.space)


def test_optuna_tpe_depth_search_proposes_blocks(tmp_path: Path, resnet20_checkpoint: Path) -> None:
    changes = {
        "evaluation.depth": True,
        "evaluation.uniform_baseline": 0,
        "strategy.name": "optuna-tpe",
        "strategy.evaluations": 3,
        "strategy.settings": {"n_startup_trials": 2},
    }
    result = prunepilot.search.run(
        _config(tmp_path, resnet20_checkpoint, **changes), backend="local", run_dir=tmp_path / "run", progress=False
    )
    assert len(result.candidates) == 3
    assert any(c.policy.removed_blocks for c in result.candidates)
    assert all(c.metrics.latency_ms <= result.budget_ms for c in result.candidates)


def test_without_depth_random_search_proposes_what_it_did_before(tmp_path: Path, resnet20_checkpoint: Path) -> None:
    changes = {"evaluation.uniform_baseline": 0, "strategy.evaluations": 4}
    result = prunepilot.search.run(
        _config(tmp_path, resnet20_checkpoint, **changes), backend="local", run_dir=tmp_path / "run", progress=False
    )
    ev = _evaluator(tmp_path, resnet20_checkpoint)
    assert ev.space.blocks  # blocks exist, but none is searched
    # the draws before depth existed: one uniform per group, in key order, from the search's seed
    rng = np.random.default_rng(0)
    drawn = [{g.name: float(rng.uniform(LOWER, 1.0)) for g in ev.space.groups} for _ in range(4)]
    found = sorted(result.candidates, key=lambda c: c.trial)
    assert len(found) == 4
    for c, ratios in zip(found, drawn, strict=True):
        s = c.extra["projection_scale"]
        assert not c.policy.removed_blocks and c.policy.format == POLICY_FORMAT
        expected = {n: LOWER + s * (r - LOWER) if s < 1.0 else r for n, r in ratios.items()}
        assert c.policy.keep_ratios == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("strategy", ["amc-ddpg", "uniform"])
def test_depth_with_a_width_only_strategy_is_refused(tmp_path: Path, resnet20_checkpoint: Path, strategy: str) -> None:
    cfg = _config(tmp_path, resnet20_checkpoint, **{"evaluation.depth": True, "strategy.name": strategy})
    with pytest.raises(ConfigError, match=rf"evaluation.depth.*{strategy!r}.*optuna-nsga2, optuna-tpe, random"):
        validate_config(cfg)
    # a config object skips validate_config: the search refuses it before building anything
    with pytest.raises(ConfigError, match=rf"{strategy!r} searches widths only"):
        prunepilot.search.run(SearchConfig.model_validate(cfg), backend="local", run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists() or not RunStore(tmp_path / "run").ok()
    assert {"random", "optuna-tpe", "optuna-nsga2"} <= set(depth_strategies())
    validate_config(_config(tmp_path, resnet20_checkpoint, **{"strategy.name": strategy}))  # width-only is fine


def test_depth_on_a_model_without_blocks_is_refused(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, **{"evaluation.depth": True})
    with pytest.raises(ConfigError, match=r"evaluation.depth.*'testing:tiny-convnet'.*needs residual blocks"):
        prunepilot.search.run(cfg, backend="local", run_dir=tmp_path / "run", progress=False)


def test_a_budget_only_depth_reaches_is_searched_with_depth_and_refused_without(
    tmp_path: Path, resnet20_checkpoint: Path
) -> None:
    ev = _evaluator(tmp_path, resnet20_checkpoint)
    lowest = PruningPolicy.uniform(ev.space, LOWER).channels
    width_min, deep_min = ev.predict_latency_ms(lowest), ev.predict_latency_ms(lowest, ev.space.block_names)
    budget = (width_min + deep_min) / 2  # below anything width alone reaches
    changes = {
        "budget.fraction": None,
        "budget.ms": budget,
        "evaluation.uniform_baseline": 0,
        "strategy.evaluations": 3,
    }
    with pytest.raises(ConfigError, match=r"below the reachable minimum of .* \(every group at evaluation.lower_bound"):
        prunepilot.search.run(_config(tmp_path, resnet20_checkpoint, **changes), backend="local",
                              run_dir=tmp_path / "width", progress=False)  # fmt: skip
    result = prunepilot.search.run(
        _config(tmp_path, resnet20_checkpoint, **changes, **{"evaluation.depth": True}),
        backend="local",
        run_dir=tmp_path / "deep",
        progress=False,
    )
    info = RunStore(tmp_path / "deep").read_info()
    assert info["reachable_min_ms"] == pytest.approx(deep_min)
    assert result.candidates and all(c.metrics.latency_ms <= budget for c in result.candidates)
    assert all(c.policy.removed_blocks for c in result.candidates)  # nothing width-only fits
