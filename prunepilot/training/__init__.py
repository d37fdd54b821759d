"""Training: fit and evaluate classifiers, distil from a teacher, resume from epoch checkpoints,
and train base models once into a cache.

Example:
    >>> from prunepilot.data import DataConfig
    >>> from prunepilot.training import TrainConfig, train_base_model
    >>> model, info = train_base_model("simplecnn", DataConfig(name="digits"), TrainConfig(epochs=5),
    ...                                ".cache/base_models")
    >>> info["cached"], round(info["val_acc"], 2)  # doctest: +SKIP
    (False, 0.97)

Resumable fine-tuning with knowledge distillation::

    fit(student, data.train, TrainConfig(epochs=5), loss_fn=distillation_loss(teacher),
        checkpoint_dir="out/checkpoints", resume=True)
"""

from __future__ import annotations

from prunepilot.training.base_models import base_model_key, train_base_model
from prunepilot.training.distill import DistillConfig, distillation_loss, kd_loss
from prunepilot.training.finetune import FinetuneScore, finetune_and_score
from prunepilot.training.resume import STATE_FORMAT, list_states, load_latest_state
from prunepilot.training.trainer import (
    LossFn,
    TrainConfig,
    cross_entropy_loss,
    evaluate_accuracy,
    fit,
    load_train_config,
)

__all__ = [
    "STATE_FORMAT",
    "DistillConfig",
    "FinetuneScore",
    "LossFn",
    "TrainConfig",
    "base_model_key",
    "cross_entropy_loss",
    "distillation_loss",
    "evaluate_accuracy",
    "finetune_and_score",
    "fit",
    "kd_loss",
    "list_states",
    "load_latest_state",
    "load_train_config",
    "train_base_model",
]
