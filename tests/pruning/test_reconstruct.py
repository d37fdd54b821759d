"""Reconstruction refits the consumers of pruned channels towards the unpruned model's outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunepilot.errors import PruningError
from prunepilot.models import build_model
from prunepilot.pruning import PruningPolicy, PruningSpace, adapter, apply_policy, recalibrate_bn
from prunepilot.pruning.reconstruct import reconstruct


class MLP(nn.Module):
    """16 -> 64 -> 64 -> 6 with batch norm: groups ``fc1`` and ``fc2``; ``fc2`` and ``head`` consume them."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(16, 64), nn.BatchNorm1d(64)
        self.fc2, self.bn2 = nn.Linear(64, 64), nn.BatchNorm1d(64)
        self.head = nn.Linear(64, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn2(self.fc2(torch.relu(self.bn1(self.fc1(x)))))))


def _blobs(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    centers = torch.randn(6, 16, generator=torch.Generator().manual_seed(123)) * 1.2
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 6, (n,), generator=gen)
    return centers[y] + torch.randn(n, 16, generator=gen), y


@pytest.fixture(scope="module")
def trained() -> tuple[MLP, list[tuple[torch.Tensor, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    model = MLP()
    x, y = _blobs(0, 2048)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(300):
        i = torch.randint(0, len(x), (128,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i]), y[i]).backward()
        opt.step()
    calib = [(x[i * 128 : (i + 1) * 128], y[i * 128 : (i + 1) * 128]) for i in range(4)]
    return model.eval(), calib, _blobs(1, 1024)


def _accuracy(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    with torch.no_grad():
        return float((model(data[0]).argmax(1) == data[1]).float().mean())


def _pruned(model: nn.Module, x: torch.Tensor, keep: float) -> tuple[nn.Module, adapter.KeptIndices]:
    space = PruningSpace.build(model, x)
    kept: adapter.KeptIndices = {}
    return apply_policy(model, PruningPolicy.uniform(space, keep), x, space=space, kept=kept), kept


def test_reconstruction_beats_bn_recalibration_alone_on_a_toy_task(trained) -> None:
    model, calib, test = trained
    assert _accuracy(model, test) > 0.95
    pruned, kept = _pruned(model, calib[0][0][:2], 0.25)
    recalibrate_bn(pruned, calib)
    recal_only = _accuracy(pruned, test)
    record = reconstruct(pruned, model, calib, kept)
    assert [f.module for f in record.layers] == ["fc2", "head"]  # forward order
    assert all(f.refit and f.error_after < 0.5 * f.error_before for f in record.layers)
    assert _accuracy(pruned, test) > recal_only + 0.1  # 0.77 -> 0.98 here
    assert record.bn_batches == len(calib)


def _consumer_outputs(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    got: dict[str, torch.Tensor] = {}
    mods = dict(model.named_modules())
    handles = [mods[n].register_forward_hook(lambda _m, _i, out, n=n: got.setdefault(n, out)) for n in names]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return got


def _tiny_residual() -> tuple[nn.Module, list[torch.Tensor]]:
    """The zoo's tiny residual net with its batch norm estimated on 4 random calibration batches."""
    torch.manual_seed(0)
    model = build_model("testing:tiny-residual", num_classes=10, in_channels=3)
    calib = [torch.randn(16, 3, 16, 16) for _ in range(4)]
    recalibrate_bn(model, calib)
    return model.eval(), calib


def test_consumer_outputs_move_towards_the_unpruned_models() -> None:
    model, calib = _tiny_residual()
    without, kept = _pruned(model, calib[0][:2], 0.5)
    recalibrate_bn(without, calib)
    refit, _ = _pruned(model, calib[0][:2], 0.5)
    record = reconstruct(refit, model, calib, kept)
    names = [f.module for f in record.layers]
    assert set(names) == {"block.0", "block.3", "head_conv.0", "classifier"}
    fresh = torch.randn(32, 3, 16, 16)  # not the calibration images
    base = _consumer_outputs(model, names, fresh)
    a, b = _consumer_outputs(without, names, fresh), _consumer_outputs(refit, names, fresh)
    for n in names:
        target = base[n][:, list(kept.get((n, "out"), range(base[n].shape[1])))]
        err_without = float((a[n] - target).pow(2).sum())
        err_refit = float((b[n] - target).pow(2).sum())
        assert err_refit < err_without, n


def test_only_the_given_batches_are_read_and_none_means_an_error(trained) -> None:
    model, calib, _ = trained
    pruned, kept = _pruned(model, calib[0][0][:2], 0.5)
    seen: list[int] = []

    class Counting(list):  # type: ignore[type-arg]
        def __iter__(self):  # type: ignore[no-untyped-def]
            seen.append(1)
            return super().__iter__()

    reconstruct(pruned, model, Counting(calib[:2]), kept)
    assert seen == [1]  # read once, materialised; nothing else is read
    with pytest.raises(PruningError, match="needs calibration batches"):
        reconstruct(pruned, model, [], kept)
    with pytest.raises(PruningError, match="lacks"):
        reconstruct(pruned, model, calib, {("nowhere", "in"): (0,)})


def test_rank_deficient_inputs_are_solved_with_the_ridge_term(trained) -> None:
    model, calib, _ = trained
    pruned, kept = _pruned(model, calib[0][0][:2], 0.5)
    rank_one = [(x[:1].expand(64, -1).contiguous(), y) for x, y in calib[:1]]  # one distinct sample
    record = reconstruct(pruned, model, rank_one, kept)
    assert all(torch.isfinite(p).all() for p in pruned.parameters())
    assert all(f.error_after <= f.error_before for f in record.layers)


def test_each_layer_is_fit_on_the_inputs_the_returned_model_gives_it() -> None:
    # the errors reported are those of the model returned: every consumer was fit on its final
    # inputs (batch norm re-estimated after each refit), not on inputs that a later
    # recalibration changes
    import copy

    from prunepilot.pruning import reconstruct as rec

    model, calib = _tiny_residual()
    pruned, kept = _pruned(model, calib[0][:2], 0.25)
    record = reconstruct(pruned, model, calib, kept)
    assert len(record.layers) == 4 and all(f.refit for f in record.layers)
    base_mods = dict(model.named_modules())
    for fit in record.layers:
        probe = copy.deepcopy(pruned).eval()  # refitting a copy reports the returned model's error first
        again = rec._refit(fit.module, dict(probe.named_modules())[fit.module], base_mods[fit.module], probe,
                           model, calib, kept, rec.RIDGE, rec.POSITIONS, 0)  # fmt: skip
        assert again.error_before == pytest.approx(fit.error_after, rel=1e-4, abs=1e-6), fit.module
