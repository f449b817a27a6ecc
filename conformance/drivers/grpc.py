"""The gRPC transport for the suite (PROTOCOL.md §8): a driver and the case context.

:class:`GrpcDriver` supplies :class:`GrpcCaseContext` objects the way the
stdio driver does: one long-lived bridge for ``shared`` cases (restarted after
a TIMEOUT, CRASH or ERROR), a bridge of its own for ``fresh`` cases (started,
ready line read, connected), and an unstarted one for ``raw`` cases (start-up
cases start it themselves and judge the ready line).  With ``--target
HOST:PORT`` there is no process: ``fresh`` and ``raw`` cases are SKIPped, and
shared cases talk to the running server.

The context wraps the calls of :class:`~snakepit_harness.transports.grpc.GrpcBridge`
with the case's deadline and records each request and reply for the report.
A non-OK gRPC status a case did not ask for (``allow_status``) fails the case
(grade FAIL, or NON-STRICT for a ``recommended`` case) with the status named.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Unpack

from snakepit_harness.protocol import decode_map
from snakepit_harness.transports.grpc import (
    DEFAULT_STARTUP_TIMEOUT,
    IN_SESSION,
    CallOptions,
    GrpcBridge,
    GrpcStatusError,
    GrpcStream,
)

from ..context import CaseContext
from ..model import BridgeUse, Case, CaseFailed, CaseSkipped, RunSettings, Verdict
from ._shared import SharedBridgeDriver, short

if TYPE_CHECKING:
    from snakepit_harness.protos import snakepit_pb2 as pb

__all__ = ["DRIVER", "CaseCallOptions", "GrpcCaseContext", "GrpcDriver", "StatusOutcome"]

T = TypeVar("T")


def _map_text(entries: Mapping[str, bytes]) -> str:
    return short({key: value[:80] for key, value in entries.items()})


class CaseCallOptions(TypedDict, total=False):
    """What a case's ``Execute`` or ``ExecuteStream`` call may set besides command and args.

    The transport's :class:`~snakepit_harness.transports.grpc.CallOptions` but
    for the timeout, which is the case's time left: ``request_id`` defaults to
    a fresh one (:meth:`GrpcCaseContext.request_id`), ``timeout_ms`` to 0
    (none), and a ``session_id`` makes the call the ``...InSession`` variant.
    """

    request_id: str | None
    timeout_ms: int
    session_id: str | None


class StatusOutcome:
    """A call that ended with a non-OK status the case allowed: the code and details."""

    def __init__(self, code: str, details: str) -> None:
        self.code = code
        self.details = details

    def __repr__(self) -> str:
        return f"StatusOutcome({self.code}: {self.details})"


class GrpcCaseContext(CaseContext):
    """What a gRPC case body gets: the bridge, deadline-bound calls, grading helpers."""

    def __init__(
        self, case: Case, settings: RunSettings, deadline: float, bridge: GrpcBridge
    ) -> None:
        super().__init__(case, settings, deadline)
        self.bridge = bridge

    # -- plumbing

    def request_id(self) -> str:
        return f"{self.case.id}#{self.next_id()}"

    def _guard(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except GrpcStatusError as exc:
            self.event(f"<- {what}: status {exc.code}: {exc.details}")
            raise CaseFailed(f"{what} ended with gRPC status {exc.code}: {exc.details}") from None

    def start(self) -> GrpcBridge:
        """Start a ``raw`` case's bridge (ready line, connection); returns it."""
        self.event(f"start {shlex.join(self.bridge.argv)}")
        self.bridge.start()
        self.event(
            f"ready line after {self.bridge.ready_elapsed or 0:.2f} s: port {self.bridge.port}; "
            f"stdout so far {self.bridge.stdout_lines()!r}"
        )
        return self.bridge

    def need_process(self) -> None:
        if not self.bridge.has_process:
            self.skip("needs a bridge process the harness started (not --target)")

    # -- calls

    def _announce(
        self,
        method: str,
        command: str,
        args: Mapping[str, Any] | None,
        options: CaseCallOptions,
    ) -> tuple[str, CallOptions]:
        """Record the call about to be made: the method's name as shown (``method``, or
        its ``...InSession[id]`` variant), and the bridge call's keyword arguments."""
        request_id = options.get("request_id")
        rid = self.request_id() if request_id is None else request_id
        session_id = options.get("session_id")
        shown = method if session_id is None else f"{IN_SESSION[method]}[{session_id}]"
        self.event(f"-> {shown} {command} args={short(args)} request_id={rid!r}")
        return shown, {
            "timeout": self.remaining(),
            "request_id": rid,
            "timeout_ms": options.get("timeout_ms", 0),
            "session_id": session_id,
        }

    def execute(
        self,
        command: str,
        args: Mapping[str, Any] | None = None,
        **options: Unpack[CaseCallOptions],
    ) -> pb.ExecuteResponse:
        """``Execute`` (or ``ExecuteInSession`` with ``session_id``); non-OK status fails."""
        method, call = self._announce("Execute", command, args, options)
        reply = self._guard(method, lambda: self.bridge.execute(command, args, **call))
        self.event(
            f"<- success={reply.success} error={reply.error!r} request_id={reply.request_id!r} "
            f"result={_map_text(reply.result)}"
        )
        return reply

    def open_stream(
        self,
        command: str,
        args: Mapping[str, Any] | None = None,
        **options: Unpack[CaseCallOptions],
    ) -> GrpcStream[pb.StreamResponse]:
        """``ExecuteStream`` (or ``ExecuteInSessionStream`` with ``session_id``), unread."""
        _, call = self._announce("ExecuteStream", command, args, options)
        return self.bridge.execute_stream(command, args, **call)

    def stream(
        self,
        command: str,
        args: Mapping[str, Any] | None = None,
        *,
        allow_status: bool = False,
        **options: Unpack[CaseCallOptions],
    ) -> tuple[list[pb.StreamResponse], StatusOutcome | None]:
        """Every message of a stream, and the non-OK status that ended it (if allowed)."""
        call = self.open_stream(command, args, **options)
        messages: list[pb.StreamResponse] = []
        try:
            for message in call:
                messages.append(message)
                self.event(
                    f"<- chunk_index={message.chunk_index} is_final={message.is_final} "
                    f"error={message.error!r} request_id={message.request_id!r} "
                    f"chunk={_map_text(message.chunk)}"
                )
        except GrpcStatusError as exc:
            self.event(f"<- stream ended with status {exc.code}: {exc.details}")
            if not allow_status:
                raise CaseFailed(
                    f"the stream ended with gRPC status {exc.code} after {len(messages)} "
                    f"message(s): {exc.details}"
                ) from None
            return messages, StatusOutcome(exc.code, exc.details)
        self.event(f"<- stream ended (OK) after {len(messages)} message(s)")
        return messages, None

    def status_of(self, what: str, call: Callable[[], object]) -> StatusOutcome | None:
        """Run ``call``; the non-OK status it ended with, or None if it succeeded."""
        try:
            call()
        except GrpcStatusError as exc:
            self.event(f"<- {what}: status {exc.code}: {exc.details}")
            return StatusOutcome(exc.code, exc.details)
        return None

    def health(self, worker_id: str = "") -> pb.HealthResponse:
        self.event(f"-> Health worker_id={worker_id!r}")
        reply = self._guard(
            "Health", lambda: self.bridge.health(worker_id, timeout=self.remaining())
        )
        self.event(f"<- {short(str(reply).replace(chr(10), ' '))}")
        return reply

    def get_info(
        self, *, include_capabilities: bool = True, include_stats: bool = True
    ) -> pb.InfoResponse:
        self.event(f"-> GetInfo capabilities={include_capabilities} stats={include_stats}")
        reply = self._guard(
            "GetInfo",
            lambda: self.bridge.get_info(
                include_capabilities=include_capabilities,
                include_stats=include_stats,
                timeout=self.remaining(),
            ),
        )
        self.event(f"<- {short(str(reply).replace(chr(10), ' '))}")
        return reply

    def health_v1(self, service: str = "") -> str:
        self.event(f"-> grpc.health.v1.Health/Check service={service!r}")
        status = self._guard(
            "grpc.health.v1 Check", lambda: self.bridge.health_v1(service, timeout=self.remaining())
        )
        self.event(f"<- {status}")
        return status

    def supported_commands(self) -> set[str]:
        """GetInfo's command list; empty (with a note) when GetInfo itself fails,
        which ``grpc.info.commands`` reports on its own."""
        try:
            info = self.bridge.get_info(
                include_capabilities=False, include_stats=False, timeout=self.remaining()
            )
        except GrpcStatusError as exc:
            self.note(f"GetInfo failed ({exc.code}); assuming no optional commands")
            return set()
        return set(info.supported_commands)

    @staticmethod
    def decode(entries: Mapping[str, bytes]) -> dict[str, Any]:
        """Map values as JSON; a non-JSON value as its UTF-8 text, else raw bytes.

        Lenient on purpose: a bridge that sends bare (unquoted) strings fails
        ``grpc.values.json-results`` alone, not every case that reads a result.
        """
        decoded = decode_map(entries)
        for key, value in decoded.items():
            if isinstance(value, bytes):
                with contextlib.suppress(UnicodeDecodeError):
                    decoded[key] = value.decode("utf-8")
        return decoded


class GrpcDriver(SharedBridgeDriver[GrpcBridge]):
    """Starts gRPC bridges (or connects to ``--target``) and hands out case contexts."""

    kind = "grpc"
    no_bridge = "no gRPC bridge: put its command after `--` or give --target"

    def __init__(self, settings: RunSettings, stop: threading.Event | None = None) -> None:
        super().__init__(settings, stop)
        self._own: dict[int, GrpcBridge] = {}

    def _new_bridge(self) -> GrpcBridge:
        if self.stop.is_set():
            raise KeyboardInterrupt
        if self.settings.bridge_cmd:
            # §8.2 allows 10 s for the ready line, whatever the case deadline.
            return GrpcBridge(
                self.settings.bridge_cmd,
                startup_timeout=max(DEFAULT_STARTUP_TIMEOUT, self.settings.timeout),
            )
        return GrpcBridge(target=self.settings.target, startup_timeout=self.settings.timeout)

    def _start(self, bridge: GrpcBridge) -> GrpcBridge:
        return self._started("bridge", bridge.start, bridge.close)

    def acquire(self, case: Case, deadline: float) -> GrpcCaseContext:
        if case.bridge is not BridgeUse.SHARED:
            if not self.settings.bridge_cmd:
                raise CaseSkipped("needs a bridge process of its own; --target was given")
            bridge = self._new_bridge()
            if case.bridge is BridgeUse.FRESH:
                self._start(bridge)
            ctx = GrpcCaseContext(case, self.settings, deadline, bridge)
            self._own[id(ctx)] = bridge
            return ctx
        shared = self._shared_bridge(
            lambda bridge: bridge.has_process and bridge.poll() is not None,
            lambda: self._start(self._new_bridge()),
        )
        return GrpcCaseContext(case, self.settings, deadline, shared)

    def release(self, ctx: CaseContext, verdict: Verdict) -> None:
        assert isinstance(ctx, GrpcCaseContext)
        own = self._own.pop(id(ctx), None)
        if own is not None:
            own.close()
            return
        if verdict.meaning.poisons_bridge:
            self._poisoned(ctx.bridge)

    def close(self) -> None:
        self._close_shared()
        for bridge in list(self._own.values()):
            bridge.close()
        self._own.clear()

    def stderr_tail(self, ctx: CaseContext) -> bytes:
        assert isinstance(ctx, GrpcCaseContext)
        return ctx.bridge.stderr_tail()

    def reproduction(self, ctx: CaseContext) -> list[str]:
        return [
            f"snakepit-harness conformance --transport grpc --profile grpc "
            f"--case {ctx.case.id} {self._where()}"
        ]


DRIVER = GrpcDriver
