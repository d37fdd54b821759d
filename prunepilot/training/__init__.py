"""Training: fit and evaluate classifiers, and train base models once into a cache.

Example:
    >>> from prunepilot.data import DataConfig
    >>> from prunepilot.training import TrainConfig, train_base_model
    >>> model, info = train_base_model("simplecnn", DataConfig(name="digits"), TrainConfig(epochs=5),
    ...                                ".cache/base_models")
    >>> info["cached"], round(info["val_acc"], 2)  # doctest: +SKIP
    (False, 0.97)
"""

from __future__ import annotations

from prunepilot.training.trainer import (
    LossFn,
    TrainConfig,
    base_model_key,
    cross_entropy_loss,
    evaluate_accuracy,
    fit,
    train_base_model,
)

__all__ = [
    "LossFn",
    "TrainConfig",
    "base_model_key",
    "cross_entropy_loss",
    "evaluate_accuracy",
    "fit",
    "train_base_model",
]
