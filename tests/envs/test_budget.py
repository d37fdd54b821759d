"""Budget enforcement: every finished episode is within the latency budget, whatever the agent does."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunepilot.envs import LatencyBudget, PruningEnv, allowed_widths, uniform_within_budget
from prunepilot.envs.testing import proxy_evaluate, roofline_latency
from prunepilot.pruning import PruningPolicy, PruningSpace

_EXTREMES = {
    "all-lower": lambda n: [0.0] * n,
    "all-one": lambda n: [1.0] * n,
    "alternating": lambda n: [float(i % 2) for i in range(n)],
    "alternating-other": lambda n: [float((i + 1) % 2) for i in range(n)],
    "ones-then-zeros": lambda n: [1.0] * (n // 2) + [0.0] * (n - n // 2),
}


def _episode(env: PruningEnv, actions: list[float]) -> dict:
    env.reset(seed=0)
    info: dict = {}
    for a in actions:
        _, _, done, _, info = env.step(np.array([a], dtype=np.float32))
    assert done
    return info


@pytest.mark.parametrize("model", ["resnet20", "mobilenetv2"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    fraction=st.floats(0.0, 1.0),
    round_to=st.sampled_from([1, 4, 8]),
    lower=st.sampled_from([0.1, 0.2, 0.5]),
)
def test_every_finished_episode_is_within_budget(
    zoo_space: dict[str, PruningSpace], model: str, data: st.DataObject, fraction: float, round_to: int, lower: float
) -> None:
    space = zoo_space[model]
    latency = roofline_latency(space)
    floor = latency(LatencyBudget(space, latency, 1e9, lower_bound=lower, round_to=round_to).widths([], "min"))
    full = latency(space.full_widths())
    budget = floor + fraction * (full - floor)  # anywhere from the reachable minimum to no pressure
    env = PruningEnv(space, proxy_evaluate(space, latency), latency, budget, lower_bound=lower, round_to=round_to)
    n = len(space.groups)
    kind = data.draw(st.sampled_from(["random", *_EXTREMES]))
    if kind == "random":
        actions = data.draw(st.lists(st.floats(-0.5, 1.5, allow_nan=False), min_size=n, max_size=n))
    else:
        actions = _EXTREMES[kind](n)
    info = _episode(env, actions)
    policy = PruningPolicy.from_json(info["policy"])
    assert latency(policy.channels) <= budget  # the same latency function, recomputed
    assert info["predicted_latency_ms"] <= budget
    assert all(
        policy.channels[g.name] >= allowed_widths(g.channels, g.multiple, round_to, lower)[0] for g in space.groups
    )


def test_clipping_keeps_the_most_the_budget_allows(zoo_space: dict[str, PruningSpace]) -> None:
    """With all-ones actions, each clipped group is at the largest width still feasible."""
    space = zoo_space["resnet20"]
    latency = roofline_latency(space)
    budget = 0.5 * latency(space.full_widths())
    env = PruningEnv(space, proxy_evaluate(space, latency), latency, budget)
    env.reset(seed=0)
    chosen: list[int] = []
    clipped = 0
    for g in space.groups:
        _, _, _, _, info = env.step(np.array([1.0], dtype=np.float32))
        w = info["width"]
        if info["clipped"]:
            clipped += 1
            allowed = allowed_widths(g.channels, g.multiple, 1, 0.2)
            bigger = allowed[allowed.index(w) + 1]
            assert not env.budget.feasible([*chosen, bigger])  # one more width would break the budget
        assert env.budget.feasible([*chosen, w])
        chosen.append(w)
    assert clipped >= 1
    # greedy front-loading spends the budget: the result sits close to it
    assert latency(env.budget.widths(chosen)) > 0.9 * budget


def test_non_monotone_latency_still_yields_feasible_episodes(zoo_space: dict[str, PruningSpace]) -> None:
    """Bisection assumes monotone latency; if it is not, the result must still be feasible."""
    space = zoo_space["resnet20"]
    base = roofline_latency(space)

    def bumpy(widths):  # odd widths cost extra: not monotone in width
        return base(widths) + 0.3 * sum(w % 2 for w in widths.values())

    budget = 0.4 * bumpy(space.full_widths())
    env = PruningEnv(space, proxy_evaluate(space, bumpy), bumpy, budget)
    rng = np.random.default_rng(0)
    for _ in range(20):
        info = _episode(env, list(rng.uniform(0, 1, len(space.groups))))
        assert bumpy(PruningPolicy.from_json(info["policy"]).channels) <= budget


def test_uniform_within_budget_is_the_largest_uniform_ratio(zoo_space: dict[str, PruningSpace]) -> None:
    space = zoo_space["mobilenetv2"]
    latency = roofline_latency(space)
    budget = 0.5 * latency(space.full_widths())
    policy = uniform_within_budget(space, latency, budget)
    ratio = next(iter(policy.keep_ratios.values()))
    assert latency(policy.channels) <= budget
    assert latency(PruningPolicy.uniform(space, ratio + 0.01).channels) > budget
    assert uniform_within_budget(space, latency, 10 * budget).channels == space.full_widths()


def test_allowed_widths() -> None:
    assert allowed_widths(16, 1, 1, 0.2) == list(range(3, 17))
    assert allowed_widths(16, 1, 8, 0.2) == [8, 16]
    assert allowed_widths(10, 1, 4, 0.2) == [4, 8, 10]  # full width is always allowed
    assert allowed_widths(12, 3, 2, 0.5) == [6, 12]  # lcm(round_to, multiple) = 6
