"""A model's state while Torch-Pruning traces and prunes it: autograd on, flags and modes restored.

Tracing needs autograd and every parameter's ``requires_grad`` (frozen parameters would be
skipped), and Torch-Pruning leaves the model in eval mode; :func:`tracing_state` turns both on
for a block and restores each parameter's flag and each submodule's mode afterwards, by name,
since pruning replaces ``Parameter`` objects. Used by the adapter
(:mod:`prunepilot.pruning.adapter`), which re-exports :func:`example_tuple`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def example_tuple(example_inputs: Any) -> tuple[Any, ...]:
    """Normalise example inputs to a tuple of positional arguments."""
    if isinstance(example_inputs, tuple | list):
        return tuple(example_inputs)
    return (example_inputs,)


@contextmanager
def tracing_state(model: nn.Module) -> Iterator[None]:
    """Enable autograd and all ``requires_grad`` flags; restore flags and modes afterwards."""
    modes = {name: m.training for name, m in model.named_modules()}
    # By name: pruning replaces Parameter objects (new ones default to requires_grad=True).
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags.get(name, True))
        for name, m in model.named_modules():
            m.train(modes.get(name, m.training))


def module_names(model: nn.Module) -> dict[Any, str]:
    """Every submodule and parameter of ``model`` -> its qualified name (the model itself: ``""``)."""
    names: dict[Any, str] = {m: n for n, m in model.named_modules()}
    names.update({p: n for n, p in model.named_parameters()})
    return names
