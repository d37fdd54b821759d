"""bench/peers.py: Torch-Pruning's global pruning, stopped at the budget, scored by our evaluator."""

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
    sections = {"budget": {"fraction": 0.5}, "evaluation": {"bn_batches": 2}}
    yield Evaluator(validate_config(tiny_config(cache, **sections)))
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["torch-pruning-global", "torch-pruning-isomorphic"])
def test_a_peer_stops_at_the_first_step_within_budget_and_is_scored_like_a_strategy(ev: Evaluator, name: str) -> None:
    peers = load("peers")
    base = ev.base_metrics()
    budget = 0.5 * base.latency_ms
    trace = peers.peer_steps(ev, name, budget, steps=20)
    lat = [s.latency_ms for s in trace]
    assert lat == sorted(lat, reverse=True) and lat[-1] <= budget < lat[-2]  # stopped at the first one within
    policy, metrics, extra = peers.peer_record(ev, name, budget, steps=20)
    assert policy.channels == trace[-1].widths and extra["steps"] == len(trace)
    assert metrics.latency_ms <= budget and 0.0 <= metrics.accuracy <= 1.0
    # one ranking across the model: the groups keep different shares, unlike a uniform policy
    assert len({round(r, 2) for r in policy.keep_ratios.values()}) > 1


def test_a_budget_no_step_reaches_gives_no_record_and_bad_names_are_refused(ev: Evaluator) -> None:
    peers = load("peers")
    assert peers.peer_record(ev, "torch-pruning-global", 1e-9, steps=3, max_ratio=0.3) is None
    with pytest.raises(ValueError, match=r"peer 'tp' is unknown; choose one of \('torch-pruning-global'"):
        peers.peer_steps(ev, "tp", 1.0)
    with pytest.raises(ValueError, match=r"peer importance 'l9' is unknown"):
        peers.peer_steps(ev, "torch-pruning-global", 1.0, importance="l9")
