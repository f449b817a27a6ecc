"""The reference worker ``snakepit-bridge-worker``: its adapter API and its command line.

The adapter API is tested in-process (specs from signatures, streaming,
context injection, command handlers as tools); the command line and the
defaults where §9 grades upstream (no unpickling, a bounded wait for the
host, exit on SIGTERM and on host loss) against the real process, with the
harness's host emulator as its host.
"""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("grpc", reason="the bridge-service worker needs the grpc extra")

from snakepit_bridge import GenericCommandHandler
from snakepit_bridge.bridge_service import (
    BaseAdapter,
    CommandHandlerAdapter,
    SessionContext,
    ToolError,
    UnknownToolError,
    load_adapter,
    tool,
)
from snakepit_bridge.bridge_service.adapter import _CURRENT
from snakepit_bridge.bridge_service.cli import write_ready_file
from snakepit_bridge.bridge_service.demo import DemoAdapter

from snakepit_harness.protocol.bridge_service import HeartbeatConfig, ParamInfo, decode_any_json
from snakepit_harness.transports.bridge_host import HostEmulator
from snakepit_harness.transports.bridge_service import BridgeServiceWorker

REFERENCE = [sys.executable, "-m", "snakepit_bridge.bridge_service"]


class Sample(BaseAdapter):
    @tool(description="Add")
    def add(self, a: float, b: float = 2.0) -> float:
        return a + b

    @tool
    def count(self, n: int = 2) -> Any:
        yield from range(n)

    @tool(supports_streaming=False, parameters=[ParamInfo("x", "any", True)])
    def explicit(self, **anything: Any) -> Any:
        return anything

    @tool
    def who(self, context: SessionContext) -> str:
        assert self.context is context
        return context.session_id

    def not_a_tool(self) -> None:
        raise AssertionError("never called")


def test_specs_come_from_signatures() -> None:
    tools = {t.name: t for t in Sample().tools()}
    assert sorted(tools) == ["add", "count", "explicit", "who"]
    assert tools["add"].params == (
        ParamInfo("a", "float", True, None),
        ParamInfo("b", "float", False, 2.0),
    )
    assert tools["add"].description == "Add" and not tools["add"].streaming
    assert tools["count"].streaming and tools["count"].params[0].type == "int"
    assert tools["explicit"].params == (ParamInfo("x", "any", True),)
    assert tools["who"].params == ()  # the context is not a parameter


def test_dispatch_binds_arguments_and_context() -> None:
    adapter = Sample()
    context = SessionContext("s9")
    assert adapter.execute_tool("add", {"a": 1}, context) == 3.0
    assert list(adapter.execute_tool("count", {"n": 3}, context)) == [0, 1, 2]
    assert adapter.execute_tool("who", {}, context) == "s9"
    with pytest.raises(UnknownToolError, match="has: add, count, explicit, who"):
        adapter.execute_tool("nope", {}, context)
    with pytest.raises(ToolError, match="bad arguments for add"):
        adapter.execute_tool("add", {"a": 1, "c": 3}, context)
    with pytest.raises(RuntimeError):
        _ = adapter.context
    assert _CURRENT.get(None) is None  # reset after every call


def test_command_handlers_serve_as_tools() -> None:
    adapter = CommandHandlerAdapter(GenericCommandHandler())
    names = [t.name for t in adapter.tools()]
    assert names == ["compute", "echo", "info", "ping"]
    reply = adapter.execute_tool(
        "compute", {"operation": "add", "a": 1, "b": 2}, SessionContext("s")
    )
    assert reply["result"] == 3


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("snakepit_bridge.bridge_service.demo.DemoAdapter", DemoAdapter),
        ("snakepit_bridge.bridge_service.demo:DemoAdapter", DemoAdapter),
        ("snakepit_bridge.generic:GenericCommandHandler", CommandHandlerAdapter),
    ],
)
def test_adapter_specs_both_spellings(spec: str, kind: type) -> None:
    assert isinstance(load_adapter(spec), kind)


def test_ready_file_is_written_whole(tmp_path: Path) -> None:
    target = tmp_path / "ready"
    write_ready_file(str(target), 50123)
    assert target.read_text() == "50123"
    assert not Path(f"{target}.tmp").exists()


def _worker(host: HostEmulator, *args: str, **kwargs: Any) -> BridgeServiceWorker:
    return BridgeServiceWorker(REFERENCE, host_address=host.address, extra_args=args, **kwargs)


def test_bad_adapter_exits_2_with_a_reason() -> None:
    done = subprocess.run(
        [*REFERENCE, "--adapter", "no_such_module.Thing"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot import adapter module 'no_such_module'" in done.stderr
    assert done.stdout == ""


def test_no_host_gives_up_after_host_wait(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    began = time.monotonic()
    done = subprocess.run(
        [*REFERENCE, "--elixir-address", "127.0.0.1:9", "--host-wait", "1"],
        capture_output=True,
        text=True,
        env={"SNAKEPIT_READY_FILE": str(ready), "PATH": "/usr/bin:/bin"},
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert time.monotonic() - began < 15
    assert "no answer from the host at 127.0.0.1:9" in done.stderr
    assert not ready.exists()


def test_pickles_are_refused_unless_allowed(tmp_path: Path) -> None:
    canary = tmp_path / "ran"
    payload = b"cbuiltins\nopen\n(V" + str(canary).encode() + b"\nVw\ntR."
    pickle.loads(payload).close()  # the canary works: loading it creates the file
    assert canary.exists()
    canary.unlink()
    metadata = {"binary_format:value": "pickle"}
    with HostEmulator() as host:
        with _worker(host) as worker:
            assert worker.client is not None
            reply = worker.client.execute_tool(
                "echo", {}, binary={"value": payload}, metadata=metadata, timeout=5
            )
            assert not reply.success and "does not unpickle" in reply.error_message
            assert not canary.exists()
            raw = worker.client.execute_tool("echo", {"value": b"\x00raw"}, timeout=5)
            assert raw.success and raw.binary_result == b"\x00raw"
        with _worker(host, "--allow-pickle") as trusting:
            assert trusting.client is not None
            ok = trusting.client.execute_tool(
                "echo", {}, binary={"value": pickle.dumps([1, 2])}, metadata=metadata, timeout=5
            )
            assert ok.success and decode_any_json(ok.result.value) == [1, 2]


def test_callbacks_once_per_session_with_deadlines() -> None:
    with HostEmulator() as host, _worker(host) as worker:
        assert worker.client is not None
        for _ in range(3):
            worker.client.execute_tool("add", {"a": 1, "b": 1}, session_id="s1", timeout=5)
        reply = worker.client.execute_tool("call_host", {}, session_id="s1", timeout=5)
        assert reply.success and decode_any_json(reply.result.value) == 3
        session_calls = [c for c in host.calls() if c.session_id == "s1"]
        methods = [c.method for c in session_calls if c.method != "Heartbeat"]
        assert methods == ["InitializeSession", "RegisterTools", "ExecuteElixirTool"]
        assert all(c.deadline is not None and c.deadline <= 5.5 for c in session_calls)
        assert host.calls()[0].method == "Ping"


def test_streams_end_with_one_final_chunk_and_errors_with_a_status() -> None:
    from snakepit_harness.transports.grpc import GrpcStatusError

    with HostEmulator() as host, _worker(host) as worker:
        client = worker.client
        assert client is not None
        chunks = list(client.execute_streaming_tool("count", {"n": 2}, timeout=5))
        assert [c.is_final for c in chunks] == [False, False, True]
        assert [json.loads(c.data) for c in chunks[:2]] == [{"index": 0}, {"index": 1}]
        whole = list(client.execute_streaming_tool("add", {"a": 1, "b": 2}, timeout=5))
        assert len(whole) == 1 and whole[0].is_final and whole[0].data == b"3"
        with pytest.raises(GrpcStatusError) as failed:
            list(client.execute_streaming_tool("count_then_fail", {"after": 1}, timeout=5))
        assert failed.value.code == "INTERNAL"
        assert json.loads(failed.value.details)["message"] == "failed after 1 chunk(s), as asked"


def test_sigterm_exits_0_quickly() -> None:
    with HostEmulator() as host, _worker(host) as worker:
        worker.send_signal(signal.SIGTERM)
        ended = worker.wait_exit(6)
        assert ended is not None and ended.returncode == 0


@pytest.mark.parametrize("close_stdin", [True, False], ids=["stdin-closes", "heartbeats-only"])
def test_host_loss_ends_a_dependent_worker(close_stdin: bool) -> None:
    beats = HeartbeatConfig(interval_ms=200, timeout_ms=300, max_missed_heartbeats=2)
    host = HostEmulator().start()
    with _worker(host, heartbeat=beats) as worker:
        assert worker.client is not None
        worker.client.execute_tool("add", {"a": 1, "b": 1}, session_id="s", timeout=5)
        host.stop()
        if close_stdin:
            worker.close_stdin()
        ended = worker.wait_exit(beats.host_loss_limit())
        assert ended is not None and ended.returncode == 0


def test_an_adapter_from_a_file_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "my_tools.py").write_text(
        textwrap.dedent(
            """
            from snakepit_bridge.bridge_service import BaseAdapter, tool

            class Shout(BaseAdapter):
                @tool
                def shout(self, text: str) -> str:
                    return text.upper()
            """
        )
    )
    with HostEmulator() as host:
        worker = BridgeServiceWorker(
            REFERENCE,
            host_address=host.address,
            extra_args=("--adapter", "my_tools.Shout"),
            cwd=tmp_path,
        )
        with worker:
            assert worker.client is not None
            reply = worker.client.execute_tool("shout", {"text": "hi"}, timeout=5)
            assert decode_any_json(reply.result.value) == "HI"
