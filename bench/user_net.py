"""A user's own model through the whole path (#14's acceptance case): does the search, with the
default scoring protocol, still lose to uniform pruning after the same fine-tune?

The case #14 was filed on: a user's own CNN (squeeze-excite, a concat branch, grouped
convolutions), its own checkpoint and data loader, searched at 50% of measured CPU latency at
batch 32, lost 6 points to uniform pruning at the same latency after the same fine-tune. This
script rebuilds that case from what a user has, nothing of the benchmark bases':

* the model, :func:`user_net` (``bench.user_net:user_net``, a ``pkg.module:fn`` spec as a user's
  would be): a stem, two squeeze-excite residual blocks with grouped 3x3 convolutions at 32
  channels, a two-branch block whose 1x1 and 3x3 branches are concatenated, a strided transition,
  two more squeeze-excite blocks at 64 channels and a pooled linear head;
* the data, :func:`user_data` (``bench.user_net:user_data``, the user's own loader): the
  Fashion-MNIST images transposed and padded to 32x32. They are the only images on this machine
  and nothing may be downloaded; no test and no other benchmark reads them in this form, and the
  model has never been tuned on them;
* its base, trained once by ``--train`` (the benchmark bases' recipe, ``bench/bases/train.py``,
  at ``--epochs``) into ``bench/bases/user_net.pt`` with ``user_net.json`` (recipe, accuracy,
  seconds, sha256, which the loader checks), committed with this script.

Then, per ``--protocols`` entry (default: the default protocol only):

1. ``prunepilot.search.run`` with ``--strategy`` (default optuna-tpe) and ``--evaluations``
   candidates at ``--budget`` of the base's measured latency on ``--device`` at ``--latency-batch``
   (in-loop latency predicted by the search's calibrated table, the front re-measured paired with
   the base at the end, as a user's search runs); its pick is the most accurate candidate within
   the budget on the re-measured latency (what ``prunepilot pareto --export`` writes);
2. once every search is done, the picks and a uniform curve (``--ratios``) are timed side by side
   with the base (``bench.search_quality.measure_paired``) and given the standard fine-tune
   (``bench/finetune.py``); each pick's test accuracy is compared with the uniform curve's at the
   pick's own measured share of the base (linear interpolation, never extrapolated).

Target (#14): the pick with the default protocol does not lose to uniform pruning at the same
measured latency after the same fine-tune (delta >= 0).

    python bench/user_net.py --train                     # the base, once (about 10 min on 2 cores)
    python bench/user_net.py                             # the search and the verdict
    python bench/user_net.py --protocols bn-recal short-finetune:steps=20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*

from bench.bases.load import BASES_DIR, file_sha256  # noqa: E402
from bench.common import (  # noqa: E402
    args_record,
    dated_results,
    machine,
    machine_note,
    print_result_table,
    result_table,
    write_json,
)
from prunepilot.data import DataConfig  # noqa: E402
from prunepilot.errors import CheckpointError  # noqa: E402

SPEC = "bench.user_net:user_net"
DATA_NAME = "bench.user_net:user_data"
CHECKPOINT = BASES_DIR / "user_net.pt"
INFO = BASES_DIR / "user_net.json"
RATIOS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
EPOCHS = 4
COLUMNS = ["protocol", "in-loop latency", "round_to", "strategy", "candidates", "search s", "pick score",
           "pick share", "pick test (ft)", "uniform at share", "delta (points)", "target met",
           "best uniform within budget", "delta vs it (points)"]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The user's model and data.


class SEResidual(nn.Module):
    """``relu(x + se(f(x)))``: 1x1, grouped 3x3 (``groups``), squeeze-excite gate."""

    def __init__(self, ch: int, groups: int = 4) -> None:
        super().__init__()
        self.f = nn.Sequential(
            nn.Conv2d(ch, ch, 1, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(),
            nn.Conv2d(ch, ch, 3, padding=1, groups=groups, bias=False),
            nn.BatchNorm2d(ch),
        )
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(ch, ch // 4, 1), nn.ReLU(), nn.Conv2d(ch // 4, ch, 1), nn.Sigmoid()
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.f(x)
        return self.act(x + y * self.se(y))


class ConcatBranch(nn.Module):
    """Two branches (1x1 and 3x3) concatenated, then a 1x1 projection back to ``ch``."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        half = ch // 2
        self.a = nn.Sequential(nn.Conv2d(ch, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(ch, half, 3, padding=1, bias=False), nn.BatchNorm2d(half), nn.ReLU())
        self.proj = nn.Sequential(nn.Conv2d(2 * half, ch, 1, bias=False), nn.BatchNorm2d(ch), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat([self.a(x), self.b(x)], dim=1))


class UserNet(nn.Module):
    """The user's CNN on 1x32x32 (see the module docstring)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.stage1 = nn.Sequential(SEResidual(32), SEResidual(32), ConcatBranch(32))
        self.down = nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.stage2 = nn.Sequential(SEResidual(64), SEResidual(64))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.down(self.stage1(self.stem(x)))))


def user_net(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """The model spec ``bench.user_net:user_net``."""
    return UserNet(num_classes, in_channels)


def user_data(root: Path | None = None) -> tuple[TensorDataset, TensorDataset, int]:
    """The data name ``bench.user_net:user_data``: Fashion-MNIST transposed and padded to 32x32,
    normalised by the training split's own mean and deviation; ``(train, test, 10)``."""
    from torchvision.datasets import FashionMNIST

    if root is None:
        raise ValueError("user_data needs the data root (data.root, --data-root or PRUNEPILOT_DATA)")
    splits = []
    for train in (True, False):
        ds = FashionMNIST(str(root), train=train, download=False)
        splits.append((F.pad(ds.data.float().unsqueeze(1).transpose(2, 3) / 255.0, (2, 2, 2, 2)), ds.targets.long()))
    mean, std = splits[0][0].mean(), splits[0][0].std()
    train_set, test_set = (TensorDataset(((x - mean) / std).contiguous(), y) for x, y in splits)
    return train_set, test_set, 10


def data_config(root: Path | None) -> DataConfig:
    """The split the base is trained on and searches score on: 5,000 training images held out."""
    return DataConfig(name=DATA_NAME, root=root, val_size=5000, seed=0, batch_size=128)


# ---------------------------------------------------------------------------------------------
# The base: trained once, committed, checked on load.


def train_base(args: argparse.Namespace) -> dict[str, Any]:
    """Train :func:`user_net` by the bases' recipe; write ``user_net.pt`` and ``user_net.json``."""
    from bench.bases.train import FlipLoader, recipe
    from prunepilot import __version__
    from prunepilot.data import build_data
    from prunepilot.hw_models.measure import cpu_name
    from prunepilot.models import build_model, save_checkpoint
    from prunepilot.pruning import TORCH_PRUNING_VERSION
    from prunepilot.training import evaluate_accuracy, fit

    data = build_data(data_config(args.data_root))
    torch.manual_seed(0)
    model = build_model(SPEC, num_classes=data.num_classes, in_channels=data.input_shape[0])
    cfg = recipe(args.epochs)
    start = time.time()
    history = fit(
        model, FlipLoader(data.train, seed=0), cfg, val_loader=data.val, progress=False, description="user_net"
    )
    seconds = time.time() - start
    model.eval()
    save_checkpoint(model, CHECKPOINT)
    record = {
        "name": "user_net",
        "spec": SPEC,
        "num_classes": data.num_classes,
        "input_shape": list(data.input_shape),
        "data": data_config(None).model_dump(mode="json", exclude={"root"}),
        "train_images": data.num_train,
        "recipe": {**cfg.model_dump(mode="json"), "batch_size": 128, "augmentation": "hflip p=0.5"},
        "epochs": args.epochs,
        "val_acc": history[-1]["val_acc"] if history else evaluate_accuracy(model, data.val),
        "test_acc": evaluate_accuracy(model, data.test),
        "seconds": seconds,
        "history": history,
        "checkpoint": CHECKPOINT.name,
        "sha256": file_sha256(CHECKPOINT),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()},
        "versions": {"prunepilot": __version__, "torch": torch.__version__, "torch_pruning": TORCH_PRUNING_VERSION},
    }
    INFO.write_text(json.dumps(record, indent=2) + "\n")
    print(f"user_net: val {record['val_acc']:.4f} test {record['test_acc']:.4f} in {seconds:.0f} s", flush=True)
    return record


def base_record() -> dict[str, Any]:
    """The committed base's JSON after checking its checkpoint's sha256."""
    if not INFO.is_file() or not CHECKPOINT.is_file():
        raise CheckpointError(f"{CHECKPOINT} or {INFO} is missing; train the base: python bench/user_net.py --train")
    info: dict[str, Any] = json.loads(INFO.read_text())
    actual = file_sha256(CHECKPOINT)
    if actual != info["sha256"]:
        raise CheckpointError(
            f"{CHECKPOINT.name} has sha256 {actual} but {INFO.name} records {info['sha256']}; restore it from git "
            "or retrain: python bench/user_net.py --train"
        )
    return info


# ---------------------------------------------------------------------------------------------
# The search and the verdict.


def parse_protocol(text: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name:key=value,...`` (integer values) -> ``(name, settings)``."""
    name, _, rest = text.partition(":")
    settings: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--protocols {text!r}: {item!r} is not key=value")
        settings[key] = int(value) if value.lstrip("-").isdigit() else value
    return name, settings


def search_config(args: argparse.Namespace, protocol: str | None, settings: dict[str, Any]) -> dict[str, Any]:
    """The search as a user would configure it; ``protocol`` None leaves the default."""
    evaluation: dict[str, Any] = {
        "lower_bound": args.lower_bound,
        "in_loop_latency": args.in_loop,
        "round_to": args.round_to,
    }
    if protocol is not None:
        evaluation.update(protocol=protocol, protocol_settings=settings)
    return {
        "name": "user-net",
        "seed": args.seed,
        "model": {"spec": SPEC, "checkpoint": str(CHECKPOINT)},
        "data": data_config(args.data_root).model_dump(mode="json"),
        "device": {"name": args.device, "batch_size": args.latency_batch},
        "budget": {"fraction": args.budget},
        "evaluation": evaluation,
        "strategy": {"name": args.strategy, "evaluations": args.evaluations},
        "ray": {"num_cpus": 2, "max_concurrent": 1},
    }


def run_search(args: argparse.Namespace, label: str, work: Path) -> dict[str, Any]:
    """One search; its pick (the most accurate within the budget on re-measured latency)."""
    import prunepilot.search
    from prunepilot.search.config import EvaluationSection
    from prunepilot.search.pareto import best_within_budget
    from prunepilot.search.store import RunStore

    name, settings = parse_protocol(label) if label != "default" else (None, {})
    cfg = search_config(args, name, settings)
    started = time.time()
    run_dir = work / label.replace(":", "-")
    result = prunepilot.search.run(cfg, backend="local", run_dir=run_dir, progress=False)
    seconds = time.time() - started
    info = RunStore(run_dir).read_info()
    pick = best_within_budget(result.candidates, result.budget_ms)
    row: dict[str, Any] = {
        "protocol": label if name is not None else f"{EvaluationSection().protocol} (default)",
        "in_loop_latency": cfg["evaluation"]["in_loop_latency"],
        "round_to": cfg["evaluation"]["round_to"],
        "strategy": args.strategy,
        "candidates": len(result.candidates),
        "search_seconds": seconds,
        "budget_ms": result.budget_ms,
        "base_ms": result.base.latency_ms,
        # what the run folder (a temporary one) said about the pick's origin: kept with the result
        "run": {k: info.get(k) for k in ("scoring", "uniform_at_budget", "fill") if k in info},
    }
    if pick is None:
        row["pick"] = None
        print(f"{label}: no candidate within the budget {result.budget_ms:.3f} ms", flush=True)
        return row
    row["pick"] = {"policy": json.loads(pick.policy.to_json()), "score": pick.metrics.accuracy,
                   "strategy": pick.strategy, "trial": pick.trial,
                   "latency_ms": pick.measured.latency_ms if pick.measured else pick.metrics.latency_ms,
                   "latency_kind": "measured" if pick.measured else pick.metrics.latency_kind}  # fmt: skip
    print(f"{label}: {len(result.candidates)} candidates in {seconds:.0f} s; pick scored {pick.metrics.accuracy:.4f}",
          flush=True)  # fmt: skip
    return row


def verdict(args: argparse.Namespace, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Steps 2: the picks and the uniform curve timed side by side and fine-tuned the same way."""
    from bench.finetune import finetune_test
    from bench.search_quality import measure_paired
    from bench.sq_final import interpolate
    from prunepilot.pruning import PruningPolicy
    from prunepilot.search.config import validate_config
    from prunepilot.search.evaluator import get_evaluator

    ev = get_evaluator(validate_config(search_config(args, "bn-recal", {})))
    ratios = [r for r in args.ratios if r >= args.lower_bound - 1e-9]
    uniform = [PruningPolicy.uniform(ev.space, r, importance=ev.cfg.evaluation.importance) for r in ratios]
    picked = [r for r in rows if r.get("pick")]
    policies = [PruningPolicy.from_json(json.dumps(r["pick"]["policy"])) for r in picked]
    base_ms, paired = measure_paired(ev, [*uniform, *policies], args.rounds, args.instances)
    curve = []
    for r, policy, m in zip(ratios, uniform, paired[: len(uniform)], strict=True):
        acc = finetune_test(ev, policy, args.finetune_batches)
        curve.append({"keep": r, "share": m.share, "share_q1": m.q1, "share_q3": m.q3, "finetuned_test_acc": acc})
        print(f"uniform {r:.2f}: share {m.share:.3f}, fine-tuned test {acc:.4f}", flush=True)
    points = [(c["share"], c["finetuned_test_acc"]) for c in curve]
    within = best_uniform_within(curve, args.budget)
    for row, policy, m in zip(picked, policies, paired[len(uniform) :], strict=True):
        acc = finetune_test(ev, policy, args.finetune_batches)
        at = interpolate(points, m.share)
        row["final"] = {"share": m.share, "share_q1": m.q1, "share_q3": m.q3, "measured_ms": m.ms,
                        "finetuned_test_acc": acc, "uniform_at_share": at,
                        "delta_points": None if at is None else 100.0 * (acc - at),
                        "best_uniform_within_budget": within,
                        "delta_vs_best_uniform_within_budget":
                            None if within is None else 100.0 * (acc - within["finetuned_test_acc"])}  # fmt: skip
        print(f"{row['protocol']}: share {m.share:.3f}, fine-tuned test {acc:.4f}, uniform there {at}", flush=True)
    return {"base_ms": base_ms, "curve": curve}


def best_uniform_within(curve: list[dict[str, Any]], budget: float) -> dict[str, Any] | None:
    """The uniform curve's most accurate point (fine-tuned test) whose measured share is within
    ``budget``: what a user who skipped the search would ship at this budget. On a CPU whose latency
    is not monotonic in width it need not be the widest keep ratio. None if no point fits."""
    fits = [c for c in curve if c["share"] <= budget]
    return max(fits, key=lambda c: c["finetuned_test_acc"]) if fits else None


def table(doc: dict[str, Any]) -> dict[str, Any]:
    """The BENCHMARKS.md table of a ``user_net.json`` record."""
    out = []
    for r in doc["rows"]:
        f = r.get("final") or {}
        delta = f.get("delta_points")
        met = None if delta is None else delta >= 0
        within = f.get("best_uniform_within_budget")
        out.append([r["protocol"], r.get("in_loop_latency", "predicted"), r.get("round_to", 1), r["strategy"],
                    r["candidates"], r["search_seconds"], (r.get("pick") or {}).get("score"), f.get("share"),
                    f.get("finetuned_test_acc"), f.get("uniform_at_share"), delta, met,
                    None if within is None else f"keep {within['keep']:g}: {within['finetuned_test_acc']:.4f}",
                    f.get("delta_vs_best_uniform_within_budget")])  # fmt: skip
    base = doc["base"]
    a = doc["args"]
    keeps = ", ".join(f"{c['keep']:g}" for c in doc["curve"])
    notes = [
        f"The user's model ({SPEC}: squeeze-excite residual blocks with grouped 3x3 convolutions, a concat "
        f"branch) and loader ({DATA_NAME}: Fashion-MNIST transposed and padded to 32x32, the only images on this "
        f"machine, read in a form no test or other benchmark uses); base trained {base['epochs']} epochs by the "
        f"bases' recipe: held-out {base['val_acc']:.4f}, test {base['test_acc']:.4f} (bench/bases/user_net.json).",
        f"Each search: {a['strategy']}, {a['evaluations']} candidates, budget {a['budget']:g} of the base's measured "
        f"latency on {a['device']} at batch {a['latency_batch']}, lower bound {a['lower_bound']:g}, local backend; "
        "pick: the most accurate candidate within the budget on its re-measured latency (what `pareto --export` "
        "writes).",
        f"Verdict after the searches: picks and a uniform curve (keep {keeps}) timed paired with the base "
        f"({a['rounds']} rounds, {a['instances']} instances per policy; share of the base, measured), each given "
        f"the standard fine-tune ({a['finetune_batches']} batches, distillation); "
        "delta: pick minus the uniform curve at the pick's share, test accuracy, points; best uniform within "
        "budget: the curve's most accurate point whose measured share is within the budget (latency is not "
        "monotonic in width on this CPU, so it need not be the widest), what a user would ship without a search.",
        "Uniform curve (keep: share, fine-tuned test): "
        + "; ".join(f"{c['keep']:g}: {c['share']:.3f}, {c['finetuned_test_acc']:.4f}" for c in doc["curve"]),
    ]
    for r in doc["rows"]:
        d = (r.get("final") or {}).get("delta_points")
        verdict_text = (
            "no pick within the budget"
            if r.get("pick") is None
            else ("outside the uniform curve" if d is None else f"{d:+.2f} points: {'MET' if d >= 0 else 'NOT MET'}")
        )
        notes.append(f"Target (#14): {r['protocol']} does not lose to uniform at the same measured latency: "
                     f"{verdict_text}.")  # fmt: skip
        within = (r.get("final") or {}).get("delta_vs_best_uniform_within_budget")
        if within is not None:
            notes.append(f"{r['protocol']} against the best uniform policy within the budget (a user's alternative "
                         f"to searching): {within:+.2f} points.")  # fmt: skip
    m = doc["machine"]
    notes.append(machine_note(m["cpu"], m["cores"], m["platform"], base["versions"], f"; {doc['seconds']:.0f} s"))
    return result_table(
        "User's own model: searched policy vs uniform at the same measured latency (#14)", COLUMNS, out, notes
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", action="store_true", help="train and write the base (bench/bases/user_net.*)")
    ap.add_argument("--epochs", type=int, default=EPOCHS, help="base training epochs (with --train)")
    ap.add_argument("--protocols", nargs="+", default=["default"],
                    help="scoring protocols to search with: default, or name[:key=value,...]")  # fmt: skip
    ap.add_argument("--strategy", default="optuna-tpe")
    ap.add_argument("--evaluations", type=int, default=100)
    ap.add_argument("--budget", type=float, default=0.5, help="of the base's measured latency")
    ap.add_argument("--device", default="local-cpu-cputime")
    ap.add_argument("--latency-batch", type=int, default=32)
    ap.add_argument("--lower-bound", type=float, default=0.2)
    ap.add_argument("--in-loop", choices=["predicted", "anchored", "measured"], default="predicted",
                    help="evaluation.in_loop_latency of every search")  # fmt: skip
    ap.add_argument("--round-to", type=int, default=1, help="evaluation.round_to of every search")
    ap.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS), help="uniform keep ratios of the curve")
    ap.add_argument("--rounds", type=int, default=7, help="paired measurement rounds of the verdict")
    ap.add_argument("--instances", type=int, default=3, help="fresh pruned models per policy in the verdict")
    ap.add_argument("--finetune-batches", type=int, default=100, help="the standard fine-tune's batches")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", type=Path, default=os.environ.get("PRUNEPILOT_DATA"))
    ap.add_argument("--out", type=Path, default=None, help="folder for user_net.json (default bench/results/<date>)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    if args.data_root is None:
        raise SystemExit("no data root: pass --data-root or set PRUNEPILOT_DATA (the folder holding FashionMNIST/)")
    if args.train:
        train_base(args)
        return
    base = base_record()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="user-net-") as tmp:
        rows = [run_search(args, label, Path(tmp)) for label in args.protocols]
    doc: dict[str, Any] = {"benchmark": "user_net", "args": args_record(args), "base": base, "rows": rows}
    doc.update(verdict(args, rows))
    doc.update(machine=machine(), seconds=time.time() - started)
    doc["table"] = table(doc)
    out = (args.out or dated_results()) / "user_net.json"
    write_json(out, doc)
    print_result_table(doc["table"])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
