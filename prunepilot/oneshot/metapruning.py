"""MetaPruning (Liu et al., "MetaPruning: Meta Learning for Automatic Neural Network Channel
Pruning", ICCV 2019): a PruningNet that generates weights for any width assignment.

**PruningNet.** Every conv/linear layer of the :class:`~prunepilot.oneshot.supernet.Supernet`
gets a weight generator, MetaPruning's two fully connected layers
``FC(2 -> hidden) -> ReLU -> FC(hidden -> numel(W))``, fed with the layer's *width encoding*
``(out width / out channels, in width / in channels)`` of the groups on its two sides (1.0 for
a side in no group). It produces the layer's **full** weight tensor; the slim layer then takes
its leading channels, exactly as for a slimmable supernet. Batch-norm layers are shared and
recalibrated per candidate.

**Training** (the expensive, checkpointed phase): each step draws one random width assignment
(each group uniform on the lattice), generates the weights and trains end to end on the batch
with cross-entropy; the gradients flow into the generators.

**Search** (:mod:`prunepilot.oneshot.evolution`): candidates are scored with generated weights
after BN recalibration at their widths, on held-out batches. Nothing is retrained.

One deliberate difference from the paper: the generator's output layer starts with zero weights
and its bias set to the trained base model's (importance-ordered) weights, so the PruningNet
starts as the pretrained network at every encoding and learns encoding-dependent corrections
(the paper trains the PruningNet from scratch on ImageNet, which is out of reach on a CPU).
Memory: a generator holds ``(hidden + 1) * numel(W)`` parameters per layer, so the PruningNet has
about ``hidden + 1`` times the model's conv/linear weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from prunepilot.oneshot.supernet import Batches, LayerInfo, Score, Supernet
from prunepilot.oneshot.training import BatchStream, OneShotTraining, StepFn, TrainResult, train_steps
from prunepilot.oneshot.widths import WidthGrid


class PruningNetTraining(OneShotTraining):
    """Training of the PruningNet (one random encoding per batch)."""

    hidden: int = Field(32, ge=1, description="Hidden units of each weight generator (the paper uses 32).")


class WeightGenerator(nn.Module):
    """``FC(2, hidden) -> ReLU -> FC(hidden, numel)``: a layer's full weight from its encoding."""

    def __init__(self, weight: torch.Tensor, hidden: int) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in weight.shape)
        self.fc1 = nn.Linear(2, hidden)
        self.fc2 = nn.Linear(hidden, weight.numel())
        with torch.no_grad():
            self.fc2.weight.zero_()
            self.fc2.bias.copy_(weight.detach().reshape(-1))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(code))).view(self.shape)


class PruningNet(nn.Module):
    """A supernet whose conv/linear weights come from per-layer weight generators.

    ``pruning_net(x, widths)`` runs the network at ``widths`` with generated weights. The
    supernet's own conv/linear weights are frozen (they only seeded the generators); batch
    norms and biases are shared, trainable parameters. The generators' random initialisation
    depends on ``seed`` only (not on the global RNG), so rebuilding it to resume is exact.
    """

    def __init__(self, supernet: Supernet, hidden: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.supernet = supernet
        self.body = supernet.model
        self.infos: tuple[LayerInfo, ...] = supernet.layers
        modules = dict(self.body.named_modules())
        gens = []
        with torch.random.fork_rng(devices=[]):  # the initialisation depends on `seed` only
            torch.manual_seed(seed)
            for info in self.infos:
                weight = modules[info.name].weight
                weight.requires_grad_(False)
                gens.append(WeightGenerator(weight, hidden))
        self.generators = nn.ModuleList(gens)
        self.channels = supernet.space.full_widths()

    def encoding(self, info: LayerInfo, widths: Mapping[str, int]) -> torch.Tensor:
        """``(out ratio, in ratio)`` of one layer at ``widths``."""

        def ratio(group: str | None) -> float:
            return 1.0 if group is None else int(widths.get(group, self.channels[group])) / self.channels[group]

        return torch.tensor([ratio(info.out_group), ratio(info.in_group)])

    def generate(self, widths: Mapping[str, int]) -> dict[str, torch.Tensor]:
        """Full-size weights of every conv/linear layer for ``widths``."""
        return {
            info.name: gen(self.encoding(info, widths)) for info, gen in zip(self.infos, self.generators, strict=True)
        }

    def forward(self, x: torch.Tensor, widths: Mapping[str, int]) -> torch.Tensor:
        with self.supernet.at(widths, self.generate(widths)):
            out: torch.Tensor = self.body(x)
        return out

    @torch.no_grad()
    def score(self, widths: Mapping[str, int], calib: Batches, val: Batches) -> Score:
        """Generated weights, BN recalibrated at ``widths``, accuracy and loss on ``val``."""
        return self.supernet.score(widths, calib, val, weights=self.generate(widths))


def random_encoding_step(net: PruningNet, grid: WidthGrid) -> StepFn:
    """MetaPruning's training step: one random width assignment for the whole batch."""

    def step(_step: int, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> float:
        loss = F.cross_entropy(net(x, grid.random(gen)), y)
        loss.backward()
        return float(loss.detach())

    return step


def train_pruningnet(
    net: PruningNet,
    grid: WidthGrid,
    stream: BatchStream,
    cfg: PruningNetTraining,
    *,
    seed: int,
    checkpoint: Path | None = None,
    stop_after: int | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train the PruningNet with a random encoding per batch, checkpointed and resumable."""
    identity = {
        "method": "metapruning",
        "grid": {n: list(c) for n, c in grid.choices.items()},
        "signature": net.supernet.space.signature,
        "importance": net.supernet.importance,
    }
    return train_steps(
        net,
        random_encoding_step(net, grid),
        stream,
        cfg,
        seed=seed,
        checkpoint=checkpoint,
        identity=identity,
        stop_after=stop_after,
        log=log,
    )
