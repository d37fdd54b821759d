"""The device server over loopback: real uploads, and every bad request leaves it serving."""

from __future__ import annotations

import io
import json
import pickle
import socket
import warnings
from collections.abc import Iterator

import pytest
import torch

from prunepilot.hw_models.base import HardwareError
from prunepilot.hw_models.onnxrt import export_onnx_bytes
from prunepilot.hw_models.remote import RemoteLatency, torchscript_bytes
from prunepilot.hw_models.server import TOKEN_HEADER, DeviceServer
from prunepilot.hw_models.testing import FAST, tiny_net

TOKEN = "test-token-0123"
SHAPE = (1, 3, 16, 16)


@pytest.fixture(scope="module")
def server() -> Iterator[DeviceServer]:
    srv = DeviceServer(
        ("127.0.0.1", 0), TOKEN, max_upload_bytes=200_000, request_timeout_s=1.0, protocol=FAST, device_name="loopback"
    )
    srv.start_in_thread()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def onnx_model() -> bytes:
    return export_onnx_bytes(tiny_net(), SHAPE)  # the default (dynamo) exporter: a real ONNX file


def client(srv: DeviceServer, token: str = TOKEN, fmt: str = "onnx") -> RemoteLatency:
    return RemoteLatency(srv.url, token=token, format=fmt, timeout_s=30)


def assert_alive(srv: DeviceServer) -> None:
    assert client(srv).info()["device"] == "loopback"


def raw_request(srv: DeviceServer, head: bytes, body: bytes = b"", close_write: bool = False) -> dict:
    host, port = srv.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=10) as s:
        s.sendall(head + body)
        if close_write:
            s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return {"status": status, **json.loads(data.split(b"\r\n\r\n", 1)[1])}


def test_onnx_upload_is_timed(server: DeviceServer, onnx_model: bytes) -> None:
    res = client(server).measure_bytes(onnx_model, "onnx", SHAPE)
    assert res.kind == "measured" and res.model_name == "remote" and res.ms > 0 and res.cv is not None
    d = res.details
    assert d["runtime"] == "onnxruntime-cpu" and d["device"] == "loopback" and d["input_shape"] == list(SHAPE)
    assert d["threads"] == FAST.threads and "onnxruntime" in d["versions"] and d["server"] == server.url


def test_measure_ms_exports_and_uploads(server: DeviceServer) -> None:
    lm = RemoteLatency(server.url, token=TOKEN, exporter="legacy")
    res = lm.measure_ms(tiny_net(), SHAPE)
    assert res.ms > 0 and res.details["format"] == "onnx"


def test_torchscript_upload_is_timed(server: DeviceServer) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        res = client(server, fmt="torchscript").measure_ms(tiny_net(), SHAPE)
    assert res.details["runtime"] == "torch-eager-cpu" and res.ms > 0


def test_wrong_token_is_401(server: DeviceServer, onnx_model: bytes) -> None:
    with pytest.raises(HardwareError, match="401.*token"):
        client(server, token="wrong").measure_bytes(onnx_model, "onnx", SHAPE)
    assert_alive(server)


def test_oversized_upload_is_413(server: DeviceServer) -> None:
    with pytest.raises(HardwareError, match="413.*exceeds the server's limit of 200000 bytes"):
        client(server).measure_bytes(b"\x08" * 300_000, "onnx", SHAPE)
    assert_alive(server)


def test_pickle_is_refused(server: DeviceServer) -> None:
    with pytest.raises(HardwareError, match="415.*pickled objects are never accepted"):
        client(server).measure_bytes(pickle.dumps({"not": "a model"}), "onnx", SHAPE)
    buf = io.BytesIO()
    torch.save(tiny_net().state_dict(), buf)  # a zip holding a pickle: also refused
    with pytest.raises(HardwareError, match="415.*not a TorchScript archive"):
        client(server).measure_bytes(buf.getvalue(), "torchscript", SHAPE)
    assert_alive(server)


def test_garbage_is_refused(server: DeviceServer) -> None:
    with pytest.raises(HardwareError, match="415.*not a valid ONNX model"):
        client(server).measure_bytes(b"this is not a model at all", "onnx", SHAPE)
    assert_alive(server)


def test_dropped_connection_mid_upload(server: DeviceServer) -> None:
    head = f"POST /measure?format=onnx HTTP/1.0\r\n{TOKEN_HEADER}: {TOKEN}\r\nContent-Length: 5000\r\n\r\n".encode()
    ans = raw_request(server, head, b"\x08" * 100, close_write=True)
    assert ans["status"] == 400 and "connection closed after 100 of 5000 bytes" in ans["error"]
    # and a client that vanishes completely
    host, port = server.server_address[:2]
    with socket.create_connection((str(host), int(port))) as s:
        s.sendall(head + b"\x08" * 10)
    assert_alive(server)


def test_stalled_upload_times_out(server: DeviceServer) -> None:
    head = f"POST /measure HTTP/1.0\r\n{TOKEN_HEADER}: {TOKEN}\r\nContent-Length: 5000\r\n\r\n".encode()
    ans = raw_request(server, head, b"\x08" * 10)  # never sends the rest: server times out after 1 s
    assert ans["status"] == 408 and "timed out" in ans["error"]
    assert_alive(server)


def test_malformed_requests(server: DeviceServer) -> None:
    ans = raw_request(server, f"POST /measure HTTP/1.0\r\n{TOKEN_HEADER}: {TOKEN}\r\n\r\n".encode())
    assert ans["status"] == 411
    ans = raw_request(
        server,
        f"POST /measure?shape=a,b HTTP/1.0\r\n{TOKEN_HEADER}: {TOKEN}\r\nContent-Length: 1\r\n\r\n".encode(),
        b"x",
    )
    assert ans["status"] == 400 and "shape" in ans["error"]
    ans = raw_request(server, f"GET /nothing HTTP/1.0\r\n{TOKEN_HEADER}: {TOKEN}\r\n\r\n".encode())
    assert ans["status"] == 404
    assert_alive(server)


def test_unreachable_server_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(HardwareError, match="cannot reach device server"):
        RemoteLatency(f"http://127.0.0.1:{port}", token=TOKEN, timeout_s=2).info()


def test_missing_token_env_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PP_TEST_TOKEN", raising=False)
    with pytest.raises(HardwareError, match="PP_TEST_TOKEN"):
        RemoteLatency("http://127.0.0.1:1", token_env="PP_TEST_TOKEN").info()


def test_torchscript_bytes_round_trip() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        data = torchscript_bytes(tiny_net(), SHAPE)
        assert data[:4] == b"PK\x03\x04"
        loaded = torch.jit.load(io.BytesIO(data))
    assert loaded(torch.zeros(*SHAPE)).shape == (1, 4)
