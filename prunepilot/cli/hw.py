"""Hardware commands: ``devices``, ``profile``, ``calibrate``, ``hw-eval``, ``device-server``."""

from __future__ import annotations

import json
import os
import platform
import random
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from prunepilot.cli.common import DEFAULT_SHAPE_HELP, err_console, fail_on_error, parse_shape
from prunepilot.errors import ConfigError

console = Console()


def register(app: typer.Typer) -> None:
    """Add the hardware commands to ``app``."""
    app.command("devices")(devices)
    app.command("profile")(profile)
    app.command("calibrate")(calibrate)
    app.command("hw-eval")(hw_eval)
    app.command("device-server")(device_server)


def _model(spec: str, input_shape: str | None, num_classes: int | None) -> tuple[Any, tuple[int, ...]]:
    from prunepilot.models import build_model, default_input_shape, parse_spec

    is_tv = parse_spec(spec).kind == "torchvision"
    classes = num_classes if num_classes is not None else (1000 if is_tv else 10)
    shape = parse_shape(input_shape) if input_shape else default_input_shape(spec)
    return build_model(spec, num_classes=classes, in_channels=shape[1]).eval(), shape


def _local_cpu_settings(device: Any) -> dict[str, Any]:
    if device.latency_model != "torch-cpu":
        raise ConfigError(
            f"device {device.name!r} uses latency model {device.latency_model!r}; profiling times layers on this "
            "machine, so use a device whose latency_model is 'torch-cpu' (e.g. local-cpu), run `prunepilot "
            "profile` on the target itself, or use the 'remote' latency model there"
        )
    return dict(device.settings)


# --- devices ---------------------------------------------------------------------------------
def devices() -> None:
    """List device configs and shipped roofline profiles, and this machine's hardware."""
    with fail_on_error():
        import torch

        from prunepilot.hw_models.devices import device_dirs, list_devices
        from prunepilot.hw_models.measure import cpu_name

        errors: list[str] = []
        table = Table(title="devices (configs/devices/*.yaml and shipped roofline profiles)")
        for col in ("name", "latency model", "settings", "description"):
            table.add_column(col)
        for d in list_devices(errors):
            settings = ", ".join(f"{k}={v}" for k, v in d.settings.items() if "token" not in k or k == "token_env")
            summary = d.description.split(". ")[0].split(" (")[0].rstrip(".")
            table.add_row(d.name, d.latency_model, settings, summary)
        console.print(table)
        for e in errors:
            err_console.print(f"[yellow]skipped invalid device config:[/] {e}", highlight=False)
        try:
            import onnxruntime as ort

            providers = ", ".join(ort.get_available_providers())
        except ImportError:
            providers = "(onnxruntime not installed)"
        cuda = torch.cuda.is_available()
        local = Table(title="local hardware", show_header=False)
        local.add_row("CPU", cpu_name())
        local.add_row("cores", str(os.cpu_count()))
        local.add_row("torch threads", str(torch.get_num_threads()))
        local.add_row("CUDA", torch.cuda.get_device_name(0) if cuda else "not available")
        local.add_row("ONNX Runtime providers", providers)
        local.add_row("platform", platform.platform())
        local.add_row("device config folders", ", ".join(str(d) for d in device_dirs()))
        console.print(local)


# --- profile ---------------------------------------------------------------------------------
def profile(
    device: str = typer.Option(..., "--device", help="Device config name or path (latency model torch-cpu)."),
    model: str = typer.Option(..., "--model", help="Model spec: zoo name, torchvision:NAME or pkg.module:fn."),
    out: Path = typer.Option(..., "--out", help="Where to write the lookup table JSON."),
    input_shape: str | None = typer.Option(None, "--input-shape", help=f"N,C,H,W (default {DEFAULT_SHAPE_HELP})."),
    num_classes: int | None = typer.Option(None, "--num-classes", help="Classes of the model head."),
    fractions: str = typer.Option(
        "0.125,0.25,0.5,0.75,1.0", "--grid", help="Grid points per channel axis, as fractions."
    ),
    extra_samples: int = typer.Option(6, "--extra-samples", help="Random off-grid points per layer type."),
    rounds: int = typer.Option(1, "--rounds", help="Interleaved timing rounds (lowest median kept)."),
) -> None:
    """Time each layer type of a model over a grid of channel counts: a lookup table."""
    with fail_on_error():
        from prunepilot.hw_models.devices import load_device
        from prunepilot.hw_models.lut_profile import profile_model

        dev = load_device(device)
        settings = _local_cpu_settings(dev)
        net, shape = _model(model, input_shape, num_classes)
        try:
            grid = [float(f) for f in fractions.split(",")]
        except ValueError:
            raise ConfigError(f"--grid {fractions!r} must be comma-separated fractions like 0.25,0.5,1.0") from None
        if not grid or any(not 0 < f <= 1 for f in grid):
            raise ConfigError(f"--grid {fractions!r}: every fraction must be in (0, 1]")
        lut = profile_model(
            net, shape, device=dev.name, model_spec=model, threads=settings.get("threads", 1),
            clock=settings.get("clock", "wall"), fractions=grid, extra_samples=extra_samples, rounds=rounds,
        )  # fmt: skip
        path = lut.save(out)
        m = lut.meta
        console.print(
            f"wrote {path}: {len(lut.entries)} layer types; model measured {m['model_measured_ms']:.3f} ms, "
            f"table {m['model_table_ms']:.3f} ms; scale {lut.scale:.3f}, overhead {lut.overhead_ms:.3f} ms "
            f"({m['profile_seconds']:.0f} s)"
        )


# --- calibrate -------------------------------------------------------------------------------
def calibrate(
    device: str = typer.Option(
        ..., "--device", help="Device config whose latency model measures (torch-cpu, remote...)."
    ),
    model: list[str] = typer.Option(..., "--model", help="Model spec (repeatable)."),
    out: Path = typer.Option(..., "--out", help="Where to write the calibrated profile YAML."),
    profile_name: str | None = typer.Option(
        None, "--profile", help="Roofline profile to calibrate (default: the device's)."
    ),
    samples: int = typer.Option(8, "--samples", help="Measured models in all (<= 10): random policies of --model."),
    input_shape: str | None = typer.Option(None, "--input-shape", help=f"N,C,H,W (default {DEFAULT_SHAPE_HELP})."),
    num_classes: int | None = typer.Option(None, "--num-classes", help="Classes of the model head."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random policies."),
    lut: Path | None = typer.Option(None, "--lut", help="Also fit a learned model on this lookup table's samples..."),
    learned_out: Path | None = typer.Option(None, "--learned-out", help="...and write it here (JSON, no pickle)."),
) -> None:
    """Fit a roofline profile's scale and overhead to <= 10 measured models of this device.

    With --lut and --learned-out, also train the learned latency model on the table's layer
    samples, calibrate it on the same measured models and save it (device settings: path=...).
    """
    with fail_on_error():
        import torch

        from prunepilot.hw_models.devices import load_device
        from prunepilot.hw_models.hweval import random_ratios
        from prunepilot.hw_models.roofline import calibrate_profile, load_profile, save_profile
        from prunepilot.pruning import PruningPolicy, PruningSpace, apply_policy

        if not 1 <= samples <= 10:
            raise ConfigError(f"--samples {samples}: calibration uses 1 to 10 measured models")
        dev = load_device(device)
        lm = dev.build()
        if not lm.requires_model:
            raise ConfigError(
                f"device {dev.name!r} predicts ({dev.latency_model}); calibrate against a measuring device"
            )
        prof = load_profile(profile_name or dev.profile or "x86-avx2-core")
        rng = random.Random(seed)
        per_model = max(1, samples // len(model))
        data = []
        for spec in model:
            net, shape = _model(spec, input_shape, num_classes)
            x = torch.randn(*shape)
            space = PruningSpace.build(net, x)
            for k in range(per_model):
                ratios = {n: 1.0 for n in space.names} if k == 0 else random_ratios(space.names, rng, 0.25, 0.15)
                pol = PruningPolicy.from_ratios(space, ratios)
                res = lm.measure_ms(apply_policy(net, pol, x, space=space), shape, shape[0])
                data.append((space.layers(pol.channels), res.ms))
                console.print(f"  {spec} #{k}: {res.ms:.3f} ms (CV {res.cv or 0:.3f})")
        if (lut is None) != (learned_out is None):
            raise ConfigError("--lut and --learned-out go together: the table to train on and where to save")
        cal = calibrate_profile(prof, data[:10], measured_with=f"{dev.name} ({dev.latency_model})")
        save_profile(cal, out)
        c = cal.calibration
        assert c is not None
        console.print(
            f"wrote {out}: scale {cal.scale:.3f}, fixed overhead {cal.fixed_overhead_ms:.3f} ms "
            f"(fit on {c.samples} models: MAPE {100 * c.mape:.1f}%, RMSE {c.rmse_ms:.3f} ms)"
        )
        if lut is not None and learned_out is not None:
            from prunepilot.hw_models.learned import LearnedLatency

            learned = LearnedLatency(lut=lut, reference_profile=profile_name or dev.profile or "x86-avx2-core")
            learned.calibrate(data[:10]).save(learned_out)
            console.print(f"wrote {learned_out}: learned model on {len(learned.samples)} layer samples")


# --- hw-eval ---------------------------------------------------------------------------------
def hw_eval(
    device: str = typer.Option(..., "--device", help="Device config whose latency model measures (the truth)."),
    model: str = typer.Option(..., "--model", help="Model spec."),
    samples: int = typer.Option(50, "--samples", help="Random policies scored."),
    calib: int = typer.Option(10, "--calib", help="Extra policies to calibrate the predictors (<= 10)."),
    lut: Path | None = typer.Option(None, "--lut", help="Lookup table JSON (enables the lut and learned models)."),
    rounds: int = typer.Option(3, "--rounds", help="Interleaved measurement rounds per candidate."),
    input_shape: str | None = typer.Option(None, "--input-shape", help=f"N,C,H,W (default {DEFAULT_SHAPE_HELP})."),
    num_classes: int | None = typer.Option(None, "--num-classes", help="Classes of the model head."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random policies."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the full report as JSON here."),
) -> None:
    """Measure random policies and score every latency model: MAPE, ±5/10%, Spearman, false-in-budget."""
    with fail_on_error():
        from prunepilot.hw_models.devices import load_device
        from prunepilot.hw_models.hweval import HwEvalSettings, run_hw_eval
        from prunepilot.hw_models.lut import LookupTable

        dev = load_device(device)
        measurer = dev.build()
        if not measurer.requires_model:
            raise ConfigError(
                f"device {dev.name!r} predicts ({dev.latency_model}); hw-eval needs a measuring device "
                "(torch-cpu, onnxruntime-cpu, torch-cuda or remote) as the truth"
            )
        net, shape = _model(model, input_shape, num_classes)
        table = LookupTable.load(lut) if lut else None
        settings = HwEvalSettings(
            samples=samples, calib=calib, rounds=rounds, seed=seed, roofline_profile=dev.profile or "x86-avx2-core"
        )
        rep = run_hw_eval(
            net, shape, measurer, settings, model_name=model, lut=table, log=lambda m: err_console.print(m)
        )
        t = Table(title=f"hw-eval: {model} on {dev.name} ({len(rep.measured_ms)} candidates)")
        for col in ("latency model", "MAPE", "±5%", "±10%", "Spearman", "false within budget", "predictions/s"):
            t.add_column(col, justify="right" if col != "latency model" else "left")
        for name, m in rep.metrics.items():
            t.add_row(
                name,
                f"{100 * m.mape:.1f}%",
                f"{100 * m.within_5:.0f}%",
                f"{100 * m.within_10:.0f}%",
                f"{m.spearman:.3f}",
                f"{100 * m.false_within_budget:.0f}%",
                f"{rep.predictions_per_s[name]:.0f}",
            )
        console.print(t)
        r = rep.repeatability
        console.print(
            f"measurements/s {rep.measurements_per_s:.2f}; repeatability (ceiling): spread {100 * r['spread']:.1f}% "
            f"over {len(r['medians_ms'])} runs, CVs {', '.join(f'{v:.3f}' for v in r['cvs'])}"
        )
        if json_out:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(rep.to_dict(), indent=1))
            console.print(f"wrote {json_out}")


# --- device-server ---------------------------------------------------------------------------
def device_server(
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Interface to listen on (0.0.0.0: all; beyond loopback use --tls-cert/--tls-key)."
    ),
    port: int = typer.Option(8765, "--port", help="TCP port (0: any free port)."),
    token_env: str = typer.Option(
        "PRUNEPILOT_DEVICE_TOKEN", "--token-env", help="Environment variable with the shared token."
    ),
    max_upload_mb: float = typer.Option(256.0, "--max-upload-mb", help="Largest accepted model upload, MB."),
    threads: int = typer.Option(1, "--threads", help="Runtime threads for timing."),
    timeout: float = typer.Option(
        60.0, "--timeout", help="Seconds a client has to send a whole request (headers and body) before 408."
    ),
    header_timeout: float = typer.Option(
        10.0, "--header-timeout", help="Seconds a client has to send its request line and headers before 408."
    ),
    measure_timeout: float = typer.Option(
        120.0, "--measure-timeout", help="Seconds one measurement may take (load, checks, timing) before 422."
    ),
    max_connections: int = typer.Option(16, "--max-connections", help="Connections served at once; more get 503."),
    max_input_elements: int = typer.Option(
        1 << 24, "--max-input-elements", help="Largest input shape (product of its sizes) accepted; more get 400."
    ),
    worker_memory_mb: int = typer.Option(
        2048, "--worker-memory-mb", help="Memory the measurement worker may use beyond its idle footprint, MB."
    ),
    allow_torchscript: bool = typer.Option(
        False, "--allow-torchscript", help="Also accept TorchScript (it is code; file/IO operators are refused)."
    ),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate for HTTPS (with --tls-key)."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key for HTTPS (with --tls-cert)."),
    name: str | None = typer.Option(None, "--name", help="Device name reported to clients (default: hostname)."),
) -> None:
    """Serve latency measurements of uploaded ONNX models (TorchScript if allowed; never pickle)."""
    with fail_on_error():
        import logging

        from prunepilot.hw_models.measure import MeasureProtocol
        from prunepilot.hw_models.server import INSECURE_WARNING, DeviceServer

        token = os.environ.get(token_env, "")
        if not token:
            raise ConfigError(
                f"environment variable {token_env} is empty or unset; export the shared token there first"
            )
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        srv = DeviceServer(
            (host, port), token, max_upload_bytes=int(max_upload_mb * 1024 * 1024), request_timeout_s=timeout,
            header_timeout_s=header_timeout, measure_timeout_s=measure_timeout, max_connections=max_connections,
            max_input_elements=max_input_elements, worker_memory_mb=worker_memory_mb,
            allow_torchscript=allow_torchscript, tls_cert=str(tls_cert) if tls_cert else None,
            tls_key=str(tls_key) if tls_key else None, protocol=MeasureProtocol(threads=threads), device_name=name,
        )  # fmt: skip
        if srv.insecure:
            err_console.print(f"[bold red]WARNING:[/] {INSECURE_WARNING % host}", highlight=False, soft_wrap=True)
        console.print(
            f"prunepilot device server on {srv.url} (token from ${token_env}; formats: {', '.join(srv.formats)}); "
            "Ctrl-C stops it"
        )
        try:
            srv.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            srv.server_close()
