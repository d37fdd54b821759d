"""``prunepilot search``, ``prunepilot pareto`` and ``prunepilot strategies``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from prunepilot.cli.common import fail_on_error
from prunepilot.errors import ConfigError

if TYPE_CHECKING:
    from prunepilot.search.records import Candidate, Metrics

console = Console(width=None if sys.stdout.isatty() else 120)


def register(app: typer.Typer) -> None:
    """Add the search commands to ``app``."""
    app.command("search")(search)
    app.command("pareto")(pareto)
    app.command("strategies")(strategies)


def search(
    config: Path | None = typer.Argument(None, help="Search config YAML (see configs/). Not needed with --resume."),
    strategy: str | None = typer.Option(
        None, "--strategy", help="Override strategy.name (see `prunepilot strategies`)."
    ),
    budget: str | None = typer.Option(
        None, "--budget", help="Latency budget: 12.5ms (absolute) or 50% / 0.5x of the base."
    ),
    device: str | None = typer.Option(None, "--device", help="Override device.name (see `prunepilot devices`)."),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Run folder (default runs/<name>-<timestamp>)."),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Connect to this Ray cluster instead of a local Ray."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Override seed."),
    evaluations: int | None = typer.Option(None, "--evaluations", help="Override strategy.evaluations."),
    depth: bool = typer.Option(
        False, "--depth", help="Also search which residual blocks to remove (sets evaluation.depth: true)."
    ),
    data_root: Path | None = typer.Option(None, "--data-root", help="Override data.root (else $PRUNEPILOT_DATA)."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue the search in this run folder."),
    backend: str = typer.Option(
        "ray", "--backend", help="ray: Tune trials on a local Ray or --ray-address; local: serially, without Ray."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    trust_code: bool = typer.Option(
        False,
        "--trust-code",
        help="With --resume: build an import-path model spec or data name (pkg.module:fn) read from the run "
        "folder's config.yaml (runs that code).",
    ),
) -> None:
    """Search pruning policies under a latency budget (Ray Tune trials, or --backend local); print the front."""
    from prunepilot.search.config import budget_override, load_config, validate_config
    from prunepilot.search.runner import BACKENDS, Backend, run_search
    from prunepilot.search.store import RunStore

    with fail_on_error():
        overrides: dict[str, Any] = {
            "strategy.name": strategy,
            "device.name": device,
            "ray.address": ray_address,
            "seed": seed,
            "strategy.evaluations": evaluations,
            "data.root": str(data_root) if data_root else None,
            "evaluation.depth": True if depth else None,
        }
        if backend not in BACKENDS:
            raise ConfigError(f"--backend {backend!r} is not a search backend; choose one of {', '.join(BACKENDS)}")
        chosen: Backend = "local" if backend == "local" else "ray"
        if resume is not None:
            from prunepilot.trust import require_trusted

            stored = RunStore(resume)
            cfg = validate_config(stored.read_config(), source=str(stored.config_path))
            require_trusted(
                model=cfg.model.spec, data=cfg.data.name, source=str(stored.config_path), trust_code=trust_code
            )
            result = run_search(cfg, resume, resume=True, progress=not quiet, backend=chosen)
        else:
            if config is None:
                raise ConfigError("give a config YAML (e.g. configs/quickstart.yaml) or --resume RUN")
            overrides.update({k: v for k, v in budget_override(budget).items()})
            cfg = load_config(config, overrides)
            result = run_search(cfg, run_dir, progress=not quiet, backend=chosen)
    _print_front(result.front, result.budget_ms, result.base)
    console.print(
        f"{len(result.candidates)} candidates, {result.failed_trials} failed trial records -> {result.run_dir}\n"
        f"next: prunepilot pareto {result.run_dir} --budget {result.budget_ms:.3f} --export policy.json"
    )
    if cfg.device.also:
        console.print(f"on the other devices: prunepilot pareto {result.run_dir} --device {cfg.device.also[0]}")


def _print_front(
    front: Sequence[Candidate], budget_ms: float | None, base: Metrics | None, device: str | None = None
) -> None:
    """The front as a table; ``*`` marks a point over the budget by its re-measured figure if it has one."""
    from prunepilot.search.front_table import front_table_rows

    rows = front_table_rows(front)
    kinds = {r["latency_kind"] for r in rows} | ({base.latency_kind} if base else set())
    kind = kinds.pop() if len(kinds) == 1 else "mixed"
    title = f"Pareto front{f' on {device}' if device else ''}: accuracy on the held-out train split, latency {kind}"
    if budget_ms:
        title += f"; budget {budget_ms:.3f} ms (* = over budget)"
    table = Table(title=title)
    for col in ("#", "accuracy", "latency ms", "MACs", "params", "keep", "strategy"):
        table.add_column(col, justify="left" if col == "strategy" else "right", no_wrap=True)
    if base:
        table.add_row(
            "base", f"{base.accuracy:.4f}", f"{base.latency_ms:.3f}", f"{base.macs:,}", f"{base.params:,}", "1.00", "-"
        )
    for row in rows:
        over = budget_ms is not None and row["budget_latency_ms"] > budget_ms
        lat = f"{row['latency_ms']:.3f}"
        if row.get("measured_latency_ms") is not None:
            lat += f" (measured {row['measured_latency_ms']:.3f})"
        lat += "*" if over else ""
        table.add_row(
            str(row["rank"]),
            f"{row['accuracy']:.4f}",
            lat,
            f"{row['macs']:,}",
            f"{row['params']:,}",
            f"{row['mean_keep_ratio']:.2f}",
            row["strategy"],
        )
    console.print(table)


def pareto(
    run: Path = typer.Argument(..., help="A run folder written by `prunepilot search`."),
    budget: float | None = typer.Option(
        None, "--budget", help="Latency budget in ms for --export (default: the run's, on --device its own)."
    ),
    device: str | None = typer.Option(
        None,
        "--device",
        help="Front, table, plots and --export on this device of the run's device.also (default: the "
        "search's device); writes front-NAME.json and pareto-NAME.png.",
    ),
    export: Path | None = typer.Option(None, "--export", help="Write the most accurate policy within the budget here."),
    objectives: str = typer.Option("accuracy,latency_ms", "--objectives", help="Comma-separated objectives."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip pareto.png / pareto.html."),
) -> None:
    """Print a run's Pareto front, write front.json, pareto.png and pareto.html, export a policy.

    Re-measured latencies survive (front.json keeps ``measured_latency_ms``), and ``--export``
    judges the budget on them: a front point measured over the budget is never exported. With
    ``--device NAME`` (a device of the search's ``device.also``) all of it is on that device's
    figures and budget; pareto.html switches between the run's devices.
    """
    from prunepilot.search.devices import device_view, front_layers, run_devices
    from prunepilot.search.pareto import (
        best_within_budget,
        budget_latency,
        default_reference,
        hypervolume,
        objectives_from_names,
        pareto_front,
        to_minimisation,
    )
    from prunepilot.search.store import RunStore, device_slug

    with fail_on_error():
        store = RunStore(run)
        store.read_config()
        view = device_view(store, device, budget)
        ok = view.candidates
        if not ok:
            raise ConfigError(
                f"run {str(run)!r} has no evaluated candidates {'yet' if view.primary else 'on ' + view.name}"
            )
        base = view.base
        objs = objectives_from_names([o.strip() for o in objectives.split(",") if o.strip()])
        front = pareto_front(ok, objs)
        ref = default_reference(ok, objs, base=base)
        hv = hypervolume(to_minimisation(front, objs), ref)
        budget_ms = view.budget_ms
        names = run_devices(store)
        _print_front(front, budget_ms, base, device=view.name if len(names) > 1 else None)
        console.print(f"hypervolume {hv:.6g} (reference {list(map(float, ref))}); {len(ok)} candidates")
        if view.left_out:
            console.print(f"{view.left_out} candidates have no latency on {view.name} and are left out")
        store.write_front(front, device=None if view.primary else view.name)
        if not no_plots:
            layers = {view.name: front_layers(view, front)}
            for name in names[1:] if view.primary else [n for n in names if n != view.name]:
                other = device_view(store, name)
                layers[name] = front_layers(other, pareto_front(other.candidates))
            png_name = "pareto.png" if view.primary else f"pareto-{device_slug(view.name)}.png"
            png, html = store.write_plots(layers, png_name)
            console.print(f"wrote {png} and {html}")
        if export is not None:
            if budget_ms is None:
                raise ConfigError("--export needs --budget MS (the run has no budget recorded)")
            best = best_within_budget(ok, float(budget_ms))
            if best is None:
                fastest = min(budget_latency(c) or float("inf") for c in ok)
                raise ConfigError(
                    f"no candidate is within {budget_ms} ms (re-measured figures count where there are any); "
                    f"the fastest is {fastest:.3f} ms; raise --budget"
                )
            store.export_policy(best, export)
            m = best.metrics
            shown = f"{m.latency_ms:.3f} ms {m.latency_kind}"
            if best.measured is not None:
                shown += f" (measured {best.measured.latency_ms:.3f} ms)"
            shown += "" if view.primary else f" on {view.name}"
            console.print(f"exported {best.id}: accuracy {m.accuracy:.4f}, latency {shown} -> {export}")


def strategies() -> None:
    """List the search strategies."""
    from prunepilot.search.strategies import strategy_class, strategy_names

    table = Table(title="strategies")
    table.add_column("name")
    table.add_column("kind")
    table.add_column("settings")
    table.add_column("what it does")
    for name in strategy_names():
        cls = strategy_class(name)
        table.add_row(name, cls.kind, ", ".join(cls.Settings.model_fields), cls.description)
    console.print(table)
