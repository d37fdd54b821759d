"""Scoring protocols: deterministic, honest about splits, and the supernet at full width is the base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import TensorDataset

from prunepilot.data import DataConfig, build_data
from prunepilot.errors import ConfigError
from prunepilot.models import build_model
from prunepilot.pruning import PruningPolicy, PruningSpace, apply_policy
from prunepilot.search.protocols import ScoringData, get_protocol, protocol_names
from prunepilot.training import TrainConfig, evaluate_accuracy, fit

N_IMAGES = 600


def indexed_images(seed: int = 0) -> tuple[TensorDataset, TensorDataset, int]:
    """A learnable 10-class task whose image ``i`` carries ``i`` in its last two pixels.

    (Import-path data source for DataConfig: ``test_protocols:indexed_images``.)
    """
    gen = torch.Generator().manual_seed(1234)
    n = N_IMAGES + 200
    labels = torch.arange(n) % 10
    protos = torch.randn(10, 1, 8, 8, generator=gen)
    x = protos[labels] + 0.8 * torch.randn(n, 1, 8, 8, generator=gen)
    idx = torch.arange(n, dtype=torch.float32)
    x[:, 0, 7, 6] = idx // 100
    x[:, 0, 7, 7] = idx % 100
    return TensorDataset(x[:N_IMAGES], labels[:N_IMAGES]), TensorDataset(x[N_IMAGES:], labels[N_IMAGES:]), 10


def image_ids(x: torch.Tensor) -> set[int]:
    return {int(a) * 100 + int(b) for a, b in zip(x[:, 0, 7, 6].tolist(), x[:, 0, 7, 7].tolist(), strict=True)}


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    bundle = build_data(DataConfig(name="test_protocols:indexed_images", batch_size=32, val_size=0.2, calib_size=64))
    torch.manual_seed(0)
    base = build_model("simplecnn", num_classes=10, in_channels=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same base whatever ran before (module fixtures precede the per-test one)
    try:
        fit(base, bundle.train, TrainConfig(epochs=3, lr=0.05, seed=0))
    finally:
        torch.set_num_threads(threads)
    base.eval()
    example = bundle.example_inputs(1)
    space = PruningSpace.build(base, example)
    calib = list(bundle.calib)
    val = list(bundle.val)
    data = ScoringData.from_bundle(
        bundle, base, space, calib=calib, val=val, importance="l1", lower_bound=0.25, round_to=1, seed=3
    )
    return {"bundle": bundle, "base": base, "space": space, "data": data, "example": example}


def _pruner(setup: dict[str, Any], policy: PruningPolicy) -> Any:
    return lambda: apply_policy(setup["base"], policy, setup["example"], space=setup["space"])


def test_registry_lists_the_protocols_and_refuses_unknown_ones() -> None:
    assert {"bn-recal", "short-finetune", "supernet", "reconstruct", "head-refit"} <= set(protocol_names())
    with pytest.raises(ConfigError, match="unknown protocol 'adabn'.*bn-recal"):
        get_protocol("adabn")
    with pytest.raises(ConfigError, match="accepted settings: alpha, batch_size, lr, steps, temperature"):
        get_protocol("short-finetune", {"step": 3})


@pytest.mark.parametrize(
    "name, settings", [("bn-recal", {}), ("short-finetune", {"steps": 6}), ("head-refit", {"extra_batches": 2})]
)
def test_protocols_are_deterministic_under_a_seed(setup: dict[str, Any], name: str, settings: dict[str, Any]) -> None:
    policy = PruningPolicy.uniform(setup["space"], 0.4)
    first = get_protocol(name, settings).score(policy, _pruner(setup, policy), setup["data"])
    again = get_protocol(name, settings).score(policy, _pruner(setup, policy), setup["data"])
    assert first == again


def test_short_finetune_trains_on_the_training_part_only(setup: dict[str, Any]) -> None:
    bundle, data = setup["bundle"], setup["data"]
    train_ids = image_ids(bundle.train.dataset.tensors[0])
    val_ids = set().union(*(image_ids(x) for x, _ in bundle.val))
    assert train_ids and val_ids and not train_ids & val_ids
    proto = get_protocol("short-finetune", {"steps": 8})
    seen: set[int] = set()

    def record(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if module.training:
            seen.update(image_ids(inputs[0]))

    policy = PruningPolicy.uniform(setup["space"], 0.5)

    def pruned() -> torch.nn.Module:
        model = _pruner(setup, policy)()
        model.register_forward_pre_hook(record)
        return model

    proto.score(policy, pruned, data)
    assert len(seen) >= 8 * 16
    assert seen <= train_ids
    assert not seen & val_ids  # the held-out split is only scored on
    assert max(seen) < N_IMAGES  # the test split (ids >= N_IMAGES) is never read


def test_short_finetune_recovers_accuracy_that_bn_recal_does_not(setup: dict[str, Any]) -> None:
    policy = PruningPolicy.uniform(setup["space"], 0.25)
    bn = get_protocol("bn-recal").score(policy, _pruner(setup, policy), setup["data"])
    ft = get_protocol("short-finetune", {"steps": 30, "lr": 0.02}).score(policy, _pruner(setup, policy), setup["data"])
    assert ft > bn


def test_reconstruct_beats_bn_recal_without_training_and_is_deterministic(setup: dict[str, Any]) -> None:
    policy = PruningPolicy.uniform(setup["space"], 0.25)
    bn = get_protocol("bn-recal").score(policy, _pruner(setup, policy), setup["data"])
    rec = get_protocol("reconstruct").score(policy, _pruner(setup, policy), setup["data"])
    again = get_protocol("reconstruct").score(policy, _pruner(setup, policy), setup["data"])
    assert rec > bn and rec == again


def test_head_refit_fits_on_the_training_part_only(setup: dict[str, Any]) -> None:
    bundle, data = setup["bundle"], setup["data"]
    train_ids = image_ids(bundle.train.dataset.tensors[0])
    val_ids = set().union(*(image_ids(x) for x, _ in bundle.val))
    calib_ids = set().union(*(image_ids(x) for x, _ in data.calib))
    proto = get_protocol("head-refit", {"extra_batches": 4})
    fit = proto.fit_batches(data)
    assert len(fit) == len(data.calib) + 4
    fitted = set().union(*(image_ids(x) for x, _ in fit))
    assert calib_ids < fitted <= train_ids  # the calibration batches and fresh training batches
    assert not fitted & val_ids and max(fitted) < N_IMAGES  # never the held-out split, never the test split
    seen: set[int] = set()
    policy = PruningPolicy.uniform(setup["space"], 0.5)

    def pruned() -> torch.nn.Module:
        model = _pruner(setup, policy)()
        model.register_forward_pre_hook(lambda _m, inp: seen.update(image_ids(inp[0])))
        return model

    proto.score(policy, pruned, data)
    assert seen == fitted | val_ids  # refit on the fit batches, then scored on the held-out split


def test_head_refit_recovers_accuracy_that_bn_recal_does_not_and_keeps_an_unpruned_model(
    setup: dict[str, Any],
) -> None:
    data = setup["data"]
    policy = PruningPolicy.uniform(setup["space"], 0.25)
    bn = get_protocol("bn-recal").score(policy, _pruner(setup, policy), data)
    head = get_protocol("head-refit").score(policy, _pruner(setup, policy), data)
    assert head > bn
    # at full width the refit to the model's own logits is (nearly) the identity: the base's accuracy
    full = PruningPolicy.uniform(setup["space"], 1.0)
    same = get_protocol("head-refit", {"ridge": 0.0}).score(full, _pruner(setup, full), data)
    assert abs(same - evaluate_accuracy(setup["base"], data.val)) <= 0.01


def test_head_refit_refuses_a_model_whose_last_linear_is_not_its_output() -> None:
    from prunepilot.search.protocols import classifier_head

    x = torch.randn(2, 1, 4, 4)
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    assert classifier_head(flat, x) == "3"
    with pytest.raises(ConfigError, match=r"last nn.Linear \('1'\) is not the model's output.*bn-recal"):
        classifier_head(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3), torch.nn.Softmax(-1)), x)
    with pytest.raises(ConfigError, match="has no nn.Linear classifier.*short-finetune"):
        classifier_head(torch.nn.Sequential(torch.nn.Conv2d(1, 3, 4), torch.nn.Flatten()), x)


def test_auto_is_head_refit_where_the_model_allows_it_and_says_why_it_falls_back() -> None:
    from prunepilot.search.protocols import resolve_protocol

    x = torch.randn(2, 1, 4, 4)
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    softmax = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3), torch.nn.Softmax(-1))
    proto, why = resolve_protocol("auto", {"extra_batches": 2}, linear, x)
    assert proto.name == "head-refit" and why is None and proto.settings.extra_batches == 2  # type: ignore[attr-defined]
    proto, why = resolve_protocol("auto", {}, softmax, x)
    assert proto.name == "bn-recal" and why is not None and "('1') is not the model's output" in why
    proto, why = resolve_protocol("bn-recal", {}, softmax, x)
    assert proto.name == "bn-recal" and why is None  # named: no fallback to explain
    with pytest.raises(ConfigError, match="is not the model's output"):
        resolve_protocol("head-refit", {}, softmax, x)  # named, not defaulted: refused


def test_ridge_fit_ignores_zeroed_features() -> None:
    from prunepilot.search.protocols import ridge_fit

    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(200, 5, generator=gen, dtype=torch.float64), torch.ones(200, 1, dtype=torch.float64)], 1)
    y = x @ torch.randn(6, 3, generator=gen, dtype=torch.float64)
    w = ridge_fit(x.T @ x, x.T @ y, 0.1, bias=True)
    zeroed = torch.cat([x[:, :2], torch.zeros(200, 1, dtype=torch.float64), x[:, 2:]], 1)  # a channel masked to 0
    wz = ridge_fit(zeroed.T @ zeroed, zeroed.T @ y, 0.1, bias=True)
    assert torch.allclose(wz[:, [0, 1, 3, 4, 5, 6]], w, atol=1e-10) and float(wz[:, 2].abs().max()) < 1e-12
    exact = ridge_fit(x.T @ x, x.T @ y, 0.0, bias=True)
    assert torch.allclose(x @ exact.T, y, atol=1e-8)  # no ridge: the least-squares solution


def test_supernet_at_full_width_reproduces_the_base(setup: dict[str, Any], tmp_path: Path) -> None:
    data = setup["data"]
    base_acc = evaluate_accuracy(setup["base"], data.val)
    proto = get_protocol("supernet", {"steps": 10, "lr": 0.002, "checkpoint_every": 5})
    record = proto.prepare(ScoringData(**{**data.__dict__, "work_dir": tmp_path}))
    assert record["train_steps"] == 10 and (tmp_path / "supernet.pt").is_file()
    full = PruningPolicy.uniform(setup["space"], 1.0)
    assert abs(proto.score(full, _pruner(setup, full), data) - base_acc) <= 0.02
    # resumable: a second prepare in the same folder trains nothing more
    again = get_protocol("supernet", {"steps": 10, "lr": 0.002, "checkpoint_every": 5})
    assert again.prepare(ScoringData(**{**data.__dict__, "work_dir": tmp_path}))["resumed_from"] == 10


# --- wired into the search ----------------------------------------------------------------


def _evaluator(tmp_path: Path, protocol: str, settings: dict[str, Any] | None = None) -> Any:
    from search_helpers import tiny_config

    from prunepilot.search.config import validate_config
    from prunepilot.search.evaluator import Evaluator

    cfg = tiny_config(tmp_path, **{"evaluation.protocol": protocol, "evaluation.protocol_settings": settings or {}})
    return Evaluator(validate_config(cfg))


def test_the_evaluator_scores_with_the_configured_protocol_and_records_it(tmp_path: Path) -> None:
    bn = _evaluator(tmp_path, "bn-recal")
    ft = _evaluator(tmp_path, "short-finetune", {"steps": 10, "lr": 0.05})
    again = _evaluator(tmp_path, "short-finetune", {"steps": 10, "lr": 0.05})
    policy = PruningPolicy.uniform(bn.space, 0.3)
    m_bn, m_ft, m_again = bn.evaluate(policy), ft.evaluate(policy), again.evaluate(policy)
    assert (m_bn.protocol, m_ft.protocol) == ("bn-recal", "short-finetune")
    assert m_ft.accuracy == m_again.accuracy  # seeded: the same policy gets the same score
    assert m_ft.accuracy != m_bn.accuracy
    assert m_ft.latency_ms == m_bn.latency_ms and m_ft.macs == m_bn.macs


def test_the_default_protocol_is_auto_which_scores_a_linear_headed_model_by_head_refit(tmp_path: Path) -> None:
    ev = _evaluator(tmp_path, "auto")
    assert ev.cfg.evaluation.protocol == "auto" and ev.protocol_fallback_reason is None
    metrics = ev.evaluate(PruningPolicy.uniform(ev.space, 0.3))
    assert metrics.protocol == "head-refit"
    from search_helpers import tiny_config

    from prunepilot.search.config import validate_config

    cfg = tiny_config(tmp_path)
    cfg["evaluation"].pop("protocol", None)
    assert validate_config(cfg).evaluation.protocol == "auto"


def softmax_net(num_classes: int = 10, in_channels: int = 1) -> torch.nn.Module:
    """A model whose last nn.Linear is followed by a softmax (spec ``test_protocols:softmax_net``)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, num_classes),
        torch.nn.Softmax(-1),
    )


def test_auto_falls_back_to_bn_recal_on_a_model_without_a_refittable_head_and_a_named_head_refit_is_refused(
    tmp_path: Path,
) -> None:
    from search_helpers import tiny_config

    from prunepilot.search.config import validate_config
    from prunepilot.search.evaluator import Evaluator

    cfg = tiny_config(tmp_path, **{"model.spec": "test_protocols:softmax_net"})
    ev = Evaluator(validate_config(cfg))
    assert ev.protocol.name == "bn-recal"
    assert ev.protocol_fallback_reason is not None and "('5') is not the model's output" in ev.protocol_fallback_reason
    assert ev.evaluate(PruningPolicy.uniform(ev.space, 0.5)).protocol == "bn-recal"
    with pytest.raises(ConfigError, match="head-refit.*'5'.*choose another protocol"):
        Evaluator(validate_config({**cfg, "evaluation": {**cfg["evaluation"], "protocol": "head-refit"}}))


def test_config_refuses_unknown_protocols_and_settings(tmp_path: Path) -> None:
    from search_helpers import tiny_config

    from prunepilot.search.config import validate_config

    with pytest.raises(ConfigError, match="unknown protocol 'adaptive-bn'; choose 'auto', 'bn-recal'.*short-finetune"):
        validate_config(tiny_config(tmp_path, **{"evaluation.protocol": "adaptive-bn"}))
    with pytest.raises(ConfigError, match="accepted settings: .*steps"):
        validate_config(
            tiny_config(
                tmp_path, **{"evaluation.protocol": "short-finetune", "evaluation.protocol_settings": {"stepz": 3}}
            )
        )


def test_a_front_never_mixes_protocols() -> None:
    from prunepilot.search.pareto import pareto_front

    def cand(i: int, acc: float, ms: float, protocol: str | None) -> dict[str, Any]:
        metrics: dict[str, Any] = {"accuracy": acc, "latency_ms": ms}
        if protocol is not None:
            metrics["protocol"] = protocol
        return {"id": f"c{i}", "status": "ok", "metrics": metrics}

    same = [cand(0, 0.9, 2.0, "short-finetune"), cand(1, 0.8, 1.0, "short-finetune")]
    assert len(pareto_front(same)) == 2
    old = [cand(0, 0.9, 2.0, None), cand(1, 0.8, 1.0, "bn-recal")]  # records from before protocols
    assert len(pareto_front(old)) == 2
    with pytest.raises(ConfigError, match="different protocols"):
        pareto_front([*same, cand(2, 0.95, 0.5, "bn-recal")])
