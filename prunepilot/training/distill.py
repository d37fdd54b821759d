"""Logit knowledge distillation (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
Network", 2015) as a :data:`~prunepilot.training.LossFn` hook for :func:`~prunepilot.training.fit`.

The student is trained on a mix of the teacher's softened outputs and the labels::

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
         + (1 - alpha) * cross_entropy(student, labels)

The ``T^2`` factor keeps the soft term's gradients on the scale of the hard term's as ``T``
grows (the soft targets' gradients shrink as ``1 / T^2``). ``alpha = 0`` is plain cross-entropy;
``alpha = 1`` ignores the labels.

Example:
    >>> from prunepilot.training import DistillConfig, distillation_loss, fit
    >>> loss_fn = distillation_loss(teacher, DistillConfig(temperature=4.0, alpha=0.9))  # doctest: +SKIP
    >>> fit(student, loader, cfg, loss_fn=loss_fn)                                      # doctest: +SKIP
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from prunepilot.training.trainer import LossFn


class DistillConfig(BaseModel):
    """Logit distillation settings."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    temperature: float = Field(default=4.0, gt=0)
    """Softmax temperature ``T`` applied to both teacher and student logits (1 = no softening)."""

    alpha: float = Field(default=0.9, ge=0, le=1)
    """Weight of the distillation term; ``1 - alpha`` weighs the cross-entropy with the labels."""

    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    """Label smoothing of the hard (cross-entropy) term."""


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.9,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Hinton et al.'s distillation loss of one batch (mean over the batch).

    Args:
        student_logits: ``(N, classes)`` logits of the model being trained.
        teacher_logits: ``(N, classes)`` logits of the teacher (no gradient flows into them).
        targets: ``(N,)`` class labels.
        temperature: Softening temperature ``T > 0``.
        alpha: Weight of the soft term in ``[0, 1]``.
        label_smoothing: Label smoothing of the hard term.

    Returns:
        ``alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, targets)``.
    """
    if temperature <= 0 or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"need temperature > 0 and alpha in [0, 1]; got temperature={temperature}, alpha={alpha}")
    hard = F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    if alpha == 0.0:
        return hard
    t = float(temperature)
    log_student = F.log_softmax(student_logits / t, dim=1)
    log_teacher = F.log_softmax(teacher_logits.detach() / t, dim=1)
    soft = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * (t * t)
    return alpha * soft + (1.0 - alpha) * hard


def distillation_loss(teacher: nn.Module, cfg: DistillConfig | None = None) -> LossFn:
    """A :func:`fit` loss hook distilling ``teacher`` (put in eval mode) into the model.

    The teacher runs without gradients (``torch.no_grad``) on the same inputs as the student; it
    must be on the same device as the student. Its parameters are left as they are: freezing
    them here would make every model later copied from the teacher untrainable (and a frozen
    model is one Torch-Pruning silently prunes nothing of).
    """
    cfg = cfg or DistillConfig()
    teacher.eval()

    def loss_fn(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(inputs)
        return kd_loss(model(inputs), teacher_logits, targets, cfg.temperature, cfg.alpha, cfg.label_smoothing)

    return loss_fn
