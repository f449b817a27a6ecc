"""The gRPC reference bridge, driven over real loopback gRPC (PROTOCOL.md §8).

One bridge process serves the module (started with the harness transport);
tests that signal or reconfigure the bridge start their own.  Several tests
use the generated stub directly, as a Snakepit client would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

grpc = pytest.importorskip("grpc", reason="the grpc extra is not installed")
pytest.importorskip("grpc_health", reason="grpcio-health-checking is not installed")

from snakepit_harness.protocol import decode_map  # noqa: E402
from snakepit_harness.protos import snakepit_pb2, snakepit_pb2_grpc  # noqa: E402
from snakepit_harness.transports.grpc import (  # noqa: E402
    GrpcBridge,
    GrpcStatusError,
)

from .adapters.support import ADAPTERS_DIR, adapter_env  # noqa: E402

BRIDGE = [sys.executable, "-m", "snakepit_bridge.grpc_bridge"]
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def bridge() -> Iterator[GrpcBridge]:
    with GrpcBridge(BRIDGE) as running:
        yield running


@pytest.fixture(scope="module")
def stub(bridge: GrpcBridge) -> Iterator[snakepit_pb2_grpc.SnakepitBridgeStub]:
    options = [("grpc.max_send_message_length", 64 * MIB)]
    with grpc.insecure_channel(bridge.address, options=options) as channel:
        yield snakepit_pb2_grpc.SnakepitBridgeStub(channel)  # type: ignore[no-untyped-call]


def _json_map(entries: Any) -> dict[str, Any]:
    """Decode every map value as JSON (fails the test if one is not JSON)."""
    return {key: json.loads(value) for key, value in entries.items()}


# -- start-up (§8.2) ------------------------------------------------------------


def test_prints_exactly_one_ready_line_and_listens_on_loopback_only(bridge: GrpcBridge) -> None:
    assert bridge.stdout_lines() == [f"GRPC_SERVER_READY_ON_PORT={bridge.port}"]
    assert bridge.ready_probe is None, "the first call after the ready line must get through"
    sockets = bridge.listening_sockets()
    assert sockets, "no listening socket found in /proc"
    assert all(s.port == bridge.port and s.loopback_only for s in sockets), sockets


def test_module_and_console_script_both_start() -> None:
    script = Path(sys.executable).parent / "snakepit-grpc-bridge"
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    with GrpcBridge([str(script), "--quiet"]) as running:
        assert running.execute("ping").success


def test_port_already_in_use_fails_with_a_clear_message(bridge: GrpcBridge) -> None:
    proc = subprocess.run(
        [*BRIDGE, "--port", str(bridge.port)],
        check=False,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert f"cannot listen on 127.0.0.1:{bridge.port}" in proc.stderr


def test_bad_adapter_exits_2_without_a_ready_line() -> None:
    proc = subprocess.run(
        [*BRIDGE, "--adapter", "no_such_module_xyz:Nope"],
        check=False,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 2
    assert "GRPC_SERVER_READY" not in proc.stdout
    assert "no_such_module_xyz" in proc.stderr


ADAPTER_FORMS = {
    "dotted, as Snakepit's documents write it": "my_module.MyCustomHandler",
    "module:Class": "my_module:MyCustomHandler",
    "file.py:Class": f"{ADAPTERS_DIR / 'my_module.py'}:MyCustomHandler",
}


@pytest.mark.parametrize("form", list(ADAPTER_FORMS))
def test_adapter_is_served_in_every_spec_form(form: str) -> None:
    with GrpcBridge([*BRIDGE, "--adapter", ADAPTER_FORMS[form]], env=adapter_env()) as running:
        reply = running.execute("my_command", {"text": "hi"})
        assert reply.success, reply.error
        assert decode_map(reply.result) == {"result": "processed", "input": {"text": "hi"}}
        # §8.5: ping_stream is added to an adapter that lacks it.
        info = running.get_info()
        assert {"my_command", "ping", "ping_stream"} <= set(info.supported_commands)


def test_adapter_in_neither_form_exits_2_naming_the_forms() -> None:
    proc = subprocess.run(
        [*BRIDGE, "--adapter", "my_module"],
        check=False,
        capture_output=True,
        text=True,
        timeout=20,
        env=adapter_env(),
    )
    assert proc.returncode == 2
    assert "GRPC_SERVER_READY" not in proc.stdout
    assert "MODULE.CLASS or MODULE:CLASS" in proc.stderr


# -- Execute (§8.3, §8.4, §6) ------------------------------------------------------


def test_execute_ping_echoes_request_id_with_ns_timestamp(stub) -> None:  # type: ignore[no-untyped-def]
    before = time.time_ns()
    reply = stub.Execute(
        snakepit_pb2.ExecuteRequest(
            command="ping", args={"worker_id": b'"w-7"'}, request_id="req-42"
        ),
        timeout=10,
    )
    after = time.time_ns()
    assert reply.success and reply.error == ""
    assert reply.request_id == "req-42"
    assert before <= reply.timestamp <= after
    result = _json_map(reply.result)
    assert result["status"] == "ok"
    assert result["worker_id"] == "w-7"
    assert reply.result["status"] == b'"ok"', "strings are sent quoted (JSON)"


ECHO_VALUES = {
    "int": 5,
    "float": 2.5,
    "string": "héllo",
    "null": None,
    "bool": True,
    "list": [1, "two", [3]],
    "object": {"a": {"b": [None, False]}},
    "big": 2**62,
}


def test_echo_decodes_every_arg_as_json_and_returns_it(bridge: GrpcBridge) -> None:
    reply = bridge.execute("echo", ECHO_VALUES, request_id="e1")
    assert reply.success, reply.error
    result = _json_map(reply.result)
    assert result == {"status": "ok", "echoed": ECHO_VALUES}


def test_raw_non_json_bytes_reach_the_command(bridge: GrpcBridge) -> None:
    # b"hello" is not JSON: the command gets bytes, echo renders text bytes as text.
    reply = bridge.execute("echo", {"text": b"hello", "n": 1})
    assert reply.success, reply.error
    assert _json_map(reply.result)["echoed"] == {"text": "hello", "n": 1}
    # Binary bytes cannot sit inside a JSON result: a serialization_error, and the
    # bridge keeps serving.
    reply = bridge.execute("echo", {"blob": b"\x89PNG\x00\xff"}, request_id="bin")
    assert not reply.success and reply.request_id == "bin"
    assert _json_map(reply.result)["error_type"] == "serialization_error"
    assert bridge.execute("ping").success


@pytest.mark.parametrize(
    ("operation", "a", "b", "expected"),
    [("add", 2, 3, 5), ("subtract", 2, 3, -1), ("multiply", 4, 2.5, 10.0), ("divide", 7, 2, 3.5)],
)
def test_compute(bridge: GrpcBridge, operation: str, a: float, b: float, expected: float) -> None:
    reply = bridge.execute("compute", {"operation": operation, "a": a, "b": b})
    assert reply.success, reply.error
    result = decode_map(reply.result)
    assert result["result"] == expected
    assert result["inputs"] == {"a": a, "b": b}


@pytest.mark.parametrize(
    ("command", "args", "error_type"),
    [
        ("no_such_command", {}, "unknown_command"),
        ("compute", {"operation": "divide", "a": 1, "b": 0}, "bad_request"),
        ("compute", {"operation": "modulo", "a": 1, "b": 2}, "bad_request"),
        ("ping_stream", {"count": 2}, "bad_request"),  # streaming command via Execute
    ],
)
def test_failures_are_success_false_with_error(
    bridge: GrpcBridge, command: str, args: dict[str, Any], error_type: str
) -> None:
    reply = bridge.execute(command, args, request_id="f1")
    assert not reply.success
    assert reply.error
    assert reply.request_id == "f1"
    assert decode_map(reply.result)["error_type"] == error_type
    assert bridge.execute("ping").success, "the bridge keeps serving after a failure"


def test_info_lists_every_command(bridge: GrpcBridge) -> None:
    result = decode_map(bridge.execute("info").result)
    commands = set(result["bridge_info"]["supported_commands"])
    assert {"ping", "echo", "compute", "info", "ping_stream"} <= commands


def test_a_16_mib_request_and_response_succeed(bridge: GrpcBridge) -> None:
    payload = "x" * (16 * MIB)
    reply = bridge.execute("echo", {"payload": payload}, timeout=60)
    assert reply.success, reply.error
    assert decode_map(reply.result)["echoed"]["payload"] == payload


def test_max_message_size_option_is_enforced() -> None:
    with GrpcBridge([*BRIDGE, "--max-message-size", str(MIB)]) as small:
        assert small.execute("echo", {"x": "y" * 1000}).success
        with pytest.raises(GrpcStatusError) as caught:
            small.execute("echo", {"x": "y" * (2 * MIB)})
        assert caught.value.code == "RESOURCE_EXHAUSTED"
        assert small.execute("ping").success


# -- streaming (§8.5) ---------------------------------------------------------------


def test_ping_stream_chunks_then_exactly_one_final(bridge: GrpcBridge) -> None:
    messages = bridge.execute_stream("ping_stream", {"count": 4}, request_id="s1").collect()
    assert [m.chunk_index for m in messages] == [0, 1, 2, 3, 4]
    assert [m.is_final for m in messages] == [False] * 4 + [True]
    data = [decode_map(m.chunk) for m in messages[:-1]]
    assert [d["ping_number"] for d in data] == [1, 2, 3, 4]
    assert all(isinstance(d["message"], str) for d in data)
    assert all(m.request_id == "s1" and m.error == "" for m in messages)
    assert all(m.timestamp > 10**18 for m in messages)


def test_ping_stream_of_zero_is_just_the_final_message(bridge: GrpcBridge) -> None:
    messages = bridge.execute_stream("ping_stream", {"count": 0}).collect()
    assert [(m.chunk_index, m.is_final) for m in messages] == [(0, True)]


def test_non_streaming_command_answers_one_final_message(bridge: GrpcBridge) -> None:
    messages = bridge.execute_stream("compute", {"operation": "add", "a": 1, "b": 2}).collect()
    assert len(messages) == 1
    assert messages[0].is_final and messages[0].chunk_index == 0 and not messages[0].error
    assert decode_map(messages[0].chunk)["result"] == 3


@pytest.mark.parametrize(
    ("command", "args", "chunks_before_error"),
    [
        ("no_such_command", {}, 0),
        ("fail_stream", {"after": 3}, 3),
        ("ping_stream", {"count": -1}, 0),
    ],
)
def test_stream_errors_end_with_a_final_error_message(
    bridge: GrpcBridge, command: str, args: dict[str, Any], chunks_before_error: int
) -> None:
    messages = bridge.execute_stream(command, args).collect()
    assert len(messages) == chunks_before_error + 1
    assert [m.chunk_index for m in messages] == list(range(chunks_before_error + 1))
    assert all(not m.is_final and not m.error for m in messages[:-1])
    assert messages[-1].is_final and messages[-1].error


def test_cancelled_stream_stops_its_producer(bridge: GrpcBridge) -> None:
    before = decode_map(bridge.execute("stream_stats").result)
    stream = bridge.execute_stream("ping_stream", {"count": 100_000, "interval": 0.01}, timeout=30)
    for received, _message in enumerate(stream, start=1):
        if received == 3:
            stream.cancel()
            break
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stats = decode_map(bridge.execute("stream_stats").result)
        if stats["streams_closed_early"] > before["streams_closed_early"]:
            break
        time.sleep(0.05)
    produced = stats["chunks_produced"] - before["chunks_produced"]
    assert stats["streams_closed_early"] == before["streams_closed_early"] + 1
    time.sleep(0.3)
    later = decode_map(bridge.execute("stream_stats").result)
    assert later["chunks_produced"] - before["chunks_produced"] == produced, "still producing"
    assert produced < 100, f"the producer ran on after the cancel ({produced} chunks)"


# -- sessions (§8.6) ------------------------------------------------------------------


def test_sessions_pass_session_id_to_commands_and_are_counted(bridge: GrpcBridge) -> None:
    before = bridge.get_info().stats.active_sessions
    reply = bridge.execute_in_session("sess-a", "echo", {"x": 1}, request_id="in-a")
    assert reply.success and reply.request_id == "in-a"
    assert decode_map(reply.result)["echoed"] == {"x": 1, "session_id": "sess-a"}
    # The request field wins over an args entry of the same name.
    reply = bridge.execute_in_session("sess-b", "echo", {"session_id": "spoofed"})
    assert decode_map(reply.result)["echoed"]["session_id"] == "sess-b"
    assert bridge.get_info().stats.active_sessions == before + 2


def test_session_stream(bridge: GrpcBridge) -> None:
    messages = bridge.execute_in_session_stream(
        "sess-s", "ping_stream", {"count": 2}, request_id="ss"
    ).collect()
    assert [(m.chunk_index, m.is_final) for m in messages] == [(0, False), (1, False), (2, True)]
    assert all(m.request_id == "ss" for m in messages)
    one = bridge.execute_in_session_stream("sess-s", "echo", {"k": "v"}).collect()
    assert len(one) == 1 and one[0].is_final
    assert decode_map(one[0].chunk)["echoed"] == {"k": "v", "session_id": "sess-s"}


# -- Health and GetInfo (§8.7, §8.8) -------------------------------------------------


def test_health(stub) -> None:  # type: ignore[no-untyped-def]
    first = stub.Health(snakepit_pb2.HealthRequest(worker_id="worker-9"), timeout=10)
    stub.Execute(snakepit_pb2.ExecuteRequest(command="ping"), timeout=10)
    stub.Execute(snakepit_pb2.ExecuteRequest(command="nope"), timeout=10)
    second = stub.Health(snakepit_pb2.HealthRequest(worker_id="worker-9"), timeout=10)
    assert first.healthy and second.healthy
    assert second.worker_id == "worker-9"
    assert second.uptime_ms >= first.uptime_ms
    assert second.total_requests == first.total_requests + 2
    assert second.total_errors == first.total_errors + 1
    assert second.version


def test_standard_grpc_health_service(bridge: GrpcBridge) -> None:
    assert bridge.health_v1() == "SERVING"
    assert bridge.health_v1("snakepit.SnakepitBridge") == "SERVING"


def test_get_info_with_and_without_stats(bridge: GrpcBridge) -> None:
    info = bridge.get_info(include_capabilities=True, include_stats=True)
    assert info.worker_type and info.version
    assert {"ping", "echo", "compute", "info", "ping_stream"} <= set(info.supported_commands)
    assert info.capabilities["streaming"] == "true"
    assert info.HasField("stats")
    assert info.stats.requests_handled > 0 and info.stats.uptime_ms > 0
    assert info.stats.memory_usage_bytes > 1_000_000
    bare = bridge.get_info(include_capabilities=False, include_stats=False)
    assert not bare.HasField("stats") and not bare.capabilities
    assert list(bare.supported_commands) == list(info.supported_commands)


# -- limits (§8.9) --------------------------------------------------------------------


def test_timeout_ms_gives_deadline_exceeded(bridge: GrpcBridge) -> None:
    began = time.monotonic()
    with pytest.raises(GrpcStatusError) as caught:
        bridge.execute("sleep", {"seconds": 20}, timeout_ms=200, timeout=15)
    assert caught.value.code == "DEADLINE_EXCEEDED"
    assert time.monotonic() - began < 5
    stream = bridge.execute_stream(
        "ping_stream", {"count": 1000, "interval": 0.05}, timeout_ms=300, timeout=15
    )
    with pytest.raises(GrpcStatusError) as caught:
        stream.collect()
    assert caught.value.code == "DEADLINE_EXCEEDED"
    # A one-shot command over ExecuteStream is bounded the same way.
    with pytest.raises(GrpcStatusError) as caught:
        bridge.execute_stream("sleep", {"seconds": 20}, timeout_ms=200, timeout=15).collect()
    assert caught.value.code == "DEADLINE_EXCEEDED"
    # A call that fits its timeout_ms succeeds.
    assert bridge.execute("sleep", {"seconds": 0.01}, timeout_ms=5000).success


def _fd_and_thread_counts(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


def test_1000_sequential_executes_leak_no_fds_or_threads(bridge: GrpcBridge) -> None:
    for _ in range(5):  # warm up: lazily created buffers
        bridge.execute("ping")
    fds_before, threads_before = _fd_and_thread_counts(bridge.pid)
    for number in range(1000):
        reply = bridge.execute("echo", {"n": number}, request_id=str(number))
        assert reply.request_id == str(number)
    fds_after, threads_after = _fd_and_thread_counts(bridge.pid)
    assert fds_after <= fds_before, (fds_before, fds_after)
    assert threads_after <= threads_before, (threads_before, threads_after)


# -- lifecycle (§8.10) ---------------------------------------------------------------


def test_sigterm_exits_0_promptly_even_with_streams_open() -> None:
    with GrpcBridge(BRIDGE) as running:
        stream = running.execute_stream(
            "ping_stream", {"count": 100_000, "interval": 0.05}, timeout=30
        )
        consumer = threading.Thread(target=lambda: list(_swallow(stream)), daemon=True)
        consumer.start()
        running.execute("sleep", {"seconds": 0.1})
        began = time.monotonic()
        running.send_signal(signal.SIGTERM)
        exit_ = running.wait_exit(5.0)
        assert exit_ is not None, "still running 5 s after SIGTERM"
        assert exit_.returncode == 0
        assert time.monotonic() - began < 5.0
        assert running.group_members() == []


def _swallow(stream) -> Iterator[object]:  # type: ignore[no-untyped-def]
    try:
        yield from stream
    except Exception:
        return


BUSY_ADAPTER = """
import time
from snakepit_bridge import GenericCommandHandler

class BusyAdapter(GenericCommandHandler):
    def _register_commands(self):
        super()._register_commands()
        self.register_command("spin", self.spin)

    def spin(self, args):
        end = time.monotonic() + args["seconds"]
        while time.monotonic() < end:  # ignores every cancellation on purpose
            pass
        return {"status": "ok"}
"""


def test_sigterm_with_a_non_cooperative_command_running(tmp_path: Path) -> None:
    adapter = tmp_path / "busy_adapter.py"
    adapter.write_text(BUSY_ADAPTER)
    with GrpcBridge([*BRIDGE, "--adapter", f"{adapter}:BusyAdapter"]) as b:
        assert "spin" in b.get_info().supported_commands
        with pytest.raises(GrpcStatusError):
            b.execute("spin", {"seconds": 30}, timeout_ms=100)
        b.send_signal(signal.SIGTERM)
        exit_ = b.wait_exit(5.0)
        assert exit_ is not None and exit_.returncode == 0
