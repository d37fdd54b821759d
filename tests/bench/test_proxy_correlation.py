"""bench/proxy_correlation.py: the default protocol and the table come from the rows."""

from __future__ import annotations

import argparse

from bench_helpers import load


def _row(protocol: str, budget: float, tau: float, secs: float) -> dict[str, object]:
    return {
        "model": "resnet20",
        "budget": budget,
        "protocol": protocol,
        "kendall_tau": tau,
        "spearman": tau,
        "seconds_per_candidate": secs,
        "prepare_seconds": 0.0,
        "n": 12,
    }


def test_default_protocol_is_the_best_worst_case_tau_among_affordable_ones() -> None:
    pc = load("proxy_correlation")
    rows = [
        _row("bn-recal", 0.5, 0.2, 0.5),
        _row("bn-recal", 0.3, 0.1, 0.5),
        _row("short-finetune-20", 0.5, 0.75, 1.5),
        _row("short-finetune-20", 0.3, 0.55, 1.5),
        _row("short-finetune-60", 0.5, 0.9, 4.0),  # better, but over the per-candidate cost
        _row("short-finetune-60", 0.3, 0.8, 4.0),
    ]
    assert pc.default_protocol(rows) == "short-finetune-20"
    args = argparse.Namespace(
        ft_batches=100, policies=12, device="cpu", latency_batch=1, bases=["resnet20"], quick=False
    )
    table = pc.table(rows, "short-finetune-20", args)
    assert [r[2] for r in table["rows"]] == [r["protocol"] for r in rows]
    assert [r[4] for r in table["rows"]] == [r["kendall_tau"] for r in rows]
    notes = " ".join(table["notes"])
    assert "resnet20 at 50%, short-finetune-20: tau 0.750 against the target 0.7: MET" in notes
    assert "resnet20 at 30%, short-finetune-20: tau 0.550 against the target 0.6: NOT MET" in notes
    assert "REDUCED study" in notes and "No default protocol is chosen from a reduced study" in notes
    full = argparse.Namespace(**{**vars(args), "policies": 40, "bases": ["mobilenet_v2", "resnet20"]})
    assert "Default protocol chosen: short-finetune-20" in " ".join(pc.table(rows, "short-finetune-20", full)["notes"])
