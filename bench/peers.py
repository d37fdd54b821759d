"""What a user would run instead of a search: Torch-Pruning's own global pruning, as peers (#16).

Two peers, each a policy the benchmark's evaluator scores and the benchmark fine-tunes exactly as
it does every strategy's best policy (same scoring, same latency, same recipe):

* ``torch-pruning-global``: Torch-Pruning's ``MetaPruner`` with ``global_pruning=True``: one
  ranking of every group's channels across the whole model (each group's importance normalised
  by Torch-Pruning's default ``mean`` normaliser), pruned in ``steps`` iterative steps of a
  growing global ratio, stopping at the first step whose latency is within the budget;
* ``torch-pruning-isomorphic``: the same with ``isomorphic=True`` (Fang et al., ECCV 2024:
  channels are ranked only against groups of the same structure).

The importance is Torch-Pruning's magnitude (``l1``: ``MagnitudeImportance(p=1)``, its
examples' default family) or first-order Taylor (``taylor``: ``TaylorImportance``, gradients from
one calibration batch of the training split before each step). Classifier heads are left whole
(the layers :func:`prunepilot.pruning.groups.output_layers` finds), as every prunepilot policy
leaves them.

The latency a step is judged on is the evaluator's in-loop latency of the step's widths
(:meth:`~prunepilot.search.evaluator.Evaluator.latency_of`: the device's in-loop predictor where
a search calibrated one, else the device's own latency model on the model Torch-Pruning pruned),
the figure searches are budgeted on. The widths Torch-Pruning left become a
:class:`~prunepilot.pruning.PruningPolicy` over the evaluator's groups; which channels a group
keeps is then the evaluator's criterion, as for every other policy.

    python bench/peers.py --quick     # a smoke run on a small model (digits), prints a table
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.inprocess import Record  # noqa: E402
from bench.sq_summary import PEERS  # noqa: E402
from prunepilot.pruning import PruningPolicy  # noqa: E402
from prunepilot.search.evaluator import Evaluator  # noqa: E402

IMPORTANCES = ("l1", "taylor")


class Step(NamedTuple):
    """One iterative step of a peer: the global ratio reached, the widths left, their latency."""

    step: int
    ratio: float
    widths: dict[str, int]
    latency_ms: float


def _out_width(module: nn.Module) -> int:
    for attr in ("out_channels", "out_features", "num_features", "embed_dim"):
        if isinstance(value := getattr(module, attr, None), int):
            return value
    raise ValueError(f"cannot read the output width of {type(module).__name__}")


def _importance(name: str) -> Any:
    import torch_pruning as tp

    if name == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if name == "taylor":
        return tp.importance.TaylorImportance()
    raise ValueError(f"peer importance {name!r} is unknown; choose one of {IMPORTANCES}")


def _heads(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    import torch_pruning as tp

    from prunepilot.pruning.adapter import release
    from prunepilot.pruning.groups import output_layers

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    try:
        return output_layers(graph)
    finally:
        release(graph)


def peer_steps(
    ev: Evaluator,
    name: str,
    budget_ms: float,
    *,
    importance: str = "l1",
    steps: int = 40,
    max_ratio: float = 0.95,
    round_to: int | None = None,
) -> list[Step]:
    """Run peer ``name`` on a copy of ``ev``'s base model: every step until the first within
    ``budget_ms`` (all ``steps`` when none is), in order."""
    import torch_pruning as tp

    if name not in PEERS:
        raise ValueError(f"peer {name!r} is unknown; choose one of {PEERS}")
    if steps < 1 or not 0.0 < max_ratio < 1.0:
        raise ValueError(f"need steps >= 1 and 0 < max_ratio < 1, got steps={steps}, max_ratio={max_ratio}")
    imp = _importance(importance)
    net = copy.deepcopy(ev.model).eval()
    example = ev.example
    pruner = tp.pruner.MetaPruner(
        net,
        example,
        importance=imp,
        global_pruning=True,
        isomorphic=name == "torch-pruning-isomorphic",
        pruning_ratio=max_ratio,
        iterative_steps=steps,
        max_pruning_ratio=max_ratio,
        ignored_layers=_heads(net, example),
        round_to=round_to,
    )
    modules = dict(net.named_modules())
    out: list[Step] = []
    for step in range(1, steps + 1):
        if importance == "taylor":
            x, y = ev.calib[(step - 1) % len(ev.calib)]
            net.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
        pruner.step()
        net.zero_grad(set_to_none=True)
        widths = {g.name: _out_width(modules[g.name]) for g in ev.space.groups}
        latency = ev.latency_of(net, widths)
        out.append(Step(step, max_ratio * step / steps, widths, float(latency.ms)))
        if latency.ms <= budget_ms:
            break
    return out


def peer_record(ev: Evaluator, name: str, budget_ms: float, **kwargs: Any) -> Record | None:
    """The peer's policy at ``budget_ms`` scored by ``ev``, or None when no step reached it."""
    trace = peer_steps(ev, name, budget_ms, **kwargs)
    last = trace[-1]
    if last.latency_ms > budget_ms:
        return None
    policy = PruningPolicy.from_widths(ev.space, last.widths, importance=ev.cfg.evaluation.importance)
    policy = policy.model_copy(update={"metadata": {"peer": name, "step": last.step, "global_ratio": last.ratio}})
    metrics = ev.evaluate(policy)
    return policy, metrics, {"peer": name, "steps": len(trace), "step_latency_ms": last.latency_ms}


def main(argv: Sequence[str] | None = None) -> None:
    from bench.common import print_result_table
    from prunepilot.search.config import validate_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the small digits model (the only size for now)")
    ap.add_argument("--fractions", default="0.7,0.5,0.3", help="budgets as fractions of the base latency")
    ap.add_argument("--importance", choices=IMPORTANCES, default="l1")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ev = Evaluator(
        validate_config(
            {
                "name": "peers-quick",
                "seed": 0,
                "model": {"spec": "testing:tiny-convnet", "train": {"epochs": 2, "lr": 0.05}},
                "data": {"name": "digits", "batch_size": 64, "val_size": 0.2, "calib_size": 128},
                "device": {"name": "local-cpu", "latency_model": "macs", "settings": {"ms_per_unit": 1.0}},
                "budget": {"fraction": 0.5},
                "strategy": {"name": "random", "evaluations": 1},
            }
        )
    )
    base = ev.base_metrics()
    rows = []
    for fraction in (float(f) for f in args.fractions.split(",")):
        budget = fraction * base.latency_ms
        for name in PEERS:
            rec = peer_record(ev, name, budget, importance=args.importance)
            if rec is None:
                rows.append([name, fraction, None, None, None])
                continue
            _policy, metrics, extra = rec
            rows.append([name, fraction, extra["steps"], metrics.latency_ms / base.latency_ms, metrics.accuracy])
    print_result_table(
        {
            "title": "Torch-Pruning global pruning as peers (quick: digits, tiny convnet, predicted MACs latency)",
            "columns": ["peer", "budget", "steps", "latency / base (predicted)", "held-out accuracy (bn-recal)"],
            "rows": rows,
            "notes": [f"importance {args.importance}; base held-out accuracy {base.accuracy:.4f}"],
        }
    )


if __name__ == "__main__":
    main()
