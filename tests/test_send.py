"""`snakepit-harness send` against well- and badly-behaved bridges (real subprocesses)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from snakepit_harness.protocol import response_problems as check_envelope

PY = sys.executable

# Answers every request as a correct minimal bridge would (JSON only).
GOOD = r"""
import json, os, struct, sys
def read(n):
    data = b''
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk: sys.exit(0)
        data += chunk
    return data
while True:
    (n,) = struct.unpack('>I', read(4))
    req = json.loads(read(n))
    if req['command'] == 'ping':
        resp = {'id': req['id'], 'success': True, 'result': {'status': 'ok'},
                'timestamp': '2026-01-01T00:00:00Z'}
    elif req['command'] == 'echo':
        resp = {'id': req['id'], 'success': True, 'result': req['args'],
                'timestamp': '2026-01-01T00:00:00Z'}
    else:
        resp = {'id': req['id'], 'success': False, 'error': 'unknown command',
                'error_type': 'unknown_command', 'timestamp': '2026-01-01T00:00:00Z'}
    out = json.dumps(resp).encode()
    os.write(1, struct.pack('>I', len(out)) + out)
"""


def send(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "snakepit_harness", "send", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_successful_command_prints_the_response() -> None:
    done = send("ping", "--", PY, "-c", GOOD)
    assert done.returncode == 0, done.stderr
    assert '"status": "ok"' in done.stdout


def test_failed_command_exits_one_with_the_error() -> None:
    done = send("nope", "--", PY, "-c", GOOD)
    assert done.returncode == 1
    assert "unknown command" in done.stderr


@pytest.mark.parametrize(
    ("script", "verdict", "evidence"),
    [
        (
            "import sys; sys.stderr.write('adapter import failed\\n'); sys.exit(4)",
            "CRASH",
            "adapter import failed",
        ),
        (
            "import sys, time; print('debug output'); sys.stdout.flush(); time.sleep(30)",
            "FRAMING",
            "6465627567",
        ),  # the hex of b"debug" is shown
        ("import time; time.sleep(30)", "TIMEOUT", "no complete response"),
        (
            "import os, sys; os.write(1, b'\\x00\\x00\\x00\\x03abc'); sys.stdin.read()",
            "DECODE",
            "616263",
        ),
        (
            "import os, sys; os.write(1, b'\\x00\\x00\\x00\\x02{}'); sys.stdin.read()",
            "INVALID RESPONSE",
            "no `id`",
        ),
    ],
    ids=["crash", "stdout-pollution", "hang", "undecodable", "bad-envelope"],
)
def test_misbehaving_bridge_gets_a_verdict(script: str, verdict: str, evidence: str) -> None:
    done = send("ping", "--timeout", "1", "--", PY, "-c", script)
    assert done.returncode == 1
    assert verdict in done.stderr
    assert evidence in done.stderr


def test_bad_args_are_a_usage_error() -> None:
    done = send("ping", "--args", "[1", "--", PY, "-c", GOOD)
    assert done.returncode == 2
    assert "--args is not JSON" in done.stderr


def test_missing_executable_is_a_usage_error() -> None:
    done = send("ping", "--", "/nonexistent/bridge")
    assert done.returncode == 2
    assert "cannot start" in done.stderr


@pytest.mark.parametrize(
    ("response", "problem"),
    [
        ([], "not an object"),
        ({"success": True, "result": 1, "timestamp": "t"}, "no `id`"),
        ({"id": "1", "success": True, "result": 1, "timestamp": "t"}, "`id` is '1'"),
        ({"id": 1, "success": "yes", "timestamp": "t"}, "not a boolean"),
        ({"id": 1, "success": True, "timestamp": "t"}, "no `result`"),
        ({"id": 1, "success": False, "error": "", "timestamp": "t"}, "non-empty"),
        ({"id": 1, "success": True, "result": None}, "`timestamp`"),
    ],
)
def test_check_envelope(response: object, problem: str) -> None:
    problems = check_envelope(response, 1)
    assert any(problem in p for p in problems), problems


def test_check_envelope_accepts_a_good_response() -> None:
    good = {"id": 1, "success": True, "result": {"status": "ok"}, "timestamp": "t"}
    assert check_envelope(good, 1) == []


def test_lone_surrogate_in_the_response_is_printed_escaped() -> None:
    done = send("echo", "--args", '{"x": "\\ud800"}', "--", PY, "-c", GOOD)
    assert done.returncode == 0, done.stderr
    assert "\\ud800" in done.stdout
