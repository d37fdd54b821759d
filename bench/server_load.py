"""The device server under load: N good clients alone, then beside M slow or hostile ones.

Starts a ``prunepilot device-server`` (:class:`DeviceServer`) on 127.0.0.1 only, with short
deadlines, and runs one phase of ``--seconds`` per row. In every phase N good clients loop on
the product's client (``RemoteLatency.measure_bytes`` of a small ONNX model); beside them, M
hostile clients of one kind:

* ``slow-headers``: a slowloris, one byte of its request line and headers every 0.5 s;
* ``slow-body``: valid headers and token, then the body one byte every 0.5 s;
* ``oversized``: announces a 1 GB upload and streams it as fast as it can;
* ``huge-shape``: asks for a 1x3x100000x100000 input;
* ``long-running``: uploads an ONNX ``Loop`` that never ends (stopped at the measurement limit);
* ``mixed``: M clients cycling through all of the above.

For each phase: the good requests' success rate and p50/p95 latency (client wall time: upload,
checks and the timing protocol in the worker, answer), and what the hostile ones were answered.

    .venv/bin/python bench/server_load.py [--good 4] [--hostile 8] [--seconds 6] [--out-dir DIR]

Writes ``server_load-<time>.json`` to ``--out-dir`` (default ``bench/results/<date>/``), carrying
the printed table (:func:`load_table`) for ``bench/report.py``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*

from bench.common import (
    args_record,
    dated_results,
    machine,
    machine_note,
    print_notes,
    result_table,
    stamp,
    write_json,
)
from prunepilot.hw_models.base import HardwareError, runtime_versions
from prunepilot.hw_models.measure import MeasureProtocol
from prunepilot.hw_models.onnxrt import export_onnx_bytes
from prunepilot.hw_models.remote import RemoteLatency
from prunepilot.hw_models.server import TOKEN_HEADER, DeviceServer
from prunepilot.hw_models.testing import tiny_net

TOKEN = "bench-server-load"
SHAPE = (1, 3, 16, 16)
KINDS = ("slow-headers", "slow-body", "oversized", "huge-shape", "long-running")
COLUMNS = ["phase", "good clients", "hostile clients", "good requests", "good ok %", "good p50 ms", "good p95 ms",
           "good failures", "hostile requests", "hostile answers"]  # fmt: skip
#: The server's deadlines in this benchmark (short, so that a phase of seconds sees many of them).
REQUEST_S, HEADERS_S, MEASURE_S, CONNECTIONS = 5.0, 2.0, 2.0, 16
PROTOCOL = MeasureProtocol(warmup=2, min_runs=10, max_runs=50, min_seconds=0.0, max_attempts=1)


def loop_model() -> bytes:
    """An ONNX model whose ``Loop`` runs 10^12 times: it never finishes on its own."""
    from onnx import TensorProto, helper

    def info(name: str, kind: int, shape: list[int] | None) -> Any:
        return helper.make_tensor_value_info(name, kind, shape)

    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Sin", ["v"], ["s"]),
         helper.make_node("Add", ["v", "s"], ["v_out"])],
        "body", [info("i", TensorProto.INT64, []), info("c", TensorProto.BOOL, []), info("v", TensorProto.FLOAT, None)],
        [info("c_out", TensorProto.BOOL, []), info("v_out", TensorProto.FLOAT, None)],
    )  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["n"], value=helper.make_tensor("n", TensorProto.INT64, [], [10**12])),
         helper.make_node("Constant", [], ["go"], value=helper.make_tensor("go", TensorProto.BOOL, [], [True])),
         helper.make_node("Loop", ["n", "go", "x"], ["y"], body=body)],
        "spin", [info("x", TensorProto.FLOAT, [1, 8])], [info("y", TensorProto.FLOAT, [1, 8])],
    )  # fmt: skip
    return bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())


# --- clients ----------------------------------------------------------------------------------------
def _status_of(text: str) -> str:
    """``"503"`` from a RemoteLatency error (``... answered 503: ...``), else what kind of failure."""
    found = re.search(r"answered (\d{3})", text)
    return found.group(1) if found else ("unreachable" if "cannot reach" in text else "error")


def _raw_status(sock: socket.socket) -> str:
    """The status code the server answered on ``sock`` (``closed`` / ``reset`` / ``timeout`` if none)."""
    data = b""
    try:
        while len(data) < 64 and (chunk := sock.recv(4096)):
            data += chunk
    except ConnectionResetError:
        return "reset" if not data else data.split(b" ", 2)[1].decode()
    except TimeoutError:
        return "timeout"
    return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed"


def _head(path: str, length: int | None) -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else ""
    method = "GET" if length is None else "POST"
    return f"{method} {path} HTTP/1.0\r\n{TOKEN_HEADER}: {TOKEN}\r\n{size}\r\n".encode()


def _trickle(addr: tuple[str, int], fast: bytes, slow: bytes, stop: float) -> str:
    """Send ``fast`` at once, then ``slow`` a byte every 0.5 s until the server answers."""
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(fast)
        for i in range(len(slow)):
            s.settimeout(0.5)
            try:
                if s.recv(1, socket.MSG_PEEK):
                    break
            except TimeoutError:
                pass
            except OSError:
                break
            if time.monotonic() > stop + 10:
                return "never answered"
            try:
                s.send(slow[i : i + 1])
            except OSError:
                break
        s.settimeout(10)
        return _raw_status(s)


def hostile_request(kind: str, addr: tuple[str, int], spin: bytes, stop: float) -> str:
    """One hostile request of ``kind``; returns the answer's status (or how the connection ended)."""
    if kind == "slow-headers":
        return _trickle(addr, b"", _head("/info", None), stop)
    if kind == "slow-body":
        return _trickle(addr, _head("/measure?shape=1x3x16x16", 100_000), b"\x08" * 100_000, stop)
    if kind == "huge-shape":
        with socket.create_connection(addr, timeout=10) as s:
            s.sendall(_head("/measure?shape=1x3x100000x100000", 8) + b"\x08" * 8)
            return _raw_status(s)
    if kind == "oversized":
        with socket.create_connection(addr, timeout=10) as s:
            s.sendall(_head("/measure", 10**9))
            chunk = b"\0" * 65536
            try:
                for _ in range(4096):  # 256 MiB at most
                    s.send(chunk)
            except OSError:
                pass
            return _raw_status(s)
    if kind == "long-running":
        try:
            RemoteLatency(f"http://{addr[0]}:{addr[1]}", token=TOKEN, timeout_s=30).measure_bytes(spin, "onnx", (1, 8))
            return "200"
        except HardwareError as exc:
            return _status_of(str(exc))
    raise ValueError(f"unknown hostile kind {kind!r}; choose from {KINDS}")


def run_phase(srv: DeviceServer, model: bytes, spin: bytes, good: int, hostile: int, kind: str | None,
              seconds: float) -> dict[str, Any]:  # fmt: skip
    """N good and M hostile client threads for ``seconds``; what each was answered."""
    addr = (str(srv.server_address[0]), int(srv.server_address[1]))
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    answers: Counter[str] = Counter()
    lock = threading.Lock()

    def good_client() -> None:
        lm = RemoteLatency(srv.url, token=TOKEN, timeout_s=30)
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                lm.measure_bytes(model, "onnx", SHAPE)
                with lock:
                    latencies.append((time.perf_counter() - t0) * 1e3)
            except HardwareError as exc:
                with lock:
                    failures[_status_of(str(exc))] += 1

    def hostile_client(index: int) -> None:
        n = index
        while time.monotonic() < stop:
            which = kind if kind != "mixed" else KINDS[n % len(KINDS)]
            n += 1
            try:
                status = hostile_request(str(which), addr, spin, stop)
            except OSError as exc:
                status = type(exc).__name__
            with lock:
                answers[f"{which}: {status}" if kind == "mixed" else status] += 1

    threads: list[threading.Thread] = [threading.Thread(target=good_client) for _ in range(good)]
    threads += [threading.Thread(target=hostile_client, args=(i,)) for i in range(hostile if kind else 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    if any(t.is_alive() for t in threads):
        raise RuntimeError(f"a client of phase {kind or 'baseline'} did not finish within a minute of its end")
    done = sorted(latencies)
    return {
        "phase": kind or "baseline",
        "good_clients": good,
        "hostile_clients": hostile if kind else 0,
        "good_requests": len(done) + sum(failures.values()),
        "good_ok": len(done),
        "good_p50_ms": statistics.median(done) if done else None,
        "good_p95_ms": statistics.quantiles(done, n=20, method="inclusive")[18] if len(done) >= 2 else None,
        "good_failures": dict(failures),
        "hostile_answers": dict(answers),
    }


# --- the table ----------------------------------------------------------------------------------------
def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "-"


def table_row(p: dict[str, Any]) -> list[Any]:
    """One row from one entry of the JSON's ``phases`` (its own numbers, unformatted)."""
    ok = 100 * p["good_ok"] / p["good_requests"] if p["good_requests"] else None
    return [p["phase"], p["good_clients"], p["hostile_clients"], p["good_requests"], ok, p["good_p50_ms"],
            p["good_p95_ms"], _counts(p["good_failures"]), sum(p["hostile_answers"].values()),
            _counts(p["hostile_answers"])]  # fmt: skip


def load_table(record: dict[str, Any]) -> dict[str, Any]:
    """The BENCHMARKS.md table for one ``server_load-*.json`` record (also what the script prints)."""
    phases, limits, args = record["phases"], record["limits"], record["args"]
    base = next(p for p in phases if p["phase"] == "baseline")
    verdicts = []
    for p in phases:
        if p["phase"] == "baseline" or not p["good_requests"]:
            continue
        ok = p["good_ok"] / p["good_requests"]
        slower = p["good_p95_ms"] / base["good_p95_ms"] if p["good_p95_ms"] and base["good_p95_ms"] else None
        verdicts.append(f"{p['phase']} {100 * ok:.0f}% ok" + (f", p95 x{slower:.1f}" if slower else ""))
    m = record["machine"]
    notes = [
        f"Latency: measured, client wall time of each good request (upload of a {record['model_bytes']}-byte ONNX "
        f"model, checks and the timing protocol in the server's worker, answer); not the model's own latency. "
        f"Phases of {args['seconds']} s each; p95 over the phase's successful good requests.",
        f"Server on 127.0.0.1: whole-request deadline {limits['request_timeout_s']:g} s, headers "
        f"{limits['header_timeout_s']:g} s, measurement limit {limits['measure_timeout_s']:g} s, "
        f"{limits['max_connections']} connections. Measurements run one at a time (timings must not disturb each "
        "other) in arrival order, so a good request waits behind every model queued before it that runs to the "
        "limit: under long-running clients its latency is their number times the limit, not the model's.",
        "Hostile kinds: slow-headers (a byte every 0.5 s), slow-body (token sent, body a byte every 0.5 s), "
        "oversized (announces 1 GB), huge-shape (1x3x100000x100000), long-running (an ONNX Loop of 10^12 steps), "
        "mixed (all of them in turn). Answers: HTTP status, or how the connection ended.",
        "Against the baseline (good requests ok, p95 relative to the baseline's): " + "; ".join(verdicts) + ".",
        machine_note(m.get("cpu"), m.get("cores"), m.get("platform"), record["versions"]),
    ]
    return result_table(
        "Device server under load: good clients beside slow and hostile ones (loopback)",
        COLUMNS,
        [table_row(p) for p in phases],
        notes,
    )


def print_table(table: dict[str, Any]) -> None:
    print(f"\n{'phase':14} {'good':>4} {'bad':>4} {'reqs':>5} {'ok %':>6} {'p50 ms':>8} {'p95 ms':>8}  "
          "failures | hostile")  # fmt: skip
    for phase, good, bad, reqs, ok, p50, p95, fails, hreqs, hans in table["rows"]:
        num = [f"{v:8.1f}" if v is not None else f"{'-':>8}" for v in (p50, p95)]
        print(f"{phase:14} {good:>4} {bad:>4} {reqs:>5} {ok if ok is None else round(ok, 1):>6} {num[0]} {num[1]}  "
              f"{fails} | {hreqs}: {hans}")  # fmt: skip
    print_notes(table["notes"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--good", type=int, default=4, help="good clients in every phase")
    ap.add_argument("--hostile", type=int, default=8, help="hostile clients beside them (every phase but baseline)")
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each phase")
    ap.add_argument("--kinds", default=",".join((*KINDS, "mixed")), help="hostile phases to run, comma-separated")
    ap.add_argument("--out-dir", type=Path, default=dated_results(), help="folder for the JSON result")
    args = ap.parse_args()
    if not 1 <= args.good <= 32 or not 0 <= args.hostile <= 64 or not 0 < args.seconds <= 60:
        raise SystemExit("keep it bounded: --good 1..32, --hostile 0..64, --seconds up to 60")
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - {*KINDS, "mixed"})
    if unknown:
        raise SystemExit(f"unknown hostile kinds {unknown}; choose from {', '.join((*KINDS, 'mixed'))}")
    logging.basicConfig(level=logging.ERROR)  # the server logs every refusal at WARNING: thousands here
    model, spin = export_onnx_bytes(tiny_net(), SHAPE, "legacy"), loop_model()
    srv = DeviceServer(
        ("127.0.0.1", 0), TOKEN, request_timeout_s=REQUEST_S, header_timeout_s=HEADERS_S, measure_timeout_s=MEASURE_S,
        max_connections=CONNECTIONS, protocol=PROTOCOL, device_name="bench-loopback",
    )  # fmt: skip
    srv.start_in_thread()
    try:
        srv.wait_ready()
        phases = []
        for kind in [None, *kinds]:
            print(f"phase {kind or 'baseline'}: {args.good} good + {args.hostile if kind else 0} hostile, "
                  f"{args.seconds:g} s", flush=True)  # fmt: skip
            phases.append(run_phase(srv, model, spin, args.good, args.hostile, kind, args.seconds))
        still = RemoteLatency(srv.url, token=TOKEN, timeout_s=30).measure_bytes(model, "onnx", SHAPE)
        limits = srv.info()["limits"]
    finally:
        srv.shutdown()
        srv.server_close()
    record: dict[str, Any] = {
        "benchmark": "server_load",
        "args": args_record(args),
        "limits": limits,
        "protocol": PROTOCOL.record(),
        "model_bytes": len(model),
        "machine": machine(),
        "load_average": list(os.getloadavg()),
        "versions": runtime_versions("onnxruntime", "onnx"),
        "phases": phases,
        "after": {"ok": still.ms > 0},
    }
    record["table"] = load_table(record)
    print_table(record["table"])
    write_json(args.out_dir / f"server_load-{stamp()}.json", record)


if __name__ == "__main__":
    main()
