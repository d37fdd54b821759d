"""Export checks, latency against the search figure, and the lazy top-level import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from prunepilot.apply import EXPORT_FORMATS, SearchContext, export_and_check, parse_formats, search_context
from prunepilot.apply.latency import measure_latency
from prunepilot.errors import ConfigError
from prunepilot.models import build_model
from prunepilot.pruning import PruningPolicy, PruningSpace


def test_parse_formats_accepts_aliases_and_rejects_unknown_names() -> None:
    assert parse_formats("onnx, ts,pt2,onnx") == ("onnx", "torchscript", "exported-program")
    assert parse_formats("") == ()
    with pytest.raises(ConfigError, match=r"'tflite' is not supported; choose 'onnx', 'torchscript' or"):
        parse_formats(["tflite"])
    assert set(EXPORT_FORMATS) == {"onnx", "torchscript", "exported-program"}


class _DataDependent(nn.Module):
    """Branches on a tensor's value: torch.export refuses it, tracing bakes one branch in."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return y if float(y.sum()) > 0 else -y


def test_a_failing_export_is_reported_not_raised(tmp_path: Path) -> None:
    model = _DataDependent()
    with torch.no_grad():
        model.fc.weight.fill_(1.0)
        model.fc.bias.zero_()
    example, check_batch = torch.ones(2, 4), -torch.ones(4, 4)  # traced on one branch, checked on the other
    ts = export_and_check(model, "torchscript", tmp_path, example, check_batch)
    ep = export_and_check(model, "exported-program", tmp_path, example, check_batch)
    for check in (ts, ep):
        assert check.ok is False and check.error
    assert ts.max_abs_diff is not None and "differ by" in str(ts.error)  # the baked-in branch is wrong
    assert any("deprecated" in w for w in ts.warnings)


def test_an_onnx_export_that_fixes_the_batch_at_one_is_retried_at_the_check_batch(tmp_path: Path) -> None:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32)
    vit = vit.eval()
    example, check_batch = torch.randn(1, 3, 32, 32), torch.randn(3, 3, 32, 32)
    # the dynamo exporter traces ViT at batch 1 into a file whose input is fixed at batch 1
    check = export_and_check(vit, "onnx", tmp_path, example, check_batch)
    assert check.ok, check.error
    assert check.dynamic_batch is True and check.batch_size == 3
    assert check.max_abs_diff is not None and check.max_abs_diff <= 1e-4


def test_weights_over_the_single_file_limit_go_to_onnx_external_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prunepilot.apply import export

    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    assert not export.needs_external_data(model)
    monkeypatch.setattr(export, "ONNX_SINGLE_FILE_BYTES", 1024)  # the model has 15 KiB of weights
    assert export.needs_external_data(model)
    check = export_and_check(model, "onnx", tmp_path, torch.randn(2, 3, 4, 4), torch.randn(3, 3, 4, 4))
    assert check.ok, check.error
    assert (tmp_path / "model.onnx.data").stat().st_size >= 48 * 64 * 4  # the large weights left the protobuf


def _device(tmp_path: Path, **fields: object) -> str:
    path = tmp_path / "dev.yaml"
    path.write_text(yaml.safe_dump({"name": "test-dev", **fields}))
    return str(path)


def test_latency_is_compared_with_the_search_figure(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    model = build_model("testing:tiny-convnet", num_classes=3, in_channels=1).eval()
    space = PruningSpace.build(model, torch.zeros(1, 1, 8, 8))
    small = PruningPolicy.uniform(space, 0.5)
    from prunepilot.pruning import apply_policy

    pruned = apply_policy(model, small, torch.zeros(1, 1, 8, 8), space=space).eval()
    settings = {"threads": 1, "clock": "thread", "min_runs": 20, "min_seconds": 0.0}
    dev = _device(tmp_path, latency_model="torch-cpu", settings=settings)
    first = measure_latency(model, pruned, (1, 1, 8, 8), device=dev, batch_size=1, search=search_context(small))
    assert first["kind"] == "measured" and first["diff_pct"] is None and "no search-time latency" in first["note"]

    def with_search(ms: float, kind: str = "measured", lm: str = "torch-cpu") -> PruningPolicy:
        meta = {"metrics": {"latency_ms": ms, "latency_kind": kind, "latency_model": lm}}
        return small.model_copy(update={"metadata": meta})

    # a search figure 20x the first measurement: a microsecond model's timing noise (2x seen on a
    # busy machine) cannot bring the re-measurement within 10% of it
    search_ms = first["pruned_ms"] * 20
    far = measure_latency(model, pruned, (1, 1, 8, 8), device=dev, batch_size=1,
                          search=search_context(with_search(search_ms)))  # fmt: skip
    assert far["within_10pct"] is False and far["diff_pct"] < -50
    assert far["diff_pct"] == pytest.approx(100 * (far["pruned_ms"] / search_ms - 1))
    predicted = measure_latency(model, pruned, (1, 1, 8, 8), device=dev, batch_size=1,
                                search=search_context(with_search(1.0, "predicted", "lut")))  # fmt: skip
    assert predicted["within_10pct"] is None and "predicted" in predicted["note"]
    adapted = measure_latency(model, pruned, (1, 1, 8, 8), device=dev, batch_size=1,
                              search=search_context(with_search(1.0)), comparable=False)  # fmt: skip
    assert adapted["within_10pct"] is None and "--by-ratio" in adapted["note"]


def test_search_context_reads_the_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        yaml.safe_dump({"device": {"name": "local-cpu-cputime", "batch_size": 8}, "model": {"ignored_layers": ["fc"]}})
    )
    (run / "run.json").write_text('{"base": {"latency_ms": 4.0, "accuracy": 0.9}}')
    space = PruningSpace.build(
        build_model("testing:tiny-convnet", num_classes=3, in_channels=1), torch.zeros(1, 1, 8, 8)
    )
    meta = {"run": str(run), "metrics": {"latency_ms": 2.5, "latency_kind": "measured", "latency_model": "torch-cpu"}}
    ctx = search_context(PruningPolicy.uniform(space, 0.5, metadata=meta))
    assert (ctx.device, ctx.batch_size, ctx.ignored_layers, ctx.latency_ms) == ("local-cpu-cputime", 8, ("fc",), 2.5)
    assert ctx.base_latency_ms == 4.0
    gone = search_context(PruningPolicy.uniform(space, 0.5, metadata={**meta, "run": str(tmp_path / "moved")}))
    assert gone.device is None and gone.base_latency_ms is None and gone.latency_ms == 2.5


def test_drift_of_the_base_is_corrected_for(tmp_path: Path) -> None:
    """With deterministic figures (MACs): the machine 'got twice as fast' since the search."""
    model = build_model("testing:tiny-convnet", num_classes=3, in_channels=1).eval()
    space = PruningSpace.build(model, torch.zeros(1, 1, 8, 8))
    from prunepilot.pruning import apply_policy

    pruned = apply_policy(model, PruningPolicy.uniform(space, 0.5), torch.zeros(1, 1, 8, 8), space=space)
    dev = _device(tmp_path, latency_model="macs")
    now = measure_latency(model, pruned, (1, 1, 8, 8), device=dev, batch_size=1, search=SearchContext())
    then = SearchContext(latency_ms=2 * now["pruned_ms"], latency_kind="predicted", latency_model="macs",
                         base_latency_ms=2 * now["base_ms"])  # fmt: skip
    lat = measure_latency(model, pruned, (1, 1, 8, 8), device=dev, batch_size=1, search=then)
    assert lat["diff_pct"] == pytest.approx(-50.0) and lat["drift_pct"] == pytest.approx(-50.0)
    assert lat["diff_pct_drift_corrected"] == pytest.approx(0.0, abs=1e-9)
    assert lat["within_10pct"] is None  # predicted figures are reported, not judged


def test_import_prunepilot_is_light_and_load_pruned_is_lazy() -> None:
    code = (
        "import sys, prunepilot; assert 'torch' not in sys.modules, 'torch imported eagerly'; "
        "f = prunepilot.load_pruned; assert 'torch' in sys.modules; print(f.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "prunepilot.pruning.io"
    with pytest.raises(AttributeError):
        import prunepilot

        prunepilot.no_such_thing  # noqa: B018
