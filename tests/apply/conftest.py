from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from apply_helpers import calibrated, random_policy
from torch import nn

from prunepilot.models import build_model, save_checkpoint
from prunepilot.pruning import PruningPolicy, PruningSpace


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread (a shared 2-core machine), seeded; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_case(tmp_path: Path) -> Callable[..., tuple[nn.Module, Path, Path, PruningPolicy]]:
    """``make_case(spec, shape, seed, name=)`` -> (calibrated model, checkpoint, policy path, policy)."""

    def make(
        spec: str, shape: tuple[int, ...], seed: int = 0, num_classes: int = 10, name: str = "case"
    ) -> tuple[nn.Module, Path, Path, PruningPolicy]:
        torch.manual_seed(seed)
        model = calibrated(build_model(spec, num_classes=num_classes, in_channels=shape[1]), shape, seed)
        ckpt = save_checkpoint(model, tmp_path / f"{name}.pt")
        space = PruningSpace.build(model, torch.zeros(shape))
        policy = random_policy(space, seed)
        return model, ckpt, policy.save(tmp_path / f"{name}-policy.json"), policy

    return make
