"""The ``remote`` latency model: send a candidate to a device server and read its timing.

Example device config (``configs/devices/jetson-remote.yaml``)::

    name: jetson-remote
    latency_model: remote
    settings:
      url: https://jetson.local:8765       # http:// only on loopback or a trusted link
      token_env: PRUNEPILOT_DEVICE_TOKEN
      ca_file: certs/jetson.pem             # a self-signed server certificate (or its CA)
      format: onnx
"""

from __future__ import annotations

import io
import json
import os
import ssl
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from prunepilot.hw_models.base import HardwareError, LatencyModel, LatencyResult, batched_input_shape
from prunepilot.hw_models.onnxrt import export_onnx_bytes
from prunepilot.hw_models.registry import register_latency_model
from prunepilot.hw_models.server import FORMATS, TOKEN_HEADER


def torchscript_bytes(model: nn.Module, input_shape: Sequence[int]) -> bytes:
    """Trace ``model`` (eval mode) on zeros of ``input_shape`` and save the archive to bytes."""
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream
            with torch.no_grad():
                traced = torch.jit.trace(model, torch.zeros(*[int(s) for s in input_shape]))
            buf = io.BytesIO()
            torch.jit.save(traced, buf)
        return buf.getvalue()
    finally:
        model.train(was_training)


@register_latency_model("remote")
class RemoteLatency(LatencyModel):
    """Measured on a remote device server (``prunepilot device-server``).

    Args:
        url: Server address, e.g. ``https://jetson.local:8765`` (a server started with
            ``--tls-cert/--tls-key``) or ``http://127.0.0.1:8765`` (loopback, an SSH tunnel).
        token_env: Environment variable holding the shared token (preferred: configs stay
            free of secrets).
        token: The token itself (tests); overrides ``token_env``.
        ca_file: PEM file to verify an ``https://`` server with (its self-signed certificate or
            CA); default: the system's trusted CAs.
        format: ``"onnx"`` (timed in ONNX Runtime on the device) or ``"torchscript"`` (only
            accepted by a server started with ``--allow-torchscript``).
        timeout_s: Seconds to wait for the server's answer (timing included).
        exporter: ONNX exporter, ``"dynamo"`` or ``"legacy"``.
    """

    requires_model = True

    def __init__(
        self,
        url: str,
        token_env: str = "PRUNEPILOT_DEVICE_TOKEN",
        token: str | None = None,
        ca_file: str | None = None,
        format: str = "onnx",  # noqa: A002 - the config key users write
        timeout_s: float = 300.0,
        exporter: str = "dynamo",
    ) -> None:
        if format not in FORMATS:
            raise HardwareError(f"remote format {format!r} is not accepted; use 'onnx' or 'torchscript'")
        if not url.startswith(("http://", "https://")):
            raise HardwareError(f"remote url {url!r} must start with http:// or https://")
        if ca_file is not None and not url.startswith("https://"):
            raise HardwareError(f"remote ca_file {ca_file!r} is given but url {url!r} is not https://")
        self.url = url.rstrip("/")
        self.ca_file = ca_file
        self.token_env = token_env
        self._token = token
        self.format = format
        self.timeout_s = float(timeout_s)
        self.exporter = exporter

    def _token_value(self) -> str:
        token = self._token if self._token is not None else os.environ.get(self.token_env, "")
        if not token:
            raise HardwareError(
                f"no token for device server {self.url}: set the environment variable {self.token_env} "
                "to the token the server was started with"
            )
        return token

    def _ssl_context(self) -> ssl.SSLContext | None:
        """Built per request: an SSLContext does not pickle, and a remote model travels to Ray workers."""
        if not self.url.startswith("https://"):
            return None
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise HardwareError(
                f"cannot read the remote ca_file {self.ca_file!r}: {exc}; give the server's PEM certificate"
            ) from None

    def _request(self, method: str, path: str, body: bytes | None = None) -> dict[str, Any]:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        req.add_header(TOKEN_HEADER, self._token_value())
        if body is not None:
            req.add_header("Content-Type", "application/octet-stream")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s, context=self._ssl_context()) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            try:
                msg = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, OSError):
                msg = exc.reason
            raise HardwareError(f"device server {self.url} answered {exc.code}: {msg}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HardwareError(
                f"cannot reach device server {self.url} ({reason}); is `prunepilot device-server` running there "
                f"and reachable within {self.timeout_s:g} s?"
            ) from None

    def info(self) -> dict[str, Any]:
        """The server's ``/info``: device, CPU, versions, upload limit, protocol."""
        return self._request("GET", "/info")

    def measure_bytes(self, data: bytes, fmt: str, shape: Sequence[int]) -> LatencyResult:
        """Send an already exported model (``fmt`` is ``onnx`` or ``torchscript``)."""
        query = f"/measure?format={fmt}&shape={'x'.join(str(int(s)) for s in shape)}"
        ans = self._request("POST", query, data)
        return LatencyResult(
            ms=float(ans["ms"]),
            kind="measured",
            model_name=self.name,
            cv=float(ans["cv"]),
            iqr_ms=float(ans["iqr_ms"]),
            details={**ans.get("details", {}), "server": self.url},
        )

    def measure_ms(self, model: nn.Module, input_shape: Sequence[int], batch_size: int = 1) -> LatencyResult:
        shape = batched_input_shape(input_shape, batch_size)
        if self.format == "onnx":
            data = export_onnx_bytes(model, shape, self.exporter)
        else:
            data = torchscript_bytes(model, shape)
        return self.measure_bytes(data, self.format, shape)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "url": self.url,
            "format": self.format,
            "token_env": self.token_env,
            "ca_file": self.ca_file,
        }
