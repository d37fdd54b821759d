"""amc-ddpg finds the known answer: keep the essential groups whole, prune the free ones.

The task (:func:`prunepilot.models.testing.make_known_answer_task`) is built so that two small
groups carry the label and two large ones carry nothing. At 15% of the model's latency,
uniform pruning must cut the essential groups to one channel of four (chance accuracy,
~25%), while the right policy meets the budget at ~100%. The evaluation is real: prune,
recalibrate BN, accuracy on the task's validation images.

Passing by chance is ruled out three ways: the *greedy* policy the agent ends with (no
exploration) must be right, not just the best policy it happened to try; the episodes after
learning must be far better than the random warm-up episodes; and the margins are large
(>= 50 points over uniform pruning on 1024 validation images).
"""

from __future__ import annotations

import statistics

import pytest

from prunepilot.envs import uniform_within_budget
from prunepilot.envs.testing import make_known_answer_env
from prunepilot.policies import AgentConfig, greedy_episode, run_agent
from prunepilot.pruning import PruningPolicy

EPISODES, WARMUP = 50, 15


@pytest.mark.parametrize("seed", [0, 3])
def test_amc_ddpg_keeps_essential_groups_and_beats_uniform_pruning(seed: int) -> None:
    env, task = make_known_answer_env(seed=seed, budget_fraction=0.15)
    uniform = uniform_within_budget(task.space, task.latency_ms, task.budget_ms)
    uniform_acc = task.evaluate(uniform)["accuracy"]
    full = task.space.full_widths()
    assert all(uniform.channels[g] < full[g] for g in task.essential)  # uniform must cut them
    assert uniform_acc < 0.5

    result = run_agent(env, AgentConfig(name="amc-ddpg", episodes=EPISODES, warmup_episodes=WARMUP, seed=seed))
    assert result.model is not None
    greedy = greedy_episode(result.model, env)

    for found in (result.best, greedy):
        assert {g: found.policy.channels[g] for g in task.essential} == {g: full[g] for g in task.essential}
        assert all(found.policy.channels[g] < full[g] for g in task.free)  # pruned to meet the budget
        assert found.metrics["accuracy"] >= uniform_acc + 0.5
        assert found.metrics["accuracy"] >= 0.95
        assert task.latency_ms(found.policy.channels) <= task.budget_ms

    accuracies = [e.metrics["accuracy"] for e in result.episodes]
    warmup_mean, late_mean = statistics.mean(accuracies[:WARMUP]), statistics.mean(accuracies[-10:])
    assert late_mean >= warmup_mean + 0.25, (warmup_mean, late_mean)
    assert all(task.latency_ms(e.policy.channels) <= task.budget_ms for e in result.episodes)
    assert result.evaluations < EPISODES  # the cache answered the repeats
    assert result.evaluations + result.cache_hits == EPISODES


def test_known_answer_env_is_as_documented() -> None:
    env, task = make_known_answer_env(seed=0, budget_fraction=0.15)
    assert task.essential == {"signal.0", "signal.3"} and task.free == {"noise.0", "noise.3"}
    assert env.budget_ms == pytest.approx(0.15 * task.latency_ms(task.space.full_widths()))
    right = {"signal.0": 1.0, "signal.3": 1.0, "noise.0": 0.2, "noise.3": 0.2}
    policy = PruningPolicy.from_ratios(task.space, right)
    assert task.latency_ms(policy.channels) <= env.budget_ms  # the right answer is feasible
    assert task.evaluate(policy)["accuracy"] >= 0.95
