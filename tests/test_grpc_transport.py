"""GrpcBridge, the harness's gRPC transport: start-up, errors, clean-up, values."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("grpc", reason="the grpc extra is not installed")

from snakepit_harness.errors import (
    BridgeCrashed,
    BridgeTimeout,
    LocalProtocolError,
    RemoteProtocolError,
)
from snakepit_harness.protocol import decode_value, encode_args
from snakepit_harness.transports.grpc import GrpcBridge, with_port_zero
from snakepit_harness.transports.process import decode_proc_address as _decode_proc_address

BRIDGE = [sys.executable, "-m", "snakepit_bridge.grpc_bridge"]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["b"], ["b", "--port", "0"]),
        (["b", "--port", "5000"], ["b", "--port", "5000"]),
        (["b", "--port=5000"], ["b", "--port=5000"]),
        (["b", "--quiet"], ["b", "--quiet", "--port", "0"]),
    ],
)
def test_port_zero_is_appended_unless_a_port_is_given(argv: list[str], expected: list[str]) -> None:
    assert with_port_zero(argv) == expected


def test_needs_exactly_one_of_command_or_target() -> None:
    with pytest.raises(ValueError):
        GrpcBridge()
    with pytest.raises(ValueError):
        GrpcBridge(["x"], target="127.0.0.1:1")


def test_no_ready_line_is_a_bounded_timeout_with_the_stderr_tail() -> None:
    script = (
        "import sys, time; print('starting', flush=True); "
        "sys.stderr.write('loading weights\\n'); sys.stderr.flush(); time.sleep(60)"
    )
    bridge = GrpcBridge([sys.executable, "-c", script], startup_timeout=1.0)
    began = time.monotonic()
    with pytest.raises(BridgeTimeout) as caught:
        bridge.start()
    assert time.monotonic() - began < 5
    assert "GRPC_SERVER_READY_ON_PORT" in str(caught.value)
    assert "starting" in str(caught.value)  # what stdout did say
    assert b"loading weights" in caught.value.stderr_tail
    pid = bridge.pid
    bridge.close()
    assert not _alive(pid)


def test_exit_before_the_ready_line_is_a_crash_with_status_and_stderr() -> None:
    script = "import sys; sys.stderr.write('no model found\\n'); sys.exit(3)"
    with pytest.raises(BridgeCrashed) as caught:
        GrpcBridge([sys.executable, "-c", script]).start()
    assert caught.value.returncode == 3
    assert "exit status 3" in str(caught.value)
    assert b"no model found" in caught.value.stderr_tail


def test_a_ready_line_without_a_port_is_refused() -> None:
    script = "import time; print('GRPC_SERVER_READY_ON_PORT=soon', flush=True); time.sleep(60)"
    bridge = GrpcBridge([sys.executable, "-c", script], startup_timeout=5.0)
    with pytest.raises(RemoteProtocolError, match="does not name a TCP port"):
        bridge.start()
    bridge.close()


def test_close_kills_the_whole_process_group() -> None:
    # The bridge leaves a child behind; close() must take it down too.
    shell = 'sleep 300 & echo $! > "$0"; exec "$@"'
    pid_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"grpc-child-{os.getpid()}"
    with GrpcBridge(["sh", "-c", shell, str(pid_file), *BRIDGE]) as bridge:
        assert bridge.execute("ping").success
        child = int(pid_file.read_text())
        assert _alive(child)
        assert child in bridge.group_members()
    pid_file.unlink()
    assert not _alive(child)


def test_a_bridge_killed_mid_session_is_a_crash() -> None:
    with GrpcBridge(BRIDGE) as bridge:
        assert bridge.execute("ping").success
        os.kill(bridge.pid, signal.SIGKILL)
        bridge.wait_exit(5)
        with pytest.raises(BridgeCrashed, match="killed by SIGKILL"):
            bridge.execute("ping", timeout=5)


def test_target_mode_connects_without_owning_a_process() -> None:
    with GrpcBridge(BRIDGE) as server:
        with GrpcBridge(target=server.address) as client:
            assert not client.has_process
            assert client.execute("ping").success
            assert client.health("w").worker_id == "w"
        assert server.poll() is None, "closing a --target client must not stop the server"


def test_values_are_json_per_entry_and_bytes_go_raw() -> None:
    encoded = encode_args({"s": "hi", "n": 3, "raw": b"\x00\xff", "o": {"a": [1]}})
    assert encoded == {"s": b'"hi"', "n": b"3", "raw": b"\x00\xff", "o": b'{"a": [1]}'}
    assert decode_value(b'"hi"') == "hi"
    assert decode_value(b"\x00\xff") == b"\x00\xff"
    assert decode_value(b"NaN") == b"NaN"  # not strict JSON: left as bytes
    with pytest.raises(LocalProtocolError):
        encode_args({"x": {1, 2}})
    with pytest.raises(LocalProtocolError):
        encode_args({"x": float("nan")})


@pytest.mark.parametrize(
    ("hex_address", "text"),
    [
        ("0100007F", "127.0.0.1"),
        ("00000000", "0.0.0.0"),
        ("00000000000000000000000001000000", "::1"),
        ("00000000000000000000000000000000", "::"),
        ("0000000000000000FFFF00000100007F", "::ffff:127.0.0.1"),
    ],
)
def test_proc_net_addresses_decode(hex_address: str, text: str) -> None:
    assert _decode_proc_address(hex_address) == text
