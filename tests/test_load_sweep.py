"""`snakepit-harness load` end to end: real locust processes, real bridges, tiny durations."""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

# find_spec, not importorskip: importing locust would monkey-patch this whole
# pytest process with gevent (and break grpc and threads in other tests).
if importlib.util.find_spec("locust") is None:
    pytest.skip("the load extra (locust) is not installed", allow_module_level=True)

PY = sys.executable
V2 = [PY, "-m", "snakepit_bridge.generic_bridge_v2", "--quiet"]
QUICK = ["--duration", "1", "--warmup", "0.3"]


def load(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "snakepit_harness", "load", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _cmdlines() -> dict[int, str]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "cmdline").read_bytes()
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat[stat.rfind(")") + 2 :].startswith("Z"):
                continue  # a zombie holds no resources and is its parent's to reap
            out[int(entry.name)] = raw.replace(b"\0", b" ").decode(errors="replace")
    return out


def _recorded_pids(workdir: Path) -> list[int]:
    pids = []
    for pid_file in workdir.glob("*.pids"):
        pids += [int(line.split()[0]) for line in pid_file.read_text().splitlines() if line]
    return pids


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat[stat.rfind(")") + 2 :].startswith("Z")


def test_sweep_writes_table_plots_recommendation_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    marker = f"load-test-{uuid.uuid4().hex[:8]}"
    work = tmp_path / "work"
    done = load(
        "--pool",
        "1,2",
        "--codec",
        "json,msgpack",
        "--payload",
        "small",
        "--users",
        "4",
        "--baseline",
        "smallest",
        *QUICK,
        "--html",
        str(tmp_path / "report.html"),
        "--json",
        str(tmp_path / "report.json"),
        "--csv",
        str(tmp_path / "csv"),
        "--work-dir",
        str(work),
        "--",
        *V2,
        "--mode",
        marker,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "[5/5]" in done.stderr  # progress, point by point
    report: dict[str, Any] = json.loads((tmp_path / "report.json").read_text())
    rows = report["rows"]
    assert [(r["kind"], r["pool"], r["codec"]) for r in rows] == [
        ("baseline", 1, "raw"),
        ("bridge", 1, "json"),
        ("bridge", 1, "msgpack"),
        ("bridge", 2, "json"),
        ("bridge", 2, "msgpack"),
    ]
    for row in rows:
        assert row["error"] is None
        assert row["requests"] > 0
        assert row["error_ratio"] == 0
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["loadgen_cpu_pct"] > 0
        # Locust's own stats keep sub-millisecond values too (its whole-ms buckets
        # replaced): its median agrees with our exact one instead of reading 0.
        assert row["locust_p50_ms"] == pytest.approx(row["p50_ms"], rel=0.2)
    assert rows[1]["p50_vs_raw"] > 0  # ratios against the same-run baseline
    # The recommendation is the smallest pool within 5% of the line's best throughput.
    for entry in report["recommendation"]["pools"].values():
        line = [
            r
            for r in rows
            if r["codec"] == entry["codec"] and r["kind"] == "bridge" and r["payload"] == "small"
        ]
        best = max(r["rps"] for r in line)
        chosen = min(r["pool"] for r in line if r["rps"] >= 0.95 * best)
        assert entry["pool"] == chosen
    html = (tmp_path / "report.html").read_text()
    assert html.count("<svg") == 2
    assert "Recommendation" in html
    assert " 0 ms" not in done.stdout
    assert "Recommendation:" in done.stdout
    assert (tmp_path / "csv" / "points.csv").read_text().count("\n") == 1 + len(rows)
    assert report["startup"][0]["bridge_s"] > 0
    # Every bridge the sweep started is gone.
    assert _recorded_pids(work)
    assert not [pid for pid in _recorded_pids(work) if _alive(pid)]
    assert not [line for line in _cmdlines().values() if marker in line]


def test_limits_set_exit_status_3_and_soak_reports_memory(tmp_path: Path) -> None:
    requests = tmp_path / "requests.json"
    requests.write_text(
        json.dumps(
            [
                {"command": "echo", "args": {"blob": {"$bytes": "AAECAw=="}, "n": 1}},
                {"command": "compute", "args": {"operation": "add", "a": 1, "b": 2}},
            ]
        )
    )
    done = load(
        "--pool",
        "1",
        "--codec",
        "msgpack",
        "--payload",
        f"file:{requests}",
        "--users",
        "2",
        "--baseline",
        "none",
        "--soak",
        "--soak-interval",
        "0.25",
        "--duration",
        "1.2",
        "--warmup",
        "0.2",
        "--min-rps",
        "1e12",
        "--json",
        str(tmp_path / "r.json"),
        "--",
        *V2,
    )
    assert done.returncode == 3, done.stderr + done.stdout
    assert "LIMIT BREACHED" in done.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["breaches"] and "req/s" in report["breaches"][0]
    (row,) = report["rows"]
    assert row["requests"] > 0 and row["error_ratio"] == 0  # the user's requests all succeeded
    soak = report["soak"][0]
    assert len(soak["samples"]) >= 4  # sampled every 0.25 s
    assert soak["rss_start_mb"] > 1


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("/nonexistent/bridge", "is not an executable file"),
        ("no-such-bridge-anywhere", "was not found on PATH"),
    ],
)
def test_a_missing_bridge_is_reported_before_any_point_runs(command: str, message: str) -> None:
    done = load("--pool", "1", *QUICK, "--", command, timeout=30)
    assert done.returncode == 2
    assert message in done.stderr
    assert "[1/" not in done.stderr


def test_a_bridge_that_dies_at_start_fails_the_point_with_its_stderr() -> None:
    crash = "import sys; sys.stderr.write('bridge: config missing\\n'); sys.exit(4)"
    done = load(
        "--pool", "1", "--codec", "json", "--baseline", "none", *QUICK, "--", PY, "-c", crash
    )
    assert done.returncode == 1
    assert "FAILED" in done.stderr
    assert "config missing" in done.stdout


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--payload", "enormous"], "unknown payload profile 'enormous'"),
        (["--codec", "xml"], "unknown codec 'xml'"),
        (["--duration", "-1"], "--duration must be positive"),
        (["--pool", "0,2"], "pool sizes must be positive"),
    ],
)
def test_bad_options_are_rejected_before_anything_runs(options: list[str], message: str) -> None:
    done = load(*options, "--", *V2, timeout=30)
    assert done.returncode == 2
    assert message in done.stderr


def test_sigint_mid_run_leaves_no_bridge_behind(tmp_path: Path) -> None:
    marker = f"sigint-test-{uuid.uuid4().hex[:8]}"
    work = tmp_path / "work"
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "snakepit_harness",
            "load",
            "--pool",
            "2",
            "--codec",
            "msgpack",
            "--baseline",
            "none",
            "--duration",
            "60",
            "--work-dir",
            str(work),
            "--",
            *V2,
            "--mode",
            marker,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = [
                line
                for line in _cmdlines().values()
                if marker in line and "-m snakepit_bridge" in line
            ]
            if len(running) >= 2:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the bridges never started")
        time.sleep(0.5)  # mid-run: users are sending requests
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    time.sleep(0.2)
    assert not [line for line in _cmdlines().values() if marker in line]
    assert not [line for line in _cmdlines().values() if str(work) in line]  # no locust left
    for pid in _recorded_pids(work):
        assert not _alive(pid)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_distributed_master_and_worker_on_localhost(tmp_path: Path) -> None:
    port = _free_port()
    common = ["-m", "snakepit_harness", "load"]
    master = subprocess.Popen(
        [
            PY,
            *common,
            "--master",
            "--expect-workers",
            "1",
            "--master-bind-port",
            str(port),
            "--pool",
            "1",
            "--codec",
            "msgpack",
            "--baseline",
            "none",
            "--users",
            "2",
            *QUICK,
            "--json",
            str(tmp_path / "r.json"),
            "--",
            *V2,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    worker = subprocess.Popen(
        [PY, *common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = master.communicate(timeout=90)
        _, worker_err = worker.communicate(timeout=30)
    finally:
        for proc in (master, worker):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert master.returncode == 0, err + out
    assert worker.returncode == 0, worker_err
    assert "served bridge pool=1 codec=msgpack" in worker_err
    report = json.loads((tmp_path / "r.json").read_text())
    (row,) = report["rows"]
    assert row["requests"] > 0
    assert row["p50_ms"] > 0


def test_grpc_unary_and_streaming_against_the_reference_grpc_bridge(tmp_path: Path) -> None:
    if importlib.util.find_spec("grpc") is None:
        pytest.skip("the grpc extra is not installed")
    done = load(
        "--transport",
        "grpc",
        "--pool",
        "1",
        "--payload",
        "ping,stream",
        "--users",
        "2",
        "--baseline",
        "none",  # the echo server baseline has its own test below
        *QUICK,
        "--json",
        str(tmp_path / "r.json"),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [(r["kind"], r["payload"]) for r in rows] == [("bridge", "ping"), ("bridge", "stream")]
    for row in rows:
        assert row["requests"] > 0 and row["error_ratio"] == 0
    stream = rows[1]
    # Time to first message is measured apart from the whole stream.
    assert 0 < stream["first_message_p50_ms"] <= stream["p50_ms"]


# Answers the init ping (JSON), then reads requests and never answers them.
HANGS_AFTER_INIT = r"""
import json, os, sys, time
def read(n):
    data = b''
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk: sys.exit(0)
        data += chunk
    return data
n = int.from_bytes(read(4), 'big')
req = json.loads(read(n))
out = json.dumps({'id': req['id'], 'success': True, 'result': {'status': 'ok'},
                  'timestamp': '2026-01-01T00:00:00Z'}).encode()
os.write(1, len(out).to_bytes(4, 'big') + out)
while True:
    read(4)
    time.sleep(3600)
"""


def test_a_bridge_that_stops_answering_shows_errors_not_just_slowness(tmp_path: Path) -> None:
    done = load(
        "--pool",
        "1",
        "--codec",
        "json",
        "--codec-select",
        "none",
        "--baseline",
        "none",
        "--users",
        "2",
        *QUICK,
        "--max-error-ratio",
        "0",
        "--json",
        str(tmp_path / "r.json"),
        "--",
        PY,
        "-c",
        HANGS_AFTER_INIT,
    )
    assert done.returncode == 3, done.stderr + done.stdout
    (row,) = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert row["requests"] == 0
    assert row["error_ratio"] == 1.0
    assert "no answer within" in row["top_error"]


def test_grpc_baseline_echo_server_answers_unary_and_stream_calls() -> None:
    grpc = pytest.importorskip("grpc", reason="the grpc extra is not installed")
    from snakepit_harness.loadtests.grpc_calls import (
        EXECUTE_METHOD,
        EXECUTE_STREAM_METHOD,
        execute_request_bytes,
    )
    from snakepit_harness.loadtests.grpc_echo import STREAM_COPIES
    from snakepit_harness.loadtests.point import baseline_command

    proc = subprocess.Popen(
        [*baseline_command("grpc"), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("GRPC_SERVER_READY_ON_PORT=")
        with grpc.insecure_channel(f"127.0.0.1:{int(line.split('=')[1])}") as channel:
            request = execute_request_bytes("ping", {"n": 1})
            unary = channel.unary_unary(EXECUTE_METHOD)
            assert unary(request, timeout=10, wait_for_ready=True) == request
            stream = channel.unary_stream(EXECUTE_STREAM_METHOD)
            assert list(stream(request, timeout=10)) == [request] * STREAM_COPIES
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
