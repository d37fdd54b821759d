"""Error types raised by prunepilot.

Every error says what value was wrong, what would be accepted and, where there is one, the
next step for the user. CLI commands print these without a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class PrunepilotError(Exception):
    """Base class of all errors prunepilot raises on purpose."""


class ConfigError(PrunepilotError, ValueError):
    """A configuration value, CLI flag or file is invalid."""


class ModelSpecError(PrunepilotError, ValueError):
    """A model spec string does not resolve to a model."""


class CheckpointError(PrunepilotError, ValueError):
    """A checkpoint cannot be loaded safely or does not match the model."""


class UntrustedCodeError(ConfigError):
    """A file names code to import and call (an import-path spec) and the user did not opt in."""


class DataError(PrunepilotError, ValueError):
    """A dataset cannot be found or built."""


class PolicyError(PrunepilotError, ValueError):
    """A pruning policy is malformed or does not fit the model."""


class GraphAnalysisError(PrunepilotError, RuntimeError):
    """Torch-Pruning's dependency analysis cannot handle this model (or exceeded its limits)."""


class PruningError(PrunepilotError, RuntimeError):
    """Pruning produced a model that does not match what the policy asked for."""


def one_of(values: Iterable[object]) -> str:
    """Format accepted values for an error message: ``'a', 'b' or 'c'``."""
    items = [repr(v) for v in values]
    if not items:
        return "(none)"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " or " + items[-1]
