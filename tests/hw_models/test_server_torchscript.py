"""TorchScript on the device server (``allow_torchscript``): archives that read or write files with
``torch.from_file`` are refused, a run past the limit is killed, and good models are still timed.
(A server's default, refusing TorchScript outright, is tested in test_server.py.)"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from prunepilot.hw_models.base import HardwareError
from prunepilot.hw_models.onnxrt import export_onnx_bytes
from prunepilot.hw_models.remote import RemoteLatency
from prunepilot.hw_models.server import DeviceServer
from prunepilot.hw_models.server_models import (
    ALLOWED_TORCHSCRIPT_NAMESPACES,
    REFUSED_TORCHSCRIPT_OPS,
    RequestError,
    check_torchscript_ops,
    torchscript_ops,
)
from prunepilot.hw_models.server_worker import KILL_GRACE_S
from prunepilot.hw_models.testing import FAST, tiny_net

TOKEN = "test-token-ts"
SHAPE = (1, 3, 16, 16)
LIMIT_S = 2.0


@pytest.fixture(scope="module")
def ts_server() -> Iterator[DeviceServer]:
    srv = DeviceServer(
        ("127.0.0.1", 0), TOKEN, request_timeout_s=5.0, measure_timeout_s=LIMIT_S, allow_torchscript=True,
        protocol=FAST, device_name="loopback-ts",
    )  # fmt: skip
    srv.start_in_thread()
    srv.wait_ready()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def onnx_model() -> bytes:
    return export_onnx_bytes(tiny_net(), SHAPE, "legacy")


def client(srv: DeviceServer, fmt: str = "torchscript") -> RemoteLatency:
    return RemoteLatency(srv.url, token=TOKEN, format=fmt, timeout_s=60)


def assert_serves(srv: DeviceServer, onnx_model: bytes) -> None:
    assert client(srv, "onnx").measure_bytes(onnx_model, "onnx", SHAPE).ms > 0


def scripted(module: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.script(module)


def archive(module: nn.Module) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(scripted(module), buf)
    return buf.getvalue()


def run_locally(data: bytes, x: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(io.BytesIO(data))(x)


class Reader(nn.Module):
    """Adds the first byte of ``target`` to its input: one call per byte is a file-reading oracle."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.from_file(self.target, shared=False, size=1, dtype=torch.uint8).float()


class Writer(nn.Module):
    """Creates ``target`` (a shared mapping) and fills it with ``A``s."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mapped = torch.from_file(self.target, shared=True, size=16, dtype=torch.uint8)
        mapped.fill_(65)
        return x + mapped[0].float() * 0


class Hidden(nn.Module):
    """A clean forward; the file read sits in an exported method of a submodule."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.lin = nn.Linear(1, 1)
        self.reader = Reader(target)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)

    @torch.jit.export
    def peek(self, x: torch.Tensor) -> torch.Tensor:
        return self.reader(x)


class Printer(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("uploaded model says hello")
        return x


class Spin(nn.Module):
    """Runs (practically) forever."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = 0
        while i < 1000000000000:
            x = x + 1.0
            i += 1
        return x


def test_torchscript_upload_is_timed(ts_server: DeviceServer) -> None:
    assert client(ts_server).info()["formats"] == ["onnx", "torchscript"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        res = client(ts_server).measure_ms(tiny_net(), SHAPE)
    assert res.details["runtime"] == "torch-eager-cpu" and res.details["format"] == "torchscript" and res.ms > 0


def test_reading_a_file_with_from_file_is_refused(ts_server: DeviceServer, onnx_model: bytes, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"S3CRET")
    attack = archive(Reader(str(secret)))
    assert run_locally(attack, torch.zeros(1, 1)).item() == ord("S")  # the attack is real
    with pytest.raises(HardwareError, match="415.*operators this server refuses: aten::from_file"):
        client(ts_server).measure_bytes(attack, "torchscript", (1, 1))
    assert_serves(ts_server, onnx_model)


def test_writing_a_file_with_from_file_is_refused(ts_server: DeviceServer, onnx_model: bytes, tmp_path: Path) -> None:
    run_locally(archive(Writer(str(tmp_path / "local.bin"))), torch.zeros(1, 1))
    assert (tmp_path / "local.bin").read_bytes() == b"A" * 16  # the attack is real
    target = tmp_path / "created.bin"
    with pytest.raises(HardwareError, match="415.*refuses: aten::from_file"):
        client(ts_server).measure_bytes(archive(Writer(str(target))), "torchscript", (1, 1))
    assert not target.exists()
    assert_serves(ts_server, onnx_model)


def test_a_long_running_torchscript_model_is_killed_at_the_limit(ts_server: DeviceServer, onnx_model: bytes) -> None:
    t0 = time.monotonic()
    with pytest.raises(HardwareError, match="422.*measurement limit of 2 s"):
        client(ts_server).measure_bytes(archive(Spin()), "torchscript", (1, 1))
    assert LIMIT_S <= time.monotonic() - t0 < LIMIT_S + KILL_GRACE_S + 1.5
    assert_serves(ts_server, onnx_model)  # on a fresh worker


def test_uploads_while_a_torchscript_model_spins_are_answered(ts_server: DeviceServer, onnx_model: bytes) -> None:
    errors: list[str] = []

    def hostile() -> None:
        try:
            client(ts_server).measure_bytes(archive(Spin()), "torchscript", (1, 1))
        except HardwareError as exc:
            errors.append(str(exc))

    t = threading.Thread(target=hostile)
    t.start()
    time.sleep(0.5)
    assert client(ts_server, "onnx").info()["device"] == "loopback-ts"  # the HTTP side never waits on a model
    assert_serves(ts_server, onnx_model)  # queued behind the spin, then timed on a fresh worker
    t.join()
    assert len(errors) == 1 and "422" in errors[0]


@pytest.mark.parametrize(
    ("module", "refused"),
    [(Hidden("/etc/hostname"), "aten::from_file"), (Printer(), "prim::Print")],
    ids=["submodule-method", "print"],
)
def test_refused_operators_are_found_anywhere_in_the_module(module: nn.Module, refused: str) -> None:
    loaded = scripted(module)
    assert refused in torchscript_ops(loaded)
    with pytest.raises(RequestError, match=re.escape(refused)) as info:
        check_torchscript_ops(loaded)
    assert info.value.status == 415


def test_a_traced_model_passes_the_operator_check() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(tiny_net(), torch.zeros(*SHAPE))
    check_torchscript_ops(traced)
    assert "aten::_convolution" in torchscript_ops(traced) or "aten::conv2d" in torchscript_ops(traced)


def test_refused_operators_cover_every_file_operator_of_this_torch() -> None:
    """A new torch that adds an aten/prim operator taking a file name must fail here first."""
    file_ops = {
        s.name
        for s in torch._C._jit_get_all_schemas()
        if s.name.split("::")[0] in ALLOWED_TORCHSCRIPT_NAMESPACES
        and any("str" in str(a.type) and re.search(r"file|path|dir|url", a.name) for a in s.arguments)
    }
    assert {"aten::from_file", "aten::save"} <= file_ops  # the survey finds what it should
    assert file_ops <= REFUSED_TORCHSCRIPT_OPS


def test_the_locked_down_worker_can_open_no_file_and_allocate_little(tmp_path: Path) -> None:
    """The second line of defence: even a file operator that passed the checks finds no file."""
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"S")
    code = (
        "import sys, torch\n"
        "from prunepilot.hw_models.server_sandbox import lock_down, warm_up\n"
        "warm_up(); print(lock_down(256))\n"
        "for attempt in (lambda: torch.from_file(sys.argv[1], size=1, dtype=torch.uint8),\n"
        "                lambda: open(sys.argv[1]), lambda: torch.empty(1 << 30, dtype=torch.uint8)):\n"
        "    try:\n"
        "        attempt(); print('ALLOWED')\n"
        "    except (RuntimeError, OSError) as exc:\n"
        "        print('REFUSED', exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(secret)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "ALLOWED" not in out and out.count("REFUSED") == 3
    assert "Too many open files" in out and "can't allocate memory" in out
