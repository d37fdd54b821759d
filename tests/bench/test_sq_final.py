"""bench/sq_final.py: picks against the uniform curve at the same measured latency."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch
from bench_helpers import load, tiny_config

from prunepilot.pruning import PruningPolicy
from prunepilot.search.config import validate_config
from prunepilot.search.evaluator import get_evaluator


def row(strategy: str, seed: int, ft: float, delta: float | None, budget: float = 0.5) -> dict[str, Any]:
    at = None if delta is None else ft - delta / 100
    return {"model": "m", "budget": budget, "budget_ms": 20 * budget, "strategy": strategy, "seed": seed,
            "finetuned_test_acc": ft,
            "final": {"share": 0.5, "uniform_at_share": at, "delta_points": delta}}  # fmt: skip


def test_interpolation_stays_inside_the_curve() -> None:
    fin = load("sq_final")
    curve = [(0.6, 0.90), (0.3, 0.80), (0.45, 0.86)]
    assert fin.interpolate(curve, 0.375) == pytest.approx(0.83)
    assert fin.interpolate(curve, 0.6) == pytest.approx(0.90)
    assert fin.interpolate(curve, 0.29) is None and fin.interpolate(curve, 0.61) is None  # never extrapolated


def test_targets_are_judged_on_same_latency_deltas() -> None:
    fin = load("sq_final")
    rows = [
        row("uniform", 0, 0.90, 0.0), row("random", 0, 0.905, 0.3), row("random", 1, 0.91, 0.5),
        row("random", 2, 0.90, 0.1), row("optuna-tpe", 0, 0.92, 1.2), row("optuna-tpe", 1, 0.915, 0.9),
        row("optuna-tpe", 2, 0.93, 1.5), row("torch-pruning-global", 0, 0.925, 1.4),
        row("amc-ddpg", 0, 0.90, None), row("amc-ddpg", 1, 0.90, 0.2),
    ]  # fmt: skip
    entries = fin.summary(rows)
    tpe = next(e for e in entries if e["strategy"] == "optuna-tpe")
    assert (tpe["seeds"], tpe["delta_median"], tpe["ft_median"]) == (3, pytest.approx(1.2), pytest.approx(0.92))
    amc = next(e for e in entries if e["strategy"] == "amc-ddpg")
    assert amc["outside"] == 1 and amc["delta_median"] == pytest.approx(0.2)  # the seed outside the curve is left out
    notes = "\n".join(fin.target_notes(entries))
    assert "best searched optuna-tpe is +1.20 points vs uniform at its latency (target >= +1.0): MET." in notes
    assert "optuna-tpe +1.20 vs random +0.30 points (target: ahead by >= 0.5): MET." in notes
    assert "optuna-tpe +1.20 vs torch-pruning-global +1.40 points (target: ahead): NOT MET." in notes
    assert "amc-ddpg +0.20 vs random +0.30 points (target: ahead): NOT MET." in notes
    lone = fin.target_notes(fin.summary([row("uniform", 0, 0.9, 0.0, budget=0.3)]))
    expected = "m, budget 30% (6.00 ms) (as run): no searched strategy has a same-latency figure: every target NOT MET."
    assert lone == [expected]


@pytest.fixture()
def tiny(tmp_path: Any) -> Iterator[tuple[ModuleType, ModuleType]]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    fin = load("sq_final")
    import bench.search_quality as sq  # the module sq_final imports (not a copy loaded from the path)

    ev = get_evaluator(validate_config(tiny_config(tmp_path, evaluation={"lower_bound": 0.25, "bn_batches": 2})))
    ev.calibrate_fit()
    base = ev.base_metrics()
    sq._CONTEXTS["tiny"] = sq.Context(ev, base.latency_ms, base.to_dict())
    yield fin, sq
    sq._CONTEXTS.pop("tiny", None)
    torch.set_num_threads(before)


def test_each_pick_is_compared_with_the_uniform_curve_at_its_share(tiny: tuple[ModuleType, ModuleType]) -> None:
    fin, sq = tiny
    ev = sq._CONTEXTS["tiny"].ev
    half = PruningPolicy.uniform(ev.space, 0.5)
    mixed = ev.make_policy([0.3 if i % 2 else 0.9 for i in range(len(ev.space.groups))])
    rows = [
        {"model": "tiny", "budget": 0.6, "budget_ms": 1.0, "strategy": s, "seed": 0, "finetuned_test_acc": 0.5,
         "policy": json.loads(p.to_json())}
        for s, p in (("uniform", half), ("random", mixed))
    ]  # fmt: skip
    args = SimpleNamespace(ratios=[0.25, 0.5, 0.75, 1.0], rounds=1, instances=1, finetune_batches=2, data_root=None)
    info = fin.finish_model("tiny", rows, {"lower_bound": "0.25"}, args)
    shares = [c["share"] for c in info["curve"]]
    assert shares == sorted(shares) and shares[-1] == pytest.approx(1.0)  # wider uniform: slower; full = base
    assert all(0.0 <= c["finetuned_test_acc"] <= 1.0 for c in info["curve"])
    uniform_row, random_row = rows
    # the uniform pick lies on the curve: compared with the curve's own figure at keep 0.5
    on_curve = next(c for c in info["curve"] if c["keep"] == 0.5)
    assert uniform_row["final"]["share"] == pytest.approx(on_curve["share"])
    assert uniform_row["final"]["uniform_at_share"] == pytest.approx(on_curve["finetuned_test_acc"])
    at = random_row["final"]["uniform_at_share"]
    assert random_row["final"]["delta_points"] == pytest.approx(100 * (0.5 - at))


def test_a_jump_in_the_uniform_curve_is_said() -> None:
    fin = load("sq_final")
    smooth = [{"keep": k, "share": 0.2 + k / 2} for k in (0.2, 0.3, 0.4, 0.5)]
    assert fin.jump_notes({"models": {"m": {"curve": smooth}}}) == []
    jumpy = [*smooth, {"keep": 0.6, "share": 0.95}]  # steps 0.05 x3, then 0.5: 10x the median
    (note,) = fin.jump_notes({"models": {"m": {"curve": jumpy}}})
    assert note.startswith("m: the uniform curve jumps from keep 0.50 (share 0.450) to 0.60 (share 0.950), 10x")


def test_runs_with_anchored_in_loop_latency_are_kept_apart_and_labelled() -> None:
    fin = load("sq_final")
    pick = {**row("random", 0, 0.9, 0.5), "policy": {"any": 1}}
    docs = [
        {"settings": {}, "rows": [dict(pick)]},  # a run from before the setting: predicted in the loop
        {"settings": {"in_loop_latency": "anchored"}, "rows": [{**pick, "finetuned_test_acc": 0.92}]},
    ]
    rows = fin.picks(docs)
    assert sorted(r["in_loop_latency"] for r in rows) == ["anchored", "predicted"]
    entries = fin.summary(rows)
    assert sorted(e["budget"] for e in entries) == ["50% (10.00 ms)", "50% (10.00 ms), in-loop anchored"]
    assert {e["budget"]: e["ft_median"] for e in entries}["50% (10.00 ms), in-loop anchored"] == pytest.approx(0.92)


def test_a_pick_that_is_a_curve_policy_says_how_repeatable_the_share_is() -> None:
    fin = load("sq_final")
    half = {"a": 8, "b": 16}
    curve = [{"keep": 0.25, "channels": {"a": 4, "b": 8}, "share": 0.2, "finetuned_test_acc": 0.80},
             {"keep": 0.5, "channels": half, "share": 0.4, "finetuned_test_acc": 0.90}]  # fmt: skip
    same = {**row("uniform", 0, 0.9, 0.0), "policy": {"channels": dict(half)}}
    same["final"]["share"] = 0.3
    other = {**row("random", 0, 0.9, 0.0), "policy": {"channels": {"a": 8, "b": 8}}}
    notes = fin.repeat_notes({"models": {"m": {"curve": curve}}, "rows": [same, other]})
    assert notes == [
        "Repeatability: m uniform (50% (10.00 ms)) is uniform keep 0.50, measured in this session at share 0.300 as a "
        "pick and 0.400 as a curve point (25% apart, 5.0 points on the curve): deltas smaller than that are not "
        "resolved by this measurement."
    ]


def test_paired_shares_hold_while_the_load_drifts(tiny: tuple[ModuleType, ModuleType], monkeypatch: Any) -> None:
    fin, sq = tiny
    ev = sq._CONTEXTS["tiny"].ev

    def size(model: torch.nn.Module) -> float:
        return float(sum(p.numel() for p in model.parameters()))

    calls: list[int] = []

    class Drifting:
        """A measured device whose load grows 50% with every base/policy pair."""

        requires_model = True

        def measure_ms(self, model: torch.nn.Module, shape: Any, batch: int = 1) -> Any:
            load = 1.0 + 0.5 * (len(calls) // 2)
            calls.append(id(model))
            return SimpleNamespace(ms=load * size(model) / size(ev.model))

    monkeypatch.setattr(ev, "latency", Drifting())
    policies = [PruningPolicy.uniform(ev.space, r) for r in (0.3, 0.6, 0.9)]
    truth = [size(ev.prune(p)) / size(ev.model) for p in policies]
    base_ms, paired = sq.measure_paired(ev, policies, rounds=4, instances=2)
    assert len(calls) == 2 * 4 * len(policies)
    for got, share in zip(paired, truth, strict=True):
        assert got.share == pytest.approx(share, rel=1e-9) and got.q1 == pytest.approx(got.q3)
        assert got.ms == pytest.approx(share * base_ms)
    assert len(set(calls)) == 2 + 2 * len(policies)  # two base copies, two fresh models per policy
    # two medians taken at different moments do not hold under the same drift
    calls.clear()
    medians = sq.measure_side_by_side(ev, [None, *policies], 4)
    assert any(abs(m / medians[0] - share) > 0.05 for m, share in zip(medians[1:], truth, strict=True))
