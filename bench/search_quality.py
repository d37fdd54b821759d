"""The headline comparison: every strategy, same evaluation budget, same base model, same device.

Base: the zoo ResNet-20 trained once on Fashion-MNIST (``$PRUNEPILOT_DATA``) and cached; a second
model that is not ours, torchvision ``mobilenet_v2`` with its stem adapted to 1x28x28 inputs
(``adapt_stem=true&stem_stride=1``), at ``--second-budgets``. Device: this machine's CPU, latency
measured (``--device``, default ``local-cpu-cputime``: process CPU time, robust to other load).
For each model, budget (fractions of the base latency) and seed, each strategy runs as a real
``prunepilot search`` (Ray Tune on one local Ray started here with 2 CPUs) with the same number
of evaluations. ``uniform`` is a deterministic sweep and runs once. The one-shot strategies
(``autoslim``, ``metapruning``) train one supernet per seed that serves every budget (as in
their papers) and get the *wall-clock* of the random searches that run instead: their training
steps are calibrated once per model from a pilot run (seconds per step, and the fixed part:
Ray, search phase, scoring); the pilot is kept as seed 0 when it is already at the minimum
steps or within 25% of the target, else re-run. Then the best policy
within the budget is fine-tuned briefly (same recipe for every strategy) and scored on the test
split; search-time accuracies are on the held-out split of the training data.

    python bench/search_quality.py --quick          # smoke: ResNet-20 at 50%, 1 seed, 12 evaluations
    python bench/search_quality.py                  # 70/50/30% + mobilenet_v2 at 50%, 3 seeds

Writes ``bench/results/<date>/search_quality.json`` (``--out``) and ``search_quality_fronts.png``;
the JSON carries the table (:func:`quality_table`, the one the script prints) from which
``bench/report.py`` generates BENCHMARKS.md. ``--from-partial`` summarises finished or
interrupted runs' JSON instead of searching; rows from more than one run make a table of their
own (benchmark ``search_quality_combined``, titled "combined from N runs"), shown beside the
newest single run's, never in its place.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from prunepilot import __version__
from prunepilot.hw_models.measure import cpu_name
from prunepilot.pruning import TORCH_PRUNING_VERSION, PruningPolicy
from prunepilot.search.config import validate_config
from prunepilot.search.pareto import ACCURACY, LATENCY, best_within_budget, hypervolume, to_minimisation

CANDIDATE = ["uniform", "random", "optuna-tpe", "optuna-nsga2"]
SESSION = ["amc-ddpg", "autoslim", "metapruning"]
#: strategies given random search's wall-clock instead of an evaluation count
ONESHOT = ("autoslim", "metapruning")
#: deterministic: one run, whatever the seed
DETERMINISTIC = ("uniform",)
#: the baselines every searched strategy is compared against in the table's notes
BASELINES = ("uniform", "random")
#: hypervolume is compared against random search and "just use Optuna"
HV_BASELINES = ("random", "optuna-tpe")
SECOND_MODEL = "torchvision:mobilenet_v2?adapt_stem=true&stem_stride=1"
#: one-shot searches aim this share of each budget on predicted latency (margin for the fit's error)
ONESHOT_MARGIN = 0.9
#: MetaPruning's band starts at this share of each budget (its evolution's min_budget_use x margin)
ONESHOT_FLOOR = 0.8
#: groups AutoSlim scores per slimming step (drawn at random; the paper scores all)
SLIM_TRIALS = 4
#: a pilot one-shot run within this share of the target wall-clock is kept as seed 0
WALL_TOLERANCE = 0.25
COLUMNS = [
    "model",
    "budget (x base latency)",
    "strategy",
    "seeds",
    "seeds with a policy within budget",
    "evaluations (median)",
    "best acc min",
    "best acc median",
    "best acc max",
    "HV within budget (median)",
    "fine-tuned test acc median",
    "wall s median",
    "latency",
]


def base_config(args: argparse.Namespace, model: str) -> dict[str, Any]:
    return {
        "name": "bench-quality",
        "seed": 0,
        "model": {
            "spec": model,
            "train": {"epochs": args.epochs, "lr": 0.05, "seed": 0},
            "cache_dir": str(args.cache_dir),
        },
        "data": {
            "name": "fashion-mnist",
            "root": str(args.data_root) if args.data_root else None,
            "batch_size": 128,
            "val_size": 5000,
            "val_subset": args.val_subset,
            "calib_size": 512,
            "train_subset": args.train_subset,
            "test_subset": args.test_subset,
        },
        "device": {"name": args.device, "batch_size": args.latency_batch},
        "budget": {"fraction": 0.5},
        "evaluation": {
            "lower_bound": 0.2,
            "bn_batches": args.bn_batches,
            "uniform_baseline": 0,
        },
        "strategy": {"name": "random", "evaluations": args.evaluations},
        "ray": {"num_cpus": 2, "max_concurrent": 2},
    }


def oneshot_settings(
    strategy: str,
    steps: int,
    checkpoint_dir: Path,
    budgets: list[float],
    budget: float,
    slim_trials: int | None = SLIM_TRIALS,
) -> dict[str, Any]:
    """Sizes of the one-shot methods here: one-batch proxies, ``steps`` training steps.

    One trained supernet serves every budget, as in both papers. Both aim 10% under each budget
    on *predicted* latency (the fit's error on this CPU is about 7%), so their measured points
    land within it: AutoSlim's slimming path runs down to 90% of the smallest budget, and
    MetaPruning's evolution runs once per budget in [0.8, 0.9] x budget (``budget_scales``,
    ``min_budget_use``; the floor is dropped when nothing lies in that band). AutoSlim scores
    ``slim_trials`` groups per slimming step (``--slim-trials``, default ``SLIM_TRIALS``), drawn
    at random, instead of every group: with 25 groups (mobilenet_v2) and about 2 s per proxy
    score here, the paper's full step alone outlasts the random searches it is compared with.
    """
    common = {"checkpoint_dir": str(checkpoint_dir), "bn_batches": 1, "val_batches": 1}
    if strategy == "autoslim":
        return {
            **common,
            "train": {"steps": steps, "batch_size": 64, "lr": 0.02, "random_widths": 1, "checkpoint_every": 100},
            "slim": {"step_fraction": 0.5, "max_trials": slim_trials},
            "stop_fraction": ONESHOT_MARGIN * budget,
        }
    return {
        **common,
        "train": {"steps": steps, "batch_size": 64, "lr": 0.01, "hidden": 16, "checkpoint_every": 100},
        "search": {"population": 8, "parents": 3, "generations": 4, "min_budget_use": ONESHOT_FLOOR / ONESHOT_MARGIN},
        "budget_scales": [ONESHOT_MARGIN * b / budget for b in sorted(budgets, reverse=True)],
        "report_top": 3,
    }


def finetune_and_test(cfg_dict: dict[str, Any], policy: PruningPolicy, args: argparse.Namespace) -> float:
    """Fine-tune the pruned model briefly (same recipe for every strategy); test accuracy."""
    from prunepilot.search.evaluator import get_evaluator
    from prunepilot.training import TrainConfig, evaluate_accuracy, fit

    ev = get_evaluator(validate_config(cfg_dict))
    model = ev.prune(policy)
    recipe = TrainConfig(epochs=1, lr=0.01, schedule="cosine", seed=0, max_batches_per_epoch=args.finetune_batches)
    fit(model, ev.data.train, recipe)
    return float(evaluate_accuracy(model, ev.data.test))


def run_one(
    args: argparse.Namespace,
    model: str,
    strategy: str,
    budgets: list[float],
    seed: int,
    steps: int | None = None,
) -> list[dict[str, Any]]:
    """One real search at the smallest of ``budgets``; one row per budget (best policy within it,
    fine-tuned and tested). Candidate strategies get one budget; one-shot ones get all."""
    budget = min(budgets)
    cfg = base_config(args, model)
    cfg["budget"] = {"fraction": budget}
    cfg["seed"] = seed
    cfg["strategy"] = {"name": strategy, "evaluations": args.evaluations}
    if strategy in SESSION:
        cfg["strategy"]["trials"] = 1
    from prunepilot.search.runner import run_search  # imports Ray: only when a search runs

    with tempfile.TemporaryDirectory() as tmp:
        if strategy in ONESHOT:  # never resume an older run's training: its wall-clock would be free
            cfg["strategy"]["settings"] = oneshot_settings(
                strategy, steps or args.oneshot_steps, Path(tmp) / "ckpt", budgets, budget, args.slim_trials
            )
        start = time.time()
        result = run_search(validate_config(cfg), Path(tmp) / "run", progress=False)
        wall = time.time() - start
    base_ms = float(result.base["latency_ms"])
    ref = [0.0, 1.1 * base_ms]
    hv = hypervolume(to_minimisation(result.front, (ACCURACY, LATENCY)), ref) if result.front else 0.0
    train_s = max((float(c.get("train_seconds", 0.0)) for c in result.candidates), default=0.0)
    rows = []
    for b in sorted(budgets, reverse=True):
        budget_ms = result.budget_ms if b == budget else b * base_ms
        best = best_within_budget(result.candidates, budget_ms)
        row = result_row(
            model,
            strategy,
            b,
            seed,
            budgets,
            wall,
            budget_ms=budget_ms,
            evaluations=len(result.candidates),
            oneshot_steps=cfg["strategy"].get("settings", {}).get("train", {}).get("steps"),
            train_seconds=train_s if strategy in ONESHOT else None,
            hypervolume=hv,
            best_acc=best["metrics"]["accuracy"] if best else None,
            best_latency_ms=best["metrics"]["latency_ms"] if best else None,
            latency_kind=best["metrics"]["latency_kind"] if best else None,
            base=result.base,
            front=[
                {"accuracy": c["metrics"]["accuracy"], "latency_ms": c["metrics"]["latency_ms"]} for c in result.front
            ],
        )
        if best is not None and args.finetune_batches > 0:
            row["finetuned_test_acc"] = finetune_and_test(cfg, PruningPolicy.model_validate(best["policy"]), args)
        rows.append(row)
    return rows


def result_row(
    model: str, strategy: str, budget: float, seed: int, budgets: list[float], wall_s: float, **fields: Any
) -> dict[str, Any]:
    """One row of ``search_quality.json``: a search's outcome at one budget (``fields`` override the
    defaults, which describe a search with no policy and no front)."""
    return {
        "model": model,
        "strategy": strategy,
        "budget": budget,
        "seed": seed,
        "budget_ms": 0.0,
        "evaluations": 0,
        "wall_s": wall_s,
        "shared_budgets": len(budgets),
        "oneshot_steps": None,
        "train_seconds": None,
        "hypervolume": 0.0,
        "best_acc": None,
        "best_latency_ms": None,
        "latency_kind": None,
        "front": [],
        **fields,
    }


def failed_rows(
    model: str, strategy: str, budgets: list[float], seed: int, error: Exception, wall_s: float
) -> list[dict[str, Any]]:
    """Rows for a search that raised: no policy, no front, the error kept (the table counts the seed)."""
    error_text = f"{type(error).__name__}: {error}"
    return [
        result_row(model, strategy, b, seed, budgets, wall_s, error=error_text) for b in sorted(budgets, reverse=True)
    ]


def calibrated_steps(pilot: dict[str, Any], target_s: float, min_steps: int) -> int:
    """Training steps that make a one-shot search as long as ``target_s``, from a pilot run.

    The pilot's wall-clock minus its training time is the fixed part (Ray, supernet build, the
    search phase, scoring); the remaining target is spent on steps at the pilot's seconds per step.
    """
    steps, train_s = int(pilot["oneshot_steps"]), float(pilot["train_seconds"] or 0.0)
    if train_s <= 0:
        return steps
    per_step = train_s / steps
    fixed = max(0.0, float(pilot["wall_s"]) - train_s)
    return max(min_steps, int((target_s - fixed) / per_step))


def budget_hypervolume(front: list[dict[str, Any]], budget_ms: float) -> float:
    """Hypervolume of a front inside the budget, normalised to [0, 1].

    The area under the staircase "best accuracy among points with latency <= l" for l from 0 to
    the budget, divided by the budget: the mean best accuracy over latencies up to the budget.
    Points over the budget count for nothing, so a strategy that spreads its evaluations over
    the whole latency range does not win on points a user with this budget cannot pick.
    """
    if budget_ms <= 0:
        return 0.0
    points = sorted((p["latency_ms"], p["accuracy"]) for p in front if p["latency_ms"] <= budget_ms)
    area, best = 0.0, 0.0
    for i, (lat, acc) in enumerate(points):
        best = max(best, acc)
        upper = points[i + 1][0] if i + 1 < len(points) else budget_ms
        area += (upper - lat) * best
    return area / budget_ms


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = list(dict.fromkeys((r["model"], r["budget"], r["strategy"]) for r in rows))
    models = list(dict.fromkeys(k[0] for k in keys))
    keys.sort(key=lambda k: (models.index(k[0]), -k[1], k[2]))
    for model, budget, strategy in keys:
        rs = [r for r in rows if (r["model"], r["budget"], r["strategy"]) == (model, budget, strategy)]
        accs = [r["best_acc"] for r in rs if r["best_acc"] is not None]
        ft = [r["finetuned_test_acc"] for r in rs if r.get("finetuned_test_acc") is not None]
        out.append(
            {
                "model": model,
                "budget": budget,
                "strategy": strategy,
                "seeds": len(rs),
                "seeds_within": len(accs),
                "acc_min": min(accs) if accs else None,
                "acc_median": statistics.median(accs) if accs else None,
                "acc_max": max(accs) if accs else None,
                "hv_median": statistics.median(budget_hypervolume(r["front"], r["budget_ms"]) for r in rs),
                "failed": sum(1 for r in rs if r.get("error")),
                "wall_median_s": statistics.median(r["wall_s"] for r in rs),
                "evals_median": statistics.median(r["evaluations"] for r in rs),
                "ft_median": statistics.median(ft) if ft else None,
                "latency_kind": next((r["latency_kind"] for r in rs if r["latency_kind"]), None),
            }
        )
    return out


def summary_row(s: dict[str, Any]) -> list[Any]:
    """One table row from one ``summary`` entry (the JSON's own numbers, unformatted)."""
    return [
        s["model"],
        s["budget"],
        s["strategy"],
        s["seeds"],
        s["seeds_within"],
        s["evals_median"],
        s["acc_min"],
        s["acc_median"],
        s["acc_max"],
        s["hv_median"],
        s["ft_median"],
        s["wall_median_s"],
        s["latency_kind"],
    ]


def compare(at: dict[str, dict[str, Any]], key: str, refs: tuple[str, ...], relative: bool = False) -> str:
    """Each of ``refs`` against the best searched strategy other than itself (by ``key``), said plainly.

    Searched strategies are all but uniform and random. Differences are in accuracy points (x100),
    or in percent of the reference if ``relative``.
    """
    parts = []
    for ref in refs:
        scored = {k: v[key] for k, v in at.items() if k not in (*BASELINES, ref) and v[key] is not None}
        value = at[ref][key] if ref in at else None
        if ref not in at or value is None:
            parts.append(f"{ref} {'not run' if ref not in at else 'has no figure'}")
            continue
        if not scored:
            parts.append(f"no other searched strategy to compare with {ref}")
            continue
        best = max(scored, key=lambda k: scored[k])
        if relative:
            diff, unit = (100.0 * (scored[best] - value) / value if value else float("inf")), "%"
        else:
            diff, unit = 100.0 * (scored[best] - value), " points"
        verdict = "beats" if scored[best] > value else "does NOT beat"
        parts.append(f"{best} {scored[best]:.4g} vs {ref} {value:.4g}: {diff:+.2f}{unit} ({verdict} {ref})")
    return "; ".join(parts) + "."


def comparison_notes(summary: list[dict[str, Any]]) -> list[str]:
    """Per model and budget: where the searched strategies beat uniform and random, and where they do NOT."""
    notes = []
    models = list(dict.fromkeys(s.get("model", "?") for s in summary))
    for model in models:
        mine = [s for s in summary if s.get("model", "?") == model]
        label = f"{model}, " if len(models) > 1 else ""
        for budget in sorted({s["budget"] for s in mine}, reverse=True):
            at = {s["strategy"]: s for s in mine if s["budget"] == budget}
            where = f"{label}{budget:.0%}"
            notes.append(
                f"At {where}, best accuracy within budget (median over seeds, BN-recalibrated, no fine-tune), best "
                "searched strategy: " + compare(at, "acc_median", BASELINES)
            )
            if any(s["ft_median"] is not None for s in at.values()):
                notes.append(
                    f"At {where}, test accuracy after the fixed short fine-tune (median over seeds), best searched "
                    "strategy: " + compare(at, "ft_median", BASELINES)
                )
            notes.append(
                f"At {where}, hypervolume of the front within the budget (median over seeds), best searched strategy: "
                + compare(at, "hv_median", HV_BASELINES, relative=True)
            )
    return notes


#: the issue's targets: best searched strategy over uniform, no fine-tune, at 30% (points x 0.01) ...
TARGET_NO_FT = (0.3, 0.03)
#: ... and after the fine-tune at 50%
TARGET_FT = (0.5, 0.005)
#: strategies compared with random and TPE at equal evaluations (the one-shot ones get equal wall-clock)
EQUAL_EVALUATIONS = ("optuna-nsga2", "amc-ddpg")


def _best(
    at: dict[tuple[float, str], dict[str, Any]], budget: float, key: str, names: Any
) -> tuple[str, float] | None:
    """The strategy among ``names`` with the highest ``key`` at ``budget``, and that value."""
    scored = [(at[budget, n][key], n) for n in names if (budget, n) in at and at[budget, n][key] is not None]
    return (max(scored)[1], max(scored)[0]) if scored else None


def target_notes(summary: list[dict[str, Any]]) -> list[str]:
    """The issue's three targets, each MET or NOT MET, per model (a target whose budget did not run is skipped)."""
    notes = []
    models = list(dict.fromkeys(s.get("model", "?") for s in summary))
    for model in models:
        at = {(s["budget"], s["strategy"]): s for s in summary if s.get("model", "?") == model}

        searched = [n for (_b, n) in at if n not in BASELINES]
        for (budget, margin), key, what in (
            (TARGET_NO_FT, "acc_median", "no fine-tune"),
            (TARGET_FT, "ft_median", "after the fine-tune"),
        ):
            top, ref = _best(at, budget, key, searched), at.get((budget, "uniform"), {}).get(key)
            if top is None or ref is None:
                continue
            diff = top[1] - ref
            verdict = "MET" if diff >= margin - 1e-12 else "NOT MET"
            notes.append(
                f"Target at {model}, {budget:.0%}, {what}: best searched strategy beats uniform by >= "
                f"{100 * margin:.1f} points. {top[0]} {top[1]:.4g} vs uniform {ref:.4g} ({100 * diff:+.2f}): {verdict}."
            )
        for budget in sorted({b for (b, _n) in at}, reverse=True):
            refs = _best(at, budget, "hv_median", ("random", "optuna-tpe"))
            for group, names in (("equal evaluations", EQUAL_EVALUATIONS), ("equal wall-clock", ONESHOT)):
                top = _best(at, budget, "hv_median", names)
                if top is None or refs is None:
                    continue
                verdict = "MET" if top[1] > refs[1] else "NOT MET"
                notes.append(
                    f"Target at {model}, {budget:.0%}, HV within budget, {group}: {top[0]} {top[1]:.4g} vs the better "
                    f"of random and optuna-tpe ({refs[0]} {refs[1]:.4g}): {verdict}."
                )
    return notes


def machine_note(cpu: Any, cores: Any, plat: Any, versions: dict[str, Any], extra: str = "") -> str:
    """``Machine (shared): ... Versions: ...`` from what the JSON recorded (unrecorded parts left out)."""
    machine = ", ".join(str(x) for x in (cpu, f"{cores} cores" if cores else None, plat) if x)
    listed = ", ".join(f"{k} {v}" for k, v in versions.items() if k != "platform")
    return f"Machine (shared): {machine or 'not recorded'}{extra}. Versions: {listed}."


def base_notes(doc: dict[str, Any]) -> list[str]:
    """One line per model: its base accuracy and latency (the first row that has it)."""
    notes, seen = [], set()
    for row in doc.get("rows", []):
        model = row.get("model", doc.get("settings", {}).get("model", "?"))
        if model in seen or "base" not in row:
            continue
        seen.add(model)
        base = row["base"]
        notes.append(
            f"Base {model}: held-out accuracy {base['accuracy']:.4f}, latency {base['latency_ms']:.3f} ms "
            f"({base.get('latency_kind', '?')}); budgets are fractions of that latency."
        )
    return notes


def oneshot_notes(doc: dict[str, Any]) -> list[str]:
    """How the one-shot strategies' wall-clock was matched to random search's."""
    notes = []
    sizing = doc.get("oneshot_sizing")
    if sizing:
        notes.append(
            f"One-shot sizing: both aim {sizing['margin']:.0%} of each budget on predicted latency (AutoSlim's path "
            f"stops there; MetaPruning searches [{sizing['floor']:.0%}, {sizing['margin']:.0%}] x budget, "
            f"without the floor when nothing lies in that band); AutoSlim scores {sizing['slim_trials']} random "
            "groups per slimming step (the paper scores all); one-batch proxy scores."
        )
    for cal in doc.get("calibration", []):
        notes.append(
            f"{cal['strategy']} on {cal['model']}: {cal['steps']} training steps, calibrated so that its one search "
            f"for all budgets takes about as long as the random searches it replaces, {cal['target_s']:.0f} s "
            f"(pilot: {cal['pilot_steps']} steps, "
            f"{cal['pilot_wall_s']:.0f} s wall of which {cal['pilot_train_s']:.0f} s training"
            + (", kept as seed 0)." if cal["pilot_kept"] else ", re-run).")
        )
        fixed = cal["pilot_wall_s"] - (cal["pilot_train_s"] or 0.0)
        if fixed > cal["target_s"]:
            notes.append(
                f"{cal['strategy']} on {cal['model']} does NOT fit random search's wall-clock: without training it "
                f"already takes {fixed:.0f} s (search phase and scoring), so it runs with the minimum "
                f"{cal['steps']} steps and its wall-clock column is longer than random's."
            )
    return notes


def quality_table(doc: dict[str, Any]) -> dict[str, Any]:
    """The BENCHMARKS.md table for one ``search_quality.json`` document (also what the script prints)."""
    settings = doc.get("settings", {})
    machine = doc.get("machine", {})
    versions = doc.get("versions", {})
    summary = doc["summary"]
    kinds = sorted({s["latency_kind"] for s in summary if s["latency_kind"]})
    notes = base_notes(doc)
    notes += [
        "HV within budget: the mean, over latencies l from 0 to the budget, of the best held-out accuracy among "
        "the front's points at latency <= l (0 to 1; points over the budget count for nothing). 'Seeds with a "
        "policy within budget': the best-accuracy columns are over these seeds only.",
        f"Seeds: {settings.get('seeds', '?')} per strategy and budget (min/median/max over seeds; uniform is a "
        f"deterministic sweep, run once); evaluation budget: {settings.get('evaluations', '?')} evaluations per "
        "search; one-shot strategies: "
        + (
            f"{settings.get('oneshot_steps', '?')} training steps, not matched to random search's wall-clock"
            if settings.get("no_calibrate") == "True"
            else "the wall-clock of a random search instead (see below)"
        )
        + "; fine-tune: "
        f"{settings.get('finetune_batches', '?')} batches, same recipe for every strategy, scored on the test split"
        + (" (quick run: subsets and budgets reduced)." if doc.get("quick") else "."),
        f"Evaluation: BN recalibration on {settings.get('bn_batches', '?')} batches of 128, accuracy on "
        f"{settings.get('val_subset', '?')} held-out images of the training split; base trained on "
        f"{settings.get('train_subset', '?')} images for {settings.get('epochs', '?')} epochs; test subset "
        f"{settings.get('test_subset', '?')}.",
        f"Latency: {' and '.join(kinds) or 'none recorded'} on device {settings.get('device', '?')} at batch "
        f"{settings.get('latency_batch', '?')}.",
        machine_note(machine.get("cpu"), machine.get("cores"), machine.get("platform"), versions),
    ]
    notes += oneshot_notes(doc)
    if is_combined(doc):
        notes.append(
            "Combined from separate runs of this script (same settings unless listed): "
            + "; ".join(
                f"{src['file']}: strategies {src['settings'].get('strategies', '?')}, evaluations "
                f"{src['settings'].get('evaluations', '?')}, one-shot sizing "
                + (
                    f"{src['oneshot_sizing']['margin']:.0%} of the budget, {src['oneshot_sizing']['slim_trials']} "
                    "AutoSlim groups per step"
                    if src.get("oneshot_sizing")
                    else "from before slim.max_trials (AutoSlim scores every group; one-shot searches aim at 90% of "
                    "the smallest budget for AutoSlim and [90%, 100%] of each budget for MetaPruning)"
                )
                for src in doc["sources"]
            )
            + "."
        )
    if doc.get("interrupted"):
        planned = [m for m in (settings.get("model"), settings.get("second_model")) if m]
        done = {r.get("model") for r in doc.get("rows", [])}
        missing = [m for m in planned if m not in done]
        notes.append(
            "This run was interrupted: only the rows it finished are shown"
            + (f"; NOT run: {', '.join(missing)}." if missing else ".")
        )
    if doc.get("total_seconds"):
        notes.append(f"Whole benchmark: {doc['total_seconds'] / 60:.0f} min.")
    if doc.get("skipped_strategies"):
        notes.append(f"Not registered yet (not run): {', '.join(doc['skipped_strategies'])}.")
    failures = [r for r in doc.get("rows", []) if r.get("error")]
    seen_failures = {(r["model"], r["strategy"], r["seed"]): r["error"] for r in failures}
    if seen_failures:
        notes.append(
            "FAILED searches (counted in 'seeds', with no policy): "
            + "; ".join(f"{m} {st} seed {sd}: {err}" for (m, st, sd), err in seen_failures.items())
            + "."
        )
    notes += comparison_notes(summary)
    notes += target_notes(summary)
    return {
        "title": "Search quality on Fashion-MNIST: every strategy at equal evaluations"
        + (" (quick)" if doc.get("quick") else "")
        + (f" (combined from {len(doc['sources'])} runs)" if is_combined(doc) else ""),
        "columns": COLUMNS,
        "rows": [summary_row(s) for s in summary],
        "notes": notes,
    }


def print_table(table: dict[str, Any]) -> None:
    print(f"\n{table['title']}")
    print(
        f"{'model':>10} {'budget':>6} {'strategy':>13} {'seeds':>5} {'evals':>5} {'acc min/med/max':>22} "
        f"{'hv bud':>8} {'ft test':>8} {'wall s':>7} latency"
    )
    for model, budget, strategy, seeds, within, evals, lo, med, hi, hv, ft, wall, kind in table["rows"]:
        acc = "-" if med is None else f"{lo:.4f}/{med:.4f}/{hi:.4f}"
        ft_text = "-" if ft is None else f"{ft:.4f}"
        short = model.split("?")[0].removeprefix("torchvision:")[-10:]
        print(
            f"{short:>10} {budget:>6.0%} {strategy:>13} {within:>2}/{seeds:<2} {evals:>5.0f} {acc:>22} {hv:>8.4g} "
            f"{ft_text:>8} {wall:>7.0f} {kind or '-'}"
        )
    for note in table["notes"]:
        print(f"- {note}")


def run_model(
    args: argparse.Namespace,
    model: str,
    budgets: list[float],
    strategies: list[str],
    doc: dict[str, Any],
    save: Callable[[], None] | None = None,
) -> None:
    """Every strategy x budget x seed on one model; rows and calibrations appended to ``doc``.

    Candidate strategies and AMC search each budget separately; a one-shot strategy trains
    once per seed and serves every budget from that run (its rows share wall-clock and front).
    """
    rows: list[dict[str, Any]] = doc["rows"]

    def record(new: list[dict[str, Any]], started: float) -> None:
        rows.extend(new)
        if save is not None:
            save()  # rows so far, after every search
        for row in new:
            print(
                f"{model} budget {row['budget']:.0%} {row['strategy']:>13} seed {row['seed']}: best acc "
                f"{row['best_acc']} hv {row['hypervolume']:.4g} evals {row['evaluations']} "
                f"({time.time() - started:.0f} s)",
                flush=True,
            )

    for budget in budgets:
        for strategy in (s for s in strategies if s not in ONESHOT):
            for seed in range(1 if strategy in DETERMINISTIC else args.seeds):
                t = time.time()
                record(guarded(args, model, strategy, [budget], seed), t)
    for strategy in (s for s in strategies if s in ONESHOT):
        steps = args.oneshot_steps
        for seed in range(args.seeds):
            t = time.time()
            randoms = [r["wall_s"] for r in rows if r["model"] == model and r["strategy"] == "random"]
            if seed > 0 or args.no_calibrate or not randoms:
                record(guarded(args, model, strategy, budgets, seed, steps), t)
                continue
            # the one-shot run serves len(budgets) budgets: match the random searches it replaces
            target = statistics.median(randoms) * len(budgets)
            pilot = guarded(args, model, strategy, budgets, seed, steps)
            if pilot[0].get("error"):
                record(pilot, t)
                continue
            steps = calibrated_steps(pilot[0], target, args.min_oneshot_steps)
            kept = steps == args.oneshot_steps or abs(pilot[0]["wall_s"] - target) <= WALL_TOLERANCE * target
            doc["calibration"].append(
                {
                    "model": model,
                    "strategy": strategy,
                    "target_s": target,
                    "pilot_steps": pilot[0]["oneshot_steps"],
                    "pilot_wall_s": pilot[0]["wall_s"],
                    "pilot_train_s": pilot[0]["train_seconds"],
                    "steps": args.oneshot_steps if kept else steps,
                    "pilot_kept": kept,
                }
            )
            if kept:
                steps = args.oneshot_steps
                record(pilot, t)
            else:
                record(guarded(args, model, strategy, budgets, seed, steps), t)


def guarded(
    args: argparse.Namespace, model: str, strategy: str, budgets: list[float], seed: int, steps: int | None = None
) -> list[dict[str, Any]]:
    """:func:`run_one`, but a search that raises becomes rows with its error (the benchmark goes on).

    E.g. a budget near the lattice's floor: each search measures the base and the lower-bound
    model again, and on this CPU their ratio moves by several points between searches.
    """
    started = time.time()
    try:
        return run_one(args, model, strategy, budgets, seed, steps)
    except Exception as exc:  # noqa: BLE001 - recorded in the row and the table's notes
        print(f"{model} {strategy} seed {seed} FAILED: {type(exc).__name__}: {exc}", flush=True)
        return failed_rows(model, strategy, budgets, seed, exc, time.time() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="ResNet-20 at 50%% only, 1 seed, 12 evaluations")
    ap.add_argument("--strategies", default=",".join(CANDIDATE + SESSION))
    ap.add_argument("--budgets", default="0.7,0.5,0.3", help="budgets of --model (fractions of base latency)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--evaluations", type=int, default=40)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--second-model", default=SECOND_MODEL, help="a model that is not ours ('' to skip)")
    ap.add_argument("--second-budgets", default="0.5", help="budgets of --second-model")
    # the data and base-training settings equal bench/apply.py --quick's, so the two share a cached base
    ap.add_argument("--epochs", type=int, default=3, help="base-model training epochs (cached)")
    ap.add_argument("--train-subset", type=int, default=10000, help="training images (base training, fine-tune)")
    ap.add_argument("--val-subset", type=int, default=1000, help="held-out training images scoring each candidate")
    ap.add_argument("--test-subset", type=int, default=3000, help="test images for the fine-tuned scores")
    ap.add_argument("--bn-batches", type=int, default=4, help="BN-recalibration batches (x128) per candidate")
    ap.add_argument("--finetune-batches", type=int, default=100, help="fine-tune batches for the best policy (0: off)")
    ap.add_argument("--oneshot-steps", type=int, default=50, help="one-shot training steps of the pilot run")
    ap.add_argument(
        "--no-calibrate", action="store_true", help="one-shot strategies keep --oneshot-steps (no wall-clock match)"
    )
    ap.add_argument("--min-oneshot-steps", type=int, default=50, help="floor of the calibrated one-shot steps")
    ap.add_argument(
        "--slim-trials", type=int, default=SLIM_TRIALS, help="groups AutoSlim scores per slimming step (at random)"
    )
    ap.add_argument("--device", default="local-cpu-cputime")
    ap.add_argument("--latency-batch", type=int, default=32)
    ap.add_argument("--data-root", type=Path, default=os.environ.get("PRUNEPILOT_DATA"))
    ap.add_argument("--cache-dir", type=Path, default=Path(".cache/prunepilot"))
    ap.add_argument("--out", type=Path, default=Path("bench/results") / datetime.now().strftime("%Y-%m-%d"))
    ap.add_argument(
        "--from-partial",
        type=Path,
        nargs="+",
        default=None,
        help="no searches: summarise the rows of these runs' JSON (an interrupted run's search_quality.partial.json, "
        "or finished runs of other models, e.g. one per model) as one table; where two files hold the same model "
        "and strategy, the later file's rows replace the earlier's (a re-run wins)",
    )
    args = ap.parse_args()
    if args.from_partial is not None:
        docs = [json.loads(path.read_text()) for path in args.from_partial]
        doc = {k: v for k, v in docs[0].items() if k not in ("summary", "table", "total_seconds")}
        doc["rows"] = merge_rows([d["rows"] for d in docs])
        doc["calibration"] = [cal for d in docs for cal in d.get("calibration", [])]
        doc["sources"] = combined_sources(args.from_partial, docs)
        doc.pop("oneshot_sizing", None)  # per source instead (see quality_table's "Combined" note)
        if is_combined(doc):  # not one run: its own table, beside the newest single run's
            doc["benchmark"] = "search_quality_combined"
        models = list(dict.fromkeys(row["model"] for row in doc["rows"]))
        doc["interrupted"] = any("summary" not in d for d in docs)
        doc["settings"] = {
            **doc.get("settings", {}),
            "model": models[0] if models else "?",
            "second_model": models[1] if len(models) > 1 else doc.get("settings", {}).get("second_model", ""),
        }
        finish(doc, args.out)
        return
    if args.quick:  # a smoke run: one seed, no wall-clock calibration
        args.budgets, args.seeds, args.evaluations, args.finetune_batches = "0.5", 1, 12, 30
        args.second_model, args.oneshot_steps, args.no_calibrate = "", 50, True
    torch.set_num_threads(1)
    import ray

    from prunepilot.search.strategies import strategy_names

    known = set(strategy_names())
    strategies = [s for s in args.strategies.split(",") if s in known]
    skipped = [s for s in args.strategies.split(",") if s not in known]
    plan = [(args.model, [float(b) for b in args.budgets.split(",")])]
    if args.second_model:
        plan.append((args.second_model, [float(b) for b in args.second_budgets.split(",")]))
    doc: dict[str, Any] = {
        "benchmark": "search_quality",
        "quick": args.quick,
        "rows": [],
        "calibration": [],
        "oneshot_sizing": {"margin": ONESHOT_MARGIN, "floor": ONESHOT_FLOOR, "slim_trials": args.slim_trials},
        "skipped_strategies": skipped,
        "settings": {k: str(v) for k, v in vars(args).items()},
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()},
        "versions": {
            "prunepilot": __version__,
            "torch": str(torch.__version__),
            "torch_pruning": TORCH_PRUNING_VERSION,
        },
    }
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / "search_quality.partial.json"
    # one local Ray for every search: its start-up is not charged to each strategy's wall-clock
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")

    def save() -> None:
        partial.write_text(json.dumps(doc, indent=2, default=str))

    try:
        for model, budgets in plan:
            run_model(args, model, budgets, strategies, doc, save)
    finally:
        ray.shutdown()
    doc["total_seconds"] = time.time() - started
    finish(doc, args.out)
    partial.unlink(missing_ok=True)


def is_combined(doc: dict[str, Any]) -> bool:
    """Whether a ``search_quality.json`` document merges rows from more than one run."""
    return len(doc.get("sources", [])) > 1


def combined_sources(paths: list[Path], docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs behind a ``--from-partial`` table; a file that is itself combined lists its own sources."""
    sources: list[dict[str, Any]] = []
    for path, d in zip(paths, docs, strict=True):
        if d.get("sources"):
            sources += d["sources"]
        else:
            sources.append(
                {"file": str(path), "settings": d.get("settings", {}), "oneshot_sizing": d.get("oneshot_sizing")}
            )
    return sources


def merge_rows(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows of several runs as one list; a later run's (model, strategy) replaces an earlier run's rows."""
    merged: list[dict[str, Any]] = []
    for rows in runs:
        redone = {(r["model"], r["strategy"]) for r in rows}
        merged = [r for r in merged if (r["model"], r["strategy"]) not in redone] + list(rows)
    return merged


def finish(doc: dict[str, Any], out: Path) -> None:
    """Summarise, tabulate, write the JSON and the fronts plot, print the table."""
    doc["summary"] = summarise(doc["rows"])
    doc["table"] = quality_table(doc)
    out.mkdir(parents=True, exist_ok=True)
    (out / "search_quality.json").write_text(json.dumps(doc, indent=2, default=str))
    try:
        from prunepilot.search.plots import plot_fronts_png

        runs = {
            f"{r['model'].split('?')[0]} {r['strategy']} {r['budget']:.0%} s{r['seed']}": [
                {
                    "id": str(i),
                    "status": "ok",
                    "strategy": r["strategy"],
                    "metrics": {**p, "latency_kind": r["latency_kind"]},
                }
                for i, p in enumerate(r["front"])
            ]
            for r in doc["rows"]
            if r["seed"] == 0
        }
        plot_fronts_png(runs, out / "search_quality_fronts.png")
    except Exception as exc:  # noqa: BLE001 - the table matters more than the figure
        print(f"(fronts plot skipped: {exc})")
    print_table(doc["table"])
    if "total_seconds" in doc:
        print(f"total {doc['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
