"""Issue 19: every bad input is refused before any work, naming the bad value and what is accepted;
a refused or failed search leaves nothing in the way of the next try and loses nothing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import ray
import yaml
from search_helpers import tiny_config

from prunepilot.errors import ConfigError
from prunepilot.hw_models.base import LatencyResult
from prunepilot.hw_models.proxies import MacsProxy
from prunepilot.hw_models.registry import register_latency_model
from prunepilot.search import driver, ray_backend
from prunepilot.search.config import budget_override, load_config, validate_config
from prunepilot.search.driver import FLOOR_MARGIN, check_budget_floor
from prunepilot.search.evaluator import Evaluator
from prunepilot.search.records import FailedTrial
from prunepilot.search.runner import run_search
from prunepilot.search.store import RunStore


@register_latency_model("test-measured-macs")
class _MeasuredMacs(MacsProxy):
    """A 'measured' latency model (it needs the built model) whose ms are its MACs: a latency that
    shrinks exactly as fast as the MACs, faster than any real device. Counts its measurements."""

    requires_model = True
    calls: ClassVar[list[int]] = []

    def measure_ms(self, model: Any, input_shape: Sequence[int], batch_size: int = 1) -> LatencyResult:
        type(self).calls.append(1)
        res = super().measure_ms(model, input_shape, batch_size)
        return LatencyResult(ms=res.ms, kind="measured", model_name=self.name)


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    monkeypatch.setattr(_MeasuredMacs, "calls", [])
    return _MeasuredMacs.calls


def _measured_config(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    return tiny_config(tmp_path, **{"device.latency_model": "test-measured-macs", "device.settings": {}, **changes})


# --- budget: finite and positive -----------------------------------------------------------------
@pytest.mark.parametrize("text", ["ms: .inf", "ms: inf", "ms: 1e400", "ms: 1.0e+400", "fraction: .nan"])
def test_non_finite_budget_is_refused(tmp_path: Path, text: str) -> None:
    cfg = tiny_config(tmp_path)
    del cfg["budget"]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg) + f"budget:\n  {text}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    field = text.split(":")[0]
    assert f"field 'budget.{field}'" in str(err.value) and "finite number" in str(err.value)


@pytest.mark.parametrize("text", ["1e400", "1e400ms", "infms", "nan%", "-inf"])
def test_non_finite_budget_flag_is_refused_naming_the_flag(text: str) -> None:
    with pytest.raises(ConfigError, match=f"--budget '{text}' is not understood; give finite milliseconds"):
        budget_override(text)


# --- names checked before Ray --------------------------------------------------------------------
def test_unknown_importance_is_refused_naming_the_criteria(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config(tiny_config(tmp_path, **{"evaluation.importance": "l7"}))
    msg = str(err.value)
    assert "field 'evaluation.importance'" in msg and "'l7'" in msg
    from prunepilot.pruning.adapter import IMPORTANCE_CRITERIA

    assert all(repr(name) in msg for name in IMPORTANCE_CRITERIA)  # every accepted criterion is named
    # an alias is accepted and kept as written
    assert validate_config(tiny_config(tmp_path, **{"evaluation.importance": "fisher"})).evaluation.importance == (
        "fisher"
    )


@pytest.mark.parametrize(
    "changes,needle,accepted",
    [
        ({"device.name": "toaster"}, "field 'device.name': unknown device 'toaster'", "'local-cpu'"),
        ({"device.latency_model": "rooflin"}, "field 'device.latency_model': unknown latency model 'rooflin'",
         "'roofline'"),
        ({"device.remeasure_with": "torch-gpu"}, "field 'device.remeasure_with': unknown latency model 'torch-gpu'",
         "'torch-cuda'"),
    ],
)  # fmt: skip
def test_unknown_device_or_latency_model_is_refused_by_validation(
    tmp_path: Path, changes: dict[str, Any], needle: str, accepted: str
) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config(tiny_config(tmp_path, **changes))
    assert needle in str(err.value) and accepted in str(err.value)


def test_device_error_comes_before_data_and_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import prunepilot.data
    import prunepilot.models

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("data or model built before the device was checked")

    monkeypatch.setattr(prunepilot.data, "build_data", never)
    monkeypatch.setattr(prunepilot.models, "build_model", never)
    monkeypatch.setattr(prunepilot.models, "load_model", never)
    cfg = validate_config(tiny_config(tmp_path, **{"device.settings": {"ms_per_unitt": 1.0}}))
    with pytest.raises(ConfigError, match="latency model 'macs' does not accept settings"):
        run_search(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# --- unknown fields list the accepted ones -------------------------------------------------------
@pytest.mark.parametrize(
    "dotted,needle,accepted",
    [
        ("evaluation.importanc", "unknown field 'evaluation.importanc' (did you mean 'importance'?)",
         "accepted fields of evaluation: importance, round_to, lower_bound, fit_points"),
        ("budgett", "unknown field 'budgett' (did you mean 'budget'?)",
         "accepted fields of the top level: name, seed, model, data, device, budget"),
        ("model.train.epochz", "unknown field 'model.train.epochz' (did you mean 'epochs'?)",
         "accepted fields of model.train: epochs, lr,"),
        ("ray.qqq", "unknown field 'ray.qqq';", "accepted fields of ray: address, num_cpus"),
    ],
)  # fmt: skip
def test_unknown_field_lists_the_accepted_fields(tmp_path: Path, dotted: str, needle: str, accepted: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config(tiny_config(tmp_path, **{dotted: 1}))
    assert needle in str(err.value) and accepted in str(err.value)


# --- the budget floor is checked before measuring ------------------------------------------------
def test_predicted_budget_below_the_floor_is_refused_before_pruning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pruned: list[int] = []
    prune = Evaluator.prune
    monkeypatch.setattr(Evaluator, "prune", lambda self, policy: pruned.append(1) or prune(self, policy))
    cfg = validate_config(tiny_config(tmp_path, budget={"ms": 0.001}))
    with pytest.raises(ConfigError) as err:
        run_search(cfg, tmp_path / "run", progress=False)
    msg = str(err.value)
    assert "budget.ms 0.001 is below the reachable minimum of" in msg
    assert "accepted: budget.ms >= " in msg and "budget.fraction from " in msg
    assert pruned == []  # the predicted floor needs no pruned model
    assert not ray.is_initialized()


def test_measured_fraction_below_the_macs_floor_is_refused_before_measuring(tmp_path: Path, measured) -> None:
    cfg = validate_config(_measured_config(tmp_path, budget={"fraction": 0.001}))
    with pytest.raises(ConfigError) as err:
        run_search(cfg, tmp_path / "run", progress=False)
    msg = str(err.value)
    assert "field 'budget.fraction': 0.001 is below what any policy can reach" in msg
    assert "accepted: budget.fraction from about" in msg
    assert measured == []


def test_measured_ms_budget_below_the_floor_is_refused_after_the_two_ends(tmp_path: Path, measured) -> None:
    cfg = validate_config(_measured_config(tmp_path, budget={"ms": 0.001}, **{"evaluation.fit_points": 6}))
    with pytest.raises(ConfigError, match="reachable minimum of"):
        run_search(cfg, tmp_path / "run", progress=False)
    assert len(measured) == 2  # the base and the lower bound, not the 6 fit points and the base metrics


def test_macs_floor_never_refuses_a_reachable_fraction(tmp_path: Path, measured) -> None:
    """With latency proportional to MACs (faster than any device shrinks) the reachable minimum
    is about the MACs share itself, well above the analytic floor."""
    ev = Evaluator(validate_config(_measured_config(tmp_path)))
    share = driver.lowest_macs_share(ev)
    base, lowest = ev.calibrate_fit()
    assert 0 < share < 1 and lowest.ms / base.ms == pytest.approx(share, rel=0.05)
    smallest = validate_config(_measured_config(tmp_path, budget={"fraction": lowest.ms / base.ms * 1.0001}))
    check_budget_floor(smallest, ev)  # no error: the smallest reachable fraction passes the analytic floor
    assert driver.resolve_budget(smallest, base.ms, lowest.ms) >= lowest.ms  # and the exact check
    below = validate_config(_measured_config(tmp_path, budget={"fraction": FLOOR_MARGIN * share * 0.99}))
    with pytest.raises(ConfigError, match="below what any policy can reach"):
        check_budget_floor(below, ev)


# --- a failed run leaves nothing in the way and loses nothing ------------------------------------
def test_refused_run_leaves_no_folder_and_the_same_run_dir_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "runs" / "r1"
    with pytest.raises(ConfigError, match="reachable minimum"):
        run_search(validate_config(tiny_config(tmp_path, budget={"ms": 0.001})), run, progress=False)
    assert not run.exists()

    def stop(cfg: Any) -> bool:
        assert (run / "config.yaml").is_file() and RunStore(run).read_info()["status"] == "running"
        raise RuntimeError("stopped before Ray")

    monkeypatch.setattr(ray_backend, "init_ray", stop)
    with pytest.raises(RuntimeError, match="stopped before Ray"):  # not "already holds a search"
        run_search(validate_config(tiny_config(tmp_path)), run, progress=False)
    assert not run.exists()  # nothing was evaluated: cleaned up again


def test_refused_run_keeps_what_the_folder_held(tmp_path: Path) -> None:
    run = tmp_path / "mine"
    run.mkdir()
    (run / "notes.txt").write_text("my notes")
    (run / "front.json").write_text("[]")  # the user's own file of a name a search writes
    with pytest.raises(ConfigError):
        run_search(validate_config(tiny_config(tmp_path, budget={"ms": 0.001})), run, progress=False)
    assert sorted(p.name for p in run.iterdir()) == ["front.json", "notes.txt"]
    assert (run / "notes.txt").read_text() == "my notes" and (run / "front.json").read_text() == "[]"


def test_failed_run_with_records_keeps_them_and_says_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"

    def crash(cfg: Any) -> bool:
        RunStore(run).append(FailedTrial(id="t1-0", trial="t1", config={}, error="boom", wall_time=0.0))
        raise RuntimeError("cluster went away")

    monkeypatch.setattr(ray_backend, "init_ray", crash)
    with pytest.raises(RuntimeError):
        run_search(validate_config(tiny_config(tmp_path)), run, progress=False)
    store = RunStore(run)
    assert [r.id for r in store.read()] == ["t1-0"] and (run / "config.yaml").is_file()
    info = store.read_info()
    assert info["status"] == "failed" and info["error"] == "RuntimeError: cluster went away"
    with pytest.raises(ConfigError, match="already holds a search; use --resume"):
        run_search(validate_config(tiny_config(tmp_path)), run, progress=False)
    assert [r.id for r in RunStore(run).read()] == ["t1-0"]


def test_reading_a_missing_run_folder_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a prunepilot run folder"):
        RunStore(tmp_path / "typo").read_config()
    assert not (tmp_path / "typo").exists()


def test_cli_refusal_is_one_line_and_leaves_no_run_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from prunepilot.cli import app

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path)))
    out = CliRunner().invoke(app, ["search", str(path), "--budget", "0.001ms", "--run-dir", str(tmp_path / "r")])
    assert out.exit_code == 2, out.output
    assert "reachable minimum" in out.output and "Traceback" not in out.output
    assert not (tmp_path / "r").exists()


def test_cli_depth_flag_sets_evaluation_depth(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from prunepilot.cli import app

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path)))
    args = ["search", str(path), "--strategy", "amc-ddpg", "--run-dir", str(tmp_path / "r"), "--backend", "local"]
    out = CliRunner().invoke(app, [*args, "--depth"])
    assert out.exit_code == 2, out.output
    assert "strategy 'amc-ddpg' searches widths only and cannot remove blocks" in " ".join(out.output.split())
    assert not (tmp_path / "r").exists()


def test_the_default_device_times_on_the_thread_cpu_clock() -> None:
    from prunepilot.apply.latency import DEFAULT_DEVICE
    from prunepilot.hw_models.devices import load_device
    from prunepilot.search.config import DeviceSection

    for name in (DeviceSection().name, DEFAULT_DEVICE):  # the search's default and apply's
        model = load_device(name).build()
        assert model.requires_model and model.protocol.clock == "thread" and model.protocol.threads == 1, name
