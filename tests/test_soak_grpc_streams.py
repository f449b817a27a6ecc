"""The gRPC stream soak (benchmarks/soak_grpc_streams.py) runs clean; its stall detector fires."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "grpc", reason="the soak drives a gRPC bridge: pip install 'snakepit-harness[grpc]'"
)

ROOT = Path(__file__).resolve().parent.parent
SOAK = ROOT / "benchmarks" / "soak_grpc_streams.py"
STALLING_BRIDGE = ROOT / "tests" / "bridges" / "stalling_grpc_bridge.py"
# Generous bounds: the soak itself must never hang the test run.
RUN_LIMIT = 120


def _soak(tmp_path: Path, *args: str) -> tuple[int, dict[str, object], str]:
    report = tmp_path / "soak.json"
    done = subprocess.run(
        [
            sys.executable,
            str(SOAK),
            *args[: args.index("--")],
            "--json",
            str(report),
            *args[args.index("--") :],
        ],
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT,
        check=False,
    )
    summary = json.loads(report.read_text()) if report.exists() else {}
    return done.returncode, summary, done.stdout + done.stderr


def test_reference_bridge_soaks_clean_over_several_bridges(tmp_path: Path) -> None:
    code, summary, output = _soak(
        tmp_path, "--calls", "150", "--calls-per-bridge", "50", "--", "snakepit-grpc-bridge"
    )
    assert code == 0, output
    assert summary["calls"] == 150
    assert summary["bridge_starts"] == 3
    assert summary["stalls"] == 0 and summary["wrong_answers"] == 0
    # Every stream carries its data messages and one final: at least one message a call.
    assert isinstance(summary["stream_messages"], int) and summary["stream_messages"] >= 150
    assert "p99" in summary["latency_ms"]  # type: ignore[operator]


def test_stall_detector_reports_a_stream_that_hangs(tmp_path: Path) -> None:
    code, summary, output = _soak(
        tmp_path,
        "--calls",
        "60",
        "--timeout",
        "1",
        "--calls-per-bridge",
        "1000",
        "--",
        sys.executable,
        str(STALLING_BRIDGE),
    )
    assert code == 1, output
    assert summary["stalls"] == 2  # calls 25 and 50 of one bridge
    incidents = summary["incidents"]
    assert isinstance(incidents, list)
    stalled = [i for i in incidents if i["stalled"]]
    assert [i["call"] for i in stalled] == [25, 50]
    assert all(i["bridge_state"] and i["bridge_threads"] > 0 for i in stalled)
    assert "STALL" in output
