"""Apply a searched policy to a production model: prune, recover, export, verify.

Public API::

    from prunepilot.apply import ApplyConfig, apply_to_model
    result = apply_to_model(ApplyConfig(
        policy="policy.json", model="resnet20", checkpoint="r20.pt", out="out/r20-small",
        data=DataConfig(name="fashion-mnist"), train=TrainConfig(epochs=5, lr=0.01),
        distill=DistillConfig(temperature=4.0, alpha=0.9), export=("onnx", "torchscript"),
    ))
    result.report["accuracy"], result.report["latency"], result.ok
    model = prunepilot.load_pruned("out/r20-small")     # rebuilt from the spec, no pickle

The same from the command line: ``prunepilot apply --policy policy.json --model resnet20 ...``.
Pieces usable on their own: :func:`fit_policy` (portability and ``by_ratio``),
:func:`interpolate_widths` (iterative schedules), :func:`export_and_check`.
"""

from __future__ import annotations

from prunepilot.apply.config import ApplyConfig
from prunepilot.apply.export import EXPORT_FORMATS, ExportCheck, export_and_check, parse_formats
from prunepilot.apply.latency import SearchContext, search_context
from prunepilot.apply.pipeline import ApplyResult, apply_to_model
from prunepilot.apply.portability import build_space, fit_policy
from prunepilot.apply.report import print_report, report_table
from prunepilot.apply.schedule import interpolate_widths

__all__ = [
    "EXPORT_FORMATS",
    "ApplyConfig",
    "ApplyResult",
    "ExportCheck",
    "SearchContext",
    "apply_to_model",
    "build_space",
    "export_and_check",
    "fit_policy",
    "interpolate_widths",
    "parse_formats",
    "print_report",
    "report_table",
    "search_context",
]
