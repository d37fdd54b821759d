"""bench/user_net.py: the user's model prunes through its spec, the user's loader transposes and
pads, a changed base is refused, protocols parse, and the table's verdict follows the deltas."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from bench_helpers import load

from prunepilot.errors import CheckpointError
from prunepilot.models import build_model
from prunepilot.pruning import PruningPolicy, PruningSpace, apply_policy

un = load("user_net")


def test_the_user_model_prunes_through_its_import_spec_concat_and_grouped_convs_included() -> None:
    model = build_model(un.SPEC, num_classes=10, in_channels=1).eval()
    x = torch.randn(2, 1, 32, 32)
    space = PruningSpace.build(model, x)
    # the concat branch's two producers and the grouped blocks are prunable groups
    assert {"stage1.2.a.0", "stage1.2.b.0", "stage1.0.f.0", "stage2.1.f.0"} <= set(space.names)
    pruned = apply_policy(model, PruningPolicy.uniform(space, 0.5), x, space=space).eval()
    out = pruned(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert sum(p.numel() for p in pruned.parameters()) < 0.5 * sum(p.numel() for p in model.parameters())
    grouped = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 4]
    assert grouped and all(m.in_channels % 4 == 0 and m.out_channels % 4 == 0 for m in grouped)


def _idx(path: Path, data: bytes, dims: tuple[int, ...], magic: int) -> None:
    path.write_bytes(struct.pack(">i", magic) + b"".join(struct.pack(">i", d) for d in dims) + data)


def test_the_user_loader_transposes_pads_and_normalises(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images = torch.zeros(3, 28, 28, dtype=torch.uint8)
    images[:, 0, 5] = 255  # one bright pixel in row 0, column 5 of every image
    for prefix, n in (("train", 3), ("t10k", 2)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", images[:n].numpy().tobytes(), (n, 28, 28), 2051)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", bytes(range(n)), (n,), 2049)
    train, test, classes = un.user_data(tmp_path)
    assert classes == 10 and len(train) == 3 and len(test) == 2
    x, y = train[1]
    assert x.shape == (1, 32, 32) and int(y) == 1
    # transposed (row 5, column 0) and padded by 2 on every side: the bright pixel is at (7, 2)
    assert torch.argmax(x.flatten()).item() == 7 * 32 + 2
    assert abs(float(train.tensors[0].mean())) < 1e-5


def test_a_base_whose_checkpoint_changed_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt, info = tmp_path / "user_net.pt", tmp_path / "user_net.json"
    ckpt.write_bytes(b"weights")
    info.write_text(json.dumps({"sha256": un.file_sha256(ckpt), "checkpoint": ckpt.name}))
    monkeypatch.setattr(un, "CHECKPOINT", ckpt)
    monkeypatch.setattr(un, "INFO", info)
    assert un.base_record()["checkpoint"] == "user_net.pt"
    ckpt.write_bytes(b"other weights")
    with pytest.raises(CheckpointError, match="sha256"):
        un.base_record()


def test_protocols_parse_with_integer_settings_and_a_bad_item_is_named() -> None:
    assert un.parse_protocol("short-finetune:steps=20,batch=32") == ("short-finetune", {"steps": 20, "batch": 32})
    assert un.parse_protocol("bn-recal") == ("bn-recal", {})
    with pytest.raises(SystemExit, match="'steps' is not key=value"):
        un.parse_protocol("short-finetune:steps")


def _row(protocol: str, delta: float | None, picked: bool = True) -> dict[str, Any]:
    row: dict[str, Any] = {"protocol": protocol, "strategy": "optuna-tpe", "candidates": 10, "search_seconds": 1.0}
    if not picked:
        return {**row, "pick": None}
    final = {"share": 0.5, "finetuned_test_acc": 0.9, "uniform_at_share": 0.9, "delta_points": delta}
    return {**row, "pick": {"score": 0.8}, "final": final}


def test_the_verdict_is_met_only_where_the_pick_does_not_lose_to_uniform() -> None:
    doc = {
        "rows": [_row("a", 0.4), _row("b", -1.2), _row("c", None), _row("d", None, picked=False)],
        "base": {"epochs": 4, "val_acc": 0.9, "test_acc": 0.9, "versions": {"torch": "x"}},
        "args": {
            "strategy": "optuna-tpe",
            "evaluations": 10,
            "budget": 0.5,
            "device": "cpu",
            "latency_batch": 32,
            "lower_bound": 0.2,
            "rounds": 7,
            "instances": 3,
            "finetune_batches": 100,
        },  # fmt: skip
        "curve": [{"keep": 0.5, "share": 0.5, "finetuned_test_acc": 0.9}],
        "machine": {"cpu": "cpu", "cores": 2, "platform": "linux"},
        "seconds": 1.0,
    }
    table = un.table(doc)
    met = un.COLUMNS.index("target met")
    assert [r[met] for r in table["rows"]] == [True, False, None, None]
    notes = " ".join(table["notes"])
    assert "a does not lose to uniform at the same measured latency: +0.40 points: MET" in notes
    assert "b does not lose to uniform at the same measured latency: -1.20 points: NOT MET" in notes
    assert "c does not lose" in notes and "outside the uniform curve" in notes
    assert "d does not lose" in notes and "no pick within the budget" in notes


def test_the_best_uniform_within_the_budget_is_the_most_accurate_fitting_point_not_the_widest() -> None:
    # latency not monotonic in width: keep 0.5 is faster than keep 0.4 here and more accurate
    curve = [
        {"keep": 0.3, "share": 0.36, "finetuned_test_acc": 0.73},
        {"keep": 0.4, "share": 0.466, "finetuned_test_acc": 0.79},
        {"keep": 0.5, "share": 0.438, "finetuned_test_acc": 0.82},
        {"keep": 0.6, "share": 0.889, "finetuned_test_acc": 0.87},
    ]
    assert un.best_uniform_within(curve, 0.5)["keep"] == 0.5
    assert un.best_uniform_within(curve, 0.45)["keep"] == 0.5
    assert un.best_uniform_within(curve, 0.43)["keep"] == 0.3
    assert un.best_uniform_within(curve, 0.3) is None


def test_the_search_config_carries_the_in_loop_mode_and_rounding() -> None:
    args = un.parse_args(["--in-loop", "anchored", "--round-to", "8", "--data-root", "/data"])
    evaluation = un.search_config(args, "short-finetune", {"steps": 20})["evaluation"]
    assert evaluation["in_loop_latency"] == "anchored" and evaluation["round_to"] == 8
    assert evaluation["protocol"] == "short-finetune" and evaluation["protocol_settings"] == {"steps": 20}
    default = un.search_config(un.parse_args(["--data-root", "/data"]), None, {})["evaluation"]
    assert default["in_loop_latency"] == "predicted" and default["round_to"] == 1 and "protocol" not in default
