"""What a command sees of its gRPC call, and the commands every gRPC bridge offers (§8.5, §8.7).

:class:`CallScope` is a running call's deadline (``timeout_ms``) and
cancellation, which a command reads through :func:`current_call` and waits on
cooperatively.  :class:`StreamingCommands` are the streaming and timing
commands the conformance suite uses (``ping_stream``, ``fail_stream``,
``sleep``, ``stream_stats``), installable on any adapter;
:class:`StreamingTestHandler` is the gRPC bridge's default adapter.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Generator, Iterator, Mapping
from typing import Any, ClassVar, Final

from .adapter import BadRequestError, BaseCommandHandler
from .generic import GenericCommandHandler

__all__ = [
    "BRIDGE_VERSION",
    "UNBOUNDED",
    "CallScope",
    "StreamingCommands",
    "StreamingTestHandler",
    "bounded_number",
    "current_call",
    "enter_call",
    "leave_call",
]

BRIDGE_VERSION: Final = "1.0.0"

# -- call scope: deadlines and cancellation seen from inside a command ----------


class CallScope:
    """The running call's deadline and cancellation, for commands that cooperate."""

    __slots__ = ("_cancelled", "deadline")

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline  # time.monotonic() value, or None
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set() or self.expired

    @property
    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True early when the call is cancelled or expires."""
        if self.deadline is not None:
            seconds = min(seconds, self.deadline - time.monotonic())
        if seconds > 0:
            self._cancelled.wait(seconds)
        return self.cancelled


# The scope outside any call: no deadline, never cancelled.
UNBOUNDED: Final = CallScope()
_CURRENT_CALL: contextvars.ContextVar[CallScope] = contextvars.ContextVar(
    "snakepit_grpc_call", default=UNBOUNDED
)


def current_call() -> CallScope:
    """The scope of the gRPC call running this command (an unbounded one elsewhere)."""
    return _CURRENT_CALL.get()


def enter_call(scope: CallScope) -> contextvars.Token[CallScope]:
    """Make ``scope`` what :func:`current_call` answers, until :func:`leave_call`."""
    return _CURRENT_CALL.set(scope)


def leave_call(token: contextvars.Token[CallScope]) -> None:
    """Undo the :func:`enter_call` that gave ``token``."""
    _CURRENT_CALL.reset(token)


# -- the default adapter --------------------------------------------------------


class StreamingCommands:
    """The streaming and timing commands of the gRPC suite, installable on any adapter.

    ``ping_stream {count=5, interval=0}`` yields ``count`` chunks
    ``{ping_number, message}`` (``interval`` seconds apart, §8.5);
    ``fail_stream {after=1}`` yields ``after`` chunks and then fails;
    ``sleep {seconds}`` waits (cooperatively: cancellation or ``timeout_ms``
    wakes it); ``stream_stats`` reports how many stream chunks were produced and
    how many streams were closed before their end, so a test can see that a
    cancelled stream stopped its producer.  :func:`serve` installs the ones an
    adapter lacks, since §8.5 asks every gRPC bridge for ``ping_stream``.
    """

    NAMES: ClassVar[tuple[str, ...]] = ("ping_stream", "fail_stream", "sleep", "stream_stats")

    # Bounds that keep a careless request from tying a server thread up forever.
    MAX_STREAM_COUNT: ClassVar[int] = 1_000_000
    MAX_SLEEP_SECONDS: ClassVar[float] = 300.0

    def __init__(self) -> None:
        self._stats_lock = threading.Lock()
        self.chunks_produced = 0
        self.streams_started = 0
        self.streams_completed = 0
        self.streams_closed_early = 0

    def install(self, handler: BaseCommandHandler) -> list[str]:
        """Register on ``handler`` each of these commands it does not have; return them."""
        have = set(handler.get_supported_commands())
        added = [name for name in self.NAMES if name not in have]
        for name in added:
            handler.register_command(name, getattr(self, name))
        return added

    def _bump(self, name: str) -> None:
        with self._stats_lock:
            setattr(self, name, getattr(self, name) + 1)

    def _track(
        self, chunks: Iterator[dict[str, Any]], scope: CallScope
    ) -> Iterator[dict[str, Any]]:
        self._bump("streams_started")
        finished = False
        try:
            for chunk in chunks:
                self._bump("chunks_produced")
                yield chunk
            # A producer that returned because its call was cancelled stopped early too.
            finished = not scope.cancelled
        finally:
            self._bump("streams_completed" if finished else "streams_closed_early")

    def ping_stream(self, args: dict[str, Any]) -> Generator[dict[str, Any], None, dict[str, Any]]:
        count = bounded_number(args, "count", 5, int, self.MAX_STREAM_COUNT)
        interval = bounded_number(args, "interval", 0.0, float, self.MAX_SLEEP_SECONDS)
        return self._ping_chunks(count, interval)

    def _ping_chunks(
        self, count: int, interval: float
    ) -> Generator[dict[str, Any], None, dict[str, Any]]:
        scope = current_call()
        produced = 0

        def pings() -> Iterator[dict[str, Any]]:
            nonlocal produced
            for number in range(1, count + 1):
                if number > 1 and interval > 0 and scope.wait(interval):
                    return
                produced += 1
                yield {"ping_number": number, "message": f"ping {number} of {count}"}

        yield from self._track(pings(), scope)
        return {"status": "complete", "total": produced}

    def fail_stream(self, args: dict[str, Any]) -> Iterator[dict[str, Any]]:
        after = bounded_number(args, "after", 1, int, self.MAX_STREAM_COUNT)

        def chunks() -> Iterator[dict[str, Any]]:
            for number in range(after):
                yield {"chunk": number}
            raise RuntimeError(f"fail_stream failed after {after} chunks, as asked")

        return self._track(chunks(), current_call())

    def sleep(self, args: dict[str, Any]) -> dict[str, Any]:
        seconds = bounded_number(args, "seconds", 1.0, float, self.MAX_SLEEP_SECONDS)
        began = time.monotonic()
        interrupted = current_call().wait(seconds)
        return {
            "status": "ok",
            "slept": round(time.monotonic() - began, 3),
            "interrupted": interrupted,
        }

    def stream_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        with self._stats_lock:
            return {
                "status": "ok",
                "chunks_produced": self.chunks_produced,
                "streams_started": self.streams_started,
                "streams_completed": self.streams_completed,
                "streams_closed_early": self.streams_closed_early,
            }


class StreamingTestHandler(GenericCommandHandler):
    """The default adapter: the generic commands (§6) plus :class:`StreamingCommands`."""

    bridge_type = "grpc"
    bridge_name = "snakepit-grpc-bridge"
    bridge_version = BRIDGE_VERSION

    def _register_commands(self) -> None:
        super()._register_commands()
        self.streaming = StreamingCommands()
        self.streaming.install(self)


def bounded_number(
    args: Mapping[str, Any], name: str, default: Any, kind: type, limit: float
) -> Any:
    value = args.get(name, default)
    if isinstance(value, str):  # lenient: a client that sent the number as text
        with contextlib.suppress(ValueError):
            value = float(value) if kind is float else int(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequestError(f"{name} must be a number, got {type(value).__name__}")
    if value < 0 or value > limit:
        raise BadRequestError(f"{name} must be between 0 and {limit}, got {value}")
    return kind(value)
