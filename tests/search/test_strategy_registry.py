"""The strategy registry names a broken optional import instead of calling the strategy unknown."""

from __future__ import annotations

import sys

import pytest

from prunepilot.errors import ConfigError
from prunepilot.search.strategies import base, strategy_class


def test_broken_builtin_module_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    strategy_class("autoslim")  # registered normally
    for name in ("autoslim", "metapruning"):
        monkeypatch.delitem(base._REGISTRY, name)
    monkeypatch.delitem(sys.modules, "prunepilot.search.strategies.oneshot")
    monkeypatch.setitem(sys.modules, "prunepilot.oneshot.autoslim", None)  # a dependency that will not import
    with pytest.raises(ConfigError) as err:
        strategy_class("autoslim")
    text = str(err.value)
    assert "prunepilot.search.strategies.oneshot failed to import" in text
    assert "prunepilot.oneshot.autoslim" in text
    assert "unknown strategy" not in text


def test_unknown_strategy_still_lists_the_names() -> None:
    with pytest.raises(ConfigError, match="unknown strategy 'annealing'.*random"):
        strategy_class("annealing")
