"""Random policies on torchvision and zoo models -> apply -> ONNX / TorchScript / torch.export,
each matching eager within 1e-4 -> load_pruned reproduces the applied model's outputs.

The dynamo ONNX exporter (torch's default) takes 10-20 s per model on a loaded 2-core machine,
so the fast set runs it on resnet18 and resnet20 and uses the legacy exporter elsewhere; the
dynamo runs of the other two torchvision models are marked slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import prunepilot
from prunepilot.apply import ApplyConfig, apply_to_model
from prunepilot.pruning import PruningSpace

ALL = ("onnx", "torchscript", "exported-program")
BOTH = ("onnx", "torchscript")
SLOW = pytest.mark.slow
CASES = [
    pytest.param("torchvision:resnet18", (1, 3, 64, 64), ALL, "dynamo", id="resnet18-dynamo"),
    pytest.param("torchvision:mobilenet_v2", (1, 3, 64, 64), BOTH, "legacy", id="mobilenet_v2-legacy"),
    pytest.param("torchvision:efficientnet_b0", (1, 3, 64, 64), BOTH, "legacy", id="efficientnet_b0-legacy"),
    pytest.param("torchvision:mobilenet_v2", (1, 3, 64, 64), ("onnx",), "dynamo", id="mobilenet_v2-dynamo", marks=SLOW),
    pytest.param("torchvision:efficientnet_b0", (1, 3, 64, 64), ALL, "dynamo", id="efficientnet_b0-dynamo", marks=SLOW),
    pytest.param("resnet20", (1, 3, 32, 32), ALL, "dynamo", id="zoo-resnet20-dynamo"),
    pytest.param("mobilenetv2", (1, 3, 32, 32), BOTH, "legacy", id="zoo-mobilenetv2-legacy"),
    pytest.param("vgg11s", (1, 3, 32, 32), BOTH, "legacy", id="zoo-vgg11s-legacy"),
    pytest.param("simplecnn", (1, 1, 28, 28), BOTH, "legacy", id="zoo-simplecnn-legacy"),
]


@pytest.mark.parametrize(("spec", "shape", "formats", "exporter"), CASES)
def test_random_policy_applies_exports_and_reloads(
    spec: str, shape: tuple[int, ...], formats: tuple[str, ...], exporter: str, make_case, tmp_path: Path
) -> None:
    _model, ckpt, policy_path, policy = make_case(spec, shape, seed=len(spec))
    out = tmp_path / "out"
    cfg = ApplyConfig(
        policy=policy_path,
        model=spec,
        checkpoint=ckpt,
        out=out,
        input_shape=shape,
        in_channels=shape[1],
        export=formats,
        onnx_exporter=exporter,
        measure_latency=False,
    )
    result = apply_to_model(cfg)

    assert result.policy.channels == policy.channels and result.report["policy_match"] == "signature"
    assert result.report["params"]["after"] < result.report["params"]["before"]
    checks = {c["format"]: c for c in result.report["exports"]}
    assert set(checks) == set(formats)
    for fmt, check in checks.items():
        assert check["ok"], (fmt, check["error"])
        assert check["max_abs_diff"] <= 1e-4 and check["tolerance"] == 1e-4
        assert check["max_abs_output"] > 1e-2, "degenerate outputs would make the check meaningless"
        assert check["dynamic_batch"] and check["batch_size"] == 4
        assert Path(check["path"]).is_file()
    # the applied model really has the policy's widths
    pruned_space = PruningSpace.build(result.model, torch.zeros(shape))
    assert {g.name: g.channels for g in pruned_space.groups} == policy.channels
    # load_pruned rebuilds it from the spec without pickle and reproduces its outputs
    reloaded = prunepilot.load_pruned(out).eval()
    x = torch.randn(3, *shape[1:])
    with torch.no_grad():
        assert torch.allclose(reloaded(x), result.model(x), atol=1e-6)
    assert (out / "report.json").is_file() and (out / "apply.json").is_file()
