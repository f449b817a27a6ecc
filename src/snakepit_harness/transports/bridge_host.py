"""The host emulator: a ``snakepit.bridge.BridgeService`` server playing Snakepit's Elixir side.

A bridge-service worker calls back into its host while it starts and while
it serves (§9.4): ``Ping`` first, ``RegisterTools`` with its tool list,
``InitializeSession``, ``Heartbeat`` for each session it serves,
``GetExposedElixirTools`` and ``ExecuteElixirTool`` for the host's own tools.
:class:`HostEmulator` answers all of them on 127.0.0.1 the way Snakepit does,
keeps the sessions it was told about, offers a configurable set of host tools
(:class:`HostTool`), adds a configurable delay to every answer (``delay``,
the load test's ``--host-delay``), and records every call with its request,
arrival time and the caller's deadline (:class:`HostCall`) for cases to judge.

It runs in-process (``with HostEmulator() as host: ...``) or on its own
(``python -m snakepit_harness.transports.bridge_host --port 0`` prints
``HOST_READY_ON_PORT=<port>``), so a pool of workers in other processes can
share one.  The methods a host does not serve (``ExecuteTool``, ...) answer
UNIMPLEMENTED.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, Final, Self

from ..protocol.bridge_service import (
    NO_EXAMPLE,
    AnyJsonError,
    ParamInfo,
    ToolInfo,
    decode_any_json,
    encode_tool_result,
    tool_error_json,
)

if TYPE_CHECKING:
    import grpc

__all__ = [
    "DEFAULT_HOST_TOOLS",
    "HOST_READY_PREFIX",
    "HostCall",
    "HostEmulator",
    "HostTool",
    "decode_parameters",
    "host_process",
    "main",
    "tool_info",
]

# The line the standalone emulator prints once it serves.
HOST_READY_PREFIX: Final = "HOST_READY_ON_PORT="
# Threads answering callbacks: a pool of workers calls in at once, and a
# configured delay holds a thread for its whole length.
HOST_THREADS: Final = 64
# Calls kept for inspection; a long load run must not grow without bound.
CALLS_KEPT: Final = 100_000
# Accept what a worker may send (a large ExecuteElixirTool, many tools).
HOST_MAX_MESSAGE_SIZE: Final = 64 * 1024 * 1024
# Seconds a stopping host lets calls in flight finish.
STOP_GRACE: Final = 0.5

_STRING_VALUE_URL: Final = "type.googleapis.com/google.protobuf.StringValue"


@dataclass(frozen=True)
class HostCall:
    """One call a worker made into the host."""

    method: str  # "Ping", "RegisterTools", ...
    request: Any  # the protobuf request message
    at: float  # time.monotonic() on arrival
    deadline: float | None  # seconds the caller allowed (None: no deadline)
    peer: str

    @property
    def session_id(self) -> str:
        return str(getattr(self.request, "session_id", ""))


@dataclass(frozen=True)
class HostTool:
    """A tool the host exposes to workers (``GetExposedElixirTools``)."""

    name: str
    run: Callable[[dict[str, Any]], Any]
    description: str = ""
    params: tuple[ParamInfo, ...] = ()


def _echo(arguments: dict[str, Any]) -> Any:
    return arguments


def _add(arguments: dict[str, Any]) -> Any:
    a, b = arguments.get("a"), arguments.get("b")
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b)):
        raise ValueError("add wants numbers a and b")
    return a + b  # type: ignore[operator]


DEFAULT_HOST_TOOLS: Final = (
    HostTool("host_echo", _echo, "returns its parameters", (ParamInfo("value", "any", False),)),
    HostTool(
        "host_add",
        _add,
        "adds two numbers",
        (ParamInfo("a", "float", True), ParamInfo("b", "float", True)),
    ),
)


@dataclass
class _Session:
    session_id: str
    created: float  # time.time()
    metadata: dict[str, str] = field(default_factory=dict)
    tools: dict[str, ToolInfo] = field(default_factory=dict)


def tool_info(registration: Any) -> ToolInfo:
    """A ``ToolRegistration``/``ToolSpec`` message as a :class:`ToolInfo`."""
    params = []
    for spec in registration.parameters:
        default: Any = NO_EXAMPLE
        if spec.HasField("default_value"):
            with contextlib.suppress(AnyJsonError):
                default = decode_any_json(spec.default_value.value)
        elif spec.validation_json:
            # Upstream's BaseAdapter keeps defaults as {"default": ...} here.
            with contextlib.suppress(AnyJsonError, AttributeError):
                default = decode_any_json(spec.validation_json.encode()).get("default", default)
        params.append(ParamInfo(spec.name, spec.type, spec.required, default))
    return ToolInfo(
        name=registration.name,
        params=tuple(params),
        streaming=registration.supports_streaming,
        description=registration.description,
        metadata=dict(registration.metadata),
    )


def decode_parameters(parameters: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Decode ``map<string, Any>`` parameters; also the keys not in Any-JSON form.

    The host reads JSON text in ``Any.value`` (§9.7).  Upstream's session
    context packs strings as real ``StringValue`` messages instead; those are
    decoded too (so the call works, as it does in Snakepit) and reported.
    """
    from google.protobuf import wrappers_pb2

    decoded: dict[str, Any] = {}
    off_spec: list[str] = []
    for key, value in parameters.items():
        try:
            decoded[key] = decode_any_json(value.value)
            continue
        except AnyJsonError:
            off_spec.append(key)
        if value.type_url == _STRING_VALUE_URL:
            wrapper = wrappers_pb2.StringValue()
            try:
                wrapper.ParseFromString(value.value)
                decoded[key] = wrapper.value
                continue
            except Exception:
                pass
        decoded[key] = bytes(value.value)
    return decoded, off_spec


class HostEmulator:
    """Snakepit's side of a bridge-service worker, on 127.0.0.1.

    ``delay`` (seconds, settable while running) is added to every answer.
    ``calls()`` and ``wait_for()`` read the record.
    """

    def __init__(
        self,
        *,
        tools: Iterable[HostTool] = DEFAULT_HOST_TOOLS,
        delay: float = 0.0,
        port: int = 0,
        record: bool = True,
    ) -> None:
        self.tools = {t.name: t for t in tools}
        self.delay = delay
        self.requested_port = port
        self.record = record
        self.port = 0
        self._server: grpc.Server | None = None
        self._lock = threading.Condition()
        self._calls: collections.deque[HostCall] = collections.deque(maxlen=CALLS_KEPT)
        self._sessions: dict[str, _Session] = {}
        self._stopping = threading.Event()

    # -- life cycle ---------------------------------------------------------

    @property
    def address(self) -> str:
        if not self.port:
            raise RuntimeError("the host emulator is not serving")
        return f"127.0.0.1:{self.port}"

    @property
    def serving(self) -> bool:
        return self._server is not None

    def start(self) -> Self:
        import grpc

        from snakepit_harness.protos import snakepit_bridge_pb2_grpc

        if self._server is not None:
            raise RuntimeError("the host emulator is already serving")
        self._stopping.clear()
        server = grpc.server(
            futures.ThreadPoolExecutor(HOST_THREADS, thread_name_prefix="bridge-host"),
            options=[
                ("grpc.max_receive_message_length", HOST_MAX_MESSAGE_SIZE),
                ("grpc.max_send_message_length", HOST_MAX_MESSAGE_SIZE),
                ("grpc.so_reuseport", 0),
            ],
        )
        add_servicer: Any = snakepit_bridge_pb2_grpc.add_BridgeServiceServicer_to_server
        add_servicer(_HostServicer(self), server)
        port = server.add_insecure_port(f"127.0.0.1:{self.requested_port}")
        if port == 0:
            raise OSError(f"the host emulator cannot listen on 127.0.0.1:{self.requested_port}")
        server.start()
        self._server = server
        self.port = port
        self.requested_port = port  # a restart (after a host-loss case) reuses the port
        return self

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop answering (the worker's host is gone); ``start()`` serves again."""
        server, self._server = self._server, None
        if server is not None:
            self._stopping.set()
            server.stop(grace).wait(grace + 1.0)

    def __enter__(self) -> Self:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the record ---------------------------------------------------------

    def _note(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        remaining = context.time_remaining()
        call = HostCall(method, request, time.monotonic(), remaining, context.peer())
        with self._lock:
            if self.record:
                self._calls.append(call)
            self._lock.notify_all()

    def calls(self, method: str | None = None, *, since: float = 0.0) -> list[HostCall]:
        """Recorded calls (of ``method``), in arrival order, that came at or after ``since``."""
        with self._lock:
            return [
                c for c in self._calls if (method is None or c.method == method) and c.at >= since
            ]

    def wait_for(
        self, predicate: Callable[[HostCall], bool], timeout: float, *, since: float = 0.0
    ) -> HostCall | None:
        """The first recorded call (at or after ``since``) matching ``predicate``, waiting."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for call in self._calls:
                    if call.at >= since and predicate(call):
                        return call
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._lock.wait(remaining)

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()

    def registered_tools(self, session_id: str | None = None) -> dict[str, ToolInfo]:
        """The tools workers registered (for ``session_id``, or for any session)."""
        tools: dict[str, ToolInfo] = {}
        for call in self.calls("RegisterTools"):
            if session_id is None or call.session_id in (session_id, ""):
                tools.update({t.name: tool_info(t) for t in call.request.tools})
        return tools

    def session_known(self, session_id: str) -> bool:
        with self._lock:
            return session_id in self._sessions

    # -- answers (called by _HostServicer) ------------------------------------

    def _pause(self) -> None:
        if self.delay > 0:
            self._stopping.wait(self.delay)

    def _session(self, session_id: str, create: bool) -> _Session | None:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None and create:
                session = self._sessions[session_id] = _Session(session_id, time.time())
            return session

    def _forget(self, session_id: str) -> bool:
        with self._lock:
            return self._sessions.pop(session_id, None) is not None


def _timestamp(message: Any, seconds: float) -> None:
    message.FromNanoseconds(int(seconds * 1e9))


class _HostServicer:
    """The gRPC methods; each records the call, waits the delay, answers."""

    def __init__(self, host: HostEmulator) -> None:
        from snakepit_harness.protos import snakepit_bridge_pb2

        self.host = host
        self.pb = snakepit_bridge_pb2

    def _enter(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        self.host._note(method, request, context)
        self.host._pause()

    def Ping(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._enter("Ping", request, context)
        reply = self.pb.PingResponse(message=f"pong from the harness's host: {request.message}")
        _timestamp(reply.server_time, time.time())
        return reply

    def InitializeSession(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._enter("InitializeSession", request, context)
        session = self.host._session(request.session_id, create=True)
        assert session is not None
        session.metadata.update(request.metadata)
        return self.pb.InitializeSessionResponse(success=True)

    def CleanupSession(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._enter("CleanupSession", request, context)
        existed = self.host._forget(request.session_id)
        return self.pb.CleanupSessionResponse(success=True, resources_cleaned=int(existed))

    def GetSession(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        import grpc

        self._enter("GetSession", request, context)
        session = self.host._session(request.session_id, create=False)
        if session is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no session {request.session_id!r}")
        assert session is not None
        reply = self.pb.GetSessionResponse(
            session_id=session.session_id,
            metadata=session.metadata,
            tool_count=len(session.tools),
        )
        _timestamp(reply.created_at, session.created)
        return reply

    def Heartbeat(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._enter("Heartbeat", request, context)
        reply = self.pb.HeartbeatResponse(
            session_valid=self.host._session(request.session_id, create=False) is not None
        )
        _timestamp(reply.server_time, time.time())
        return reply

    def RegisterTools(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._enter("RegisterTools", request, context)
        session = self.host._session(request.session_id, create=bool(request.session_id))
        tool_ids = {}
        for registration in request.tools:
            tool_ids[registration.name] = f"{request.session_id or 'worker'}:{registration.name}"
            if session is not None:
                session.tools[registration.name] = tool_info(registration)
        return self.pb.RegisterToolsResponse(success=True, tool_ids=tool_ids)

    def GetExposedElixirTools(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._enter("GetExposedElixirTools", request, context)
        specs = []
        for tool in self.host.tools.values():
            specs.append(
                self.pb.ToolSpec(
                    name=tool.name,
                    description=tool.description,
                    parameters=[
                        self.pb.ParameterSpec(name=p.name, type=p.type, required=p.required)
                        for p in tool.params
                    ],
                )
            )
        return self.pb.GetExposedElixirToolsResponse(tools=specs)

    def ExecuteElixirTool(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._enter("ExecuteElixirTool", request, context)
        began = time.monotonic()
        reply = self.pb.ExecuteElixirToolResponse()
        tool = self.host.tools.get(request.tool_name)
        arguments, _off_spec = decode_parameters(request.parameters)
        try:
            if tool is None:
                raise LookupError(
                    f"the host has no tool {request.tool_name!r}; it has {sorted(self.host.tools)}"
                )
            type_url, value = encode_tool_result(tool.run(arguments))
        except Exception as exc:
            reply.success = False
            reply.error_message = tool_error_json(type(exc).__name__, str(exc))
        else:
            reply.success = True
            reply.result.type_url = type_url
            reply.result.value = value
        reply.execution_time_ms = int((time.monotonic() - began) * 1000)
        return reply

    # Methods only a worker serves.

    def _unimplemented(self, method: str, request: Any, context: grpc.ServicerContext) -> Any:
        import grpc

        self._enter(method, request, context)
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"the host does not serve {method}")

    def ExecuteTool(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._unimplemented("ExecuteTool", request, context)

    def ExecuteStreamingTool(  # noqa: N802
        self, request: Any, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        self._unimplemented("ExecuteStreamingTool", request, context)
        yield from ()

    def StreamTelemetry(  # noqa: N802
        self, requests: Iterator[Any], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        self._unimplemented("StreamTelemetry", None, context)
        yield from ()


# -- standalone ----------------------------------------------------------------

# Seconds a standalone host may take to serve (importing grpc on a busy machine).
HOST_PROCESS_START_LIMIT: Final = 30.0


@contextlib.contextmanager
def host_process(delay_ms: float = 0.0, log: IO[bytes] | None = None) -> Iterator[str]:
    """A host emulator in a process of its own, for workers started by other processes.

    Yields its address; on leaving, however the block ends, the process is
    killed with its group.  ``log`` takes its stderr (default: discarded).
    Raises :class:`~snakepit_harness.errors.HarnessError` when it does not
    serve within :data:`HOST_PROCESS_START_LIMIT`.
    """
    from ..errors import HarnessError
    from .process import kill_process_group
    from .spawn import die_with_parent

    command = [sys.executable, "-m", __name__, "--port", "0", "--delay-ms", f"{delay_ms:g}"]
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log if log is not None else subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent,  # noqa: PLW1509 - the harness runs no threads here
    )
    try:
        assert proc.stdout is not None
        line = b""
        deadline = time.monotonic() + HOST_PROCESS_START_LIMIT
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n") and time.monotonic() < deadline:
                if selector.select(timeout=0.1):
                    chunk = os.read(proc.stdout.fileno(), 256)
                    if not chunk:
                        break
                    line += chunk
        text = line.decode("utf-8", "replace").strip()
        if not text.startswith(HOST_READY_PREFIX):
            raise HarnessError(
                f"the host emulator did not serve within {HOST_PROCESS_START_LIMIT:.0f} s "
                f"(exit status {proc.poll()}, output {text[:200]!r})"
            )
        yield f"127.0.0.1:{int(text[len(HOST_READY_PREFIX) :])}"
    finally:
        kill_process_group(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a host emulator until SIGTERM/SIGINT (for workers in other processes)."""
    parser = argparse.ArgumentParser(
        prog="python -m snakepit_harness.transports.bridge_host",
        description="Play Snakepit's host for bridge-service workers on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 = any free port")
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="milliseconds added to every answer"
    )
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    host = HostEmulator(delay=args.delay_ms / 1000.0, port=args.port, record=False)
    try:
        host.start()
    except OSError as exc:
        print(f"bridge_host: {exc}", file=sys.stderr)
        return 1
    print(f"{HOST_READY_PREFIX}{host.port}", flush=True)
    while not stop.wait(0.5):
        pass
    host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
