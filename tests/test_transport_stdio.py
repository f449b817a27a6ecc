"""StdioBridge: supervision of a real bridge process (deadlines, crashes, cleanup)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from snakepit_harness import BridgeCrashed, BridgeTimeout, RemoteProtocolError, get_codec
from snakepit_harness.transports import StdioBridge, describe_returncode

PY = sys.executable

# A minimal correct echo bridge: answers every frame with the same bytes.
RAW_ECHO = """
import os, struct
while True:
    h = os.read(0, 4)
    if len(h) < 4: break
    n = struct.unpack('>I', h)[0]
    body = b''
    while len(body) < n:
        chunk = os.read(0, n - len(body))
        if not chunk: raise SystemExit(1)
        body += chunk
    os.write(1, h + body)
"""


def test_request_round_trip() -> None:
    codec = get_codec("json")
    with StdioBridge([PY, "-c", RAW_ECHO]) as bridge:
        assert bridge.request({"id": 1, "x": [1, 2]}, codec, timeout=10) == {"id": 1, "x": [1, 2]}
        assert bridge.record.sent_total == bridge.record.received_total


def test_silent_bridge_is_a_timeout_not_a_hang() -> None:
    with StdioBridge([PY, "-c", "import time; time.sleep(60)"]) as bridge:
        bridge.send_frame(b"{}", timeout=5)
        began = time.monotonic()
        with pytest.raises(BridgeTimeout):
            bridge.read_frame(timeout=0.3)
        assert time.monotonic() - began < 2


def test_bridge_that_stops_reading_is_a_timeout() -> None:
    bridge = StdioBridge([PY, "-c", "import time; time.sleep(60)"])
    with bridge, pytest.raises(BridgeTimeout, match="stopped reading"):
        bridge.send_bytes(b"x" * (8 * 1024 * 1024), timeout=0.3)


def test_crash_reports_status_and_stderr() -> None:
    script = "import sys; sys.stderr.write('boom: bad things\\n'); sys.exit(3)"
    with StdioBridge([PY, "-c", script]) as bridge, pytest.raises(BridgeCrashed) as caught:
        bridge.read_frame(timeout=10)
    assert caught.value.returncode == 3
    assert "exit status 3" in str(caught.value)
    assert b"boom: bad things" in caught.value.stderr_tail


def test_killed_by_signal_is_named() -> None:
    script = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    bridge = StdioBridge([PY, "-c", script])
    with bridge, pytest.raises(BridgeCrashed, match="SIGSEGV"):
        bridge.read_frame(timeout=10)
    assert describe_returncode(-signal.SIGKILL) == "killed by SIGKILL"


def test_text_on_stdout_is_a_protocol_error() -> None:
    script = "import sys, time; print('hello from the bridge'); sys.stdout.flush(); time.sleep(30)"
    with StdioBridge([PY, "-c", script]) as bridge:
        with pytest.raises(RemoteProtocolError, match="text on stdout"):
            bridge.read_frame(timeout=10)
        assert bytes(bridge.record.received).startswith(b"hello")


def test_close_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    bridge = StdioBridge([PY, "-c", script]).start()
    try:
        deadline = time.monotonic() + 10
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline, "the bridge never started its child"
            time.sleep(0.05)
        child = int(pidfile.read_text())
        assert child in bridge.group_members()
    finally:
        bridge.close()
    # The child was in the bridge's group, so it is gone (or a zombie being reaped by init).
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_stderr_is_drained_so_a_chatty_bridge_does_not_block() -> None:
    # 4 MiB of stderr would fill any pipe; the drain thread keeps it flowing.
    script = "import os, sys\nsys.stderr.write('x' * (4 << 20)); sys.stderr.flush()\n" + RAW_ECHO
    with StdioBridge([PY, "-c", script]) as bridge:
        bridge.send_frame(b"{}", timeout=10)
        assert bridge.read_frame(timeout=20) == b"{}"
        # The drain thread may still be reading the last chunks: let the
        # bridge end, then count what it wrote.
        bridge.close_stdin()
        assert bridge.wait_stderr_eof(20)
        assert bridge.stderr_total == 4 << 20
        assert len(bridge.stderr_tail()) <= 16 * 1024


def test_sixteen_mib_frames_both_ways() -> None:
    payload = os.urandom(16 * 1024 * 1024)
    with StdioBridge([PY, "-c", RAW_ECHO]) as bridge:
        bridge.send_frame(payload, timeout=20)
        assert bridge.read_frame(timeout=20) == payload


def test_wait_exit_after_end_of_input() -> None:
    with StdioBridge([PY, "-c", RAW_ECHO]) as bridge:
        bridge.close_stdin()
        exit_ = bridge.wait_exit(10)
        assert exit_ is not None
        assert exit_.returncode == 0
        assert exit_.signal is None
