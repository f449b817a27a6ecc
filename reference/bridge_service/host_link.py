"""The worker's side of its host: the callbacks of §9.4, each with a deadline.

:class:`HostLink` holds one channel to ``--elixir-address``.  At start-up it
pings the host (with backoff, for a bounded time) so a wrong address shows
at once; for each session the worker meets it initialises the session on the
host and registers the worker's tools exactly once; it lists and runs the
host's tools for :class:`~.context.SessionContext`; and, when heartbeats are
enabled, it sends one per active session every interval and reports the host
lost after ``max_missed_heartbeats`` rounds without an answer.

Every callback carries a deadline: never past the deadline of the call being
served, and never more than :data:`CALLBACK_TIMEOUT`, so a host that stops
answering cannot hold a worker thread for ever (upstream's worker makes
these calls without one).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from snakepit_harness.protocol import UnencodableValue
from snakepit_harness.protocol.bridge_service import (
    NO_EXAMPLE,
    AnyJsonError,
    HeartbeatConfig,
    ParamInfo,
    ToolInfo,
    decode_any_json,
    encode_parameter,
)

from .context import HostToolError

__all__ = ["CALLBACK_TIMEOUT", "HostLink", "HostUnreachable"]

# The longest any callback may take (the call's own deadline may be shorter).
CALLBACK_TIMEOUT: Final = 5.0


@dataclass(frozen=True)
class PingSchedule:
    """How a worker pings its host until it answers: each ping's timeout, and the pause
    between pings, doubling from ``first_pause`` up to ``longest_pause`` (seconds)."""

    timeout: float
    first_pause: float
    longest_pause: float

    def pauses(self) -> Iterator[float]:
        pause = self.first_pause
        while True:
            yield pause
            pause = min(pause * 2, self.longest_pause)


# A host that is starting answers within a few pings; one that is gone is
# pinged about once a second until the start-up budget runs out.
STARTUP_PINGS: Final = PingSchedule(timeout=1.0, first_pause=0.05, longest_pause=1.0)

# Sessions remembered as set up on the host; the least recently used beyond
# this are forgotten (set up again if they come back), so a host that opens
# a session per call cannot grow the worker without bound.
SESSIONS_KEPT: Final = 10_000
# Heartbeats go for the most recently used sessions only: one RPC each per interval.
HEARTBEAT_SESSIONS: Final = 64

log = logging.getLogger("snakepit_bridge.bridge_service")


class HostUnreachable(Exception):
    """The host did not answer a Ping within the start-up budget."""


class DeadlinePassed(HostToolError):
    """The call being served ran out of time before a callback could be made."""


def registration(pb: Any, info: ToolInfo) -> Any:
    """A ``ToolRegistration`` message for one tool."""
    message = pb.ToolRegistration(
        name=info.name,
        description=info.description,
        supports_streaming=info.streaming,
        metadata=dict(info.metadata),
    )
    for param in info.params:
        spec = message.parameters.add(name=param.name, type=param.type, required=param.required)
        if param.default is not NO_EXAMPLE and not param.required:
            with contextlib.suppress(UnencodableValue):
                type_url, value = encode_parameter(param.default)
                spec.default_value.type_url = type_url
                spec.default_value.value = value
    return message


class HostLink:
    """One channel to the host and the per-session state of the callbacks."""

    def __init__(
        self,
        address: str,
        *,
        worker_id: str,
        tools: Sequence[ToolInfo],
        heartbeat: HeartbeatConfig,
        on_host_lost: Callable[[str], None],
    ) -> None:
        import grpc

        from snakepit_harness.protos import snakepit_bridge_pb2, snakepit_bridge_pb2_grpc

        self.address = address
        self.worker_id = worker_id
        self.pb = snakepit_bridge_pb2
        self.tools = list(tools)
        self.heartbeat = heartbeat
        self._on_host_lost = on_host_lost
        self._channel = grpc.insecure_channel(address)
        stub_class: Any = snakepit_bridge_pb2_grpc.BridgeServiceStub
        self._stub: Any = stub_class(self._channel)
        self._lock = threading.Lock()
        self._session_locks: dict[str, threading.Lock] = {}
        self._ready_sessions: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._host_tools: dict[str, list[ToolInfo]] = {}
        self._stop = threading.Event()
        self._beats: threading.Thread | None = None

    # -- plumbing -----------------------------------------------------------

    def _call(self, method: str, request: Any, deadline: float | None) -> Any:
        timeout = CALLBACK_TIMEOUT
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise DeadlinePassed(f"no time left to call {method} on the host")
        return getattr(self._stub, method)(request, timeout=timeout)

    def close(self) -> None:
        self._stop.set()
        if self._beats is not None:
            self._beats.join(timeout=2.0)
        self._channel.close()

    # -- start-up -----------------------------------------------------------

    def wait_for_host(self, budget: float, stop: threading.Event | None = None) -> int:
        """Ping until the host answers (within ``budget`` s); the number of tries.

        Returns 0 at once when ``stop`` is set (a signal came meanwhile).
        """
        import grpc

        stop = stop or self._stop
        give_up = time.monotonic() + budget
        pauses = STARTUP_PINGS.pauses()
        tries = 0
        while True:
            tries += 1
            try:
                self._stub.Ping(
                    self.pb.PingRequest(message=self.worker_id), timeout=STARTUP_PINGS.timeout
                )
                return tries
            except grpc.RpcError as exc:
                left = give_up - time.monotonic()
                if stop.is_set():
                    return 0
                if left <= 0:
                    last = exc.code().name if isinstance(exc, grpc.Call) else str(exc)
                    raise HostUnreachable(
                        f"no answer from the host at {self.address} after {tries} pings "
                        f"in {budget:.0f} s (last: {last})"
                    ) from None
                stop.wait(min(next(pauses), left))

    # -- sessions -----------------------------------------------------------

    def _session_lock(self, session_id: str) -> threading.Lock:
        with self._lock:
            return self._session_locks.setdefault(session_id, threading.Lock())

    def ensure_session(self, session_id: str, deadline: float | None) -> None:
        """InitializeSession and RegisterTools on the host, once per session."""
        import grpc

        if session_id in self._ready_sessions:
            with self._lock, contextlib.suppress(KeyError):
                self._ready_sessions.move_to_end(session_id)
            return
        with self._session_lock(session_id):
            if session_id in self._ready_sessions:
                return
            try:
                self._call(
                    "InitializeSession",
                    self.pb.InitializeSessionRequest(session_id=session_id),
                    deadline,
                )
                reply = self._call(
                    "RegisterTools",
                    self.pb.RegisterToolsRequest(
                        session_id=session_id,
                        tools=[registration(self.pb, info) for info in self.tools],
                        worker_id=self.worker_id,
                    ),
                    deadline,
                )
            except (grpc.RpcError, DeadlinePassed) as exc:
                # Serve the call anyway; the next call of the session tries again.
                log.warning("session %s: the host did not take it: %s", session_id, exc)
                return
            if not reply.success:
                log.warning("RegisterTools for %s refused: %s", session_id, reply.error_message)
            with self._lock:
                self._ready_sessions[session_id] = None
                self._session_locks.pop(session_id, None)
                while len(self._ready_sessions) > SESSIONS_KEPT:
                    forgotten, _ = self._ready_sessions.popitem(last=False)
                    self._host_tools.pop(forgotten, None)
        self.start_heartbeats()

    def forget_session(self, session_id: str, deadline: float | None) -> None:
        import grpc

        with self._lock:
            self._ready_sessions.pop(session_id, None)
            self._host_tools.pop(session_id, None)
        with contextlib.suppress(grpc.RpcError, DeadlinePassed):
            self._call(
                "CleanupSession", self.pb.CleanupSessionRequest(session_id=session_id), deadline
            )

    # -- the host's tools ---------------------------------------------------

    def host_tools(self, session_id: str, deadline: float | None) -> list[ToolInfo]:
        import grpc

        cached = self._host_tools.get(session_id)
        if cached is not None:
            return cached
        try:
            reply = self._call(
                "GetExposedElixirTools",
                self.pb.GetExposedElixirToolsRequest(session_id=session_id),
                deadline,
            )
        except grpc.RpcError as exc:
            raise HostToolError(f"the host did not list its tools: {exc}") from None
        tools = [
            ToolInfo(
                name=spec.name,
                description=spec.description,
                params=tuple(ParamInfo(p.name, p.type, p.required) for p in spec.parameters),
            )
            for spec in reply.tools
        ]
        with self._lock:
            self._host_tools[session_id] = tools
        return tools

    def call_host_tool(
        self, session_id: str, name: str, arguments: dict[str, Any], deadline: float | None
    ) -> Any:
        import grpc

        request = self.pb.ExecuteElixirToolRequest(session_id=session_id, tool_name=name)
        for key, value in arguments.items():
            type_url, encoded = encode_parameter(value)
            request.parameters[key].type_url = type_url
            request.parameters[key].value = encoded
        try:
            reply = self._call("ExecuteElixirTool", request, deadline)
        except grpc.RpcError as exc:
            raise HostToolError(f"host tool {name!r}: {exc}") from None
        if not reply.success:
            raise HostToolError(f"host tool {name!r} failed: {reply.error_message}")
        if not reply.result.value:
            return None
        try:
            return decode_any_json(reply.result.value)
        except AnyJsonError as exc:
            raise HostToolError(f"host tool {name!r} answered a non-JSON result: {exc}") from None

    # -- heartbeats ---------------------------------------------------------

    def start_heartbeats(self) -> None:
        if not self.heartbeat.enabled or self._beats is not None:
            return
        with self._lock:
            if self._beats is None:
                self._beats = threading.Thread(
                    target=self._beat, name="snakepit-heartbeat", daemon=True
                )
                self._beats.start()

    def _beat(self) -> None:
        import grpc

        config = self.heartbeat
        if self._stop.wait(config.initial_delay_ms / 1000.0):
            return
        missed = 0
        while not self._stop.wait(config.interval_ms / 1000.0):
            with self._lock:
                sessions = list(self._ready_sessions)[-HEARTBEAT_SESSIONS:]
            if not sessions:
                continue
            answered = False
            for session_id in sessions:
                request = self.pb.HeartbeatRequest(session_id=session_id)
                request.client_time.GetCurrentTime()
                try:
                    self._stub.Heartbeat(request, timeout=max(config.timeout_ms, 1) / 1000.0)
                    answered = True
                except grpc.RpcError:
                    pass
            missed = 0 if answered else missed + 1
            if missed and config.max_missed_heartbeats and missed >= config.max_missed_heartbeats:
                reason = f"{missed} heartbeats in a row got no answer from {self.address}"
                if config.dependent:
                    self._on_host_lost(reason)
                    return
                log.warning("%s (independent worker: staying up)", reason)
