"""The host emulator and the launcher (§9.2-§9.4), against real processes and servers.

Workers here are tiny Python scripts written by the tests (so each shows one
launcher behaviour: a crash before ready, no port ever, a setsid child, a
stdout flood) or the reference worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("grpc", reason="the bridge-service transport needs the grpc extra")

from google.protobuf import any_pb2, wrappers_pb2

from snakepit_harness.errors import BridgeCrashed, BridgeTimeout
from snakepit_harness.protocol.bridge_service import BridgeEnv, HeartbeatConfig, decode_any_json
from snakepit_harness.protos import snakepit_bridge_pb2 as pb
from snakepit_harness.transports.bridge_host import (
    HOST_READY_PREFIX,
    HostEmulator,
    decode_parameters,
)
from snakepit_harness.transports.bridge_service import (
    BridgeServiceClient,
    BridgeServiceWorker,
    build_tool_request,
)
from snakepit_harness.transports.grpc import GrpcStatusError

REFERENCE = [sys.executable, "-m", "snakepit_bridge.bridge_service"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "worker.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


@pytest.fixture
def host() -> Iterator[HostEmulator]:
    with HostEmulator() as emulator:
        yield emulator


def test_host_keeps_sessions_and_records_calls(host: HostEmulator) -> None:
    client = BridgeServiceClient(host.address)
    try:
        assert client.ping("hi", timeout=5).server_time.seconds > 0
        assert client.initialize_session("s1", {"k": "v"}, timeout=5).success
        assert client.heartbeat("s1", timeout=5).session_valid
        assert not client.heartbeat("other", timeout=5).session_valid
        session = client.get_session("s1", timeout=5)
        assert session.session_id == "s1" and dict(session.metadata) == {"k": "v"}
        with pytest.raises(GrpcStatusError) as missing:
            client.get_session("other", timeout=5)
        assert missing.value.code == "NOT_FOUND"
        assert client.cleanup_session("s1", timeout=5).resources_cleaned == 1
        assert not client.heartbeat("s1", timeout=5).session_valid
        with pytest.raises(GrpcStatusError) as unserved:
            client.execute_tool("x", {}, session_id="s1", timeout=5)
        assert unserved.value.code == "UNIMPLEMENTED"
    finally:
        client.close()
    methods = [c.method for c in host.calls()]
    assert methods[:3] == ["Ping", "InitializeSession", "Heartbeat"]
    assert all(c.deadline is not None and 0 < c.deadline <= 5.5 for c in host.calls())
    assert host.calls("GetSession")[0].session_id == "s1"


def test_host_delay_holds_every_answer(host: HostEmulator) -> None:
    client = BridgeServiceClient(host.address)
    try:
        client.ping(timeout=5)
        host.delay = 0.3
        began = time.monotonic()
        client.ping(timeout=5)
        assert time.monotonic() - began >= 0.3
    finally:
        client.close()


def test_host_tools_run_and_accept_packed_strings(host: HostEmulator) -> None:
    client = BridgeServiceClient(host.address)
    try:
        listed = client.call("GetExposedElixirTools", pb.GetExposedElixirToolsRequest(), 5)
        assert {t.name for t in listed.tools} == {"host_echo", "host_add"}
        request = pb.ExecuteElixirToolRequest(tool_name="host_add")
        for key, value in (("a", b"2"), ("b", b"40")):
            request.parameters[key].type_url = "type.googleapis.com/google.protobuf.StringValue"
            request.parameters[key].value = value
        reply = client.call("ExecuteElixirTool", request, 5)
        assert reply.success and decode_any_json(reply.result.value) == 42
        assert reply.result.type_url == "type.googleapis.com/snakepit.integer"
        missing = client.call("ExecuteElixirTool", pb.ExecuteElixirToolRequest(tool_name="x"), 5)
        assert not missing.success and json.loads(missing.error_message)["type"] == "LookupError"
    finally:
        client.close()
    packed = any_pb2.Any()
    packed.Pack(wrappers_pb2.StringValue(value="hello"))
    decoded, off_spec = decode_parameters({"s": packed})
    assert decoded == {"s": "hello"} and off_spec == ["s"]


def test_standalone_host_prints_its_port_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakepit_harness.transports.bridge_host", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith(HOST_READY_PREFIX)
        client = BridgeServiceClient(f"127.0.0.1:{int(line[len(HOST_READY_PREFIX) :])}")
        assert client.ping(timeout=5).message
        client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_build_tool_request_is_what_snakepit_sends() -> None:
    request = build_tool_request(
        "t", {"n": 3, "s": "x", "blob": b"\x00\x01"}, session_id="s", stream=True
    )
    assert request.parameters["n"].type_url == "type.googleapis.com/google.protobuf.StringValue"
    assert request.parameters["n"].value == b"3"
    assert request.parameters["s"].value == b'"x"'
    assert dict(request.binary_parameters) == {"blob": b"\x00\x01"}
    assert request.stream and request.session_id == "s"


def test_launcher_starts_the_reference_worker_as_snakepit_does(host: HostEmulator) -> None:
    worker = BridgeServiceWorker(
        REFERENCE, host_address=host.address, heartbeat=HeartbeatConfig(interval_ms=300)
    )
    with worker:
        assert worker.argv[-6:-2] == ["--port", "0", "--elixir-address", host.address]
        assert worker.argv[-2] == "--snakepit-run-id"
        assert worker.ready_probe is None and worker.port
        env = worker.environment()
        assert env[BridgeEnv.PROCESS_GROUP] == "1"
        assert json.loads(env[BridgeEnv.HEARTBEAT_CONFIG])["interval_ms"] == 300
        assert Path(env[BridgeEnv.READY_FILE]).read_text() == str(worker.port)
        assert worker.client is not None
        reply = worker.client.execute_tool("add", {"a": 1, "b": 2}, session_id="s", timeout=5)
        assert reply.success and decode_any_json(reply.result.value) == 3
        assert host.registered_tools("s")["add"].required
        pid = worker.pid
        assert os.getpgid(pid) == pid
    assert not _alive(pid)
    assert worker.ready_file is not None and not worker.ready_file.parent.exists()


def test_worker_that_exits_before_ready_is_a_crash_with_its_output(
    tmp_path: Path, host: HostEmulator
) -> None:
    argv = _script(
        tmp_path,
        """
        import sys
        print("importing the model...", flush=True)
        print("ModuleNotFoundError: no module named torch", file=sys.stderr)
        sys.exit(3)
        """,
    )
    worker = BridgeServiceWorker(argv, host_address=host.address)
    with pytest.raises(BridgeCrashed) as crashed:
        worker.start()
    worker.close()
    assert crashed.value.returncode == 3
    assert b"ModuleNotFoundError" in crashed.value.stderr_tail
    assert "importing the model" in str(crashed.value)


def test_worker_that_never_names_a_port_times_out_and_is_killed(
    tmp_path: Path, host: HostEmulator
) -> None:
    argv = _script(
        tmp_path,
        """
        import os, time
        open(os.environ["SNAKEPIT_READY_FILE"], "w").write("starting")
        time.sleep(600)
        """,
    )
    worker = BridgeServiceWorker(argv, host_address=host.address, ready_timeout=1.0)
    began = time.monotonic()
    with pytest.raises(BridgeTimeout):
        worker.start()
    assert time.monotonic() - began < 5
    assert worker.poll() is not None
    worker.close()


def test_close_kills_children_that_left_the_group(tmp_path: Path, host: HostEmulator) -> None:
    argv = _script(
        tmp_path,
        """
        import os, socket, subprocess, sys, time
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
        )
        open(os.environ["SNAKEPIT_READY_FILE"] + ".child", "w").write(str(child.pid))
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        # Flood stdout: the launcher must keep draining it.
        sys.stdout.write("span " * 200000)
        sys.stdout.flush()
        open(os.environ["SNAKEPIT_READY_FILE"], "w").write(str(server.getsockname()[1]))
        time.sleep(600)
        """,
    )
    worker = BridgeServiceWorker(argv, host_address=host.address)
    worker.spawn()
    port = worker.wait_ready()
    assert port > 0
    assert worker.ready_file is not None
    child = int(Path(f"{worker.ready_file}.child").read_text())
    assert child in worker.leftovers()
    assert os.getpgid(child) != worker.pid
    worker.close()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_target_mode_connects_without_a_process(host: HostEmulator) -> None:
    with BridgeServiceWorker(REFERENCE, host_address=host.address) as launched:
        connected = BridgeServiceWorker(target=launched.address).start()
        try:
            assert not connected.has_process
            assert connected.client is not None
            assert connected.client.ping(timeout=5).server_time.seconds > 0
        finally:
            connected.close()


def test_launcher_refuses_contradictory_arguments() -> None:
    with pytest.raises(ValueError):
        BridgeServiceWorker(REFERENCE, target="127.0.0.1:1", host_address="x:1")
    with pytest.raises(ValueError):
        BridgeServiceWorker(REFERENCE)
