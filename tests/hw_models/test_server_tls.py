"""The device server over TLS (``--tls-cert/--tls-key``), and its warning when it would listen beyond
loopback in the clear."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prunepilot.hw_models.base import HardwareError
from prunepilot.hw_models.onnxrt import export_onnx_bytes
from prunepilot.hw_models.remote import RemoteLatency
from prunepilot.hw_models.server import DeviceServer
from prunepilot.hw_models.testing import FAST, tiny_net

TOKEN = "test-token-tls"
SHAPE = (1, 3, 16, 16)


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.fail(
            "the TLS tests make a self-signed certificate with the openssl command; install it (apt-get install "
            "openssl)"
        )
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return str(cert), str(key)


@pytest.fixture(scope="module")
def tls_server(cert_pair: tuple[str, str]) -> Iterator[DeviceServer]:
    srv = DeviceServer(
        ("127.0.0.1", 0), TOKEN, request_timeout_s=1.0, tls_cert=cert_pair[0], tls_key=cert_pair[1], protocol=FAST,
        device_name="loopback-tls",
    )  # fmt: skip
    srv.start_in_thread()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_measures_over_tls(tls_server: DeviceServer, cert_pair: tuple[str, str]) -> None:
    assert tls_server.url.startswith("https://127.0.0.1:")
    lm = RemoteLatency(tls_server.url, token=TOKEN, ca_file=cert_pair[0], timeout_s=60)
    assert lm.info()["tls"] is True
    res = lm.measure_bytes(export_onnx_bytes(tiny_net(), SHAPE, "legacy"), "onnx", SHAPE)
    assert res.ms > 0 and res.details["server"] == tls_server.url


def test_clients_that_do_not_speak_or_trust_tls_are_refused(
    tls_server: DeviceServer, cert_pair: tuple[str, str]
) -> None:
    plain = tls_server.url.replace("https://", "http://")
    with pytest.raises(HardwareError, match="cannot reach device server"):
        RemoteLatency(plain, token=TOKEN, timeout_s=5).info()
    with pytest.raises(HardwareError, match="CERTIFICATE_VERIFY_FAILED"):
        RemoteLatency(tls_server.url, token=TOKEN, timeout_s=5).info()  # the system CAs do not know it
    host, port = tls_server.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=10) as s:  # a handshake that never comes
        t0 = time.monotonic()
        assert s.recv(1024) == b"" and time.monotonic() - t0 < 2.5  # closed at the 1 s deadline
    assert RemoteLatency(tls_server.url, token=TOKEN, ca_file=cert_pair[0]).info()["device"] == "loopback-tls"


def test_tls_needs_both_files_and_readable_ones(cert_pair: tuple[str, str], tmp_path: Path) -> None:
    with pytest.raises(HardwareError, match="both --tls-cert and --tls-key"):
        DeviceServer(("127.0.0.1", 0), TOKEN, tls_cert=cert_pair[0])
    with pytest.raises(HardwareError, match="cannot load the TLS certificate"):
        DeviceServer(("127.0.0.1", 0), TOKEN, tls_cert=str(tmp_path / "missing.pem"), tls_key=cert_pair[1])
    with pytest.raises(HardwareError, match="ca_file .* is given but url .* is not https"):
        RemoteLatency("http://127.0.0.1:1", token=TOKEN, ca_file=cert_pair[0])


def test_listening_beyond_loopback_in_the_clear_warns_loudly(
    cert_pair: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="prunepilot.hw_models.server")
    for address, tls, insecure in [("0.0.0.0", False, True), ("0.0.0.0", True, False), ("127.0.0.1", False, False)]:
        caplog.clear()
        cert, key = cert_pair if tls else (None, None)
        srv = DeviceServer((address, 0), TOKEN, tls_cert=cert, tls_key=key)  # never served
        srv.server_close()
        assert srv.insecure is insecure
        assert ("over plain HTTP" in caplog.text and "--tls-cert" in caplog.text) is insecure
