"""The expensive phase checkpoints and resumes: interrupted + resumed == uninterrupted (same seed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from oneshot_helpers import Zoo, make_zoo, tiny_data

from prunepilot.errors import CheckpointError
from prunepilot.oneshot import (
    BatchStream,
    PruningNet,
    PruningNetTraining,
    SlimmableTraining,
    Supernet,
    WidthGrid,
    load_state,
    train_pruningnet,
    train_slimmable,
)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_autoslim_resumes_to_the_same_weights(zoo: Zoo, tmp_path: Path) -> None:
    cfg = SlimmableTraining(steps=5, batch_size=8, checkpoint_every=2, random_widths=1, lr=0.05)
    grid = WidthGrid.from_space(zoo.space, 0.25)
    stream = BatchStream(tiny_data(24), 8, seed=3)  # 3 batches per epoch: the run crosses epochs

    straight = Supernet.build(zoo.model, zoo.example, space=zoo.space, verify=False)
    full = train_slimmable(straight, grid, stream, cfg, seed=3, checkpoint=tmp_path / "a.pt")
    assert full.steps == 5 and full.resumed_from == 0

    first = Supernet.build(zoo.model, zoo.example, space=zoo.space, verify=False)
    part = train_slimmable(first, grid, stream, cfg, seed=3, checkpoint=tmp_path / "b.pt", stop_after=3)
    assert part.steps == 3 and load_state(tmp_path / "b.pt")["step"] == 3
    # A new process would build a fresh supernet and find the checkpoint.
    second = Supernet.build(zoo.model, zoo.example, space=zoo.space, verify=False)
    rest = train_slimmable(second, grid, stream, cfg, seed=3, checkpoint=tmp_path / "b.pt")
    assert rest.resumed_from == 3 and rest.losses == full.losses
    assert _equal(_state(second.model), _state(straight.model))
    assert not _equal(_state(second.model), _state(Supernet.build(zoo.model, zoo.example, verify=False).model))

    # A finished checkpoint is not trained again; another config is refused.
    again = train_slimmable(second, grid, stream, cfg, seed=3, checkpoint=tmp_path / "b.pt")
    assert again.resumed_from == 5 and again.seconds < 1.0
    with pytest.raises(CheckpointError, match="another config"):
        train_slimmable(second, grid, stream, cfg, seed=4, checkpoint=tmp_path / "b.pt")


@pytest.mark.parametrize("spec", ["resnet20", "mobilenetv2"])
def test_metapruning_resumes_to_the_same_weights(spec: str, tmp_path: Path) -> None:
    zoo = make_zoo(spec)
    cfg = PruningNetTraining(steps=4, batch_size=8, checkpoint_every=2, hidden=2, lr=0.01)
    grid = WidthGrid.from_space(zoo.space, 0.25)
    stream = BatchStream(tiny_data(24), 8, seed=0)

    def fresh() -> PruningNet:
        return PruningNet(Supernet.build(zoo.model, zoo.example, space=zoo.space, verify=False), hidden=2)

    straight = fresh()
    full = train_pruningnet(straight, grid, stream, cfg, seed=0, checkpoint=tmp_path / "a.pt")
    first = fresh()
    train_pruningnet(first, grid, stream, cfg, seed=0, checkpoint=tmp_path / "b.pt", stop_after=1)
    second = fresh()
    rest = train_pruningnet(second, grid, stream, cfg, seed=0, checkpoint=tmp_path / "b.pt")
    assert rest.resumed_from == 1 and rest.losses == full.losses
    assert _equal(_state(second), _state(straight))
    # The checkpoint is plain tensors and containers: it loads with weights_only=True.
    state = torch.load(tmp_path / "b.pt", weights_only=True)
    assert state["step"] == 4 and "optimizer" in state and "rng" in state
