"""bench/criteria.py: the targets' verdicts come from the rows, each score from its own protocol,
the searched policy is the file's best, and the at-init path is the product's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from bench_helpers import load, tiny_config

from prunepilot.pruning import PruningPolicy
from prunepilot.search.config import validate_config
from prunepilot.search.evaluator import Evaluator
from prunepilot.search.protocols import get_protocol


@pytest.fixture(scope="module")
def cr() -> ModuleType:
    return load("criteria")


@pytest.fixture(scope="module")
def ev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Evaluator]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Evaluator(validate_config(tiny_config(tmp_path_factory.mktemp("cache"))))
    torch.set_num_threads(before)


def row(model: str, budget: float, bn: float, rec: float, criterion: str = "l1") -> dict[str, Any]:
    return {"model": model, "budget": budget, "criterion": criterion, "bn_recal_acc": bn, "reconstruct_acc": rec}


def init_row(model: str, budget: float, criterion: str, accs: list[float]) -> dict[str, Any]:
    return {"model": model, "budget": budget, "criterion": criterion, "test_acc": accs,
            "median": sorted(accs)[len(accs) // 2], "min": min(accs), "max": max(accs)}  # fmt: skip


def test_reconstruction_verdict_is_met_only_where_it_beats_bn_recal_in_every_row(cr: ModuleType) -> None:
    rows = [
        row("resnet20", 0.5, 0.40, 0.70),
        row("resnet20", 0.5, 0.30, 0.60, "snip"),
        row("resnet20", 0.3, 0.20, 0.50),
        row("resnet20", 0.3, 0.25, 0.20, "snip"),  # BN recalibration wins here
    ]
    notes = cr.reconstruction_verdicts(rows, ["resnet20", "mobilenet_v2"])
    assert notes == [
        "Target: reconstruction beats BN recalibration alone (no fine-tune), resnet20 at 50%: MET (higher held-out "
        "accuracy for 2 of 2 policy x criterion rows; median gain +30.0 points).",
        "Target: reconstruction beats BN recalibration alone (no fine-tune), resnet20 at 30%: NOT MET (higher "
        "held-out accuracy for 1 of 2 policy x criterion rows; median gain +12.5 points).",
        "Target: reconstruction beats BN recalibration alone (no fine-tune), mobilenet_v2 at 50%: NOT RUN (not in "
        "this run).",
        "Target: reconstruction beats BN recalibration alone (no fine-tune), mobilenet_v2 at 30%: NOT RUN (not in "
        "this run).",
    ]


def test_synflow_verdict_compares_medians_at_30_percent(cr: ModuleType) -> None:
    rows = [
        init_row("resnet20", 0.3, "synflow", [0.70, 0.72, 0.71]),
        init_row("resnet20", 0.3, "random", [0.71, 0.69, 0.71]),  # equal medians: not worse
        init_row("mobilenet_v2", 0.3, "synflow", [0.60, 0.61, 0.62]),
        init_row("mobilenet_v2", 0.3, "random", [0.63, 0.64, 0.65]),
        init_row("resnet20", 0.5, "synflow", [0.1, 0.1, 0.1]),  # another budget: not the target's
    ]
    r20, mnv2 = cr.synflow_verdicts(rows, ["resnet20", "mobilenet_v2"])
    assert r20.startswith("Target: SynFlow at init not worse than random at init at 30%, resnet20: MET (")
    assert "0.7100 [0.7000, 0.7200] vs random 0.7100 [0.6900, 0.7100]" in r20
    assert ": NOT MET (" in mnv2 and "0.6100 [0.6000, 0.6200] vs random 0.6400" in mnv2
    (quick,) = cr.synflow_verdicts(rows[-1:], ["resnet20"])
    assert quick.endswith("NOT RUN (synflow and random at init at 30% not both in this run).")


def test_a_policy_measured_over_its_budget_is_named_once(cr: ModuleType) -> None:
    rows = [
        {**row("resnet20", 0.5, 0.4, 0.7, c), "policy": "uniform", "measured_share": 0.56} for c in ("l1", "snip")
    ] + [{**row("resnet20", 0.3, 0.4, 0.7), "policy": "searched: random seed 0", "measured_share": 0.29}]
    assert cr.over_budget_notes(rows) == [
        "Over budget as measured: resnet20 at 50%, uniform: 56% of the base's latency (picked within the budget by "
        "the predictor; the row's figures are for this latency)."
    ]


def test_searched_policies_are_the_best_held_out_search_row(cr: ModuleType, ev: Evaluator) -> None:
    def policy(r: float) -> dict[str, Any]:
        return json.loads(PruningPolicy.uniform(ev.space, r).to_json())

    spec = cr.BASES["mobilenet_v2"]

    def search_row(model: str, strategy: str, budget: float, seed: int, acc: float, r: float | None) -> dict[str, Any]:
        found = {"model": model, "strategy": strategy, "budget": budget, "seed": seed, "best_acc": acc}
        return found if r is None else {**found, "policy": policy(r)}

    doc = {"rows": [
        search_row("resnet20", "uniform", 0.5, 0, 0.99, 0.9),
        search_row("resnet20", "random", 0.5, 1, 0.80, 0.6),
        search_row("resnet20", "knapsack", 0.5, 0, 0.85, 0.5),
        search_row("resnet20", "ppo", 0.5, 0, 0.95, None),  # no policy recorded
        search_row("resnet20", "random", 0.7, 0, 0.90, 0.8),  # another budget
        search_row(spec, "random", 0.3, 2, 0.50, 0.3),
    ]}  # fmt: skip
    found = cr.searched_policies(doc, ["resnet20", "mobilenet_v2"], [0.5, 0.3])
    assert set(found) == {("resnet20", 0.5), ("mobilenet_v2", 0.3)}
    best = found[("resnet20", 0.5)]
    assert (best.strategy, best.seed, best.held_out_acc) == ("knapsack", 0, 0.85)
    assert best.policy.keep_ratios == PruningPolicy.uniform(ev.space, 0.5).keep_ratios
    assert found[("mobilenet_v2", 0.3)].seed == 2


def test_each_score_is_its_own_protocols(cr: ModuleType, ev: Evaluator) -> None:
    ev.calibrate_fit()
    base_ms = ev.predict_latency_ms(ev.space.full_widths())
    policy = cr.uniform_policy(ev, 0.5 * base_ms)
    assert ev.predict_latency_ms(policy.channels) <= 0.5 * base_ms
    data = ev.scoring_data()
    scores = cr.score_policy(ev, policy, "snip", data, finetune_batches=2)
    assert all(0.0 <= a <= 1.0 for a in (scores.bn_recal, scores.reconstruct, scores.finetuned))
    chosen = cr.with_criterion(policy, "snip")
    assert chosen.importance == "snip" and chosen.channels == policy.channels
    # each figure is what the product's protocol gives that policy and criterion
    assert scores.bn_recal == get_protocol("bn-recal").score(chosen, cr.pruner(ev, chosen), data)
    assert scores.reconstruct == get_protocol("reconstruct").score(chosen, cr.pruner(ev, chosen), data)
    assert scores.reconstruct != scores.bn_recal  # on this model the refit changes the held-out accuracy
    assert set(scores.seconds) == {"bn-recal", "reconstruct", "finetune"}
    assert cr.score_policy(ev, policy, "l1", data, finetune_batches=0).finetuned is None


def test_at_init_is_the_product_apply_at_init(cr: ModuleType, ev: Evaluator, tmp_path: Path) -> None:
    policy = PruningPolicy.uniform(ev.space, 0.5)
    recipe = cr.init_recipe(1, 2, seed=0)
    acc = cr.at_init_accuracy("testing:tiny-convnet", policy, "synflow", ev.cfg.data, recipe, tmp_path)
    assert 0.0 <= acc <= 1.0
    report = json.loads((tmp_path / "synflow-seed0" / "report.json").read_text())
    assert report["at_init"] == {"criterion": "synflow", "seed": 0}
    assert report["accuracy"]["after_finetuning"] == acc and report["finetune"]["train"]["max_batches_per_epoch"] == 2
