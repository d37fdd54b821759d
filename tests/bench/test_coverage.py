"""bench/coverage.py: one process per model, each classified ok / refused / failed, and its table.

The slow test runs the coverage check on a fixed sample of torchvision's families (residual,
squeeze-excite with depthwise convs, channel shuffle, convolutional head with concatenated fire
modules, grouped convs, inception concatenations, window attention) and needs every one to work.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from bench_helpers import load

#: One model per family whose pattern prunepilot supports; each must be ``ok``.
FAMILIES = [
    "resnet18",
    "mobilenet_v3_small",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
    "regnet_x_400mf",
    "googlenet",
    "swin_t",
]


def child_args(**overrides: Any) -> argparse.Namespace:
    values = {"seed": 0, "image": 224, "round_to": 8, "tolerance": 1e-4, "timeout": 600.0, "memory_gb": 8.0,
              "threads": 1}  # fmt: skip
    return argparse.Namespace(**{**values, **overrides})


def test_a_model_past_its_timeout_is_failed_with_the_step_it_was_in() -> None:
    row = load("coverage").run_model("resnet18", child_args(timeout=0.5))
    assert row["status"] == "failed" and row["failed_step"] == "build"
    assert row["error"] == "timeout: still in step 'build' after 0.5 s"


def test_the_table_carries_the_rows_numbers_and_the_verdict() -> None:
    cov = load("coverage")
    ok = {"model": "resnet18", "status": "ok", "groups": 12, "peak_rss_mib": 900.5, "wall_s": 9.0, "error": None,
          "seconds": {s: 0.5 for s in cov.STEPS}, "max_abs_diff": 1e-7}  # fmt: skip
    refused = {**ok, "model": "odd", "status": "refused", "groups": None, "seconds": {"build": 1.0}, "wall_s": 3.5,
               "max_abs_diff": None, "error": "GraphAnalysisError: ... at module 'x' (X)\nmore",
               "error_after_s": 2.5}  # fmt: skip
    rows = [ok, refused]
    doc = {"quick": True, "rows": rows, "summary": cov.summary(rows), "args": vars(child_args()),
           "machine": {"cpu": "cpu", "cores": 2, "platform": "linux"}, "versions": {"torch": "2"}}  # fmt: skip
    table = json.loads(json.dumps(cov.table(doc)))
    assert table["columns"] == cov.COLUMNS
    assert table["rows"][0] == ["resnet18", "ok", 12, 0.5, 0.5, 0.5, 0.5, 0.5, 1e-7, 900.5, None]
    assert table["rows"][1][:4] == ["odd", "refused", None, 1.0] and table["rows"][1][-1].endswith("(X)")
    notes = " ".join(table["notes"])
    assert "1 ok, 1 refused, 0 failed of 2: 50% working (target >= 95%, none failed: NOT met on this sample" in notes
    assert "slowest refusal 2.5 s from the call that refused to its error (target <= 30 s; 3.5 s wall" in notes
    assert "Machine (shared)" in notes
    assert table["title"].endswith("(quick)")


@pytest.mark.slow
def test_every_sampled_family_works_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "coverage.json"
    load("coverage").main(["--models", ",".join(FAMILIES), "--out", str(out), "--timeout", "300"])
    doc = json.loads(out.read_text())
    bad = {r["model"]: r["error"] for r in doc["rows"] if r["status"] != "ok"}
    assert not bad
    for row in doc["rows"]:
        assert row["groups"] > 0 and row["seconds"]["space"] < 30, row
        assert row["uniform_macs_kept"] < 0.8, row  # the uniform policy really pruned
