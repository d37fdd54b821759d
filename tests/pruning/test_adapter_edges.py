"""Each silent Torch-Pruning failure mode is raised or handled by our adapter."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

from prunepilot.errors import GraphAnalysisError, PolicyError, PruningError
from prunepilot.models import build_model
from prunepilot.pruning import PruningPolicy, PruningSpace, adapter, apply_policy
from prunepilot.pruning.guard import Limits, bounded


@pytest.fixture()
def resnet20() -> tuple[nn.Module, torch.Tensor, PruningSpace]:
    model = build_model("resnet20", num_classes=10, in_channels=3).eval()
    x = torch.randn(2, 3, 32, 32)
    return model, x, PruningSpace.build(model, x)


def test_tiny_ratio_prunes_to_one_block_not_nothing(resnet20) -> None:
    # Torch-Pruning's MetaPruner silently prunes nothing for ratios >= 1 - 1/C.
    model, x, space = resnet20
    policy = PruningPolicy.uniform(space, 1e-4)
    assert all(c == 1 for c in policy.channels.values())
    pruned = apply_policy(model, policy, x, space=space)
    assert pruned(x).shape == (2, 10)
    assert space.macs(policy.channels) < space.base_macs / 100


def test_disagreeing_ratios_on_coupled_layers_are_an_error(resnet20) -> None:
    # Torch-Pruning silently gives coupled layers one ratio; we refuse.
    model, x, space = resnet20
    residual = max(space.groups, key=lambda g: len(g.modules))
    convs = [m for m in residual.modules if isinstance(dict(model.named_modules())[m], nn.Conv2d)]
    assert len(convs) >= 2
    with pytest.raises(PolicyError, match="coupled"):
        PruningPolicy.from_layer_ratios(space, {convs[0]: 0.5, convs[1]: 0.25})
    ok = PruningPolicy.from_layer_ratios(space, {convs[0]: 0.5, convs[1]: 0.5})
    assert ok.channels[residual.name] == round(residual.channels * 0.5)


def test_frozen_parameters_are_pruned_and_stay_frozen(resnet20) -> None:
    model, x, space = resnet20
    for p in model.parameters():
        p.requires_grad_(False)
    policy = PruningPolicy.uniform(space, 0.5)
    pruned = apply_policy(model, policy, x, space=space)
    assert all(not p.requires_grad for p in pruned.parameters())
    assert space.macs(policy.channels) < space.base_macs


def test_train_mode_restored_and_no_grad_context_ok(resnet20) -> None:
    model, x, space = resnet20
    model.train()
    with torch.no_grad():  # tracing needs autograd; the adapter turns it on
        pruned = apply_policy(model, PruningPolicy.uniform(space, 0.5), x, space=space)
    assert pruned.training and all(m.training for m in pruned.modules())
    assert model.training


def test_no_state_leaks_between_calls() -> None:
    # Torch-Pruning keeps mutable default lists; a second model must not see the first's modules.
    a = build_model("testing:tiny-convnet", num_classes=10, in_channels=3)
    b = build_model("testing:tiny-residual", num_classes=10, in_channels=3)
    x = torch.randn(1, 3, 16, 16)
    sa, sb = PruningSpace.build(a, x), PruningSpace.build(b, x)
    pa = apply_policy(a, PruningPolicy.uniform(sa, 0.5), x, space=sa)
    pb = apply_policy(b, PruningPolicy.uniform(sb, 0.5), x, space=sb)
    names_a = {n for n, _ in pa.named_modules()}
    assert {g.name for g in sb.groups} <= {n for n, _ in pb.named_modules()}
    assert names_a == {n for n, _ in a.named_modules()}
    assert PruningSpace.build(b, x).signature == sb.signature


def test_widths_are_asserted(resnet20, monkeypatch) -> None:
    model, x, space = resnet20
    real = adapter.select_keep
    # simulate Torch-Pruning dropping a channel we asked to keep
    monkeypatch.setattr(adapter, "select_keep", lambda s, k, b: real(s, k, b)[1:])
    with pytest.raises(PruningError, match="asked for"):
        apply_policy(model, PruningPolicy.uniform(space, 0.5), x, space=space)


def test_policy_for_another_model_lists_groups(resnet20) -> None:
    model, x, space = resnet20
    other = build_model("resnet32", num_classes=10, in_channels=3)
    other_space = PruningSpace.build(other, x)
    policy = PruningPolicy.uniform(other_space, 0.5)
    with pytest.raises(PolicyError, match="only in the policy"):
        apply_policy(model, policy, x, space=space)


def test_bad_policies(resnet20, tmp_path) -> None:
    _, _, space = resnet20
    with pytest.raises(PolicyError, match="unknown groups"):
        PruningPolicy.from_ratios(space, {"nope": 0.5})
    for bad in (0.0, 1.5, -0.1, float("nan")):
        with pytest.raises(PolicyError, match="outside"):
            PruningPolicy.from_ratios(space, {space.groups[0].name: bad})
    with pytest.raises(PolicyError, match="ratios for a model"):
        PruningPolicy.from_ratios(space, [0.5])
    path = tmp_path / "p.json"
    PruningPolicy.uniform(space, 0.5).save(path)
    assert PruningPolicy.load(path) == PruningPolicy.uniform(space, 0.5)
    path.write_text(path.read_text().replace('"format": "prunepilot.policy/v1"', '"format": "x/v9"'))
    with pytest.raises(PolicyError, match="format"):
        PruningPolicy.load(path)
    with pytest.raises(PolicyError, match="does not exist"):
        PruningPolicy.load(tmp_path / "missing.json")


def test_output_layer_never_pruned(resnet20) -> None:
    model, x, space = resnet20
    assert "fc" not in space.names  # its input side moves with the last group, its output never
    pruned = apply_policy(model, PruningPolicy.uniform(space, 0.3), x, space=space)
    assert pruned.fc.out_features == 10 and pruned.fc.in_features < model.fc.in_features
    assert pruned(x).shape[-1] == 10


def test_user_ignored_layers(resnet20) -> None:
    model, x, _ = resnet20
    first = PruningSpace.build(model, x).groups[0].name
    space = PruningSpace.build(model, x, ignored_layers=[first])
    assert first not in space.names
    with pytest.raises(PolicyError, match="not modules"):
        PruningSpace.build(model, x, ignored_layers=["no.such.layer"])


def test_graph_analysis_failure_is_clear() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ZeroDivisionError("division by zero")

    with pytest.raises(GraphAnalysisError, match="ZeroDivisionError"):
        PruningSpace.build(Broken(), torch.randn(1, 3, 8, 8))


def test_guard_stops_runaway_memory() -> None:
    import signal

    # A library (Ray Tune does) may leave its own SIGINT handler installed; the guard must still stop.
    previous = signal.signal(signal.SIGINT, lambda *_: None)
    hog = []
    try:
        with pytest.raises(GraphAnalysisError, match="memory grew"):
            with bounded("test block", Limits(seconds=30, memory_gb=0.2)):
                for _ in range(200):
                    hog.append(b"\x01" * (16 * 2**20))  # written, so the pages are resident
                    sum(range(20000))
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler  # restored, not reset
    finally:
        signal.signal(signal.SIGINT, previous)
        hog.clear()


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn-scale", "taylor", "hessian", "random"])
def test_importance_criteria(resnet20, criterion: str) -> None:
    model, x, space = resnet20
    batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))]
    policy = PruningPolicy.uniform(space, 0.5, importance=criterion)
    pruned = apply_policy(model, policy, x, space=space, calib_batches=batches)
    assert pruned(x).shape == (2, 10)


def test_l1_keeps_the_largest_channels() -> None:
    model = build_model("testing:tiny-convnet", num_classes=10, in_channels=3).eval()
    x = torch.randn(1, 3, 16, 16)
    space = PruningSpace.build(model, x)
    g = space.groups[0]
    conv = dict(model.named_modules())[g.name]
    with torch.no_grad():
        conv.weight.mul_(0.01)
        conv.weight[[1, 3]] *= 1000.0
    policy = PruningPolicy.from_widths(space, {g.name: 2})
    pruned = apply_policy(model, policy, x, space=space)
    kept = dict(pruned.named_modules())[g.name].weight
    assert torch.allclose(kept, conv.weight[[1, 3]])


def test_unknown_criterion(resnet20) -> None:
    _, _, space = resnet20
    with pytest.raises(PolicyError, match="unknown importance"):
        PruningPolicy.uniform(space, 0.5, importance="magic")


def test_pruning_frees_the_replaced_parameters_without_waiting_for_the_cycle_collector() -> None:
    # Torch-Pruning's graph is cyclic and holds the traced autograd nodes, which hold the
    # full-size parameters pruning replaced: dropped as is, a model copy's worth of memory waits
    # for gc (three copies alive at once when pruning a 600M-parameter model twice).
    model = build_model("resnet20", num_classes=10).eval()
    x = torch.zeros(1, 3, 32, 32)
    widths = PruningPolicy.uniform(PruningSpace.build(model, x), 0.5).channels
    gc.collect()
    gc.disable()
    try:
        refs = [weakref.ref(p) for p in model.parameters()]
        adapter.prune_to_widths(model, x, widths)
        current = {id(p) for p in model.parameters()}
        stale = [r for r in refs if r() is not None and id(r()) not in current]
        replaced = sum(1 for r in refs if r() is None)
    finally:
        gc.enable()
    assert replaced >= 60 and stale == []
