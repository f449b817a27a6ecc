"""The worker's ``BridgeService`` methods (§9.5-§9.11), over one adapter.

Sessions live here: the host's ``InitializeSession`` (or the first call
naming a session) opens one, ``GetSession`` and ``Heartbeat`` report it,
``CleanupSession`` closes it; the host is told once per session (see
:class:`~.host_link.HostLink`).  ``ExecuteTool`` decodes parameters from
Any-JSON, passes binary parameters as bytes (a pickled one only when the
operator allowed it), runs the tool with the call's deadline, and answers
success with the result as Any-JSON (``bytes`` in ``binary_result``) or
failure with §9.6's error JSON.  ``ExecuteStreamingTool`` sends one chunk per
value the tool yields and then exactly one final chunk; a non-streaming tool
answers with one final chunk holding its whole result; a failure ends the
stream with status INTERNAL and the error JSON as details.
"""

from __future__ import annotations

import collections
import inspect
import logging
import pickle
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from snakepit_harness.protocol import UnencodableValue
from snakepit_harness.protocol.bridge_service import (
    AnyJsonError,
    decode_any_json,
    encode_tool_result,
    tool_error_json,
)

from .adapter import BaseAdapter, ToolError
from .context import SessionContext
from .host_link import SESSIONS_KEPT, HostLink

if TYPE_CHECKING:
    import grpc

__all__ = ["BINARY_FORMAT_KEY", "WorkerServicer"]

# metadata["binary_format:<key>"] names the format of binary_parameters[key].
BINARY_FORMAT_KEY: Final = "binary_format:"
# A bytes result: binary_result holds it; result names it so.
BINARY_RESULT_TYPE_URL: Final = "type.googleapis.com/snakepit.binary"

log = logging.getLogger("snakepit_bridge.bridge_service")


class _Refused(ToolError):
    error_type = "BadParameter"


@dataclass
class _Session:
    created: float
    metadata: dict[str, str] = field(default_factory=dict)


def _error_json(exc: BaseException, tool_name: str, session_id: str) -> str:
    error_type = getattr(exc, "error_type", None) or type(exc).__name__
    stack = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return tool_error_json(
        error_type,
        str(exc) or error_type,
        stacktrace=stack,
        context={"tool_name": tool_name, "session_id": session_id},
    )


def _chunk_data(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return encode_tool_result(value)[1]


class WorkerServicer:
    """The methods ``add_BridgeServiceServicer_to_server`` routes to."""

    def __init__(
        self, adapter: BaseAdapter, link: HostLink | None, *, allow_pickle: bool = False
    ) -> None:
        from snakepit_harness.protos import snakepit_bridge_pb2

        self.pb = snakepit_bridge_pb2
        self.adapter = adapter
        self.link = link
        self.allow_pickle = allow_pickle
        self._sessions: collections.OrderedDict[str, _Session] = collections.OrderedDict()
        self._lock = threading.Lock()

    # -- sessions -----------------------------------------------------------

    def _open(self, session_id: str, deadline: float | None, metadata: Any = None) -> None:
        with self._lock:
            session = self._sessions.setdefault(session_id, _Session(time.time()))
            session.metadata.update(metadata or {})
            self._sessions.move_to_end(session_id)
            while len(self._sessions) > SESSIONS_KEPT:
                self._sessions.popitem(last=False)
        if self.link is not None:
            self.link.ensure_session(session_id, deadline)

    @staticmethod
    def _deadline(context: grpc.ServicerContext) -> float | None:
        remaining = context.time_remaining()
        return None if remaining is None else time.monotonic() + remaining

    def Ping(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        reply = self.pb.PingResponse(message=f"pong: {request.message}")
        reply.server_time.GetCurrentTime()
        return reply

    def InitializeSession(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._open(request.session_id, self._deadline(context), request.metadata)
        return self.pb.InitializeSessionResponse(success=True)

    def GetSession(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        import grpc

        with self._lock:
            session = self._sessions.get(request.session_id)
        if session is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no session {request.session_id!r}")
        assert session is not None
        reply = self.pb.GetSessionResponse(
            session_id=request.session_id,
            metadata=session.metadata,
            tool_count=len(self.adapter.tools()),
        )
        reply.created_at.FromNanoseconds(int(session.created * 1e9))
        return reply

    def CleanupSession(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        with self._lock:
            existed = self._sessions.pop(request.session_id, None) is not None
        if self.link is not None:
            self.link.forget_session(request.session_id, self._deadline(context))
        return self.pb.CleanupSessionResponse(success=True, resources_cleaned=int(existed))

    def Heartbeat(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        with self._lock:
            valid = request.session_id in self._sessions
        reply = self.pb.HeartbeatResponse(session_valid=valid)
        reply.server_time.GetCurrentTime()
        return reply

    # -- tools --------------------------------------------------------------

    def _arguments(self, request: Any) -> dict[str, Any]:
        arguments: dict[str, Any] = {}
        for key, value in request.parameters.items():
            try:
                arguments[key] = decode_any_json(value.value)
            except AnyJsonError as exc:
                raise _Refused(f"parameter {key!r} is not JSON text: {exc}") from None
        for key, data in request.binary_parameters.items():
            form = request.metadata.get(BINARY_FORMAT_KEY + key, "")
            if form == "pickle":
                if not self.allow_pickle:
                    raise _Refused(
                        f"binary parameter {key!r} is pickled; this worker does not unpickle "
                        "what it is sent (start it with --allow-pickle for a trusted host)"
                    )
                arguments[key] = pickle.loads(data)
            else:
                arguments[key] = bytes(data)
        return arguments

    def _run(self, request: Any, context: grpc.ServicerContext) -> Any:
        deadline = self._deadline(context)
        self._open(request.session_id, deadline)
        call_context = SessionContext(
            request.session_id, link=self.link, deadline=deadline, metadata=request.metadata
        )
        return self.adapter.execute_tool(request.tool_name, self._arguments(request), call_context)

    def _collect(self, produced: Any, context: grpc.ServicerContext) -> Any:
        if not inspect.isgenerator(produced):
            return produced
        items = []
        for item in produced:
            if not context.is_active():
                produced.close()
                break
            items.append(item)
        return items

    def ExecuteTool(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        began = time.monotonic()
        reply = self.pb.ExecuteToolResponse()
        try:
            result = self._collect(self._run(request, context), context)
            if isinstance(result, bytes | bytearray | memoryview):
                reply.binary_result = bytes(result)
                reply.result.type_url = BINARY_RESULT_TYPE_URL
                reply.result.value = encode_tool_result({"size": len(result)})[1]
            else:
                try:
                    type_url, value = encode_tool_result(result)
                except UnencodableValue as exc:
                    raise ToolError(
                        f"tool {request.tool_name!r} returned what JSON cannot carry: {exc}"
                    ) from None
                reply.result.type_url = type_url
                reply.result.value = value
            reply.success = True
        except Exception as exc:
            log.info("tool %s failed: %s: %s", request.tool_name, type(exc).__name__, exc)
            reply.Clear()
            reply.success = False
            reply.error_message = _error_json(exc, request.tool_name, request.session_id)
        reply.execution_time_ms = int((time.monotonic() - began) * 1000)
        return reply

    def ExecuteStreamingTool(  # noqa: N802
        self, request: Any, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        import grpc

        count = 0

        def chunk(data: bytes, final: bool) -> Any:
            nonlocal count
            count += 1
            return self.pb.ToolChunk(
                chunk_id=f"{request.tool_name}-{count}", data=data, is_final=final
            )

        produced: Any = None
        try:
            produced = self._run(request, context)
            if not inspect.isgenerator(produced):
                yield chunk(_chunk_data(produced), final=True)
                return
            for item in produced:
                if not context.is_active():
                    return  # the host cancelled, or its deadline passed
                yield chunk(_chunk_data(item), final=False)
            yield chunk(b"", final=True)
        except Exception as exc:
            log.info("streaming tool %s failed: %s", request.tool_name, exc)
            context.abort(
                grpc.StatusCode.INTERNAL, _error_json(exc, request.tool_name, request.session_id)
            )
        finally:
            if inspect.isgenerator(produced):
                produced.close()

    # Host-side methods: a worker does not serve them (§9.1).

    def _host_only(self, method: str, context: grpc.ServicerContext) -> Any:
        import grpc

        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is served by the host")

    def RegisterTools(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._host_only("RegisterTools", context)

    def GetExposedElixirTools(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._host_only("GetExposedElixirTools", context)

    def ExecuteElixirTool(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._host_only("ExecuteElixirTool", context)

    def StreamTelemetry(  # noqa: N802
        self, requests: Iterator[Any], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        self._host_only("StreamTelemetry", context)
        yield from ()
