"""The strategy plug-in point: a class behind a small interface, registered under a name.

Two kinds of strategy run as trials (Ray Tune's, or the local backend's, serially):

* ``candidate`` strategies (random, uniform, Optuna): Tune (or its search algorithm)
  proposes one configuration per trial and the trial evaluates that one candidate.
* ``session`` strategies (RL agents, one-shot search): a trial runs a whole search loop with
  its own seed and budget and reports every candidate it evaluates.

Either way the trial reports candidates through :class:`TrialContext.report`; the driver
writes them to the run folder. What a strategy is given is the contract of
:mod:`prunepilot.search.strategies.context`: it never sees the search config or the concrete
evaluator.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from prunepilot.errors import ConfigError, one_of
from prunepilot.search.strategies.context import DriverContext, TrialContext, TuneSetup


class StrategySettings(BaseModel):
    """Base of every strategy's settings model (strict: unknown keys are errors)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Strategy(ABC):
    """A pruning-policy search strategy."""

    name: ClassVar[str] = "?"
    kind: ClassVar[Literal["candidate", "session"]] = "candidate"
    description: ClassVar[str] = ""
    Settings: ClassVar[type[StrategySettings]] = StrategySettings
    #: Whether it proposes removed blocks too when ``evaluation.depth`` is true (``DriverContext.depth``).
    searches_depth: ClassVar[bool] = False

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.settings = validate_settings(self.name, self.Settings, settings or {})

    @abstractmethod
    def tune_setup(self, ctx: DriverContext) -> TuneSetup:
        """The trials this strategy asks for: parameter space, count, optional sampler."""

    @abstractmethod
    def run_trial(self, ctx: TrialContext, params: Mapping[str, Any]) -> None:
        """Evaluate what ``params`` (one trial's parameters) asks for, reporting every candidate."""


_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: register a strategy under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def strategy_names() -> list[str]:
    """Registered strategy names."""
    _load_builtins()
    return sorted(_REGISTRY)


def strategy_class(name: str) -> type[Strategy]:
    """The strategy class called ``name``; the error lists the valid names."""
    _load_builtins()
    if name not in _REGISTRY:
        broken = import_failure(name)
        if broken is not None:
            raise ConfigError(f"field 'strategy.name': {broken}")
        raise ConfigError(f"field 'strategy.name': unknown strategy {name!r}; choose {one_of(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get_strategy(name: str, settings: Mapping[str, Any] | None = None) -> Strategy:
    """An instance of strategy ``name`` with validated ``settings``."""
    return strategy_class(name)(settings)


def check_strategy(name: str, settings: Mapping[str, Any]) -> None:
    """Validate a strategy name and its settings without building anything heavy."""
    strategy_class(name)(settings)  # constructors only validate; nothing heavy is built


def depth_strategies() -> list[str]:
    """Names of the strategies that search depth (``evaluation.depth``)."""
    _load_builtins()
    return sorted(n for n, cls in _REGISTRY.items() if cls.searches_depth)


def check_depth(name: str, depth: bool) -> None:
    """Refuse ``evaluation.depth: true`` for a strategy that searches widths only."""
    if depth and not strategy_class(name).searches_depth:
        raise ConfigError(
            f"field 'evaluation.depth': strategy {name!r} searches widths only and cannot remove blocks; "
            f"the strategies that search depth are {', '.join(depth_strategies())}: choose one of them or set "
            "evaluation.depth: false"
        )


def validate_settings(name: str, model: type[StrategySettings], settings: Mapping[str, Any]) -> StrategySettings:
    """Validate ``settings`` for strategy ``name``; errors list the accepted keys."""
    try:
        return model.model_validate(dict(settings))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        accepted = ", ".join(sorted(model.model_fields)) or "(none)"
        raise ConfigError(
            f"field 'strategy.settings.{where}' of strategy {name!r}: {err['msg']}; accepted settings: {accepted}"
        ) from None


#: Built-in strategy modules that need optional parts of the package, and what they register.
_OPTIONAL_BUILTINS: dict[str, tuple[str, ...]] = {
    "prunepilot.search.strategies.agents": ("amc-ddpg", "ppo", "sac", "td3"),
    "prunepilot.search.strategies.oneshot": ("autoslim", "metapruning"),
}
#: module -> "ExcType: message" of a built-in module whose import failed (reported, never hidden)
_IMPORT_ERRORS: dict[str, str] = {}


def _load_builtins() -> None:
    # Importing the modules runs their @register_strategy decorators.
    import importlib

    from prunepilot.search.strategies import (
        knapsack,  # noqa: F401
        optuna_search,  # noqa: F401
        sampling,  # noqa: F401
    )

    for module in _OPTIONAL_BUILTINS:
        try:
            importlib.import_module(module)
        except ImportError as exc:  # a broken dependency: remembered and named when asked for
            _IMPORT_ERRORS[module] = f"{type(exc).__name__}: {exc}"
        else:
            _IMPORT_ERRORS.pop(module, None)


def import_failure(name: str) -> str | None:
    """Why built-in strategy ``name`` is unavailable (its module's import error), or None."""
    for module, names in _OPTIONAL_BUILTINS.items():
        if name in names and module in _IMPORT_ERRORS:
            return (
                f"strategy {name!r} is built in, but its module {module} failed to import "
                f"({_IMPORT_ERRORS[module]}); install the missing package or reinstall prunepilot with its dependencies"
            )
    return None
