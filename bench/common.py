"""What every benchmark script shares: where results go, how they are written, the table they
carry for ``bench/report.py``, and what they record about the machine.

The scripts run as ``python bench/NAME.py`` and tests import them from their paths; both put
the repository root on ``sys.path`` so that ``from bench.common import ...`` works. Searches run
in this process are in ``bench/inprocess.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from torch import nn

from prunepilot.hw_models.measure import cpu_name

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"


# --- results: where, and how they are written ---------------------------------------------------


def dated_results() -> Path:
    """``bench/results/<today>/``: the default folder of a script's result."""
    return RESULTS / datetime.now().strftime("%Y-%m-%d")


def stamp() -> str:
    """The time, for result file names that must not overwrite each other (``20261124-131426``)."""
    return time.strftime("%Y%m%d-%H%M%S")


def args_record(args: argparse.Namespace) -> dict[str, Any]:
    """The command line as JSON: paths as strings, every other value as it is."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def write_json(path: Path, record: Mapping[str, Any], quiet: bool = False) -> Path:
    """Write a result (its folder made if needed) and, unless ``quiet``, say where it went."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    if not quiet:
        print(f"wrote {path}")
    return path


def result_table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], notes: Iterable[str]
) -> dict[str, Any]:
    """The ``table`` entry of a result, which ``bench/report.py`` renders into BENCHMARKS.md: cells
    are the JSON's own numbers, unformatted; the notes say what was measured, how, and on what."""
    return {"title": title, "columns": list(columns), "rows": [list(r) for r in rows], "notes": list(notes)}


# --- the machine and the versions every result records ------------------------------------------


def machine() -> dict[str, Any]:
    """This machine: CPU model, core count and platform."""
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()}


def machine_note(cpu: Any, cores: Any, plat: Any, versions: Mapping[str, Any], extra: str = "") -> str:
    """``Machine (shared): ... Versions: ...`` from what the JSON recorded (unrecorded parts left out)."""
    described = ", ".join(str(x) for x in (cpu, f"{cores} cores" if cores else None, plat) if x)
    listed = ", ".join(f"{k} {v}" for k, v in versions.items() if k != "platform")
    return f"Machine (shared): {described or 'not recorded'}{extra}. Versions: {listed}."


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def print_result_table(table: Mapping[str, Any]) -> None:
    """A :func:`result_table` as plain text: right-aligned columns (floats to 4 decimals, None as
    ``-``), then its notes."""
    rows, columns = table["rows"], table["columns"]
    widths = [max([len(str(c)), *(len(_cell(row[i])) for row in rows)]) for i, c in enumerate(columns)]
    print(f"\n{table['title']}")
    print("  ".join(str(c).rjust(w) for c, w in zip(columns, widths, strict=True)))
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for row in rows:
        print("  ".join(_cell(c).rjust(w) for c, w in zip(row, widths, strict=True)))
    print_notes(table["notes"])


def print_notes(notes: Iterable[str]) -> None:
    """A table's notes as the scripts print them, one ``- note`` a line."""
    for note in notes:
        print(f"- {note}")


# --- models a latency benchmark times -----------------------------------------------------------


def timed_model(spec: str) -> tuple[nn.Module, tuple[int, ...]]:
    """A model to time and its input shape: ``torchvision:NAME`` with 1000 classes at 224x224,
    a zoo model with its default classes at 32x32."""
    from prunepilot.models import build_model, default_input_shape, parse_spec

    classes = 1000 if parse_spec(spec).kind == "torchvision" else 10
    return build_model(spec, num_classes=classes), default_input_shape(spec)
