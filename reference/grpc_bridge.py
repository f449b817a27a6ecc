"""The gRPC reference bridge (PROTOCOL.md §8): any adapter, served over gRPC.

``snakepit-grpc-bridge`` (or ``python -m snakepit_bridge.grpc_bridge``) serves
``snakepit.SnakepitBridge`` on 127.0.0.1 (``--host`` to change), prints
``GRPC_SERVER_READY_ON_PORT=<port>`` once the server is serving, and exits 0 on
SIGTERM/SIGINT.  Commands come from an adapter (a
:class:`~snakepit_bridge.BaseCommandHandler`, ``--adapter module:Class``); the
default, :class:`StreamingTestHandler`, is the generic command set plus the
streaming and timing test commands the conformance suite uses
(:class:`StreamingCommands`, which :func:`serve` also adds to any adapter that
lacks them, since §8.5 asks every gRPC bridge for ``ping_stream``).

How commands map onto the RPCs:

- ``args`` map values are decoded one by one as UTF-8 JSON; a value that is not
  JSON is handed to the command as raw ``bytes`` (§8.3).  A dict result becomes
  the ``result`` map (each value JSON-encoded, raw ``bytes`` values passed
  through), any other result the single entry ``result``.
- A command that returns an iterator (a generator) is a *streaming* command:
  ``ExecuteStream`` sends each item as a data chunk and the generator's return
  value (``return {...}``) as the final chunk.  ``Execute`` on a streaming
  command is a ``bad_request`` failure.  A non-streaming command answers
  ``ExecuteStream`` with one final message carrying its result (§8.5).
- Failures give ``success=false`` / a final message with ``error`` set; the
  ``result``/``chunk`` map then carries ``error_type`` (the §4.2 vocabulary),
  since the proto has no field for it.
- ``ExecuteInSession[Stream]`` puts ``session_id`` into ``args`` (the request
  field wins over an ``args`` entry), so session-aware commands such as the
  enhanced store scope their state by it (§8.6).  A session counts as active in
  ``GetInfo`` stats from its first call until ``clear_session`` succeeds in it.
- ``timeout_ms`` (> 0) bounds the call: a unary command runs on a small pool
  and the RPC fails with ``DEADLINE_EXCEEDED`` when it overruns (the command
  itself is told through :func:`current_call` and stops if it cooperates); a
  stream is checked between chunks.  Calls without ``timeout_ms`` run inline on
  the server thread: the lean path the load tests measure.
- When a client cancels a stream, or its deadline passes, the producer is
  stopped: the bridge stops pulling from the generator and closes it, and
  cooperative waits (:meth:`CallScope.wait`) wake at once.

Spec decisions (where §8 leaves room): raw bytes pass through untouched as
whole map entries; ``bytes`` nested inside a result (``echo`` of a raw
argument) are sent as their UTF-8 text when they are text, and binary ones
give ``serialization_error``, since the entry must be JSON; a stream's data
and final messages all echo the ``request_id``; unknown command-line options
are ignored with a warning (pool launchers add their own, e.g. Snakepit's
``--snakepit-run-id``).
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import json
import os
import platform
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Generator, Iterator, Mapping
from concurrent import futures
from types import FrameType
from typing import TYPE_CHECKING, Any, ClassVar, Final

from snakepit_bridge import (
    BadRequestError,
    BaseCommandHandler,
    GenericCommandHandler,
    SerializationError,
)
from snakepit_bridge.bridge_cli import AdapterLoadError, load_adapter

if TYPE_CHECKING:
    import grpc

    from snakepit_harness.protos import snakepit_pb2 as pb

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "READY_PREFIX",
    "BridgeServicer",
    "CallScope",
    "RunningServer",
    "StreamingCommands",
    "StreamingTestHandler",
    "current_call",
    "decode_value",
    "encode_map",
    "generic_handler",
    "main",
    "serve",
]

READY_PREFIX: Final = "GRPC_SERVER_READY_ON_PORT="
SERVICE_NAME: Final = "snakepit.SnakepitBridge"
BRIDGE_VERSION: Final = "1.0.0"

# §8.9 asks for at least 16 MiB; a 16 MiB value plus its map framing is a bit
# more, and echoing it back needs the same room on the way out.  64 MiB matches
# the stdio bridges' default frame limit.
DEFAULT_MAX_MESSAGE_SIZE: Final = 64 * 1024 * 1024

# Server threads: ThreadPoolExecutor creates them only when all are busy, so a
# sequential client uses one or two; the cap bounds concurrent RPCs (each open
# stream holds one) on a small machine.
SERVER_THREADS: Final = 32

# Unary calls with timeout_ms run here so the RPC can give up on a command
# that overruns; a command that ignores cancellation keeps its thread until it
# returns, so the pool is small and bounded.
TIMED_CALL_THREADS: Final = 8
PRESTARTED_SERVER_THREADS: Final = 2

# SIGTERM: let in-flight RPCs finish for this long, then cancel them; well
# inside the 5 s of §8.10.
SHUTDOWN_GRACE_SECONDS: Final = 1.0
SHUTDOWN_WAIT_SECONDS: Final = 2.0

_JSON_SEPARATORS: Final = (",", ":")


# -- values (§8.3) -------------------------------------------------------------


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def decode_value(raw: bytes) -> Any:
    """One map value: its JSON meaning, or the raw bytes when it is not JSON."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return bytes(raw)


def decode_map(entries: Mapping[str, bytes]) -> dict[str, Any]:
    return {key: decode_value(value) for key, value in entries.items()}


def _nested_bytes_as_text(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise TypeError("binary bytes nested inside a result cannot be JSON") from None
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encode_value(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    try:
        text = json.dumps(
            value,
            allow_nan=False,
            ensure_ascii=False,
            separators=_JSON_SEPARATORS,
            default=_nested_bytes_as_text,
        )
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"result is not JSON-encodable: {exc}") from None
    return text.encode("utf-8")


def encode_map(result: Any) -> dict[str, bytes]:
    """A command's result as a ``map<string, bytes>`` (a non-dict is the entry ``result``)."""
    if isinstance(result, Mapping) and all(isinstance(key, str) for key in result):
        return {key: _encode_value(value) for key, value in result.items()}
    return {"result": _encode_value(result)}


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


_UNBOUNDED: Final = CallScope()
_CURRENT_CALL: contextvars.ContextVar[CallScope] = contextvars.ContextVar(
    "snakepit_grpc_call", default=_UNBOUNDED
)


def current_call() -> CallScope:
    """The scope of the gRPC call running this command (an unbounded one elsewhere)."""
    return _CURRENT_CALL.get()


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
        count = _bounded_number(args, "count", 5, int, self.MAX_STREAM_COUNT)
        interval = _bounded_number(args, "interval", 0.0, float, self.MAX_SLEEP_SECONDS)
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
        after = _bounded_number(args, "after", 1, int, self.MAX_STREAM_COUNT)

        def chunks() -> Iterator[dict[str, Any]]:
            for number in range(after):
                yield {"chunk": number}
            raise RuntimeError(f"fail_stream failed after {after} chunks, as asked")

        return self._track(chunks(), current_call())

    def sleep(self, args: dict[str, Any]) -> dict[str, Any]:
        seconds = _bounded_number(args, "seconds", 1.0, float, self.MAX_SLEEP_SECONDS)
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


def _bounded_number(
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


# -- the servicer --------------------------------------------------------------


class _Failure(Exception):
    """A command failed: carries what goes into ``error`` and the result/chunk map."""

    def __init__(self, message: str, details: dict[str, bytes]) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


def _failure_from(exc: BaseException) -> _Failure:
    error_type = getattr(exc, "error_type", None)
    message = str(exc) or type(exc).__name__
    details: dict[str, Any]
    if isinstance(error_type, str) and error_type:
        details = {"error_type": error_type}
    else:
        details = {
            "error_type": "handler_error",
            "exception": type(exc).__name__,
            "traceback": "".join(traceback.format_exception(exc)),
        }
    return _Failure(message, encode_map(details))


def _is_stream(result: Any) -> bool:
    return isinstance(result, Iterator) and not isinstance(result, str | bytes | Mapping)


class BridgeServicer:
    """The six RPCs of ``snakepit.SnakepitBridge`` over one command handler.

    Broken sample bridges (``fixtures/grpc_bridges/``) subclass this and
    override one method each, so keep the seams: ``_unary``, ``_stream``,
    ``_stream_message``, ``Health``, ``GetInfo``.
    """

    def __init__(
        self,
        handler: BaseCommandHandler,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        worker_type: str | None = None,
    ) -> None:
        from snakepit_harness.protos import snakepit_pb2

        self.pb = snakepit_pb2
        self.handler = handler
        self.max_message_size = max_message_size
        self.worker_type = worker_type or getattr(handler, "bridge_name", "snakepit-grpc-bridge")
        self.version = str(getattr(handler, "bridge_version", BRIDGE_VERSION))
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self.total_requests = 0
        self.total_errors = 0
        self.sessions: set[str] = set()
        self.timed_pool = futures.ThreadPoolExecutor(
            TIMED_CALL_THREADS, thread_name_prefix="timed-command"
        )

    # -- bookkeeping

    def uptime_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def _count(self, failed: bool) -> None:
        with self._lock:
            self.total_requests += 1
            if failed:
                self.total_errors += 1

    def _session_args(self, args: dict[str, Any], session_id: str) -> None:
        args["session_id"] = session_id
        with self._lock:
            self.sessions.add(session_id)

    def _session_cleared(self, command: str, session_id: str | None) -> None:
        if session_id is not None and command == "clear_session":
            with self._lock:
                self.sessions.discard(session_id)

    # -- running commands

    def _call(self, command: str, args: dict[str, Any], scope: CallScope) -> Any:
        token = _CURRENT_CALL.set(scope)
        try:
            return self.handler.process_command(command, args)
        finally:
            _CURRENT_CALL.reset(token)

    def _result_map(self, command: str, args: dict[str, Any], scope: CallScope) -> dict[str, bytes]:
        """Run a unary command; its encoded result, or raise _Failure."""
        try:
            result = self._call(command, args, scope)
        except Exception as exc:
            raise _failure_from(exc) from None
        if _is_stream(result):
            with contextlib.suppress(Exception):
                result.close()
            raise _failure_from(
                BadRequestError(f"{command!r} is a streaming command: call ExecuteStream")
            )
        try:
            return encode_map(result)
        except SerializationError as exc:
            raise _failure_from(exc) from None

    def _unary(
        self,
        request: pb.ExecuteRequest | pb.SessionRequest,
        context: grpc.ServicerContext,
        session_id: str | None,
    ) -> pb.ExecuteResponse:
        import grpc

        command, timeout_ms, request_id = request.command, request.timeout_ms, request.request_id
        args = decode_map(request.args)
        if session_id is not None:
            self._session_args(args, session_id)
        try:
            if timeout_ms > 0:
                result = self._timed(command, args, timeout_ms, context)
            else:
                result = self._result_map(command, args, _UNBOUNDED)
        except _Failure as failure:
            self._count(failed=True)
            return self.pb.ExecuteResponse(
                success=False,
                error=failure.message,
                result=failure.details,
                timestamp=time.time_ns(),
                request_id=request_id,
            )
        except TimeoutError:
            self._count(failed=True)
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"command {command!r} did not finish within timeout_ms={timeout_ms}",
            )
        self._count(failed=False)
        self._session_cleared(command, session_id)
        return self.pb.ExecuteResponse(
            success=True, result=result, timestamp=time.time_ns(), request_id=request_id
        )

    def _timed(
        self, command: str, args: dict[str, Any], timeout_ms: int, context: grpc.ServicerContext
    ) -> dict[str, bytes]:
        scope = CallScope(time.monotonic() + timeout_ms / 1000)
        context.add_callback(scope.cancel)
        future = self.timed_pool.submit(self._result_map, command, args, scope)
        try:
            result = future.result(timeout=timeout_ms / 1000)
        except futures.TimeoutError:
            scope.cancel()
            raise TimeoutError from None
        if scope.expired:  # a cooperative command cut short by the deadline
            raise TimeoutError
        return result

    def _stream_message(
        self,
        index: int,
        chunk: Mapping[str, bytes],
        request_id: str,
        *,
        final: bool,
        error: str = "",
    ) -> pb.StreamResponse:
        return self.pb.StreamResponse(
            is_final=final,
            chunk=chunk,
            error=error,
            timestamp=time.time_ns(),
            request_id=request_id,
            chunk_index=index,
        )

    def _stream(
        self,
        request: pb.ExecuteRequest | pb.SessionRequest,
        context: grpc.ServicerContext,
        session_id: str | None,
    ) -> Iterator[pb.StreamResponse]:
        import grpc

        command, timeout_ms, request_id = request.command, request.timeout_ms, request.request_id
        args = decode_map(request.args)
        if session_id is not None:
            self._session_args(args, session_id)
        scope = CallScope(time.monotonic() + timeout_ms / 1000 if timeout_ms > 0 else None)
        context.add_callback(scope.cancel)
        try:
            result = self._call(command, args, scope)
        except Exception as exc:
            failure = _failure_from(exc)
            self._count(failed=True)
            yield self._stream_message(
                0, failure.details, request_id, final=True, error=failure.message
            )
            return
        if not _is_stream(result):
            if scope.expired:  # a one-shot command that overran timeout_ms
                self._count(failed=True)
                context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"command {command!r} did not finish within timeout_ms={timeout_ms}",
                )
            try:
                chunk = encode_map(result)
            except SerializationError as exc:
                failure = _failure_from(exc)
                self._count(failed=True)
                yield self._stream_message(
                    0, failure.details, request_id, final=True, error=failure.message
                )
                return
            self._count(failed=False)
            self._session_cleared(command, session_id)
            yield self._stream_message(0, chunk, request_id, final=True)
            return
        index = 0
        final_chunk: Any = None
        try:
            while True:
                if scope.expired:
                    self._count(failed=True)
                    context.abort(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"stream {command!r} did not finish within timeout_ms={timeout_ms}",
                    )
                if scope.cancelled or not context.is_active():
                    self._count(failed=True)
                    return  # the client went away: stop producing
                token = _CURRENT_CALL.set(scope)
                try:
                    item = next(result)
                except StopIteration as stop:
                    final_chunk = stop.value
                    break
                except Exception as exc:
                    failure = _failure_from(exc)
                    self._count(failed=True)
                    yield self._stream_message(
                        index, failure.details, request_id, final=True, error=failure.message
                    )
                    return
                finally:
                    _CURRENT_CALL.reset(token)
                try:
                    chunk = encode_map(item)
                except SerializationError as exc:
                    failure = _failure_from(exc)
                    self._count(failed=True)
                    yield self._stream_message(
                        index, failure.details, request_id, final=True, error=failure.message
                    )
                    return
                yield self._stream_message(index, chunk, request_id, final=False)
                index += 1
            if scope.expired:
                self._count(failed=True)
                context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"stream {command!r} did not finish within timeout_ms={timeout_ms}",
                )
            try:
                final = encode_map(final_chunk) if final_chunk is not None else {}
            except SerializationError:
                final = {}
            self._count(failed=False)
            yield self._stream_message(index, final, request_id, final=True)
        finally:
            # Closing the generator runs its finally blocks now, not at GC time.
            close: Callable[[], object] | None = getattr(result, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    # -- the RPCs (names as in the proto)

    def Execute(  # noqa: N802 - the proto's method name
        self, request: pb.ExecuteRequest, context: grpc.ServicerContext
    ) -> pb.ExecuteResponse:
        return self._unary(request, context, None)

    def ExecuteInSession(  # noqa: N802
        self, request: pb.SessionRequest, context: grpc.ServicerContext
    ) -> pb.ExecuteResponse:
        return self._unary(request, context, request.session_id)

    def ExecuteStream(  # noqa: N802
        self, request: pb.ExecuteRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StreamResponse]:
        return self._stream(request, context, None)

    def ExecuteInSessionStream(  # noqa: N802
        self, request: pb.SessionRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StreamResponse]:
        return self._stream(request, context, request.session_id)

    def Health(  # noqa: N802
        self, request: pb.HealthRequest, context: grpc.ServicerContext
    ) -> pb.HealthResponse:
        with self._lock:
            total, errors = self.total_requests, self.total_errors
        return self.pb.HealthResponse(
            healthy=True,
            worker_id=request.worker_id,
            uptime_ms=self.uptime_ms(),
            total_requests=total,
            total_errors=errors,
            version=self.version,
        )

    def GetInfo(  # noqa: N802
        self, request: pb.InfoRequest, context: grpc.ServicerContext
    ) -> pb.InfoResponse:
        response = self.pb.InfoResponse(
            worker_type=self.worker_type,
            version=self.version,
            supported_commands=self.handler.get_supported_commands(),
            system_info=_system_info(),
        )
        if request.include_capabilities:
            response.capabilities.update(self.capabilities())
        if request.include_stats:
            with self._lock:
                total, errors, sessions = (
                    self.total_requests,
                    self.total_errors,
                    len(self.sessions),
                )
            response.stats.CopyFrom(
                self.pb.WorkerStats(
                    requests_handled=total,
                    requests_failed=errors,
                    uptime_ms=self.uptime_ms(),
                    memory_usage_bytes=_rss_bytes(),
                    cpu_usage_percent=self._cpu_percent(),
                    active_sessions=sessions,
                )
            )
        return response

    def capabilities(self) -> dict[str, str]:
        return {
            "streaming": "true",
            "sessions": "true",
            "value_encoding": "json",
            "raw_bytes": "true",
            "timeout_ms": "true",
            "grpc_health_v1": "true",
            "max_message_size": str(self.max_message_size),
            "bridge_type": str(getattr(self.handler, "bridge_type", "custom")),
        }

    def _cpu_percent(self) -> float:
        elapsed = time.monotonic() - self.started
        times = os.times()
        return 100.0 * (times.user + times.system) / elapsed if elapsed > 0 else 0.0

    def close(self) -> None:
        self.timed_pool.shutdown(wait=False, cancel_futures=True)


def _rss_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        # Peak, not current, where /proc is missing (macOS reports bytes, Linux KiB).
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _system_info() -> dict[str, str]:
    return {
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "pid": str(os.getpid()),
    }


def generic_handler(servicer: BridgeServicer) -> grpc.GenericRpcHandler[Any, Any]:
    """Route the six RPCs to ``servicer`` (no generated stub code on the hot path)."""
    import grpc

    pb = servicer.pb
    unary = grpc.unary_unary_rpc_method_handler
    streaming = grpc.unary_stream_rpc_method_handler
    table = {
        "Execute": unary(
            servicer.Execute, pb.ExecuteRequest.FromString, pb.ExecuteResponse.SerializeToString
        ),
        "ExecuteStream": streaming(
            servicer.ExecuteStream,
            pb.ExecuteRequest.FromString,
            pb.StreamResponse.SerializeToString,
        ),
        "ExecuteInSession": unary(
            servicer.ExecuteInSession,
            pb.SessionRequest.FromString,
            pb.ExecuteResponse.SerializeToString,
        ),
        "ExecuteInSessionStream": streaming(
            servicer.ExecuteInSessionStream,
            pb.SessionRequest.FromString,
            pb.StreamResponse.SerializeToString,
        ),
        "Health": unary(
            servicer.Health, pb.HealthRequest.FromString, pb.HealthResponse.SerializeToString
        ),
        "GetInfo": unary(
            servicer.GetInfo, pb.InfoRequest.FromString, pb.InfoResponse.SerializeToString
        ),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, table)


# -- the server ----------------------------------------------------------------


class RunningServer:
    """A started server: its port, and how to stop it."""

    def __init__(self, server: grpc.Server, servicer: BridgeServicer, health: Any, port: int):
        self.server = server
        self.servicer = servicer
        self.health = health
        self.port = port

    def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        with contextlib.suppress(Exception):
            self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait(SHUTDOWN_WAIT_SECONDS)
        self.servicer.close()


def _prestart_workers(pool: futures.ThreadPoolExecutor, count: int) -> None:
    """Make ``pool`` start ``count`` workers now (tasks that wait for each other).

    A sequential client settles on two server threads: the next call often
    arrives before the thread that sent the last answer is idle again.  Starting
    them before the ready line means the thread count seen by a client (or a
    leak check) is the steady one from the first call on.
    """
    barrier = threading.Barrier(count)
    for done in [pool.submit(barrier.wait, 5.0) for _ in range(count)]:
        done.result()


def server_options(max_message_size: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_size),
        ("grpc.max_send_message_length", max_message_size),
        # Without this a second server could silently share an explicit --port.
        ("grpc.so_reuseport", 0),
    ]


def serve(
    handler: BaseCommandHandler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    servicer_class: type[BridgeServicer] = BridgeServicer,
) -> RunningServer:
    """Start serving ``handler``; returns once the server accepts calls."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    StreamingCommands().install(handler)  # ping_stream & co. for adapters without them
    servicer = servicer_class(handler, max_message_size=max_message_size)
    pool = futures.ThreadPoolExecutor(SERVER_THREADS, thread_name_prefix="grpc-server")
    server = grpc.server(pool, options=server_options(max_message_size))
    server.add_generic_rpc_handlers((generic_handler(servicer),))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    _prestart_workers(pool, PRESTARTED_SERVER_THREADS)
    _prestart_workers(servicer.timed_pool, 1)
    return RunningServer(server, servicer, health_servicer, bound)


# -- command line --------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snakepit-grpc-bridge",
        description="Serve a Snakepit adapter over gRPC (PROTOCOL.md §8).",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 = any free port")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--adapter",
        default=None,
        metavar="MODULE:CLASS",
        help="command handler class (default: generic commands plus streaming test commands)",
    )
    parser.add_argument(
        "--max-message-size",
        type=int,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        metavar="BYTES",
        help=f"largest message sent or received (default {DEFAULT_MAX_MESSAGE_SIZE})",
    )
    parser.add_argument("--quiet", action="store_true", help="no informational stderr lines")
    return parser


def main(
    argv: list[str] | None = None,
    *,
    servicer_class: type[BridgeServicer] = BridgeServicer,
    default_adapter: type[BaseCommandHandler] = StreamingTestHandler,
    stop_signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> int:
    """Run the bridge until a stop signal; returns the exit status.

    ``servicer_class``, ``default_adapter`` and ``stop_signals`` are seams for
    the broken sample bridges in ``fixtures/grpc_bridges/``.
    """
    args, unknown = make_parser().parse_known_args(argv)
    if unknown and not args.quiet:
        print(f"snakepit-grpc-bridge: ignoring options {unknown}", file=sys.stderr)
    if not 0 <= args.port <= 65535:
        print(f"snakepit-grpc-bridge: --port {args.port} is not a TCP port", file=sys.stderr)
        return 2
    # Only the ready line may reach stdout: adapter prints go to stderr.
    ready_out = sys.stdout
    sys.stdout = sys.stderr
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in stop_signals:
        signal.signal(sig, on_signal)
    try:
        adapter = load_adapter(args.adapter) if args.adapter else default_adapter
        running = serve(
            adapter(),
            host=args.host,
            port=args.port,
            max_message_size=args.max_message_size,
            servicer_class=servicer_class,
        )
    except AdapterLoadError as exc:
        print(f"snakepit-grpc-bridge: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"snakepit-grpc-bridge: {exc}", file=sys.stderr)
        return 1
    ready_out.write(f"{READY_PREFIX}{running.port}\n")
    ready_out.flush()
    if not args.quiet:
        print(
            f"snakepit-grpc-bridge: serving {adapter.__name__} on {args.host}:{running.port}",
            file=sys.stderr,
        )
    while not stop.wait(0.5):
        pass
    running.stop()
    sys.stderr.flush()
    main_thread = threading.main_thread()
    if any(t is not main_thread and t.is_alive() for t in threading.enumerate()):
        # A command that ignores cancellation would hold interpreter exit
        # hostage (concurrent.futures joins every worker at exit, daemon or
        # not); §8.10 wants us gone, and everything worth flushing is flushed.
        sys.stdout.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
