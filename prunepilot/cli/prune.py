"""``prunepilot prune``: apply a uniform ratio or a policy file to a model, with a report.

A thin front of ``prunepilot apply`` (:func:`prunepilot.apply.apply_to_model`): the same prune ->
BN recalibration path, output folder rules, ``pruned.json``/``policy.json``/``model.pt`` and
``report.json``, without fine-tuning, export or latency; ``--uniform`` and ``--run`` are its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from prunepilot.cli.common import DEFAULT_SHAPE_HELP, err_console, fail_on_error
from prunepilot.errors import ConfigError

if TYPE_CHECKING:
    from prunepilot.apply import ApplyConfig

console = Console()


def register(app: typer.Typer) -> None:
    """Add the ``prune`` command to ``app``."""
    app.command("prune")(prune)


def prune(
    out: Path = typer.Option(..., "--out", help="Output folder for the pruned model, policy and report."),
    model: str | None = typer.Option(None, "--model", help="Model spec: zoo name, torchvision:NAME or pkg.module:fn."),
    run: Path | None = typer.Option(
        None, "--run", help="Take --model, --checkpoint and --data from a search run folder."
    ),
    trust_code: bool = typer.Option(
        False,
        "--trust-code",
        help="Allow --run's config.yaml to name an import-path model spec or data name (runs its code).",
    ),
    uniform: float | None = typer.Option(None, "--uniform", help="Keep this ratio of every group, in (0, 1]."),
    policy: Path | None = typer.Option(
        None, "--policy", help="A policy JSON file (e.g. from `prunepilot pareto --export`)."
    ),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Trained weights (state dict)."),
    data: str | None = typer.Option(
        None, "--data", help="Dataset for accuracy before/after: digits, fashion-mnist, cifar10."
    ),
    data_root: Path | None = typer.Option(None, "--data-root", help="Dataset folder (default: $PRUNEPILOT_DATA)."),
    num_classes: int = typer.Option(10, "--num-classes", help="Classes of the model head (ignored with --data)."),
    in_channels: int = typer.Option(3, "--in-channels", help="Input channels (ignored with --data)."),
    input_shape: str | None = typer.Option(
        None,
        "--input-shape",
        help=f"Example input N,C,H,W, e.g. 1,3,32,32 (default: from --data, else {DEFAULT_SHAPE_HELP}).",
    ),
    importance: str | None = typer.Option(
        None,
        "--importance",
        help="Channel criterion: l1, l2, bn-scale, taylor, hessian, random (default: the --policy "
        "file's, else l1; one that differs from the policy's wins, with a warning).",
    ),
    round_to: int = typer.Option(1, "--round-to", help="With --uniform: round widths to multiples of this."),
    ignore: list[str] = typer.Option(
        [], "--ignore", help="Module never to prune (repeatable; default: the search's, when --policy names its run)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an --out folder an earlier prune or apply wrote (never another)."
    ),
) -> None:
    """Prune a model structurally and write it with its policy and a report.

    Ratios are keep ratios: ``--uniform 0.5`` keeps half the channels of every group. This is
    ``prunepilot apply`` without fine-tuning: the same pruning, BN recalibration, output folder
    and report (test accuracy with --data); load the result with prunepilot.load_pruned(OUT).
    """
    from prunepilot.apply import apply_to_model, print_report
    from prunepilot.cli.apply import build_config

    with fail_on_error():
        if run is not None:
            model, checkpoint, data, data_root = _from_run(run, model, checkpoint, data, data_root, trust_code)
        if model is None:
            raise ConfigError("give --model SPEC (or --run RUN to take it from a search run)")
        cfg = build_config(
            model=model,
            out=out,
            policy=policy,
            uniform=uniform,
            round_to=round_to,
            checkpoint=checkpoint,
            data=data,
            data_root=data_root,
            input_shape=input_shape,
            num_classes=num_classes,
            in_channels=in_channels,
            ignore=ignore,
            importance=importance,
            no_latency=True,  # no fine-tuning, export or latency: what apply adds to pruning
            train_device="cpu",
            overwrite=overwrite,
        )
        _warn_importance(cfg)
        result = apply_to_model(cfg)
    print_report(result.report, console)
    console.print(f"wrote {result.out} (report.json; load with prunepilot.load_pruned({str(result.out)!r}))")


def _from_run(
    run: Path,
    model: str | None,
    checkpoint: Path | None,
    data: str | None,
    data_root: Path | None,
    trust_code: bool,
) -> tuple[str, Path | None, str | None, Path | None]:
    """Fill model, checkpoint and data from a run folder (explicit flags win).

    The run's model spec and data name are code when they are import paths; they are used only
    with ``--trust-code`` (see :mod:`prunepilot.trust`), unless --model / --data replace them.
    """
    from prunepilot.search.store import RunStore
    from prunepilot.trust import require_trusted

    store = RunStore(run)
    if not store.is_run:
        raise ConfigError(f"--run {str(run)!r} is not a prunepilot run folder (no config.yaml); give a run folder")
    source = str(store.config_path)
    cfg = store.read_config()
    model_cfg, data_cfg = cfg.get("model"), cfg.get("data")
    if not isinstance(model_cfg, dict) or not isinstance(data_cfg, dict):
        raise ConfigError(f"{source} has no 'model' and 'data' sections; it is not a search run's config")
    spec, name = model_cfg.get("spec"), data_cfg.get("name")
    for key, value, given, flag in (("model.spec", spec, model, "--model"), ("data.name", name, data, "--data")):
        if given is None and not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}; or give {flag} yourself")
    require_trusted(
        model=None if model is not None else spec,
        data=None if data is not None else name,
        source=source,
        trust_code=trust_code,
        alternative="or give --model SPEC / --data NAME yourself to replace the run's",
    )
    ckpt = store.base_checkpoint()
    root = data_cfg.get("root")
    return (
        model or str(spec),
        checkpoint or ckpt,
        data or str(name),
        data_root or (Path(root) if root else None),
    )


def _warn_importance(cfg: ApplyConfig) -> None:
    """Warn when ``--importance`` replaces the ``--policy`` file's criterion (it wins; the widths are the
    policy's either way, only which channels are kept changes; the written policy.json records it)."""
    from prunepilot.pruning import PruningPolicy

    if cfg.importance is None or cfg.policy is None:
        return
    given = PruningPolicy.load(cfg.policy).importance
    if cfg.importance != given:
        err_console.print(
            f"[bold yellow]warning:[/] --importance {cfg.importance!r} replaces the importance {given!r} "
            f"of {str(cfg.policy)!r}; the written policy.json records {cfg.importance!r}. Leave --importance out "
            "to use the policy's.",
            highlight=False,
            soft_wrap=True,
        )
