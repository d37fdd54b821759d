"""Models: build any model from a spec string, and save or safely load its weights.

Specs (see :func:`build_model`): zoo names (``resnet20``, ``resnet32``, ``resnet56``,
``mobilenetv2``, ``vgg11s``, ``simplecnn``), ``torchvision:NAME`` and ``pkg.module:callable``,
each with optional ``?key=value`` builder kwargs. The tiny test fixtures of
:mod:`prunepilot.models.testing` are not zoo models: ``testing:tiny-convnet`` names one.

Example:
    >>> from prunepilot.models import build_model, list_models
    >>> model = build_model("simplecnn", num_classes=10, in_channels=1)
"""

from __future__ import annotations

# Importing the zoo modules registers their models.
from prunepilot.models import _mobilenet, _resnet_cifar, _simple, _vgg  # noqa: F401
from prunepilot.models._registry import (
    ModelBuilder,
    ParsedSpec,
    build_model,
    default_input_shape,
    list_models,
    parse_spec,
    register_model,
)
from prunepilot.models.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    load_model,
    save_checkpoint,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "ModelBuilder",
    "ParsedSpec",
    "build_model",
    "default_input_shape",
    "list_models",
    "load_checkpoint",
    "load_model",
    "parse_spec",
    "register_model",
    "save_checkpoint",
]
