"""bench/server_load.py's table: its rows are the JSON's own numbers (BENCHMARKS.md is generated from it)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "server_load.py"


@pytest.fixture(scope="module")
def server_load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_server_load", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def phase(name: str, hostile: int, ok: int, failed: dict[str, int], p95: float | None, answers: dict[str, int]) -> Any:
    return {"phase": name, "good_clients": 4, "hostile_clients": hostile, "good_requests": ok + sum(failed.values()),
            "good_ok": ok, "good_p50_ms": 10.0, "good_p95_ms": p95, "good_failures": failed,
            "hostile_answers": answers}  # fmt: skip


def test_load_table_rows_are_the_records_numbers(server_load: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    phases = [
        phase("baseline", 0, 100, {}, 20.0, {}),
        phase("slow-headers", 8, 90, {}, 30.0, {"408": 16}),
        phase("long-running", 8, 30, {"503": 10}, 2000.0, {"422": 12, "503": 3}),
    ]
    record = {
        "benchmark": "server_load",
        "args": {"good": 4, "hostile": 8, "seconds": 6.0},
        "limits": {
            "request_timeout_s": 5.0,
            "header_timeout_s": 2.0,
            "measure_timeout_s": 2.0,
            "max_connections": 16,
        },  # fmt: skip
        "model_bytes": 3342,
        "machine": {"cpu": "AMD EPYC", "cores": 2, "platform": "Linux-x"},
        "versions": {"python": "3.11.7", "torch": "2.14.1", "onnxruntime": "1.32.0"},
        "phases": phases,
    }
    table = json.loads(json.dumps(server_load.load_table(record)))
    assert table["columns"] == server_load.COLUMNS
    assert table["rows"] == [
        ["baseline", 4, 0, 100, 100.0, 10.0, 20.0, "-", 0, "-"],
        ["slow-headers", 4, 8, 90, 100.0, 10.0, 30.0, "-", 16, "408: 16"],
        ["long-running", 4, 8, 40, 75.0, 10.0, 2000.0, "503: 10", 15, "422: 12, 503: 3"],
    ]
    notes = "\n".join(table["notes"])
    assert "slow-headers 100% ok, p95 x1.5; long-running 75% ok, p95 x100.0." in notes
    assert "whole-request deadline 5 s, headers 2 s, measurement limit 2 s, 16 connections" in notes
    assert "Latency: measured" in notes and "Machine (shared): AMD EPYC, 2 cores" in notes and "torch 2.14.1" in notes
    server_load.print_table(table)
    assert "long-running" in capsys.readouterr().out


def test_a_failure_reads_as_its_status(server_load: ModuleType) -> None:
    assert server_load._status_of("device server http://x answered 503: busy") == "503"
    assert server_load._status_of("cannot reach device server http://x (reset)") == "unreachable"
