"""Depth against width (#17): how fast can a model get with width pruning alone, and with depth?

Width pruning keeps every layer, so per-layer overhead stays: on a small CNN at batch 1 the
fastest width-pruned model can stay above half the base latency, and a 50% budget is then
unreachable. Removing residual blocks (``PruningPolicy.removed_blocks``) removes that overhead.

For each model and batch size this measures, side by side in interleaved rounds (every variant
once per round, the median over rounds; torch eager on this CPU, 1 thread, the thread-CPU clock):

* ``base``: the unpruned model;
* ``width``: every group at the lower bound (``--lower-bound``, default 0.1), the fastest
  policy a width-only search can propose;
* ``depth``: every removable block removed, full width;
* ``depth+width``: both, the fastest depth+width policy.

The models: the zoo ResNet-20 on Fashion-MNIST's 1x28x28 input (the committed base's weights
when ``bench/bases/resnet20.pt`` is there; latency does not depend on them), and a user-style
CNN defined here (a stem, two stages of ``bench/user_net.py``'s residual block with squeeze-excite
and a grouped 3x3 convolution, a strided transition; its block class joins the removable ones
through :func:`prunepilot.pruning.register_block`, as a user's would).

Target (#17): depth+width reaches a 50% batch-1 budget that width alone cannot.

    python bench/depth.py [--rounds 7] [--out PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    args_record,
    dated_results,
    machine,
    machine_note,
    print_result_table,
    result_table,
    write_json,
)
from bench.user_net import SEResidual as UserBlock  # noqa: E402  (the user's residual block, one definition)
from prunepilot.hw_models.base import runtime_versions  # noqa: E402
from prunepilot.hw_models.measure import TorchCPULatency  # noqa: E402
from prunepilot.pruning import PruningPolicy, PruningSpace, apply_policy, register_block  # noqa: E402

VARIANTS = ("base", "width", "depth", "depth+width")
BATCHES = (1, 32)
TARGET_FRACTION = 0.5


class UserCNN(nn.Module):
    """A small user-style CNN on 1x28x28: stem, 3 blocks at 32 channels, a strided transition,
    3 blocks at 64 channels, pooled linear head."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.stage1 = nn.Sequential(*(UserBlock(32) for _ in range(3)))
        self.down = nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.stage2 = nn.Sequential(*(UserBlock(64) for _ in range(3)))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.down(self.stage1(self.stem(x)))))


def build(name: str) -> nn.Module:
    """Model ``name`` (``resnet20`` or ``user-cnn``), eval mode."""
    if name == "user-cnn":
        register_block(UserBlock)
        torch.manual_seed(0)
        return UserCNN().eval()
    if name == "resnet20":
        try:
            from bench.bases.load import load_base

            return load_base("resnet20")[0]
        except Exception:  # noqa: BLE001 - latency does not depend on the weights
            from prunepilot.models import build_model

            torch.manual_seed(0)
            return build_model("resnet20", num_classes=10, in_channels=1).eval()
    raise ValueError(f"model {name!r} is unknown; choose 'resnet20' or 'user-cnn'")


def variants(model: nn.Module, lower_bound: float) -> dict[str, tuple[PruningPolicy, nn.Module]]:
    """The four variants of ``model``: their policies and applied models."""
    x = torch.zeros(1, 1, 28, 28)
    space = PruningSpace.build(model, x)
    blocks = [b.name for b in space.blocks]
    full, narrow = PruningPolicy.uniform(space, 1.0), PruningPolicy.uniform(space, lower_bound)
    policies = {
        "base": full,
        "width": narrow,
        "depth": full.with_removed_blocks(space, blocks),
        "depth+width": narrow.with_removed_blocks(space, blocks),
    }
    return {
        k: (p, model if k == "base" else apply_policy(model, p, x, space=space).eval()) for k, p in policies.items()
    }


def measure(models: dict[str, nn.Module], batch: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Median latency (ms) of each model over ``rounds`` interleaved rounds, and its spread
    ((max - min) / median of the rounds)."""
    meter = TorchCPULatency(threads=1, clock="thread", warmup=3, min_runs=10, min_seconds=0.1, max_attempts=1)
    samples: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for k, m in models.items():
            samples[k].append(float(meter.measure_ms(m, (1, 1, 28, 28), batch).ms))
    out = {}
    for k, s in samples.items():
        med = statistics.median(s)
        out[k] = (med, (max(s) - min(s)) / med)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20,user-cnn")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved measurement rounds")
    ap.add_argument("--lower-bound", type=float, default=0.1, help="the narrowest keep ratio (evaluation.lower_bound)")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/<date>/depth.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows: list[list[Any]] = []
    verdicts = []
    m, versions = machine(), runtime_versions()
    for name in args.models.split(","):
        model = build(name)
        vs = variants(model, args.lower_bound)
        n_blocks = len(vs["depth"][0].removed_blocks)
        space = PruningSpace.build(model, torch.zeros(1, 1, 28, 28))
        macs = {k: float(space.macs(p.channels, p.removed_blocks)) for k, (p, _m) in vs.items()}
        for batch in BATCHES:
            lat = measure({k: m for k, (_p, m) in vs.items()}, batch, args.rounds)
            base = lat["base"][0]
            for k in VARIANTS:
                ms, spread = lat[k]
                rows.append([name, batch, k, n_blocks if "depth" in k else 0, macs[k] / macs["base"], ms, ms / base,
                             spread, ms / base <= TARGET_FRACTION])  # fmt: skip
            if batch == 1:
                w, dw = lat["width"][0] / base, lat["depth+width"][0] / base
                verdicts.append(
                    f"{name} at batch 1: width alone reaches {100 * w:.0f}% of the base at best, depth+width "
                    f"{100 * dw:.0f}% ("
                    + ("met: only depth+width reaches 50%" if w > TARGET_FRACTION >= dw else
                       "width alone reaches 50% too: not a case for the target" if w <= TARGET_FRACTION else
                       "NOT met: neither reaches 50%")
                    + ")"
                )  # fmt: skip
    columns = ["model", "batch", "variant", "blocks removed", "MACs / base (analytic)", "latency ms (measured)",
               "latency / base (measured)", "spread", "within 50%"]  # fmt: skip
    table = result_table(
        "Depth against width: the fastest policy each can reach",
        columns,
        rows,
        [
            f"width: every group at keep {args.lower_bound:g}; depth: every removable block replaced by nn.Identity; "
            f"latency measured: torch eager on this CPU, 1 thread, thread-CPU clock, median of {args.rounds} "
            "interleaved rounds (spread: (max - min) / median of the rounds).",
            "Target (#17): depth+width reaches a 50% batch-1 budget that width alone cannot. " + "; ".join(verdicts),
            machine_note(m["cpu"], m["cores"], m["platform"], versions),
        ],
    )
    out = args.out or dated_results() / "depth.json"
    write_json(
        out, {"benchmark": "depth", "args": args_record(args), "machine": m, "versions": versions, "table": table}
    )
    print_result_table(table)


if __name__ == "__main__":
    main()
