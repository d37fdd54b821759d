"""bn-recal without surgery: slicing a once-reordered copy scores as pruning does (issue #15)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from search_helpers import tiny_config
from torch import nn

import prunepilot.search.evaluator as evaluator_module
from prunepilot.models import build_model
from prunepilot.pruning import PruningPolicy, PruningSpace, adapter, apply_policy, prune_and_recalibrate
from prunepilot.search.config import validate_config
from prunepilot.search.evaluator import Evaluator
from prunepilot.search.sliced import SlicedScorer
from prunepilot.training import evaluate_accuracy

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        models = pytest.importorskip("torchvision.models")
        return getattr(models, name)(num_classes=10)  # type: ignore[no-any-return]

    return build


# (name, builder, input shape): the zoo's ResNet-20 and MobileNetV2, torchvision's ResNet-18 and MobileNetV2
MODELS: list[tuple[str, Callable[[], nn.Module], tuple[int, ...]]] = [
    ("resnet20", lambda: build_model("resnet20", num_classes=10, in_channels=3), (3, 16, 16)),
    ("mobilenetv2", lambda: build_model("mobilenetv2", num_classes=10, in_channels=3), (3, 16, 16)),
    ("torchvision:resnet18", _torchvision("resnet18"), (3, 32, 32)),
    ("torchvision:mobilenet_v2", _torchvision("mobilenet_v2"), (3, 32, 32)),
]


def _randomised(model: nn.Module) -> nn.Module:
    """Random BN statistics and affines (so batch norm is not the identity), eval mode."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model.eval()


def _batches(shape: tuple[int, ...], n: int, size: int, seed: int, classes: int = 10) -> Batches:
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, *shape, generator=gen), torch.randint(0, classes, (size,), generator=gen)) for _ in range(n)
    ]


def _policies(space: PruningSpace, n: int, seed: int = 0) -> list[PruningPolicy]:
    gen = torch.Generator().manual_seed(seed)
    groups = len(space.groups)
    return [
        PruningPolicy.from_ratios(space, (0.2 + 0.8 * torch.rand(groups, generator=gen)).tolist()) for _ in range(n)
    ]


@pytest.mark.parametrize(("name", "build", "shape"), MODELS, ids=[m[0] for m in MODELS])
def test_sliced_outputs_equal_apply_policy_before_and_after_recalibration(
    name: str, build: Callable[[], nn.Module], shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    model = _randomised(build())
    example = torch.zeros(1, *shape)
    space = PruningSpace.build(model, example)
    calib, x = _batches(shape, 2, 16, seed=1), torch.randn(4, *shape)
    scorer, reason = SlicedScorer.try_build(model, example, space, calib, calib)
    assert reason is None and scorer is not None
    sup = scorer.supernet()
    policies = _policies(space, 3)
    assert all(p.channels != space.full_widths() for p in policies)

    def max_diff(pruned: nn.Module, widths: dict[str, int]) -> float:
        with torch.no_grad():
            with sup.at(widths):
                got = sup(x)
            ref = pruned(x)
        assert got.shape == ref.shape and float(ref.abs().max()) > 0.01  # not a trivial output
        return float((got - ref).abs().max())

    # the base model's statistics (no recalibration yet): the supernet at the widths is the pruned model
    for policy in policies:
        assert max_diff(apply_policy(model, policy, example, space=space).eval(), policy.channels) < 1e-4
    # both recalibrated on the same batches
    for policy in policies:
        pruned = prune_and_recalibrate(model, policy, example, space=space, calib_batches=calib)
        sup.recalibrate(policy.channels, calib)
        assert max_diff(pruned, policy.channels) < 1e-4


def test_sliced_accuracy_equals_pruned_and_does_not_depend_on_the_order() -> None:
    shape = (3, 16, 16)
    torch.manual_seed(0)
    model = _randomised(build_model("resnet20", num_classes=10, in_channels=3))
    example = torch.zeros(1, *shape)
    space = PruningSpace.build(model, example)
    calib, val = _batches(shape, 2, 16, seed=1), _batches(shape, 3, 32, seed=2)
    scorer = SlicedScorer(model, example, space, calib, val)
    a, b = _policies(space, 2, seed=3)
    sup = scorer.supernet()

    def stats() -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in sup.model.state_dict().items() if "running" in k}

    first = scorer.accuracy(a)
    after_a = stats()
    scorer.accuracy(b)
    assert any(not torch.equal(after_a[k], v) for k, v in stats().items())  # B moved the shared statistics
    assert scorer.accuracy(a) == first
    assert all(torch.equal(after_a[k], v) for k, v in stats().items())  # and A's recalibration restored them
    for policy in (a, b):
        pruned = prune_and_recalibrate(model, policy, example, space=space, calib_batches=calib)
        assert scorer.accuracy(policy) == evaluate_accuracy(pruned, val)


# --- wired into the evaluator ------------------------------------------------------------------


def _evaluator(tmp_path: Path, **changes: Any) -> Evaluator:
    """The tiny search's evaluator, scoring by bn-recal unless ``evaluation.protocol`` is given."""
    return Evaluator(validate_config(tiny_config(tmp_path, **{"evaluation.protocol": "bn-recal", **changes})))


def _no_pruning(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pruned a candidate")

    for module, name in [
        (evaluator_module, "prune_and_recalibrate"),
        (evaluator_module, "apply_policy"),
        (adapter, "prune_to_widths"),  # Torch-Pruning's surgery, whoever calls it
    ]:
        monkeypatch.setattr(module, name, refuse)


@pytest.mark.parametrize(
    "bn_batches, protocol", [(2, "bn-recal"), (0, "bn-recal"), (2, "head-refit"), (0, "head-refit")]
)
def test_evaluator_slice_and_prune_give_the_same_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bn_batches: int, protocol: str
) -> None:
    common = {"evaluation.bn_batches": bn_batches, "evaluation.protocol": protocol}
    sliced = _evaluator(tmp_path, **common)
    pruned = _evaluator(tmp_path, **common, **{"evaluation.scoring": "prune"})
    assert (sliced.scoring_path, sliced.scoring_fallback_reason) == ("slice", None)
    assert (pruned.scoring_path, pruned.scoring_fallback_reason) == ("prune", None)
    gen = torch.Generator().manual_seed(0)
    policies = [sliced.make_policy((0.25 + 0.75 * torch.rand(4, generator=gen)).tolist()) for _ in range(4)]
    policies.append(PruningPolicy.uniform(sliced.space, 1.0))  # the base, as base_metrics asks for it
    expected = [pruned.evaluate(p) for p in policies]
    recal_only = [_evaluator(tmp_path, **{**common, "evaluation.protocol": "bn-recal"}).evaluate(p) for p in policies]
    _no_pruning(monkeypatch)  # the latency model (macs) is predicted: no surgery at all per candidate
    got = [sliced.evaluate(p) for p in policies]
    for m_slice, m_prune in zip(got, expected, strict=True):
        assert m_slice.accuracy == m_prune.accuracy
        assert (m_slice.latency_ms, m_slice.macs, m_slice.params) == (m_prune.latency_ms, m_prune.macs, m_prune.params)
        assert m_slice.protocol == m_prune.protocol == protocol
    assert len({m.accuracy for m in got}) > 1
    if protocol == "head-refit":  # the refit changed the scores, and each sliced candidate's refit was undone
        assert [m.accuracy for m in got[:-1]] != [m.accuracy for m in recal_only[:-1]]
        sliced._cache.clear()
        assert [sliced.evaluate(p).accuracy for p in reversed(policies)] == [m.accuracy for m in reversed(got)]


class _Measured:
    """A measured latency model: it needs a pruned model to time."""

    name = "fake-measured"
    requires_model = True

    def __init__(self) -> None:
        self.timed: list[int] = []

    def measure_ms(self, model: nn.Module, shape: tuple[int, ...], batch: int) -> Any:
        from prunepilot.hw_models.base import LatencyResult

        channels = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
        self.timed.append(channels)
        return LatencyResult(ms=1.0 + 0.01 * channels, kind="measured", model_name=self.name)


def test_measured_latency_still_times_a_pruned_model(tmp_path: Path) -> None:
    sliced, pruned = _evaluator(tmp_path), _evaluator(tmp_path, **{"evaluation.scoring": "prune"})
    sliced.latency, pruned.latency = _Measured(), _Measured()  # type: ignore[assignment]
    policy = sliced.make_policy([0.5, 0.75, 0.25, 1.0])
    m_slice, m_prune = sliced.evaluate(policy), pruned.evaluate(policy)
    assert sliced.scoring_path == "slice"
    assert (m_slice.accuracy, m_slice.latency_ms, m_slice.latency_kind) == (
        m_prune.accuracy,
        m_prune.latency_ms,
        "measured",
    )
    assert sliced.latency.timed == pruned.latency.timed == [sum(policy.channels.values())]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        # a concatenation feeds the classifier (the slicer's unsupported coupling)
        (
            {"model.spec": "testing:tiny-known-answer", "data.name": "prunepilot.models.testing:known_answer_dataset"},
            "module 'classifier'",
        ),
        # a forward that reads a layer attribute the slimmed layers do not have
        ({"model.spec": "testing:tiny-fragile?fail_width=3"}, "SlimConv"),
    ],
    ids=["concatenation", "forward-reads-layers"],
)
def test_models_the_slicer_cannot_represent_fall_back_to_pruning(
    tmp_path: Path, changes: dict[str, Any], named: str, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = validate_config(tiny_config(tmp_path, **{"evaluation.protocol": "bn-recal", **changes}))
    state = None
    if "known-answer" in changes["model.spec"]:  # constructed weights: nothing to train
        state = build_model(changes["model.spec"], num_classes=4, in_channels=1).state_dict()
    ev = Evaluator(cfg, base_state=state)
    with caplog.at_level("WARNING", logger="prunepilot.search.sliced"):
        assert ev.scoring_path == "prune"
    reason = ev.scoring_fallback_reason
    assert reason is not None and named in reason
    assert [r.getMessage() for r in caplog.records] == [f"bn-recal scores by pruning, not slicing: {reason}"]
    policy = ev.make_policy([0.5] * len(ev.space.groups))
    truth = evaluate_accuracy(ev.prune(policy), ev.val)
    assert ev.evaluate(policy).accuracy == truth


def test_a_criterion_without_one_channel_order_falls_back(tmp_path: Path) -> None:
    ev = _evaluator(tmp_path, **{"evaluation.importance": "synflow"})
    assert ev.scoring_path == "prune"
    assert ev.scoring_fallback_reason is not None and "synflow" in ev.scoring_fallback_reason


def test_a_policy_with_another_criterion_is_sliced_by_its_own_order(tmp_path: Path) -> None:
    ev = _evaluator(tmp_path)
    policy = PruningPolicy.uniform(ev.space, 0.5, importance="l2")
    truth = evaluate_accuracy(ev.prune(policy), ev.val)
    assert ev.evaluate(policy).accuracy == truth
    assert ev._slicer is not None and set(ev._slicer._supernets) == {"l1", "l2"}
    # a criterion that cannot be sliced is pruned for that policy alone
    odd = PruningPolicy.uniform(ev.space, 0.75, importance="synflow")
    assert ev.evaluate(odd).accuracy == evaluate_accuracy(ev.prune(odd), ev.val)
    assert ev.scoring_path == "slice"


def test_scoring_prune_prunes_every_candidate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ev = _evaluator(tmp_path, **{"evaluation.scoring": "prune"})
    calls: list[int] = []
    real = evaluator_module.prune_and_recalibrate
    monkeypatch.setattr(evaluator_module, "prune_and_recalibrate", lambda *a, **k: calls.append(1) or real(*a, **k))
    for r in (0.3, 0.6):
        ev.evaluate(PruningPolicy.uniform(ev.space, r))
    assert len(calls) == 2 and ev.scoring_path == "prune" and ev._slicer is None


class _Tied(nn.Module):
    """Channels 1 and 4 of ``a`` have equal L1 scores but compute different things."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.a, self.b = nn.Conv2d(3, 6, 1, bias=False), nn.Conv2d(6, 4, 1, bias=False)
        self.head = nn.Linear(4, 2)
        with torch.no_grad():  # multiples of 1/4: the sums behind the scores are exact
            self.a.weight.copy_(torch.randint(-8, 9, self.a.weight.shape, generator=gen) / 4)
            self.b.weight.copy_(torch.randint(-8, 9, self.b.weight.shape, generator=gen) / 4)
            self.a.weight[4] = self.a.weight[1].flip(0)
            self.b.weight[:, 4] = self.b.weight[:, 1].flip(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))).mean((2, 3)))


def test_a_cut_through_tied_scores_is_sliced_only_where_apply_policy_keeps_the_same_channels() -> None:
    from prunepilot.oneshot import SupernetError

    model, example = _Tied().eval(), torch.randn(1, 3, 4, 4)
    space = PruningSpace.build(model, example)
    scorer = SlicedScorer(model, example, space, [], [])
    sup = scorer.supernet()
    assert "a" in sup.ties
    x, sliced = torch.randn(5, 3, 4, 4), 0
    for k in range(1, 6):
        policy = PruningPolicy.from_widths(space, {"a": k})
        try:
            scorer._check_ties(sup, dict(policy.channels))
        except SupernetError:
            continue  # scored by pruning
        sliced += 1
        with torch.no_grad(), sup.at(policy.channels):
            assert torch.allclose(sup(x), apply_policy(model, policy, example, space=space)(x), atol=1e-6)
    assert sliced >= 4  # only a cut between the two tied channels can need pruning
    # had the order broken the tie the other way than top-k does, that cut is not sliced
    scores = adapter.group_scores(model, example, "l1")["a"][sup.order["a"]]
    i = next(i for i in range(5) if scores[i] == scores[i + 1])
    swapped = list(range(6))
    swapped[i], swapped[i + 1] = i + 1, i
    sup.order["a"] = sup.order["a"][swapped]
    with pytest.raises(SupernetError, match="tied channel scores"):
        scorer._check_ties(sup, dict(PruningPolicy.from_widths(space, {"a": i + 1}).channels))
