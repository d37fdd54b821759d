"""One prune -> BN recalibration path: what it does, and that the evaluator, apply, prune and the
known-answer environment all take it (issue 18)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import prunepilot.pruning.prepare as prepare
from prunepilot.models import build_model
from prunepilot.pruning import PruningPolicy, PruningSpace, apply_policy, prune_and_recalibrate


def _case() -> tuple[nn.Module, torch.Tensor, PruningSpace, list[tuple[torch.Tensor, torch.Tensor]]]:
    model = build_model("testing:tiny-convnet").eval()
    x = torch.zeros(1, 3, 16, 16)
    calib = [(torch.randn(8, 3, 16, 16) * 3 + 1, torch.zeros(8, dtype=torch.long)) for _ in range(2)]
    return model, x, PruningSpace.build(model, x), calib


def _bn_means(model: nn.Module) -> list[torch.Tensor]:
    return [m.running_mean.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def test_prunes_to_the_policy_then_recalibrates_bn_in_eval_mode() -> None:
    model, x, space, calib = _case()
    before = copy.deepcopy(model.state_dict())
    policy = PruningPolicy.uniform(space, 0.5)
    seen: list[list[torch.Tensor]] = []
    pruned = prune_and_recalibrate(
        model, policy, x, space=space, calib_batches=calib, before_recalibration=lambda m: seen.append(_bn_means(m))
    )
    plain = apply_policy(model, policy, x, space=space)
    assert not pruned.training
    assert pruned(torch.zeros(2, 3, 16, 16)).shape == plain(torch.zeros(2, 3, 16, 16)).shape
    assert [m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)] == [
        policy.channels[g] for g in ("features.0", "features.3", "features.6", "features.9")
    ]
    # the hook saw the pruned model before recalibration (the plain prune's statistics); after it they moved
    assert all(torch.equal(a, b) for a, b in zip(seen[0], _bn_means(plain), strict=True))
    assert all(not torch.allclose(a, b) for a, b in zip(_bn_means(pruned), _bn_means(plain), strict=True))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the input is untouched
    # without calibration batches: the pruned model as it is (no statistics to re-estimate from)
    bare = prune_and_recalibrate(model, policy, x, space=space)
    assert all(torch.equal(a, b) for a, b in zip(_bn_means(bare), _bn_means(plain), strict=True))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Counts every prune that goes through :func:`prune_and_recalibrate` (by the policy's importance)."""
    seen: list[str] = []
    real = prepare.apply_policy

    def counted(model: nn.Module, policy: PruningPolicy, *args: Any, **kwargs: Any) -> nn.Module:
        seen.append(policy.importance)
        return real(model, policy, *args, **kwargs)

    monkeypatch.setattr(prepare, "apply_policy", counted)
    yield seen


def test_evaluator_apply_prune_and_the_known_answer_env_share_the_path(
    calls: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "search"))
    from search_helpers import tiny_config

    from prunepilot.apply import ApplyConfig, apply_to_model
    from prunepilot.cli import app
    from prunepilot.envs.testing import make_known_answer_env
    from prunepilot.search.config import validate_config
    from prunepilot.search.evaluator import Evaluator

    # scoring "prune": the default, "slice", gives the same figure without pruning (test_sliced_scoring)
    ev = Evaluator(
        validate_config(tiny_config(tmp_path, **{"evaluation.scoring": "prune", "evaluation.protocol": "bn-recal"}))
    )
    ev.evaluate(ev.make_policy([0.5] * len(ev.space.groups)))
    assert len(calls) == 1, "the evaluator's bn-recal path"

    policy = PruningPolicy.uniform(ev.space, 0.5, importance="l2").save(tmp_path / "p.json")
    out = tmp_path / "applied"
    apply_to_model(ApplyConfig(policy=policy, model="testing:tiny-convnet", out=out, input_shape=(1, 1, 8, 8),
                               in_channels=1, measure_latency=False))  # fmt: skip
    assert calls[1:] == ["l2"], "apply"

    args = ["prune", "--model", "testing:tiny-convnet", "--input-shape", "1,3,16,16", "--uniform", "0.5"]
    res = CliRunner().invoke(app, [*args, "--importance", "bn-scale", "--out", str(tmp_path / "pruned")])
    assert res.exit_code == 0, res.output
    assert calls[2:] == ["bn-scale"], "prune"

    _, task = make_known_answer_env()
    task.evaluate(PruningPolicy.uniform(task.space, 1.0))
    assert len(calls) == 4, "the known-answer environment"
