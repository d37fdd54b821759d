"""Known answers for the literature criteria: each drops the channel a hand-built network makes
useless, which l1 (checked on the same network) keeps because that channel has the largest weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from prunepilot.errors import PruningError
from prunepilot.pruning import PruningPolicy, PruningSpace, adapter, apply_policy, criteria

X = torch.randn(1, 3, 8, 8)


class TwoConv(nn.Module):
    """conv1 (4 ch) -> BN -> ReLU -> conv2 (6 ch) -> BN -> ReLU -> GAP -> fc: group ``conv1``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def _net(useless: str, seed: int) -> TwoConv:
    """Channel 0 of ``conv1`` has 10x the weights and BN scale 5 (l1 and bn-scale keep it), but is
    ``dead`` (BN shift -1000: its ReLU never fires) or ``ignored`` (conv2 reads it with zero weights)."""
    torch.manual_seed(seed)
    model = TwoConv().eval()
    with torch.no_grad():
        model.conv1.weight[0] *= 10.0
        model.bn1.weight[0] = 5.0
        if useless == "dead":
            model.bn1.bias[0] = -1000.0
        else:
            model.conv2.weight[:, 0] = 0.0
    return model


def _batches(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 8, 8, generator=gen), torch.randint(0, 3, (8,), generator=gen)) for _ in range(2)]


def _kept_by(
    model: nn.Module, importance: str, batches: list[tuple[torch.Tensor, torch.Tensor]] | None
) -> tuple[int, ...]:
    space = PruningSpace.build(model, X)
    policy = PruningPolicy.from_widths(space, {"conv1": 3}, importance=importance)
    kept: adapter.KeptIndices = {}
    pruned = apply_policy(model, policy, X, space=space, calib_batches=batches, kept=kept)
    assert pruned.conv1.out_channels == 3
    # the kept rows are the unpruned model's rows at the recorded indices
    assert torch.equal(pruned.conv1.weight, model.conv1.weight[list(kept[("conv1", "out")])])
    return kept[("conv1", "out")]


KNOWN_ANSWERS = [
    ("grad-magnitude", "dead"),  # no gradient reaches a dead channel's weights or its consumers' columns
    ("snip", "ignored"),  # |w * g| is 0: no gradient on its rows, zero weights on its consumer columns
    ("grasp", "dead"),  # w * Hg is 0 for a dead channel; live channels carry gradient flow (> 0)
    ("synflow", "ignored"),  # no synaptic flow through zero consumer weights (data-free)
    ("thinet", "ignored"),  # the next layer's output does not depend on it: removed first
]


@pytest.mark.parametrize(("criterion", "useless"), KNOWN_ANSWERS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_criterion_drops_the_useless_channel_that_l1_keeps(criterion: str, useless: str, seed: int) -> None:
    model, batches = _net(useless, seed), _batches(seed)
    assert 0 in _kept_by(model, "l1", batches)  # the case discriminates: l1 keeps the big channel
    assert _kept_by(model, criterion, None if criterion == "synflow" else batches) == (1, 2, 3)


@pytest.mark.parametrize(("criterion", "useless"), KNOWN_ANSWERS)
def test_useless_channel_scores_lowest_in_group_scores(criterion: str, useless: str) -> None:
    model, batches = _net(useless, 0), _batches(0)
    scores = adapter.group_scores(model, X, criterion, calib_batches=batches)["conv1"]
    assert int(scores.argmin()) == 0 and bool((scores[1:] > scores[0]).all())
    l1 = adapter.group_scores(model, X, "l1")["conv1"]
    assert int(l1.argmax()) == 0


def test_grasp_keeps_the_channel_whose_consumer_weights_still_learn() -> None:
    # GraSP preserves gradient *flow*: an ignored channel's consumer columns have gradients (they
    # would grow), so, unlike SNIP, GraSP keeps it -- a different answer from the same network.
    model, batches = _net("ignored", 0), _batches(0)
    assert int(adapter.group_scores(model, X, "grasp", calib_batches=batches)["conv1"].argmax()) == 0
    assert int(adapter.group_scores(model, X, "snip", calib_batches=batches)["conv1"].argmin()) == 0


def test_synflow_is_iterative_and_ranks_by_elimination_round() -> None:
    model = _net("ignored", 0)
    scores = adapter.group_scores(model, X, "synflow")["conv1"]
    # masked one at a time towards the narrowest width: four distinct rounds, survivor on top
    assert sorted(int(s) for s in scores) == sorted({int(s) for s in scores})
    assert float(scores.max()) > criteria.SYNFLOW_ROUNDS
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapter.group_scores(model, X, "synflow")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # linearisation undone
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_greedy_order_is_thinets_choice_at_every_width() -> None:
    gen = torch.Generator().manual_seed(0)
    contrib = torch.randn(50, 6, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 0.1, 2.0, 0.5, 1.0, 0.2])
    gram = contrib.T @ contrib
    order = criteria.greedy_removal_order(gram)
    removed: list[int] = []
    for step in range(6):  # ThiNet: add the channel whose removal adds least error to what is removed
        rest = [j for j in range(6) if j not in removed]
        best = min(rest, key=lambda j: float(contrib[:, [*removed, j]].sum(1).pow(2).sum()))
        assert int(order[best]) == step
        removed.append(best)


@pytest.mark.parametrize("criterion", sorted(criteria.DATA_DEPENDENT))
def test_data_dependent_criteria_without_batches_name_the_data_free_ones(criterion: str) -> None:
    model = _net("dead", 0)
    space = PruningSpace.build(model, X)
    policy = PruningPolicy.from_widths(space, {"conv1": 3}, importance=criterion)
    with pytest.raises(PruningError, match=f"importance '{criterion}' needs calibration batches") as info:
        apply_policy(model, policy, X, space=space)
    assert "'synflow'" in str(info.value) and "'l1'" in str(info.value)


@pytest.mark.parametrize("criterion", sorted(criteria.CRITERIA))
@pytest.mark.parametrize("spec", ["testing:tiny-residual", "testing:tiny-depthwise"])
def test_new_criteria_prune_coupled_models(criterion: str, spec: str) -> None:
    from prunepilot.models import build_model

    model = build_model(spec, num_classes=10, in_channels=3).eval()
    x = torch.randn(2, 3, 16, 16)
    space = PruningSpace.build(model, x)
    batches = [(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,)))]
    policy = PruningPolicy.uniform(space, 0.5, importance=criterion)
    pruned = apply_policy(model, policy, x, space=space, calib_batches=batches)
    assert PruningSpace.build(pruned, x).full_widths() == policy.channels


@pytest.mark.parametrize("criterion", sorted(criteria.CRITERIA))
def test_policy_files_accept_the_new_criteria(criterion: str, tmp_path: Path) -> None:
    space = PruningSpace.build(_net("dead", 0), X)
    path = PruningPolicy.uniform(space, 0.5, importance=criterion).save(tmp_path / "policy.json")
    assert PruningPolicy.load(path).importance == criterion
    assert criterion in adapter.IMPORTANCE_CRITERIA and adapter.canonical_importance(criterion.upper()) == criterion


@pytest.mark.parametrize(("padding", "mode", "works"), [("same", "zeros", True), (1, "reflect", False)])
def test_thinet_reads_zero_padded_consumers_and_names_the_others(padding: object, mode: str, works: bool) -> None:
    model = _net("ignored", 0)
    model.conv2 = nn.Conv2d(4, 6, 3, padding=padding, padding_mode=mode, bias=False)  # type: ignore[arg-type]
    with torch.no_grad():
        model.conv2.weight[:, 0] = 0.0
    if works:
        assert int(adapter.group_scores(model, X, "thinet", calib_batches=_batches(0))["conv1"].argmin()) == 0
        return
    with pytest.raises(PruningError, match="importance 'thinet' scores group 'conv1'") as info:
        adapter.group_scores(model, X, "thinet", calib_batches=_batches(0))
    assert "padding_mode=reflect" in str(info.value) and "'taylor'" in str(info.value)
