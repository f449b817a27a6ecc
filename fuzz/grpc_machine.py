"""Stateful fuzzing of a gRPC bridge (PROTOCOL.md §8): sessions and streams.

:class:`GrpcSessions` drives one long-lived bridge through
:class:`~snakepit_harness.transports.grpc.GrpcBridge` (started, and restarted
after a crash, by :class:`GrpcTarget`) with ``Execute``, ``ExecuteInSession``,
``ExecuteStream``, ``ExecuteInSessionStream`` and ``Health`` calls in the order
hypothesis picks, checking each answer: ``request_id`` echoed (§8.4); ``echo``
returns its args whatever the session (§6.2, §8.6: the bridge may add the
``session_id`` it passes to the command); ``compute`` agrees with Python (§6.3);
streams count ``chunk_index`` 0, 1, 2, ... with exactly one final message, last
(§8.5), ``ping_stream {count}`` giving ``count`` data messages first; a
non-streaming command streamed answers with one final message (§8.5); ``Health``
stays healthy with a non-decreasing ``uptime_ms`` and ``total_requests`` (§8.7).

Values are what §8.3 can carry: JSON texts in UTF-8, so no lone surrogates, no
NaN or infinities, no bytes.  The golden-frame format is stdio only, so a
failure is saved as a transcript of the calls (JSON) with its explanation,
not as a replayable golden file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Final

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from ..errors import HarnessError, TransportError
from ..protocol import decode_map
from ..transports.grpc import DEFAULT_STARTUP_TIMEOUT, GrpcBridge
from .oracle import expected_compute, same_value
from .properties import PropertyFailed
from .strategies import OPERATIONS, numbers
from .target import Exchange, RestartingTarget
from .values import texts, values

__all__ = ["GRPC_CODEC", "GrpcSessions", "GrpcTarget", "bind_grpc_machine"]

# The strategies' name for "what a §8.3 JSON map value can carry".
GRPC_CODEC: Final = "grpc"

SESSIONS: Final = ("s1", "s\u00e9", "\U0001f40d", "")
# ping_stream counts: none, one, a few.
STREAM_COUNTS: Final = (0, 1, 2, 5)


class GrpcTarget(RestartingTarget[GrpcBridge]):
    """A gRPC bridge command line, started on demand and restarted after it breaks."""

    def __init__(self, argv: Sequence[str], *, response_timeout: float) -> None:
        self.argv = list(argv)
        self.response_timeout = response_timeout

    def ensure(self) -> GrpcBridge:
        if self._bridge is not None and self._bridge.poll() is None:
            return self._bridge
        self.discard()
        try:
            bridge = GrpcBridge(self.argv, startup_timeout=DEFAULT_STARTUP_TIMEOUT)
            bridge.start()
        except OSError as exc:
            raise HarnessError(f"cannot start the bridge {self.argv[0]!r}: {exc}") from exc
        self._bridge = bridge
        return bridge


def _args(data: st.DataObject) -> dict[str, Any]:
    return data.draw(
        st.dictionaries(texts(GRPC_CODEC, max_size=10), values(GRPC_CODEC), max_size=4),
        label="args",
    )


class GrpcSessions(RuleBasedStateMachine):
    """Sessions and streams over gRPC answer like the stdio commands, in every interleaving.

    §8.4-§8.7: request ids echoed, echo exact in and out of sessions, compute
    right, streams numbered 0, 1, 2, ... with one final message last, health
    monotone.
    """

    target: ClassVar[GrpcTarget]
    guard: ClassVar[Callable[[], None]]
    on_failure: ClassVar[Callable[[PropertyFailed], None]]

    def __init__(self) -> None:
        super().__init__()
        type(self).guard()
        self.calls: list[dict[str, Any]] = []
        self.next_id = 1
        self.last_uptime = -1
        self.last_total = -1

    # -- plumbing -------------------------------------------------------------

    def _request_id(self) -> str:
        self.next_id += 1
        return f"fuzz-{self.next_id}"

    def _fail(self, problems: list[str], stderr_tail: bytes = b"") -> None:
        failure = PropertyFailed(problems, [], Exchange([], stderr_tail=stderr_tail), GRPC_CODEC)
        failure.grpc_calls = list(self.calls)
        self.target.discard()
        type(self).on_failure(failure)
        raise failure

    def _call(self, method: str, action: Callable[[GrpcBridge], Any], **shown: Any) -> Any:
        self.calls.append({"call": method, **shown})
        try:
            return action(self.target.ensure())
        except TransportError as exc:
            self._fail([f"{method}: {type(exc).__name__}: {exc}"], exc.stderr_tail)
        except HarnessError as exc:
            self._fail([f"{method}: {exc}"])
        raise AssertionError("unreachable")  # pragma: no cover

    def _execute(
        self, command: str, args: dict[str, Any], session: str | None = None
    ) -> tuple[Any, str]:
        """``Execute`` (``ExecuteInSession`` in ``session``): the response and its request id."""
        request_id = self._request_id()
        method = "Execute" if session is None else "ExecuteInSession"
        where = {} if session is None else {"session": session}
        response = self._call(
            method,
            lambda bridge: bridge.execute(
                command,
                args,
                request_id=request_id,
                timeout=self.target.response_timeout,
                session_id=session,
            ),
            **where,
            command=command,
            args=repr(args),
        )
        return response, request_id

    def _check_unary(self, response: Any, request_id: str, command: str) -> dict[str, Any]:
        if response.request_id != request_id:
            self._fail(
                [f"{command}: request_id {response.request_id!r}, sent {request_id!r} (§8.4)"]
            )
        result = decode_map(response.result)
        self.calls[-1]["answer"] = {
            "success": response.success,
            "error": response.error,
            "result": repr(result)[:500],
        }
        return result

    # -- rules ----------------------------------------------------------------

    @rule(data=st.data(), session=st.one_of(st.none(), st.sampled_from(SESSIONS)))
    def echo(self, data: st.DataObject, session: str | None) -> None:
        args = _args(data)
        response, request_id = self._execute("echo", args, session)
        result = self._check_unary(response, request_id, "echo")
        if not response.success:
            self._fail([f"echo failed: {response.error!r} (§6.2)"])
        echoed = result.get("echoed")
        mismatch = same_value(args, echoed, "json", "echoed")
        if mismatch and session is not None and isinstance(echoed, dict):
            # §8.6: the session id is passed to the command; it may show in echo.
            mismatch = same_value({**args, "session_id": session}, echoed, "json", "echoed")
        if mismatch:
            self._fail([f"echo over gRPC did not return its args (§6.2, §8.3): {mismatch}"])

    @rule(op=st.sampled_from(OPERATIONS), data=st.data())
    def compute(self, op: str, data: st.DataObject) -> None:
        a = data.draw(numbers("json"), label="a")
        b = data.draw(numbers("json"), label="b")
        args = {"operation": op, "a": a, "b": b}
        response, request_id = self._execute("compute", args)
        result = self._check_unary(response, request_id, "compute")
        must_succeed, want = expected_compute(op, a, b, "json")
        if not must_succeed:
            if response.success:
                self._fail([f"compute with {want} must fail (§6.3), got {result!r}"])
            return
        if not response.success:
            self._fail([f"compute {op}({a!r}, {b!r}) failed: {response.error!r} (§6.3)"])
        mismatch = same_value(want, result.get("result"), "json", "result")
        if mismatch:
            self._fail([f"compute {op}({a!r}, {b!r}) disagrees with Python (§6.3): {mismatch}"])

    @rule(
        count=st.sampled_from(STREAM_COUNTS),
        session=st.one_of(st.none(), st.sampled_from(SESSIONS)),
    )
    def ping_stream(self, count: int, session: str | None) -> None:
        request_id = self._request_id()
        timeout = self.target.response_timeout

        def run(bridge: GrpcBridge) -> list[Any]:
            if session is None:
                stream = bridge.execute_stream(
                    "ping_stream", {"count": count}, request_id=request_id, timeout=timeout
                )
            else:
                stream = bridge.execute_in_session_stream(
                    session,
                    "ping_stream",
                    {"count": count},
                    request_id=request_id,
                    timeout=timeout,
                )
            return stream.collect(limit=count + 10)

        messages = self._call(
            "ExecuteStream", run, command="ping_stream", count=count, session=session
        )
        self._check_stream(messages, "ping_stream", data_messages=count)

    @rule(data=st.data())
    def stream_a_unary_command(self, data: st.DataObject) -> None:
        args = _args(data)
        request_id = self._request_id()
        timeout = self.target.response_timeout
        messages = self._call(
            "ExecuteStream",
            lambda b: b.execute_stream(
                "echo", args, request_id=request_id, timeout=timeout
            ).collect(limit=10),
            command="echo",
            args=repr(args),
        )
        self._check_stream(messages, "echo", data_messages=0)
        final = decode_map(messages[-1].chunk)
        mismatch = same_value(args, final.get("echoed"), "json", "echoed")
        if mismatch:
            self._fail([f"echo streamed must carry its Execute result (§8.5): {mismatch}"])

    def _check_stream(self, messages: list[Any], command: str, *, data_messages: int) -> None:
        self.calls[-1]["answer"] = [
            {"chunk_index": m.chunk_index, "is_final": m.is_final, "error": m.error}
            for m in messages
        ]
        problems = []
        if not messages:
            problems.append(f"{command}: the stream ended without a message (§8.5)")
        indices = [m.chunk_index for m in messages]
        if indices != list(range(len(messages))):
            problems.append(f"{command}: chunk_index runs {indices}, not 0, 1, 2, ... (§8.5)")
        finals = [i for i, m in enumerate(messages) if m.is_final]
        if finals != [len(messages) - 1]:
            problems.append(
                f"{command}: final messages at {finals} of {len(messages)}: exactly one, "
                "the last (§8.5)"
            )
        if any(m.error for m in messages):
            problems.append(f"{command}: an error in the stream: {messages[-1].error!r}")
        if len(messages) != data_messages + 1:
            problems.append(
                f"{command}: {len(messages)} messages, expected {data_messages} data messages "
                "and the final one (§8.5)"
            )
        if problems:
            self._fail(problems)

    @rule(worker=st.text(max_size=8))
    def health(self, worker: str) -> None:
        response = self._call(
            "Health",
            lambda b: b.health(worker, timeout=self.target.response_timeout),
            worker_id=worker,
        )
        self.calls[-1]["answer"] = {
            "healthy": response.healthy,
            "uptime_ms": response.uptime_ms,
            "total_requests": response.total_requests,
        }
        problems = []
        if not response.healthy:
            problems.append("Health: healthy is false while serving (§8.7)")
        if response.worker_id != worker:
            problems.append(f"Health: worker_id {response.worker_id!r}, sent {worker!r} (§8.7)")
        if response.uptime_ms < self.last_uptime:
            problems.append(f"Health: uptime_ms went back from {self.last_uptime} (§8.7)")
        if response.total_requests < self.last_total:
            problems.append(f"Health: total_requests went back from {self.last_total} (§8.7)")
        if problems:
            self._fail(problems)
        self.last_uptime = response.uptime_ms
        self.last_total = response.total_requests

    @rule(name=st.sampled_from(["nope", "PING", "echo ", ""]))
    def unknown_command(self, name: str) -> None:
        request_id = self._request_id()
        response = self._call(
            "Execute",
            lambda b: b.execute(
                name, {}, request_id=request_id, timeout=self.target.response_timeout
            ),
            command=name,
        )
        self._check_unary(response, request_id, repr(name))
        if response.success or not response.error:
            self._fail([f"unknown command {name!r} must fail with an error (§4.4, §8.4)"])


def bind_grpc_machine(
    target: GrpcTarget,
    guard: Callable[[], None],
    on_failure: Callable[[PropertyFailed], None],
) -> type[GrpcSessions]:
    """A subclass of :class:`GrpcSessions` bound to ``target`` (hypothesis instantiates it bare)."""
    attributes = {
        "target": target,
        "guard": staticmethod(guard),
        "on_failure": staticmethod(on_failure),
    }
    return type("GrpcSessions", (GrpcSessions,), attributes)
