"""The widths a one-shot search may give each group: a lattice per group, and sampling on it.

Both one-shot methods move on the same lattice the rest of prunepilot uses: a group of ``C``
channels may keep any multiple of ``step = lcm(round_to, multiple)`` from the lower bound's
width up to ``C`` (full width is always allowed), exactly the widths
:meth:`~prunepilot.pruning.PruningPolicy.from_ratios` can produce. So every width
assignment drawn here turns into a policy with those very channels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from prunepilot.pruning import PruningPolicy, PruningSpace, round_width

Widths = dict[str, int]


@dataclass(frozen=True)
class WidthGrid:
    """Allowed widths per group, ascending (``choices[name][-1]`` is full width).

    Build with :meth:`from_space`.
    """

    names: tuple[str, ...]
    channels: dict[str, int]
    choices: dict[str, tuple[int, ...]]
    round_to: int

    @classmethod
    def from_space(cls, space: PruningSpace, lower_bound: float, round_to: int = 1) -> WidthGrid:
        """The lattice of ``space`` between keep ratio ``lower_bound`` and full width."""
        choices: dict[str, tuple[int, ...]] = {}
        for g in space.groups:
            step = math.lcm(max(1, round_to), max(1, g.multiple))
            low = round_width(lower_bound, g.channels, g.multiple, round_to)
            values = {w for w in range(step, g.channels + 1, step) if w >= low} | {g.channels}
            choices[g.name] = tuple(sorted(values))
        return cls(space.names, {g.name: g.channels for g in space.groups}, choices, round_to)

    # --- fixed points ---------------------------------------------------------------------
    def full(self) -> Widths:
        """Every group at full width."""
        return dict(self.channels)

    def smallest(self) -> Widths:
        """Every group at its smallest allowed width."""
        return {n: c[0] for n, c in self.choices.items()}

    # --- sampling ---------------------------------------------------------------------------
    def random(self, gen: torch.Generator) -> Widths:
        """Each group independently uniform over its allowed widths."""
        return {n: c[int(torch.randint(len(c), (1,), generator=gen))] for n, c in self.choices.items()}

    def random_around(self, gen: torch.Generator, spread: float = 0.25) -> Widths:
        """A random overall level, then each group jittered around it (in lattice positions).

        Per-group uniform draws concentrate the model's cost around one value; drawing a
        level first covers small and large models alike, which makes rejection sampling
        into a cost band efficient at any budget.
        """
        level = float(torch.rand((), generator=gen))
        out: Widths = {}
        for n, c in self.choices.items():
            pos = level + spread * (2.0 * float(torch.rand((), generator=gen)) - 1.0)
            out[n] = c[min(len(c) - 1, max(0, round(pos * (len(c) - 1))))]
        return out

    def mutate(self, widths: Mapping[str, int], prob: float, gen: torch.Generator) -> Widths:
        """Each group redrawn uniformly with probability ``prob`` (at least one group changes)."""
        out = dict(widths)
        flips = torch.rand(len(self.names), generator=gen) < prob
        if not bool(flips.any()):
            flips[int(torch.randint(len(self.names), (1,), generator=gen))] = True
        for name, flip in zip(self.names, flips.tolist(), strict=True):
            if flip:
                c = self.choices[name]
                out[name] = c[int(torch.randint(len(c), (1,), generator=gen))]
        return out

    def crossover(self, a: Mapping[str, int], b: Mapping[str, int], gen: torch.Generator) -> Widths:
        """Each group's width taken from ``a`` or ``b`` with equal probability."""
        pick = (torch.rand(len(self.names), generator=gen) < 0.5).tolist()
        return {n: int(a[n] if p else b[n]) for n, p in zip(self.names, pick, strict=True)}

    # --- moves ------------------------------------------------------------------------------
    def step_down(self, widths: Mapping[str, int], name: str, fraction: float) -> int | None:
        """Width of group ``name`` one slimming step below ``widths[name]``, or None at the floor.

        A step removes about ``fraction`` of the group's full channels, rounded to the lattice,
        and always at least one lattice position.
        """
        c = self.choices[name]
        pos = c.index(int(widths[name]))
        if pos == 0:
            return None
        target = widths[name] - fraction * self.channels[name]
        below = [w for w in c[:pos] if w >= target - 1e-9]
        return below[0] if below else c[pos - 1]

    # --- conversion -------------------------------------------------------------------------
    def contains(self, widths: Mapping[str, int]) -> bool:
        """Whether every group's width is on the lattice."""
        return set(widths) == set(self.names) and all(int(widths[n]) in self.choices[n] for n in self.names)

    def key(self, widths: Mapping[str, int]) -> tuple[int, ...]:
        """Hashable identity of a width assignment (group order)."""
        return tuple(int(widths[n]) for n in self.names)

    def policy(
        self, space: PruningSpace, widths: Mapping[str, int], importance: str, **metadata: object
    ) -> PruningPolicy:
        """The policy with exactly ``widths`` (raises if rounding would change a width)."""
        ratios = {n: int(widths[n]) / self.channels[n] for n in self.names}
        policy = PruningPolicy.from_ratios(
            space, ratios, round_to=self.round_to, importance=importance, metadata=dict(metadata)
        )
        if policy.channels != {n: int(widths[n]) for n in self.names}:
            bad = {n: (widths[n], policy.channels[n]) for n in self.names if policy.channels[n] != widths[n]}
            raise ValueError(f"widths off the lattice (asked, got): {bad}; use WidthGrid choices")
        return policy
