"""BENCHMARKS.md is generated from benchmark JSON, never typed: report.py and every script's table.

The bench scripts are not a package, so they are imported from their paths. Each script's
table function gets a synthetic result (as its JSON holds it) and the table's rows must be
that result's own numbers.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from bench_helpers import BENCH, ROOT, load

from prunepilot.search.front_metrics import budget_hypervolume


@pytest.fixture(scope="module")
def report() -> ModuleType:
    return load("report")


def roundtrip(table: dict[str, Any]) -> dict[str, Any]:
    """What report.py reads back: the table after JSON."""
    return json.loads(json.dumps(table))


def assert_honest_notes(table: dict[str, Any], latency: str) -> None:
    text = " ".join(table["notes"])
    assert "Machine (shared)" in text and "Versions: " in text and "torch" in text
    assert f"Latency: {latency}" in text or f"({latency})" in text


# --- report.py ---------------------------------------------------------------------------------


def doc(name: str, rows: list[list[Any]], **extra: Any) -> dict[str, Any]:
    table = {"title": f"{name} table", "columns": ["a", "b", "c"], "rows": rows, "notes": ["a note"]}
    return {"benchmark": name, "table": table, **extra}


def test_render_table_formats_cells_and_notes(report: ModuleType) -> None:
    text = report.render_table(doc("x", [["p|q", 0.123456, None], [3, 123456.7, "yes"]]), "bench/results/x.json")
    assert text.startswith("### x table\n\nSource: `bench/results/x.json`\n")
    assert "| a | b | c |\n|---|---|---|\n" in text
    assert "| p\\|q | 0.1235 | - |" in text
    assert "| 3 | 123,457 | yes |" in text
    assert text.endswith("\n- a note\n")


def test_update_inserts_then_replaces_only_the_generated_section(report: ModuleType) -> None:
    first = report.update("# Benchmarks\n\nintro\n", "one\n")
    assert first == f"# Benchmarks\n\nintro\n\n{report.BEGIN}\none\n{report.END}\n"
    second = report.update(first + "\ntail text\n", "two\n")
    assert second == f"# Benchmarks\n\nintro\n\n{report.BEGIN}\ntwo\n{report.END}\n\ntail text\n"
    assert report.update(second, "two\n") == second


def test_newest_results_picks_the_newest_table_per_benchmark(report: ModuleType, tmp_path: Path) -> None:
    def write(rel: str, content: Any, mtime: float) -> Path:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        os.utime(path, (mtime, mtime))
        return path

    write("2026-11-20/amc.json", doc("amc", [[1, 2, 3]]), 5000)  # older by its path, though newer mtime
    newest = write("2026-11-25/amc.json", doc("amc", [[4, 5, 6]]), 2000)
    write("later-but-no-table.json", {"benchmark": "amc", "rows": []}, 3000)
    write("broken.json", "{not json", 3000)
    write("a-list.json", [1, 2], 3000)
    stem = write("apply-quick.json", {"table": doc("ignored", [])["table"]}, 1500)

    found = report.newest_results(tmp_path)
    assert list(found) == ["amc", "apply-quick"]
    assert found["amc"][0] == newest and found["amc"][1]["table"]["rows"] == [[4, 5, 6]]
    assert found["apply-quick"][0] == stem

    rendered = report.render_all(tmp_path, tmp_path)
    assert "Source: `2026-11-25/amc.json`" in rendered and "| 4 | 5 | 6 |" in rendered
    assert "| 1 | 2 | 3 |" not in rendered


def test_a_full_result_wins_over_newer_quick_ones(report: ModuleType, tmp_path: Path) -> None:
    def write(rel: str, content: dict[str, Any]) -> Path:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))
        return path

    full = write("2026-11-20/amc.json", doc("amc", [["full"]]))
    write("2026-11-25-quick/amc.json", doc("amc", [["quick folder"]]))  # quick by its folder
    write("2026-11-26/amc.json", doc("amc", [["quick flag"]], quick=True))  # quick by its JSON
    write("2026-11-27/amc.json", doc("amc", [["quick args"]], args={"quick": True}))
    only_quick = write("2026-11-25-quick/oneshot.json", doc("oneshot", [["q"]], quick=True))
    write("2026-11-24-quick/oneshot.json", doc("oneshot", [["older q"]], quick=True))

    found = report.newest_results(tmp_path)
    assert found["amc"][0] == full
    assert found["oneshot"][0] == only_quick  # no full run: the newest quick one
    assert report.is_quick(tmp_path / "x-quick.json", {}) and not report.is_quick(full, {"quick": False})


def test_render_all_without_results_says_how_to_get_them(report: ModuleType, tmp_path: Path) -> None:
    assert "run_all.py --quick" in report.render_all(tmp_path, tmp_path)


# --- every script's table: rows are the JSON's own numbers --------------------------------------

VERSIONS = {"python": "3.11.7", "prunepilot": "0.1.0", "platform": "Linux-x", "torch": "2.14.1", "torch_pruning": "1.6"}


def summary_entry(
    strategy: str, acc: float, ft: float | None, hv: float, budget: float = 0.5, model: str = "resnet20"
) -> dict[str, Any]:
    return {
        "model": model,
        "budget": budget,
        "strategy": strategy,
        "seeds": 3,
        "seeds_within": 2,
        "acc_min": acc - 0.01,
        "acc_median": acc,
        "acc_max": acc + 0.005,
        "hv_median": hv,
        "wall_median_s": 120.5,
        "evals_median": 40,
        "ft_median": ft,
        "budget_use_median": 0.95,
        "distinct_median": 38,
        "latency_kind": "measured",
    }


def test_search_quality_table(capsys: pytest.CaptureFixture[str]) -> None:
    mnv2 = load("search_quality").SECOND_MODEL
    tables = load("sq_tables")
    summary = [
        summary_entry("uniform", 0.80, 0.85, 5.0),
        summary_entry("random", 0.83, 0.86, 6.0),
        summary_entry("optuna-tpe", 0.81, 0.87, 6.6),
        summary_entry("amc-ddpg", 0.82, 0.84, 5.5),
        summary_entry("uniform", 0.50, None, 2.0, budget=0.3),
        summary_entry("amc-ddpg", 0.56, None, 2.5, budget=0.3),
        summary_entry("uniform", 0.70, None, 3.0, model=mnv2),
        summary_entry("autoslim", 0.69, None, 3.1, model=mnv2),
    ]
    base = {"accuracy": 0.9, "latency_ms": 10.0, "latency_kind": "measured"}
    result = {
        "benchmark": "search_quality",
        "quick": True,
        "rows": [{"model": "resnet20", "base": base}, {"model": mnv2, "base": {**base, "latency_ms": 20.0}}],
        "summary": summary,
        "skipped_strategies": ["metapruning"],
        "settings": {"model": "resnet20", "seeds": "3", "evaluations": "40", "device": "local-cpu-cputime"},
        "machine": {"cpu": "AMD EPYC", "cores": 2, "platform": "Linux-x"},
        "versions": VERSIONS,
    }
    table = roundtrip(tables.quality_table(result))
    keys = ["model", "budget", "strategy", "seeds", "seeds_within", "evals_median", "acc_min", "acc_median",
            "acc_max", "hv_median", "ft_median", "budget_use_median", "distinct_median", "wall_median_s",
            "latency_kind"]  # fmt: skip
    assert table["rows"] == [[s[k] for k in keys] for s in summary]
    assert len(table["columns"]) == len(keys)
    notes = "\n".join(table["notes"])
    assert "Base resnet20: held-out accuracy 0.9000, latency 10.000 ms (measured)" in notes
    assert f"Base {mnv2}: held-out accuracy 0.9000, latency 20.000 ms" in notes
    # best searched at 50% (no fine-tune) is amc-ddpg 0.82: above uniform, below random
    assert "At resnet20, 50%, best accuracy" in notes
    assert "amc-ddpg 0.82 vs uniform 0.8: +2.00 points (beats uniform); " in notes
    assert "amc-ddpg 0.82 vs random 0.83: -1.00 points (does NOT beat random); torch-pruning-global not run" in notes
    # after fine-tune optuna-tpe is best: beats both
    assert "optuna-tpe 0.87 vs uniform 0.85: +2.00 points (beats uniform); optuna-tpe 0.87 vs random 0.86" in notes
    # hypervolume: optuna-tpe beats random; against optuna-tpe itself the best other is amc-ddpg, below it
    assert "optuna-tpe 6.6 vs random 6: +10.00% (beats random)" in notes
    assert "within the budget (median over seeds)" in notes and "points over the budget count for nothing" in notes
    assert "amc-ddpg 5.5 vs optuna-tpe 6.6: -16.67% (does NOT beat optuna-tpe)" in notes
    # at 30% only uniform and amc-ddpg ran, without fine-tune
    assert "amc-ddpg 0.56 vs uniform 0.5: +6.00 points (beats uniform); random not run;" in notes
    assert "At resnet20, 30%, test accuracy" not in notes and "optuna-tpe not run" in notes
    # the second model gets its own verdicts
    assert f"At {mnv2}, 50%, best accuracy" in notes and "autoslim 0.69 vs uniform 0.7: -1.00 points (does NOT" in notes
    assert "metapruning" in notes and "40 evaluations per search" in notes and "Seeds: 3" in notes
    assert_honest_notes(table, "measured")
    tables.print_table(table)
    out = capsys.readouterr().out
    assert "0.8100/0.8200/0.8250" in out and "mobilenet_v2" in out


def test_search_quality_target_verdicts() -> None:
    tables = load("sq_tables")
    summary = [
        summary_entry("uniform", 0.5, 0.800, 0.30),
        summary_entry("random", 0.5, 0.810, 0.33),
        summary_entry("torch-pruning-global", 0.5, 0.812, 0.10),
        summary_entry("optuna-tpe", 0.5, 0.822, 0.35),
        summary_entry("amc-ddpg", 0.5, 0.805, 0.31),
        summary_entry("optuna-nsga2", 0.5, 0.801, 0.36),
        summary_entry("uniform", 0.4, 0.700, 0.2, budget=0.3),
        summary_entry("random", 0.4, 0.710, 0.2, budget=0.3),
        summary_entry("torch-pruning-global", 0.4, 0.720, 0.2, budget=0.3),
        summary_entry("knapsack", 0.4, 0.715, 0.2, budget=0.3),
        summary_entry("uniform", 0.4, 0.700, 0.2, model="other"),
        summary_entry("random", 0.4, None, 0.2, model="other"),
    ]
    notes = "\n".join(tables.target_notes(summary))
    # 50%: the best searched strategy (peers and random are not searched strategies) is optuna-tpe
    assert "Target at resnet20, 50%, after the fine-tune: best searched strategy beats uniform by >= 1.0" in notes
    assert "optuna-tpe 0.8220 vs uniform 0.8000 (+2.20): MET." in notes
    assert "beats random by >= 0.5 points. optuna-tpe 0.8220 vs random 0.8100 (+1.20): MET." in notes
    assert "beats torch-pruning-global by any margin. optuna-tpe 0.8220 vs torch-pruning-global 0.8120" in notes
    assert "amc-ddpg beats random search after the fine-tune. amc-ddpg 0.8050 vs random 0.8100 (-0.50): NOT" in notes
    assert "HV within budget >= random's at equal evaluations. optuna-nsga2 0.36 vs random 0.33: MET." in notes
    # 30%: knapsack beats uniform and random by the margins but loses to the peer
    assert "knapsack 0.7150 vs uniform 0.7000 (+1.50): MET." in notes
    assert "knapsack 0.7150 vs random 0.7100 (+0.50): MET." in notes
    assert "knapsack 0.7150 vs torch-pruning-global 0.7200 (-0.50): NOT MET." in notes
    assert "resnet20, 30%: amc-ddpg" not in notes  # amc did not run there: no verdict invented
    # a model whose searches have no fine-tuned figure fails its targets, plainly
    assert "Targets at other, 50%: no searched strategy has a fine-tuned figure: NOT MET." in notes


def test_search_quality_a_failed_search_is_a_row_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    sq = load("search_quality")

    def run_one(args: Any, model: str, strategy: str, budgets: list[float], seed: int, steps: Any = None) -> Any:
        if seed == 1:
            raise ValueError("budget 7.673 ms is below the reachable minimum of 8.613 ms")
        front = [{"accuracy": 0.4, "latency_ms": 5.0}]
        return [{"model": model, "strategy": strategy, "budget": b, "seed": seed, "budget_ms": 10.0, "evaluations": 12,
                 "wall_s": 30.0, "hypervolume": 1.0, "best_acc": 0.4, "best_latency_ms": 5.0,
                 "latency_kind": "measured", "front": front} for b in budgets]  # fmt: skip

    monkeypatch.setattr(sq, "run_one", run_one)
    saved: list[int] = []
    doc: dict[str, Any] = {"rows": [], "calibration": []}
    args = SimpleNamespace(seeds=3, no_calibrate=True, oneshot_steps=50, min_oneshot_steps=50)
    sq.run_model(args, "resnet20", [0.3], ["random"], doc, save=lambda: saved.append(len(doc["rows"])))
    assert [r["seed"] for r in doc["rows"]] == [0, 1, 2] and saved == [1, 2, 3]  # saved after every search
    failed = doc["rows"][1]
    assert failed["best_acc"] is None and failed["front"] == [] and "below the reachable minimum" in failed["error"]
    summary = load("sq_summary")
    (entry,) = summary.summarise(doc["rows"])
    assert (entry["seeds"], entry["seeds_within"], entry["failed"]) == (3, 2, 1)
    assert entry["hv_median"] == pytest.approx(budget_hypervolume([{"accuracy": 0.4, "latency_ms": 5.0}], 10.0))
    doc["summary"] = summary.summarise(doc["rows"])
    notes = "\n".join(load("sq_tables").quality_table(doc)["notes"])
    assert "FAILED searches (counted in 'seeds', with no policy): resnet20 random seed 1: ValueError: budget" in notes


def test_search_quality_merge_rows_a_rerun_wins() -> None:
    summary = load("sq_summary")
    first = [{"model": "a", "strategy": "random", "seed": s, "run": 1} for s in range(3)]
    first += [{"model": "a", "strategy": "uniform", "seed": 0, "run": 1}]
    first += [{"model": "b", "strategy": "random", "seed": 0, "run": 1}]
    second = [{"model": "a", "strategy": "random", "seed": s, "run": 2} for s in range(3)]
    second += [{"model": "a", "strategy": "autoslim", "seed": 0, "run": 2}]
    merged = summary.merge_rows([first, second])
    assert [(r["model"], r["strategy"], r["run"]) for r in merged] == [
        ("a", "uniform", 1), ("b", "random", 1), ("a", "random", 2), ("a", "random", 2), ("a", "random", 2),
        ("a", "autoslim", 2),
    ]  # fmt: skip


def test_search_quality_combined_runs_get_their_own_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report: ModuleType
) -> None:
    sq, summary = load("search_quality"), load("sq_summary")
    base = {"accuracy": 0.9, "latency_ms": 10.0, "latency_kind": "measured"}

    def run_doc(strategy: str, acc: float, **extra: Any) -> dict[str, Any]:
        rows = [
            summary.result_row("resnet20", strategy, 0.5, seed, [0.5], 10.0, best_acc=acc, best_latency_ms=4.0,
                          latency_kind="measured", base=base, budget_ms=5.0)
            for seed in range(2)
        ]  # fmt: skip
        return {"benchmark": "search_quality", "rows": rows, "settings": {"evaluations": "8"}, **extra}

    single, other = tmp_path / "single.json", tmp_path / "other.json"
    single.write_text(json.dumps(run_doc("random", 0.6, oneshot_sizing={"margin": 0.9, "slim_trials": 4})))
    other.write_text(json.dumps(run_doc("uniform", 0.5)))
    # one run summarised again is still that run's table
    monkeypatch.setattr("sys.argv", ["sq", "--from-partial", str(single), "--out", str(tmp_path / "one")])
    sq.main()
    alone = json.loads((tmp_path / "one" / "search_quality.json").read_text())
    assert alone["benchmark"] == "search_quality" and "combined" not in alone["table"]["title"]
    # two runs make a combined table, which names both sources
    monkeypatch.setattr("sys.argv", ["sq", "--from-partial", str(single), str(other), "--out", str(tmp_path / "two")])
    sq.main()
    combined = json.loads((tmp_path / "two" / "search_quality.json").read_text())
    assert combined["benchmark"] == "search_quality_combined"
    assert combined["table"]["title"].endswith("(combined from 2 runs)")
    assert [s["file"] for s in combined["sources"]] == [str(single), str(other)]
    # combining a combined file keeps its original sources, and both tables are shown
    monkeypatch.setattr("sys.argv", ["sq", "--from-partial", str(tmp_path / "two" / "search_quality.json"),
                                     "--out", str(tmp_path / "three")])  # fmt: skip
    sq.main()
    again = json.loads((tmp_path / "three" / "search_quality.json").read_text())
    assert [s["file"] for s in again["sources"]] == [str(single), str(other)]
    assert again["benchmark"] == "search_quality_combined" and again["rows"] == combined["rows"]
    shown = report.newest_results(tmp_path)
    assert set(shown) == {"search_quality", "search_quality_combined"}


def amc_row(method: str, seed: int | None, val: float, test: float) -> dict[str, Any]:
    return {"method": method, "seed": seed, "val_acc": val, "test_acc": test, "latency_ms": 3.2,
            "latency_kind": "measured", "predicted_ms": 3.1, "mean_keep": 0.61, "evaluations": 20, "cache_hits": 2,
            "seconds": 55.5, "policy": {}, "curve": [val]}  # fmt: skip


def test_amc_table(capsys: pytest.CaptureFixture[str]) -> None:
    amc = load("amc")
    rows = [amc_row("uniform", None, 0.70, 0.71), amc_row("amc-ddpg", 0, 0.74, 0.70), amc_row("random", 0, 0.73, 0.72)]
    record = {
        "benchmark": "amc",
        "args": {"budget": 0.5, "episodes": 20, "seeds": 1, "quick": True, "device": "local-cpu", "latency_batch": 1},
        "base": {"accuracy": 0.9, "latency_ms": 6.4, "latency_kind": "measured"},
        "budget_ms": 3.2,
        "rows": rows,
        "versions": {**VERSIONS, "cpu": "AMD EPYC", "cpus": 2},
    }
    table = roundtrip(amc.amc_table(record))
    keys = ["method", "seed", "val_acc", "test_acc", "latency_ms", "predicted_ms", "mean_keep", "evaluations",
            "cache_hits", "seconds"]  # fmt: skip
    assert table["rows"] == [[r[k] for k in keys] for r in rows]
    notes = "\n".join(table["notes"])
    assert "amc-ddpg vs uniform: -1.00 test-acc points (does NOT beat uniform)" in notes
    assert "vs random: -2.00 points (does NOT beat random)" in notes
    assert "AMD EPYC, 2 cores" in notes and "cpus 2" not in notes
    assert_honest_notes(table, "measured")
    amc.print_table(table)
    assert "amc-ddpg      0   0.7400   0.7000" in capsys.readouterr().out


def apply_variant(name: str, finetuned: float, diff: float, within: bool | None) -> dict[str, Any]:
    return {
        "variant": name,
        "mean_keep": 0.47,
        "macs": {"before": 31_000_000, "after": 7_800_000, "ratio": 0.25},
        "params": {"before": 272_000, "after": 74_000, "ratio": 0.27},
        "accuracy": {
            "before_pruning": 0.867,
            "after_pruning_no_recalibration": 0.10,
            "after_pruning": 0.32,
            "after_finetuning": finetuned,
        },  # fmt: skip
        "latency": {
            "kind": "measured",
            "search": {"ms": 8.4},
            "pruned_ms": 8.9,
            "diff_pct": diff,
            "within_10pct": within,
            "diff_pct_drift_corrected": None,
            "within_10pct_drift_corrected": None,
        },  # fmt: skip
        "exports": [{"format": "onnx", "ok": True, "max_abs_diff": 2e-6, "tolerance": 1e-4, "error": None}]
        if name == "policy"
        else [],
    }


def test_apply_table(capsys: pytest.CaptureFixture[str]) -> None:
    ap = load("apply")
    variants = [apply_variant("policy", 0.79, 6.9, True), apply_variant("uniform", 0.77, -21.9, False)]
    record = {
        "benchmark": "apply",
        "quick": True,
        "args": {"epochs": "1", "policy": "None"},
        "base": {"test_acc": 0.867, "val_acc": 0.85, "latency_ms": 17.4, "budget_ms": 8.7},
        "uniform_keep": 0.5,
        "search": [{}] * 10,
        "variants": variants,
        "resnet50_apply": {
            "groups": 37,
            "wall_s": [0.9, 1.0],
            "cpu_s": [0.9, 1.0],
            "prune_s": [0.4, 0.4],
            "median_wall_s": 0.95,
            "median_cpu_s": 0.95,
            "target_s": 3.0,
            "met": True,
        },  # fmt: skip
        "device": "local-cpu-cputime-careful",
        "latency_batch": 16,
        "versions": VERSIONS,
        "machine": {"cpu": "AMD EPYC", "cores": 2},
    }
    table = roundtrip(ap.apply_table(record))
    expected = [
        [v["variant"], 0.47, 0.25, 0.27, 0.10, 0.32, v["accuracy"]["after_finetuning"], 8.4, 8.9,
         v["latency"]["diff_pct"], "yes" if v["latency"]["within_10pct"] else "NO", None, "-"]
        for v in variants
    ]  # fmt: skip
    assert table["rows"] == expected
    notes = "\n".join(table["notes"])
    assert "Policy from a random search of 10 candidates" in notes
    assert "Export onnx: ok" in notes and "target < 3 s MET" in notes
    assert_honest_notes(table, "measured")
    ap.print_table(table)
    assert "-21.9%" in capsys.readouterr().out


def predictor_result(model: str) -> dict[str, Any]:
    metrics = {
        "lut (calibrated)": {
            "mape": 0.034,
            "within_5": 0.78,
            "within_10": 0.92,
            "spearman": 0.991,
            "false_within_budget": 0.0,
        },  # fmt: skip
        "roofline (raw)": {
            "mape": 0.668,
            "within_5": 0.0,
            "within_10": 0.0,
            "spearman": 0.992,
            "false_within_budget": 1.0,
        },  # fmt: skip
    }
    return {
        "model": model,
        "input_shape": [1, 3, 32, 32],
        "build": "zoo",
        "measured_with": {"name": "torch-cpu"},
        "metrics": metrics,
        "predictions_per_s": {"lut (calibrated)": 1984.1, "roofline (raw)": 2338.9},
        "predictions_per_cpu_s": {"lut (calibrated)": 2910.4, "roofline (raw)": 3737.9},
        "measurements_per_s": 2.66,
        "prune_and_measure_per_s": 0.22,
        "candidate_cv_median": 0.036,
        "repeatability": {"medians_ms": [7.99, 8.26, 8.27], "spread": 0.036, "cvs": [0.03, 0.04, 0.06]},
        "measured_ms": [2.6, 8.1, 5.0],
        "lut_profile_seconds": 46.5,
    }


def test_latency_predictors_table(capsys: pytest.CaptureFixture[str]) -> None:
    lp = load("latency_predictors")
    results = [predictor_result("resnet56"), predictor_result("torchvision:resnet18")]
    record = {
        "benchmark": "latency_predictors",
        "args": {"threads": 1, "clock": "thread", "rounds": 3, "calib": 10, "quick": False},
        "cpu": "AMD EPYC",
        "cores": 2,
        "versions": VERSIONS,
        "load_average": [[3.0, 3.0, 3.0], [5.0, 5.0, 5.0]],
        "results": results,
    }
    table = roundtrip(lp.predictors_table(record))
    expected = [
        [r["model"], name, 100 * m["mape"], 100 * m["within_5"], 100 * m["within_10"], m["spearman"],
         100 * m["false_within_budget"], r["predictions_per_s"][name], r["predictions_per_cpu_s"][name]]
        for r in results
        for name, m in r["metrics"].items()
    ]  # fmt: skip
    assert table["rows"] == expected
    notes = "\n".join(table["notes"])
    assert "resnet56: best lut (calibrated) (±10% 92%, Spearman 0.991)" in notes and "MET" in notes
    assert "load average 3.00 before, 5.00 after" in notes
    assert_honest_notes(table, "every row is a predictor (predicted) scored against latency measured")
    lp.print_report(results[0])
    assert "lut (calibrated)            3.4%" in capsys.readouterr().out


def test_measure_repeatability_table(capsys: pytest.CaptureFixture[str]) -> None:
    mr = load("measure_repeatability")
    rows = [
        {"model": "resnet56", "clock": "wall", "medians_ms": [11.8, 12.7, 12.0], "spread": 12.7 / 11.8 - 1,
         "cvs": [0.14, 0.05, 0.02], "unstable": [True, False, True], "details": {"device": "AMD EPYC"}},
        {"model": "resnet56", "clock": "thread", "medians_ms": [8.0, 8.1, 8.2], "spread": 8.2 / 8.0 - 1,
         "cvs": [0.01, 0.07, 0.02], "unstable": [False, False, False], "details": {"device": "AMD EPYC"}},
    ]  # fmt: skip
    # an older record: the CPU only in each measurement's details, no core count
    record = {"args": {"threads": 1, "repeats": 3}, "versions": VERSIONS, "rows": rows}
    table = roundtrip(mr.repeatability_table(record))
    assert table["rows"] == [
        ["resnet56", "wall", 3, 11.8, 12.7, 100 * (12.7 / 11.8 - 1), 0.14, "NO", 2],
        ["resnet56", "thread", 3, 8.0, 8.2, 100 * (8.2 / 8.0 - 1), 0.07, "yes", 0],
    ]
    notes = "\n".join(table["notes"])
    assert "met by 1 of 2 rows" in notes and "Machine (shared): AMD EPYC, Linux-x." in notes
    assert_honest_notes(table, "measured")


def test_search_throughput_table() -> None:
    st = load("search_throughput")
    rows = [
        {"concurrent": 1, "candidates": 24, "rate_per_s": 0.5, "total_s": 60.0, "peak_rss_gib": 1.5,
         "latency_kind": "measured"},
        {"concurrent": 2, "candidates": 24, "rate_per_s": 0.7, "total_s": 45.0, "peak_rss_gib": 2.1,
         "latency_kind": "measured"},
    ]  # fmt: skip
    record = {"benchmark": "search_throughput", "config": "configs/quickstart.yaml", "evaluations": 24, "rows": rows,
              "speedup": 1.4, "machine": "AMD EPYC", "cpus": 2, "versions": VERSIONS}  # fmt: skip
    table = roundtrip(st.throughput_table(record))
    keys = ["concurrent", "candidates", "rate_per_s", "total_s", "peak_rss_gib", "latency_kind"]
    assert table["rows"] == [[r[k] for k in keys] for r in rows]
    notes = "\n".join(table["notes"])
    assert "1.40x (target >= 1.6x: NOT met)" in notes and "peak memory 2.10 GiB (target < 4 GiB: met)" in notes
    assert_honest_notes(table, "measured")


def test_criteria_table(capsys: pytest.CaptureFixture[str]) -> None:
    cr = load("criteria")
    rows = [
        {"model": "resnet20", "budget": 0.5, "policy": "uniform", "criterion": c, "mean_keep": 0.55,
         "measured_share": 0.49, "bn_recal_acc": bn, "reconstruct_acc": rec, "finetuned_test_acc": ft}
        for c, bn, rec, ft in [("l1", 0.41, 0.72, 0.88), ("snip", 0.30, 0.66, None)]
    ]  # fmt: skip
    init_rows = [
        {"model": "resnet20", "budget": 0.5, "criterion": c, "mean_keep": 0.55, "measured_share": 0.49,
         "test_acc": [m], "median": m, "min": m, "max": m}
        for c, m in [("synflow", 0.61), ("random", 0.60)]
    ]  # fmt: skip
    args = {"quick": True, "bases": ["resnet20"], "budgets": [0.5], "criteria": ["l1", "snip"],
            "init_criteria": ["synflow"], "finetune_batches": 5, "init_seeds": 1, "init_epochs": 1,
            "init_batches": 5, "device": "local-cpu-cputime", "latency_batch": 32, "rounds": 3, "val_batches": 4,
            "bn_batches": 4}  # fmt: skip
    doc = {"benchmark": "criteria", "args": args, "rows": rows, "init_rows": init_rows, "failures": ["x: boom"],
           "searched_notes": cr.searched_notes(SimpleNamespace(policies=None), {}), "seconds": 100.0,
           "machine": {"cpu": "AMD EPYC", "cores": 2, "platform": "Linux-x"}, "versions": VERSIONS}  # fmt: skip
    table = roundtrip(cr.criteria_table(doc))
    assert table["title"].endswith("(quick)") and len(table["columns"]) == len(table["rows"][0])
    assert table["rows"] == [
        ["resnet20", 0.5, "uniform", "l1", 0.55, 0.49, 0.41, 0.72, 0.88, None, None, None],
        ["resnet20", 0.5, "uniform", "snip", 0.55, 0.49, 0.30, 0.66, None, None, None, None],
        ["resnet20", 0.5, "uniform, at init (1 seeds)", "synflow", 0.55, 0.49, None, None, None, 0.61, 0.61, 0.61],
        ["resnet20", 0.5, "uniform, at init (1 seeds)", "random", 0.55, 0.49, None, None, None, 0.60, 0.60, 0.60],
    ]
    notes = "\n".join(table["notes"])
    assert "Searched-policy rows NOT RUN" in notes
    assert "resnet20 at 50%: MET (higher held-out accuracy for 2 of 2" in notes
    assert "resnet20 at 30%: NOT RUN" in notes and "mobilenet_v2 at 50%: NOT RUN" in notes
    assert "SynFlow at init not worse than random at init at 30%, resnet20: NOT RUN" in notes
    assert "NOT RUN here: bases ['mobilenet_v2']; budgets [0.3]; criteria [" in notes and "FAILED: x: boom" in notes
    assert_honest_notes(table, "measured")
    cr.print_result_table(table)
    assert "uniform, at init (1 seeds)" in capsys.readouterr().out


# --- the committed files -----------------------------------------------------------------------


def test_benchmarks_md_is_generated_from_the_committed_results(report: ModuleType) -> None:
    text = (ROOT / "BENCHMARKS.md").read_text()
    generated = text.split(report.BEGIN, 1)[1].split(report.END, 1)[0]
    assert generated == "\n" + report.render_all(BENCH / "results", ROOT), (
        "BENCHMARKS.md is out of date with bench/results: run `python bench/report.py`"
    )


def test_run_all_passes_only_flags_the_scripts_accept() -> None:
    run_all = load("run_all")
    for script, quick, full in run_all.BENCHMARKS:
        source = (BENCH / script).read_text()
        for flag in {a for a in quick + full if a.startswith("--")}:
            assert re.search(rf"add_argument\([^)]*\"{flag}\"", source), f"{script} has no {flag} option"


def test_run_all_timing_table(tmp_path: Path, report: ModuleType) -> None:
    run_all = load("run_all")
    timings = [
        {"script": "amc.py", "args": "--quick --out-dir <out>", "exit": 0, "seconds": 30.5},
        {"script": "apply.py", "args": "--quick --out-dir <out>", "exit": 1, "seconds": 700.0},
    ]
    quick = roundtrip(run_all.timing_doc(timings, 1230.0, "quick"))
    assert quick["table"]["rows"] == [[t["script"], t["args"], t["exit"], t["seconds"]] for t in timings]
    notes = "\n".join(quick["table"]["notes"])
    assert "Total 20.5 min for the quick run (target: 20 min on this 2-core machine): not comparable" in notes
    over = run_all.timing_doc(timings[:1], 1230.0, "quick")["table"]["notes"][0]
    assert "Total 20.5 min for the quick run (target: 20 min on this 2-core machine): NOT MET." in over
    assert "FAILED (non-zero exit): apply.py." in notes
    full = run_all.timing_doc(timings[:1], 80 * 60.0, "full")
    assert "Total 80.0 min for the full run (target: 90 min on this 2-core machine): MET." in full["table"]["notes"][0]
    assert not any("FAILED" in n for n in full["table"]["notes"])
    # both sizes appear in BENCHMARKS.md: they are different benchmarks, not a quick one hidden by a full one
    (tmp_path / "2026-01-01-quick").mkdir()
    (tmp_path / "2026-01-01").mkdir()
    (tmp_path / "2026-01-01-quick" / "run_all.json").write_text(json.dumps(quick))
    (tmp_path / "2026-01-01" / "run_all.json").write_text(json.dumps(full))
    rendered = report.render_all(tmp_path, tmp_path)
    assert "### run_all.py --quick: time per benchmark" in rendered
    assert "### run_all.py: time per benchmark" in rendered


def test_a_table_without_rows_prints_its_header_and_notes(capsys: pytest.CaptureFixture[str]) -> None:
    common = load("common")
    common.print_result_table(common.result_table("Nothing ran", ["model", "acc"], [], ["NOT RUN: all of it."]))
    out = capsys.readouterr().out  # a run whose every budget failed wrote its JSON, then crashed printing it
    assert "Nothing ran" in out and "model  acc" in out and "NOT RUN: all of it." in out
