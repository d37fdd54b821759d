"""Agent names, hyperparameters and warm-up: validated with errors that list the valid choices."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from prunepilot.errors import ConfigError
from prunepilot.policies import AgentConfig, get_agent, list_agents


def test_registry_has_the_four_agents() -> None:
    assert list_agents() == ["amc-ddpg", "ppo", "sac", "td3"]
    for name in list_agents():
        assert get_agent(name).description


def test_unknown_agent_lists_valid_agents() -> None:
    expected = r"unknown agent 'amc'; valid agents are 'amc-ddpg', 'ppo', 'sac' or 'td3'"
    with pytest.raises(ConfigError, match=expected):
        get_agent("amc")
    with pytest.raises(ValidationError, match=expected):
        AgentConfig(name="amc")


def test_unknown_hyperparameter_lists_valid_ones() -> None:
    with pytest.raises(ValidationError, match=r"agent 'amc-ddpg' has no hyperparameter 'lr'") as exc:
        AgentConfig(name="amc-ddpg", hyperparams={"lr": 0.1})
    message = str(exc.value)
    for valid in (
        "'actor_lr'",
        "'critic_lr'",
        "'noise_sigma'",
        "'noise_decay'",
        "'baseline_alpha'",
        "'tau'",
        "'batch_size'",
    ):
        assert valid in message
    with pytest.raises(ValidationError, match=r"agent 'ppo' has no hyperparameter 'tau'.*'clip_range'"):
        AgentConfig(name="ppo", hyperparams={"tau": 0.1})


def test_hyperparameters_prunepilot_sets_are_refused_with_the_reason() -> None:
    with pytest.raises(ValidationError, match=r"'learning_starts' is set by prunepilot from episodes/warmup_episodes"):
        AgentConfig(name="td3", hyperparams={"learning_starts": 10})
    accepted = get_agent("amc-ddpg").accepted_hyperparams()
    assert "learning_rate" not in accepted and "action_noise" not in accepted and "seed" not in accepted
    assert {"gamma", "tau", "batch_size", "policy_kwargs", "actor_lr"} <= set(accepted)
    assert "n_steps" in get_agent("ppo").accepted_hyperparams()


def test_warmup_rules() -> None:
    assert AgentConfig(name="amc-ddpg", episodes=200).resolved_warmup() == 50
    assert AgentConfig(name="amc-ddpg", episodes=1000).resolved_warmup() == 100  # AMC's 100
    assert AgentConfig(name="td3", episodes=40, warmup_episodes=5).resolved_warmup() == 5
    assert AgentConfig(name="ppo", episodes=40).resolved_warmup() == 0
    with pytest.raises(ValidationError, match="'ppo' has no random warm-up phase"):
        AgentConfig(name="ppo", episodes=40, warmup_episodes=5)
    with pytest.raises(ValidationError, match=r"warmup_episodes \(40\) must be fewer than episodes \(40\)"):
        AgentConfig(name="amc-ddpg", episodes=40, warmup_episodes=40)
    with pytest.raises(ValidationError, match="episodes"):
        AgentConfig(name="amc-ddpg", episodes=0)


def test_config_round_trips_and_is_frozen() -> None:
    cfg = AgentConfig(name="sac", episodes=12, seed=3, hyperparams={"ent_coef": 0.1})
    assert AgentConfig.model_validate(cfg.model_dump(mode="json")) == cfg
    with pytest.raises(ValidationError):
        cfg.seed = 4  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        AgentConfig(name="sac", episode=12)  # type: ignore[call-arg]
