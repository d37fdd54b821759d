"""The printed verification table of ``prunepilot apply`` (the same facts as ``report.json``)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def report_table(report: dict[str, Any]) -> Table:
    """A rich table: size, test accuracy per stage, latency vs the search figure, export checks."""
    table = Table(title=f"applied {report['policy']} to {report['model']} ({report['policy_match']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("detail")
    for key, label in (("params", "params"), ("macs", "MACs / sample")):
        sec = report[key]
        table.add_row(label, f"{sec['before']:,} -> {sec['after']:,}", f"x{sec['ratio']:.3f}")
    acc = report["accuracy"]
    if acc.get("split"):
        split = acc["split"]
        table.add_row(f"accuracy before pruning ({split})", _pct(acc["before_pruning"]), "")
        table.add_row(
            f"accuracy after pruning ({split})",
            _pct(acc["after_pruning"]),
            f"+BN recalibration; without: {_pct(acc['after_pruning_no_recalibration'])}",
        )
        rec = report.get("reconstruction")
        if rec is not None and acc.get("after_reconstruction") is not None:
            refit = [f for f in rec["layers"] if f["refit"]]
            table.add_row(
                f"accuracy after reconstruction ({split})",
                _pct(acc["after_reconstruction"]),
                f"least squares on calibration images: {len(refit)} layer(s) refit, then BN recalibration",
            )
        if acc.get("after_finetuning") is not None:
            ft = report["finetune"]
            how = f"{ft['epochs_per_step']} epoch(s)" + (f" x {ft['iterative']} steps" if ft["iterative"] > 1 else "")
            how += ", KD" if ft.get("distill") else ""
            at_init = report.get("at_init")
            how += f", pruned at initialisation by {at_init['criterion']} (seed {at_init['seed']})" if at_init else ""
            table.add_row(f"accuracy after fine-tuning ({split})", _pct(acc["after_finetuning"]), how)
    else:
        table.add_row("accuracy", "-", acc.get("note", ""))
    search_acc = report.get("search", {}).get("accuracy")
    if search_acc is not None:
        table.add_row("search-time accuracy (val)", _pct(search_acc), "BN recalibrated, no fine-tuning")
    lat = report.get("latency")
    if lat:
        unit = f"{lat['kind']}, {lat['latency_model']} on {lat['device']}, batch {lat['batch_size']}"
        ms = lat.get("unit", "ms")
        table.add_row("latency base -> applied", f"{lat['base_ms']:.3f} -> {lat['pruned_ms']:.3f} {ms}", unit)
        s = lat["search"]
        if s.get("ms") is not None:
            verdict = {True: "within ±10%", False: "OUTSIDE ±10%", None: "not judged"}[lat["within_10pct"]]
            table.add_row(
                "latency at search time",
                f"{s['ms']:.3f} {ms}",
                f"{s.get('kind')}, {s.get('latency_model')}; diff {lat['diff_pct']:+.1f}% ({verdict})"
                + (
                    f"; base drifted {lat['drift_pct']:+.1f}% since, corrected diff "
                    f"{lat['diff_pct_drift_corrected']:+.1f}%"
                    if lat.get("diff_pct_drift_corrected") is not None
                    else ""
                )
                + (f"; {lat['note']}" if lat.get("note") else ""),
            )
        elif lat.get("note"):
            table.add_row("latency at search time", "-", lat["note"])
    for check in report["exports"]:
        if check["ok"]:
            detail = (
                f"max |diff| {check['max_abs_diff']:.2e} <= {check['tolerance']:g} "
                f"(|out| <= {check['max_abs_output']:.3g})"
            )
        else:
            detail = check.get("error") or "failed"
        table.add_row(f"export {check['format']}", "ok" if check["ok"] else "FAILED", detail)
    table.add_row("time", f"{report['seconds']['total']:.1f} s", f"pruning {report['seconds']['prune']:.2f} s")
    return table


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    """Print :func:`report_table` for ``report``."""
    (console or Console()).print(report_table(report))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"
