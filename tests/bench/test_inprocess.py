"""bench/inprocess.py runs the product's strategies on one evaluator, without Ray."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from bench_helpers import load, tiny_config

from prunepilot.search.config import validate_config
from prunepilot.search.evaluator import Evaluator


@pytest.fixture(scope="module")
def ev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Evaluator]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    cache = tmp_path_factory.mktemp("cache")
    yield Evaluator(validate_config(tiny_config(cache)))
    torch.set_num_threads(before)


def test_random_uniform_and_the_pick_within_budget(ev: Evaluator) -> None:
    inprocess = load("inprocess")
    budget_ms = 0.6 * ev.base_metrics().latency_ms
    records = inprocess.random_search(ev, budget_ms, seed=0, evaluations=3)
    assert len(records) == 3 and all(m.latency_ms <= budget_ms * (1 + 1e-6) for _p, m, _e in records)
    assert [m.accuracy for _p, m, _e in records] == [m.accuracy for _p, m, _e in inprocess.random_search(
        ev, budget_ms, seed=0, evaluations=3)]  # fmt: skip
    policy, metrics, _extra = inprocess.uniform_record(ev, budget_ms)
    assert len(set(policy.keep_ratios.values())) == 1 and metrics.latency_ms <= budget_ms
    best = inprocess.best_record([*records, (policy, metrics, {})], budget_ms)
    assert best is not None and best[1].accuracy == max(m.accuracy for _p, m, _e in [*records, best])
    assert inprocess.best_record(records, 0.0) is None
    with pytest.raises(ValueError, match="exactly one"):
        inprocess.random_search(ev, budget_ms, seed=0)
    # By time: a limit shorter than one trial ends the search after its first trial.
    timed = inprocess.random_search(ev, budget_ms, seed=0, seconds=1e-6)
    assert [m.accuracy for _p, m, _e in timed] == [records[0][1].accuracy]


def test_a_session_strategy_reports_every_episode(ev: Evaluator) -> None:
    inprocess, amc = load("inprocess"), load("amc")
    budget_ms = 0.6 * ev.base_metrics().latency_ms
    settings = {"reward": "acc", "warmup_episodes": 2}
    records = inprocess.run_strategy(ev, "amc-ddpg", settings, budget_ms, seed=0, evaluations=3)
    assert len(records) == 3 and all("episode" in extra for _p, _m, extra in records)
    found = amc.found_in(records, 1.0)
    assert found["evaluations"] + found["cache_hits"] == 3 and len(found["curve"]) == 3
    assert found["metrics"]["accuracy"] == max(found["curve"])
