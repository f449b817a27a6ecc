"""Drive a bridge-service worker (§9): start it as Snakepit does, or connect; call its tools.

:class:`BridgeServiceWorker` launches the user's worker command the way
Snakepit's GRPCWorker does (§9.2): ``--port 0 --elixir-address <host>
--snakepit-run-id <id>`` appended, ``SNAKEPIT_READY_FILE`` and the rest of
Snakepit's environment set, in its own session and process group, stdin a
pipe that stays open (Snakepit's port), stdout and stderr drained all the
time (Snakepit merges and logs them; a worker may print span JSON there).
It waits, bounded, for the ready file to name a port, connects to it on
127.0.0.1, and on ``close()`` kills the whole group and any descendant that
left it.  Given ``target`` instead, it connects to a worker already running.

:class:`BridgeServiceClient` is the small client the cases, the fuzzer and
the load users share: ``ping``, the session calls, ``heartbeat``,
``execute_tool`` (arguments as Any-JSON, ``bytes`` as binary parameters),
``execute_streaming_tool``.  A gRPC status other than OK becomes
:class:`~snakepit_harness.transports.grpc.GrpcStatusError`, our own deadline
:class:`~snakepit_harness.errors.BridgeTimeout`, a dead worker
:class:`~snakepit_harness.errors.BridgeCrashed`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Self

from ..errors import BridgeCrashed, BridgeTimeout, HarnessError
from ..protocol.bridge_service import (
    BRIDGE_LOG_LEVEL,
    BRIDGE_READY_LIMIT,
    BRIDGE_SERVICE,
    BridgeEnv,
    HeartbeatConfig,
    encode_parameter,
    launch_argv,
    parse_ready_file,
    parse_tool_calls,
)
from .grpc_channel import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    BridgeChannel,
    GrpcStream,
)
from .process import (
    ListeningSocket,
    ProcessOwner,
    StderrDrain,
    descendants,
    describe_returncode,
    kill_process_group,
    listening_sockets,
    processes_with_env,
    spawn_in_group,
)
from .stdio import STDERR_TAIL_BYTES

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "BridgeServiceClient",
    "BridgeServiceWorker",
    "ToolStream",
    "build_tool_request",
    "read_tool_calls",
    "snakepit_environment",
]


def read_tool_calls(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The ``--tool-calls`` file at ``path``, parsed; one wording for every command that takes it.

    An unreadable file and one that is not a file of calls both become a
    :class:`~snakepit_harness.errors.HarnessError` naming the option and the
    path, so ``conformance`` and ``load`` refuse a bad file in the same words.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HarnessError(f"--tool-calls {path}: {exc.strerror}") from None
    try:
        return parse_tool_calls(text)
    except HarnessError as exc:
        raise HarnessError(f"--tool-calls {path}: {exc}") from None


# How often the ready file is looked at; Snakepit polls every 50 ms.
READY_POLL: Final = 0.01
# stdout is logs here (spans, prints): keep a tail like stderr's.
STDOUT_TAIL_BYTES: Final = STDERR_TAIL_BYTES


def build_tool_request(
    tool_name: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    session_id: str = "",
    metadata: Mapping[str, str] | None = None,
    binary: Mapping[str, bytes] | None = None,
    stream: bool = False,
) -> Any:
    """An ``ExecuteToolRequest`` as Snakepit's host builds it (§9.7).

    Each argument is an Any with the StringValue type URL and its JSON text;
    a ``bytes`` argument goes into ``binary_parameters`` instead.
    """
    from snakepit_harness.protos import snakepit_bridge_pb2 as pb

    request = pb.ExecuteToolRequest(
        session_id=session_id,
        tool_name=tool_name,
        metadata=dict(metadata or {}),
        stream=stream,
    )
    for key, value in (arguments or {}).items():
        if isinstance(value, bytes | bytearray | memoryview):
            request.binary_parameters[key] = bytes(value)
            continue
        type_url, encoded = encode_parameter(value)
        request.parameters[key].type_url = type_url
        request.parameters[key].value = encoded
    for key, value in (binary or {}).items():
        request.binary_parameters[key] = value
    return request


def snakepit_environment(
    base: Mapping[str, str], ready_file: Path, heartbeat: HeartbeatConfig | None = None
) -> dict[str, str]:
    """``base`` plus what Snakepit sets for a worker it launches (§9.2)."""
    env = dict(base)
    env[BridgeEnv.READY_FILE] = str(ready_file)
    env[BridgeEnv.PROCESS_GROUP] = "1"
    env.setdefault(BridgeEnv.LOG_LEVEL, BRIDGE_LOG_LEVEL)
    env.setdefault(BridgeEnv.PYTHON, sys.executable)
    if heartbeat is not None:
        env[BridgeEnv.HEARTBEAT_CONFIG] = heartbeat.to_json()
    return env


# An open ``ExecuteStreamingTool`` call: iterate for ToolChunks, ``cancel()`` to stop.
ToolStream = GrpcStream


class BridgeServiceClient:
    """Calls into one worker at ``address`` (``HOST:PORT``), each with a deadline.

    A plain gRPC channel: usable from threads, and from gevent once grpc's
    gevent support is switched on (``grpc.experimental.gevent.init_gevent``).
    ``proc`` and ``stderr_tail`` let a failure name a dead worker as such.
    """

    def __init__(
        self,
        address: str,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        proc: subprocess.Popen[bytes] | None = None,
        stderr_tail: Callable[[], bytes] = bytes,
    ) -> None:
        from snakepit_harness.protos import snakepit_bridge_pb2

        self.address = address
        self.pb = snakepit_bridge_pb2
        self.bridge_channel = BridgeChannel(
            address,
            BRIDGE_SERVICE,
            max_message_size=max_message_size,
            process=proc,
            stderr_tail=stderr_tail,
        )
        # Each method's reply type, from the service's own descriptor.
        service = snakepit_bridge_pb2.DESCRIPTOR.services_by_name["BridgeService"]
        self._replies: dict[str, Any] = {
            m.name: getattr(snakepit_bridge_pb2, m.output_type.name) for m in service.methods
        }

    @property
    def channel(self) -> Any:
        return self.bridge_channel.channel

    def close(self) -> None:
        self.bridge_channel.close()

    def call(self, method: str, request: Any, timeout: float = DEFAULT_CALL_TIMEOUT) -> Any:
        """Any unary method of the service by name."""
        return self.bridge_channel.unary(method, request, self._replies[method], timeout)

    def wait_connected(self, timeout: float) -> bool:
        return self.bridge_channel.wait_connected(timeout)

    def ping(self, message: str = "", *, timeout: float = DEFAULT_CALL_TIMEOUT) -> Any:
        return self.call("Ping", self.pb.PingRequest(message=message), timeout)

    def initialize_session(
        self,
        session_id: str,
        metadata: Mapping[str, str] | None = None,
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> Any:
        request = self.pb.InitializeSessionRequest(
            session_id=session_id, metadata=dict(metadata or {})
        )
        return self.call("InitializeSession", request, timeout)

    def get_session(self, session_id: str, *, timeout: float = DEFAULT_CALL_TIMEOUT) -> Any:
        return self.call("GetSession", self.pb.GetSessionRequest(session_id=session_id), timeout)

    def cleanup_session(
        self, session_id: str, *, force: bool = False, timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> Any:
        request = self.pb.CleanupSessionRequest(session_id=session_id, force=force)
        return self.call("CleanupSession", request, timeout)

    def heartbeat(self, session_id: str, *, timeout: float = DEFAULT_CALL_TIMEOUT) -> Any:
        request = self.pb.HeartbeatRequest(session_id=session_id)
        request.client_time.GetCurrentTime()
        return self.call("Heartbeat", request, timeout)

    def execute_tool(
        self,
        tool_name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        **request: Any,
    ) -> Any:
        """``ExecuteTool``; returns the ``ExecuteToolResponse``.

        ``request`` takes :func:`build_tool_request`'s ``session_id``,
        ``metadata`` and ``binary``.
        """
        built = build_tool_request(tool_name, arguments, **request)
        return self.call("ExecuteTool", built, timeout)

    def open_stream(
        self, request: Any, *, timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> GrpcStream[Any]:
        return self.bridge_channel.stream(
            "ExecuteStreamingTool", request, self.pb.ToolChunk, timeout
        )

    def execute_streaming_tool(
        self,
        tool_name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        **request: Any,
    ) -> GrpcStream[Any]:
        """``ExecuteStreamingTool`` (``stream=true``); iterate the result for ``ToolChunk``s."""
        built = build_tool_request(tool_name, arguments, stream=True, **request)
        return self.open_stream(built, timeout=timeout)


class BridgeServiceWorker(ProcessOwner):
    """A worker process the harness launched (``argv``), or one at ``target``.

    ``host_address`` is where the worker is told its host is (the harness's
    :class:`~snakepit_harness.transports.bridge_host.HostEmulator`).
    ``start()`` returns once the ready file named a port and the channel is
    connected; ``ready_probe`` says whether a call made the moment the file
    appeared reached a serving server (None: it did).
    """

    def __init__(
        self,
        argv: Sequence[str] | None = None,
        *,
        target: str | None = None,
        host_address: str = "",
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        heartbeat: HeartbeatConfig | None = None,
        ready_timeout: float = BRIDGE_READY_LIMIT,
        run_id: str | None = None,
        extra_args: Sequence[str] = (),
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        if bool(argv) == bool(target):
            raise ValueError("give either a worker command line or a target HOST:PORT")
        if argv and not host_address:
            raise ValueError("a launched worker needs the address of its host")
        self.run_id = run_id or f"harness{uuid.uuid4().hex[:10]}"
        self.argv = (
            launch_argv([*argv, *extra_args], host_address=host_address, run_id=self.run_id)
            if argv
            else []
        )
        self.target = target
        self.host_address = host_address
        self._base_env = dict(os.environ if env is None else env)
        self._cwd = cwd
        self.heartbeat = heartbeat
        self.ready_timeout = ready_timeout
        self.max_message_size = max_message_size
        self._stdin_fd: int | None = None
        self._stdout: StderrDrain | None = None
        self._workdir: Path | None = None
        self.ready_file: Path | None = None
        # What the ready file held when it first named a port (the worker may
        # change or delete it afterwards; the host reads it once).
        self.ready_text: str | None = None
        self.client: BridgeServiceClient | None = None
        self.address = target or ""
        self.port: int | None = None
        self.started_at = 0.0
        self.ready_elapsed: float | None = None
        self.ready_probe: str | None = None

    # -- life cycle ---------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """The environment the worker gets: the caller's plus what Snakepit sets."""
        assert self.ready_file is not None
        return snakepit_environment(self._base_env, self.ready_file, self.heartbeat)

    def spawn(self) -> Self:
        """Start the process (no waiting): for cases about start-up itself."""
        if self._proc is not None or not self.argv:
            raise RuntimeError("nothing to spawn (already started, or a target)")
        self._workdir = Path(tempfile.mkdtemp(prefix="snakepit-harness-"))
        self.ready_file = self._workdir / f"snakepit_ready_{self.run_id}"
        try:
            spawned = spawn_in_group(self.argv, env=self.environment(), cwd=self._cwd)
        except OSError:
            self._remove_workdir()
            raise
        self._stdin_fd = spawned.stdin_fd
        self.started_at = time.monotonic()
        self._started(spawned.proc, spawned.stderr_fd, STDERR_TAIL_BYTES)
        self._stdout = StderrDrain(spawned.stdout_fd, STDOUT_TAIL_BYTES)
        self._stdout.start()
        return self

    def start(self) -> Self:
        if self.client is not None:
            raise RuntimeError("worker already started")
        if self.argv:
            if self._proc is None:
                self.spawn()
            self.port = self.wait_ready()
            self.address = f"127.0.0.1:{self.port}"
        else:
            self.started_at = time.monotonic()
        self.connect()
        return self

    def __enter__(self) -> Self:
        if self.client is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def read_ready_file(self) -> int | None:
        """The port the ready file names now, or None (its text kept in ``ready_text``)."""
        if self.ready_file is None:
            return None
        try:
            text = self.ready_file.read_text("utf-8", "replace")
        except OSError:
            return None
        port = parse_ready_file(text)
        if port is not None:
            self.ready_text = text
        return port

    def wait_ready(self) -> int:
        """Wait for the ready file to name a port (bounded); the port."""
        assert self._proc is not None
        deadline = self.started_at + self.ready_timeout
        while True:
            port = self.read_ready_file()
            if port is not None:
                self.ready_elapsed = time.monotonic() - self.started_at
                return port
            if self._proc.poll() is not None:
                port = self.read_ready_file()
                if port is not None:
                    self.ready_elapsed = time.monotonic() - self.started_at
                    return port
                raise BridgeCrashed(
                    "the worker ended before it wrote its port into SNAKEPIT_READY_FILE "
                    f"({describe_returncode(self._proc.returncode)}); output: "
                    f"{self.output_tail()[-400:]!r}",
                    self.stderr_tail(),
                    self._proc.returncode,
                )
            if time.monotonic() >= deadline:
                tail = self.stderr_tail()
                output = self.output_tail()[-400:]
                self.kill()
                raise BridgeTimeout(
                    f"no port in SNAKEPIT_READY_FILE within {self.ready_timeout:.1f} s "
                    f"(output so far: {output!r})",
                    tail,
                )
            time.sleep(READY_POLL)

    def connect(self) -> None:
        """Open the client; one call at once (the ready probe), then wait for a connection."""
        self.client = BridgeServiceClient(
            self.address,
            max_message_size=self.max_message_size,
            proc=self._proc,
            stderr_tail=self.stderr_tail,
        )
        try:
            self.client.ping("harness-ready-probe", timeout=2.0)
        except HarnessError as exc:
            code = getattr(exc, "code", None)
            if code in ("UNAVAILABLE", "DEADLINE_EXCEEDED") or isinstance(exc, BridgeTimeout):
                self.ready_probe = str(exc)
            elif isinstance(exc, BridgeCrashed):
                raise
        if self.ready_probe is None:
            return
        elapsed = time.monotonic() - self.started_at
        if not self.client.wait_connected(max(1.0, self.ready_timeout - elapsed)):
            tail = self.stderr_tail()
            self.kill()
            raise BridgeTimeout(
                f"could not connect to the worker at {self.address} "
                f"(first call: {self.ready_probe})",
                tail,
            )

    # -- the process --------------------------------------------------------

    def close_stdin(self) -> None:
        """What Snakepit's port does when the BEAM goes away."""
        fd, self._stdin_fd = self._stdin_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def related(self) -> set[int]:
        """Live processes of this launch: the worker, its group, its descendants, and
        any process that inherited its environment (found however far it strayed)."""
        if self._proc is None or self.ready_file is None:
            return set()
        return (
            set(self.group_members())
            | descendants(self._proc.pid)
            | processes_with_env(BridgeEnv.READY_FILE, str(self.ready_file))
        )

    def leftovers(self) -> set[int]:
        """Processes of this launch still alive other than the worker itself."""
        return self.related() - ({self._proc.pid} if self._proc is not None else set())

    def listening_sockets(self) -> list[ListeningSocket]:
        pids = sorted(self.related())
        return listening_sockets(pids)

    def stdout_tail(self) -> bytes:
        return self._stdout.tail() if self._stdout is not None else b""

    def output_tail(self) -> str:
        """The worker's recent stderr and stdout, as text (for failure reports)."""
        parts = []
        for name, tail in (("stderr", self.stderr_tail()), ("stdout", self.stdout_tail())):
            if tail:
                parts.append(f"[{name}] " + tail[-2000:].decode("utf-8", "replace"))
        return "\n".join(parts)

    def kill(self) -> None:
        """SIGKILL the group and everything else of this launch (also what called setsid)."""
        if self._proc is None:
            return
        strays = self.related() - {self._proc.pid}
        kill_process_group(self._proc)
        for pid in strays | self.related() - {self._proc.pid}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def _remove_workdir(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.kill()
        self.close_stdin()
        self._release_process(self._stdout)
        self._remove_workdir()
