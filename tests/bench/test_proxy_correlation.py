"""bench/proxy_correlation.py: the default protocol and the table come from the rows, the rows
from the per-policy points; pieces merge only with the same settings and disjoint draws."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bench_helpers import load

ARGS = {"ft_batches": 100, "device": "cpu", "latency_batch": 32, "lower_bound": 0.2, "bn_batches": 4,
        "val_batches": 4, "quick": False}  # fmt: skip


def _row(protocol: str, budget: float, tau: float, secs: float, n: int = 12, model: str = "resnet20") -> dict[str, Any]:
    return {
        "model": model,
        "budget": budget,
        "protocol": protocol,
        "kendall_tau": tau,
        "spearman": tau,
        "seconds_per_candidate": secs,
        "prepare_seconds": 0.0,
        "n": n,
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
    table = pc.table(rows, "short-finetune-20", ARGS)
    assert [r[2] for r in table["rows"]] == [r["protocol"] for r in rows]
    assert [r[4] for r in table["rows"]] == [r["kendall_tau"] for r in rows]
    notes = " ".join(table["notes"])
    assert "resnet20 at 50%, short-finetune-20: tau 0.750 against the target 0.7: MET" in notes
    assert "resnet20 at 30%, short-finetune-20: tau 0.550 against the target 0.6: NOT MET" in notes
    assert "REDUCED study" in notes and "No default protocol is chosen from a reduced study" in notes
    # the full study: 40 policies at 50% and 30% on both bases
    full = [_row(r["protocol"], r["budget"], r["kendall_tau"], r["seconds_per_candidate"], 40, m)
            for m in ("resnet20", "mobilenet_v2") for r in rows]  # fmt: skip
    assert not pc.is_reduced(full)
    assert pc.is_reduced([r for r in full if (r["model"], r["budget"]) != ("mobilenet_v2", 0.3)])
    assert "Default protocol chosen: short-finetune-20" in " ".join(pc.table(full, "short-finetune-20", ARGS)["notes"])


def _point(model: str, budget: float, i: int, scores: dict[str, float], acc: float) -> dict[str, Any]:
    return {"model": model, "budget": budget, "policy": i, "scores": scores, "seconds": dict.fromkeys(scores, 0.5),
            "finetuned_test_acc": acc, "measured_ms": 5.0 + i, "base_ms": 10.0}  # fmt: skip


def test_rows_come_from_the_points() -> None:
    pc = load("proxy_correlation")
    accs = [0.80, 0.82, 0.85, 0.90]
    points = [_point("resnet20", 0.5, i, {"bn-recal": a, "reconstruct": -a}, a) for i, a in enumerate(accs)]
    points += [_point("resnet20", 0.3, i, {"bn-recal": 0.1}, 0.7) for i in range(2)]  # too few: no rows
    rows = pc.rows_from_points(points, {"resnet20": {"reconstruct": 3.0}})
    by = {r["protocol"]: r for r in rows}
    assert set(by) == {"bn-recal", "reconstruct"} and {r["budget"] for r in rows} == {0.5}
    assert by["bn-recal"]["kendall_tau"] == pytest.approx(1.0) and by["reconstruct"]["spearman"] == pytest.approx(-1.0)
    assert by["reconstruct"]["prepare_seconds"] == 3.0 and by["bn-recal"]["n"] == 4
    assert by["bn-recal"]["measured_share"] == pytest.approx(0.65)  # median of 0.5, 0.6, 0.7, 0.8


def _piece(tmp: Path, name: str, key: str, points: list[dict[str, Any]], **args: Any) -> Path:
    draws = {key: {"base_ms": 10.0, "policies": []}}
    doc = {"benchmark": "proxy_correlation", "args": {**ARGS, **args}, "draws": draws, "points": points,
           "prepare_seconds": {}, "unreachable": {}, "seconds": 60.0}  # fmt: skip
    path = tmp / name
    path.write_text(json.dumps(doc))
    return path


def test_pieces_merge_into_one_study_and_refuse_what_does_not_belong(tmp_path: Path) -> None:
    pc = load("proxy_correlation")
    a = [_point("resnet20", 0.5, i, {"bn-recal": x}, x) for i, x in enumerate([0.8, 0.9, 0.85])]
    b = [_point("resnet20", 0.3, i, {"bn-recal": x}, 1 - x) for i, x in enumerate([0.6, 0.7, 0.65])]
    pa = _piece(tmp_path, "a.json", "resnet20@0.5", a)
    pb = _piece(tmp_path, "b.json", "resnet20@0.3", b)
    doc = pc.merge([pa, pb])
    taus = {r["budget"]: r["kendall_tau"] for r in doc["rows"]}
    assert taus == {0.5: pytest.approx(1.0), 0.3: pytest.approx(-1.0)} and doc["seconds"] == 120.0
    assert set(doc["draws"]) == {"resnet20@0.5", "resnet20@0.3"} and doc["default_protocol"] is None  # reduced
    assert "Merged from 2 pieces" in " ".join(doc["table"]["notes"])
    with pytest.raises(SystemExit, match="drawn in both"):
        pc.merge([pa, _piece(tmp_path, "c.json", "resnet20@0.5", a)])
    with pytest.raises(SystemExit, match="ft_batches"):
        pc.merge([pa, _piece(tmp_path, "d.json", "resnet20@0.3", b, ft_batches=30)])
    # the lower bound may differ between pieces (it bounds the draw, not how a policy is scored): named per draw
    low = pc.merge([pa, _piece(tmp_path, "e.json", "resnet20@0.3", b, lower_bound=0.1)])
    assert low["args"]["lower_bound"] == {"resnet20@0.5": ARGS["lower_bound"], "resnet20@0.3": 0.1}
    assert "resnet20 at 0.3: 0.1" in " ".join(low["table"]["notes"])
    assert "lower_bound" not in doc["args"] or not isinstance(doc["args"]["lower_bound"], dict)  # one bound: as it was


def test_a_study_with_no_points_writes_no_plot(tmp_path: Path) -> None:
    pc = load("proxy_correlation")
    pc.scatter([], tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()
    pc.scatter(
        [_point("resnet20", 0.5, i, {"bn-recal": x}, x) for i, x in enumerate([0.8, 0.9, 0.85])], tmp_path / "p.png"
    )
    assert (tmp_path / "p.png").stat().st_size > 0


def test_rescoring_adds_protocols_to_a_finished_study_and_keeps_its_fine_tuned_accuracies(tmp_path: Path) -> None:
    pc = load("proxy_correlation")
    accs = [0.80, 0.82, 0.85, 0.90]
    doc = json.loads(
        _piece(
            tmp_path,
            "s.json",
            "resnet20@0.5",
            [_point("resnet20", 0.5, i, {"bn-recal": 0.1}, a) for i, a in enumerate(accs)],
        ).read_text()  # fmt: skip
    )
    asked: list[tuple[str, int, str]] = []

    def score(model: str, point: dict[str, Any], label: str) -> float:
        asked.append((model, point["policy"], label))
        return point["finetuned_test_acc"] if label == "head-refit" else -point["finetuned_test_acc"]

    out = pc.add_scores(doc, ["head-refit", "reconstruct"], score, "s.json")
    assert sorted(asked) == sorted(("resnet20", i, k) for i in range(4) for k in ("head-refit", "reconstruct"))
    assert [p["finetuned_test_acc"] for p in out["points"]] == accs  # no new fine-tunes
    by = {r["protocol"]: r for r in out["rows"]}
    assert by["head-refit"]["kendall_tau"] == pytest.approx(1.0) and by["reconstruct"]["kendall_tau"] == pytest.approx(
        -1
    )
    assert by["bn-recal"]["kendall_tau"] == 0.0  # the study's own scores are kept (constant here)
    assert out["rescored"][0]["protocols"] == ["head-refit", "reconstruct"]
    assert "scored afterwards on the same policies" in " ".join(out["table"]["notes"])
    assert all("head-refit" not in p["scores"] for p in doc["points"])  # the input is not modified
    with pytest.raises(SystemExit, match=r"already has scores of \['head-refit'\]"):
        pc.add_scores(out, ["head-refit"], score, "again.json")
    with pytest.raises(SystemExit, match="unknown protocols.*adabn"):
        pc.add_scores(doc, ["adabn"], score, "s.json")
