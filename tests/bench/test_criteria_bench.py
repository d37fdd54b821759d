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
    assert set(scores.seconds) == {"prune", "bn-recal", "reconstruct", "finetune"}
    # channels chosen once and copied: the fine-tune's figure is the one ev.prune's model gets
    assert scores.finetuned == cr.finetune_test(ev, chosen, 2)
    assert cr.score_policy(ev, policy, "l1", data, finetune_batches=0).finetuned is None


def test_at_init_is_the_product_apply_at_init(cr: ModuleType, ev: Evaluator, tmp_path: Path) -> None:
    policy = PruningPolicy.uniform(ev.space, 0.5)
    recipe = cr.init_recipe(1, 2, seed=0)
    acc = cr.at_init_accuracy("testing:tiny-convnet", policy, "synflow", ev.cfg.data, recipe, tmp_path)
    assert 0.0 <= acc <= 1.0
    report = json.loads((tmp_path / "synflow-seed0" / "report.json").read_text())
    assert report["at_init"] == {"criterion": "synflow", "seed": 0}
    assert report["accuracy"]["after_finetuning"] == acc and report["finetune"]["train"]["max_batches_per_epoch"] == 2


def piece(
    bases: list[str],
    budgets: list[float],
    rows: list[dict[str, Any]],
    init_rows: list[dict[str, Any]],
    seconds: float | None = 10.0,
    **settings: Any,
) -> dict[str, Any]:
    """A criteria document as one run of bench/criteria.py writes it."""
    args = {"bases": bases, "budgets": budgets, "criteria": sorted({r["criterion"] for r in rows}),
            "init_criteria": ["synflow"], "finetune_batches": 100, "init_epochs": 1, "init_batches": 200,
            "init_seeds": 3, "device": "local-cpu-cputime", "latency_batch": 32, "rounds": 5, "lower_bound": 0.2,
            "bn_batches": 4, "val_batches": 4, "quick": False, **settings}  # fmt: skip
    doc = {"benchmark": "criteria", "args": args, "rows": rows, "init_rows": init_rows, "failures": [],
           "machine": {"cpu": "x", "cores": 2, "platform": "linux"}, "versions": {"torch": "2"},
           "bases": {b: {"latency_ms": 10.0 + len(budgets), "test_acc": 0.9} for b in bases},
           "searched_notes": []}  # fmt: skip
    if seconds is not None:
        doc["seconds"] = seconds
    return doc


def full_row(model: str, budget: float, bn: float, rec: float, criterion: str = "l1") -> dict[str, Any]:
    return {**row(model, budget, bn, rec, criterion), "policy": "uniform", "mean_keep": 0.5, "measured_share": budget,
            "finetuned_test_acc": 0.8}  # fmt: skip


def test_merged_pieces_give_one_table_with_every_pieces_rows_and_verdicts(cr: ModuleType) -> None:
    trained = [full_row("resnet20", 0.5, 0.4, 0.7), full_row("resnet20", 0.3, 0.2, 0.5)]
    at_init = [{**init_row("resnet20", 0.3, c, [0.7, 0.7, 0.7]), "mean_keep": 0.3, "measured_share": 0.3}
               for c in ("synflow", "random")]  # fmt: skip
    rn20 = piece(["resnet20"], [0.5, 0.3], trained, at_init)
    m50 = piece(["mobilenet_v2"], [0.5], [full_row("mobilenet_v2", 0.5, 0.3, 0.6)], [])
    m30 = piece(["mobilenet_v2"], [0.3], [full_row("mobilenet_v2", 0.3, 0.3, 0.1)], [], seconds=None)
    doc = cr.merge_runs([rn20, m50, m30], ["a.json", "b.json", "c.partial.json"])
    assert len(doc["rows"]) == 4 and len(doc["init_rows"]) == 2
    assert doc["args"]["bases"] == ["mobilenet_v2", "resnet20"] and doc["args"]["budgets"] == [0.3, 0.5]
    assert doc["seconds"] == 20.0 and doc["merged_from"] == ["a.json", "b.json", "c.partial.json"]
    notes = "\n".join(doc["table"]["notes"])
    assert "resnet20 at 50%: MET" in notes and "resnet20 at 30%: MET" in notes
    assert "mobilenet_v2 at 50%: MET" in notes and "mobilenet_v2 at 30%: NOT MET" in notes
    assert "SynFlow at init not worse than random at init at 30%, resnet20: MET" in notes
    assert "mobilenet_v2: NOT RUN" in notes  # no at-init rows for that base in any piece
    assert "INTERRUPTED piece (its partial file): c.partial.json." in notes
    assert (
        "Searched-policy rows NOT RUN in any piece: mobilenet_v2 at 30%, mobilenet_v2 at 50%, resnet20 at 30%, "
        "resnet20 at 50%." in notes
    )
    assert "a.json: bases ['resnet20'], budgets [0.5, 0.3], base latency resnet20 12.000 ms" in notes
    assert len(doc["table"]["rows"]) == 6


def test_merge_refuses_pieces_that_disagree_or_overlap(cr: ModuleType) -> None:
    a = piece(["resnet20"], [0.5], [full_row("resnet20", 0.5, 0.4, 0.7)], [])
    other_ft = piece(["resnet20"], [0.3], [full_row("resnet20", 0.3, 0.4, 0.7)], [], finetune_batches=50)
    with pytest.raises(cr.ConfigError, match=r"b.json: settings \{'finetune_batches': 50\} differ .*100"):
        cr.merge_runs([a, other_ft], ["a.json", "b.json"])
    with pytest.raises(cr.ConfigError, match=r"scored twice: \[\('resnet20', 0.5, 'uniform', 'l1'\)\]"):
        cr.merge_runs([a, a], ["a.json", "a2.json"])
    # a lower bound of its own (a budget only a narrower uniform policy reaches) is allowed, and named
    low = piece(["mobilenet_v2"], [0.3], [full_row("mobilenet_v2", 0.3, 0.2, 0.5)], [], lower_bound=0.1)
    doc = cr.merge_runs([a, low], ["a.json", "low.json"])
    assert doc["args"]["lower_bound"] == [0.1, 0.2] and len(doc["rows"]) == 2
    assert "low.json: bases ['mobilenet_v2'], budgets [0.3], lower bound 0.1, " in "\n".join(doc["table"]["notes"])
    with pytest.raises(cr.ConfigError, match="not a criteria result"):
        cr.merge_runs([a, {**a, "benchmark": "devices"}], ["a.json", "d.json"])


def test_uniform_widths_recorded_by_an_earlier_piece_are_reused(cr: ModuleType, ev: Evaluator) -> None:
    widths = PruningPolicy.uniform(ev.space, 0.5).channels
    earlier = [{"rows": [{**full_row("resnet20", 0.5, 0.4, 0.7), "widths": widths},
                         {**full_row("resnet20", 0.5, 0.4, 0.7), "policy": "searched: random seed 0",
                          "widths": PruningPolicy.uniform(ev.space, 0.9).channels}],  # not the uniform policy
                "init_rows": []}]  # fmt: skip
    assert cr.recorded_uniform_widths(earlier, "resnet20", 0.5) == widths
    assert cr.recorded_uniform_widths(earlier, "resnet20", 0.3) is None
    assert cr.recorded_uniform_widths(earlier, "mobilenet_v2", 0.5) is None
    pinned = cr.uniform_policy(ev, 1e-9, widths)  # the budget is not consulted when pinned
    assert pinned.channels == widths
    other = PruningPolicy.uniform(ev.space, 0.4).channels
    earlier.append({"rows": [], "init_rows": [{"model": "resnet20", "budget": 0.5, "widths": other}]})
    with pytest.raises(cr.ConfigError, match="disagree on the uniform widths of resnet20 at 50%"):
        cr.recorded_uniform_widths(earlier, "resnet20", 0.5)
    assert cr.parse_args(["--criteria"]).criteria == []
    assert cr.parse_args(["--parts", "init"]).parts == ["init"]


def test_a_policy_scored_with_only_some_criteria_is_named(cr: ModuleType) -> None:
    rows = [full_row("resnet20", 0.5, 0.4, 0.7, c) for c in ("l1", "snip")]
    assert cr.incomplete_notes(rows, ["l1", "snip", "thinet"]) == [
        "NOT RUN: resnet20 at 50%, uniform: criteria ['thinet']."
    ]
    assert cr.incomplete_notes(rows, ["l1", "snip"]) == []


def test_rescoring_replaces_the_no_training_scores_and_keeps_latency_fine_tune_and_at_init(cr: ModuleType) -> None:
    at_init = [{**init_row("mobilenet_v2", 0.3, c, [0.7, 0.7, 0.7]), "mean_keep": 0.1, "measured_share": 0.3}
               for c in ("synflow", "random")]  # fmt: skip
    rows = [{**full_row("mobilenet_v2", 0.3, 0.09, 0.08, c), "widths": {"g": 3}, "seconds": {"prune": 1.0}}
            for c in ("l1", "snip")]  # fmt: skip
    study = piece(["mobilenet_v2"], [0.3], rows, at_init)
    assert "mobilenet_v2 at 30%: NOT MET" in "\n".join(cr.criteria_table(study)["notes"])
    asked: list[str] = []

    def score(r: dict[str, Any]) -> Any:
        asked.append(r["criterion"])
        return cr.Scores(0.09, 0.5, None, {"bn-recal": 0.1, "reconstruct": 0.2})

    out = cr.rescore(study, "old.json", score)
    assert asked == ["l1", "snip"]
    assert [(r["bn_recal_acc"], r["reconstruct_acc"]) for r in out["rows"]] == [(0.09, 0.5)] * 2
    assert [r["reconstruct_acc_before"] for r in out["rows"]] == [0.08, 0.08]
    assert [r["finetuned_test_acc"] for r in out["rows"]] == [0.8, 0.8]  # the fine-tunes are the study's
    assert [r["measured_share"] for r in out["rows"]] == [0.3, 0.3]
    assert out["rows"][0]["seconds"] == {"prune": 1.0, "rescore_bn-recal": 0.1, "rescore_reconstruct": 0.2}
    assert out["init_rows"] == study["init_rows"]
    notes = "\n".join(out["table"]["notes"])
    assert "mobilenet_v2 at 30%: MET" in notes and "BN recal reproduced the study's figure in every row" in notes
    assert study["rows"][0]["reconstruct_acc"] == 0.08  # the input is not modified
    with pytest.raises(cr.ConfigError, match="not a finished criteria result"):
        cr.rescore(piece(["mobilenet_v2"], [0.3], rows, [], seconds=None), "partial.json", score)


def test_criteria_left_out_of_a_rescore_lose_their_reconstruct_figure_and_are_named(cr: ModuleType) -> None:
    rows = [{**full_row("resnet20", 0.3, 0.1, r, c), "widths": {"g": 3}} for c, r in (("l1", 0.05), ("hessian", 0.9))]
    study = piece(["resnet20"], [0.3], rows, [])

    def score(r: dict[str, Any]) -> Any:
        assert r["criterion"] == "l1"  # hessian is not scored
        return cr.Scores(0.1, 0.6, None, {})

    out = cr.rescore(study, "old.json", score, criteria=["l1"])
    by = {r["criterion"]: r for r in out["rows"]}
    assert by["l1"]["reconstruct_acc"] == 0.6
    assert by["hessian"]["reconstruct_acc"] is None and by["hessian"]["reconstruct_acc_before"] == 0.9
    assert by["hessian"]["bn_recal_acc"] == 0.1  # bn-recal's protocol did not change
    notes = "\n".join(out["table"]["notes"])
    assert "NOT rescored: hessian" in notes and "resnet20 at 30%: MET (higher held-out accuracy for 1 of 1" in notes


def test_budgets_left_out_of_a_rescore_are_named_and_not_counted(cr: ModuleType) -> None:
    rows = [{**full_row("resnet20", b, 0.1, 0.05), "widths": {"g": 3}} for b in (0.3, 0.5)]
    out = cr.rescore(piece(["resnet20"], [0.3, 0.5], rows, []), "old.json",
                     lambda r: cr.Scores(0.1, 0.6, None, {}), where={("resnet20", 0.3)})  # fmt: skip
    assert [r["reconstruct_acc"] for r in out["rows"]] == [0.6, None]
    notes = "\n".join(out["table"]["notes"])
    assert "NOT rescored: resnet20 at 50%" in notes and "resnet20 at 50%: NOT RUN" in notes


def test_where_pairs_are_parsed_and_a_bad_one_is_named(cr: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    args = cr.parse_args(["--rescore", "s.json", "--where", "resnet20@0.3", "mobilenet_v2@0.5"])
    assert args.where == [("resnet20", 0.3), ("mobilenet_v2", 0.5)]
    for bad, said in ((["--rescore", "s.json", "--where", "resnet20"], "expected MODEL@BUDGET"),
                      (["--rescore", "s.json", "--where", "vgg@0.3"], "unknown base 'vgg'"),
                      (["--where", "resnet20@0.3"], "only applies with --rescore")):  # fmt: skip
        with pytest.raises(SystemExit):
            cr.parse_args(bad)
        assert said in capsys.readouterr().err


def test_a_criterion_whose_bn_recal_figure_moved_on_rescoring_is_named(cr: ModuleType) -> None:
    rows = [{**full_row("resnet20", 0.3, 0.1, 0.05, c), "widths": {"g": 3}} for c in ("l1", "random")]
    out = cr.rescore(piece(["resnet20"], [0.3], rows, []), "old.json",
                     lambda r: cr.Scores(0.1 if r["criterion"] == "l1" else 0.13, 0.6, None, {}))  # fmt: skip
    assert "every row except random (up to 3.00 points" in "\n".join(out["table"]["notes"])


def test_a_rescore_of_a_rescore_keeps_the_rows_it_does_not_score_and_the_studys_first_figures(cr: ModuleType) -> None:
    rows = [{**full_row("resnet20", b, 0.1, 0.05), "widths": {"g": 3}} for b in (0.3, 0.5)]
    study = piece(["resnet20"], [0.3, 0.5], rows, [])
    first = cr.rescore(study, "a.json", lambda r: cr.Scores(0.1, 0.6, None, {}), where={("resnet20", 0.3)})
    second = cr.rescore(first, "b.json", lambda r: cr.Scores(0.1, 0.7, None, {}), where={("resnet20", 0.5)})
    assert [r["reconstruct_acc"] for r in second["rows"]] == [0.6, 0.7]  # the 30% row kept from the first
    assert [r["reconstruct_acc_before"] for r in second["rows"]] == [0.05, 0.05]  # the study's own figures
    notes = "\n".join(second["table"]["notes"])
    assert notes.count("Rescored (") == 1 and "Rescored (a.json, b.json" in notes and "NOT rescored" not in notes
    assert "resnet20 at 50%: MET" in notes and "resnet20 at 30%: MET" in notes
