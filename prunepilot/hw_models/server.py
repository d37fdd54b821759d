"""The device server: times models it receives, on the device it runs on.

Run ``prunepilot device-server --host 0.0.0.0 --port 8765 --token-env PRUNEPILOT_DEVICE_TOKEN``
on the target (a Jetson, a Pi, another server); the ``remote`` latency model sends candidates.

Protocol (HTTP/1.0, JSON answers, one request per connection):

* every request carries the shared token in ``X-Prunepilot-Token`` (compared in constant
  time); a wrong or missing token gets 401;
* ``GET /info``: device name, CPU, runtimes, versions, upload limit and timing protocol;
* ``POST /measure?format=onnx|torchscript&shape=1x3x32x32`` with the model file as the body:
  the timing (median ms, CV, IQR and the protocol record). ONNX is checked with
  ``onnx.checker`` (external-data references are refused) and timed in ONNX Runtime;
  TorchScript is loaded with ``torch.jit.load`` from bytes and timed in torch. Pickles and
  ``torch.save`` checkpoints are refused: nothing but the model is ever executed.

Errors are JSON ``{"error": "...", "status": N}``: 400 malformed, 401 token, 404 path,
408 upload timed out, 411 no Content-Length, 413 too large, 415 not ONNX/TorchScript,
422 the model does not run. The server keeps serving after every error, and times one model
at a time so concurrent uploads do not disturb each other's timings.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import socket
import threading
import warnings
import zipfile
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prunepilot.hw_models.base import HardwareError, runtime_versions
from prunepilot.hw_models.measure import MeasureProtocol, TimingStats, cpu_name, time_cpu_callable, torch_threads

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Prunepilot-Token"
FORMATS = ("onnx", "torchscript")
_DRAIN_CHUNK = 1 << 16
#: Largest unread body drained before a 400/401/404 answer (a refused client gets no more).
_REFUSED_DRAIN = 1 << 20


class RequestError(Exception):
    """An HTTP error answer: status code and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1x3x32x32"`` or ``"1,3,32,32"`` -> ``(1, 3, 32, 32)``."""
    try:
        dims = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise RequestError(400, f"shape {text!r} is not a list of integers like 1x3x32x32") from None
    if len(dims) < 2 or any(d <= 0 for d in dims) or len(dims) > 8:
        raise RequestError(400, f"shape {text!r} must have 2 to 8 positive dimensions, like 1x3x32x32")
    return dims


def sniff_format(data: bytes) -> str:
    """``"onnx"``, ``"torchscript"``, or a RequestError(415) for pickles and other files."""
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        raise RequestError(
            415,
            "pickled objects are never accepted; export the model to ONNX (torch.onnx.export) "
            "or TorchScript (torch.jit.script(model).save(path)) and upload that",
        )
    if data[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile:
            raise RequestError(415, "the upload looks like a zip file but cannot be read") from None
        if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
            return "torchscript"
        raise RequestError(
            415,
            "this zip is not a TorchScript archive (a torch.save checkpoint is a pickle and is never "
            "accepted); save with torch.jit.script(model).save(path) or upload ONNX",
        )
    return "onnx"


def check_onnx(data: bytes) -> None:
    """Parse and check an ONNX model; refuse external-data references (they read server files)."""
    import onnx

    try:
        model = onnx.load_model_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise RequestError(415, f"not a valid ONNX model ({type(exc).__name__}: {str(exc)[:300]})") from None
    if len(model.graph.node) == 0:
        raise RequestError(415, "not a valid ONNX model (the graph has no nodes)")
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise RequestError(
                415, "ONNX models with external data are refused; export with external_data=False (one file)"
            )


def time_torchscript_bytes(data: bytes, shape: Sequence[int], protocol: MeasureProtocol) -> tuple[TimingStats, int]:
    """Load a TorchScript archive from bytes and time it in torch (CPU)."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream
            module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:
        raise RequestError(415, f"not a loadable TorchScript archive ({str(exc)[:300]})") from None
    module.eval()
    gen = torch.Generator().manual_seed(protocol.seed)
    x = torch.randn(*shape, generator=gen)
    with torch_threads(protocol.threads) as threads, torch.inference_mode():
        try:
            module(x)
        except Exception as exc:
            raise RequestError(
                422, f"the TorchScript model fails on input shape {list(shape)}: {str(exc)[:300]}"
            ) from None
        stats = time_cpu_callable(lambda: module(x), protocol)
    return stats, threads


class DeviceServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` that times uploaded ONNX/TorchScript models.

    Example (tests; port 0 picks a free port):
        >>> srv = DeviceServer(("127.0.0.1", 0), token="s3cret")  # doctest: +SKIP
        >>> thread = srv.start_in_thread()  # doctest: +SKIP
        >>> srv.url  # doctest: +SKIP
        'http://127.0.0.1:40123'
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        token: str,
        *,
        max_upload_bytes: int = 256 * 1024 * 1024,
        request_timeout_s: float = 60.0,
        protocol: MeasureProtocol | None = None,
        device_name: str | None = None,
    ) -> None:
        if not token:
            raise HardwareError("the device server needs a non-empty shared token (set it in the --token-env variable)")
        if max_upload_bytes <= 0:
            raise HardwareError(f"max_upload_bytes must be positive, got {max_upload_bytes}")
        self.token = token
        self.max_upload_bytes = int(max_upload_bytes)
        self.request_timeout_s = float(request_timeout_s)
        self.protocol = protocol or MeasureProtocol()
        self.device_name = device_name or socket.gethostname()
        self.measure_lock = threading.Lock()
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        """``http://host:port`` the server listens on."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start_in_thread(self) -> threading.Thread:
        """Serve in a daemon thread (tests); stop with :meth:`shutdown` then ``server_close``."""
        t = threading.Thread(target=self.serve_forever, name="prunepilot-device-server", daemon=True)
        t.start()
        return t

    def info(self) -> dict[str, Any]:
        """What ``GET /info`` answers."""
        return {
            "device": self.device_name,
            "cpu": cpu_name(),
            "formats": list(FORMATS),
            "runtimes": {"onnx": "onnxruntime-cpu", "torchscript": "torch-eager-cpu"},
            "versions": runtime_versions("onnxruntime", "onnx"),
            "max_upload_bytes": self.max_upload_bytes,
            "protocol": self.protocol.record(),
        }

    def measure(self, data: bytes, fmt: str | None, shape: tuple[int, ...] | None) -> dict[str, Any]:
        """Validate and time one uploaded model; raises RequestError with the HTTP answer."""
        sniffed = sniff_format(data)
        fmt = fmt or sniffed
        if fmt != sniffed:
            raise RequestError(415, f"format={fmt!r} was requested but the upload is {sniffed}")
        with self.measure_lock:
            if fmt == "onnx":
                from prunepilot.hw_models.onnxrt import time_onnx_bytes

                check_onnx(data)
                try:
                    stats, used, threads = time_onnx_bytes(data, shape, self.protocol)
                except HardwareError as exc:
                    raise RequestError(422, str(exc)) from None
                runtime = "onnxruntime-cpu"
            else:
                if shape is None:
                    raise RequestError(400, "TorchScript uploads need ?shape=NxCxHxW")
                stats, threads = time_torchscript_bytes(data, shape, self.protocol)
                used, runtime = shape, "torch-eager-cpu"
        return {
            "ms": stats.median_ms,
            "cv": stats.cv,
            "iqr_ms": stats.iqr_ms,
            "details": {
                "runtime": runtime,
                "device": self.device_name,
                "cpu": cpu_name(),
                "versions": runtime_versions("onnxruntime", "onnx"),
                "threads": threads,
                "batch_size": int(used[0]),
                "input_shape": list(used),
                "format": fmt,
                "upload_bytes": len(data),
                "protocol": self.protocol.record(),
                **stats.record(),
            },
        }


class _Handler(BaseHTTPRequestHandler):
    server: DeviceServer
    server_version = "prunepilot-device-server"
    _body_read = False

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout_s)  # every read times out

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.info("%s %s", self.address_string(), format % args)

    # -- answers ------------------------------------------------------------------------------
    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError as exc:  # the client went away; nothing left to tell it
            log.warning("could not answer %s: %s", self.address_string(), exc)
        self.close_connection = True

    def _error(self, status: int, message: str) -> None:
        log.warning("%s -> %d %s", self.address_string(), status, message)
        self._send_json(status, {"error": message, "status": status})

    def _check_token(self) -> None:
        given = self.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode("utf-8"), self.server.token.encode("utf-8")):
            raise RequestError(401, f"missing or wrong token in the {TOKEN_HEADER} header")

    def _drain(self, length: int) -> None:
        """Read and discard an oversized body (bounded) so the client can read our answer."""
        left = min(length, 4 * self.server.max_upload_bytes)
        try:
            while left > 0:
                chunk = self.rfile.read(min(_DRAIN_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def _drain_unread(self, cap: int) -> None:
        """Before refusing a request whose body was never read, read (and drop) up to ``cap``
        bytes of it, so a well-behaved client receives the answer instead of a reset."""
        if self._body_read:
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return
        if 0 < length <= cap:
            self._drain(length)

    def _read_body(self) -> bytes:
        self._body_read = True
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise RequestError(411, "a Content-Length header is required")
        try:
            length = int(raw)
        except ValueError:
            raise RequestError(400, f"Content-Length {raw!r} is not an integer") from None
        if length < 0:
            raise RequestError(400, f"Content-Length {length} is negative")
        if length > self.server.max_upload_bytes:
            self._drain(length)
            raise RequestError(
                413,
                f"upload of {length} bytes exceeds the server's limit of {self.server.max_upload_bytes} bytes; "
                "restart the server with a larger --max-upload-mb or upload a smaller model",
            )
        if length == 0:
            raise RequestError(400, "the request body is empty; upload an ONNX or TorchScript model")
        buf = bytearray()
        try:
            while len(buf) < length:
                chunk = self.rfile.read(min(_DRAIN_CHUNK, length - len(buf)))
                if not chunk:
                    raise RequestError(
                        400, f"connection closed after {len(buf)} of {length} bytes; the upload is incomplete"
                    )
                buf.extend(chunk)
        except TimeoutError:
            raise RequestError(
                408,
                f"timed out after {self.server.request_timeout_s:g} s waiting for the upload "
                f"({len(buf)}/{length} bytes)",
            ) from None
        return bytes(buf)

    # -- routes -------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        try:
            self._check_token()
            url = urlsplit(self.path)
            if method == "GET" and url.path == "/info":
                self._send_json(200, self.server.info())
                return
            if method == "POST" and url.path == "/measure":
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                fmt = query.get("format")
                if fmt is not None and fmt not in FORMATS:
                    raise RequestError(400, f"format {fmt!r} is not accepted; use 'onnx' or 'torchscript'")
                shape = parse_shape(query["shape"]) if "shape" in query else None
                data = self._read_body()
                self._send_json(200, self.server.measure(data, fmt, shape))
                return
            raise RequestError(404, f"no route {method} {url.path}; use GET /info or POST /measure")
        except RequestError as exc:
            if method == "POST" and exc.status in (400, 401, 404):
                self._drain_unread(_REFUSED_DRAIN)
            self._error(exc.status, exc.message)
        except Exception as exc:  # noqa: BLE001 - one bad request must never stop the server
            log.exception("unexpected error")
            self._error(500, f"internal error: {type(exc).__name__}: {str(exc)[:300]}")

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("POST")
