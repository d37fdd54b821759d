"""Typed records and the run store: today's wire format loads, re-measured figures survive,
`prunepilot pareto` keeps them, and a point measured over the budget is never exported."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from prunepilot.pruning import PruningPolicy
from prunepilot.search.pareto import best_within_budget
from prunepilot.search.records import Candidate, FailedTrial, Measurement, Metrics, record_from_json
from prunepilot.search.store import RunStore

POLICY = {
    "format": "prunepilot.policy/v1",
    "signature": "0123456789abcdef",
    "keep_ratios": {"conv1": 0.5, "layer1": 0.75},
    "channels": {"conv1": 4, "layer1": 12},
    "group_channels": {"conv1": 8, "layer1": 16},
    "round_to": 1,
    "importance": "l1",
    "metadata": {},
}


def today_record(rid: str = "c1c2d_00003-0000", acc: float = 0.91, ms: float = 2.4, budget: float = 2.5) -> dict:
    """One line of candidates.jsonl exactly as the searches before typed records wrote it."""
    return {
        "id": rid,
        "status": "ok",
        "strategy": "random",
        "trial": rid.rsplit("-", 1)[0],
        "index": 0,
        "seed": 3,
        "budget_ms": budget,
        "policy": POLICY,
        "metrics": {
            "accuracy": acc,
            "latency_ms": ms,
            "latency_kind": "predicted",
            "latency_model": "macs",
            "macs": 78656,
            "params": 8610,
            "eval_seconds": 0.07,
            "latency_cv": None,
            "within_budget": ms <= budget,
        },
        "cached": False,
        "node": "host",
        "node_id": None,
        "pid": 123,
        "wall_time": 1.7e9,
        "versions": {"prunepilot": "0.1.0", "torch": "2.5", "torch_pruning": "1.5", "python": "3.10"},
        "projection_scale": 0.8,
    }


def test_todays_wire_format_loads_and_round_trips() -> None:
    rec = today_record()
    cand = Candidate.from_json(rec)
    assert cand.metrics == Metrics.from_json(rec["metrics"]) and cand.metrics.accuracy == 0.91
    assert isinstance(cand.policy, PruningPolicy) and cand.policy.channels == {"conv1": 4, "layer1": 12}
    assert cand.extra == {"projection_scale": 0.8} and cand.measured is None and cand.within_budget is True
    assert cand.to_json() == rec  # the wire format is unchanged
    failed = {"id": "t-failed-0", "status": "failed", "trial": "t", "config": {"g000": 0.5}, "error": "boom",
              "wall_time": 1.0}  # fmt: skip
    assert isinstance(record_from_json(failed), FailedTrial) and record_from_json(failed).to_json() == failed


def test_measured_figure_decides_the_budget() -> None:
    cand = Candidate.from_json(today_record(ms=2.0, budget=2.5))
    over = cand.with_measurement(Measurement(3.1, 0.01, "torch-cpu"))
    assert cand.within_budget is True and over.within_budget is False and over.budget_latency_ms == 3.1
    wire = over.to_json()["metrics"]
    assert wire["latency_ms"] == 2.0 and wire["measured_latency_ms"] == 3.1 and wire["within_budget"] is False
    assert Candidate.from_json(over.to_json()) == over
    assert best_within_budget([over], 2.5) is None and best_within_budget([cand], 2.5) is cand


def test_candidate_new_guards_its_fields() -> None:
    base = Candidate.from_json(today_record())
    kwargs: dict[str, Any] = dict(trial="t", index=2, strategy="ppo", seed=0, policy=base.policy, metrics=base.metrics,
                                  budget_ms=2.5, cached=False)  # fmt: skip
    made = Candidate.new(extra={"episode": 1, "cached": True}, **kwargs)
    assert made.id == "t-0002" and made.cached and made.extra == {"episode": 1} and made.versions["torch"]
    with pytest.raises(ValueError, match="trial"):
        Candidate.new(extra={"trial": "x"}, **kwargs)


def old_run_folder(tmp_path: Path) -> Path:
    """A run folder as searches before RunStore owned re-measurements left it: the measured
    figure only in front.json."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "old", "device": {"name": "local-cpu"}}))
    base = {"accuracy": 0.95, "latency_ms": 4.0, "latency_kind": "predicted", "latency_model": "macs",
            "macs": 100000, "params": 9000, "eval_seconds": 0.1, "latency_cv": None}  # fmt: skip
    (run / "run.json").write_text(json.dumps({"status": "finished", "budget_ms": 2.5, "base": base}))
    fast = today_record("t_00000-0000", acc=0.80, ms=1.5)  # within the budget either way
    tricky = today_record("t_00001-0000", acc=0.90, ms=2.0)  # predicted within, measured over
    slow = today_record("t_00002-0000", acc=0.93, ms=3.5)
    (run / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (fast, tricky, slow)))
    front = copy.deepcopy([fast, tricky, slow])
    front[1]["metrics"].update(measured_latency_ms=3.0, measured_latency_cv=0.02, measured_with="torch-cpu")
    (run / "front.json").write_text(json.dumps(front))
    return run


def test_old_folder_measurements_survive_a_new_front(tmp_path: Path) -> None:
    store = RunStore(old_run_folder(tmp_path))
    ok = store.ok()
    assert [c.measured.latency_ms if c.measured else None for c in ok] == [None, 3.0, None]
    store.write_front(ok[:1])  # a front without the re-measured candidate
    assert json.loads((store.dir / "remeasured.json").read_text())["t_00001-0000"]["measured_latency_ms"] == 3.0
    assert RunStore(store.dir).ok()[1].measured == Measurement(3.0, 0.02, "torch-cpu")
    assert store.base_metrics() is not None and store.budget_ms() == 2.5 and store.base_latency_ms() == 4.0


def test_torn_line_is_skipped_and_the_next_record_kept(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    store.append(Candidate.from_json(today_record("a-0000")))
    with open(store.candidates_path, "a") as fh:
        fh.write('{"id": "b-0000", "status": "o')  # killed mid-write
    again = RunStore(tmp_path / "run")
    assert [r.id for r in again.read()] == ["a-0000"]
    assert again.append(Candidate.from_json(today_record("c-0000")))
    assert not again.append(Candidate.from_json(today_record("c-0000")))  # one id, one record
    assert [r.id for r in RunStore(tmp_path / "run").read()] == ["a-0000", "c-0000"]


def test_pareto_cli_keeps_measured_figures_and_never_exports_a_point_measured_over_budget(tmp_path: Path) -> None:
    from prunepilot.cli import app

    run = old_run_folder(tmp_path)
    out = tmp_path / "policy.json"
    result = CliRunner().invoke(app, ["pareto", str(run), "--no-plots", "--export", str(out)])
    assert result.exit_code == 0, result.output
    front = {c["id"]: c for c in json.loads((run / "front.json").read_text())}
    assert front["t_00001-0000"]["metrics"]["measured_latency_ms"] == 3.0  # pareto rewrote front.json and kept it
    assert front["t_00001-0000"]["metrics"]["within_budget"] is False
    exported = PruningPolicy.load(out)
    assert exported.metadata["candidate"] == "t_00000-0000"  # not the more accurate one measured over 2.5 ms
    assert exported.metadata["run"] == str(run) and exported.metadata["metrics"]["within_budget"] is True
    # Nothing fits by its measured figure: the export is refused, not given the predicted one.
    result = CliRunner().invoke(app, ["pareto", str(run), "--no-plots", "--budget", "1.0", "--export", str(out)])
    assert result.exit_code != 0 and "no candidate is within 1.0 ms" in result.output


def test_doctests() -> None:
    import doctest

    from prunepilot.search import records

    result = doctest.testmod(records)
    assert result.attempted > 0 and result.failed == 0
