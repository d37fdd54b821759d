"""bench/finetune_noise.py: the policies re-fine-tuned span the study's range, the noise is pooled
within policies, and the tau ceiling falls as the seed noise grows against the spread."""

from __future__ import annotations

from typing import Any

import pytest
from bench_helpers import load


def _study(accs: list[float]) -> dict[str, Any]:
    points = [{"model": "resnet20", "budget": 0.5, "policy": i, "finetuned_test_acc": a} for i, a in enumerate(accs)]
    rows = [{"model": "resnet20", "budget": 0.5, "protocol": p, "kendall_tau": t}
            for p, t in (("bn-recal", 0.3), ("head-refit", 0.55))]  # fmt: skip
    return {"points": points, "rows": rows}


def test_the_picked_policies_span_the_range_of_fine_tuned_accuracy() -> None:
    fn = load("finetune_noise")
    points = _study([0.5, 0.9, 0.7, 0.6, 0.8])["points"]
    assert [p["finetuned_test_acc"] for p in fn.spread_pick(points, 3)] == [0.5, 0.7, 0.9]
    assert len(fn.spread_pick(points, 10)) == 5


def test_noise_is_pooled_within_policies() -> None:
    fn = load("finetune_noise")
    assert fn.pooled_sd([[0.5, 0.5], [0.9, 0.9]]) == 0.0  # policies far apart, each reproducible
    assert fn.pooled_sd([[0.5, 0.7], [0.8, 0.6]]) == pytest.approx(0.1414, abs=1e-4)


def test_the_ceiling_is_one_without_noise_and_falls_as_noise_grows() -> None:
    fn = load("finetune_noise")
    truth = [0.80 + 0.005 * i for i in range(40)]
    assert fn.tau_ceiling(truth, 0.0, 20, seed=0)[0] == pytest.approx(1.0)
    small, lo, hi = fn.tau_ceiling(truth, 0.01, 200, seed=0)
    large = fn.tau_ceiling(truth, 0.1, 200, seed=0)[0]
    assert lo <= small <= hi and 0.3 < small < 0.95 and large < small


def test_rows_put_the_ceiling_beside_the_studys_best_protocol_and_target() -> None:
    fn = load("finetune_noise")
    study = _study([0.80 + 0.005 * i for i in range(40)])
    runs = [{"model": "resnet20", "budget": 0.5, "policy": i, "accs": [0.8 + 0.05 * i, 0.8 + 0.05 * i + 0.002]}
            for i in range(3)]  # fmt: skip
    (row,) = fn.summarise(study, runs, draws=50)
    assert row["best_protocol"] == "head-refit" and row["best_tau"] == 0.55 and row["target"] == 0.7
    assert row["seed_sd"] == pytest.approx(0.002 / 2**0.5) and row["policies"] == 3 and row["seeds"] == 2
    assert row["reliability"] > 0.99 and row["tau_ceiling"] > 0.8
    doc = {"args": {"study": "s.json", "policies": 3, "seeds": 1, "draws": 50}, "rows": [row],
           "machine": {"cpu": "x", "cores": 2, "platform": "linux"}, "seconds": 1.0}  # fmt: skip
    notes = "\n".join(fn.table(doc)["notes"])
    assert "resnet20 at 50%: target tau 0.7 is under the ceiling" in notes
