"""bench/knapsack_speed.py: every budget solved within it, the verdict from the slowest solve."""

from __future__ import annotations

import json
from pathlib import Path

from bench_helpers import load


def test_each_budget_is_solved_within_it_and_the_table_says_so(tmp_path: Path) -> None:
    out = tmp_path / "ks.json"
    argv = ["--model", "torchvision:resnet18", "--image", "64", "--fractions", "0.8,0.4", "--out", str(out)]
    load("knapsack_speed").main(argv)
    table = json.loads(out.read_text())["table"]
    assert [r[0] for r in table["rows"]] == [0.8, 0.4]
    for fraction, seconds, _optimal, gap, share, fast in table["rows"]:
        assert 0 < share <= fraction and gap >= 0 and fast == (seconds < 1.0)
    slowest = max(r[1] for r in table["rows"])
    assert f"(slowest {round(slowest, 3)} s)" in " ".join(table["notes"])
