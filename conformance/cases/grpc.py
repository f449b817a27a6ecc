"""Conformance cases for the gRPC profile (PROTOCOL.md §8, and §6 over gRPC).

Each case sends one stimulus and grades one requirement, so a bridge with one
defect fails the case named for it.  Cases receive a
:class:`~snakepit_harness.conformance.drivers.grpc.GrpcCaseContext`; they never
import grpc themselves, so ``conformance --list`` works without the extra.

Spec decisions:

- ``grpc.startup.ready-line``: "exactly one stdout line" is read strictly: any
  other stdout line, before or after the ready line, fails the case.
- ``grpc.startup.serving-when-ready``: the harness makes its first call the
  moment the ready line arrives, without waiting for the channel; a refused
  connection (UNAVAILABLE) means the line came before the server was serving.
- Failures over gRPC carry no ``error_type`` field; cases only require
  ``success=false`` and a non-empty ``error`` (§8.4).
- ``grpc.stream.request-id`` and ``grpc.session.session-id`` are graded as
  SHOULD: §8.5/§8.6 do not make them MUST.
- ``grpc.limits.timeout-ms`` needs a stream slow enough to overrun: it asks
  ``ping_stream`` for an ``interval`` (seconds between chunks, as Snakepit's
  own ping_stream takes); a bridge that ignores ``interval`` and finishes
  inside the timeout is SKIPped, not failed.
- ``grpc.stream.cancel`` can only see that the producer stopped through the
  reference bridge's ``stream_stats`` command; other bridges are checked for
  staying responsive after the cancel.
"""

from __future__ import annotations

import json
import re
import signal
import time
from typing import TYPE_CHECKING, Any, Final

from snakepit_harness.errors import RemoteProtocolError, TransportError
from snakepit_harness.protocol import GRPC_READY_LIMIT, GRPC_SIGTERM_LIMIT, READY_PREFIX

from ..model import BridgeUse, CaseFailed, Grade
from ._transport import TransportCases

if TYPE_CHECKING:  # the driver imports grpc; the cases must load without it
    from ..drivers.grpc import GrpcCaseContext

GRPC: Final = frozenset({"grpc"})
READY_LINE: Final = re.compile(rf"^{re.escape(READY_PREFIX)}(\d+)$")
GENERIC_COMMANDS: Final = ("ping", "echo", "compute", "info", "ping_stream")
MIB: Final = 1024 * 1024

# §8.2: the ready line within 10 s; §8.10: exit within 5 s of SIGTERM.
READY_WITHIN: Final = GRPC_READY_LIMIT
SIGTERM_EXIT_WITHIN: Final = GRPC_SIGTERM_LIMIT
# A cancelled producer must be seen standing still (two stream_stats 0.2 s
# apart agree) within this long.
CANCEL_SETTLE_WITHIN: Final = 1.5
# How long after the ready line to watch stdout for further lines.
STDOUT_SETTLE: Final = 0.3
# A timestamp this far from the harness clock is not "nanoseconds since the epoch".
TIMESTAMP_SLACK_NS: Final = 300 * 10**9


_grpc_case: Final = TransportCases("grpc", GRPC)
# Start-up cases start the bridge themselves: §8.2's 10 s for the ready line, and 5 s more.
_startup_case: Final = _grpc_case.preset(bridge=BridgeUse.RAW, timeout=READY_WITHIN + 5)
# The SIGTERM case signals a bridge of its own and waits out §8.10's limit, and 5 s more.
_sigterm_case: Final = _grpc_case.preset(bridge=BridgeUse.FRESH, timeout=SIGTERM_EXIT_WITHIN + 5)


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError:
        return None


# -- §8.2 start-up ---------------------------------------------------------------


@_startup_case("grpc.startup.ready-line", section="8.2", level="required", gate=True)
def startup_ready_line(ctx: GrpcCaseContext) -> None:
    """Once serving, the bridge prints exactly one stdout line GRPC_SERVER_READY_ON_PORT=<port>,
    flushed, within 10 s.
    """
    try:
        bridge = ctx.start()
    except TransportError:
        announced = [line for line in ctx.bridge.stdout_lines() if READY_LINE.match(line)]
        if not announced:
            raise  # no ready line at all: TIMEOUT or CRASH says it best
        ctx.require(
            False,
            f"the bridge announced {announced[0]!r} but no gRPC server could be reached there",
        )
        return
    except RemoteProtocolError as exc:
        ctx.require(False, f"unusable ready line: {exc}")
        return
    ctx.require(
        bridge.ready_elapsed is not None and bridge.ready_elapsed <= READY_WITHIN,
        f"the ready line came after {bridge.ready_elapsed:.1f} s (limit {READY_WITHIN:.0f} s)",
    )
    time.sleep(STDOUT_SETTLE)
    lines = bridge.stdout_lines()
    ready = [line for line in lines if READY_LINE.match(line)]
    ctx.require(len(ready) == 1, f"expected one ready line on stdout, saw {lines!r}")
    ctx.require(lines == ready, f"stdout must hold only the ready line; it also has {lines!r}")


@_startup_case("grpc.startup.serving-when-ready", section="8.2", level="required")
def startup_serving_when_ready(ctx: GrpcCaseContext) -> None:
    """The ready line comes only once the server is serving: a call made right after it is
    answered.
    """
    bridge = ctx.start()
    ctx.require(
        bridge.ready_probe is None,
        f"a call made right after the ready line failed ({bridge.ready_probe}): "
        "the line was printed before the server was serving",
    )


@_grpc_case("grpc.startup.loopback", section="8.2", level="recommended")
def startup_loopback(ctx: GrpcCaseContext) -> None:
    """Without --host the bridge listens on 127.0.0.1 only, not on all interfaces."""
    ctx.need_process()
    if any(arg == "--host" or arg.startswith("--host=") for arg in ctx.bridge.argv):
        ctx.skip("the command line chooses the address with --host")
    sockets = ctx.bridge.listening_sockets()
    if not sockets:
        ctx.skip("cannot see the bridge's listening sockets (/proc unavailable)")
    ctx.event(f"listening: {[(s.address, s.port) for s in sockets]}")
    wide = [
        f"[{s.address}]:{s.port}" if ":" in s.address else f"{s.address}:{s.port}"
        for s in sockets
        if not s.loopback_only
    ]
    ctx.require(not wide, f"the bridge listens beyond loopback: {', '.join(wide)}")


# -- §8.4 Execute, §6 over gRPC ------------------------------------------------------


@_grpc_case("grpc.execute.request-id", section="8.4", level="required")
def execute_request_id(ctx: GrpcCaseContext) -> None:
    """Execute echoes request_id, on success and on failure."""
    for command in ("ping", "no_such_command_xyz"):
        rid = f"rid-{command}-{time.monotonic_ns()}"
        reply = ctx.execute(command, {}, request_id=rid)
        ctx.require(
            reply.request_id == rid,
            f"{command}: request_id {reply.request_id!r} is not the request's {rid!r}",
        )


@_grpc_case("grpc.execute.timestamp", section="8.4", level="recommended")
def execute_timestamp(ctx: GrpcCaseContext) -> None:
    """ExecuteResponse.timestamp is in nanoseconds since the epoch."""
    before = time.time_ns()
    reply = ctx.execute("ping")
    after = time.time_ns()
    ctx.require(
        before - TIMESTAMP_SLACK_NS <= reply.timestamp <= after + TIMESTAMP_SLACK_NS,
        f"timestamp {reply.timestamp} is not nanoseconds since the epoch (now is ~{after})",
    )


@_grpc_case("grpc.execute.ping", section="6.1", level="required", gate=True)
def execute_ping(ctx: GrpcCaseContext) -> None:
    """ping over Execute answers success=true with result status "ok"."""
    reply = ctx.execute("ping", {"worker_id": "conformance"})
    ctx.require(reply.success, f"ping failed: {reply.error!r}")
    result = ctx.decode(reply.result)
    ctx.require(result.get("status") == "ok", f"result status is {result.get('status')!r}")
    ctx.recommend(
        result.get("worker_id") in (None, "conformance"),
        f"worker_id {result.get('worker_id')!r} is not the one sent",
    )


ECHO_ARGS: Final = {
    "number": 42,
    "float": 2.5,
    "text": "héllo \u2603",
    "null": None,
    "flag": False,
    "list": [1, "two", [3.0]],
    "object": {"nested": {"deep": [None, True]}},
}


@_grpc_case("grpc.execute.echo", section="6.2", level="required")
def execute_echo(ctx: GrpcCaseContext) -> None:
    """echo over Execute returns echoed deep-equal to the args."""
    reply = ctx.execute("echo", ECHO_ARGS)
    ctx.require(reply.success, f"echo failed: {reply.error!r}")
    result = ctx.decode(reply.result)
    ctx.require(result.get("status") == "ok", f"result status is {result.get('status')!r}")
    echoed = result.get("echoed")
    if not isinstance(echoed, dict):
        raise CaseFailed(f"echoed is not an object: {echoed!r}")
    sent_back = {key: echoed.get(key) for key in ECHO_ARGS}
    ctx.require(sent_back == ECHO_ARGS, f"echoed {echoed!r} differs from the args {ECHO_ARGS!r}")


@_grpc_case("grpc.execute.compute", section="6.3", level="required")
def execute_compute(ctx: GrpcCaseContext) -> None:
    """compute over Execute does the arithmetic (divide is true division)."""
    for operation, a, b, expected in (("add", 2, 3, 5), ("divide", 7, 2, 3.5)):
        reply = ctx.execute("compute", {"operation": operation, "a": a, "b": b})
        ctx.require(reply.success, f"compute {operation} failed: {reply.error!r}")
        result = ctx.decode(reply.result).get("result")
        ctx.require(result == expected, f"compute {operation} {a} {b} gave {result!r}")


@_grpc_case("grpc.execute.info", section="6.4", level="required")
def execute_info(ctx: GrpcCaseContext) -> None:
    """The info command lists every command the bridge answers."""
    reply = ctx.execute("info")
    ctx.require(reply.success, f"info failed: {reply.error!r}")
    info = ctx.decode(reply.result).get("bridge_info")
    if not isinstance(info, dict):
        raise CaseFailed(f"no bridge_info object: {info!r}")
    commands = info.get("supported_commands")
    if not isinstance(commands, list):
        raise CaseFailed(f"supported_commands is {commands!r}")
    missing = [c for c in ("ping", "echo", "compute", "info") if c not in commands]
    ctx.require(not missing, f"supported_commands lacks {missing}")


@_grpc_case("grpc.execute.unknown-command", section="8.4", level="required")
def execute_unknown_command(ctx: GrpcCaseContext) -> None:
    """An unknown command answers success=false with a non-empty error."""
    reply = ctx.execute("no_such_command_xyz")
    ctx.require(not reply.success, "an unknown command answered success=true")
    ctx.require(reply.error, "success=false without an error text")
    ctx.require(ctx.execute("ping").success, "the bridge stopped answering ping afterwards")


@_grpc_case("grpc.execute.handler-failure", section="8.4", level="required")
def execute_handler_failure(ctx: GrpcCaseContext) -> None:
    """A failing command (division by zero) answers success=false with an error and the bridge
    keeps serving.
    """
    reply = ctx.execute("compute", {"operation": "divide", "a": 1, "b": 0})
    ctx.require(not reply.success, "division by zero answered success=true")
    ctx.require(reply.error, "success=false without an error text")
    ctx.require(ctx.execute("ping").success, "the bridge stopped answering ping afterwards")


# -- §8.3 values ------------------------------------------------------------------


@_grpc_case("grpc.values.json-args", section="8.3", level="required")
def values_json_args(ctx: GrpcCaseContext) -> None:
    """The bridge decodes each args value as JSON (numbers arrive as numbers, quoted strings as
    strings).
    """
    reply = ctx.execute("compute", {"operation": "multiply", "a": 6, "b": 7})
    ctx.require(
        reply.success,
        f"compute with JSON-encoded numbers failed ({reply.error!r}): are args decoded as JSON?",
    )
    result = ctx.decode(reply.result).get("result")
    ctx.require(result == 42, f"6 * 7 gave {result!r}")
    reply = ctx.execute("echo", {"word": "plain"})
    echoed = ctx.decode(reply.result).get("echoed", {}) if reply.success else {}
    ctx.require(
        isinstance(echoed, dict) and echoed.get("word") == "plain",
        f'the JSON string "plain" came back as {echoed!r}',
    )


@_grpc_case("grpc.values.json-results", section="8.3", level="recommended")
def values_json_results(ctx: GrpcCaseContext) -> None:
    """Result values are JSON texts (strings quoted)."""
    reply = ctx.execute("ping")
    ctx.require(reply.success, f"ping failed: {reply.error!r}")
    not_json = [
        key for key, raw in reply.result.items() if _json_or_none(raw) is None and raw != b"null"
    ]
    ctx.require(not not_json, f"result entries that are not JSON: {not_json}")
    ctx.require(
        reply.result.get("status") == b'"ok"',
        f'status is {reply.result.get("status")!r}, not the JSON string "ok"',
    )


@_grpc_case("grpc.values.raw-bytes", section="8.3", level="recommended")
def values_raw_bytes(ctx: GrpcCaseContext) -> None:
    """Raw non-JSON bytes in args are accepted (passed to the command as bytes): the call completes
    and the bridge keeps serving.
    """
    reply = ctx.execute("echo", {"blob": b"\x00\xff\xfe raw \x80"})
    ctx.require(reply.success or reply.error, "success=false without an error text")
    ctx.require(ctx.execute("ping").success, "the bridge stopped answering ping afterwards")


# -- §8.5 streaming -------------------------------------------------------------------


@_grpc_case("grpc.stream.ping-stream", section="8.5", level="required")
def stream_ping_stream(ctx: GrpcCaseContext) -> None:
    """ping_stream {count} yields count data messages {ping_number, message}, then the final one."""
    count = 3
    messages, _ = ctx.stream("ping_stream", {"count": count})
    # Data messages are the ones with a ping_number: which message carries
    # is_final is grpc.stream.final-message's business.
    chunks = [ctx.decode(m.chunk) for m in messages]
    pings = [chunk for chunk in chunks if "ping_number" in chunk]
    ctx.require(
        len(pings) == count,
        f"{len(pings)} messages with a ping_number for count={count}: {chunks!r}",
    )
    for number, chunk in enumerate(pings, start=1):
        ctx.require("message" in chunk, f"ping {number} lacks message: {chunk!r}")


@_grpc_case("grpc.stream.chunk-index", section="8.5", level="required")
def stream_chunk_index(ctx: GrpcCaseContext) -> None:
    """Stream messages carry chunk_index 0, 1, 2, ... in order."""
    messages, _ = ctx.stream("ping_stream", {"count": 4})
    indexes = [m.chunk_index for m in messages]
    ctx.require(
        indexes == list(range(len(messages))),
        f"chunk_index sequence is {indexes}, not 0, 1, 2, ...",
    )


@_grpc_case("grpc.stream.final-message", section="8.5", level="required")
def stream_final_message(ctx: GrpcCaseContext) -> None:
    """Exactly one stream message has is_final=true, and it is the last."""
    messages, _ = ctx.stream("ping_stream", {"count": 3})
    finals = [i for i, m in enumerate(messages) if m.is_final]
    ctx.require(messages, "the stream ended without any message")
    ctx.require(finals, f"none of the {len(messages)} messages has is_final=true")
    ctx.require(len(finals) == 1, f"{len(finals)} messages have is_final=true")
    ctx.require(finals[0] == len(messages) - 1, "the final message is not the last one")


@_grpc_case("grpc.stream.non-streaming", section="8.5", level="required")
def stream_non_streaming(ctx: GrpcCaseContext) -> None:
    """A non-streaming command over ExecuteStream answers with one final message carrying its
    Execute result.
    """
    messages, _ = ctx.stream("compute", {"operation": "add", "a": 20, "b": 22})
    ctx.require(len(messages) == 1, f"{len(messages)} messages, not one")
    only = messages[0]
    ctx.require(only.is_final, "the one message is not final")
    ctx.require(not only.error, f"the message carries an error: {only.error!r}")
    result = ctx.decode(only.chunk).get("result")
    ctx.require(result == 42, f"the chunk's result is {result!r}, not compute's 42")


@_grpc_case("grpc.stream.error-final", section="8.5", level="required")
def stream_error_final(ctx: GrpcCaseContext) -> None:
    """An error ends the stream with a final message whose error is set (not a bare gRPC error
    status).
    """
    messages, status = ctx.stream("no_such_command_xyz", {}, allow_status=True)
    ctx.require(
        status is None,
        f"the error came as gRPC status {status!r} instead of a final message with error set",
    )
    ctx.require(messages, "the stream ended without any message")
    last = messages[-1]
    ctx.require(last.is_final and last.error, "the last message is not final with error set")


@_grpc_case("grpc.stream.request-id", section="8.5", level="recommended")
def stream_request_id(ctx: GrpcCaseContext) -> None:
    """Stream messages echo the request_id."""
    rid = ctx.request_id()
    messages, _ = ctx.stream("ping_stream", {"count": 2}, request_id=rid)
    wrong = [m.request_id for m in messages if m.request_id != rid]
    ctx.require(not wrong, f"request_id {rid!r} came back as {wrong}")


@_grpc_case("grpc.stream.cancel", section="8.5", level="recommended", timeout=20)
def stream_cancel(ctx: GrpcCaseContext) -> None:
    """When the client cancels a stream the bridge stops producing and keeps serving."""
    observable = "stream_stats" in ctx.supported_commands()
    before = ctx.decode(ctx.execute("stream_stats").result) if observable else {}
    call = ctx.open_stream("ping_stream", {"count": 100_000, "interval": 0.01})
    received = 0
    for message in call:
        received += 1
        if received == 3 or message.is_final:
            break
    call.cancel()
    ctx.event(f"cancelled after {received} message(s)")
    ctx.require(ctx.execute("ping").success, "the bridge stopped answering after a cancel")
    if not observable:
        ctx.note("the bridge has no stream_stats command: cannot see whether the producer stopped")
        return
    key = "chunks_produced"
    deadline = time.monotonic() + CANCEL_SETTLE_WITHIN
    settled = None
    while time.monotonic() < deadline:
        first = ctx.decode(ctx.execute("stream_stats").result).get(key, 0)
        time.sleep(0.2)
        second = ctx.decode(ctx.execute("stream_stats").result).get(key, 0)
        if first == second:
            settled = second
            break
    ctx.require(settled is not None, "the producer kept producing after the cancel")
    produced = (settled or 0) - before.get(key, 0)
    ctx.require(produced < 1000, f"the producer made {produced} chunks before stopping")


# -- §8.6 sessions ---------------------------------------------------------------------


@_grpc_case("grpc.session.execute", section="8.6", level="required")
def session_execute(ctx: GrpcCaseContext) -> None:
    """ExecuteInSession works as Execute (success, result, request_id echoed)."""
    # Judged against plain Execute, so a defect both share is left to its own case.
    plain_id, session_rid = ctx.request_id(), ctx.request_id()
    plain = ctx.execute("ping", request_id=plain_id)
    reply = ctx.execute("ping", session_id="conformance-session-1", request_id=session_rid)
    ctx.require(reply.success, f"ping in a session failed: {reply.error!r}")
    ctx.require(ctx.decode(reply.result).get("status") == "ok", "ping status is not ok")
    ctx.require(
        (reply.request_id == session_rid) == (plain.request_id == plain_id),
        f"request_id came back as {reply.request_id!r} (Execute gave {plain.request_id!r})",
    )


@_grpc_case("grpc.session.stream", section="8.6", level="required")
def session_stream(ctx: GrpcCaseContext) -> None:
    """ExecuteInSessionStream works as ExecuteStream."""
    # Judged against plain ExecuteStream, so a defect both share is left to its own case.
    plain, _ = ctx.stream("ping_stream", {"count": 2})
    messages, _ = ctx.stream("ping_stream", {"count": 2}, session_id="conformance-session-1")

    def shape(stream: list[Any]) -> list[tuple[int, bool, bool, list[str]]]:
        return [(m.chunk_index, m.is_final, bool(m.error), sorted(m.chunk)) for m in stream]

    ctx.require(
        shape(messages) == shape(plain),
        f"in a session the stream is {shape(messages)}; ExecuteStream gives {shape(plain)}",
    )
    ctx.require(
        sum(not m.is_final for m in messages) == 2, "ping_stream count=2 gave other than 2 chunks"
    )


@_grpc_case("grpc.session.session-id", section="8.6", level="recommended")
def session_session_id(ctx: GrpcCaseContext) -> None:
    """The session_id is passed to the command (it appears in echo's args)."""
    reply = ctx.execute("echo", {"x": 1}, session_id="conformance-session-2")
    ctx.require(reply.success, f"echo in a session failed: {reply.error!r}")
    echoed = ctx.decode(reply.result).get("echoed")
    ctx.require(
        isinstance(echoed, dict) and echoed.get("session_id") == "conformance-session-2",
        f"echo saw args {echoed!r}: no session_id passed to the command",
    )


@_grpc_case("grpc.session.store-scoped", section="8.6", level="recommended")
def session_store_scoped(ctx: GrpcCaseContext) -> None:
    """State held by commands (the §7.3 store) is scoped by session_id."""
    commands = ctx.supported_commands()
    if not {"store", "retrieve"} <= commands:
        ctx.skip("the bridge has no store/retrieve commands (serve the enhanced adapter)")
    key = f"conformance-{time.monotonic_ns()}"
    stored = ctx.execute("store", {"id": key, "value": 7}, session_id="scope-a")
    ctx.require(stored.success, f"store failed: {stored.error!r}")
    mine = ctx.execute("retrieve", {"id": key}, session_id="scope-a")
    ctx.require(mine.success, f"retrieve in the storing session failed: {mine.error!r}")
    other = ctx.execute("retrieve", {"id": key}, session_id="scope-b")
    ctx.require(not other.success, "another session could retrieve the stored object")


@_grpc_case("grpc.session.active-sessions", section="8.8", level="recommended")
def session_active_sessions(ctx: GrpcCaseContext) -> None:
    """GetInfo stats count the sessions in use (active_sessions)."""
    for session in ("conformance-active-1", "conformance-active-2"):
        ctx.execute("ping", session_id=session)
    info = ctx.get_info(include_capabilities=False, include_stats=True)
    ctx.require(info.HasField("stats"), "GetInfo with include_stats has no stats")
    ctx.require(
        info.stats.active_sessions >= 2,
        f"active_sessions is {info.stats.active_sessions} after calls in two sessions",
    )


# -- §8.7 health ---------------------------------------------------------------------------


@_grpc_case("grpc.health.rpc", section="8.7", level="required")
def health_rpc(ctx: GrpcCaseContext) -> None:
    """Health answers healthy=true, echoes worker_id, and uptime_ms does not decrease."""
    first = ctx.health("conformance-worker")
    second = ctx.health("conformance-worker")
    ctx.require(first.healthy and second.healthy, "healthy is false while serving")
    ctx.require(
        second.worker_id == "conformance-worker",
        f"worker_id came back as {second.worker_id!r}",
    )
    ctx.require(
        second.uptime_ms >= first.uptime_ms,
        f"uptime_ms went from {first.uptime_ms} to {second.uptime_ms}",
    )


@_grpc_case("grpc.health.total-requests", section="8.7", level="recommended")
def health_total_requests(ctx: GrpcCaseContext) -> None:
    """Health.total_requests counts executed requests."""
    before = ctx.health().total_requests
    for _ in range(3):
        ctx.execute("ping")
    after = ctx.health().total_requests
    ctx.require(after >= before + 3, f"total_requests went from {before} to {after} over 3 calls")


@_grpc_case("grpc.health.standard", section="8.7", level="recommended")
def health_standard(ctx: GrpcCaseContext) -> None:
    """The standard grpc.health.v1.Health service reports SERVING."""
    status = ctx.status_of("grpc.health.v1 Check", lambda: ctx.health_v1(""))
    ctx.require(status is None, f"grpc.health.v1 Check failed: {status!r}")
    ctx.require(ctx.health_v1("") == "SERVING", "grpc.health.v1 does not report SERVING")


# -- §8.8 GetInfo ----------------------------------------------------------------------------


@_grpc_case("grpc.info.commands", section="8.8", level="required")
def info_commands(ctx: GrpcCaseContext) -> None:
    """GetInfo gives worker_type, version and supported_commands listing every command (the generic
    ones and ping_stream included).
    """
    info = ctx.get_info(include_capabilities=False, include_stats=False)
    ctx.require(info.worker_type, "worker_type is empty")
    ctx.require(info.version, "version is empty")
    missing = [c for c in GENERIC_COMMANDS if c not in info.supported_commands]
    ctx.require(not missing, f"supported_commands lacks {missing}")


@_grpc_case("grpc.info.stats", section="8.8", level="recommended")
def info_stats(ctx: GrpcCaseContext) -> None:
    """GetInfo with include_stats returns stats."""
    ctx.execute("ping")
    info = ctx.get_info(include_capabilities=False, include_stats=True)
    ctx.require(info.HasField("stats"), "no stats although include_stats was set")
    ctx.require(
        info.stats.requests_handled > 0 or info.stats.uptime_ms > 0,
        "stats are all zero after a request",
    )


@_grpc_case("grpc.info.capabilities", section="8.8", level="recommended")
def info_capabilities(ctx: GrpcCaseContext) -> None:
    """GetInfo with include_capabilities returns capabilities."""
    info = ctx.get_info(include_capabilities=True, include_stats=False)
    ctx.require(len(info.capabilities) > 0, "no capabilities although include_capabilities was set")


# -- §8.9 limits -------------------------------------------------------------------------------


@_grpc_case("grpc.limits.large-request", section="8.9", level="recommended", timeout=60)
def limits_large_request(ctx: GrpcCaseContext) -> None:
    """A 16 MiB request message is accepted."""
    payload = "x" * (16 * MIB)
    status = ctx.status_of(
        "Execute ping with 16 MiB",
        lambda: ctx.bridge.execute("ping", {"payload": payload}, timeout=ctx.remaining()),
    )
    ctx.require(status is None, f"a 16 MiB request was refused: {status!r}")
    ctx.require(ctx.execute("ping").success, "the bridge stopped answering afterwards")


@_grpc_case("grpc.limits.timeout-ms", section="8.9", level="recommended", timeout=20)
def limits_timeout_ms(ctx: GrpcCaseContext) -> None:
    """timeout_ms is honoured: an overrunning call fails with DEADLINE_EXCEEDED."""
    timeout_ms = 300
    began = time.monotonic()
    messages, status = ctx.stream(
        "ping_stream", {"count": 200, "interval": 0.05}, timeout_ms=timeout_ms, allow_status=True
    )
    elapsed = time.monotonic() - began
    if status is None and elapsed < timeout_ms / 1000:
        ctx.skip(f"ping_stream finished in {elapsed:.2f} s (ignores interval?): cannot overrun")
    if status is None:
        raise CaseFailed(
            f"the stream ran {elapsed:.1f} s ({len(messages)} messages) "
            f"past timeout_ms={timeout_ms}"
        )
    ctx.require(
        status.code == "DEADLINE_EXCEEDED",
        f"the overrun ended with {status.code}, not DEADLINE_EXCEEDED",
    )
    ctx.recommend(elapsed < 5.0, f"DEADLINE_EXCEEDED came only after {elapsed:.1f} s")


# -- §8.10 SIGTERM --------------------------------------------------------------------------------


@_sigterm_case("grpc.lifecycle.sigterm", section="8.10", level="required")
def lifecycle_sigterm(ctx: GrpcCaseContext) -> None:
    """On SIGTERM the bridge exits within 5 s (MUST), with status 0 (SHOULD), leaving no process
    behind.
    """
    ctx.require(ctx.execute("ping").success, "ping failed before the signal")
    ctx.event("-> SIGTERM")
    ctx.bridge.send_signal(signal.SIGTERM)
    exit_ = ctx.bridge.wait_exit(SIGTERM_EXIT_WITHIN)
    if exit_ is None:
        raise CaseFailed(f"still running {SIGTERM_EXIT_WITHIN:.0f} s after SIGTERM")
    ctx.event(f"<- exit: {exit_.describe()} after {exit_.elapsed:.2f} s")
    time.sleep(0.1)
    left = ctx.bridge.group_members()
    ctx.require(not left, f"processes left in the bridge's group: {left}")
    if exit_.returncode != 0:
        ctx.add_finding(Grade.NON_STRICT, f"exit after SIGTERM was {exit_.describe()}, not 0")
