"""The six RPCs of ``snakepit.SnakepitBridge`` over one command handler (PROTOCOL §8.4-§8.8).

:class:`BridgeServicer` runs commands for ``Execute[InSession]`` and
``ExecuteStream``/``ExecuteInSessionStream``, keeps the counters that
``Health`` and ``GetInfo`` report, and bounds calls by ``timeout_ms``;
:func:`generic_handler` routes the RPCs to it without generated stub code.
How results, failures and map values look on the wire is
:mod:`snakepit_bridge.grpc_values`; the server and the command line are
:mod:`snakepit_bridge.grpc_bridge`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NoReturn

from snakepit_harness.protocol import DEFAULT_MAX_FRAME_SIZE

from .adapter import BadRequestError, BaseCommandHandler, SerializationError
from .grpc_commands import BRIDGE_VERSION, UNBOUNDED, CallScope, enter_call, leave_call
from .grpc_values import Failure, decode_map, encode_map, failure_from, is_stream

if TYPE_CHECKING:
    import grpc

    from snakepit_harness.protos import snakepit_pb2 as pb

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "SERVICE_NAME",
    "TIMED_CALL_THREADS",
    "BridgeServicer",
    "decode_map",  # how the servicer reads args: a broken sample bridge replaces it
    "generic_handler",
]

SERVICE_NAME: Final = "snakepit.SnakepitBridge"

# §8.9 asks for at least 16 MiB; a 16 MiB value plus its map framing is a bit
# more, and echoing it back needs the same room on the way out.  The stdio
# bridges' default frame limit is the same.
DEFAULT_MAX_MESSAGE_SIZE: Final = DEFAULT_MAX_FRAME_SIZE

# Unary calls with timeout_ms run here so the RPC can give up on a command
# that overruns; a command that ignores cancellation keeps its thread until it
# returns, so the pool is small and bounded.
TIMED_CALL_THREADS: Final = 8


@dataclass
class _StreamCall:
    """One stream call's request, as the producer needs it."""

    command: str
    timeout_ms: int
    args: dict[str, Any]
    session_id: str | None
    scope: CallScope = field(init=False)

    def __post_init__(self) -> None:
        deadline = time.monotonic() + self.timeout_ms / 1000 if self.timeout_ms > 0 else None
        self.scope = CallScope(deadline)


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

    def _session_cleared(self, command: str, session_id: str | None) -> None:
        if session_id is not None and command == "clear_session":
            with self._lock:
                self.sessions.discard(session_id)

    # -- running commands

    def _args(
        self, request: pb.ExecuteRequest | pb.SessionRequest, session_id: str | None
    ) -> dict[str, Any]:
        """The request's ``args``, decoded (§8.3), with ``session_id`` for session calls (§8.6)."""
        args = decode_map(request.args)
        if session_id is not None:
            args["session_id"] = session_id
            with self._lock:
                self.sessions.add(session_id)
        return args

    def _call(self, command: str, args: dict[str, Any], scope: CallScope) -> Any:
        """Run ``command`` inside ``scope``; any exception becomes a :class:`Failure`."""
        token = enter_call(scope)
        try:
            return self.handler.process_command(command, args)
        except Exception as exc:
            raise failure_from(exc) from None
        finally:
            leave_call(token)

    @staticmethod
    def _encoded(result: Any) -> dict[str, bytes]:
        """``result`` as a map; a value JSON cannot carry is a :class:`Failure`."""
        try:
            return encode_map(result)
        except SerializationError as exc:
            raise failure_from(exc) from None

    def _deadline_exceeded(
        self, context: grpc.ServicerContext, what: str, command: str, timeout_ms: int
    ) -> NoReturn:
        """Count the call as failed and end it with DEADLINE_EXCEEDED (``timeout_ms``, §8.7)."""
        import grpc

        self._count(failed=True)
        context.abort(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"{what} {command!r} did not finish within timeout_ms={timeout_ms}",
        )

    def _result_map(self, command: str, args: dict[str, Any], scope: CallScope) -> dict[str, bytes]:
        """Run a unary command; its encoded result, or raise :class:`Failure`."""
        result = self._call(command, args, scope)
        if is_stream(result):
            with contextlib.suppress(Exception):
                result.close()
            raise failure_from(
                BadRequestError(f"{command!r} is a streaming command: call ExecuteStream")
            )
        return self._encoded(result)

    def _unary(
        self,
        request: pb.ExecuteRequest | pb.SessionRequest,
        context: grpc.ServicerContext,
        session_id: str | None,
    ) -> pb.ExecuteResponse:
        command, timeout_ms, request_id = request.command, request.timeout_ms, request.request_id
        args = self._args(request, session_id)
        try:
            if timeout_ms > 0:
                result = self._timed(command, args, timeout_ms, context)
            else:
                result = self._result_map(command, args, UNBOUNDED)
        except Failure as failure:
            self._count(failed=True)
            return self.pb.ExecuteResponse(
                success=False,
                error=failure.message,
                result=failure.details,
                timestamp=time.time_ns(),
                request_id=request_id,
            )
        except TimeoutError:
            self._deadline_exceeded(context, "command", command, timeout_ms)
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
        """The messages of one stream call, numbered; a failure is the final message (§8.5)."""
        request_id = request.request_id
        call = _StreamCall(
            request.command, request.timeout_ms, self._args(request, session_id), session_id
        )
        context.add_callback(call.scope.cancel)
        index = 0
        with contextlib.closing(self._stream_chunks(call, context)) as chunks:
            try:
                for chunk, final in chunks:
                    yield self._stream_message(index, chunk, request_id, final=final)
                    index += 1
            except Failure as failure:
                self._count(failed=True)
                yield self._stream_message(
                    index, failure.details, request_id, final=True, error=failure.message
                )

    def _stream_chunks(
        self, call: _StreamCall, context: grpc.ServicerContext
    ) -> Generator[tuple[dict[str, bytes], bool], None, None]:
        """(chunk, is_final) pairs of one stream call; a failure raises :class:`Failure`.

        A non-streaming command gives one final chunk with its result.  A
        generator's items are data chunks and its return value the final one;
        it is stopped and closed when the client goes away or the deadline
        passes (then the call ends without a final message, or with
        DEADLINE_EXCEEDED).
        """
        command, scope = call.command, call.scope
        result = self._call(command, call.args, scope)
        if not is_stream(result):
            if scope.expired:  # a one-shot command that overran timeout_ms
                self._deadline_exceeded(context, "command", command, call.timeout_ms)
            chunk = self._encoded(result)
            self._count(failed=False)
            self._session_cleared(command, call.session_id)
            yield chunk, True
            return
        try:
            while True:
                if scope.expired:
                    self._deadline_exceeded(context, "stream", command, call.timeout_ms)
                if scope.cancelled or not context.is_active():
                    self._count(failed=True)
                    return  # the client went away: stop producing
                token = enter_call(scope)
                try:
                    item = next(result)
                except StopIteration as stop:
                    final_chunk = stop.value
                    break
                except Exception as exc:
                    raise failure_from(exc) from None
                finally:
                    leave_call(token)
                yield self._encoded(item), False
            if scope.expired:
                self._deadline_exceeded(context, "stream", command, call.timeout_ms)
            try:
                final = encode_map(final_chunk) if final_chunk is not None else {}
            except SerializationError:
                final = {}  # the data went out; an unencodable summary is left out
            self._count(failed=False)
            yield final, True
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
