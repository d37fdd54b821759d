"""The latency knapsack: exact against brute force, within budget, and the ``knapsack`` strategy end to end."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from search_helpers import tiny_config

import prunepilot.search
from prunepilot.errors import PruningError
from prunepilot.hw_models.base import LatencyModel, LatencyResult
from prunepilot.hw_models.lut import LookupTable, LutEntry, LutLatency, layer_key
from prunepilot.hw_models.registry import get_latency_model
from prunepilot.models import build_model
from prunepilot.pruning import PruningPolicy, PruningSpace
from prunepilot.pruning.adapter import group_scores
from prunepilot.pruning.layers import LayerShape
from prunepilot.search.config import validate_config
from prunepilot.search.evaluator import LatencyFit, get_evaluator
from prunepilot.search.knapsack import (
    CliqueTree,
    JointTerm,
    LatencyKnapsack,
    LatencyTable,
    group_values,
    junction_tree,
    solve_mckp,
)
from prunepilot.search.store import RunStore
from prunepilot.search.strategies import strategy_names
from prunepilot.search.strategies.knapsack import LinearLayerLatency, knapsack_latency, thin

SHAPES = {"simplecnn": (1, 1, 8, 8), "resnet20": (1, 3, 32, 32), "mobilenetv2": (1, 3, 32, 32)}


def _space(spec: str) -> tuple[torch.nn.Module, PruningSpace, torch.Tensor]:
    torch.manual_seed(0)
    shape = SHAPES[spec]
    model = build_model(spec, num_classes=10, in_channels=shape[1]).eval()
    x = torch.zeros(shape)
    return model, PruningSpace.build(model, x), x


def _choices(space: PruningSpace, ratios: Sequence[float]) -> dict[str, tuple[int, ...]]:
    return {g.name: tuple(sorted({max(1, round(g.channels * r)) for r in ratios} | {g.channels})) for g in space.groups}


def _scores(space: PruningSpace, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {g.name: torch.rand(g.channels, generator=gen) for g in space.groups}


def _brute(
    names: Sequence[str],
    choices: Mapping[str, Sequence[int]],
    value: Mapping[str, Mapping[int, float]],
    cost: Any,
    capacity: float,
) -> float | None:
    best = None
    for combo in itertools.product(*(choices[g] for g in names)):
        w = dict(zip(names, combo, strict=True))
        if cost(w) <= capacity:
            v = sum(value[g][w[g]] for g in names)
            best = v if best is None else max(best, v)
    return best


# --- the MILP ----------------------------------------------------------------------------
@pytest.mark.parametrize("formulation", ["junction-tree", "local"])
@pytest.mark.parametrize("seed", range(6))
def test_solve_mckp_equals_brute_force(seed: int, formulation: str, capfd: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(seed)
    names = [f"g{i}" for i in range(5)]
    choices = {
        g: sorted(rng.choice(np.arange(1, 20), size=int(rng.integers(2, 5)), replace=False).tolist()) for g in names
    }
    value = {g: {w: float(rng.random() * w) for w in choices[g]} for g in names}
    cost = {g: {w: float(rng.random() * w) for w in choices[g]} for g in names}
    # pairs along a chain plus a triangle and a three-way term: cycles the junction tree must close
    groups = [("g0", "g1"), ("g1", "g2"), ("g2", "g3"), ("g1", "g3"), ("g0", "g3", "g4")] if seed % 2 else []
    joint = [JointTerm(gs, rng.random([len(choices[g]) for g in gs]) * 5) for gs in groups]

    def total(w: Mapping[str, int]) -> float:
        out = sum(cost[g][w[g]] for g in names)
        for t in joint:
            out += float(t.ms[tuple(choices[g].index(w[g]) for g in t.groups)])
        return out

    lowest, highest = total({g: c[0] for g, c in choices.items()}), total({g: c[-1] for g, c in choices.items()})
    for capacity in np.linspace(lowest * 0.9, highest, 7):
        got = solve_mckp(choices, value, cost, float(capacity), joint=joint, formulation=formulation)  # type: ignore[arg-type]
        best = _brute(names, choices, value, total, float(capacity))
        if best is None:
            assert got is None
            continue
        assert got is not None and total(got) <= capacity + 1e-6 * abs(capacity)
        assert sum(value[g][got[g]] for g in names) == pytest.approx(best, rel=1e-7)
    assert "tmpSolver" not in capfd.readouterr().out  # HiGHS's stray debug line stays silent


def test_junction_tree_covers_terms_with_running_intersection() -> None:
    names = ["a", "b", "c", "d", "e"]
    terms = [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d"), ("d", "e")]  # a 4-cycle and a tail
    cliques, edges = junction_tree(names, terms)
    assert all(any(set(t) <= set(c) for c in cliques) for t in terms)
    assert len(edges) == len(cliques) - 1
    for g in names:  # the cliques holding g are connected in the tree
        holding = {i for i, c in enumerate(cliques) if g in c}
        inner = [(i, j) for i, j, _ in edges if i in holding and j in holding]
        assert len(inner) == len(holding) - 1


def test_clique_tree_max_marginals_equal_brute_force() -> None:
    rng = np.random.default_rng(0)
    names = ["a", "b", "c", "d", "e"]
    dims = {"a": 2, "b": 3, "c": 2, "d": 3, "e": 2}
    terms = [("a", "b"), ("b", "c"), ("a", "c"), ("c", "d")]  # "e" is on its own: a forest
    tree = CliqueTree(names, dims, terms)
    unary = {g: rng.random(dims[g]) for g in names}
    joint = [(t, rng.random([dims[g] for g in t])) for t in terms]
    theta = tree.potential(unary, joint)

    def score(idx: Mapping[str, int]) -> float:
        return sum(unary[g][idx[g]] for g in names) + sum(float(a[tuple(idx[g] for g in t)]) for t, a in joint)

    every = [dict(zip(names, c, strict=True)) for c in itertools.product(*(range(dims[g]) for g in names))]
    belief, _, top = tree.collect(theta)
    assert top == pytest.approx(max(score(i) for i in every))
    assert score(tree.decode(belief)) == pytest.approx(top)
    marg = tree.max_marginals(theta)
    for g in names:
        for k in range(dims[g]):
            assert marg[g][k] == pytest.approx(max(score(i) for i in every if i[g] == k))


# --- latency terms ------------------------------------------------------------------------
def _toy_lut(space: PruningSpace, scale: float = 1.5, overhead: float = 0.3) -> LutLatency:
    """A lookup table bilinear in (cin, cout) per layer type, covering every layer of ``space``."""
    entries: dict[str, LutEntry] = {}
    for s in space.layers(space.full_widths()):
        key = layer_key(s)
        old = entries.get(key)
        cin = max(s.in_channels, old.cin[-1] if old else 0)
        cout = max(s.out_channels, old.cout[-1] if old else 0)
        if s.kind == "depthwise":
            grid_in, grid_out = [1, cin], [0]
            ms = [[1e-3 * c * s.out_hw[0] * s.out_hw[1] + 0.01] for c in grid_in]
        else:
            grid_in, grid_out = [1, cin], [1, cout]
            ms = [[1e-4 * i * o * s.tokens + 1e-3 * (i + o) + 0.02 for o in grid_out] for i in grid_in]
        entries[key] = LutEntry(
            key=key, kind=s.kind, kernel=s.kernel, stride=s.stride, in_hw=s.in_hw, out_hw=s.out_hw,
            groups=s.groups, tokens=s.tokens, cin=grid_in, cout=grid_out, ms=ms,
        )  # fmt: skip
    return LutLatency(table=LookupTable(entries, overhead_ms=overhead, batch_size=1, scale=scale))


@pytest.mark.parametrize("spec", ["simplecnn", "resnet20", "mobilenetv2"])
@pytest.mark.parametrize("model_name", ["roofline", "macs"])
def test_latency_terms_add_up_to_the_whole_model_prediction(spec: str, model_name: str) -> None:
    _, space, _ = _space(spec)
    lm = get_latency_model(model_name)
    choices = _choices(space, [0.25, 0.5, 0.75, 1.0])
    table = LatencyTable.build(space, choices, lm)
    gen = np.random.default_rng(1)
    for _ in range(10):  # conv, depthwise (mobilenetv2) and linear layers at random lattice widths
        w = {g: c[int(gen.integers(len(c)))] for g, c in choices.items()}
        assert table.predict_ms(w) == pytest.approx(lm.predict_ms(space, w).ms, rel=1e-9)
    assert any(len(t.groups) == 2 for t in table.joint)


class _Squared(LatencyModel):
    """Not layer-additive: the square of the MACs."""

    name = "squared"

    def predict_layers(self, layers: Sequence[LayerShape], batch_size: int = 1) -> LatencyResult:
        return LatencyResult(ms=(sum(s.macs for s in layers) / 1e6) ** 2, kind="predicted", model_name=self.name)


def test_latency_models_that_are_no_sum_over_layers_are_refused() -> None:
    _, space, _ = _space("simplecnn")
    choices = _choices(space, [0.5, 1.0])
    with pytest.raises(PruningError, match="not a sum over layers"):
        LatencyTable.build(space, choices, _Squared())
    with pytest.raises(PruningError, match="measures built models"):
        LatencyTable.build(space, choices, get_latency_model("torch-cpu"))


# --- the knapsack against brute force -------------------------------------------------------
@pytest.mark.parametrize(
    "spec,ratios,latency",
    [
        ("simplecnn", [0.25, 0.5, 0.75, 1.0], "roofline"),
        ("simplecnn", [0.25, 0.5, 0.75, 1.0], "lut"),
        ("resnet20", [0.5, 1.0], "roofline"),
        ("resnet20", [0.25, 0.625, 1.0], "macs"),
    ],
)
def test_knapsack_equals_brute_force(spec: str, ratios: list[float], latency: str) -> None:
    _, space, _ = _space(spec)
    if spec == "resnet20" and len(ratios) == 3:  # 3^12 is too many: three choices for four groups
        choices = {g: c if i < 4 else c[-1:] for i, (g, c) in enumerate(_choices(space, ratios).items())}
    else:
        choices = _choices(space, ratios)
    lm = _toy_lut(space) if latency == "lut" else get_latency_model(latency)
    ks = LatencyKnapsack(space, choices, _scores(space), lm)
    names = list(space.names)
    combos = [dict(zip(names, c, strict=True)) for c in itertools.product(*(choices[g] for g in names))]
    every = [(float(lm.predict_ms(space, w).ms), ks.total_value(w)) for w in combos]  # whole-model predictions
    full = float(lm.predict_ms(space, space.full_widths()).ms)
    for fraction in (0.35, 0.5, 0.65, 0.8, 0.95, 1.0):
        budget = fraction * full
        best = max((v for ms, v in every if ms <= budget), default=None)
        sol = ks.solve(budget)
        if best is None:
            assert sol is None
            continue
        assert sol is not None and sol.optimal
        assert sol.value == pytest.approx(best, rel=1e-9)
        assert sol.predicted_ms <= budget and sol.predicted_ms == pytest.approx(lm.predict_ms(space, sol.widths).ms)
        assert all(sol.widths[g] in choices[g] for g in names)


def test_cross_effects_between_groups_are_costed_exactly() -> None:
    # The case a separable, iterated knapsack (HALP's) got wrong: simplecnn, l1 importance,
    # roofline, half the latency; a conv's cost depends on its input and output groups together.
    model, space, x = _space("simplecnn")
    choices = _choices(space, [0.25, 0.5, 0.75, 1.0])
    lm = get_latency_model("roofline")
    scores = group_scores(model, x, "l1", calib_batches=[])
    ks = LatencyKnapsack(space, choices, scores, lm)
    budget = 0.5 * ks.predict_ms(space.full_widths())
    best = _brute(list(space.names), choices, ks.value, ks.predict_ms, budget)
    sol = ks.solve(budget)
    assert sol is not None and sol.optimal and sol.value == pytest.approx(best) and sol.predicted_ms <= budget


def test_unreachable_budget_returns_none() -> None:
    _, space, _ = _space("simplecnn")
    choices = _choices(space, [0.5, 1.0])
    ks = LatencyKnapsack(space, choices, _scores(space), get_latency_model("roofline"))
    lowest = ks.predict_ms({g: c[0] for g, c in choices.items()})
    assert ks.solve(0.99 * lowest) is None
    sol = ks.solve(lowest)
    assert sol is not None and sol.widths == {g: c[0] for g, c in choices.items()}
    assert ks.sweep([0.5 * lowest, 2 * lowest])[0] is None


def test_group_values_sum_the_kept_scores() -> None:
    scores = {"a": torch.tensor([1.0, 3.0, 2.0, 4.0]), "b": torch.tensor([1.0, 0.0, 0.0, 3.0])}
    raw = group_values(scores, {"a": [1, 2, 4], "b": [2]}, normalize=False)
    assert raw == {"a": {1: 4.0, 2: 7.0, 4: 10.0}, "b": {2: 4.0}}
    norm = group_values(scores, {"a": [4], "b": [2]}, normalize=True)
    assert norm["a"][4] == pytest.approx(1.0) and norm["b"][2] == pytest.approx(1.0)
    # two aligned blocks: the same offsets in each (offset 1 sums to 3 + 3 over the blocks)
    blocked = group_values(scores, {"b": [2]}, normalize=False, blocks={"b": 2})
    assert blocked["b"][2] == pytest.approx(3.0)


# --- the strategy -------------------------------------------------------------------------
def test_thin_keeps_the_ends_evenly() -> None:
    assert thin(tuple(range(1, 33)), 4) == (1, 11, 22, 32)
    assert thin((4, 8), 16) == (4, 8)


def test_linear_fit_recovers_the_evaluators_latency_fit() -> None:
    _, space, _ = _space("resnet20")
    fit = LatencyFit(intercept=0.7, slope=2e-6, byte_slope=3e-7)

    def predict(w: Mapping[str, int]) -> float:
        layers = space.layers(w)
        return fit(space.macs(w), float(sum(s.bytes for s in layers)))

    choices = _choices(space, [0.25, 0.5, 1.0])
    gen = np.random.default_rng(0)
    probes = [{g: c[int(gen.integers(len(c)))] for g, c in choices.items()} for _ in range(6)]
    lm = LinearLayerLatency.fit_to(space, predict, probes)
    assert lm.residual_ms < 1e-9
    w = {g: c[1] for g, c in choices.items()}
    assert lm.predict_ms(space, w).ms == pytest.approx(predict(w), rel=1e-9)
    assert LatencyTable.build(space, choices, lm).predict_ms(w) == pytest.approx(predict(w), rel=1e-9)


def test_knapsack_is_registered() -> None:
    assert "knapsack" in strategy_names()


def test_knapsack_strategy_reports_scored_policies_within_budget(tmp_path: Path) -> None:
    cfg = tiny_config(
        tmp_path,
        **{
            "strategy.name": "knapsack",
            "strategy.evaluations": 5,
            "strategy.settings": {"max_choices": 6, "sweep": [0.7, 0.8, 0.9]},
            "evaluation.uniform_baseline": 0,
        },
    )
    result = prunepilot.search.run(cfg, backend="local", run_dir=tmp_path / "run", progress=False)
    found = [c for c in result.candidates if c.strategy == "knapsack"]
    assert 1 <= len(found) <= 4
    for c in found:
        assert c.metrics.latency_kind == "predicted" and c.metrics.latency_ms <= result.budget_ms
        assert c.extra["knapsack_latency"] == "macs"  # the evaluator's own (predicted) model
        assert c.metrics.latency_ms == pytest.approx(c.extra["knapsack_predicted_ms"])
        assert c.metrics.latency_ms <= c.extra["knapsack_budget_ms"]
    assert found[0].extra["budget_fraction"] == pytest.approx(0.95)
    stored = {c.policy.key() for c in RunStore(tmp_path / "run").ok()}
    assert {c.policy.key() for c in found} <= stored


def test_a_budget_at_the_floor_is_solved_at_the_floor_not_refused(tmp_path: Path) -> None:
    # the margin (0.95) would put the target under what the narrowest widths reach: the floor is the answer
    probe = tiny_config(tmp_path / "probe", **{"strategy.name": "uniform", "evaluation.uniform_baseline": 0})
    cfg = validate_config(probe)
    ev = get_evaluator(cfg)
    ev.calibrate_fit()
    lowest = ev.predict_latency_ms(PruningPolicy.uniform(ev.space, cfg.evaluation.lower_bound).channels)
    run_cfg = tiny_config(
        tmp_path,
        **{
            "budget": {"ms": 1.01 * lowest},
            "strategy.name": "knapsack",
            "strategy.evaluations": 2,
            "strategy.settings": {"max_choices": 4, "sweep": [0.5]},
            "evaluation.uniform_baseline": 0,
        },
    )
    result = prunepilot.search.run(run_cfg, backend="local", run_dir=tmp_path / "run", progress=False)
    found = [c for c in result.candidates if c.strategy == "knapsack"]
    assert found and all(c.metrics.latency_ms <= result.budget_ms for c in found)
    assert found[0].extra["knapsack_budget_ms"] == pytest.approx(found[0].extra["knapsack_predicted_ms"], rel=0.05)


def test_on_measured_devices_the_knapsack_solves_with_the_evaluators_fit() -> None:
    _, space, _ = _space("resnet20")
    fit = LatencyFit(intercept=0.4, slope=1e-6, byte_slope=2e-7)

    class Measured:  # what the strategy sees of an evaluator whose latency model measures
        latency = get_latency_model("torch-cpu")

        def predict_latency_ms(self, w: Mapping[str, int]) -> float:
            return fit(space.macs(w), float(sum(s.bytes for s in space.layers(w))))

    ev = Measured()
    ctx = SimpleNamespace(evaluator=ev, seed=0, space=space, predict_latency_ms=ev.predict_latency_ms)
    choices = _choices(space, [0.25, 0.5, 1.0])
    lm, batch_size, record = knapsack_latency(ctx, choices)  # type: ignore[arg-type]
    assert isinstance(lm, LinearLayerLatency) and batch_size == 1 and not lm.requires_model
    assert record["knapsack_latency"].startswith("evaluator-fit") and record["knapsack_fit_residual_ms"] < 1e-9
    ks = LatencyKnapsack(space, choices, _scores(space), lm)
    budget = 0.6 * ev.predict_latency_ms(space.full_widths())
    sol = ks.solve(budget)
    assert sol is not None and ev.predict_latency_ms(sol.widths) <= budget


def test_on_measured_devices_with_an_in_loop_table_the_knapsack_solves_with_that_table() -> None:
    from prunepilot.search.inloop import InLoopPredictor

    _, space, _ = _space("resnet20")
    table = _toy_lut(space).table
    in_loop = InLoopPredictor("torch-cpu", 1, table=table)

    class Measured:  # a measuring evaluator whose in-loop latency is a calibrated lookup table
        latency = get_latency_model("torch-cpu")
        batch_size = 1

        def __init__(self) -> None:
            self.in_loop = in_loop

        def predict_latency_ms(self, w: Mapping[str, int]) -> float:
            return float(in_loop.predict_ms(space, w, 1).ms)

    ev = Measured()
    ctx = SimpleNamespace(evaluator=ev, seed=0, space=space, predict_latency_ms=ev.predict_latency_ms)
    choices = _choices(space, [0.25, 0.5, 1.0])
    lm, batch_size, record = knapsack_latency(ctx, choices)  # type: ignore[arg-type]
    assert lm is in_loop and batch_size == 1 and record["knapsack_latency"] == "in-loop torch-cpu~lut"
    ks = LatencyKnapsack(space, choices, _scores(space), lm)
    budget = 0.5 * ev.predict_latency_ms(space.full_widths())
    sol = ks.solve(budget)
    # the knapsack's prediction is the candidate's in-loop latency, exactly
    assert sol is not None and sol.predicted_ms <= budget
    assert sol.predicted_ms == pytest.approx(ev.predict_latency_ms(sol.widths))


# --- measured sensitivity as the knapsack's values -------------------------------------------
class _Scorer:
    """BN-recalibrated accuracy by a formula: group ``a`` matters, ``b`` does not (and is noisy)."""

    def __init__(self, space: PruningSpace) -> None:
        self.space, self.calls = space, 0

    def recalibrated_accuracy(self, policy: Any) -> float:
        self.calls += 1
        full = self.space.full_widths()
        names = list(full)
        a, b = names[0], names[1]
        noise = 0.01 if policy.channels[b] == 2 else 0.0  # a narrower width that reads better: noise
        return 0.9 - 0.5 * (1 - policy.channels[a] / full[a]) + noise


def test_sensitivity_values_are_one_group_pruned_at_a_time_and_never_rise_as_width_falls() -> None:
    from prunepilot.search.knapsack.sensitivity import sensitivity_values

    _, space, _ = _space("simplecnn")
    names = list(space.names)
    full = space.full_widths()
    choices = {g: (2, full[g] // 2, full[g]) for g in names[:2]}
    scorer = _Scorer(space)
    values = sensitivity_values(scorer, space, choices, "l1")
    assert scorer.calls == 1 + 2 * 2  # the base once, then each width below full of each group
    a, b = names[:2]
    assert values[a][full[a]] == pytest.approx(0.9) and values[a][2] == pytest.approx(0.9 - 0.5 * (1 - 2 / full[a]))
    assert values[a][2] < values[a][full[a] // 2] < values[a][full[a]]
    # b's narrowest width read 0.91 (noise): the wider ones keep at least that, so wider is never worse
    assert values[b] == {2: pytest.approx(0.91), full[b] // 2: pytest.approx(0.91), full[b]: pytest.approx(0.91)}


def test_knapsack_takes_given_values_and_refuses_missing_or_ambiguous_ones() -> None:
    _, space, _ = _space("simplecnn")
    choices = _choices(space, [0.25, 0.5, 1.0])
    gen = np.random.default_rng(1)
    values = {g: {w: float(gen.random()) for w in c} for g, c in choices.items()}
    lm = get_latency_model("roofline")
    ks = LatencyKnapsack(space, choices, None, lm, values=values)
    budget = 0.5 * ks.predict_ms(space.full_widths())
    best = _brute(list(space.names), choices, values, ks.predict_ms, budget)
    sol = ks.solve(budget)
    assert sol is not None and sol.optimal and sol.value == pytest.approx(best)
    first = next(iter(choices))
    with pytest.raises(ValueError, match=rf"knapsack values lack these group@width choices: {first}@"):
        LatencyKnapsack(space, choices, None, lm, values={**values, first: {}})
    with pytest.raises(ValueError, match="exactly one of scores and values"):
        LatencyKnapsack(space, choices, _scores(space), lm, values=values)


def test_the_sensitivity_knapsack_finds_the_known_answer(tmp_path: Path) -> None:
    # two small groups carry the label, two large ones nothing: keep the first whole, prune the rest
    spec = "testing:tiny-known-answer"
    checkpoint = tmp_path / "known.pt"
    torch.save(build_model(spec, num_classes=4, in_channels=1).state_dict(), checkpoint)
    cfg = tiny_config(
        tmp_path,
        **{
            "model": {"spec": spec, "checkpoint": str(checkpoint)},
            "data.name": "prunepilot.models.testing:known_answer_dataset",
            "budget.fraction": 0.3,
            "evaluation.lower_bound": 0.1,
            "evaluation.uniform_baseline": 0,
            "strategy.name": "knapsack",
            "strategy.evaluations": 1,
            "strategy.settings": {"value": "sensitivity", "max_choices": 5},
        },
    )
    result = prunepilot.search.run(cfg, backend="local", run_dir=tmp_path / "run", progress=False)
    (found,) = [c for c in result.candidates if c.strategy == "knapsack"]
    assert found.extra["knapsack_value_kind"] == "sensitivity"
    widths = found.policy.channels
    assert widths["signal.0"] == widths["signal.3"] == 4  # the essential groups whole
    assert widths["noise.0"] < 32 and widths["noise.3"] < 32  # the free ones pay for the budget
    assert found.metrics.latency_ms <= result.budget_ms and found.metrics.accuracy >= 0.95
