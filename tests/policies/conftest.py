"""A small, instant pruning environment for agent tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from prunepilot.envs import PruningEnv
from prunepilot.envs.testing import proxy_evaluate, roofline_latency
from prunepilot.models import build_model
from prunepilot.pruning import PruningSpace


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Agents' networks are tiny: one thread is faster, and steady on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_space() -> PruningSpace:
    torch.manual_seed(0)
    return PruningSpace.build(build_model("testing:tiny-convnet").eval(), torch.randn(1, 3, 16, 16))


@pytest.fixture
def make_tiny_env(tiny_space: PruningSpace) -> Callable[..., PruningEnv]:
    """``make_tiny_env(fraction=0.5, **env_kwargs)``: proxy accuracy, roofline latency."""

    def make(fraction: float = 0.5, **kwargs: object) -> PruningEnv:
        latency = roofline_latency(tiny_space)
        budget = fraction * latency(tiny_space.full_widths())
        return PruningEnv(tiny_space, proxy_evaluate(tiny_space, latency), latency, budget, **kwargs)  # type: ignore[arg-type]

    return make
