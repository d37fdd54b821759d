"""bench/search_quality.py: each row's pick, its side-by-side measurement and its standard fine-tune."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import torch
from bench_helpers import load, tiny_config

from prunepilot.pruning import PruningPolicy
from prunepilot.search.config import validate_config
from prunepilot.search.evaluator import get_evaluator


@pytest.fixture(scope="module")
def sq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The module with a tiny base in its context cache (the committed bases are too slow for a test)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    module = load("search_quality")
    cfg = tiny_config(tmp_path_factory.mktemp("cache"), evaluation={"lower_bound": 0.25, "bn_batches": 2})
    ev = get_evaluator(validate_config(cfg))
    ev.calibrate_fit()
    base = ev.base_metrics()
    module._CONTEXTS["tiny"] = module.Context(ev, base.latency_ms, base.to_dict())
    yield module
    torch.set_num_threads(before)


def args(sq: ModuleType, **changes: Any) -> Any:
    parsed = sq.parse_args(["--quick"])  # then smaller still
    vars(parsed).update({"rounds": 1, "finetune_batches": 2, "evaluations": 4, **changes})
    return parsed


def policy(row: dict[str, Any]) -> PruningPolicy:
    import json

    return PruningPolicy.from_json(json.dumps(row["policy"]))


def test_rows_pick_within_the_budget_and_get_measured_and_fine_tuned(sq: ModuleType) -> None:
    a = args(sq)
    ctx = sq._CONTEXTS["tiny"]
    rows = [
        *sq.run_one(a, "tiny", "random", [0.6], 0),
        *sq.run_one(a, "tiny", "uniform", [0.6], 0),
        *sq.run_one(a, "tiny", "torch-pruning-global", [0.6], 0),
    ]
    assert [r["strategy"] for r in rows] == ["random", "uniform", "torch-pruning-global"]
    for row in rows:
        assert row["budget_ms"] == pytest.approx(0.6 * ctx.base_ms)  # one base latency for every strategy
        assert row["best_latency_ms"] <= row["budget_ms"] and row["policy"] is not None
        assert 1 <= row["distinct_policies"] <= row["evaluations"]
    random_row, uniform_row, peer_row = rows
    assert random_row["evaluations"] == 4 and peer_row["evaluations"] == uniform_row["evaluations"] == 1
    uniform = policy(uniform_row)
    assert len({round(r, 6) for r in uniform.keep_ratios.values()}) == 1  # one ratio for every group
    # the widest uniform ratio within the budget: the next step of width would not fit
    step = max(1.0 / w for w in ctx.ev.space.full_widths().values())
    wider = PruningPolicy.uniform(ctx.ev.space, min(1.0, next(iter(uniform.keep_ratios.values())) + 2 * step))
    assert ctx.ev.predict_latency_ms(wider.channels) > 0.6 * ctx.base_ms

    sq.measure_and_finetune(a, "tiny", rows)
    for row in rows:
        latency = ctx.ev.measure_latency(None, policy(row).channels).ms
        assert row["measured_share"] == pytest.approx(latency / ctx.base_ms)
        assert row["budget_use"] == pytest.approx(row["measured_share"] / 0.6) and row["budget_use"] <= 1.0
        assert 0.0 <= row["finetuned_test_acc"] <= 1.0


def test_a_failed_search_has_no_policy_and_is_not_measured(sq: ModuleType) -> None:
    a = args(sq)
    rows = sq.guarded(a, "tiny", "random", [1e-6], 0)  # below the reachable minimum
    assert rows[0]["error"] and rows[0]["best_acc"] is None
    sq.measure_and_finetune(a, "tiny", rows)
    assert "measured_share" not in rows[0] and "finetuned_test_acc" not in rows[0]


def test_resumed_rows_are_kept_and_not_searched_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    sq = load("search_quality")
    calls: list[tuple[str, int]] = []

    def run_one(args: Any, model: str, strategy: str, budgets: list[float], seed: int, steps: Any = None) -> Any:
        calls.append((strategy, seed))
        return [{"model": model, "strategy": strategy, "budget": b, "seed": seed, "evaluations": 1, "wall_s": 1.0,
                 "best_acc": 0.5, "front": []} for b in budgets]  # fmt: skip

    monkeypatch.setattr(sq, "run_one", run_one)
    kept = {"model": "m", "strategy": "random", "budget": 0.5, "seed": 0, "evaluations": 9, "wall_s": 1.0, "front": []}
    doc: dict[str, Any] = {"rows": [kept]}
    sq.run_model(SimpleNamespace(seeds=2), "m", [0.5], ["uniform", "random"], doc)
    # seeds outer: uniform (deterministic) once, random's seed 0 kept from the resumed run, seed 1 searched
    assert calls == [("uniform", 0), ("random", 1)]
    assert doc["rows"][0] is kept and [(r["strategy"], r["seed"]) for r in doc["rows"][1:]] == calls


def test_anchored_runs_are_not_resumed_on_another_base_measurement(capsys: pytest.CaptureFixture[str]) -> None:
    sq = load("search_quality")
    assert sq.parse_args(["--in-loop-latency", "anchored"]).in_loop_latency == "anchored"
    with pytest.raises(SystemExit):
        sq.parse_args(["--in-loop-latency", "anchored", "--resume", "partial.json"])
    assert "start a fresh run" in capsys.readouterr().err
    assert sq.parse_args(["--resume", "partial.json"]).in_loop_latency == "predicted"
