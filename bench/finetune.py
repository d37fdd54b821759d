"""The standard fine-tune every benchmark gives a pruned model before its test accuracy is read.

Distillation from the unpruned base (``prunepilot.training.distillation_loss``), one pass of
``batches`` training batches of the training split, SGD lr 0.01 with a cosine schedule, seed 0,
then accuracy on the test split. The same recipe for every policy a benchmark compares (each
strategy's best, uniform pruning, the peers, a scoring study's random policies), so the
differences between their test accuracies are the policies', not the training's.
"""

from __future__ import annotations

from torch import nn

from prunepilot.pruning import PruningPolicy
from prunepilot.search.evaluator import Evaluator
from prunepilot.training import TrainConfig, distillation_loss, finetune_and_score

#: training batches of the standard fine-tune (of the evaluator's training batch size)
BATCHES = 100


def standard_recipe(batches: int = BATCHES, seed: int = 0) -> TrainConfig:
    """The recipe: one epoch capped at ``batches`` batches, lr 0.01, cosine, seed 0 (``seed``: for
    measuring the recipe's own seed noise, ``bench/finetune_noise.py``)."""
    return TrainConfig(epochs=1, lr=0.01, schedule="cosine", seed=seed, max_batches_per_epoch=batches)


def finetune_test(
    ev: Evaluator, policy: PruningPolicy, batches: int = BATCHES, model: nn.Module | None = None, seed: int = 0
) -> float:
    """``policy`` applied to ``ev``'s base (the search's prune, then BN recalibration), fine-tuned by
    the standard recipe with the base as teacher; its accuracy on the test split. ``model``: that
    pruned, recalibrated model already made (it is trained in place); ``seed``: the recipe's."""
    model = model if model is not None else ev.prune(policy)
    result = finetune_and_score(
        model, ev.data.train, ev.data.test, standard_recipe(batches, seed), loss_fn=distillation_loss(ev.model)
    )
    return float(result.after[0])
