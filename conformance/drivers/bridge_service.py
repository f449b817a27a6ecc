"""The bridge-service transport for the suite (§9): the driver and the case context.

:class:`BridgeServiceDriver` runs one :class:`HostEmulator` for the run and
launches the worker command against it as Snakepit does: one long-lived
worker for ``shared`` cases (replaced after a verdict that poisons it, or
when it died), one of its own, with a host of its own, for ``fresh`` cases,
and nothing for ``raw`` cases, which launch their worker themselves
(:meth:`BridgeServiceCaseContext.launch`: a heartbeat config, extra flags, an
unreachable host).  With ``--target`` the shared host still runs (on
``--host-port``, so the worker can be pointed at it); cases that need a
process are SKIP.

The context learns the worker's tools from its ``RegisterTools`` (making one
call to an unknown tool first if the worker registers lazily, as upstream's
does), adds the user's ``--tool-calls``, and exercises every callable tool
once per worker (:meth:`~BridgeServiceCaseContext.exercise`); several cases
judge that one pass.  Calls are bounded by the case's deadline; a non-OK
status a case did not allow fails it with the status named.
"""

from __future__ import annotations

import itertools
import shlex
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from snakepit_harness.errors import BridgeCrashed, BridgeTimeout, HarnessError
from snakepit_harness.protocol.bridge_service import (
    BRIDGE_READY_LIMIT,
    HeartbeatConfig,
    ToolInfo,
    tool_calls_for,
)
from snakepit_harness.transports.bridge_host import HostEmulator
from snakepit_harness.transports.bridge_service import (
    BridgeServiceWorker,
    build_tool_request,
    read_tool_calls,
)
from snakepit_harness.transports.grpc import GrpcStatusError
from snakepit_harness.transports.process import describe_returncode

from ..context import CaseContext
from ..model import BridgeUse, Case, CaseFailed, CaseSkipped, RunSettings, Verdict
from ._shared import SharedBridgeDriver, short

__all__ = ["DRIVER", "BridgeServiceCaseContext", "BridgeServiceDriver", "StatusOutcome", "ToolCall"]

T = TypeVar("T")

# A tool name no adapter has: calling it makes a lazily registering worker register.
DISCOVERY_TOOL: Final = "snakepit_harness_discovery_probe"
# The exercise's bounds: calls per tool, calls in all.
CALLS_PER_TOOL: Final = 3
CALLS_IN_ALL: Final = 60
# Chunks read of one stream before the harness stops it (an endless tool).
STREAM_CHUNKS_READ: Final = 10_000
# The "status" of a stream the harness itself stopped.
HARNESS_STOPPED: Final = "HARNESS_STOPPED"


def _one_line(message: Any) -> str:
    return short(str(message).replace("\n", " "))


@dataclass(frozen=True)
class StatusOutcome:
    """A call that ended with a non-OK status the case allowed."""

    code: str
    details: str


@dataclass
class ToolCall:
    """One call the exercise made, and how it ended."""

    tool: ToolInfo
    arguments: dict[str, Any]
    response: Any = None  # ExecuteToolResponse (unary calls)
    chunks: list[Any] = field(default_factory=list)  # ToolChunks (streaming calls)
    status: StatusOutcome | None = None
    failure: str = ""  # no answer in time, or the worker died
    elapsed: float = 0.0

    def describe(self) -> str:
        return f"{self.tool.name}({short(self.arguments)})"


@dataclass
class _WorkerState:
    """What the driver knows of one worker: its host, its tools, the exercise."""

    worker: BridgeServiceWorker
    host: HostEmulator
    owns_host: bool
    tools: dict[str, ToolInfo] | None = None
    exercise: list[ToolCall] | None = None

    def close(self) -> None:
        self.worker.close()
        if self.owns_host:
            self.host.stop()


class BridgeServiceCaseContext(CaseContext):
    """What a bridge-service case body gets: the worker, its host, guarded calls."""

    def __init__(
        self,
        case: Case,
        settings: RunSettings,
        deadline: float,
        driver: BridgeServiceDriver,
        state: _WorkerState | None,
    ) -> None:
        super().__init__(case, settings, deadline)
        self.driver = driver
        self.state = state
        self.started = time.monotonic()
        self._sessions = itertools.count(1)
        self._tag = uuid.uuid4().hex[:6]

    # -- the worker and its host --------------------------------------------

    @property
    def worker(self) -> BridgeServiceWorker:
        if self.state is None:
            raise RuntimeError("this case has not launched its worker (ctx.launch)")
        return self.state.worker

    @property
    def host(self) -> HostEmulator:
        if self.state is None:
            raise RuntimeError("this case has not launched its worker (ctx.launch)")
        return self.state.host

    def need_process(self) -> None:
        if not self.settings.bridge_cmd or (self.state and not self.state.worker.has_process):
            self.skip("needs a worker process the harness started (not --target)")

    def launch(
        self,
        *,
        heartbeat: HeartbeatConfig | None = None,
        extra_args: tuple[str, ...] = (),
        host_address: str | None = None,
        wait: bool = True,
    ) -> BridgeServiceWorker:
        """A ``raw`` case's worker, with a host of its own (or at ``host_address``)."""
        self.need_process()
        state = self.driver.new_state(
            heartbeat=heartbeat, extra_args=extra_args, host_address=host_address
        )
        self.state = state
        self.driver.own(self, state)
        self.event(f"start {shlex.join(state.worker.argv)}")
        state.worker.spawn()
        if wait:
            state.worker.start()
            self.event(
                f"ready file named port {state.worker.port} after "
                f"{state.worker.ready_elapsed or 0:.2f} s"
            )
        return state.worker

    def session_id(self, label: str = "s") -> str:
        """A session id no other case (or run) uses."""
        return (
            f"harness-{self.case.id.rsplit('.', 1)[-1]}-{label}{next(self._sessions)}-{self._tag}"
        )

    # -- guarded calls --------------------------------------------------------

    def _call_timeout(self) -> float:
        return min(self.remaining(), self.settings.timeout)

    def guarded(self, what: str, call: Callable[[float], T]) -> T:
        """``call(timeout)``; a non-OK status fails the case with the status named."""
        try:
            return call(self._call_timeout())
        except GrpcStatusError as exc:
            self.event(f"<- {what}: status {exc.code}: {exc.details[:200]}")
            raise CaseFailed(f"{what} ended with gRPC status {exc.code}: {exc.details}") from None

    def status_of(
        self, what: str, call: Callable[[float], T]
    ) -> tuple[T | None, StatusOutcome | None]:
        """``call(timeout)``: its reply, or the non-OK status it ended with."""
        try:
            return call(self._call_timeout()), None
        except GrpcStatusError as exc:
            self.event(f"<- {what}: status {exc.code}: {exc.details[:200]}")
            return None, StatusOutcome(exc.code, exc.details)

    def _client(self) -> Any:
        client = self.worker.client
        assert client is not None, "worker not connected"
        return client

    def ping(self, message: str = "harness") -> Any:
        self.event(f"-> Ping {message!r}")
        reply = self.guarded("Ping", lambda t: self._client().ping(message, timeout=t))
        self.event(f"<- {_one_line(reply)}")
        return reply

    def still_serving(self) -> None:
        """The worker is alive and answers (a Heartbeat: any answer will do)."""
        if self.state is not None and self.state.worker.has_process:
            code = self.state.worker.poll()
            if code is not None:
                raise BridgeCrashed(
                    f"the worker exited ({describe_returncode(code)})",
                    self.state.worker.stderr_tail(),
                    code,
                )
        self.session_call("Heartbeat", self.session_id("alive"))

    def session_call(self, method: str, session_id: str) -> tuple[Any, StatusOutcome | None]:
        """``InitializeSession``/``GetSession``/``CleanupSession``/``Heartbeat`` of a session."""
        client = self._client()
        calls: dict[str, Callable[[float], Any]] = {
            "InitializeSession": lambda t: client.initialize_session(session_id, timeout=t),
            "GetSession": lambda t: client.get_session(session_id, timeout=t),
            "CleanupSession": lambda t: client.cleanup_session(session_id, timeout=t),
            "Heartbeat": lambda t: client.heartbeat(session_id, timeout=t),
        }
        self.event(f"-> {method} {session_id!r}")
        reply, status = self.status_of(method, calls[method])
        if reply is not None:
            self.event(f"<- {_one_line(reply)}")
        return reply, status

    def execute(
        self,
        tool_name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        session_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        binary: Mapping[str, bytes] | None = None,
        allow_status: bool = False,
    ) -> tuple[Any, StatusOutcome | None]:
        """``ExecuteTool``: the reply, or (with ``allow_status``) the non-OK status."""
        request = build_tool_request(
            tool_name,
            arguments,
            session_id=session_id or self.session_id(),
            metadata=metadata,
            binary=binary,
        )
        return self.execute_request(request, allow_status=allow_status)

    def execute_request(
        self, request: Any, *, allow_status: bool = False
    ) -> tuple[Any, StatusOutcome | None]:
        self.event(
            f"-> ExecuteTool {request.tool_name} session={request.session_id!r} "
            f"parameters={short({k: v.value[:60] for k, v in request.parameters.items()})}"
            + (f" binary={sorted(request.binary_parameters)}" if request.binary_parameters else "")
        )
        client = self._client()
        call: Callable[[float], Any] = lambda t: client.call("ExecuteTool", request, t)  # noqa: E731
        if allow_status:
            reply, status = self.status_of("ExecuteTool", call)
        else:
            reply, status = self.guarded("ExecuteTool", call), None
        if reply is not None:
            self.event(
                f"<- success={reply.success} type_url={reply.result.type_url!r} "
                f"value={reply.result.value[:120]!r} error={reply.error_message[:160]!r}"
            )
        return reply, status

    def stream(
        self,
        tool_name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        session_id: str | None = None,
    ) -> tuple[list[Any], StatusOutcome | None]:
        """Every chunk of an ``ExecuteStreamingTool``, and the non-OK status that ended it."""
        request = build_tool_request(
            tool_name, arguments, session_id=session_id or self.session_id(), stream=True
        )
        self.event(f"-> ExecuteStreamingTool {tool_name} {short(dict(arguments or {}))}")
        chunks: list[Any] = []
        stream = self._client().open_stream(request, timeout=self._call_timeout())
        try:
            for chunk in stream:
                chunks.append(chunk)
                self.event(
                    f"<- chunk_id={chunk.chunk_id!r} is_final={chunk.is_final} "
                    f"data={chunk.data[:100]!r}"
                )
                if len(chunks) >= STREAM_CHUNKS_READ:
                    stream.cancel()
                    return chunks, StatusOutcome(HARNESS_STOPPED, "the harness read enough")
        except GrpcStatusError as exc:
            self.event(f"<- stream ended with status {exc.code}: {exc.details[:200]}")
            return chunks, StatusOutcome(exc.code, exc.details)
        except BridgeTimeout:
            if not chunks:
                raise
            # A stream still going at our deadline (a ticker, a slow generator) is
            # not judged as a whole; what it sent so far stays on record.
            self.event(f"<- still streaming at the deadline after {len(chunks)} chunk(s)")
            return chunks, StatusOutcome(HARNESS_STOPPED, "still streaming at the deadline")
        self.event(f"<- stream ended (OK) after {len(chunks)} chunk(s)")
        return chunks, None

    # -- tools ----------------------------------------------------------------

    def tools(self) -> dict[str, ToolInfo]:
        """The worker's tools: what it registered with the host, plus ``--tool-calls`` names."""
        state = self.state
        assert state is not None
        if state.tools is None:
            registered = state.host.registered_tools()
            if not registered:
                self.event("no RegisterTools yet: one call to an unknown tool to make it register")
                self.execute(
                    DISCOVERY_TOOL, {}, session_id=self.session_id("discover"), allow_status=True
                )
                registered = state.host.registered_tools()
            for name in self.driver.tool_calls:
                registered.setdefault(name, ToolInfo(name))
            state.tools = registered
        return state.tools

    def calls_for(self, tool: ToolInfo) -> list[dict[str, Any]]:
        return tool_calls_for(tool, self.driver.tool_calls)[:CALLS_PER_TOOL]

    def callable_tools(self, *, streaming: bool | None = None) -> list[ToolInfo]:
        return [
            t
            for _, t in sorted(self.tools().items())
            if self.calls_for(t) and (streaming is None or t.streaming == streaming)
        ]

    def need_tools(self, kind: str, found: list[ToolInfo]) -> list[ToolInfo]:
        """``found``, or SKIP saying which kind of tool the adapter lacks."""
        if not found:
            names = ", ".join(sorted(self.tools())) or "none registered"
            self.skip(
                f"needs {kind}; the worker's tools ({names}) have none the harness can call "
                "(name arguments for yours with --tool-calls FILE)"
            )
        return found

    def exercise(self) -> list[ToolCall]:
        """Every callable tool called once per argument set (memoised per worker)."""
        state = self.state
        assert state is not None
        if state.exercise is None:
            calls: list[ToolCall] = []
            session = self.session_id("exercise")
            for tool in self.callable_tools():
                for arguments in self.calls_for(tool):
                    if len(calls) >= CALLS_IN_ALL:
                        break
                    calls.append(self._exercise_one(tool, arguments, session))
                    if calls[-1].failure.startswith("crash"):
                        state.exercise = calls
                        return calls
            state.exercise = calls
        return state.exercise

    def _exercise_one(self, tool: ToolInfo, arguments: dict[str, Any], session: str) -> ToolCall:
        call = ToolCall(tool, arguments)
        began = time.monotonic()
        try:
            if tool.streaming:
                call.chunks, call.status = self.stream(tool.name, arguments, session_id=session)
            else:
                call.response, call.status = self.execute(
                    tool.name, arguments, session_id=session, allow_status=True
                )
        except BridgeTimeout as exc:
            call.failure = f"timeout: {exc}"
        except BridgeCrashed as exc:
            call.failure = f"crash: {exc}"
        call.elapsed = time.monotonic() - began
        return call


class BridgeServiceDriver(SharedBridgeDriver[_WorkerState]):
    """One host emulator for the run; workers launched against it (or ``--target``)."""

    kind = "bridge-service"
    no_bridge = "no worker: put its command after `--` or give --target HOST:PORT"

    def __init__(self, settings: RunSettings, stop: threading.Event | None = None) -> None:
        super().__init__(settings, stop)
        self.tool_calls: dict[str, list[dict[str, Any]]] = {}
        if settings.tool_calls:
            self.tool_calls = read_tool_calls(Path(settings.tool_calls))
        try:
            self.host = HostEmulator(port=settings.host_port).start()
        except OSError as exc:
            raise HarnessError(f"cannot start the host emulator: {exc}") from None
        self._own: dict[int, list[_WorkerState]] = {}

    def new_state(
        self,
        *,
        heartbeat: HeartbeatConfig | None = None,
        extra_args: tuple[str, ...] = (),
        host_address: str | None = None,
        shared: bool = False,
    ) -> _WorkerState:
        if self.stop.is_set():
            raise KeyboardInterrupt
        ready = max(BRIDGE_READY_LIMIT, self.settings.startup_timeout)
        if not self.settings.bridge_cmd:
            worker = BridgeServiceWorker(target=self.settings.target, ready_timeout=ready)
            return _WorkerState(worker, self.host, owns_host=False)
        owns_host = not shared and host_address is None
        host = HostEmulator().start() if owns_host else self.host
        worker = BridgeServiceWorker(
            self.settings.bridge_cmd,
            host_address=host_address or host.address,
            heartbeat=heartbeat or HeartbeatConfig(),
            ready_timeout=ready,
            extra_args=extra_args,
        )
        return _WorkerState(worker, host, owns_host)

    def _start(self, state: _WorkerState) -> _WorkerState:
        self._started("worker", state.worker.start, state.close)
        return state

    def own(self, ctx: BridgeServiceCaseContext, state: _WorkerState) -> None:
        self._own.setdefault(id(ctx), []).append(state)

    def acquire(self, case: Case, deadline: float) -> BridgeServiceCaseContext:
        if case.bridge is BridgeUse.RAW:
            if not self.settings.bridge_cmd:
                raise CaseSkipped("needs a worker process of its own; --target was given")
            return BridgeServiceCaseContext(case, self.settings, deadline, self, None)
        if case.bridge is BridgeUse.FRESH:
            if not self.settings.bridge_cmd:
                raise CaseSkipped("needs a worker process of its own; --target was given")
            state = self._start(self.new_state())
            ctx = BridgeServiceCaseContext(case, self.settings, deadline, self, state)
            self.own(ctx, state)
            return ctx
        shared = self._shared_bridge(
            lambda state: state.worker.has_process and state.worker.poll() is not None,
            lambda: self._start(self.new_state(shared=True)),
        )
        return BridgeServiceCaseContext(case, self.settings, deadline, self, shared)

    def release(self, ctx: CaseContext, verdict: Verdict) -> None:
        assert isinstance(ctx, BridgeServiceCaseContext)
        self.host.delay = 0.0
        owned = self._own.pop(id(ctx), [])
        for state in owned:
            state.close()
        if not owned and verdict.meaning.poisons_bridge:
            self._poisoned(ctx.state)

    def close(self) -> None:
        self._close_shared()
        for states in list(self._own.values()):
            for state in states:
                state.close()
        self._own.clear()
        self.host.stop()

    def stderr_tail(self, ctx: CaseContext) -> bytes:
        assert isinstance(ctx, BridgeServiceCaseContext)
        if ctx.state is None:
            return b""
        return ctx.state.worker.output_tail().encode()

    def reproduction(self, ctx: CaseContext) -> list[str]:
        calls = f"--tool-calls {self.settings.tool_calls} " if self.settings.tool_calls else ""
        return [
            f"snakepit-harness conformance --profile bridge-service {calls}"
            f"--case {ctx.case.id} {self._where()}"
        ]


DRIVER = BridgeServiceDriver
