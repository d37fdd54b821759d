"""The headline comparison (#16): every strategy and the peers, on the committed bases, judged by
test accuracy after the standard fine-tune at a measured latency.

Bases: the committed ones (``bench/bases/``, sha256-checked: zoo ResNet-20 and torchvision
``mobilenet_v2`` with a 28x28 stem, both trained on Fashion-MNIST's training split minus the
5,000 held-out images candidates are scored on). Device: this machine's CPU (``--device``,
default ``local-cpu-cputime``), at ``--latency-batch``.

Per model, this process builds one evaluator and measures the base latency once (median of
``--rounds`` rounds); every budget is that figure times a fraction, the same milliseconds for
every strategy. Then, per budget:

1. **Searches.** Each strategy runs as the product's search (``prunepilot.search.run``, local
   backend: config -> driver -> strategy -> evaluator -> run store; ``bench/inprocess.py``) with
   ``--evaluations`` candidates (AMC: ``--amc-warmup`` random episodes, then the rest learning),
   per seed; ``knapsack``, deterministic, once. ``uniform`` is the widest uniform keep ratio the
   searches' in-loop predictor puts within the budget (bisection), what a user would prune to. One-shot strategies
   (``autoslim``, ``metapruning``) train ``--oneshot-steps`` steps; their wall-clock is in the row,
   beside random search's. The pick is the product's: the most accurate candidate whose latency
   (in-loop predicted, re-measured at the search's end for the front and the best) is within the
   budget.
2. **Peers** (``bench/peers.py``): Torch-Pruning's ``MetaPruner`` with global ranking, and its
   isomorphic variant, iterative until within the budget, scored by the same evaluator.
3. **Side-by-side measurement**, right after each search. Its policy is pruned and measured with
   the base model in ``--rounds`` interleaved rounds; ``measured_share`` is its median over the base's median in
   those rounds, ``budget_use`` that share over the budget's fraction.
4. **The standard fine-tune** (``bench/finetune.py``) of that policy, then test accuracy:
   the figure users judge by. Search-time accuracies are on the held-out split of the training
   data; the test split is read only here.

    python bench/search_quality.py --quick     # smoke: ResNet-20 at 50%, 1 seed, 12 evaluations
    python bench/search_quality.py             # both bases, 70/50/30%, 3 seeds, 300 evaluations

Writes ``bench/results/<date>/search_quality.json`` (``--out``; rows saved after every search in
``search_quality.partial.json``) and ``search_quality_fronts.png``; the JSON carries the table
(``bench/sq_tables.py``) from which ``bench/report.py`` generates BENCHMARKS.md.
``--from-partial`` summarises finished or interrupted runs' JSON instead of searching.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*

from bench.bases.load import BASES, BASES_DIR, DATA, load_base
from bench.common import dated_results, machine, write_json
from bench.sq_summary import DETERMINISTIC, ONESHOT, PEERS, combine, failed_rows, result_row, summarise
from bench.sq_tables import plot_fronts, print_table, quality_table
from prunepilot.hw_models.base import runtime_versions
from prunepilot.pruning import PruningPolicy
from prunepilot.search.config import EvaluationSection, validate_config
from prunepilot.search.evaluator import Evaluator, Metrics, get_evaluator
from prunepilot.search.pareto import pareto_front

SEARCHED = [
    "uniform", "random", "optuna-tpe", "optuna-nsga2", "amc-ddpg", "ppo", "knapsack", "knapsack-sensitivity",
    "autoslim", "metapruning",
]  # fmt: skip
#: rows that are a registered strategy with other settings: label -> (strategy, settings)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {"knapsack-sensitivity": ("knapsack", {"value": "sensitivity"})}
SECOND_MODEL = BASES["mobilenet_v2"]
#: one-shot searches aim this share of each budget on predicted latency (margin for the fit's error)
ONESHOT_MARGIN = 0.9
#: MetaPruning's band starts at this share of each budget (its evolution's min_budget_use x margin)
ONESHOT_FLOOR = 0.8
#: groups AutoSlim scores per slimming step (drawn at random; the paper scores all)
SLIM_TRIALS = 4


class Context(NamedTuple):
    """One base's evaluator and the latency every budget of it is a fraction of."""

    ev: Evaluator
    base_ms: float
    base: dict[str, Any]


_CONTEXTS: dict[str, Context] = {}
#: base latency (ms) per base taken from a resumed run instead of measured again (its budgets stay its budgets)
_RESUMED_BASE_MS: dict[str, float] = {}


def evaluator_config(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The search config of base ``name``: its committed checkpoint, the split it was trained on,
    the device, the scoring protocol."""
    info = json.loads((BASES_DIR / f"{name}.json").read_text())
    return {
        "name": f"bench-quality-{name}",
        "seed": 0,
        "model": {"spec": info["spec"], "checkpoint": str(BASES_DIR / info["checkpoint"])},
        "data": {**DATA.model_dump(mode="json", exclude={"root"}), "root": str(args.data_root or "") or None},
        "device": {"name": args.device, "batch_size": args.latency_batch},
        "budget": {"fraction": 0.5},
        "evaluation": {
            "lower_bound": args.lower_bound,
            "in_loop_latency": args.in_loop_latency,
            "bn_batches": args.bn_batches,
            "val_batches": args.val_batches,
            "protocol": args.protocol,
            "protocol_settings": json.loads(args.protocol_settings),
            "uniform_baseline": 0,
        },
        "strategy": {"name": "random", "evaluations": 1},
    }


def measure_side_by_side(ev: Evaluator, policies: list[PruningPolicy | None], rounds: int) -> list[float]:
    """Median latency (ms) of each policy's pruned model (None: the base) over ``rounds`` interleaved
    rounds, each model once per round; a device that predicts answers once per policy."""
    if not ev.latency.requires_model:
        full = ev.space.full_widths()
        return [
            float(ev.measure_latency(None, p.channels if p else full, p.removed_blocks if p else ()).ms)
            for p in policies
        ]
    models = [ev.model if p is None else ev.prune(p) for p in policies]
    samples: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for i, model in enumerate(models):
            samples[i].append(float(ev.latency.measure_ms(model, ev.input_shape, ev.batch_size).ms))
    return [statistics.median(s) for s in samples]


class Paired(NamedTuple):
    """One policy's latency as a share of the base, timed in pairs: ``share`` the median over rounds
    of its time over the base's time taken just before it, ``q1``/``q3`` the quartiles of those
    ratios, ``ms`` the share times the base's median time in the session."""

    share: float
    q1: float
    q3: float
    ms: float


def measure_paired(
    ev: Evaluator, policies: list[PruningPolicy], rounds: int, instances: int = 1, seed: int = 0
) -> tuple[float, list[Paired]]:
    """The base's median latency (ms) and each policy's :class:`Paired` share, over ``rounds`` rounds.

    Every timing of a policy's model is paired with a timing of the base just before it, and the
    share is the median of those ratios: load that changes between rounds (this shared machine's
    base read 24 to 53 ms in one day) moves both timings of a pair alike, where a ratio of two
    medians taken at different moments does not. Each policy is pruned into ``instances`` fresh
    models (the base copied as often), used in turn, and the policies' order is shuffled every
    round (seeded): one instance's memory layout or one slot in the round cannot set the figure.
    A device that predicts answers once per policy (its quartiles are the share)."""
    import copy
    import random

    if not ev.latency.requires_model:
        full = ev.space.full_widths()
        base_ms = float(ev.measure_latency(None, full).ms)
        found = []
        for p in policies:
            share = float(ev.measure_latency(None, p.channels, p.removed_blocks).ms) / base_ms
            found.append(Paired(share, share, share, share * base_ms))
        return base_ms, found
    k = max(1, instances)
    bases = [ev.model, *(copy.deepcopy(ev.model) for _ in range(k - 1))]
    models = [[ev.prune(p) for _ in range(k)] for p in policies]
    ratios: list[list[float]] = [[] for _ in policies]
    base_times: list[float] = []
    rng = random.Random(seed)

    def timed(model: torch.nn.Module) -> float:
        return float(ev.latency.measure_ms(model, ev.input_shape, ev.batch_size).ms)

    for r in range(rounds):
        order = list(range(len(policies)))
        rng.shuffle(order)
        for i in order:
            slot = (r + i) % k
            before = timed(bases[slot])
            base_times.append(before)
            ratios[i].append(timed(models[i][slot]) / before)
    base_ms = statistics.median(base_times) if base_times else timed(ev.model)
    out = []
    for rs in ratios:
        q1, med, q3 = statistics.quantiles(rs, n=4, method="inclusive") if len(rs) > 1 else [rs[0]] * 3
        out.append(Paired(med, q1, q3, med * base_ms))
    return base_ms, out


def share_calibration() -> None:
    """One latency calibration per base, device and batch for the whole run, shared by every search.

    Each search's driver measures the base and uniformly pruned models (``calibrate_fit``) and
    profiles the in-loop predictor (``inloop.calibrate``, about a minute here). In this benchmark
    they run once per base: every strategy then searches on the same measured base and the same
    predictor (a fairer comparison on a noisy machine), and a search costs its candidates only.
    Patches both for this process (the benchmark's ``main``; tests never call it).
    """
    from prunepilot.search import inloop

    fits: dict[tuple[str, str, int], Any] = {}
    predictors: dict[tuple[str, str, int], Any] = {}
    original_fit, original_calibrate = Evaluator.calibrate_fit, inloop.calibrate

    def key(ev: Evaluator) -> tuple[str, str, int]:
        return (ev.cfg.model.spec, ev.cfg.device.name, ev.batch_size)

    def calibrate_fit(self: Evaluator, on_range: Any = None) -> Any:
        if key(self) not in fits:
            result = original_fit(self, on_range)
            fits[key(self)] = (self.fit, self.fit_measurements, result)
        self.fit, self.fit_measurements, result = fits[key(self)]
        if on_range is not None:
            on_range(*result)  # (base, lowest): the driver's range check, on the shared measurement
        return result

    def calibrate(ev: Evaluator, kind: str | None = None, checks: int = inloop.CHECK_POINTS) -> Any:
        if key(ev) not in predictors:
            predictors[key(ev)] = original_calibrate(ev, kind, checks)
        return predictors[key(ev)]

    Evaluator.calibrate_fit = calibrate_fit  # type: ignore[method-assign]
    inloop.calibrate = calibrate


def context(args: argparse.Namespace, name: str) -> Context:
    """Base ``name``'s evaluator (built once per process) and its base latency (measured once)."""
    if name not in _CONTEXTS:
        model, _info = load_base(name)
        ev = get_evaluator(validate_config(evaluator_config(name, args)), base_state=model.state_dict())
        from prunepilot.search import inloop

        ev.calibrate_fit()  # the budget-check predictor uniform and the peers' projection use
        ev.in_loop = inloop.calibrate(ev)  # the peers' steps are judged on the searches' in-loop predictor
        if name in _RESUMED_BASE_MS:
            base_ms = _RESUMED_BASE_MS[name]
        else:
            (base_ms,) = measure_side_by_side(ev, [None], args.rounds)
        base = ev.base_metrics().to_dict()
        _CONTEXTS[name] = Context(ev, base_ms, {**base, "latency_ms": base_ms, "latency_kind": "measured"})
    return _CONTEXTS[name]


def strategy_settings(
    args: argparse.Namespace, strategy: str, budgets: list[float], budget: float, steps: int | None = None
) -> dict[str, Any]:
    """The settings each strategy runs with here (the defaults, but for the sizes below)."""
    if strategy in VARIANTS:
        return VARIANTS[strategy][1]
    if strategy == "amc-ddpg":
        return {"warmup_episodes": args.amc_warmup}
    if strategy in ONESHOT:
        return oneshot_settings(strategy, steps or args.oneshot_steps, budgets, budget, args.slim_trials)
    return {}


def oneshot_settings(
    strategy: str, steps: int, budgets: list[float], budget: float, slim_trials: int | None = SLIM_TRIALS
) -> dict[str, Any]:
    """Sizes of the one-shot methods here: one-batch proxies, ``steps`` training steps.

    One trained supernet serves every budget, as in both papers. Both aim 10% under each budget
    on *predicted* latency, so their measured points land within it: AutoSlim's slimming path
    runs down to 90% of the smallest budget, and MetaPruning's evolution runs once per budget in
    [0.8, 0.9] x budget. AutoSlim scores ``slim_trials`` groups per slimming step, drawn at random,
    instead of every group: with 25 groups (mobilenet_v2) the paper's full step alone outlasts the
    random searches it is compared with.
    """
    common = {"bn_batches": 1, "val_batches": 1}
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


def front_points(records: list[tuple[PruningPolicy, Metrics, dict[str, Any]]]) -> list[dict[str, float]]:
    """The accuracy/latency front of a search's candidates."""
    cands: list[dict[str, Any]] = [{"status": "ok", "metrics": m.to_dict()} for _p, m, _e in records]
    front = pareto_front(cands)
    return [{"accuracy": c["metrics"]["accuracy"], "latency_ms": c["metrics"]["latency_ms"]} for c in front]


def run_one(
    args: argparse.Namespace, model: str, strategy: str, budgets: list[float], seed: int, steps: int | None = None
) -> list[dict[str, Any]]:
    """One search (or one peer) at the smallest of ``budgets``; one row per budget with the best
    policy within it (``policy`` kept for the measurement and fine-tune that follow)."""
    from bench.inprocess import best_record, search, uniform_record
    from bench.peers import peer_record

    ctx = context(args, model)
    budget = min(budgets)
    start = time.time()
    if strategy == "uniform":  # the widest uniform ratio the searches' in-loop predictor puts within the budget
        records = [uniform_record(ctx.ev, budget * ctx.base_ms)]
    elif strategy in PEERS:
        found = peer_record(ctx.ev, strategy, budget * ctx.base_ms, importance=args.peer_importance)
        records = [found] if found is not None else []
    else:
        settings = strategy_settings(args, strategy, budgets, budget, steps)
        name = VARIANTS[strategy][0] if strategy in VARIANTS else strategy
        records = search(ctx.ev, name, settings, budget * ctx.base_ms, seed, evaluations=args.evaluations)
    wall = time.time() - start
    train_s = max((float(e.get("train_seconds", 0.0)) for _p, _m, e in records), default=0.0)
    shared = {
        "evaluations": len(records),
        "distinct_policies": len({p.key() for p, _m, _e in records}),
        "cache_hits": sum(1 for _p, _m, e in records if e.get("cached")),
        "oneshot_steps": (steps or args.oneshot_steps) if strategy in ONESHOT else None,
        "train_seconds": train_s if strategy in ONESHOT else None,
        "base": ctx.base,
        "front": front_points(records),
    }
    rows = []
    for b in sorted(budgets, reverse=True):
        best = best_record(records, b * ctx.base_ms)
        fields: dict[str, Any] = {"budget_ms": b * ctx.base_ms, **shared}
        if best is not None:
            policy, metrics, _extra = best
            fields.update(best_acc=metrics.accuracy, best_latency_ms=metrics.latency_ms,
                          latency_kind=metrics.latency_kind, policy=json.loads(policy.to_json()))  # fmt: skip
        rows.append(result_row(model, strategy, b, seed, budgets, wall, **fields))
    return rows


def guarded(
    args: argparse.Namespace, model: str, strategy: str, budgets: list[float], seed: int, steps: int | None = None
) -> list[dict[str, Any]]:
    """:func:`run_one`, but a search that raises becomes rows with its error (the benchmark goes on)."""
    started = time.time()
    try:
        return run_one(args, model, strategy, budgets, seed, steps)
    except Exception as exc:  # noqa: BLE001 - recorded in the row and the table's notes
        print(f"{model} {strategy} seed {seed} FAILED: {type(exc).__name__}: {exc}", flush=True)
        return failed_rows(model, strategy, budgets, seed, exc, time.time() - started)


def measure_and_finetune(args: argparse.Namespace, model: str, rows: list[dict[str, Any]]) -> None:
    """Steps 3 and 4 for ``rows`` (one model and budget): the side-by-side measurement of every
    row's policy with the base, then the standard fine-tune and test accuracy, written into the rows."""
    from bench.finetune import finetune_test

    mine = [r for r in rows if r.get("policy") is not None]
    if not mine:
        return
    ctx = context(args, model)
    policies = [PruningPolicy.from_json(json.dumps(r["policy"])) for r in mine]
    medians = measure_side_by_side(ctx.ev, [None, *policies], args.rounds)
    for row, policy, ms in zip(mine, policies, medians[1:], strict=True):
        row["measured_ms"] = ms
        row["measured_share"] = ms / medians[0]
        row["budget_use"] = row["measured_share"] / row["budget"]
        if args.finetune_batches > 0:
            row["finetuned_test_acc"] = finetune_test(ctx.ev, policy, args.finetune_batches)


def run_model(
    args: argparse.Namespace,
    model: str,
    budgets: list[float],
    strategies: list[str],
    doc: dict[str, Any],
    save: Callable[[], None] | None = None,
) -> None:
    """Every strategy x budget x seed on one model; rows appended to ``doc`` (saved after each search).

    Candidate strategies, agents and peers search each budget separately; a one-shot strategy
    trains once per seed and serves every budget from that run (its rows share wall-clock and front).
    """
    rows: list[dict[str, Any]] = doc["rows"]

    def record(new: list[dict[str, Any]], started: float) -> None:
        rows.extend(new)
        if save is not None:
            save()
        for row in new:
            print(
                f"{model} budget {row['budget']:.0%} {row['strategy']:>24} seed {row['seed']}: best acc "
                f"{row['best_acc']} evals {row['evaluations']} ({time.time() - started:.0f} s)",
                flush=True,
            )

    done = {(r["model"], r["budget"], r["strategy"], r["seed"]) for r in rows if not r.get("error")}

    def run(strategy: str, budgets_: list[float], seed: int) -> None:
        if all((model, b, strategy, seed) in done for b in budgets_):
            return  # kept from --resume
        started = time.time()
        new = guarded(args, model, strategy, budgets_, seed)
        measure_and_finetune(args, model, new)  # right away: an interrupted run keeps finished rows whole
        record(new, started)

    for budget in budgets:
        # seed-major: every strategy's seed 0 first, so an interrupted run has each strategy's first seeds
        for seed in range(args.seeds):
            for strategy in (s for s in strategies if s not in ONESHOT):
                if seed == 0 or strategy not in DETERMINISTIC + PEERS:
                    run(strategy, [budget], seed)
    for strategy in (s for s in strategies if s in ONESHOT):
        for seed in range(args.seeds):
            run(strategy, budgets, seed)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from bench.peers import IMPORTANCES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="ResNet-20 at 50%% only, 1 seed, 12 evaluations")
    ap.add_argument("--strategies", default=",".join(SEARCHED + list(PEERS)))
    ap.add_argument("--models", default="resnet20,mobilenet_v2", help=f"committed bases, of {sorted(BASES)}")
    ap.add_argument("--budgets", default="0.7,0.5,0.3", help="fractions of each base's measured latency")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--evaluations", type=int, default=300, help="candidates per search (AMC: episodes)")
    ap.add_argument("--amc-warmup", type=int, default=100, help="amc-ddpg's random warm-up episodes (AMC: 100)")
    ap.add_argument("--peer-importance", choices=IMPORTANCES, default="l1", help="the peers' Torch-Pruning criterion")
    ap.add_argument("--protocol", default=EvaluationSection().protocol, help="scoring protocol (the product's default)")
    ap.add_argument("--protocol-settings", default="{}", help="its settings, as JSON")
    ap.add_argument("--lower-bound", type=float, default=0.2, help="smallest keep ratio of a group")
    ap.add_argument(
        "--in-loop-latency", choices=["predicted", "measured", "anchored"], default="predicted",
        help="evaluation.in_loop_latency of every search (anchored: each candidate timed beside the base)",
    )  # fmt: skip
    ap.add_argument("--val-batches", type=int, default=4, help="held-out batches (x512) scoring each candidate")
    ap.add_argument("--bn-batches", type=int, default=4, help="BN-recalibration batches per candidate")
    ap.add_argument("--finetune-batches", type=int, default=100, help="standard fine-tune batches (0: off)")
    ap.add_argument("--oneshot-steps", type=int, default=300, help="one-shot supernet training steps")
    ap.add_argument(
        "--slim-trials", type=int, default=SLIM_TRIALS, help="groups AutoSlim scores per slimming step (at random)"
    )
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the side-by-side measurements")
    ap.add_argument("--device", default="local-cpu-cputime")
    ap.add_argument("--latency-batch", type=int, default=32)
    ap.add_argument("--data-root", type=Path, default=os.environ.get("PRUNEPILOT_DATA"))
    ap.add_argument("--out", type=Path, default=dated_results())
    ap.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="an interrupted run's search_quality.partial.json: its rows are kept and their searches not run again "
        "(searches that failed are run again), and its base latency is kept, so its budgets in ms stay the same",
    )
    ap.add_argument(
        "--from-partial",
        type=Path,
        nargs="+",
        default=None,
        help="no searches: summarise the rows of these runs' JSON (an interrupted run's search_quality.partial.json, "
        "or finished runs of other models or budgets) as one table; where two files hold the same model, budget and "
        "strategy, the later file's rows replace the earlier's (a re-run wins)",
    )
    args = ap.parse_args(argv)
    if args.resume is not None and args.in_loop_latency == "anchored":
        # the anchor is the base as this process's searches measure it, the budgets the resumed base's ms
        ap.error(
            "--resume with --in-loop-latency anchored: the resumed budgets are in ms of the base measured by the "
            "interrupted run, the anchored candidates' of the base measured now; start a fresh run (or resume "
            "with --in-loop-latency predicted)"
        )
    if args.quick:  # a smoke run
        args.models, args.budgets, args.seeds, args.evaluations = "resnet20", "0.5", 1, 12
        args.amc_warmup, args.finetune_batches, args.oneshot_steps, args.rounds = 4, 20, 50, 3
    return args


def main() -> None:
    args = parse_args()
    if args.from_partial is not None:
        docs = [json.loads(path.read_text()) for path in args.from_partial]
        finish(combine(args.from_partial, docs), args.out)
        return
    torch.set_num_threads(1)
    share_calibration()
    from prunepilot.search.strategies import strategy_names

    known = set(strategy_names()) | set(PEERS) | set(VARIANTS)
    strategies = [s for s in args.strategies.split(",") if s in known]
    skipped = [s for s in args.strategies.split(",") if s not in known]
    budgets = [float(b) for b in args.budgets.split(",")]
    doc: dict[str, Any] = {
        "benchmark": "search_quality",
        "quick": args.quick,
        "rows": [],
        "skipped_strategies": skipped,
        "settings": {k: str(v) for k, v in vars(args).items()},
        "machine": machine(),
        "versions": runtime_versions(),
    }
    started = time.time()
    partial = args.out / "search_quality.partial.json"

    def save() -> None:
        write_json(partial, doc, quiet=True)

    if args.resume is not None:  # an interrupted run's rows: kept, their searches not run again
        doc["rows"] = [r for r in json.loads(args.resume.read_text())["rows"] if not r.get("error")]
        doc["resumed_from"] = str(args.resume)
        for r in doc["rows"]:  # the resumed run's budgets in ms, not a new measurement's
            _RESUMED_BASE_MS.setdefault(r["model"], float(r["base"]["latency_ms"]))
    for model in args.models.split(","):
        run_model(args, model, budgets, strategies, doc, save)
    doc["total_seconds"] = time.time() - started
    finish(doc, args.out)
    partial.unlink(missing_ok=True)


def finish(doc: dict[str, Any], out: Path) -> None:
    """Summarise, tabulate, write the JSON and the fronts plot, print the table."""
    doc["summary"] = summarise(doc["rows"])
    doc["table"] = quality_table(doc)
    write_json(out / "search_quality.json", doc)
    plot_fronts(doc, out / "search_quality_fronts.png")
    print_table(doc["table"])
    if "total_seconds" in doc:
        print(f"total {doc['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
