"""String registry of latency models, so a device config can say ``latency_model: roofline``.

Example:
    >>> from prunepilot.hw_models import get_latency_model, latency_model_names
    >>> "macs" in latency_model_names()
    True
    >>> get_latency_model("macs").name
    'macs'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prunepilot.errors import ConfigError, one_of
from prunepilot.hw_models.base import LatencyModel

_REGISTRY: dict[str, type[LatencyModel]] = {}

T = TypeVar("T", bound=type[LatencyModel])


def register_latency_model(name: str) -> Callable[[T], T]:
    """Class decorator: register a :class:`LatencyModel` subclass under ``name``."""

    def deco(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ConfigError(f"latency model name {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def latency_model_names() -> list[str]:
    """Registered latency model names, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def latency_model_class(name: str) -> type[LatencyModel]:
    """The class registered under ``name``; unknown names raise a ConfigError listing valid ones."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown latency model {name!r}; choose {one_of(sorted(_REGISTRY))} "
            "(or register your own with @register_latency_model)"
        ) from None


def get_latency_model(name: str, **settings: Any) -> LatencyModel:
    """Build the latency model registered under ``name`` with keyword ``settings``.

    Raises:
        ConfigError: unknown name (the message lists the registered names) or settings the
            model does not accept.
    """
    cls = latency_model_class(name)
    try:
        return cls(**settings)
    except TypeError as exc:
        raise ConfigError(f"latency model {name!r} does not accept settings {sorted(settings)}: {exc}") from None


def _load_builtins() -> None:
    # Importing the modules runs their @register_latency_model decorators.
    from prunepilot.hw_models import learned, lut, measure, onnxrt, proxies, remote, roofline  # noqa: F401
