"""The device server's HTTP side: one request per connection, read against one deadline.

:class:`RequestHandler` authenticates (constant-time token check), reads headers and body
through a :class:`DeadlineReader` (every read shares the connection's deadline, so a client
sending a byte every few seconds is cut off at the deadline with a 408, not kept forever),
refuses what the query shows is unacceptable before reading the upload, reads at most 1 MiB of a
refused upload, and answers every error as JSON; a 500 names no detail (the log has it). What
is accepted and how it is timed is :class:`~prunepilot.hw_models.server.DeviceServer`'s.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import select
import socket
import ssl
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from prunepilot.hw_models.server_models import RequestError

if TYPE_CHECKING:
    from prunepilot.hw_models.server import DeviceServer

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Prunepilot-Token"
_READ_CHUNK = 1 << 16
#: Most of an unread body read (and dropped) before an error answer, so a client sending a
#: small body receives the answer instead of a reset; a larger one is cut off.
_REFUSED_DRAIN = 1 << 20


class DeadlineExceeded(Exception):
    """The connection's whole-request deadline passed while reading from it."""


class DeadlineReader(io.RawIOBase):
    """Socket reads that share one deadline (a slow client cannot stretch it byte by byte)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self.sock = sock
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded
        self.sock.settimeout(left)
        try:
            return self.sock.recv_into(buffer)
        except TimeoutError:
            raise DeadlineExceeded from None


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1x3x32x32"`` or ``"1,3,32,32"`` -> ``(1, 3, 32, 32)``."""
    try:
        dims = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise RequestError(400, f"shape {text[:100]!r} is not a list of integers like 1x3x32x32") from None
    if len(dims) < 2 or any(d <= 0 for d in dims) or len(dims) > 8:
        raise RequestError(400, f"shape {text[:100]!r} must have 2 to 8 positive dimensions, like 1x3x32x32")
    return dims


def drain(rfile: Any, cap: int) -> None:
    """Read and drop up to ``cap`` bytes (within the connection's deadline)."""
    left = cap
    try:
        while left > 0:
            chunk = rfile.read1(min(_READ_CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
    except (OSError, DeadlineExceeded):
        pass


class RequestHandler(BaseHTTPRequestHandler):
    """One connection, one request: ``GET /info`` or ``POST /measure``, all read by ``deadline``."""

    server: DeviceServer
    server_version = "prunepilot-device-server"
    default_request_version = "HTTP/1.0"  # every answer has a status line, even to an HTTP/0.9-looking request
    _body_read = False

    def __init__(self, request: Any, client_address: Any, server: DeviceServer, deadline: float | None = None) -> None:
        self.deadline = time.monotonic() + server.request_timeout_s if deadline is None else deadline
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        # the request line and headers are due sooner than the whole request (the token is in
        # them: a client that has not shown it holds a connection for header_timeout_s at most)
        accepted = self.deadline - self.server.request_timeout_s
        self._header_s = min(self.server.header_timeout_s, self.server.request_timeout_s)
        self._reader = DeadlineReader(self.connection, accepted + self._header_s)
        self.rfile = io.BufferedReader(self._reader, _READ_CHUNK)
        # what an answer needs if the deadline passes before the request line is parsed
        self.request_version, self.requestline, self.command = self.default_request_version, "", ""

    def handle(self) -> None:
        try:
            self.handle_one_request()
        except DeadlineExceeded:
            self._error(
                408,
                f"the request line and headers did not arrive within the server's {self._header_s:g} s deadline "
                "(its --header-timeout); send them without pauses",
            )
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.info("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own refusals (a malformed request line or header) as JSON too."""
        self._error(code, message or self.responses.get(code, ("error",))[0])

    # -- answers ------------------------------------------------------------------------------
    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        try:
            self.connection.settimeout(self.server.request_timeout_s)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError as exc:  # the client went away; nothing left to tell it
            log.warning("could not answer %s: %s", self.address_string(), exc)
        self.close_connection = True

    def _error(self, status: int, message: str) -> None:
        log.warning("%s -> %d %s", self.address_string(), status, message)
        self._send_json(status, {"error": message, "status": status})

    def _client_waits(self) -> bool:
        """Whether the client still waits for the answer (it has not closed the connection)."""
        try:
            if not select.select([self.connection], [], [], 0)[0]:
                return True
            if isinstance(self.connection, ssl.SSLSocket):
                return True  # readable TLS may be a record, not the end: measure rather than guess
            return self.connection.recv(1, socket.MSG_PEEK) != b""
        except OSError:
            return False

    def _check_token(self) -> None:
        given = self.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode("utf-8"), self.server.token.encode("utf-8")):
            raise RequestError(401, f"missing or wrong token in the {TOKEN_HEADER} header")

    def _drain_unread(self) -> None:
        """Before refusing a request whose body was never read, read (and drop) a bounded part of
        it, so a well-behaved client receives the answer instead of a reset."""
        if self._body_read:
            return
        self._body_read = True
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return
        if length > 0:
            drain(self.rfile, min(length, _REFUSED_DRAIN))

    def _read_body(self) -> bytes:
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise RequestError(411, "a Content-Length header is required")
        try:
            length = int(raw)
        except ValueError:
            raise RequestError(400, f"Content-Length {raw[:50]!r} is not an integer") from None
        if length < 0:
            raise RequestError(400, f"Content-Length {length} is negative")
        if length > self.server.max_upload_bytes:
            raise RequestError(
                413,
                f"upload of {length} bytes exceeds the server's limit of {self.server.max_upload_bytes} bytes; "
                "restart the server with a larger --max-upload-mb or upload a smaller model",
            )
        if length == 0:
            raise RequestError(400, "the request body is empty; upload an ONNX or TorchScript model")
        self._body_read = True
        buf = bytearray()
        try:
            while len(buf) < length:
                chunk = self.rfile.read1(min(_READ_CHUNK, length - len(buf)))
                if not chunk:
                    raise RequestError(
                        400, f"connection closed after {len(buf)} of {length} bytes; the upload is incomplete"
                    )
                buf.extend(chunk)
        except DeadlineExceeded:
            raise RequestError(
                408,
                f"the upload did not arrive within the server's {self.server.request_timeout_s:g} s deadline "
                f"(its --timeout; {len(buf)}/{length} bytes came)",
            ) from None
        return bytes(buf)

    # -- routes -------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        self._reader.deadline = self.deadline  # the headers are in; the body is due by the whole deadline
        try:
            self._check_token()
            url = urlsplit(self.path)
            if method == "GET" and url.path == "/info":
                self._send_json(200, self.server.info())
                return
            if method == "POST" and url.path == "/measure":
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                fmt = query.get("format")
                shape = parse_shape(query["shape"]) if "shape" in query else None
                self.server.check_request(fmt, shape)
                data = self._read_body()
                self._send_json(200, self.server.measure(data, fmt, shape, wanted=self._client_waits))
                return
            raise RequestError(404, f"no route {method} {url.path[:100]}; use GET /info or POST /measure")
        except RequestError as exc:
            if method == "POST":
                self._drain_unread()
            self._error(exc.status, exc.message)
        except Exception:  # noqa: BLE001 - one bad request must never stop the server
            log.exception("unexpected error answering %s %s", method, self.path[:200])
            self._error(500, "internal error in the device server; its log has the details")

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("POST")
