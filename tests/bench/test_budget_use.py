"""bench/budget_use.py: the table says whether the driver's budget fill gave each strategy's best."""

from __future__ import annotations

from bench_helpers import load


def test_the_table_says_whether_the_best_is_the_fill() -> None:
    bu = load("budget_use")
    best = {"id": "fill-0000", "accuracy": 0.9, "latency_ms": 1.0, "latency_kind": "predicted",
            "measured_latency_ms": 0.95, "budget_use": 0.95}  # fmt: skip
    rows = [
        {"strategy": "random", "candidates": 4, "seconds": 1.0, "budget_ms": 1.0, "best": best, "met": True,
         "fill": {"from": "t-0001", "filled": "fill-0000"}},
        {"strategy": "optuna-tpe", "candidates": 4, "seconds": 1.0, "budget_ms": 1.0, "met": False,
         "best": {**best, "id": "t-0002"}, "fill": {"from": "t-0002", "filled": "fill-0000", "accuracy": 0.8,
                                                     "from_accuracy": 0.9, "latency_ms": 0.97}},  # scored lower
        {"strategy": "amc-ddpg", "candidates": 4, "seconds": 1.0, "budget_ms": 1.0, "met": False,
         "best": {**best, "id": "t-0003"}, "fill": {"from": "t-0003", "filled": "fill-0000", "accuracy": 0.9,
                                                     "from_accuracy": 0.9, "latency_ms": 0.98}},  # tied
        {"strategy": "uniform", "candidates": 1, "seconds": 1.0, "budget_ms": 1.0, "best": best, "met": True},
    ]  # fmt: skip
    record = {"rows": rows, "args": {"config": "q.yaml"}, "versions": {"torch": "2"},
              "machine": {"cpu": "x", "cores": 2, "platform": "linux"}}  # fmt: skip
    table = bu.budget_table(record)
    col = table["columns"].index("best is the fill")
    assert [r[col] for r in table["rows"]] == ["yes", "no", "no", "-"]
    notes = "\n".join(table["notes"])
    assert "optuna-tpe: the fill (budget_use 0.970) scored 0.8000, under the strategy's best (0.9000)." in notes
    assert "amc-ddpg: the fill (budget_use 0.980) scored 0.9000, the same as the strategy's best; a tie" in notes
    assert "random: the fill" not in notes  # it is the best
