"""Evolutionary search over width assignments under a latency band (MetaPruning's search).

As in MetaPruning (Liu et al., ICCV 2019, section 3.3): a random initial population; each
generation keeps the ``parents`` best individuals seen so far (top-k), and breeds the next
population from them by **mutation** (each group redrawn with probability ``mutation_prob``) and
**crossover** (each group from one of two parents). The constraint is enforced by
**rejection**: a draw is kept only if its predicted latency lies in
``[min_budget_use * budget, budget]``, so no candidate exceeds the budget and none is
needlessly small. When no draw lands in that band (a budget near the lattice's floor, where
few assignments are that fast), the floor is dropped and the search runs in ``[0, budget]``
(:attr:`EvolutionResult.floor_relaxed`); only a budget below every assignment raises.
Scoring is the caller's (generated weights plus BN recalibration for MetaPruning); nothing
is trained here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict, Field

from prunepilot.oneshot.supernet import Score
from prunepilot.oneshot.widths import WidthGrid, Widths


class EvolutionSearch(BaseModel):
    """Settings of the evolutionary search."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    population: int = Field(16, ge=2, description="Individuals scored per generation.")
    parents: int = Field(6, ge=1, description="Top-k individuals (over all generations) that breed the next one.")
    generations: int = Field(8, ge=1, description="Generations, the random initial one included.")
    mutation_prob: float = Field(0.1, gt=0, le=1, description="Per-group probability of a redraw in a mutation.")
    crossover_share: float = Field(
        0.5, ge=0, le=1, description="Share of each new population made by crossover (rest: mutation)."
    )
    min_budget_use: float = Field(
        0.9, ge=0, le=1, description="Lower bound on predicted latency as a share of the budget (rejection below it)."
    )
    max_attempts: int = Field(
        200, ge=1, description="Draws per wanted individual before giving up on filling a population."
    )


@dataclass(frozen=True)
class Individual:
    """One scored width assignment."""

    widths: Widths
    latency_ms: float
    score: Score
    generation: int


@dataclass
class EvolutionResult:
    """Every individual scored (best first in :attr:`ranked`) and the rejection counts.

    ``floor_ms`` is the band's lower end actually used: 0 when ``floor_relaxed`` (no draw fell
    in ``[min_budget_use * budget, budget]``, so the floor was dropped).
    """

    budget_ms: float
    floor_ms: float
    individuals: list[Individual] = field(default_factory=list)
    floor_relaxed: bool = False
    rejected_over: int = 0
    rejected_under: int = 0
    duplicates: int = 0
    seconds: float = 0.0

    @property
    def ranked(self) -> list[Individual]:
        """Individuals by proxy score, best first."""
        return sorted(self.individuals, key=lambda i: i.score.key(), reverse=True)


def evolve(
    score_fn: Callable[[Mapping[str, int]], Score],
    grid: WidthGrid,
    latency_of: Callable[[Mapping[str, int]], float],
    budget_ms: float,
    cfg: EvolutionSearch,
    gen: torch.Generator,
    log: Callable[[str], None] | None = None,
) -> EvolutionResult:
    """Search width assignments with predicted latency in ``[min_budget_use*budget, budget]``.

    If no draw falls in the band, the floor is dropped (``floor_relaxed``) and the search runs in
    ``[0, budget]``.

    Raises:
        ValueError: no assignment within the budget was found (the message gives the reachable range).
    """
    began = time.perf_counter()
    res = EvolutionResult(budget_ms, cfg.min_budget_use * budget_ms)
    seen: dict[tuple[int, ...], Individual] = {}

    def draw(make: Callable[[], Widths], want: int) -> list[tuple[Widths, float]]:
        out: list[tuple[Widths, float]] = []
        keys: set[tuple[int, ...]] = set()
        for _ in range(want * cfg.max_attempts):
            if len(out) >= want:
                break
            w = make()
            key = grid.key(w)
            if key in seen or key in keys:
                res.duplicates += 1
                continue
            lat = latency_of(w)
            if lat > budget_ms:
                res.rejected_over += 1
            elif lat < res.floor_ms:
                res.rejected_under += 1
            else:
                keys.add(key)
                out.append((w, lat))
        return out

    population = draw(lambda: grid.random_around(gen), cfg.population)
    lowest = latency_of(grid.smallest())
    if not population and res.floor_ms > 0:
        if log:
            log(f"no assignment in [{res.floor_ms:.4g}, {budget_ms:.4g}] ms; searching [0, {budget_ms:.4g}] ms")
        res.floor_ms, res.floor_relaxed = 0.0, True
        population = draw(lambda: grid.random_around(gen), cfg.population)
        if not population and lowest <= budget_ms:
            population = [(grid.smallest(), lowest)]  # the floor itself fits: breed from it
    if not population:
        lo, hi = lowest, latency_of(grid.full())
        raise ValueError(
            f"no width assignment with predicted latency at most {budget_ms:.4g} ms was found "
            f"in {cfg.population * cfg.max_attempts} draws; this lattice reaches [{lo:.4g}, {hi:.4g}] ms. "
            "Raise the budget or lower evaluation.lower_bound"
        )
    for generation in range(cfg.generations):
        for w, lat in population:
            if grid.key(w) in seen:  # bred twice (once by mutation, once by crossover)
                res.duplicates += 1
                continue
            ind = Individual(w, lat, score_fn(w), generation)
            seen[grid.key(w)] = ind
            res.individuals.append(ind)
        top = res.ranked[: cfg.parents]
        if log:
            best = top[0]
            log(
                f"generation {generation}: {len(population)} scored, best acc {best.score.accuracy:.4f} "
                f"at {best.latency_ms:.3f} ms"
            )
        if generation == cfg.generations - 1:
            break
        n_cross = round(cfg.crossover_share * cfg.population) if len(top) > 1 else 0

        def pick(top: list[Individual] = top) -> Widths:
            return top[int(torch.randint(len(top), (1,), generator=gen))].widths

        children = draw(lambda: grid.mutate(pick(), cfg.mutation_prob, gen), cfg.population - n_cross)
        children += draw(lambda: grid.crossover(pick(), pick(), gen), n_cross)
        if not children:
            break  # the neighbourhood of the parents is exhausted
        population = children
    res.seconds = time.perf_counter() - began
    return res
