"""The device server: times models it receives, on the device it runs on.

Run ``prunepilot device-server --token-env PRUNEPILOT_DEVICE_TOKEN`` on the target (a Jetson, a
Pi, another server); the ``remote`` latency model sends candidates. It listens on 127.0.0.1
unless told otherwise; beyond loopback give it a certificate (``--tls-cert/--tls-key``), since
the token and the models travel in the clear over plain HTTP (a loud warning says so).

Protocol (HTTP/1.0, JSON answers, one request per connection):

* every request carries the shared token in ``X-Prunepilot-Token`` (compared in constant
  time); a wrong or missing token gets 401;
* ``GET /info``: device name, CPU, accepted formats, runtimes, versions, limits and timing protocol;
* ``POST /measure?format=onnx|torchscript&shape=1x3x32x32`` with the model file as the body:
  the timing (median ms, CV, IQR and the protocol record).

What runs where (the README's Security section says the same for operators):

* This process authenticates, bounds every connection and never loads a model. A connection
  has one deadline for everything it sends (TLS handshake, headers and body: ``request_timeout_s``,
  not per read), and a shorter one for its headers, which carry the token (``header_timeout_s``);
  at most ``max_connections`` are served at once, more get a 503 at once; an
  input shape above ``max_input_elements`` gets a 400 before any upload is read; an upload over
  ``max_upload_bytes`` gets a 413 after at most 1 MiB of it is read
  (:mod:`~prunepilot.hw_models.server_http` reads and answers requests).
* Models are checked and timed in a worker subprocess (:mod:`~prunepilot.hw_models.server_worker`)
  that can open no file and has a memory cap. A measurement past ``measure_timeout_s`` gets a
  422: ONNX Runtime's runs are told to stop (``RunOptions.terminate``), anything else that
  overruns is killed with its worker, and a fresh worker is started at once.
* ONNX is always accepted and any external-data reference in it is refused; TorchScript runs
  uploaded code, so it is accepted only when the server is started with ``allow_torchscript``,
  and even then an archive using file, print or non-aten/prim operators is refused
  (:mod:`~prunepilot.hw_models.server_models`). Pickles and ``torch.save`` checkpoints never.

Errors are JSON ``{"error": "...", "status": N}``: 400 malformed or too large a shape, 401 token,
404 path, 408 the request did not arrive within the deadline, 411 no Content-Length, 413 too
large, 415 not an accepted model (pickle, external data, TorchScript not allowed or with refused
operators), 422 the model does not run (fails, runs past the limit, exhausts the memory cap),
500 a server fault (the detail goes to the server's log, never to the client), 503 busy. The
server keeps serving after every error, and times one model at a time so concurrent uploads do
not disturb each other's timings.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import HTTPServer
from typing import Any

from prunepilot.hw_models.base import HardwareError, runtime_versions
from prunepilot.hw_models.measure import MeasureProtocol, cpu_name
from prunepilot.hw_models.server_http import TOKEN_HEADER, DeadlineReader, RequestHandler, drain, parse_shape
from prunepilot.hw_models.server_models import (
    FORMATS,
    MeasureJob,
    RequestError,
    check_input_elements,
    sniff_format,
)
from prunepilot.hw_models.server_worker import KILL_GRACE_S, MeasureRunner, WorkerLimits

log = logging.getLogger(__name__)

__all__ = ["FORMATS", "TOKEN_HEADER", "DeviceServer", "RequestError", "parse_shape"]

#: Seconds an over-the-cap connection is given to take its 503.
_REFUSAL_S = 1.0
INSECURE_WARNING = (
    "the device server listens on %s over plain HTTP: the token and every uploaded model cross the network "
    "in the clear, and anyone who sniffs the token can use this machine. Start it with --tls-cert/--tls-key, "
    "or listen on 127.0.0.1 and reach it through an SSH tunnel (README: Security)"
)


def _positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise HardwareError(f"{name} must be positive, got {value}")


class DeviceServer(HTTPServer):
    """An HTTP server that times uploaded ONNX (and, when allowed, TorchScript) models.

    Args:
        address: ``(host, port)``; port 0 picks a free port.
        token: The shared token clients send in ``X-Prunepilot-Token``.
        max_upload_bytes: Largest accepted upload.
        request_timeout_s: Deadline for everything a client sends (TLS handshake, headers, body).
        header_timeout_s: Deadline for the request line and headers (from the connection's start).
        measure_timeout_s: Limit of one measurement (load, checks, warm-up, timing).
        max_connections: Connections served at once; more are answered 503 at once.
        max_input_elements: Largest product of an input shape.
        allow_torchscript: Accept TorchScript uploads (they are code; see the module docstring).
        tls_cert: PEM certificate (chain) for HTTPS; needs ``tls_key``.
        tls_key: PEM private key of ``tls_cert``.
        worker_memory_mb: Memory the measurement worker may add to its idle footprint.
        protocol: Timing protocol (default :class:`MeasureProtocol`).
        device_name: Name reported to clients (default: the hostname).

    Example (tests; port 0 picks a free port):
        >>> srv = DeviceServer(("127.0.0.1", 0), token="s3cret")  # doctest: +SKIP
        >>> thread = srv.start_in_thread()  # doctest: +SKIP
        >>> srv.url  # doctest: +SKIP
        'http://127.0.0.1:40123'
    """

    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        token: str,
        *,
        max_upload_bytes: int = 256 * 1024 * 1024,
        request_timeout_s: float = 60.0,
        header_timeout_s: float = 10.0,
        measure_timeout_s: float = 120.0,
        max_connections: int = 16,
        max_input_elements: int = 1 << 24,
        allow_torchscript: bool = False,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        worker_memory_mb: int = 2048,
        protocol: MeasureProtocol | None = None,
        device_name: str | None = None,
    ) -> None:
        if not token:
            raise HardwareError("the device server needs a non-empty shared token (set it in the --token-env variable)")
        _positive(
            max_upload_bytes=max_upload_bytes,
            request_timeout_s=request_timeout_s,
            header_timeout_s=header_timeout_s,
            measure_timeout_s=measure_timeout_s,
            max_connections=max_connections,
            max_input_elements=max_input_elements,
            worker_memory_mb=worker_memory_mb,
        )
        self.token = token
        self.max_upload_bytes = int(max_upload_bytes)
        self.request_timeout_s = float(request_timeout_s)
        self.header_timeout_s = float(header_timeout_s)
        self.measure_timeout_s = float(measure_timeout_s)
        self.max_connections = int(max_connections)
        self.max_input_elements = int(max_input_elements)
        self.allow_torchscript = bool(allow_torchscript)
        self.protocol = protocol or MeasureProtocol()
        self.device_name = device_name or socket.gethostname()
        self.ssl_context = _tls_context(tls_cert, tls_key)
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._refusals = threading.BoundedSemaphore(self.max_connections)
        self.runner = MeasureRunner(WorkerLimits(memory_mb=int(worker_memory_mb)), scrub=[token])
        super().__init__(address, RequestHandler)
        host = str(self.server_address[0])
        #: Whether the server listens beyond loopback without TLS (then a loud warning is logged).
        self.insecure = self.ssl_context is None and not ipaddress.ip_address(host.split("%")[0]).is_loopback
        if self.insecure:
            log.warning(INSECURE_WARNING, host)

    @property
    def url(self) -> str:
        """``http(s)://host:port`` the server listens on."""
        host, port = self.server_address[:2]
        return f"{'https' if self.ssl_context else 'http'}://{host!s}:{port}"

    @property
    def formats(self) -> list[str]:
        """Formats this server accepts."""
        return [f for f in FORMATS if f != "torchscript" or self.allow_torchscript]

    def serve_forever(self, poll_interval: float = 0.5, warm: bool = True) -> None:
        """Serve until :meth:`shutdown`; ``warm`` starts the measurement worker first (it warms up
        meanwhile), otherwise the first measurement starts it."""
        if warm:
            self.runner.start()
        super().serve_forever(poll_interval)

    def start_in_thread(self, warm: bool = True) -> threading.Thread:
        """Serve in a daemon thread (tests); stop with :meth:`shutdown` then ``server_close``."""
        t = threading.Thread(
            target=self.serve_forever, kwargs={"warm": warm}, name="prunepilot-device-server", daemon=True
        )
        t.start()
        return t

    def wait_ready(self) -> dict[str, Any]:
        """Block until the measurement worker is warm; its start-up report (limits, versions)."""
        return self.runner.wait_ready()

    def server_close(self) -> None:
        super().server_close()
        self.runner.close()

    # -- connections ----------------------------------------------------------------------------
    def process_request(self, request: Any, client_address: Any) -> None:
        """One thread per connection, at most ``max_connections``; over that a quick 503."""
        deadline = time.monotonic() + self.request_timeout_s
        if self._slots.acquire(blocking=False):
            target = self._serve_connection
        elif self._refusals.acquire(blocking=False):
            target = self._refuse_busy
        else:  # a flood: not even a 503
            log.warning("%s refused: %d connections open and as many being refused", client_address[0],
                        self.max_connections)  # fmt: skip
            self.shutdown_request(request)
            return
        threading.Thread(target=target, args=(request, client_address, deadline), daemon=True).start()

    def _secure(self, request: socket.socket, deadline: float) -> socket.socket | None:
        """The connection itself, or its TLS wrapper once the handshake is done (``None``: failed)."""
        if self.ssl_context is None:
            return request
        try:
            request.settimeout(max(deadline - time.monotonic(), 0.001))  # the whole handshake, not per read
            return self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.info("TLS handshake failed: %s", exc)
            return None

    def _serve_connection(self, request: socket.socket, client_address: Any, deadline: float) -> None:
        conn = None
        try:
            conn = self._secure(request, deadline)
            if conn is not None:
                RequestHandler(conn, client_address, self, deadline)
        except Exception:  # noqa: BLE001 - one connection's fault must never stop the server
            log.exception("error serving %s", client_address[0])
        finally:
            self.shutdown_request(conn if conn is not None else request)
            self._slots.release()

    def _refuse_busy(self, request: socket.socket, client_address: Any, deadline: float) -> None:
        deadline = min(deadline, time.monotonic() + _REFUSAL_S)
        conn = None
        try:
            conn = self._secure(request, deadline)
            if conn is not None:
                message = f"the server is busy ({self.max_connections} connections open, its --max-connections)"
                log.warning("%s -> 503 %s", client_address[0], message)
                body = json.dumps({"error": message + "; retry later", "status": 503}).encode()
                conn.settimeout(max(deadline - time.monotonic(), 0.001))
                conn.sendall(
                    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                    + f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                conn.shutdown(socket.SHUT_WR)  # the client sees the end of the answer at once
                drain(io.BufferedReader(DeadlineReader(conn, deadline)), 1 << 16)  # its request: no reset
        except OSError:
            pass
        finally:
            self.shutdown_request(conn if conn is not None else request)
            self._refusals.release()

    # -- what the routes answer -----------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """What ``GET /info`` answers."""
        return {
            "device": self.device_name,
            "cpu": cpu_name(),
            "formats": self.formats,
            "runtimes": {"onnx": "onnxruntime-cpu", "torchscript": "torch-eager-cpu"},
            "versions": runtime_versions("onnxruntime", "onnx"),
            "max_upload_bytes": self.max_upload_bytes,
            "limits": {
                "max_upload_bytes": self.max_upload_bytes,
                "request_timeout_s": self.request_timeout_s,
                "header_timeout_s": self.header_timeout_s,
                "measure_timeout_s": self.measure_timeout_s,
                "max_connections": self.max_connections,
                "max_input_elements": self.max_input_elements,
                "worker_memory_mb": self.runner.limits.memory_mb,
            },
            "tls": self.ssl_context is not None,
            "protocol": self.protocol.record(),
        }

    def check_request(self, fmt: str | None, shape: tuple[int, ...] | None) -> None:
        """Refuse what the query alone shows is unacceptable, before the upload is read."""
        if fmt is not None and fmt not in FORMATS:
            raise RequestError(400, f"format {fmt[:50]!r} is not accepted; use 'onnx' or 'torchscript'")
        if fmt == "torchscript":
            self._check_torchscript_allowed()
        if shape is not None:
            check_input_elements(shape, self.max_input_elements)

    def _check_torchscript_allowed(self) -> None:
        if not self.allow_torchscript:
            raise RequestError(
                415,
                "TorchScript is not accepted by this server (an archive is code that runs on the server); "
                "upload ONNX (the remote model's format: onnx), or start the server with --allow-torchscript",
            )

    def measure(
        self,
        data: bytes,
        fmt: str | None,
        shape: tuple[int, ...] | None,
        wanted: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """Validate and time one uploaded model; raises RequestError with the HTTP answer.

        Measurements run one at a time, in arrival order; ``wanted`` (is the client still there?)
        is asked when this one's turn comes."""
        self.check_request(fmt, shape)
        sniffed = sniff_format(data)
        fmt = fmt or sniffed
        if fmt != sniffed:
            raise RequestError(415, f"format={fmt!r} was requested but the upload is {sniffed}")
        if fmt == "torchscript":
            self._check_torchscript_allowed()
        job = MeasureJob(fmt, shape, self.protocol.record(), self.measure_timeout_s, self.max_input_elements)
        # every job ahead takes at most its limit (plus a fresh worker's start): a safety net only
        turn = self.max_connections * (self.measure_timeout_s + KILL_GRACE_S + self.runner.limits.startup_timeout_s)
        answer = self.runner.run(job, data, wait_s=turn, wanted=wanted)
        if answer["status"] == 500:
            log.error("measurement failed inside the worker: %s", answer.get("error"))
            raise RuntimeError("the measurement worker reported an internal error")
        if answer["status"] != 200:
            raise RequestError(int(answer["status"]), str(answer["error"]))
        res = answer["result"]
        stats, used = res["stats"], res["input_shape"]
        return {
            "ms": stats["median_ms"],
            "cv": stats["cv"],
            "iqr_ms": stats["iqr_ms"],
            "details": {
                "runtime": res["runtime"],
                "device": self.device_name,
                "cpu": cpu_name(),
                "versions": runtime_versions("onnxruntime", "onnx"),
                "threads": res["threads"],
                "batch_size": int(used[0]),
                "input_shape": list(used),
                "format": fmt,
                "upload_bytes": len(data),
                "protocol": self.protocol.record(),
                **stats,
            },
        }


def _tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise HardwareError("TLS needs both --tls-cert and --tls-key (PEM files); give both or neither")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise HardwareError(f"cannot load the TLS certificate {cert!r} / key {key!r}: {exc}") from None
    return ctx
