"""Post-pruning fix-ups: models that keep channel counts in plain attributes their ``forward`` reads.

Torch-Pruning resizes parameters and the channel attributes of standard layers, but not a
count a model stores for itself (torchvision's ``VisionTransformer.hidden_dim``). After pruning,
the adapter (:mod:`prunepilot.pruning.adapter`) runs :func:`run_fixups`: every registered fix-up
on the modules of its class, then one forward pass that must succeed.

Example::

    register_fixup("MyNet", lambda m: setattr(m, "width", int(m.stem.out_channels)))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from prunepilot.errors import PruningError

#: Post-pruning fix-ups for modules that keep channel counts in plain attributes, by class name.
FIXUPS: dict[str, Callable[[nn.Module], None]] = {
    # torchvision's VisionTransformer reshapes with self.hidden_dim in forward().
    "VisionTransformer": lambda m: setattr(m, "hidden_dim", int(m.conv_proj.out_channels)),  # type: ignore[union-attr,arg-type]
}


def register_fixup(class_name: str, fn: Callable[[nn.Module], None]) -> None:
    """Register ``fn(module)`` to run on every module of class ``class_name`` after pruning.

    Use it for models that store channel counts in attributes their ``forward`` reads.
    """
    FIXUPS[class_name] = fn


def run_fixups(model: nn.Module, example: tuple[Any, ...]) -> None:
    """Run the registered fix-ups on ``model``'s modules, then check that it runs on ``example``.

    Args:
        model: The pruned model (its train/eval mode is restored).
        example: Positional example inputs.

    Raises:
        PruningError: the model no longer runs; names the error and how to register a fix-up.
    """
    for module in model.modules():
        fix = FIXUPS.get(type(module).__name__)
        if fix is not None:
            fix(module)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*example)
    except Exception as exc:
        raise PruningError(
            f"the pruned {type(model).__name__} no longer runs: {type(exc).__name__}: {exc}. If the model "
            "keeps channel counts in attributes, register a fix-up with "
            "prunepilot.pruning.adapter.register_fixup(class_name, fn)."
        ) from exc
    finally:
        model.train(was_training)
