"""Short fine-tunes that compare pruned models fairly, scored on a held-out split.

Comparing two pruning policies after a short fine-tune is only fair when both fine-tunes see
the same batches in the same order: :func:`finetune_and_score` re-seeds the training loader's
shuffling before each fine-tune, so the fine-tune with seed ``s`` of one model and of another
differ only by the models.

Example:
    >>> recipe = TrainConfig(epochs=1, lr=0.01, max_batches_per_epoch=100)
    >>> score = finetune_and_score(pruned, data.train, data.test, recipe, seeds=[0, 1, 2])  # doctest: +SKIP
    >>> score.before, score.mean_after  # doctest: +SKIP
    (0.31, 0.78)
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from prunepilot.training.resume import loader_generators
from prunepilot.training.trainer import LossFn, TrainConfig, evaluate_accuracy, fit

__all__ = ["FinetuneScore", "finetune_and_score"]


@dataclass(frozen=True)
class FinetuneScore:
    """Accuracy of a model before and after each of its fine-tunes.

    Attributes:
        before: Accuracy of the model as given (e.g. pruned and BN-recalibrated).
        after: Accuracy after each fine-tune, one per seed, in the order of the seeds.
        seconds: Wall time of the scoring and every fine-tune.
    """

    before: float
    after: tuple[float, ...]
    seconds: float

    @property
    def mean_after(self) -> float:
        """Mean accuracy over the fine-tunes."""
        return statistics.fmean(self.after)


def finetune_and_score(
    model: nn.Module,
    train_loader: Iterable[Any],
    test_loader: Iterable[Any],
    recipe: TrainConfig,
    seeds: Sequence[int] | None = None,
    loss_fn: LossFn | None = None,
) -> FinetuneScore:
    """Score ``model``, then fine-tune a copy of it once per seed and score each copy.

    Each fine-tune runs ``recipe`` with its ``seed`` replaced by the fine-tune's seed, after the
    training loader's shuffling generators are seeded with it too, so the fine-tunes with seed
    ``s`` of any two models see the same batches in the same order. ``model`` is not changed.

    Args:
        model: The model to fine-tune (copied for every fine-tune).
        train_loader: Fine-tuning batches (a DataLoader whose generator decides the shuffling).
        test_loader: The batches every accuracy is measured on.
        recipe: Optimizer, schedule, epochs and batches per epoch of every fine-tune.
        seeds: One fine-tune per seed; default: one, with ``recipe.seed``.
        loss_fn: The training loss (see :func:`~prunepilot.training.fit`), e.g.
            :func:`~prunepilot.training.distillation_loss` of the unpruned model; default
            cross-entropy.
    """
    seeds = [recipe.seed] if seeds is None else list(seeds)
    if not seeds:
        raise ValueError("finetune_and_score needs at least one seed; give seeds=None for one with recipe.seed")
    started = time.perf_counter()
    before = evaluate_accuracy(model, test_loader)
    after = []
    for seed in seeds:
        tuned = copy.deepcopy(model)
        for generator in loader_generators(train_loader):
            generator.manual_seed(seed)
        fit(tuned, train_loader, recipe.model_copy(update={"seed": seed}), loss_fn=loss_fn)
        after.append(evaluate_accuracy(tuned, test_loader))
    return FinetuneScore(before=before, after=tuple(after), seconds=time.perf_counter() - started)
