"""finetune_and_score: the same batches for every model, the model given left as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prunepilot.training import FinetuneScore, TrainConfig, evaluate_accuracy, finetune_and_score


def _loaders(shuffle_seed: int = 123) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 6, generator=g)
    y = (x[:, 0] > 0).long()
    data = TensorDataset(x, y)
    train = DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(shuffle_seed))
    return train, DataLoader(data, batch_size=16)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))


RECIPE = TrainConfig(epochs=2, lr=0.1, seed=5, max_batches_per_epoch=3)


def test_scores_before_and_after_each_seed_and_leaves_the_model_alone() -> None:
    train, test = _loaders()
    model = _model()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    score = finetune_and_score(model, train, test, RECIPE, seeds=[0, 1])
    assert isinstance(score, FinetuneScore) and len(score.after) == 2 and score.seconds > 0
    assert score.before == evaluate_accuracy(model, test)
    assert score.mean_after == pytest.approx(sum(score.after) / 2)
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def test_a_seed_gives_the_same_fine_tune_whatever_the_loader_drew_before() -> None:
    first, test = _loaders(shuffle_seed=1)
    second, _ = _loaders(shuffle_seed=2)
    for _batch in second:  # the second loader's shuffling has moved on; the seed resets it
        pass
    a = finetune_and_score(_model(), first, test, RECIPE, seeds=[3])
    b = finetune_and_score(_model(), second, test, RECIPE, seeds=[3])
    assert a.after == b.after
    (default,) = finetune_and_score(_model(), first, test, RECIPE).after  # one fine-tune, with recipe.seed
    assert default == finetune_and_score(_model(), second, test, RECIPE, seeds=[RECIPE.seed]).after[0]


def test_the_loss_given_is_the_one_trained_on() -> None:
    train, test = _loaders()
    calls: list[int] = []

    def loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        calls.append(len(targets))
        return nn.functional.cross_entropy(model(inputs), targets)

    finetune_and_score(_model(), train, test, RECIPE, seeds=[0], loss_fn=loss)
    assert calls == [8] * 6  # 2 epochs x 3 batches of 8


def test_no_seeds_is_an_error() -> None:
    train, test = _loaders()
    with pytest.raises(ValueError, match="at least one seed"):
        finetune_and_score(_model(), train, test, RECIPE, seeds=[])
