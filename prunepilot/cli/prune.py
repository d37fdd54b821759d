"""``prunepilot prune``: apply a uniform ratio or a policy file to a model, with a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import typer
from rich.console import Console
from rich.table import Table

from prunepilot.cli.common import err_console, fail_on_error, parse_shape
from prunepilot.errors import ConfigError, PrunepilotError

if TYPE_CHECKING:
    from prunepilot.data import DataConfig
    from prunepilot.pruning import PruningPolicy

console = Console()


def register(app: typer.Typer) -> None:
    """Add the ``prune`` command to ``app``."""
    app.command("prune")(prune)


def prune(
    out: Path = typer.Option(..., "--out", help="Output folder for the pruned model, policy and report."),
    model: str | None = typer.Option(
        None, "--model", help="Model spec: zoo name, torchvision:NAME or pkg.module:fn."
    ),
    run: Path | None = typer.Option(
        None, "--run", help="Take --model, --checkpoint and --data from a search run folder."
    ),
    trust_code: bool = typer.Option(
        False,
        "--trust-code",
        help="Allow --run's config.yaml to name an import-path model spec or data name (runs its code).",
    ),
    uniform: float | None = typer.Option(
        None, "--uniform", help="Keep this ratio of every group, in (0, 1]."
    ),
    policy: Path | None = typer.Option(
        None, "--policy", help="A policy JSON file (e.g. from `prunepilot pareto --export`)."
    ),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Trained weights (state dict)."),
    data: str | None = typer.Option(
        None, "--data", help="Dataset for accuracy before/after: digits, fashion-mnist, cifar10."
    ),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Dataset folder (default: $PRUNEPILOT_DATA)."
    ),
    num_classes: int = typer.Option(
        10, "--num-classes", help="Classes of the model head (ignored with --data)."
    ),
    in_channels: int = typer.Option(3, "--in-channels", help="Input channels (ignored with --data)."),
    input_shape: str | None = typer.Option(
        None, "--input-shape", help="Example input N,C,H,W, e.g. 1,3,32,32 (default: from --data)."
    ),
    importance: str | None = typer.Option(
        None,
        "--importance",
        help="Channel criterion: l1, l2, bn-scale, taylor, hessian, random (default: the --policy "
        "file's, else l1; one that differs from the policy's wins, with a warning).",
    ),
    round_to: int = typer.Option(1, "--round-to", help="Round widths to multiples of this."),
    ignore: list[str] = typer.Option([], "--ignore", help="Module name never to prune (repeatable)."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an --out folder an earlier prune or apply wrote (never another)."
    ),
) -> None:
    """Prune a model structurally and write it with its policy and a report.

    Ratios are keep ratios: ``--uniform 0.5`` keeps half the channels of every group.
    """
    with fail_on_error():
        if run is not None:
            model, checkpoint, data, data_root = _from_run(run, model, checkpoint, data, data_root, trust_code)
        if model is None:
            raise ConfigError("give --model SPEC (or --run RUN to take it from a search run)")
        report = run_prune(
            model=model,
            out=out,
            uniform=uniform,
            policy_path=policy,
            checkpoint=checkpoint,
            data=data,
            data_root=data_root,
            num_classes=num_classes,
            in_channels=in_channels,
            input_shape=input_shape,
            importance=importance,
            round_to=round_to,
            ignore=ignore,
            overwrite=overwrite,
        )
    _print_report(report)


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

    if not (run / "config.yaml").is_file():
        raise ConfigError(f"--run {str(run)!r} is not a prunepilot run folder (no config.yaml); give a run folder")
    store = RunStore(run)
    source = str(run / "config.yaml")
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
    info = store.read_info()
    ckpt = info.get("base_checkpoint") or model_cfg.get("checkpoint")
    root = data_cfg.get("root")
    return (
        model or str(spec),
        checkpoint or (Path(ckpt) if ckpt else None),
        data or str(name),
        data_root or (Path(root) if root else None),
    )


def run_prune(
    *,
    model: str,
    out: Path,
    uniform: float | None,
    policy_path: Path | None,
    checkpoint: Path | None,
    data: str | None,
    data_root: Path | None,
    num_classes: int,
    in_channels: int,
    input_shape: str | None,
    importance: str | None,
    round_to: int,
    ignore: list[str],
    overwrite: bool,
) -> dict[str, Any]:
    """The ``prune`` command as a function; returns the report it writes.

    Every input (policy, data, model, checkpoint) loads, and the model is pruned, before ``out``
    is touched, so a bad input leaves ``out`` as it was; ``overwrite`` replaces only a folder an
    earlier prune or apply wrote (:mod:`prunepilot.apply.outdir`).
    """
    from prunepilot.apply.outdir import prepare_out_dir
    from prunepilot.models import load_model
    from prunepilot.pruning import (
        PruningPolicy,
        PruningSpace,
        apply_policy,
        recalibrate_bn,
    )
    from prunepilot.pruning.io import save_pruned
    from prunepilot.training import evaluate_accuracy

    if (uniform is None) == (policy_path is None):
        raise ConfigError("give exactly one of --uniform RATIO or --policy POLICY.json")
    if uniform is not None and not 0 < uniform <= 1:
        raise ConfigError(f"--uniform {uniform} is outside (0, 1]; it is the share of channels to KEEP")
    given = PruningPolicy.load(policy_path) if policy_path is not None else None  # a bad file fails first
    criterion = _choose_importance(importance, given, policy_path)
    _check_data_for(criterion, data is not None, importance, policy_path)
    bundle = None
    if data is not None:
        from prunepilot.data import build_data

        bundle = build_data(_data_config(data, data_root))
        num_classes, in_channels = bundle.num_classes, bundle.input_shape[0]
        shape: tuple[int, ...] = (1, *bundle.input_shape)
    elif input_shape is not None:
        shape = parse_shape(input_shape, flag="--input-shape")
    else:
        raise ConfigError("give --input-shape N,C,H,W (e.g. 1,3,32,32) or --data to take it from a dataset")

    base = load_model(model, checkpoint, num_classes=num_classes, in_channels=in_channels).eval()
    example = torch.zeros(*shape)
    space = PruningSpace.build(base, example, ignored_layers=tuple(ignore))
    if given is None:
        assert uniform is not None  # exactly one of the two, checked above
        pol = PruningPolicy.uniform(space, uniform, round_to=round_to, importance=criterion)
    else:
        pol = given.model_copy(update={"importance": criterion})
    calib = [(x, y) for x, y in bundle.calib] if bundle is not None else None
    # checks the policy first: another model's, a missing group or disagreeing ratios fail here
    pruned = apply_policy(base, pol, example, space=space, calib_batches=calib)
    prepare_out_dir(out, overwrite=overwrite, resumable=False)  # only now: every input has loaded and pruned
    report: dict[str, Any] = {
        "model": model,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "input_shape": list(shape),
        "importance": criterion,
        "groups": len(space.groups),
        "params_before": space.base_params,
        "params_after": space.params(pol.channels),
        "macs_before": space.base_macs,
        "macs_after": space.macs(pol.channels),
        "mean_keep_ratio": pol.mean_keep(),
    }
    if bundle is not None:
        report["accuracy_before"] = evaluate_accuracy(base, bundle.test)
        report["accuracy_after_no_recalibration"] = evaluate_accuracy(pruned, bundle.test)
        recalibrate_bn(pruned, bundle.calib)
        report["accuracy_after"] = evaluate_accuracy(pruned, bundle.test)
        report["accuracy_split"] = "test"
    save_pruned(
        out,
        pruned,
        pol,
        spec=model,
        num_classes=num_classes,
        in_channels=in_channels,
        input_shape=shape,
        ignored_layers=ignore,
    )
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _choose_importance(flag: str | None, policy: PruningPolicy | None, policy_path: Path | None) -> str:
    """The criterion to prune with: ``--importance`` if given, else the policy file's, else l1.

    A ``--importance`` that differs from the policy file's wins (the widths are the policy's
    either way; only which channels are kept changes), with a warning naming both.
    """
    from prunepilot.pruning import canonical_importance

    if flag is None:
        return policy.importance if policy is not None else "l1"
    try:
        chosen = canonical_importance(flag)
    except ValueError as exc:
        raise ConfigError(f"--importance: {exc}") from None
    if policy is not None and chosen != policy.importance:
        err_console.print(
            f"[bold yellow]warning:[/] --importance {chosen!r} replaces the importance {policy.importance!r} "
            f"of {str(policy_path)!r}; the written policy.json records {chosen!r}. Leave --importance out "
            "to use the policy's.",
            highlight=False,
            soft_wrap=True,
        )
    return chosen


def _check_data_for(criterion: str, has_data: bool, flag: str | None, policy_path: Path | None) -> None:
    """Data-dependent criteria need calibration batches: refuse them without --data, up front."""
    from prunepilot.errors import one_of
    from prunepilot.pruning.adapter import DATA_DEPENDENT, IMPORTANCE_CRITERIA

    if criterion in DATA_DEPENDENT and not has_data:
        where = f"--importance {criterion!r}"
        if flag is None:
            where = f"the importance {criterion!r} of {str(policy_path)!r}"
        free = one_of(sorted(set(IMPORTANCE_CRITERIA) - DATA_DEPENDENT))
        raise ConfigError(
            f"{where} scores channels on calibration data: give --data NAME, or choose a data-free criterion "
            f"with --importance: {free}"
        )


def _data_config(name: str, root: Path | None) -> DataConfig:
    """``DataConfig(name, root)``, its validation error as one :class:`ConfigError` line."""
    from pydantic import ValidationError

    from prunepilot.data import DataConfig

    try:
        return DataConfig(name=name, root=root)
    except ValidationError as exc:
        cause = exc.errors()[0].get("ctx", {}).get("error")
        if isinstance(cause, PrunepilotError):
            raise cause from None
        raise ConfigError(f"--data {name!r}: {exc.errors()[0]['msg']}") from None


def _print_report(report: dict[str, Any]) -> None:
    table = Table(title=f"pruned {report['model']}")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_row("params", f"{report['params_before']:,}", f"{report['params_after']:,}")
    table.add_row("MACs / sample", f"{report['macs_before']:,}", f"{report['macs_after']:,}")
    if "accuracy_before" in report:
        table.add_row(
            "accuracy (test, BN recalibrated)",
            f"{report['accuracy_before']:.4f}",
            f"{report['accuracy_after']:.4f}",
        )
    console.print(table)
