"""Channel criteria (#20, point 4): every criterion at 50% and 30% of measured latency, on the
committed bases, after BN recalibration, after reconstruction and after the standard fine-tune;
and the pruning-at-initialisation criteria against random at init after the same training.

Bases: the committed ones (``bench/bases/``, sha256-checked). Per base, one evaluator (the config
of ``bench/search_quality.py``), the searches' in-loop latency predictor (calibrated on measured
uniform models), and the base's latency measured once (median of ``--rounds`` rounds) on ``--device`` at
``--latency-batch``; every budget is a fraction of that figure. Then, per budget:

1. **Policies.** ``uniform``: the widest uniform keep ratio the evaluator's predictor puts within
   the budget (``bench/inprocess.py``'s uniform baseline). With ``--policies search_quality.json``
   also the best searched policy of that base and budget (the most accurate on held-out data among
   the file's search rows; uniform and the peers left out). Each policy is measured side by side
   with the base in ``--rounds`` interleaved rounds. The widths, so the latency, are the policy's;
   the criterion only chooses *which* channels are kept.
2. **Every criterion** (``--criteria``, default all of ``IMPORTANCE_CRITERIA``) chooses the
   channels of each policy, then: held-out accuracy after BN recalibration (the ``bn-recal``
   protocol), after least-squares reconstruction (the ``reconstruct`` protocol), and test accuracy
   after the standard fine-tune (``bench/finetune.py``; ``--finetune-batches 0`` skips it).
3. **At init** (``--init-criteria``: snip, grasp, synflow; and ``random``, their control): the
   product's ``prunepilot apply --at-init`` (``apply_to_model``) on a fresh model seeded by each of
   ``--init-seeds`` seeds, pruned to the uniform policy's widths, trained ``--init-epochs`` epochs of
   ``--init-batches`` batches (the same recipe and seeds for every criterion); test accuracy,
   median/min/max over the seeds.

Targets (#20): reconstruction beats BN recalibration alone, without fine-tune, at 50% and 30% on
both bases; at 30%, SynFlow at init is not worse than random at init after the same training
(Tanaka et al. 2020). The table's notes state each either way, and what was not run.

    python bench/criteria.py --quick       # smoke: resnet20 at 50%, l1/snip/thinet, tiny trainings
    python bench/criteria.py [--policies bench/results/<date>/search_quality.json]

Writes ``bench/results/<date>/criteria.json`` (``<date>-quick/`` with ``--quick``; ``--out-dir``),
rows saved after every criterion in ``criteria.partial.json``.

**In pieces.** The full study is hours on 2 cores (mobilenet_v2's standard fine-tune alone is
minutes per row), so it can run as disjoint pieces, one process per core or per session, merged
into one result. ``--parts`` limits a run to the uniform policy's rows, the searched one's or the
at-init ones; ``--criteria`` to some criteria (none: at-init only); ``--uniform-from`` reuses the
uniform widths an earlier piece recorded, so that every piece prunes a budget to the same widths;
``--merge`` joins the pieces (complete or partial files; they must agree on the training and
measurement settings and may not overlap), and the table names what no piece ran:

    python bench/criteria.py --bases mobilenet_v2 --budgets 0.5 --parts uniform --out-dir /tmp/m50
    python bench/criteria.py --bases mobilenet_v2 --budgets 0.5 --parts init \
        --uniform-from /tmp/m50/criteria.json --out-dir /tmp/m50-init
    python bench/criteria.py --merge /tmp/m50/criteria.json /tmp/m50-init/criteria.json ...
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*

from bench.bases.load import BASES, DATA, load_base  # noqa: E402
from bench.common import (  # noqa: E402
    args_record,
    dated_results,
    machine,
    machine_note,
    print_result_table,
    result_table,
    write_json,
)
from bench.finetune import BATCHES, finetune_test  # noqa: E402
from bench.proxy_correlation import pruner  # noqa: E402
from bench.search_quality import evaluator_config, measure_side_by_side  # noqa: E402
from prunepilot.apply.config import AT_INIT_CRITERIA  # noqa: E402
from prunepilot.data import DataConfig  # noqa: E402
from prunepilot.errors import ConfigError  # noqa: E402
from prunepilot.hw_models.base import runtime_versions  # noqa: E402
from prunepilot.pruning import PruningPolicy  # noqa: E402
from prunepilot.pruning.selection import IMPORTANCE_CRITERIA  # noqa: E402
from prunepilot.search.config import validate_config  # noqa: E402
from prunepilot.search.evaluator import Evaluator  # noqa: E402
from prunepilot.search.protocols import ScoringData, ScoringProtocol, get_protocol  # noqa: E402
from prunepilot.training import TrainConfig  # noqa: E402

CRITERIA = list(IMPORTANCE_CRITERIA)
INIT_CRITERIA = [c for c in AT_INIT_CRITERIA if c != "random"]
QUICK_CRITERIA = ["l1", "snip", "thinet"]
QUICK_INIT_CRITERIA = ["synflow"]
#: the budgets and bases the targets name
TARGET_BUDGETS = (0.5, 0.3)
SYNFLOW_BUDGET = 0.3
#: search rows that are not a searched policy
NOT_SEARCHED = ("uniform", "torch-pruning-global", "torch-pruning-isomorphic")
#: what one run can be limited to (``--parts``), so that a long study runs as pieces (``--merge``)
PARTS = ("uniform", "searched", "init")


class Base(NamedTuple):
    """One committed base: its evaluator, what the protocols see, its measured latency."""

    name: str
    ev: Evaluator
    data: ScoringData
    base_ms: float
    info: dict[str, Any]


class Searched(NamedTuple):
    """The best searched policy of one base and budget in a search_quality.json."""

    policy: PruningPolicy
    strategy: str
    seed: int
    held_out_acc: float


class Scores(NamedTuple):
    """One policy with one criterion: held-out accuracy after BN recalibration and after
    reconstruction, test accuracy after the standard fine-tune (None: not run), seconds of each."""

    bn_recal: float
    reconstruct: float
    finetuned: float | None
    seconds: dict[str, float]


# --- scoring ------------------------------------------------------------------------------------


def protocols() -> dict[str, ScoringProtocol]:
    """The two no-training protocols compared here, as the product registers them."""
    return {"bn-recal": get_protocol("bn-recal"), "reconstruct": get_protocol("reconstruct")}


def score_policy(
    ev: Evaluator,
    policy: PruningPolicy,
    criterion: str,
    data: ScoringData,
    finetune_batches: int,
    protos: Mapping[str, ScoringProtocol] | None = None,
) -> Scores:
    """``policy`` with ``criterion`` choosing its channels, scored by the ``bn-recal`` and
    ``reconstruct`` protocols on held-out data, then given the standard fine-tune (test split)."""
    import copy

    from prunepilot.pruning import recalibrate_bn

    protos = protos or protocols()
    pol = with_criterion(policy, criterion)
    start = time.perf_counter()
    pruned = pruner(ev, pol)()  # the criterion chooses the channels once (hessian, grasp: minutes here)
    seconds: dict[str, float] = {"prune": time.perf_counter() - start}
    found: dict[str, float] = {}
    for label in ("bn-recal", "reconstruct"):
        start = time.perf_counter()
        found[label] = float(protos[label].score(pol, lambda: copy.deepcopy(pruned), data))
        seconds[label] = time.perf_counter() - start
    finetuned = None
    if finetune_batches > 0:
        start = time.perf_counter()
        model = copy.deepcopy(pruned)
        if ev.calib:
            recalibrate_bn(model, ev.calib)  # what ev.prune(pol) gives, without choosing the channels again
        finetuned = finetune_test(ev, pol, finetune_batches, model.eval())
        seconds["finetune"] = time.perf_counter() - start
    return Scores(found["bn-recal"], found["reconstruct"], finetuned, seconds)


def with_criterion(policy: PruningPolicy, criterion: str) -> PruningPolicy:
    """The same widths, channels chosen by ``criterion``."""
    from prunepilot.pruning import canonical_importance

    return policy.model_copy(update={"importance": canonical_importance(criterion)})


def uniform_policy(ev: Evaluator, budget_ms: float, widths: Mapping[str, int] | None = None) -> PruningPolicy:
    """The widest uniform policy within ``budget_ms`` on the evaluator's predictor; with ``widths``,
    the policy of those widths instead (``--uniform-from``: the uniform policy an earlier piece of
    the same study found, so that every piece prunes one budget to the same widths)."""
    from bench.inprocess import uniform_record

    e = ev.cfg.evaluation
    if widths is not None:
        return PruningPolicy.from_widths(ev.space, widths, round_to=e.round_to, importance=e.importance)
    return uniform_record(ev, budget_ms)[0]


def recorded_uniform_widths(docs: Sequence[Mapping[str, Any]], model: str, budget: float) -> dict[str, int] | None:
    """The widths of the uniform policy at ``model`` and ``budget`` in earlier criteria runs (rows
    or at-init rows), or None where none recorded it.

    Raises:
        ConfigError: the runs recorded different uniform widths there.
    """
    found = [
        dict(r["widths"])
        for d in docs
        for r in [*d.get("rows", []), *d.get("init_rows", [])]
        if r["model"] == model and abs(r["budget"] - budget) < 1e-9 and r.get("policy", "uniform") == "uniform"
        and r.get("widths") is not None
    ]  # fmt: skip
    if any(f != found[0] for f in found[1:]):
        raise ConfigError(f"--uniform-from: the runs disagree on the uniform widths of {model} at {budget:.0%}")
    return found[0] if found else None


def searched_policies(
    doc: Mapping[str, Any], bases: Iterable[str], budgets: Iterable[float]
) -> dict[tuple[str, float], Searched]:
    """Per base and budget, the searched policy of a search_quality.json with the best held-out
    accuracy (rows without a policy, uniform and the peers left out). Models named by their spec
    are matched to the base of that spec."""
    by_spec = {spec: name for name, spec in BASES.items()}
    wanted, found = set(bases), dict[tuple[str, float], Searched]()
    for row in doc.get("rows", []):
        model = by_spec.get(str(row.get("model")), str(row.get("model")))
        budget = next((b for b in budgets if abs(float(row.get("budget", -1)) - b) < 1e-9), None)
        if model not in wanted or budget is None or row.get("strategy") in NOT_SEARCHED:
            continue
        if row.get("policy") is None or row.get("best_acc") is None:
            continue
        cand = Searched(
            PruningPolicy.from_json(json.dumps(row["policy"])),
            str(row["strategy"]),
            int(row.get("seed", 0)),
            float(row["best_acc"]),
        )
        key = (model, budget)
        if key not in found or cand.held_out_acc > found[key].held_out_acc:
            found[key] = cand
    return found


# --- at init ------------------------------------------------------------------------------------


def init_recipe(epochs: int, batches: int | None, seed: int) -> TrainConfig:
    """The training every at-init model gets: the product's defaults (SGD lr 0.05, momentum 0.9,
    weight decay 5e-4, cosine) for ``epochs`` epochs of at most ``batches`` batches, seeded."""
    return TrainConfig(epochs=epochs, max_batches_per_epoch=batches, seed=seed)


def at_init_accuracy(
    spec: str, policy: PruningPolicy, criterion: str, data: DataConfig, recipe: TrainConfig, work: Path
) -> float:
    """``prunepilot apply --at-init``: a fresh model of ``spec`` seeded by ``recipe.seed``, pruned
    to ``policy``'s widths by ``criterion``, trained by ``recipe``; its test accuracy."""
    from prunepilot.apply import ApplyConfig, apply_to_model

    work.mkdir(parents=True, exist_ok=True)
    path = policy.save(work / "policy.json")
    cfg = ApplyConfig(
        model=spec,
        out=work / f"{criterion}-seed{recipe.seed}",
        policy=path,
        importance=criterion,
        at_init=True,
        data=data,
        train=recipe,
        measure_latency=False,
        keep_checkpoints=1,
    )
    return float(apply_to_model(cfg).report["accuracy"]["after_finetuning"])


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of ``values``."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# --- verdicts and the table ---------------------------------------------------------------------


def reconstruction_verdicts(rows: Sequence[Mapping[str, Any]], bases: Sequence[str]) -> list[str]:
    """Target 1 per base and budget: MET where reconstruction's held-out accuracy is above BN
    recalibration's for every policy and criterion scored there (no fine-tune in either)."""
    notes = []
    for name in bases:
        for budget in TARGET_BUDGETS:
            mine = [
                r for r in rows
                if r["model"] == name and r["budget"] == budget and r.get("reconstruct_acc") is not None
            ]  # fmt: skip
            head = f"Target: reconstruction beats BN recalibration alone (no fine-tune), {name} at {budget:.0%}"
            if not mine:
                notes.append(f"{head}: NOT RUN (not in this run).")
                continue
            wins = sum(1 for r in mine if r["reconstruct_acc"] > r["bn_recal_acc"])
            gain = statistics.median(r["reconstruct_acc"] - r["bn_recal_acc"] for r in mine)
            verdict = "MET" if wins == len(mine) else "NOT MET"
            notes.append(
                f"{head}: {verdict} (higher held-out accuracy for {wins} of {len(mine)} policy x criterion rows; "
                f"median gain {100 * gain:+.1f} points)."
            )
    return notes


def synflow_verdicts(init_rows: Sequence[Mapping[str, Any]], bases: Sequence[str]) -> list[str]:
    """Target 2 per base: at 30% after the same training, SynFlow at init's median test accuracy
    over the seeds is not below random at init's (MET), else NOT MET."""
    notes = []
    for name in bases:
        at = {r["criterion"]: r for r in init_rows if r["model"] == name and r["budget"] == SYNFLOW_BUDGET}
        head = f"Target: SynFlow at init not worse than random at init at {SYNFLOW_BUDGET:.0%}, {name}"
        if "synflow" not in at or "random" not in at:
            notes.append(f"{head}: NOT RUN (synflow and random at init at {SYNFLOW_BUDGET:.0%} not both in this run).")
            continue
        s, r = at["synflow"], at["random"]
        verdict = "MET" if s["median"] >= r["median"] else "NOT MET"
        notes.append(
            f"{head}: {verdict} (test accuracy median over {len(s['test_acc'])} seeds {s['median']:.4f} "
            f"[{s['min']:.4f}, {s['max']:.4f}] vs random {r['median']:.4f} [{r['min']:.4f}, {r['max']:.4f}])."
        )
    return notes


def incomplete_notes(rows: Sequence[Mapping[str, Any]], criteria: Sequence[str]) -> list[str]:
    """One note per policy scored with only some of ``criteria`` (an interrupted piece)."""
    scored: dict[tuple[str, float, str], set[str]] = {}
    for r in rows:
        scored.setdefault((r["model"], r["budget"], r["policy"]), set()).add(r["criterion"])
    return [
        f"NOT RUN: {model} at {budget:.0%}, {policy}: criteria {[c for c in criteria if c not in done]}."
        for (model, budget, policy), done in scored.items()
        if set(criteria) - done
    ]


def over_budget_notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One note per policy whose measured latency share is above its budget."""
    seen = {(r["model"], r["budget"], r["policy"]): r["measured_share"] for r in rows}
    return [
        f"Over budget as measured: {model} at {budget:.0%}, {policy}: {100 * share:.0f}% of the base's latency "
        "(picked within the budget by the predictor; the row's figures are for this latency)."
        for (model, budget, policy), share in seen.items()
        if share > budget
    ]


COLUMNS = [
    "model", "budget", "policy", "criterion", "mean keep", "latency / base (measured)",
    "BN recal (held-out)", "reconstruct (held-out)", "fine-tuned (test)",
    "at init: test median", "at init: min", "at init: max",
]  # fmt: skip


def table_rows(rows: Sequence[Mapping[str, Any]], init_rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """The table's cells: the JSON's own numbers (the trained bases' rows, then the at-init ones)."""
    cells = [
        [r["model"], r["budget"], r["policy"], r["criterion"], r["mean_keep"], r["measured_share"],
         r.get("bn_recal_acc"), r.get("reconstruct_acc"), r.get("finetuned_test_acc"), None, None, None]
        for r in rows
    ]  # fmt: skip
    cells += [
        [r["model"], r["budget"], f"uniform, at init ({len(r['test_acc'])} seeds)", r["criterion"], r["mean_keep"],
         r["measured_share"], None, None, None, r["median"], r["min"], r["max"]]
        for r in init_rows
    ]  # fmt: skip
    return cells


def criteria_table(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The result's table for BENCHMARKS.md, with the targets' verdicts and what was not run."""
    a = doc["args"]
    rows, init_rows, bases = doc["rows"], doc["init_rows"], list(BASES)
    ft = int(a["finetune_batches"])
    notes = [
        f"Budgets are fractions of each base's latency measured on {a['device']} at batch {a['latency_batch']} "
        f"(median of {a['rounds']} rounds). uniform: the widest uniform keep ratio the searches' in-loop "
        "latency predictor (a lookup table calibrated on measured uniform models) puts within the budget. "
        "Latency: measured, each policy "
        f"side by side with the base in {a['rounds']} interleaved rounds; the criterion only chooses which channels "
        "are kept, so a policy's latency is the same for every criterion.",
        f"BN recal and reconstruct: the product's bn-recal and reconstruct protocols on {a['val_batches']} x 512 "
        f"held-out training images, {a['bn_batches']} calibration batches of 128 (also the data-dependent "
        "criteria's), no fine-tune. "
        + (
            f"Fine-tuned: the standard fine-tune (bench/finetune.py: distillation, {ft} batches, lr 0.01 cosine), "
            "test split."
            if ft > 0
            else "The standard fine-tune was NOT RUN (--finetune-batches 0)."
        ),
        f"At init: prunepilot apply --at-init on a fresh model per seed (seeds {list(range(int(a['init_seeds'])))}), "
        f"pruned to the uniform policy's widths by the criterion, trained {a['init_epochs']} epoch(s) of "
        f"{a['init_batches'] or 'all'} batches (SGD lr 0.05 cosine, the product's defaults); random at init with "
        "the same recipe, seeds and widths; test accuracy median [min, max] over the seeds."
        if int(a["init_seeds"]) > 0
        else "At-init rows NOT RUN (--init-seeds 0).",
        *doc["searched_notes"],
        *over_budget_notes(rows),
        *incomplete_notes(rows, a["criteria"]),
        *reconstruction_verdicts(rows, bases),
        *synflow_verdicts(init_rows, bases),
    ]
    missing = [
        f"bases {sorted(set(bases) - set(a['bases']))}" if set(bases) - set(a["bases"]) else "",
        f"budgets {[b for b in TARGET_BUDGETS if b not in a['budgets']]}" if set(TARGET_BUDGETS) - set(a["budgets"])
        else "",
        f"criteria {[c for c in CRITERIA if c not in a['criteria']]}" if set(CRITERIA) - set(a["criteria"]) else "",
        f"at-init criteria {[c for c in INIT_CRITERIA if c not in a['init_criteria']]}"
        if set(INIT_CRITERIA) - set(a["init_criteria"])
        else "",
    ]  # fmt: skip
    if any(missing):
        notes.append("NOT RUN here: " + "; ".join(m for m in missing if m) + ".")
    if a.get("quick"):
        notes.append("QUICK run (smoke size): tiny fine-tune and at-init training, 1 seed; not the verdict.")
    notes += [f"FAILED: {f}" for f in doc.get("failures", [])]
    m = doc["machine"]
    notes.append(machine_note(m["cpu"], m["cores"], m["platform"], doc["versions"], f"; {doc['seconds']:.0f} s"))
    title = "Channel criteria: BN recalibration, reconstruction, fine-tune; at init vs random"
    return result_table(title + (" (quick)" if a.get("quick") else ""), COLUMNS, table_rows(rows, init_rows), notes)


# --- the run ------------------------------------------------------------------------------------


def prepare(name: str, args: argparse.Namespace) -> Base:
    """Base ``name``'s evaluator, the searches' in-loop latency predictor, and its latency measured here."""
    from prunepilot.search import inloop

    model, info = load_base(name)
    ev = Evaluator(validate_config(evaluator_config(name, args)), base_state=model.state_dict())
    ev.calibrate_fit()
    ev.in_loop = inloop.calibrate(ev)  # what uniform's ratio is found with, as in bench/search_quality.py
    (base_ms,) = measure_side_by_side(ev, [None], args.rounds)
    return Base(name, ev, ev.scoring_data(), base_ms, info)


def run_policy(
    args: argparse.Namespace,
    base: Base,
    budget: float,
    label: str,
    policy: PruningPolicy,
    rows: list[dict[str, Any]],
    failures: list[str],
    save: Callable[[], None],
) -> float:
    """Measure ``policy`` side by side with the base, then every criterion; rows appended. Returns
    its measured share of the base's latency."""
    base_ms, ms = measure_side_by_side(base.ev, [None, policy], args.rounds)
    share = ms / base_ms
    shared = {"model": base.name, "budget": budget, "policy": label, "mean_keep": policy.mean_keep(),
              "measured_ms": ms, "measured_share": share, "latency_kind": "measured",
              "widths": policy.channels}  # fmt: skip
    protos = protocols()
    for crit in args.criteria:
        started = time.time()
        try:
            s = score_policy(base.ev, policy, crit, base.data, args.finetune_batches, protos)
        except Exception as exc:  # noqa: BLE001 - recorded in the row and the table's notes
            failures.append(f"{base.name} {budget:.0%} {label} {crit}: {type(exc).__name__}: {exc}")
            print(failures[-1], flush=True)
            continue
        rows.append({**shared, "criterion": crit, "bn_recal_acc": s.bn_recal, "reconstruct_acc": s.reconstruct,
                     "finetuned_test_acc": s.finetuned, "seconds": s.seconds})  # fmt: skip
        save()
        print(f"{base.name} {budget:.0%} {label:>10} {crit:>14}: bn-recal {s.bn_recal:.4f} reconstruct "
              f"{s.reconstruct:.4f} fine-tuned {s.finetuned} ({time.time() - started:.0f} s)", flush=True)  # fmt: skip
    return share


def run_at_init(
    args: argparse.Namespace,
    base: Base,
    budget: float,
    policy: PruningPolicy,
    share: float,
    init_rows: list[dict[str, Any]],
    failures: list[str],
    work: Path,
) -> None:
    """Every at-init criterion and random at init, on ``policy``'s widths, every seed."""
    data = DataConfig.model_validate({**DATA.model_dump(mode="json", exclude={"root"}), "root": args.data_root})
    for crit in [*args.init_criteria, "random"]:
        accs, seconds = [], []
        try:
            for seed in range(args.init_seeds):
                started = time.time()
                recipe = init_recipe(args.init_epochs, args.init_batches, seed)
                folder = work / f"{base.name}-{budget:g}"
                accs.append(at_init_accuracy(BASES[base.name], policy, crit, data, recipe, folder))
                seconds.append(time.time() - started)
                print(f"{base.name} {budget:.0%} at init {crit:>8} seed {seed}: test {accs[-1]:.4f} "
                      f"({seconds[-1]:.0f} s)", flush=True)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - recorded in the table's notes
            failures.append(f"{base.name} {budget:.0%} at init {crit}: {type(exc).__name__}: {exc}")
            print(failures[-1], flush=True)
            continue
        trained = init_recipe(args.init_epochs, args.init_batches, 0).model_dump(mode="json", exclude={"seed"})
        init_rows.append({"model": base.name, "budget": budget, "criterion": crit, "mean_keep": policy.mean_keep(),
                          "measured_share": share, "test_acc": accs, **spread(accs), "seconds": seconds,
                          "seeds": list(range(args.init_seeds)), "recipe": trained,
                          "widths": policy.channels})  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="resnet20 at 50%%, l1/snip/thinet, tiny trainings, 1 seed")
    ap.add_argument("--bases", nargs="+", choices=sorted(BASES), default=sorted(BASES))
    ap.add_argument("--budgets", nargs="+", type=float, default=list(TARGET_BUDGETS), help="of measured latency")
    ap.add_argument("--criteria", nargs="*", choices=CRITERIA, default=CRITERIA, help="none: only the at-init rows")
    ap.add_argument(
        "--uniform-from", type=Path, nargs="+", default=None, metavar="JSON",
        help="criteria(.partial).json runs whose uniform widths this run reuses where they have them",
    )  # fmt: skip
    ap.add_argument(
        "--parts", nargs="+", choices=PARTS, default=list(PARTS),
        help="which policies' rows to run: the uniform policy's, the searched one's, the at-init ones",
    )  # fmt: skip
    ap.add_argument(
        "--merge", type=Path, nargs="+", default=None, metavar="JSON",
        help="merge these criteria(.partial).json runs (disjoint pieces of one study) into one criteria.json",
    )  # fmt: skip
    ap.add_argument(
        "--rescore", type=Path, default=None, metavar="CRITERIA_JSON",
        help="score a finished study's rows again by bn-recal and reconstruct (same widths and criteria; "
        "latency and fine-tuned accuracy kept) and write it again",
    )  # fmt: skip
    ap.add_argument("--where", nargs="+", default=None, metavar="MODEL@BUDGET",
                    help="with --rescore: only these model and budget pairs (e.g. resnet20@0.3)")  # fmt: skip
    ap.add_argument(
        "--policies", type=Path, nargs="+", default=None, help="search_quality.json files whose rows carry a policy"
    )
    ap.add_argument("--finetune-batches", type=int, default=BATCHES, help="standard fine-tune batches (0: off)")
    ap.add_argument("--init-criteria", nargs="+", choices=INIT_CRITERIA, default=INIT_CRITERIA)
    ap.add_argument("--init-seeds", type=int, default=3, help="seeds of each at-init criterion (0: no at-init rows)")
    ap.add_argument("--init-epochs", type=int, default=1, help="training epochs of every at-init model")
    ap.add_argument("--init-batches", type=int, default=200, help="batches per epoch of that training (0: all)")
    ap.add_argument("--device", default="local-cpu-cputime")
    ap.add_argument("--latency-batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of each side-by-side measurement")
    ap.add_argument("--lower-bound", type=float, default=0.2, help="smallest keep ratio of a group")
    ap.add_argument("--bn-batches", type=int, default=4, help="calibration batches (BN, reconstruction, criteria)")
    ap.add_argument("--val-batches", type=int, default=4, help="held-out batches (x512) each score reads")
    ap.add_argument("--data-root", default=os.environ.get("PRUNEPILOT_DATA"))
    ap.add_argument("--out-dir", type=Path, default=None, help="default: bench/results/<date>[-quick]/")
    # the evaluator's own (unused here: the criteria are scored by the protocols above, latency measured side by side)
    ap.set_defaults(protocol="bn-recal", protocol_settings="{}", in_loop_latency="predicted")
    args = ap.parse_args(argv)
    if args.where is not None:
        if args.rescore is None:
            ap.error("--where only applies with --rescore")
        pairs = []
        for w in args.where:
            model, _, budget = w.partition("@")
            try:
                pairs.append((model, float(budget)))
            except ValueError:
                ap.error(f"--where {w!r}: expected MODEL@BUDGET, e.g. resnet20@0.3")
            if model not in BASES:
                ap.error(f"--where {w!r}: unknown base {model!r}; choose from {sorted(BASES)}")
        args.where = pairs
    if args.quick:
        args.bases, args.budgets, args.criteria = ["resnet20"], [0.5], QUICK_CRITERIA
        args.init_criteria, args.finetune_batches, args.init_seeds, args.init_batches = QUICK_INIT_CRITERIA, 5, 1, 5
        args.rounds = 3
    args.init_batches = args.init_batches or None
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    out_dir = args.out_dir or dated_results().with_name(dated_results().name + ("-quick" if args.quick else ""))
    if args.rescore is not None:
        study = json.loads(args.rescore.read_text())
        where = {(b, f) for b in args.bases for f in args.budgets}
        if args.where:  # MODEL@BUDGET pairs, where --bases x --budgets is too coarse
            where = set(args.where)
        done = rescore(study, str(args.rescore), study_scorer(study, args.data_root), args.criteria, where)
        write_json(out_dir / "criteria.json", done)
        print_result_table(done["table"])
        return
    if args.merge is not None:
        merged = merge_runs([json.loads(p.read_text()) for p in args.merge], [str(p) for p in args.merge])
        write_json(out_dir / "criteria.json", merged)
        print_result_table(merged["table"])
        return
    searched: dict[tuple[str, float], Searched] = {}
    if args.policies is not None:
        rows = [r for p in args.policies for r in json.loads(p.read_text()).get("rows", [])]
        searched = searched_policies({"rows": rows}, args.bases, args.budgets)
    doc: dict[str, Any] = {
        "benchmark": "criteria",
        "quick": args.quick,
        "args": args_record(args),
        "rows": [],
        "init_rows": [],
        "failures": [],
        "machine": machine(),
        "versions": runtime_versions(),
    }
    rows, init_rows, failures = doc["rows"], doc["init_rows"], doc["failures"]
    earlier = [json.loads(p.read_text()) for p in args.uniform_from or []]
    partial = out_dir / "criteria.partial.json"

    def save() -> None:
        write_json(partial, doc, quiet=True)

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-criteria-") as tmp:
        for name in args.bases:
            base = prepare(name, args)
            doc.setdefault("bases", {})[name] = {"latency_ms": base.base_ms, "test_acc": base.info["test_acc"]}
            for budget in args.budgets:
                try:
                    pinned = recorded_uniform_widths(earlier, name, budget)
                    policy = uniform_policy(base.ev, budget * base.base_ms, pinned)
                except ConfigError as exc:  # e.g. the budget under the lower bound's latency: said, not fatal
                    failures.append(f"{name} {budget:.0%} uniform: {exc}")
                    print(failures[-1], flush=True)
                    continue
                if "uniform" in args.parts:
                    share = run_policy(args, base, budget, "uniform", policy, rows, failures, save)
                elif "init" in args.parts:  # the at-init rows still say the uniform widths' measured share
                    base_ms, ms = measure_side_by_side(base.ev, [None, policy], args.rounds)
                    share = ms / base_ms
                if (name, budget) in searched and "searched" in args.parts:
                    s = searched[(name, budget)]
                    run_policy(args, base, budget, f"searched: {s.strategy} seed {s.seed}", s.policy, rows,
                               failures, save)  # fmt: skip
                if args.init_seeds > 0 and "init" in args.parts:
                    run_at_init(args, base, budget, policy, share, init_rows, failures, Path(tmp))
                    save()
    doc["searched_notes"] = searched_notes(args, searched)
    doc["seconds"] = time.time() - started
    doc["table"] = criteria_table(doc)
    write_json(out_dir / "criteria.json", doc)
    partial.unlink(missing_ok=True)
    print_result_table(doc["table"])
    print(f"total {doc['seconds']:.0f} s")


def rescore(
    doc: Mapping[str, Any],
    source: str,
    score: Callable[[Mapping[str, Any]], Scores],
    criteria: Sequence[str] | None = None,
    where: set[tuple[str, float]] | None = None,
) -> dict[str, Any]:
    """``doc`` (a finished criteria study) with every trained-base row's ``bn_recal_acc`` and
    ``reconstruct_acc`` scored again (``score(row)``, :func:`study_scorer`: the product's protocols
    as they are now, on the row's widths and criterion, the study's calibration and held-out
    batches); the measured latency and the fine-tuned test accuracy are kept (the fine-tune starts
    from the BN-recalibrated pruned model, which reconstruction does not touch). The earlier
    figures stay in each row (``*_before``); the at-init rows are kept as they are. For a change to
    a protocol, without re-running hours of fine-tunes. Rows of criteria not in ``criteria`` (None:
    all) keep their BN recal figure and lose their reconstruct one (None, the old one kept as
    ``reconstruct_acc_before``), so the verdicts count only rows scored by one method; the table's
    notes name them; so do rows whose ``(model, budget)`` is not in ``where`` (None: all;
    ``--bases`` x ``--budgets``). A rescore of a rescored study keeps the rows it does not score as
    they are and the study's first figures in ``*_before``; the table gets one note for all rescores.

    Raises:
        ConfigError: ``doc`` is not a finished criteria study.
    """
    if doc.get("benchmark") != "criteria" or "seconds" not in doc:
        raise ConfigError(f"--rescore {source}: not a finished criteria result")
    started = time.time()
    rows = []
    out_of = {(r["model"], r["budget"], r["criterion"]) for r in doc["rows"]
              if (criteria is not None and r["criterion"] not in criteria)
              or (where is not None and (r["model"], r["budget"]) not in where)}  # fmt: skip
    for r in doc["rows"]:
        was_rescored = "reconstruct_acc_before" in r  # by an earlier rescore: its first figures are kept
        bn_before = r.get("bn_recal_acc_before", r["bn_recal_acc"])
        rec_before = r["reconstruct_acc_before"] if was_rescored else r["reconstruct_acc"]
        if (r["model"], r["budget"], r["criterion"]) in out_of:
            rows.append(
                dict(r) if was_rescored else {**r, "reconstruct_acc": None, "reconstruct_acc_before": rec_before}
            )
            continue
        s = score(r)
        took = {**r.get("seconds", {}), **{f"rescore_{k}": v for k, v in s.seconds.items()}}
        rows.append({**r, "bn_recal_acc": s.bn_recal, "reconstruct_acc": s.reconstruct,
                     "bn_recal_acc_before": bn_before, "reconstruct_acc_before": rec_before,
                     "seconds": took})  # fmt: skip
        print(f"{r['model']} {r['budget']:.0%} {r['policy']:>10} {r['criterion']:>14}: bn-recal "
              f"{bn_before:.4f} -> {s.bn_recal:.4f}, reconstruct {rec_before:.4f} -> {s.reconstruct:.4f}",
              flush=True)  # fmt: skip
    runs = [*doc.get("rescored", []), {"source": source, "seconds": time.time() - started, "machine": machine()}]
    blank = [r for r in rows if r["reconstruct_acc"] is None]
    pairs = {(r["model"], r["budget"]) for r in blank}
    away = sorted(p for p in pairs if all(x["reconstruct_acc"] is None for x in rows if (x["model"], x["budget"]) == p))
    skipped = sorted({r["criterion"] for r in blank if (r["model"], r["budget"]) not in away})
    note = rescore_note(", ".join(str(x["source"]) for x in runs), sum(float(x["seconds"]) for x in runs), rows,
                        skipped, away)  # fmt: skip
    notes = [n for n in doc.get("searched_notes", []) if not n.startswith("Rescored (")]  # one note, the final state
    out = {**doc, "rows": rows, "searched_notes": [*notes, note], "rescored": runs}
    out["table"] = criteria_table(out)
    return out


def rescore_note(
    source: str,
    seconds: float,
    rows: Sequence[Mapping[str, Any]],
    skipped: Sequence[str],
    away: Sequence[tuple[str, float]],
) -> str:
    """What the table says about a rescore: what was scored again, and which criteria's BN recal
    figure moved (the same protocol, so only a criterion whose channel choice is not reproducible)."""
    moved = sorted({r["criterion"] for r in rows if "bn_recal_acc_before" in r
                    and abs(r["bn_recal_acc"] - r["bn_recal_acc_before"]) > 1e-9})  # fmt: skip
    most = max((abs(r["bn_recal_acc"] - r["bn_recal_acc_before"]) for r in rows if "bn_recal_acc_before" in r),
               default=0.0)  # fmt: skip
    same = (
        "BN recal reproduced the study's figure in every row (the same protocol and batches)."
        if not moved
        else f"BN recal reproduced the study's figure in every row except {', '.join(moved)} (up to "
        f"{100 * most:.2f} points: a channel choice that is not the same from run to run)."
    )
    return (
        f"Rescored ({source}, {seconds:.0f} s): the BN recal and reconstruct columns were scored again on the "
        "same widths, criteria and batches by the protocols as they are now (reconstruct: batch norm re-estimated "
        "after each refit, so each consumer is fit on its final inputs); latency, fine-tuned and at-init figures "
        f"are the study's. {same}"
        + (
            f" NOT rescored: {', '.join(skipped)} (reconstruct column empty, the earlier figure kept in the JSON as "
            "reconstruct_acc_before; not counted by the verdicts)."
            if skipped
            else ""
        )
        + (
            f" NOT rescored: {', '.join(f'{m} at {b:.0%}' for m, b in away)} (the same: reconstruct column empty, "
            "not counted)."
            if away
            else ""
        )
    )


def study_scorer(doc: Mapping[str, Any], data_root: str | None) -> Callable[[Mapping[str, Any]], Scores]:
    """What :func:`rescore` scores a row with: the study's evaluator per base (committed weights,
    its device, calibration and held-out settings), :func:`score_policy` with no fine-tune.

    Raises:
        ConfigError: a row's widths do not round to themselves (not this study's space).
    """
    a = doc["args"]
    bounds = a["lower_bound"] if isinstance(a["lower_bound"], list) else [a["lower_bound"]]
    settings = {**a, "lower_bound": min(bounds), "data_root": data_root or a.get("data_root")}  # scores ignore it
    evs: dict[str, tuple[Evaluator, ScoringData]] = {}
    protos = protocols()

    def score(r: Mapping[str, Any]) -> Scores:
        if r["model"] not in evs:
            model, _ = load_base(r["model"])
            ev = Evaluator(validate_config(evaluator_config(r["model"], argparse.Namespace(**settings))),
                           base_state=model.state_dict())  # fmt: skip
            evs[r["model"]] = (ev, ev.scoring_data())
        ev, data = evs[r["model"]]
        policy = PruningPolicy.from_widths(ev.space, r["widths"], round_to=ev.cfg.evaluation.round_to)
        if policy.channels != r["widths"]:
            raise ConfigError(f"--rescore: row widths {r['widths']} do not round to themselves here")
        return score_policy(ev, policy, r["criterion"], data, 0, protos)

    return score


#: run settings that must agree between merged pieces (the rest is a union or per piece)
SAME_SETTINGS = (
    "finetune_batches", "init_epochs", "init_batches", "init_seeds", "device", "latency_batch", "rounds",
    "bn_batches", "val_batches", "quick",
)  # fmt: skip
# ``lower_bound`` may differ between pieces (the merged notes name each piece's): the smallest keep
# ratio bounds which budgets a uniform policy reaches (mobilenet_v2 at 30% needs one under 0.2), not
# how a policy that reaches one is scored


def merge_runs(docs: Sequence[Mapping[str, Any]], sources: Sequence[str]) -> dict[str, Any]:
    """One criteria document from disjoint pieces of one study (e.g. one process per base and
    budget on a 2-core machine): rows, at-init rows, failures and notes concatenated, bases,
    budgets and criteria the union, seconds the sum; the table rebuilt. Every piece's base latency
    is kept (each piece measured its own; the rows' shares are against it). A piece without
    ``seconds`` is an interrupted run's partial file and is said to be one.

    Raises:
        ConfigError: the pieces disagree on a setting in ``SAME_SETTINGS``, or two pieces scored
            the same model, budget, policy and criterion.
    """
    if not docs:
        raise ConfigError("--merge needs at least one criteria JSON")
    first = docs[0]["args"]
    for d, src in zip(docs, sources, strict=True):
        if d.get("benchmark") != "criteria":
            raise ConfigError(f"--merge {src}: not a criteria result (benchmark {d.get('benchmark')!r})")
        differ = [k for k in SAME_SETTINGS if d["args"].get(k) != first.get(k)]
        if differ:
            got = {k: d["args"].get(k) for k in differ}
            want = {k: first.get(k) for k in differ}
            raise ConfigError(f"--merge {src}: settings {got} differ from {sources[0]}'s {want}")
    rows = [r for d in docs for r in d["rows"]]
    init_rows = [r for d in docs for r in d["init_rows"]]
    keys = [(r["model"], r["budget"], r["policy"], r["criterion"]) for r in rows]
    keys += [(r["model"], r["budget"], "at init", r["criterion"]) for r in init_rows]
    dup = sorted({k for k in keys if keys.count(k) > 1}, key=str)
    if dup:
        raise ConfigError(f"--merge: pieces overlap, scored twice: {dup}")

    def union(key: str) -> list[Any]:
        return sorted({v for d in docs for v in d["args"][key]}, key=str)

    args = {**first, "bases": union("bases"), "budgets": union("budgets"), "criteria": union("criteria"),
            "init_criteria": union("init_criteria"), "merge": list(sources)}  # fmt: skip
    interrupted = [src for d, src in zip(docs, sources, strict=True) if "seconds" not in d]
    bounds = sorted({d["args"].get("lower_bound") for d in docs}, key=str)
    if len(bounds) > 1:
        args["lower_bound"] = bounds
    pieces = [
        f"{src}: bases {d['args']['bases']}, budgets {d['args']['budgets']}, "
        + (f"lower bound {d['args'].get('lower_bound')}, " if len(bounds) > 1 else "")
        + "base latency "
        + ", ".join(f"{n} {b['latency_ms']:.3f} ms" for n, b in d.get("bases", {}).items())
        for d, src in zip(docs, sources, strict=True)
    ]
    notes = [f"Merged from {len(docs)} runs (each measured its own base latency): " + "; ".join(pieces) + "."]
    have = {(r["model"], r["budget"]) for r in rows if str(r["policy"]).startswith("searched")}
    lacking = [f"{n} at {b:.0%}" for n in args["bases"] for b in args["budgets"] if (n, b) not in have]
    if lacking:
        notes.append(f"Searched-policy rows NOT RUN in any piece: {', '.join(lacking)}.")
    notes += [f"INTERRUPTED piece (its partial file): {src}." for src in interrupted]
    doc: dict[str, Any] = {
        "benchmark": "criteria",
        "quick": bool(first.get("quick")),
        "args": args,
        "rows": rows,
        "init_rows": init_rows,
        "failures": [f for d in docs for f in d.get("failures", [])],
        "machine": docs[0]["machine"],
        "versions": docs[0]["versions"],
        "bases": {
            f"{n} ({src})": b for d, src in zip(docs, sources, strict=True) for n, b in d.get("bases", {}).items()
        },
        "searched_notes": [
            n for d in docs for n in d.get("searched_notes", []) if not n.startswith("Searched-policy rows NOT RUN")
        ]
        + notes,
        "seconds": sum(float(d.get("seconds", 0.0)) for d in docs),
        "merged_from": list(sources),
    }
    doc["table"] = criteria_table(doc)
    return doc


def searched_notes(args: argparse.Namespace, searched: Mapping[tuple[str, float], Searched]) -> list[str]:
    """What the table says about the searched-policy rows."""
    if "searched" not in getattr(args, "parts", PARTS):
        return []  # a piece without them: the merged table says where they are missing
    if args.policies is None:
        return ["Searched-policy rows NOT RUN: no --policies search_quality.json was given (uniform policies only)."]
    wanted = [(n, b) for n in args.bases for b in args.budgets]
    lacking = [f"{n} at {b:.0%}" for n, b in wanted if (n, b) not in searched]
    return [
        f"Searched policies from {', '.join(map(str, args.policies))}: per base and budget the search row with "
        "the best held-out accuracy (uniform and the peers left out), its widths kept, channels chosen by each "
        "criterion." + (f" No searched policy there for {', '.join(lacking)}." if lacking else "")
    ]


if __name__ == "__main__":
    main()
