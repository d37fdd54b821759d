"""The device server over loopback: real uploads, attacks and hostile clients, each refused clearly
while the server keeps timing good models."""

from __future__ import annotations

import http.client
import io
import json
import pickle
import select
import socket
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from prunepilot.hw_models.base import HardwareError
from prunepilot.hw_models.onnxrt import export_onnx_bytes
from prunepilot.hw_models.remote import RemoteLatency, torchscript_bytes
from prunepilot.hw_models.server import TOKEN_HEADER, DeviceServer
from prunepilot.hw_models.server_models import RequestError, check_onnx, onnx_tensors
from prunepilot.hw_models.server_worker import KILL_GRACE_S, _FifoLock
from prunepilot.hw_models.testing import FAST, tiny_net

TOKEN = "test-token-0123"
SHAPE = (1, 3, 16, 16)
DEADLINE_S = 1.0  # whole-request deadline
HEADERS_S = 0.5  # deadline of the request line and headers
LIMIT_S = 2.0  # measurement limit
CONNECTIONS = 4
ELEMENTS = 1 << 20


@pytest.fixture(scope="module")
def server() -> Iterator[DeviceServer]:
    srv = DeviceServer(
        ("127.0.0.1", 0), TOKEN, max_upload_bytes=200_000, request_timeout_s=DEADLINE_S, header_timeout_s=HEADERS_S,
        measure_timeout_s=LIMIT_S,
        max_connections=CONNECTIONS, max_input_elements=ELEMENTS, protocol=FAST, device_name="loopback",
    )  # fmt: skip
    srv.start_in_thread()
    srv.wait_ready()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def onnx_model() -> bytes:
    return export_onnx_bytes(tiny_net(), SHAPE)  # the default (dynamo) exporter: a real ONNX file


def client(srv: DeviceServer, token: str = TOKEN, fmt: str = "onnx") -> RemoteLatency:
    return RemoteLatency(srv.url, token=token, format=fmt, timeout_s=30)


def assert_serves(srv: DeviceServer, onnx_model: bytes) -> float:
    """A good request is timed; returns how long it took to answer."""
    t0 = time.monotonic()
    assert client(srv).measure_bytes(onnx_model, "onnx", SHAPE).ms > 0
    return time.monotonic() - t0


def answer_of(s: socket.socket) -> dict[str, Any]:
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    assert data, "the server closed the connection without an answer"
    status = int(data.split(b" ", 2)[1])
    return {"status": status, **json.loads(data.split(b"\r\n\r\n", 1)[1])}


def raw_request(srv: DeviceServer, head: bytes, body: bytes = b"", close_write: bool = False) -> dict[str, Any]:
    host, port = srv.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=10) as s:
        s.sendall(head + body)
        if close_write:
            s.shutdown(socket.SHUT_WR)
        return answer_of(s)


def post(srv: DeviceServer, query: str, body: bytes) -> dict[str, Any]:
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=30)
    conn.request("POST", f"/measure{query}", body=body, headers={TOKEN_HEADER: TOKEN})
    resp = conn.getresponse()
    return {"status": resp.status, **json.loads(resp.read())}


def send_slowly(srv: DeviceServer, data: bytes, every_s: float, fast_prefix: int = 0) -> tuple[dict[str, Any], float]:
    """Send ``data`` (after its first ``fast_prefix`` bytes) one byte every ``every_s`` until the
    server answers; returns the answer and the seconds it took."""
    host, port = srv.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=10) as s:
        t0 = time.monotonic()
        s.sendall(data[:fast_prefix])
        for i in range(fast_prefix, len(data)):
            if select.select([s], [], [], every_s)[0]:
                break  # the server answered (or closed)
            try:
                s.send(data[i : i + 1])
            except OSError:
                break
        return answer_of(s), time.monotonic() - t0


def head(path: str, length: int | None = None) -> bytes:
    method = "GET" if length is None else "POST"
    size = "" if length is None else f"Content-Length: {length}\r\n"
    return f"{method} {path} HTTP/1.0\r\n{TOKEN_HEADER}: {TOKEN}\r\n{size}\r\n".encode()


def relu_model(shape: list[int]) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def loop_model(trips: int) -> bytes:
    """x -> Loop(trips) { x = x + sin(x) } -> y: as slow as ``trips`` says."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Sin", ["x_in"], ["s"]),
            helper.make_node("Add", ["x_in", "s"], ["x_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, None),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["trips"], value=helper.make_tensor("t", TensorProto.INT64, [], [trips])),
            helper.make_node("Constant", [], ["go"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
            helper.make_node("Loop", ["trips", "go", "x"], ["y"], body=body),
        ],
        "loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


# --- good requests --------------------------------------------------------------------------------
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


def test_info_names_formats_and_limits(server: DeviceServer) -> None:
    info = client(server).info()
    assert info["formats"] == ["onnx"] and info["tls"] is False
    assert info["limits"] == {
        "max_upload_bytes": 200_000, "request_timeout_s": DEADLINE_S, "header_timeout_s": HEADERS_S,
        "measure_timeout_s": LIMIT_S,
        "max_connections": CONNECTIONS, "max_input_elements": ELEMENTS, "worker_memory_mb": 2048,
    }  # fmt: skip


# --- refused requests -----------------------------------------------------------------------------
def test_wrong_token_is_401(server: DeviceServer, onnx_model: bytes) -> None:
    with pytest.raises(HardwareError, match="401.*token"):
        client(server, token="wrong").measure_bytes(onnx_model, "onnx", SHAPE)
    assert_serves(server, onnx_model)


def test_oversized_upload_is_413(server: DeviceServer, onnx_model: bytes) -> None:
    with pytest.raises(HardwareError, match="413.*exceeds the server's limit of 200000 bytes"):
        client(server).measure_bytes(b"\x08" * 300_000, "onnx", SHAPE)
    assert_serves(server, onnx_model)


def test_413_reads_only_a_bounded_part_of_the_upload() -> None:
    """A client announcing 1 GB to a 64 MiB server is answered 413 after about 1 MiB, not 4x the cap."""
    srv = DeviceServer(("127.0.0.1", 0), TOKEN, max_upload_bytes=64 << 20, request_timeout_s=10.0)
    srv.start_in_thread(warm=False)  # never measures: no worker needed
    try:
        host, port = srv.server_address[:2]
        with socket.create_connection((str(host), int(port)), timeout=10) as s:
            t0 = time.monotonic()
            s.sendall(head("/measure", 10**9))
            sent, chunk = 0, b"\0" * 65536
            while sent < 200 << 20 and not select.select([s], [], [], 0)[0]:
                try:
                    sent += s.send(chunk)
                except OSError:
                    break
            ans, seconds = answer_of(s), time.monotonic() - t0
    finally:
        srv.shutdown()
        srv.server_close()
    assert ans["status"] == 413 and "exceeds the server's limit" in ans["error"]
    assert sent < 32 << 20, f"the client pushed {sent} bytes before the 413"  # 1 MiB read + socket buffers
    assert seconds < 5


def test_pickle_is_refused(server: DeviceServer, onnx_model: bytes) -> None:
    with pytest.raises(HardwareError, match="415.*pickled objects are never accepted"):
        client(server).measure_bytes(pickle.dumps({"not": "a model"}), "onnx", SHAPE)
    buf = io.BytesIO()
    torch.save(tiny_net().state_dict(), buf)  # a zip holding a pickle: also refused
    with pytest.raises(HardwareError, match="415.*not a TorchScript archive"):
        client(server).measure_bytes(buf.getvalue(), "onnx", SHAPE)
    assert_serves(server, onnx_model)


def test_garbage_is_refused(server: DeviceServer, onnx_model: bytes) -> None:
    with pytest.raises(HardwareError, match="415.*not a valid ONNX model"):
        client(server).measure_bytes(b"this is not a model at all", "onnx", SHAPE)
    assert_serves(server, onnx_model)


def test_dropped_connection_mid_upload(server: DeviceServer, onnx_model: bytes) -> None:
    ans = raw_request(server, head("/measure?format=onnx", 5000), b"\x08" * 100, close_write=True)
    assert ans["status"] == 400 and "connection closed after 100 of 5000 bytes" in ans["error"]
    host, port = server.server_address[:2]
    with socket.create_connection((str(host), int(port))) as s:  # and a client that vanishes completely
        s.sendall(head("/measure", 5000) + b"\x08" * 10)
    assert_serves(server, onnx_model)


def test_malformed_requests(server: DeviceServer, onnx_model: bytes) -> None:
    assert raw_request(server, head("/measure", None).replace(b"GET", b"POST"))["status"] == 411
    ans = raw_request(server, head("/measure?shape=a,b", 1), b"x")
    assert ans["status"] == 400 and "shape" in ans["error"]
    assert raw_request(server, head("/nothing"))["status"] == 404
    ans = raw_request(server, b"NONSENSE\r\n\r\n")
    assert ans["status"] == 400 and ans["error"]  # the stdlib's own refusal, as JSON
    assert_serves(server, onnx_model)


def test_internal_errors_do_not_echo_their_detail(
    server: DeviceServer, onnx_model: bytes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_info() -> dict[str, Any]:
        raise RuntimeError("detail naming /srv/secret/path")

    monkeypatch.setattr(server, "info", broken_info)
    ans = raw_request(server, head("/info"))
    assert ans["status"] == 500 and "internal error" in ans["error"] and "secret" not in ans["error"]
    assert "/srv/secret/path" in caplog.text  # the operator still sees it
    monkeypatch.undo()
    monkeypatch.setattr(server.runner, "run", lambda *a, **k: {"status": 500, "error": "OSError: /srv/secret/key"})
    ans = post(server, "?shape=1x3x16x16", onnx_model)
    assert ans["status"] == 500 and "secret" not in ans["error"]
    monkeypatch.undo()
    assert_serves(server, onnx_model)


# --- slow and hostile clients ---------------------------------------------------------------------
def test_slow_headers_get_408_at_the_header_deadline(server: DeviceServer, onnx_model: bytes) -> None:
    ans, seconds = send_slowly(server, head("/info"), every_s=0.1)  # every read is quick, the whole is not
    assert ans["status"] == 408 and "headers did not arrive within the server's 0.5 s deadline" in ans["error"]
    assert HEADERS_S <= seconds < HEADERS_S + 0.7
    assert_serves(server, onnx_model)


def test_slow_body_gets_408_at_the_whole_request_deadline(server: DeviceServer, onnx_model: bytes) -> None:
    request = head("/measure?shape=1x3x16x16", 5000) + b"\x08" * 5000
    ans, seconds = send_slowly(server, request, every_s=0.2, fast_prefix=len(request) - 5000)
    assert ans["status"] == 408 and "upload did not arrive within the server's 1 s deadline" in ans["error"]
    assert DEADLINE_S <= seconds < DEADLINE_S + 0.7
    assert_serves(server, onnx_model)


def test_stalled_upload_times_out(server: DeviceServer, onnx_model: bytes) -> None:
    ans = raw_request(server, head("/measure", 5000), b"\x08" * 10)  # never sends the rest
    assert ans["status"] == 408 and "(its --timeout; 10/5000 bytes came)" in ans["error"]
    assert_serves(server, onnx_model)


def test_connections_over_the_cap_get_503_and_slow_clients_cannot_hold_the_server(
    server: DeviceServer, onnx_model: bytes
) -> None:
    answers: list[tuple[dict[str, Any], float]] = []
    start = head("/measure?shape=1x3x16x16", 5000)
    request = start + b"\x08" * 5000  # the token shown at once, then a body that trickles in

    def slow_client() -> None:
        answers.append(send_slowly(server, request, every_s=0.2, fast_prefix=len(start)))

    slow = [threading.Thread(target=slow_client) for _ in range(CONNECTIONS)]
    for t in slow:
        t.start()
    time.sleep(0.3)  # every slot is held by a slow client now
    t0 = time.monotonic()
    ans = raw_request(server, head("/info"))
    assert ans["status"] == 503 and "busy" in ans["error"] and time.monotonic() - t0 < 0.5
    for t in slow:
        t.join()
    assert [a["status"] for a, _ in answers] == [408] * CONNECTIONS
    assert max(s for _, s in answers) < DEADLINE_S + 0.7
    assert_serves(server, onnx_model)


def test_huge_shape_is_400_naming_the_cap(server: DeviceServer, onnx_model: bytes) -> None:
    with pytest.raises(HardwareError, match=r"400.*1x3x100000x100000 has 30000000000 elements.* at most 1048576"):
        client(server).measure_bytes(onnx_model, "onnx", (1, 3, 100_000, 100_000))
    # a model whose own static input is too large (no ?shape=): refused before it is run
    ans = post(server, "", relu_model([1, 4, 1024, 1024]))
    assert ans["status"] == 400 and "has 4194304 elements; this server accepts at most 1048576" in ans["error"]
    assert_serves(server, onnx_model)


def test_long_running_model_is_stopped_at_the_limit_and_does_not_block_others(
    server: DeviceServer, onnx_model: bytes
) -> None:
    slow = loop_model(10**12)
    outcome: dict[str, Any] = {}

    def hostile() -> None:
        t0 = time.monotonic()
        try:
            client(server).measure_bytes(slow, "onnx", (1, 3, 8, 8))
        except HardwareError as exc:
            outcome["error"] = str(exc)
        outcome["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=hostile)
    t.start()
    time.sleep(0.3)  # the loop holds the worker now
    waited = assert_serves(server, onnx_model)
    t.join()
    assert "422" in outcome["error"] and "measurement limit of 2 s" in outcome["error"]
    assert LIMIT_S - 0.5 < outcome["seconds"] < LIMIT_S + KILL_GRACE_S + 1.0  # it ran, and was stopped
    assert waited < LIMIT_S + 1.0  # the good request waited at most about one limit


def test_measurements_take_turns_in_arrival_order() -> None:
    lock, order = _FifoLock(), []
    lock.acquire()

    def wait_turn(i: int) -> None:
        with lock:
            order.append(i)

    threads = [threading.Thread(target=wait_turn, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
        time.sleep(0.05)  # queued in this order
    assert not lock.acquire(timeout=0.1)  # a waiter that gives up leaves the queue ...
    lock.release()
    for t in threads:
        t.join(timeout=5)
    assert order == list(range(6))  # ... and the others still go in turn


# --- models that reach outside themselves ---------------------------------------------------------
def external(tensor: TensorProto, location: str = "leak.bin", length: int = 6) -> TensorProto:
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, "offset": "0", "length": str(length)}.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def constant_external_model() -> bytes:
    """A Constant node whose value is 6 bytes of ``leak.bin`` in the working directory, added to the input."""
    leak = external(TensorProto(name="leak", data_type=TensorProto.UINT8, dims=[6]))
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["c"], value=leak),
            helper.make_node("Cast", ["c"], ["cf"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["x", "cf"], ["y"]),
        ],
        "leak",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_onnx_constant_with_external_data_is_refused(
    server: DeviceServer, onnx_model: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort

    monkeypatch.chdir(tmp_path)  # the server's working directory holds the file
    (tmp_path / "leak.bin").write_bytes(b"SECRET")
    attack = constant_external_model()
    # the attack is real: ONNX Runtime reads the file into the Constant (checker included)
    onnx.checker.check_model(onnx.load_model_from_string(attack))
    leaked = ort.InferenceSession(attack, providers=["CPUExecutionProvider"]).run(None, {"x": np.zeros(6, "f4")})[0]
    assert bytes(leaked.astype(np.uint8)) == b"SECRET"
    ans = post(server, "?shape=6x1", attack)
    assert ans["status"] == 415 and "node 'Constant' attribute 'value' refers to external data" in ans["error"]
    assert_serves(server, onnx_model)


def _with_graph(nodes: list[Any], initializer: Sequence[Any] = (), sparse: Sequence[Any] = (), **model_kw: Any) -> Any:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])], initializer=list(initializer),
        sparse_initializer=list(sparse),
    )  # fmt: skip
    model_kw.setdefault("opset_imports", [helper.make_opsetid("", 17)])
    return helper.make_model(graph, **model_kw)


def _leak(name: str = "w") -> TensorProto:
    return external(TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[6]), length=24)


def _sparse_leak() -> Any:
    return helper.make_sparse_tensor(_leak("sv"), helper.make_tensor("si", TensorProto.INT64, [1], [0]), [6])


def _loop_with(inner: Any) -> Any:
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), inner, helper.make_node("Add", ["v", "k"], ["v_out"])],
        "body", [helper.make_tensor_value_info(n, t, s) for n, t, s in
                 [("i", TensorProto.INT64, []), ("c_in", TensorProto.BOOL, []), ("v", TensorProto.FLOAT, [6])]],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [6])],
    )  # fmt: skip
    return helper.make_node("Loop", ["", "go", "x"], ["y"], body=body)


EXTERNAL_PLACES = {
    "initializer": lambda: _with_graph([helper.make_node("Add", ["x", "w"], ["y"])], initializer=[_leak()]),
    "sparse initializer": lambda: _with_graph([helper.make_node("Add", ["x", "sv"], ["y"])], sparse=[_sparse_leak()]),
    "Constant sparse_value": lambda: _with_graph(
        [
            helper.make_node("Constant", [], ["k"], sparse_value=_sparse_leak()),
            helper.make_node("Add", ["x", "k"], ["y"]),
        ]
    ),
    "Loop body": lambda: _with_graph(
        [
            helper.make_node("Constant", [], ["go"], value=helper.make_tensor("go", TensorProto.BOOL, [], [True])),
            _loop_with(helper.make_node("Constant", [], ["k"], value=_leak())),
        ]
    ),  # fmt: skip
    "local function": lambda: _with_graph(
        [helper.make_node("Leak", ["x"], ["y"], domain="local")],
        functions=[
            helper.make_function(
                "local",
                "Leak",
                ["a"],
                ["b"],
                [helper.make_node("Constant", [], ["k"], value=_leak()), helper.make_node("Add", ["a", "k"], ["b"])],
                [helper.make_opsetid("", 17)],
            )
        ],
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
    ),  # fmt: skip
}


@pytest.mark.parametrize("place", sorted(EXTERNAL_PLACES))
def test_external_data_is_refused_wherever_the_tensor_sits(place: str) -> None:
    model = EXTERNAL_PLACES[place]()
    with pytest.raises(RequestError, match="refers to external data") as info:
        check_onnx(model.SerializeToString())
    assert info.value.status == 415
    # external_data entries alone (data_location left at DEFAULT) are refused too
    for _, tensor in onnx_tensors(model):
        tensor.data_location = TensorProto.DEFAULT
    with pytest.raises(RequestError, match="refers to external data"):
        check_onnx(model.SerializeToString())


def reader_archive(path: Path) -> bytes:
    """A TorchScript archive whose forward adds the first byte of the file at ``path`` to its input."""

    class Reader(torch.nn.Module):
        def __init__(self, target: str) -> None:
            super().__init__()
            self.target = target

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.from_file(self.target, shared=False, size=1, dtype=torch.uint8).float()

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(Reader(str(path))), buf)
    return buf.getvalue()


def test_torchscript_is_refused_by_default(server: DeviceServer, onnx_model: bytes, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"S")
    attack = reader_archive(secret)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert torch.jit.load(io.BytesIO(attack))(torch.zeros(1, 1)).item() == ord("S")  # the attack is real
    with pytest.raises(HardwareError, match="415.*TorchScript is not accepted by this server.*--allow-torchscript"):
        client(server, fmt="torchscript").measure_bytes(attack, "torchscript", (1, 1))
    with pytest.raises(HardwareError, match="415.*format='onnx' was requested but the upload is torchscript"):
        client(server).measure_bytes(attack, "onnx", (1, 1))
    ans = post(server, "?shape=1x1", attack)  # no format named: sniffed, still refused
    assert ans["status"] == 415 and "not accepted by this server" in ans["error"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        good_ts = torchscript_bytes(tiny_net(), SHAPE)
    with pytest.raises(HardwareError, match="415.*TorchScript is not accepted"):
        client(server, fmt="torchscript").measure_bytes(good_ts, "torchscript", SHAPE)
    assert_serves(server, onnx_model)


# --- the client side ------------------------------------------------------------------------------
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
