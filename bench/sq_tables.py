"""The tables of ``search_quality.json``: the one the script prints and ``bench/report.py`` puts in
BENCHMARKS.md (:func:`quality_table`), with its notes: where each searched strategy beats uniform
and random and where it does NOT, and the issue's targets, each MET or NOT MET; and the figure of
the fronts (:func:`plot_fronts`).

Everything here reads the JSON document only (its ``summary``, ``rows``, ``settings``), so an old
result can be tabulated again (``python bench/search_quality.py --from-partial FILE``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*

from bench.common import machine_note, print_notes, result_table
from bench.sq_summary import BASELINES, HV_BASELINES, ONESHOT, is_combined

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


def _best(at: dict[tuple[float, str], dict[str, Any]], budget: float, key: str, names: Any) -> tuple[str, float] | None:
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
    return result_table(
        "Search quality on Fashion-MNIST: every strategy at equal evaluations"
        + (" (quick)" if doc.get("quick") else "")
        + (f" (combined from {len(doc['sources'])} runs)" if is_combined(doc) else ""),
        COLUMNS,
        [summary_row(s) for s in summary],
        notes,
    )


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
    print_notes(table["notes"])


def plot_fronts(doc: dict[str, Any], path: Path) -> None:
    """The seed-0 front of every row in one figure (skipped, with a line saying why, if plotting fails)."""
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
        plot_fronts_png(runs, path)
    except Exception as exc:  # noqa: BLE001 - the table matters more than the figure
        print(f"(fronts plot skipped: {exc})")
