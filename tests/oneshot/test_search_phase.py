"""The search phases: AutoSlim's greedy path and MetaPruning's evolutionary search (no training)."""

from __future__ import annotations

import pytest
import torch
from oneshot_helpers import Zoo, batches, tiny_data

from prunepilot.oneshot import (
    EvolutionSearch,
    GreedySlimming,
    PathStep,
    PruningNet,
    Score,
    Supernet,
    WidthGrid,
    evolve,
    greedy_slim,
)
from prunepilot.pruning import apply_policy


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_autoslim_path_is_monotone_and_valid(zoo: Zoo) -> None:
    sup = Supernet.build(zoo.model, zoo.example, space=zoo.space, verify=False)
    grid = WidthGrid.from_space(zoo.space, 0.3, round_to=2)
    data = batches(tiny_data(16), 8)
    latency = lambda w: zoo.space.macs(w) / 1e6  # noqa: E731 - a predicted latency: MACs
    stop = 0.6 * latency(grid.full())
    before = _params(sup.model)
    res = greedy_slim(
        sup,
        grid,
        latency,
        data[:1],
        data[1:],
        stop_ms=stop,
        cfg=GreedySlimming(step_fraction=0.5, criterion="accuracy_per_ms"),
    )
    assert _params(sup.model).keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in _params(sup.model).items())  # the search trains nothing
    lats = [p.latency_ms for p in res.path]
    assert len(lats) >= 3
    assert lats[0] == latency(grid.full()) and all(b < a for a, b in zip(lats, lats[1:], strict=False))
    assert lats[-1] <= stop < lats[-2]
    for i, step in enumerate(res.path):
        assert step.index == i and grid.contains(step.widths)
        if i:
            changed = [n for n in grid.names if step.widths[n] != res.path[i - 1].widths[n]]
            assert changed == [step.slimmed] and step.widths[step.slimmed] < res.path[i - 1].widths[step.slimmed]
    last = grid.policy(zoo.space, res.path[-1].widths, "l1")
    pruned = apply_policy(zoo.model, last, zoo.example, space=zoo.space)  # the apply step takes it unchanged
    assert pruned(zoo.example).shape == zoo.model(zoo.example).shape


def _fake_score(widths: dict[str, int]) -> Score:
    return Score(accuracy=sum(widths.values()) % 97 / 97, loss=1.0)


@pytest.mark.parametrize("min_use", [0.9, 0.6])
def test_evolution_respects_budget_and_floor(zoo: Zoo, min_use: float) -> None:
    grid = WidthGrid.from_space(zoo.space, 0.2)
    latency = lambda w: zoo.space.macs(w) / 1e6  # noqa: E731
    budget = 0.4 * latency(grid.full())
    cfg = EvolutionSearch(population=10, parents=4, generations=4, min_budget_use=min_use)
    res = evolve(_fake_score, grid, latency, budget, cfg, torch.Generator().manual_seed(0))
    assert len(res.individuals) >= 20
    assert all(min_use * budget <= i.latency_ms <= budget for i in res.individuals)
    assert res.rejected_over > 0 and res.rejected_under > 0  # rejection did the constraining
    keys = [grid.key(i.widths) for i in res.individuals]
    assert len(keys) == len(set(keys))  # nobody is scored twice
    ranked = res.ranked
    assert ranked[0].score.key() == max(i.score.key() for i in res.individuals)
    assert {i.generation for i in res.individuals} == {0, 1, 2, 3}


def test_evolution_reports_an_unreachable_band(zoo: Zoo) -> None:
    grid = WidthGrid.from_space(zoo.space, 0.5)
    latency = lambda w: zoo.space.macs(w) / 1e6  # noqa: E731
    with pytest.raises(ValueError, match="this lattice reaches"):
        evolve(
            _fake_score,
            grid,
            latency,
            0.05 * latency(grid.full()),
            EvolutionSearch(max_attempts=5),
            torch.Generator().manual_seed(0),
        )


def test_metapruning_search_with_generated_weights(zoo: Zoo) -> None:
    sup = Supernet.build(zoo.model, zoo.example, space=zoo.space, verify=False)
    net = PruningNet(sup, hidden=2).eval()
    grid = WidthGrid.from_space(zoo.space, 0.25)
    x = torch.randn(2, *zoo.example.shape[1:])
    widths = grid.random(torch.Generator().manual_seed(1))
    with torch.no_grad(), sup.at(widths):
        plain = sup(x)
    with torch.no_grad():
        generated = net(x, widths)  # untrained generators reproduce the base weights at every encoding
    assert torch.allclose(plain, generated, atol=1e-5, rtol=1e-4)
    data = batches(tiny_data(16), 8)
    latency = lambda w: zoo.space.macs(w) / 1e6  # noqa: E731
    budget = 0.5 * latency(grid.full())
    before = _params(net)
    with torch.no_grad():
        res = evolve(
            lambda w: net.score(w, data[:1], data[1:]),
            grid,
            latency,
            budget,
            EvolutionSearch(population=4, parents=2, generations=2, min_budget_use=0.8),
            torch.Generator().manual_seed(0),
        )
    assert all(torch.equal(before[k], v) for k, v in _params(net).items())
    assert all(0.8 * budget <= i.latency_ms <= budget for i in res.individuals)
    assert 0.0 <= res.ranked[0].score.accuracy <= 1.0


def test_autoslim_max_trials_scores_a_seeded_subset_per_step(zoo: Zoo) -> None:
    sup = Supernet.build(zoo.model, zoo.example, space=zoo.space, verify=False)
    grid = WidthGrid.from_space(zoo.space, 0.3, round_to=2)
    data = batches(tiny_data(16), 8)
    latency = lambda w: zoo.space.macs(w) / 1e6  # noqa: E731
    stop = 0.6 * latency(grid.full())

    def slim(max_trials: int | None, seed: int) -> list[PathStep]:
        cfg = GreedySlimming(step_fraction=0.5, max_trials=max_trials)
        gen = torch.Generator().manual_seed(seed)
        return greedy_slim(sup, grid, latency, data[:1], data[1:], stop_ms=stop, cfg=cfg, gen=gen).path

    full = slim(None, 0)
    assert len(grid.names) > 2 and full[1].trials == len(grid.names)  # the paper's step: every group scored
    sub = slim(2, 0)
    assert all(p.trials <= 2 for p in sub[1:]) and sub[-1].latency_ms <= stop
    lats = [p.latency_ms for p in sub]
    assert all(b < a for a, b in zip(lats, lats[1:], strict=False))
    assert [p.widths for p in slim(2, 0)] == [p.widths for p in sub]  # same seed, same path
    paths = {tuple(tuple(sorted(p.widths.items())) for p in slim(1, s)) for s in range(6)}
    assert len(paths) > 1  # the subset is drawn, not fixed


def test_evolution_drops_the_floor_when_the_band_is_empty(zoo: Zoo) -> None:
    grid = WidthGrid.from_space(zoo.space, 0.2)
    latency = lambda w: zoo.space.macs(w) / 1e6  # noqa: E731
    floor = latency(grid.smallest())
    budget = 1.0005 * floor  # just above the lattice's floor; the band [b, b] holds no assignment
    cfg = EvolutionSearch(population=4, parents=2, generations=2, min_budget_use=1.0, max_attempts=20)
    res = evolve(_fake_score, grid, latency, budget, cfg, torch.Generator().manual_seed(0))
    assert res.floor_relaxed and res.floor_ms == 0.0
    assert res.individuals and all(i.latency_ms <= budget for i in res.individuals)
    assert min(i.latency_ms for i in res.individuals) < cfg.min_budget_use * budget  # below the old floor
    in_band = evolve(
        _fake_score,
        grid,
        latency,
        0.6 * latency(grid.full()),
        cfg.model_copy(update={"min_budget_use": 0.5}),
        torch.Generator().manual_seed(0),
    )
    assert not in_band.floor_relaxed and in_band.floor_ms > 0
