"""The local backend (``prunepilot.search.run(..., backend="local")``): the Ray backend's search
in one process, serially, without Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from search_helpers import tiny_config

import prunepilot.search
from prunepilot.errors import ConfigError
from prunepilot.search import evaluator as evaluator_module
from prunepilot.search.records import Candidate, FailedTrial
from prunepilot.search.store import RunStore

HERE = Path(__file__).resolve().parent


def _comparable(c: Candidate) -> tuple[Any, ...]:
    """What both backends must agree on: the policy, the metrics up to timing, the strategy's fields."""
    m = c.metrics
    return (c.policy.key(), c.policy.keep_ratios, m.accuracy, m.latency_ms, m.macs, m.params, m.latency_kind,
            c.strategy, c.seed, c.index, c.budget_ms, sorted(c.extra.items()))  # fmt: skip


def _artefacts(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name != "tune")


@pytest.mark.slow
@pytest.mark.parametrize(
    "strategy,changes",
    [
        ("uniform", {}),
        # One trial at a time, so Tune's OptunaSearch is told every result before the next ask.
        ("optuna-tpe", {"ray.max_concurrent": 1, "strategy.settings": {"n_startup_trials": 3}}),
    ],
)
def test_local_backend_finds_what_the_ray_backend_finds(tmp_path: Path, strategy: str, changes: dict) -> None:
    import ray

    cfg = tiny_config(tmp_path, **{"strategy.name": strategy, **changes})
    on_ray = prunepilot.search.run(cfg, backend="ray", run_dir=tmp_path / "ray", progress=False)
    assert not ray.is_initialized()
    local = prunepilot.search.run(cfg, backend="local", run_dir=tmp_path / "local", progress=False)
    order = (lambda c: c.policy.key()) if strategy == "uniform" else (lambda c: c.wall_time)  # Optuna: ask order
    assert [_comparable(c) for c in sorted(local.candidates, key=order)] == [
        _comparable(c) for c in sorted(on_ray.candidates, key=order)
    ]
    assert [_comparable(c) for c in local.front] == [_comparable(c) for c in on_ray.front]
    assert local.budget_ms == on_ray.budget_ms and local.base.accuracy == on_ray.base.accuracy
    assert _artefacts(tmp_path / "local") == _artefacts(tmp_path / "ray")  # the same run folder, less tune/
    assert not (tmp_path / "local" / "tune").exists()
    base_ray, base_local = RunStore(tmp_path / "ray").baseline(), RunStore(tmp_path / "local").baseline()
    assert [_comparable(c) for c in base_local] == [_comparable(c) for c in base_ray]
    assert RunStore(tmp_path / "local").read_info()["backend"] == "local"


def test_local_backend_resumes_without_losing_or_repeating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(tmp_path, **{"strategy.evaluations": 8, "evaluation.uniform_baseline": 0})
    run = tmp_path / "run"
    evaluate = evaluator_module.Evaluator.evaluate
    calls: list[int] = []

    def interrupted(self: Any, policy: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 5:  # the base model, then three candidates, then the user presses Ctrl-C
            raise KeyboardInterrupt
        return evaluate(self, policy, **kwargs)

    monkeypatch.setattr(evaluator_module.Evaluator, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prunepilot.search.run(cfg, backend="local", run_dir=run, progress=False)
    before = RunStore(run).ok()
    assert len(before) == 3 and RunStore(run).read_info()["status"] == "failed"

    monkeypatch.setattr(evaluator_module.Evaluator, "evaluate", evaluate)
    evaluator_module._EVALUATORS.clear()  # as in a new process: only the run folder remembers
    scored: list[int] = []
    score = evaluator_module.Evaluator.score  # once per evaluation, sliced or pruned
    monkeypatch.setattr(
        evaluator_module.Evaluator, "score", lambda self, *a, **k: scored.append(1) or score(self, *a, **k)
    )
    result = prunepilot.search.run(cfg, backend="local", run_dir=run, resume=True, progress=False)
    after = RunStore(run).ok()
    assert [c.id for c in after] == [f"local_{i:05d}-0000" for i in range(8)]  # nothing lost, nothing twice
    assert [c.id for c in after[:3]] == [c.id for c in before] and after[:3] == before
    assert len(result.candidates) == 8 and RunStore(run).read_info()["status"] == "finished"
    assert len(scored) == 5  # only the five candidates never stored were evaluated
    fresh = RunStore(tmp_path / "fresh")
    evaluator_module._EVALUATORS.clear()
    prunepilot.search.run(cfg, backend="local", run_dir=fresh.dir, progress=False)
    assert [_comparable(c) for c in fresh.ok()] == [_comparable(c) for c in after]  # as if never interrupted


def test_local_backend_records_a_failing_trial_and_goes_on(tmp_path: Path) -> None:
    # tiny-fragile fails when its first group has 5 channels: uniform 0.625 of 8 channels.
    cfg = tiny_config(
        tmp_path,
        **{"model.spec": "testing:tiny-fragile?fail_width=5", "strategy.name": "uniform",
           "strategy.settings": {"ratios": [0.25, 0.625, 1.0]}},
    )  # fmt: skip
    result = prunepilot.search.run(cfg, backend="local", run_dir=tmp_path / "run", progress=False)
    failed = [r for r in RunStore(tmp_path / "run").read() if isinstance(r, FailedTrial)]
    assert [f.id for f in failed] == ["local_00001-failed-0"] and "fails at" in failed[0].error
    assert failed[0].config == {"uniform_ratio": 0.625}
    assert sorted(c.extra["uniform_ratio"] for c in result.candidates) == [0.25, 1.0] and result.failed_trials == 1


def test_time_limit_ends_the_search_at_a_trial_boundary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock that moves 10 s per trial: a 25 s limit lets exactly three trials run (0, 10, 20 s
    # at their starts; the limit is seen after the third), of the 50 asked for.
    from prunepilot.search import local_backend

    now = [0.0]
    monkeypatch.setattr(local_backend.time, "monotonic", lambda: now[0])
    real = local_backend.run_trial

    def slow_trial(*args: Any, **kwargs: Any) -> Any:
        now[0] += 10.0
        return real(*args, **kwargs)

    monkeypatch.setattr(local_backend, "run_trial", slow_trial)
    cfg = tiny_config(tmp_path, **{"strategy.name": "random", "strategy.evaluations": 50,
                                   "strategy.time_limit_s": 25, "evaluation.uniform_baseline": 0})  # fmt: skip
    result = prunepilot.search.run(cfg, backend="local", run_dir=tmp_path / "run", progress=False)
    assert len(result.candidates) == 3
    assert RunStore(tmp_path / "run").read_info()["status"] == "finished"


def test_time_limit_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="time_limit_s"):
        prunepilot.search.run(tiny_config(tmp_path, **{"strategy.time_limit_s": 0}), backend="local",
                              run_dir=tmp_path / "run")  # fmt: skip


def test_local_backend_imports_no_ray(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, **{"strategy.name": "optuna-nsga2", "strategy.evaluations": 3,
                                   "evaluation.uniform_baseline": 0})  # fmt: skip
    script = (
        "import json, sys; import prunepilot.search as s; "
        f"r = s.run(json.loads(sys.argv[1]), backend='local', run_dir={str(tmp_path / 'run')!r}, progress=False); "
        "assert len(r.candidates) == 3, r; "
        "print('ray imported' if 'ray' in sys.modules else 'no ray')"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cfg)], capture_output=True, text=True, timeout=600, cwd=HERE
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("no ray")


def test_unknown_backend_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown search backend 'dask'; choose"):
        prunepilot.search.run(tiny_config(tmp_path), backend="dask", run_dir=tmp_path / "run")  # type: ignore[arg-type]
    assert not (tmp_path / "run").exists()


def test_cli_search_with_the_local_backend_then_pareto(tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from prunepilot.cli import app

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, **{"strategy.evaluations": 3})))
    run = tmp_path / "run"
    out = CliRunner().invoke(app, ["search", str(path), "--backend", "local", "--run-dir", str(run), "--quiet"])
    assert out.exit_code == 0, out.output
    assert "3 candidates" in out.output and RunStore(run).read_info()["backend"] == "local"
    out = CliRunner().invoke(app, ["pareto", str(run), "--no-plots", "--export", str(tmp_path / "p.json")])
    assert out.exit_code == 0, out.output
    assert [c.id for c in RunStore(run).read_front()] == [c["id"] for c in json.loads((run / "front.json").read_text())]
    out = CliRunner().invoke(app, ["search", str(path), "--backend", "dask", "--run-dir", str(tmp_path / "r2")])
    assert out.exit_code != 0 and "--backend 'dask'" in out.output and not (tmp_path / "r2").exists()


def test_remeasured_front_points_survive_pareto_and_decide_the_export(tmp_path: Path) -> None:
    """A real run: the front's predicted (MACs) latencies re-measured with torch-cpu land in
    remeasured.json and front.json, `prunepilot pareto` keeps them, and the export is judged on them."""
    from typer.testing import CliRunner

    from prunepilot.cli import app
    from prunepilot.search.pareto import budget_latency

    cfg = tiny_config(
        tmp_path,
        **{"strategy.name": "uniform", "device.remeasure_with": "torch-cpu", "evaluation.remeasure_top": 2},
    )
    run = tmp_path / "run"
    result = prunepilot.search.run(cfg, backend="local", run_dir=run, progress=False)
    measured = {c.id: c.measured for c in result.front if c.measured is not None}
    # the 2 most accurate front points (remeasure_top), then the best candidate within the budget, in
    # turn while each is measured over it (issue 15): those are within the budget on their predicted figure
    top = {c.id for c in sorted(result.front, key=lambda c: -c.metrics.accuracy)[:2]}
    assert top <= measured.keys() and json.loads((run / "remeasured.json").read_text()).keys() == measured.keys()
    assert all(c.metrics.latency_ms <= result.budget_ms for c in result.front if c.id in measured.keys() - top)
    out = CliRunner().invoke(app, ["pareto", str(run), "--no-plots"])
    assert out.exit_code == 0, out.output
    front = {c["id"]: c["metrics"] for c in json.loads((run / "front.json").read_text())}
    for cid, m in measured.items():
        assert front[cid]["measured_latency_ms"] == m.latency_ms and front[cid]["measured_with"] == m.latency_model
    # A budget between a point's predicted and measured figure: that point is not exported on the predicted one.
    point = next(c for c in result.front if c.measured is not None and c.measured.latency_ms > c.metrics.latency_ms)
    budget = (point.metrics.latency_ms + point.measured.latency_ms) / 2  # type: ignore[union-attr]
    export = tmp_path / "p.json"
    out = CliRunner().invoke(app, ["pareto", str(run), "--no-plots", "--budget", str(budget), "--export", str(export)])
    if out.exit_code == 0:
        chosen = json.loads(export.read_text())["metadata"]
        assert chosen["candidate"] != point.id and budget_latency({"metrics": chosen["metrics"]}) <= budget
    else:
        assert "no candidate is within" in out.output
