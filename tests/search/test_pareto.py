"""Pareto front, hypervolume and budget picks (prunepilot.search.pareto)."""

from __future__ import annotations

import doctest
import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prunepilot.errors import ConfigError
from prunepilot.search import front_table, pareto
from prunepilot.search.front_table import front_table_rows
from prunepilot.search.pareto import (
    ACCURACY,
    LATENCY,
    MACS,
    PARAMS,
    Objective,
    best_within_budget,
    default_reference,
    hypervolume,
    objectives_from_names,
    pareto_front,
    to_minimisation,
)


def cand(
    i: int | str,
    acc: float,
    lat: float,
    macs: int = 1000,
    params: int = 100,
    status: str = "ok",
    strategy: str = "random",
    **metrics: Any,
) -> dict[str, Any]:
    return {
        "id": str(i),
        "strategy": strategy,
        "trial": "t0",
        "seed": 0,
        "status": status,
        "policy": {
            "channels": {"conv1": 8, "layer1.0": 12},
            "group_channels": {"conv1": 16, "layer1.0": 16},
            "keep_ratios": {"conv1": 0.5, "layer1.0": 0.75},
        },
        "metrics": {
            "accuracy": acc,
            "latency_ms": lat,
            "latency_kind": "predicted",
            "latency_model": "roofline",
            "macs": macs,
            "params": params,
            **metrics,
        },
    }


def brute_front(cands: list[dict[str, Any]], objectives: tuple[Objective, ...]) -> set[str]:
    ok = [c for c in cands if c["status"] == "ok"]
    vec = {c["id"]: tuple(to_minimisation([c], objectives)[0]) for c in ok}
    out = set()
    for a in ok:
        va = vec[a["id"]]
        dominated = any(all(x <= y for x, y in zip(vec[b["id"]], va, strict=True)) and vec[b["id"]] != va for b in ok)
        if not dominated:
            out.add(a["id"])
    return out


small = st.integers(0, 6)
rows = st.lists(
    st.tuples(small, small, small, small, st.sampled_from(["ok", "ok", "ok", "failed"])),
    max_size=40,
)


def build(data: list[tuple[int, int, int, int, str]], dup: list[int]) -> list[dict[str, Any]]:
    cands = [cand(i, a / 6, 1.0 + la, 100 * m, 10 * p, status=s) for i, (a, la, m, p, s) in enumerate(data)]
    # exact duplicates of objective vectors under new ids
    for k, j in enumerate(dup):
        if cands:
            copy = cand(f"dup{k}", 0, 0)
            copy["metrics"] = dict(cands[j % len(cands)]["metrics"])
            copy["status"] = cands[j % len(cands)]["status"]
            cands.append(copy)
    return cands


@pytest.mark.parametrize(
    "objectives",
    [(ACCURACY, LATENCY), (ACCURACY, LATENCY, MACS), (LATENCY, ACCURACY, MACS, PARAMS)],
    ids=["2obj", "3obj", "4obj"],
)
@settings(max_examples=150, deadline=None)
@given(data=rows, dup=st.lists(st.integers(0, 100), max_size=6))
def test_front_equals_brute_force(
    objectives: tuple[Objective, ...], data: list[tuple[int, int, int, int, str]], dup: list[int]
) -> None:
    cands = build(data, dup)
    front = pareto_front(cands, objectives)
    ids = [c["id"] for c in front]
    assert len(ids) == len(set(ids))
    assert set(ids) == brute_front(cands, objectives)
    assert all(c["status"] == "ok" for c in front)
    lat = [c["metrics"]["latency_ms"] for c in front]
    assert lat == sorted(lat)  # first minimised objective ascending
    assert all(any(c is x for x in cands) for c in front)  # the same objects, not copies


def test_front_keeps_identical_points_and_drops_failed_and_nan() -> None:
    cands = [
        cand("a", 0.9, 2.0),
        cand("b", 0.9, 2.0),  # identical to a: both kept
        cand("c", 0.95, 1.0, status="failed"),  # would dominate, but failed
        cand("d", 0.9, 3.0),  # dominated by a (same accuracy, slower)
        cand("e", 0.5, 1.0),
        cand("f", float("nan"), 0.5),  # non-finite: left out
    ]
    assert [c["id"] for c in pareto_front(cands)] == ["e", "a", "b"]
    assert pareto_front([]) == []
    assert pareto_front([cand("x", 0.9, 1.0, status="failed")]) == []


def test_front_all_maximised_sorted_best_first() -> None:
    cands = [cand("a", 0.5, 1), cand("b", 0.9, 1), cand("c", 0.9, 1)]
    assert [c["id"] for c in pareto_front(cands, [ACCURACY])] == ["b", "c"]


def test_missing_objective_is_a_clear_error() -> None:
    bad = {"id": "z", "status": "ok", "metrics": {"accuracy": 0.9}}
    with pytest.raises(ValueError, match="'z'.*metrics.latency_ms"):
        pareto_front([bad])


def test_objectives_from_names() -> None:
    assert objectives_from_names(["accuracy", "latency_ms", "macs"]) == (ACCURACY, LATENCY, MACS)
    assert objectives_from_names(["params"]) == (PARAMS,)
    with pytest.raises(ConfigError, match="'flops'.*'accuracy'.*'latency_ms'.*'macs'.*'params'"):
        objectives_from_names(["accuracy", "flops"])
    with pytest.raises(ConfigError, match="twice"):
        objectives_from_names(["accuracy", "accuracy"])
    with pytest.raises(ConfigError, match="no objectives"):
        objectives_from_names([])
    with pytest.raises(ConfigError, match="direction"):
        Objective("metrics.accuracy", "up")  # type: ignore[arg-type]


def test_hypervolume_hand_cases() -> None:
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [4, 4]) == pytest.approx(6.0)
    # three 2x1x1 boxes, pairwise and triple overlap [2,3]^3: 6 - 3 + 1 = 4
    assert hypervolume([[1, 2, 2], [2, 1, 2], [2, 2, 1]], [3, 3, 3]) == pytest.approx(4.0)
    # two boxes in 3-D: 3*3*1 + 1*1*3 - overlap 1*1*1 = 11
    assert hypervolume([[1, 1, 3], [3, 3, 1]], [4, 4, 4]) == pytest.approx(11.0)
    assert hypervolume([[1.0]], [3.0]) == pytest.approx(2.0)
    assert hypervolume(np.empty((0, 2)), [1, 1]) == 0.0
    assert hypervolume([[5, 0], [0, 5]], [4, 4]) == 0.0  # outside the reference box
    assert hypervolume([[4, 0]], [4, 4]) == 0.0  # on its boundary
    with pytest.raises(ValueError, match="reference has 3"):
        hypervolume([[1, 2]], [3, 3, 3])


def grid_volume(points: list[tuple[int, ...]], ref: tuple[int, ...]) -> int:
    """Unit cells [c, c+1)^m below ref dominated by some point: exact for integer inputs."""
    ranges = [range(min([r] + [p[j] for p in points]), r) for j, r in enumerate(ref)]
    return sum(any(all(p[j] <= c[j] for j in range(len(ref))) for p in points) for c in itertools.product(*ranges))


@pytest.mark.parametrize("m", [2, 3, 4])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_hypervolume_matches_grid_count(m: int, data: st.DataObject) -> None:
    pts = data.draw(st.lists(st.tuples(*[st.integers(0, 5)] * m), max_size=8))
    ref = (5,) * m
    assert hypervolume(np.array(pts, dtype=float).reshape(-1, m), ref) == pytest.approx(grid_volume(pts, ref))


@pytest.mark.parametrize("m", [2, 3])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_hypervolume_monotone(m: int, data: st.DataObject) -> None:
    coords = st.floats(0, 9, allow_nan=False)
    pts = np.array(data.draw(st.lists(st.tuples(*[coords] * m), min_size=1, max_size=10)))
    ref = np.full(m, 10.0)
    hv = hypervolume(pts, ref)
    # a point dominated by an existing one changes nothing
    worse = pts[data.draw(st.integers(0, len(pts) - 1))] + np.array(data.draw(st.tuples(*[coords] * m))) / 10
    assert hypervolume(np.vstack([pts, worse]), ref) == pytest.approx(hv)
    # a point no existing one weakly dominates (and inside the box) adds volume
    better = pts.min(axis=0) - 0.5
    assert hypervolume(np.vstack([pts, better]), ref) > hv


def test_hypervolume_of_a_front_and_reference() -> None:
    cands = [
        cand("a", 0.9, 3.0),
        cand("b", 0.8, 4.0),
        cand("c", 0.7, 1.0),
        cand("d", 0.1, 9.0, status="failed"),
    ]
    ref = default_reference(cands)
    assert ref == pytest.approx([0.0, 4.4])  # accuracy 0, worst ok latency x 1.1
    base = {"accuracy": 0.95, "latency_ms": 5.0, "latency_kind": "measured"}
    assert default_reference(cands, base=base) == pytest.approx([0.0, 5.5])
    assert default_reference(cands, base={"metrics": base}) == pytest.approx([0.0, 5.5])
    ref3 = default_reference(cands, (ACCURACY, LATENCY, MACS), base=base)  # base lacks MACs: worst x 1.1
    assert ref3 == pytest.approx([0.0, 5.5, 1100.0])
    front = pareto_front(cands)
    # min-orientation points (-0.7, 1), (-0.9, 3) against (0, 5.5)
    assert hypervolume(to_minimisation(front), [0.0, 5.5]) == pytest.approx(0.2 * 2.5 + 0.7 * 4.5)
    failed = [cand("x", 0.5, 1.0, status="failed")]
    with pytest.raises(ValueError, match="base="):
        default_reference(failed)
    assert default_reference(failed, base=base) == pytest.approx([0.0, 5.5])


def test_best_within_budget() -> None:
    cands = [
        cand("fast", 0.70, 1.0),
        cand("mid", 0.85, 2.0),
        cand("mid_slower_same_acc", 0.85, 2.5),
        cand("slow", 0.95, 5.0),
        cand("failed", 0.99, 0.5, status="failed"),
        cand("remeasured", 0.80, 1.5, measured_latency_ms=1.8),
    ]
    assert best_within_budget(cands, 10.0)["id"] == "slow"
    assert best_within_budget(cands, 3.0)["id"] == "mid"
    assert best_within_budget(cands, 2.0)["id"] == "mid"  # inclusive
    assert best_within_budget(cands, 1.9)["id"] == "remeasured"
    assert best_within_budget(cands, 0.9) is None
    assert best_within_budget([], 5.0) is None
    # by measured latency only re-measured candidates count
    assert best_within_budget(cands, 10.0, latency_key="metrics.measured_latency_ms")["id"] == "remeasured"
    assert best_within_budget(cands, 1.7, latency_key="metrics.measured_latency_ms") is None
    tie = [cand("slower", 0.9, 2.0), cand("faster", 0.9, 1.0)]
    assert best_within_budget(tie, 5.0)["id"] == "faster"
    with pytest.raises(ConfigError, match="-1"):
        best_within_budget(cands, -1)


def test_front_table_rows() -> None:
    front = pareto_front([cand("a", 0.9, 3.0, measured_latency_ms=3.3), cand("b", 0.7, 1.0, strategy="uniform")])
    rows = front_table_rows(front)
    assert [r["rank"] for r in rows] == [1, 2]
    assert [r["id"] for r in rows] == ["b", "a"]
    assert rows[0]["strategy"] == "uniform"
    assert rows[0]["measured_latency_ms"] is None
    assert rows[0]["latency"] == "1 ms predicted"
    assert rows[1]["measured_latency_ms"] == 3.3
    assert rows[0]["budget_latency_ms"] == 1.0 and rows[1]["budget_latency_ms"] == 3.3  # budgets judge the measured
    assert rows[1]["latency"] == "3 ms predicted (measured 3.3 ms)"
    assert rows[1]["mean_keep_ratio"] == pytest.approx((8 / 16 + 12 / 16) / 2)
    assert rows[1]["macs"] == 1000 and rows[1]["params"] == 100
    assert rows[1]["accuracy"] == 0.9 and rows[1]["latency_ms"] == 3.0
    assert front_table_rows([]) == []


def test_mean_keep_ratio_fallbacks() -> None:
    assert front_table.mean_keep_ratio({"keep_ratios": {"a": 0.5, "b": 1.0}}) == pytest.approx(0.75)
    assert front_table.mean_keep_ratio('{"channels": {"a": 4}, "group_channels": {"a": 8}}') == 0.5
    assert front_table.mean_keep_ratio(None) is None


@pytest.mark.parametrize("module", [pareto, front_table])
def test_doctests(module: Any) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
