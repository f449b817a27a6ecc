"""Conformance cases for the bridge-service profile (PROTOCOL.md §9, Snakepit v0.13).

Each case grades one requirement and cites its §9 section, so a worker with
one defect fails the case named for it.  Cases receive a
:class:`~snakepit_harness.conformance.drivers.bridge_service.BridgeServiceCaseContext`;
they never import grpc, so ``conformance --list`` works without the extra.

A user's worker has its own tools: cases that need a kind of tool (a
streaming one, an echo, one with a typed required parameter) find it among
the registered specs and SKIP, saying so, when the adapter has none.  The
values the echo cases send are data: ``fixtures/bridge_service/golden/``.

Spec decisions taken here:

- An "echo" tool is one named ``echo`` (else one whose name ends in
  ``echo``); the value sent goes in its first parameter (``value`` when it
  declares none), and must appear, unchanged and with its JSON type, anywhere
  in the result (upstream's echo wraps what it is given in a map).
- Tool calls that end in a non-OK status on the stream are tool errors
  (§9.9.4), so ``execute.valid-calls`` accepts them for streaming tools.
- ``errors.missing-argument``: a tool that runs without a parameter it
  registered as required gets NON-STRICT (its spec is wrong), not FAIL.
- ``values.unpickle`` sends a pickle whose loading creates an empty file in a
  temporary folder: the file's existence is the evidence, nothing else runs.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from snakepit_harness.errors import BridgeCrashed, BridgeTimeout
from snakepit_harness.protocol.bridge_service import (
    BRIDGE_HOST_WAIT_LIMIT,
    BRIDGE_READY_LIMIT,
    BRIDGE_SIGTERM_LIMIT,
    AnyJsonError,
    HeartbeatConfig,
    ToolInfo,
    decode_any_json,
    example_arguments,
    result_type_problem,
    tool_error_problems,
)

from ..model import BridgeUse
from ._transport import TransportCases

if TYPE_CHECKING:  # the driver imports grpc; the cases must load without it
    from ..drivers.bridge_service import BridgeServiceCaseContext, ToolCall

PROFILE: Final = frozenset({"bridge-service"})
GOLDEN: Final = Path(__file__).resolve().parents[2] / "fixtures" / "bridge_service" / "golden"
DATA_FILE: Final = "bridge_service.json"
# A tool name no worker has.
NO_SUCH_TOOL: Final = "snakepit_harness_no_such_tool"
MIB: Final = 1024 * 1024
# Statuses with which a request too large for the worker ends (§9.13.1).
SIZE_REFUSALS: Final = frozenset({"RESOURCE_EXHAUSTED", "UNAVAILABLE", "CANCELLED"})
# §9.12.1: the host delay while a call waits on it, and how fast Ping must be meanwhile.
SLOW_HOST: Final = 2.0
PING_WHILE_WAITING: Final = 1.0
# §9.15.1: a fast heartbeat config, and how many beats must come within how long.
FAST_BEATS: Final = HeartbeatConfig(interval_ms=300, timeout_ms=1000)
BEATS_WANTED: Final = 2
# §9.15.2: the config the host-loss case launches with.
HOST_LOSS_BEATS: Final = HeartbeatConfig(interval_ms=300, timeout_ms=500, max_missed_heartbeats=3)
# A server_time this far from the harness clock is not "now".
CLOCK_SLACK: Final = 300.0
# How long after start-up to look at the ready file again (§9.3.3).
READY_FILE_SETTLE: Final = 0.5
# Upstream's heartbeat flags with Snakepit's default values (§9.2.3).
HEARTBEAT_FLAGS: Final = (
    "--heartbeat-enabled",
    "--heartbeat-interval-ms",
    "2000",
    "--heartbeat-timeout-ms",
    "10000",
    "--heartbeat-max-missed",
    "3",
    "--heartbeat-initial-delay-ms",
    "0",
    "--heartbeat-dependent",
)
# Types a value of another JSON type is wrong for (errors.wrong-type-argument).
_TYPED: Final = {"int": 1, "integer": 1, "float": 1.5, "number": 1.5, "bool": True, "boolean": True}
_WRONG_VALUE: Final = "snakepit-harness: a value of the wrong type"
# The time limit of a case that judges the exercise (the driver's CALLS_IN_ALL calls).
EXERCISE_TIMEOUT: Final = 180


def _data() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((GOLDEN / DATA_FILE).read_text(encoding="utf-8"))
    return loaded


_case: Final = TransportCases("bridge-service", PROFILE, prefix="bridge-service.")
# Cases that launch a worker of their own get start-up's limit (§9.3.1) and 5 s to judge it.
_launch_case: Final = _case.preset(bridge=BridgeUse.RAW, timeout=BRIDGE_READY_LIMIT + 5)
# Cases that judge the exercise (every callable tool called, up to CALLS_IN_ALL calls)
# get the time the slowest of those calls may take.
_exercise_case: Final = _case.preset(timeout=EXERCISE_TIMEOUT)
# SIGTERM cases signal a worker of their own and wait out §9.14.1's limit, and 10 s more.
_sigterm_case: Final = _case.preset(bridge=BridgeUse.FRESH, timeout=BRIDGE_SIGTERM_LIMIT + 10)


def _same(a: Any, b: Any) -> bool:
    """JSON equality that keeps 1, 1.0 and True apart."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _contains(haystack: Any, needle: Any) -> bool:
    """Does ``needle`` appear, unchanged, anywhere in ``haystack``?"""
    if _same(haystack, needle):
        return True
    if isinstance(haystack, dict):
        return any(_contains(v, needle) for v in haystack.values())
    if isinstance(haystack, list):
        return any(_contains(v, needle) for v in haystack)
    return False


def _status_text(status: Any) -> str:
    if status is None:
        return "status OK"
    return f"gRPC status {status.code}: {status.details[:200]}"


def _result(reply: Any) -> Any:
    return decode_any_json(reply.result.value)


def _trigger(ctx: BridgeServiceCaseContext, session_id: str) -> Any:
    """One call in ``session_id``: a callable tool's, else an unknown tool's (a tool error)."""
    tools = [t for t in ctx.callable_tools(streaming=False)]
    name, arguments = (tools[0].name, ctx.calls_for(tools[0])[0]) if tools else (NO_SUCH_TOOL, {})
    reply, _ = ctx.execute(name, arguments, session_id=session_id, allow_status=True)
    return reply


def _need_callbacks(ctx: BridgeServiceCaseContext) -> None:
    """SKIP when the worker does not call this harness's host (--target elsewhere)."""
    ctx.tools()
    if not ctx.host.calls():
        ctx.skip(
            "the worker made no call to the harness's host; start it with "
            "--elixir-address 127.0.0.1:<--host-port> to judge its callbacks"
        )


def _successes(ctx: BridgeServiceCaseContext) -> list[ToolCall]:
    return [
        c
        for c in ctx.exercise()
        if not c.tool.streaming and c.response is not None and c.response.success
    ]


def _need_exercise(ctx: BridgeServiceCaseContext) -> list[ToolCall]:
    calls = ctx.exercise()
    ctx.need_tools(
        "a tool it can call (one whose required parameters have known types)",
        [c.tool for c in calls],
    )
    return calls


def _need_successes(ctx: BridgeServiceCaseContext) -> list[ToolCall]:
    """The exercise's successful unary calls; SKIP when there are none to judge."""
    _need_exercise(ctx)
    successes = _successes(ctx)
    if not successes:
        ctx.skip("no call succeeded (execute.success says so)")
    return successes


# -- §9.2 launch -----------------------------------------------------------------


@_launch_case("launch.heartbeat-flags", section="9.2.3", level="recommended")
def launch_heartbeat_flags(ctx: BridgeServiceCaseContext) -> None:
    """The worker accepts upstream's heartbeat flags (--heartbeat-enabled, --heartbeat-interval-ms,
    ... --heartbeat-dependent) and starts with them.
    """
    try:
        worker = ctx.launch(extra_args=HEARTBEAT_FLAGS)
    except (BridgeCrashed, BridgeTimeout) as exc:
        ctx.recommend(False, f"with upstream's heartbeat flags the worker did not start: {exc}")
        return
    ctx.still_serving()
    ctx.note(f"started with {' '.join(HEARTBEAT_FLAGS)} in {worker.ready_elapsed or 0:.2f} s")


# -- §9.3 start-up ---------------------------------------------------------------


@_launch_case("startup.ready-file", section="9.3.1", level="required", gate=True)
def startup_ready_file(ctx: BridgeServiceCaseContext) -> None:
    """Once serving, the worker writes its port into SNAKEPIT_READY_FILE within 30 s."""
    worker = ctx.launch()  # no port in time: TIMEOUT; exited first: CRASH
    text = worker.ready_text or ""  # as read when it first named the port
    ctx.event(f"ready file held {text!r}")
    ctx.require(
        worker.ready_elapsed is not None and worker.ready_elapsed <= BRIDGE_READY_LIMIT,
        f"the port came after {worker.ready_elapsed:.1f} s (limit {BRIDGE_READY_LIMIT:.0f} s)",
    )
    ctx.recommend(
        text.strip().isdigit(),
        f"the ready file should hold the port alone, in decimal: {text!r}",
    )


@_launch_case("startup.serving-when-ready", section="9.3.2", level="required")
def startup_serving_when_ready(ctx: BridgeServiceCaseContext) -> None:
    """The port in the ready file accepts calls the moment it is there."""
    worker = ctx.launch()
    ctx.require(
        worker.ready_probe is None,
        f"a call made as soon as the ready file named port {worker.port} failed "
        f"({worker.ready_probe}): the port was announced before the server served",
    )


@_launch_case("startup.ready-file-kept", section="9.3.3", level="recommended")
def startup_ready_file_kept(ctx: BridgeServiceCaseContext) -> None:
    """The worker leaves the ready file alone once written (the host deletes it)."""
    worker = ctx.launch()
    time.sleep(READY_FILE_SETTLE)
    assert worker.ready_file is not None
    ctx.recommend(
        worker.ready_file.exists(),
        f"the ready file was gone {READY_FILE_SETTLE} s after it named the port",
    )


@_launch_case("startup.loopback", section="9.3.4", level="recommended")
def startup_loopback(ctx: BridgeServiceCaseContext) -> None:
    """The worker listens on loopback only (127.0.0.1 or ::1), not on every interface."""
    worker = ctx.launch()
    sockets = [s for s in worker.listening_sockets() if s.port == worker.port]
    if not sockets:
        ctx.skip(f"cannot see the sockets of the worker's processes (port {worker.port})")
    ctx.event(f"listening on {[f'{s.address}:{s.port}' for s in sockets]}")
    wide = [s for s in sockets if not s.loopback_only]
    ctx.recommend(
        not wide,
        f"listens on {', '.join(f'{s.address}:{s.port}' for s in wide)}: anyone who can reach "
        "this machine can run its tools",
    )


@_launch_case("startup.host-ping-first", section="9.3.5", level="recommended")
def startup_host_ping_first(ctx: BridgeServiceCaseContext) -> None:
    """The worker pings its host before it reports ready."""
    worker = ctx.launch()
    ready_at = worker.started_at + (worker.ready_elapsed or 0.0)
    before = [c for c in ctx.host.calls() if c.at <= ready_at]
    ctx.event(f"host calls before ready: {[c.method for c in before]}")
    ctx.recommend(
        any(c.method == "Ping" for c in before),
        "no Ping reached the host before the worker reported ready "
        f"(calls before: {[c.method for c in before] or 'none'})",
    )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@_case(
    "startup.host-unreachable",
    section="9.3.5",
    level="recommended",
    bridge=BridgeUse.RAW,
    timeout=BRIDGE_HOST_WAIT_LIMIT + 10,
)
def startup_host_unreachable(ctx: BridgeServiceCaseContext) -> None:
    """A worker whose host never answers gives up within 30 s: it exits with a non-zero status and
    writes no ready file.
    """
    address = f"127.0.0.1:{_closed_port()}"
    worker = ctx.launch(host_address=address, wait=False)
    ctx.event(f"told the host is at {address}, where nothing listens")
    ended = worker.wait_exit(BRIDGE_HOST_WAIT_LIMIT)
    port = worker.read_ready_file()
    ctx.recommend(port is None, f"it reported ready (port {port}) without ever reaching its host")
    if ended is None:
        ctx.recommend(
            False,
            f"still running {BRIDGE_HOST_WAIT_LIMIT:.0f} s after start without a host "
            "(Snakepit stopped waiting for it at 30 s)",
        )
        return
    ctx.event(f"exited after {ended.elapsed:.1f} s: {ended.describe()}")
    ctx.recommend(ended.returncode != 0, f"gave up with status 0 ({ended.describe()})")


# -- §9.4 host callbacks ---------------------------------------------------------


@_case("callbacks.register-tools", section="9.4.2", level="required")
def callbacks_register_tools(ctx: BridgeServiceCaseContext) -> None:
    """Before answering a session's first ExecuteTool, the worker has registered its tools with the
    host (RegisterTools for that session, or for every session).
    """
    _need_callbacks(ctx)
    session = ctx.session_id()
    _trigger(ctx, session)
    answered = time.monotonic()
    registrations = [
        c
        for c in ctx.host.calls("RegisterTools")
        if c.session_id in (session, "") and c.at <= answered
    ]
    ctx.require(
        registrations,
        f"no RegisterTools for session {session!r} (or for every session) came before the "
        "answer to its first ExecuteTool",
    )
    ctx.require(
        any(c.request.tools for c in registrations),
        "RegisterTools came with an empty tool list",
    )


@_case("callbacks.registration-valid", section="9.4.2", level="required")
def callbacks_registration_valid(ctx: BridgeServiceCaseContext) -> None:
    """RegisterTools has a worker_id, tool names that are non-empty and unique, and parameter names
    unique within each tool.
    """
    _need_callbacks(ctx)
    calls = ctx.host.calls("RegisterTools")
    if not calls:
        ctx.skip("the worker never called RegisterTools (callbacks.register-tools says so)")
    for call in calls:
        request = call.request
        ctx.require(request.worker_id, "RegisterTools has an empty worker_id")
        names = [t.name for t in request.tools]
        ctx.require(all(names), f"a tool without a name in {names!r}")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        ctx.require(not duplicates, f"tools registered twice in one request: {duplicates}")
        for registration in request.tools:
            params = [p.name for p in registration.parameters]
            ctx.require(all(params), f"tool {registration.name!r}: a parameter without a name")
            twice = sorted({p for p in params if params.count(p) > 1})
            ctx.require(not twice, f"tool {registration.name!r}: parameters named twice {twice}")


def _callbacks_in(ctx: BridgeServiceCaseContext, method: str, calls: int) -> int:
    session = ctx.session_id()
    for _ in range(calls):
        _trigger(ctx, session)
    return sum(1 for c in ctx.host.calls(method) if c.session_id == session)


@_case("callbacks.register-once", section="9.4.3", level="recommended")
def callbacks_register_once(ctx: BridgeServiceCaseContext) -> None:
    """The worker registers its tools once per session, not once per call."""
    _need_callbacks(ctx)
    count = _callbacks_in(ctx, "RegisterTools", 3)
    ctx.recommend(count <= 1, f"RegisterTools came {count} times for 3 calls in one session")


@_case("callbacks.initialize-once", section="9.4.3", level="recommended")
def callbacks_initialize_once(ctx: BridgeServiceCaseContext) -> None:
    """The worker calls InitializeSession on the host at most once per session."""
    _need_callbacks(ctx)
    count = _callbacks_in(ctx, "InitializeSession", 3)
    ctx.recommend(
        count <= 1,
        f"InitializeSession reached the host {count} times for 3 calls in one session: a host "
        "round trip inside every call",
    )


@_case("callbacks.deadline", section="9.4.4", level="recommended")
def callbacks_deadline(ctx: BridgeServiceCaseContext) -> None:
    """Callbacks made while serving a call carry a deadline no later than the call's."""
    _need_callbacks(ctx)
    session = ctx.session_id()
    began = time.monotonic()
    allowed = min(ctx.remaining(), ctx.settings.timeout)
    _trigger(ctx, session)
    during = [c for c in ctx.host.calls(since=began) if c.session_id == session]
    if not during:
        ctx.skip("the worker made no callback while it served the call")
    for call in during:
        ctx.event(f"host got {call.method} with deadline {call.deadline}")
        ctx.recommend(
            call.deadline is not None,
            f"{call.method} came without a deadline: a host that stops answering holds the "
            "worker for ever",
        )
        ctx.recommend(
            call.deadline is None or call.deadline <= allowed + 1.0,
            f"{call.method} allows {call.deadline:.1f} s, more than the {allowed:.1f} s the "
            "call itself had",
        )


@_exercise_case("callbacks.host-tools", section="9.4.5", level="required")
def callbacks_host_tools(ctx: BridgeServiceCaseContext) -> None:
    """ExecuteElixirTool calls name a tool the host exposes and send parameters as Any-JSON."""
    from snakepit_harness.transports.bridge_host import decode_parameters

    _need_callbacks(ctx)
    ctx.exercise()
    calls = ctx.host.calls("ExecuteElixirTool")
    if not calls:
        ctx.skip("no tool called a host tool while the harness exercised them")
    for call in calls:
        name = call.request.tool_name
        ctx.require(name in ctx.host.tools, f"ExecuteElixirTool names {name!r}, not a host tool")
        _, off_spec = decode_parameters(call.request.parameters)
        ctx.require(
            not off_spec,
            f"ExecuteElixirTool {name!r}: parameters {off_spec} are not JSON text in Any.value",
        )


# -- §9.5 ExecuteTool ------------------------------------------------------------


@_exercise_case("execute.valid-calls", section="9.5.1", level="required")
def execute_valid_calls(ctx: BridgeServiceCaseContext) -> None:
    """Every call the registered specs say is valid ends with status OK (success or a tool error)
    and the worker keeps serving.
    """
    calls = _need_exercise(ctx)
    for call in calls:
        ctx.require(not call.failure, f"{call.describe()}: {call.failure}")
        if not call.tool.streaming:
            ctx.require(
                call.status is None,
                f"{call.describe()} ended with {_status_text(call.status)} (a failed tool is "
                "success=false with status OK)",
            )
    ctx.still_serving()


@_exercise_case("execute.success", section="9.5.2", level="required")
def execute_success(ctx: BridgeServiceCaseContext) -> None:
    """At least one of the valid calls the harness makes succeeds."""
    calls = _need_exercise(ctx)
    ok = [
        c
        for c in calls
        if (c.response is not None and c.response.success)
        or (c.tool.streaming and c.status is None and not c.failure and c.chunks)
    ]
    if ok:
        return
    errors = []
    for c in calls[:4]:
        if c.response is not None:
            errors.append(f"{c.describe()}: {c.response.error_message[:160]}")
        else:
            errors.append(f"{c.describe()}: {c.failure or (c.status and c.status.details[:160])}")
    ctx.require(False, f"none of {len(calls)} valid call(s) succeeded: " + "; ".join(errors))


@_exercise_case("execute.execution-time", section="9.5.3", level="recommended")
def execute_execution_time(ctx: BridgeServiceCaseContext) -> None:
    """execution_time_ms is the time the tool took: between 0 and the call's wall time."""
    for call in _need_successes(ctx):
        reported = call.response.execution_time_ms
        ctx.recommend(
            0 <= reported <= call.elapsed * 1000 + 1000,
            f"{call.describe()}: execution_time_ms {reported} for a call of "
            f"{call.elapsed * 1000:.0f} ms",
        )


@_exercise_case("results.json", section="9.7.2", level="required")
def results_json(ctx: BridgeServiceCaseContext) -> None:
    """A successful result's Any.value is strict UTF-8 JSON text."""
    for call in _need_successes(ctx):
        reply = call.response
        if reply.binary_result and not reply.result.value:
            continue
        try:
            decode_any_json(reply.result.value)
        except AnyJsonError as exc:
            ctx.require(False, f"{call.describe()}: result {reply.result.value[:80]!r}: {exc}")


@_exercise_case("results.type-url", section="9.7.2", level="recommended")
def results_type_url(ctx: BridgeServiceCaseContext) -> None:
    """A result's type URL is type.googleapis.com/snakepit.<kind>, the kind agreeing with its JSON
    value.
    """
    _need_exercise(ctx)
    judged = 0
    for call in _successes(ctx):
        reply = call.response
        if reply.binary_result:
            continue
        try:
            value = decode_any_json(reply.result.value)
        except AnyJsonError:
            continue  # results.json's business
        judged += 1
        problem = result_type_problem(reply.result.type_url, value)
        ctx.recommend(problem is None, f"{call.describe()}: {problem}")
    if not judged:
        ctx.skip("no successful call with a JSON result")


# -- §9.6 / §9.8 tool errors -------------------------------------------------------


def _unknown_tool(ctx: BridgeServiceCaseContext) -> tuple[Any, Any]:
    return ctx.execute(NO_SUCH_TOOL, {"x": 1}, allow_status=True)


@_case("errors.unknown-tool", section="9.8.1", level="required")
def errors_unknown_tool(ctx: BridgeServiceCaseContext) -> None:
    """ExecuteTool of an unregistered tool is a tool error: status OK, success=false, a non-empty
    error_message.
    """
    reply, status = _unknown_tool(ctx)
    ctx.require(
        status is None,
        f"ended with gRPC status {status.code if status else ''}: a tool error must travel "
        "in the answer (success=false), with status OK",
    )
    ctx.require(not reply.success, "success=true for a tool that does not exist")
    ctx.require(reply.error_message, "success=false with an empty error_message")


@_case("errors.names-tool", section="9.6.2", level="recommended")
def errors_names_tool(ctx: BridgeServiceCaseContext) -> None:
    """The error for an unknown tool names the tool."""
    reply, status = _unknown_tool(ctx)
    if status is not None or reply.success:
        ctx.skip("no tool error to read (errors.unknown-tool says why)")
    ctx.recommend(
        NO_SUCH_TOOL in reply.error_message,
        f"the error does not name {NO_SUCH_TOOL!r}: {reply.error_message[:200]!r}",
    )


@_case("errors.json-shape", section="9.6.2", level="recommended")
def errors_json_shape(ctx: BridgeServiceCaseContext) -> None:
    """error_message is a JSON object with string type and message (and optional stacktrace list,
    traceback string, context object).
    """
    reply, status = _unknown_tool(ctx)
    if status is not None or reply.success or not reply.error_message:
        ctx.skip("no tool error to read (errors.unknown-tool says why)")
    for problem in tool_error_problems(reply.error_message):
        ctx.recommend(False, problem)


def _with_required(ctx: BridgeServiceCaseContext) -> list[ToolInfo]:
    return [
        t
        for _, t in sorted(ctx.tools().items())
        if not t.streaming and any(p.name not in ("kwargs", "args") for p in t.required)
    ]


@_case("errors.missing-argument", section="9.6.1", level="required")
def errors_missing_argument(ctx: BridgeServiceCaseContext) -> None:
    """A call without a required parameter ends with status OK and success=false."""
    tool = ctx.need_tools("a non-streaming tool with a required parameter", _with_required(ctx))[0]
    missing = next(p for p in tool.required if p.name not in ("kwargs", "args"))
    arguments = {k: v for k, v in (example_arguments(tool) or {}).items() if k != missing.name}
    ctx.note(f"calling {tool.name} without {missing.name!r}")
    reply, status = ctx.execute(tool.name, arguments, allow_status=True)
    ctx.require(
        status is None,
        f"{tool.name} without {missing.name!r} ended with {_status_text(status)}",
    )
    ctx.recommend(
        not reply.success,
        f"{tool.name} succeeded without {missing.name!r}, which it registered as required",
    )
    ctx.still_serving()


@_case("errors.wrong-type-argument", section="9.6.1", level="required")
def errors_wrong_type_argument(ctx: BridgeServiceCaseContext) -> None:
    """A call with a parameter of the wrong type ends with status OK (success or a tool error) and
    the worker keeps serving.
    """
    typed = [
        t
        for t in _with_required(ctx)
        if example_arguments(t) is not None
        and any(p.type.strip().lower() in _TYPED for p in t.required)
    ]
    tool = ctx.need_tools("a non-streaming tool with a required number or bool", typed)[0]
    target = next(p for p in tool.required if p.type.strip().lower() in _TYPED)
    arguments = dict(example_arguments(tool) or {})
    arguments[target.name] = _WRONG_VALUE
    _, status = ctx.execute(tool.name, arguments, allow_status=True)
    ctx.require(
        status is None,
        f"{tool.name} with a string for {target.name!r} ({target.type}) ended with gRPC "
        f"status {status.code if status else ''}: {status.details[:200] if status else ''}",
    )
    ctx.still_serving()


# -- §9.7 values ------------------------------------------------------------------


def _echo(ctx: BridgeServiceCaseContext) -> tuple[ToolInfo, str]:
    tools = ctx.tools()
    ranked = sorted(
        (t for t in tools.values() if not t.streaming and t.name.lower().endswith("echo")),
        key=lambda t: (t.name.lower() != "echo", t.name),
    )
    tool = ctx.need_tools("an echo tool (named echo)", ranked)[0]
    carrier = (
        tool.required[0].name
        if tool.required
        else (tool.params[0].name if tool.params else "value")
    )
    return tool, carrier


def _echoed(ctx: BridgeServiceCaseContext, value: Any) -> Any:
    tool, carrier = _echo(ctx)
    reply, status = ctx.execute(tool.name, {carrier: value}, allow_status=True)
    ctx.require(status is None and reply.success, f"{tool.name} failed for {value!r}")
    try:
        return _result(reply)
    except AnyJsonError as exc:
        ctx.require(False, f"{tool.name}'s result is not JSON: {exc}")


@_case("values.parameters-json", section="9.7.1", level="required")
def values_parameters_json(ctx: BridgeServiceCaseContext) -> None:
    """Parameters arrive decoded from Any-JSON (StringValue type URL, JSON text): an echo returns
    each value unchanged.
    """
    for entry in _data()["parameters"]:
        value = entry["value"]
        result = _echoed(ctx, value)
        ctx.require(
            _contains(result, value),
            f"sent {value!r} as {entry['json_text']}; the echo's result {result!r} does not "
            "hold it unchanged",
        )


@_case("values.large-integers", section="9.7.1", level="required")
def values_large_integers(ctx: BridgeServiceCaseContext) -> None:
    """Integers keep their exact value through a tool (no float on the way)."""
    for value in _data()["large_integers"]:
        result = _echoed(ctx, value)
        ctx.require(
            _contains(result, value),
            f"sent {value}; the echo answered {result!r}",
        )


def _canary_pickle(path: Path) -> bytes:
    """Pickle opcodes (protocol 0) whose loading calls open(path, "w"): an empty file."""
    return b"cbuiltins\nopen\n(V" + str(path).encode() + b"\nVw\ntR."


@_case("values.unpickle", section="9.7.3", level="required")
def values_unpickle(ctx: BridgeServiceCaseContext) -> None:
    """The worker does not unpickle a binary parameter because the request's metadata says it is a
    pickle.
    """
    host = ctx.worker.address.rpartition(":")[0].strip("[]")
    if host not in ("127.0.0.1", "localhost", "::1"):
        ctx.skip("needs a worker on this machine, to see what its unpickling did")
    with tempfile.TemporaryDirectory(prefix="snakepit-harness-canary-") as folder:
        canary = Path(folder) / "unpickled"
        tools = ctx.callable_tools(streaming=False)
        name = tools[0].name if tools else NO_SUCH_TOOL
        ctx.execute(
            name,
            {},
            binary={"data": _canary_pickle(canary)},
            metadata={"binary_format:data": "pickle"},
            allow_status=True,
        )
        ctx.require(
            not canary.exists(),
            "the worker unpickled a binary parameter the request marked as a pickle: the "
            f"pickle's code ran (it created {canary.name}); anyone who can call the worker "
            "can run any code in it",
        )


# -- §9.9 streaming ----------------------------------------------------------------


def _good_streams(ctx: BridgeServiceCaseContext) -> list[ToolCall]:
    calls = [c for c in ctx.exercise() if c.tool.streaming]
    ctx.need_tools("a streaming tool it can call", [c.tool for c in calls])
    good = [c for c in calls if c.status is None and not c.failure]
    if not good:
        ctx.skip("every streaming call ended with an error (execute.valid-calls shows them)")
    return good


@_exercise_case("stream.final-chunk", section="9.9.1", level="required")
def stream_final_chunk(ctx: BridgeServiceCaseContext) -> None:
    """A streaming tool's stream has exactly one chunk with is_final=true, the last."""
    for call in _good_streams(ctx):
        finals = [i for i, c in enumerate(call.chunks) if c.is_final]
        ctx.require(
            len(finals) == 1,
            f"{call.describe()}: {len(finals)} final chunk(s) in {len(call.chunks)}",
        )
        ctx.require(
            finals[0] == len(call.chunks) - 1,
            f"{call.describe()}: the final chunk is #{finals[0]} of {len(call.chunks)}",
        )


@_exercise_case("stream.chunk-ids", section="9.9.2", level="recommended")
def stream_chunk_ids(ctx: BridgeServiceCaseContext) -> None:
    """chunk_id is non-empty and unique within a stream."""
    for call in _good_streams(ctx):
        ids = [c.chunk_id for c in call.chunks]
        ctx.recommend(all(ids), f"{call.describe()}: empty chunk_id among {ids!r}")
        ctx.recommend(len(set(ids)) == len(ids), f"{call.describe()}: repeated ids in {ids!r}")


@_exercise_case("stream.chunk-json", section="9.9.2", level="recommended")
def stream_chunk_json(ctx: BridgeServiceCaseContext) -> None:
    """A chunk that carries a value carries its JSON text."""
    for call in _good_streams(ctx):
        for chunk in call.chunks:
            if not chunk.data:
                continue
            try:
                text = chunk.data.decode("utf-8")
            except UnicodeDecodeError:
                continue  # raw bytes: allowed for binary data
            try:
                decode_any_json(text.encode())
            except AnyJsonError:
                ctx.recommend(
                    False, f"{call.describe()}: chunk data {chunk.data[:60]!r} is not JSON"
                )


@_case("stream.error-status", section="9.9.4", level="required")
def stream_error_status(ctx: BridgeServiceCaseContext) -> None:
    """A stream that fails (here: an unknown tool) ends with a non-OK status, whose details are the
    error JSON.
    """
    chunks, status = ctx.stream(NO_SUCH_TOOL, {"x": 1})
    ctx.require(
        status is not None,
        f"the stream of an unknown tool ended with status OK after {len(chunks)} chunk(s): "
        "the host takes that for a tool that worked",
    )
    assert status is not None
    for problem in tool_error_problems(status.details):
        ctx.recommend(False, f"status details: {problem}")


@_exercise_case("stream.non-streaming-tool", section="9.9.3", level="recommended")
def stream_non_streaming_tool(ctx: BridgeServiceCaseContext) -> None:
    """ExecuteStreamingTool of a non-streaming tool answers its whole result in one chunk, or
    refuses; it does not split the result.
    """
    # Results that could be split (a map, a list, a string of two or more) show it best.
    ranked = sorted(
        (c for c in _successes(ctx) if not c.response.binary_result),
        key=lambda c: not _splittable(_safe_result(c.response)),
    )
    ctx.need_tools("a non-streaming tool that succeeds", [c.tool for c in ranked])
    call = ranked[0]
    chunks, status = ctx.stream(call.tool.name, call.arguments)
    if status is not None:
        ctx.note(f"refused with {status.code}: allowed")
        return
    carrying = [c for c in chunks if c.data]
    ctx.recommend(
        len(carrying) <= 1,
        f"{call.describe()} came back in {len(carrying)} chunks "
        f"({[c.data[:20] for c in carrying[:5]]}...): its result was split",
    )


def _splittable(value: Any) -> bool:
    return isinstance(value, dict | list | str) and len(value) >= 2


def _safe_result(reply: Any) -> Any:
    try:
        return _result(reply)
    except AnyJsonError:
        return None


# -- §9.10 sessions ----------------------------------------------------------------


def _session_answer(ctx: BridgeServiceCaseContext, method: str, session_id: str) -> Any:
    """``method`` of ``session_id``'s answer; any non-OK status fails the case."""
    reply, status = ctx.session_call(method, session_id)
    ctx.require(status is None, f"{method} ended with status {status}")
    return reply


def _initialised(ctx: BridgeServiceCaseContext) -> str:
    session = ctx.session_id()
    reply = _session_answer(ctx, "InitializeSession", session)
    ctx.require(reply.success, f"InitializeSession answered success=false: {reply.error_message}")
    return session


@_case("sessions.initialize", section="9.10.1", level="required")
def sessions_initialize(ctx: BridgeServiceCaseContext) -> None:
    """InitializeSession answers success=true."""
    _initialised(ctx)


@_case("sessions.get", section="9.10.2", level="required")
def sessions_get(ctx: BridgeServiceCaseContext) -> None:
    """GetSession of an initialised session answers its session_id."""
    session = _initialised(ctx)
    reply = _session_answer(ctx, "GetSession", session)
    ctx.require(reply.session_id == session, f"GetSession answered {reply.session_id!r}")


@_case("sessions.heartbeat-valid", section="9.10.2", level="required")
def sessions_heartbeat_valid(ctx: BridgeServiceCaseContext) -> None:
    """Heartbeat of an initialised session answers session_valid=true, server_time set."""
    session = _initialised(ctx)
    reply = _session_answer(ctx, "Heartbeat", session)
    ctx.require(reply.session_valid, "session_valid=false for a session just initialised")
    ctx.require(reply.server_time.seconds > 0, "server_time is not set")


@_case("sessions.cleanup", section="9.10.2", level="required")
def sessions_cleanup(ctx: BridgeServiceCaseContext) -> None:
    """CleanupSession answers success=true; afterwards Heartbeat says session_valid=false."""
    session = _initialised(ctx)
    reply = _session_answer(ctx, "CleanupSession", session)
    ctx.require(reply.success, "CleanupSession answered success=false")
    reply = _session_answer(ctx, "Heartbeat", session)
    ctx.require(not reply.session_valid, "session_valid=true for a session cleaned up")


@_case("sessions.unknown", section="9.10.2", level="required")
def sessions_unknown(ctx: BridgeServiceCaseContext) -> None:
    """Heartbeat of a session never initialised answers session_valid=false."""
    reply = _session_answer(ctx, "Heartbeat", ctx.session_id("never"))
    ctx.require(not reply.session_valid, "session_valid=true for a session nobody initialised")


# -- §9.11 ping, §9.12 deadlines, §9.13 size ---------------------------------------


@_case("ping.rpc", section="9.11.1", level="required")
def ping_rpc(ctx: BridgeServiceCaseContext) -> None:
    """Ping answers with status OK; server_time is the current time."""
    reply = ctx.ping("snakepit-harness")
    seconds = reply.server_time.seconds + reply.server_time.nanos / 1e9
    ctx.recommend(
        abs(seconds - time.time()) <= CLOCK_SLACK,
        f"server_time is {seconds:.0f}, the harness's clock {time.time():.0f}",
    )


@_case("deadlines.responsive", section="9.12.1", level="recommended", timeout=30)
def deadlines_responsive(ctx: BridgeServiceCaseContext) -> None:
    """While a call waits for a slow host callback, the worker answers Ping within 1 s."""
    from snakepit_harness.transports.bridge_service import build_tool_request
    from snakepit_harness.transports.grpc import GrpcStatusError

    _need_callbacks(ctx)
    session = ctx.session_id()
    client = ctx.worker.client
    assert client is not None
    began = time.monotonic()
    ctx.host.delay = SLOW_HOST
    request = build_tool_request(NO_SUCH_TOOL, {}, session_id=session)
    waiting = threading.Thread(
        target=lambda: _quietly(lambda: client.call("ExecuteTool", request, SLOW_HOST * 4)),
        daemon=True,
    )
    waiting.start()
    time.sleep(0.3)
    in_flight = [c for c in ctx.host.calls(since=began) if c.session_id == session]
    if not in_flight:
        ctx.host.delay = 0.0
        waiting.join(SLOW_HOST * 4)
        ctx.skip("the worker made no host callback for a new session's first call")
    ctx.event(f"the call waits on the host ({in_flight[0].method}, {SLOW_HOST} s delay)")
    asked = time.monotonic()
    try:
        client.ping("while-waiting", timeout=PING_WHILE_WAITING)
        ctx.event(f"Ping answered in {time.monotonic() - asked:.2f} s")
    except GrpcStatusError as exc:  # an answer all the same (ping.rpc judges it)
        ctx.event(f"Ping answered {exc.code} in {time.monotonic() - asked:.2f} s")
    except BridgeTimeout:
        ctx.recommend(
            False,
            f"Ping got no answer within {PING_WHILE_WAITING} s while a call waited "
            f"{SLOW_HOST} s on the host: the worker serves one thing at a time",
        )
    finally:
        ctx.host.delay = 0.0
        waiting.join(SLOW_HOST * 4)


def _quietly(call: Callable[[], Any]) -> None:
    with contextlib.suppress(Exception):
        call()


@_case("limits.large-request", section="9.13.1", level="recommended", timeout=60)
def limits_large_request(ctx: BridgeServiceCaseContext) -> None:
    """The worker accepts ExecuteTool requests of 16 MiB."""
    payload = "x" * (16 * MIB - 256)
    _, status = ctx.execute(NO_SUCH_TOOL, {"payload": payload}, allow_status=True)
    # Any answer about the tool means the request got in; these mean it did not.
    ctx.recommend(
        status is None or status.code not in SIZE_REFUSALS,
        f"a 16 MiB request ended with {_status_text(status)}",
    )


# -- §9.14 SIGTERM -----------------------------------------------------------------


def _terminated(ctx: BridgeServiceCaseContext) -> Any:
    ctx.need_process()
    _trigger(ctx, ctx.session_id())  # a session open, heartbeats running
    ctx.worker.send_signal(signal.SIGTERM)
    ended = ctx.worker.wait_exit(BRIDGE_SIGTERM_LIMIT)
    ctx.event(f"after SIGTERM: {ended.describe() if ended else 'still running'}")
    return ended


@_sigterm_case("lifecycle.sigterm-exit", section="9.14.1", level="required")
def lifecycle_sigterm_exit(ctx: BridgeServiceCaseContext) -> None:
    """On SIGTERM the worker exits within 6 s."""
    ended = _terminated(ctx)
    ctx.require(ended is not None, f"still running {BRIDGE_SIGTERM_LIMIT:.0f} s after SIGTERM")


@_sigterm_case("lifecycle.sigterm-status", section="9.14.1", level="recommended")
def lifecycle_sigterm_status(ctx: BridgeServiceCaseContext) -> None:
    """After SIGTERM the worker exits with status 0."""
    ended = _terminated(ctx)
    if ended is None:
        ctx.skip("it did not exit (lifecycle.sigterm-exit says so)")
    ctx.recommend(ended.returncode == 0, f"exited after SIGTERM with {ended.describe()}")


@_sigterm_case("lifecycle.no-orphans", section="9.14.1", level="required")
def lifecycle_no_orphans(ctx: BridgeServiceCaseContext) -> None:
    """After SIGTERM no process the worker started outlives it."""
    ended = _terminated(ctx)
    if ended is None:
        ctx.skip("it did not exit (lifecycle.sigterm-exit says so)")
    time.sleep(0.3)
    left = sorted(ctx.worker.leftovers())
    described = [f"{pid} ({_command_line(pid)})" for pid in left]
    ctx.require(not left, f"still running after the worker exited: {', '.join(described)}")


def _command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()[:120]


# -- §9.15 heartbeats and host loss -------------------------------------------------


@_case(
    "heartbeat.sends",
    section="9.15.1",
    level="recommended",
    bridge=BridgeUse.RAW,
    timeout=BRIDGE_READY_LIMIT + 10,
)
def heartbeat_sends(ctx: BridgeServiceCaseContext) -> None:
    """With heartbeats enabled the worker sends Heartbeat for its session every interval_ms."""
    ctx.launch(heartbeat=FAST_BEATS)
    session = ctx.session_id()
    began = time.monotonic()
    _trigger(ctx, session)
    window = FAST_BEATS.interval_ms / 1000.0 * (BEATS_WANTED + 3)
    time.sleep(window)
    beats = [c for c in ctx.host.calls("Heartbeat", since=began) if c.session_id == session]
    ctx.recommend(
        len(beats) >= BEATS_WANTED,
        f"{len(beats)} Heartbeat(s) for the session in {window:.1f} s with interval_ms "
        f"{FAST_BEATS.interval_ms}",
    )


@_case(
    "lifecycle.host-loss",
    section="9.15.2",
    level="required",
    bridge=BridgeUse.RAW,
    timeout=BRIDGE_READY_LIMIT + HOST_LOSS_BEATS.host_loss_limit() + 10,
)
def lifecycle_host_loss(ctx: BridgeServiceCaseContext) -> None:
    """A dependent worker exits once its host is gone, within the time its heartbeat config
    allows.
    """
    worker = ctx.launch(heartbeat=HOST_LOSS_BEATS)
    session = ctx.session_id()
    _trigger(ctx, session)
    ctx.host.wait_for(lambda c: c.method == "Heartbeat", timeout=2.0)
    ctx.host.stop()
    worker.close_stdin()  # what Snakepit's port does when the BEAM goes
    limit = HOST_LOSS_BEATS.host_loss_limit()
    ctx.event(f"host stopped and stdin closed; waiting up to {limit:.1f} s")
    ended = worker.wait_exit(limit)
    ctx.require(
        ended is not None,
        f"still running {limit:.1f} s after its host went away (heartbeats every "
        f"{HOST_LOSS_BEATS.interval_ms} ms, {HOST_LOSS_BEATS.max_missed_heartbeats} may be "
        "missed): an orphan",
    )
