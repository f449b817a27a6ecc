"""Fuzzing a bridge-service worker (PROTOCOL.md §9): its own tools, sessions and streams.

The worker's tools are the ones it registered with the host (``RegisterTools``,
§9.4), so the fuzzer calls a user's adapter, not test commands of ours.  One
state machine (:class:`BridgeServiceCalls`) interleaves:

* ``ExecuteTool`` of a registered tool, in and out of sessions, each
  parameter either a value of the registered type or any value JSON carries
  (the edge values of :mod:`.strategies`: deep nesting, long and unusual
  strings, integers past 2^53, -0.0, ...) sent as Any-JSON (§9.7.1), and now
  and then bytes as a binary parameter (§9.7.3) or an argument the tool does
  not take;
* ``ExecuteTool`` of the echo tool with one value of any JSON value or of a
  size edge class (depth to 100, long texts, many keys), its only argument:
  the echo tool is the one whose answer is judged value by value, so it gets
  a rule of its own rather than one pick in the registered tools;
* ``ExecuteStreamingTool`` of the streaming tools;
* unknown tools;
* ``InitializeSession``, ``GetSession``, ``Heartbeat`` and ``CleanupSession``
  against a model of the sessions that exist.

What every call must get (§9.5-§9.10): status OK for unary calls, either a
success whose result is strict JSON or a failure with a non-empty
``error_message``; a stream whose chunks end with exactly one final chunk, or a
non-OK status; session answers consistent with the model; an echo tool (one
the worker registered as ``echo`` and that returned a probe value unchanged)
returns every value exactly (§9.7.1: integers keep their exact value); and the
worker stays alive.

Every step is plain data (:class:`Step` dicts), checked by :class:`StepChecker`:
the machine draws steps, a saved failure is the list of steps, and
``snakepit-harness replay FILE -- CMD`` runs them again through the same
checker (:func:`replay_case`).
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from ..conformance.drivers.bridge_service import BridgeServiceCaseContext
from ..conformance.model import BridgeUse, Case, CaseFailed, Level
from ..errors import BridgeCrashed, BridgeTimeout, HarnessError, RemoteProtocolError
from ..protocol.bridge_service import (
    NO_EXAMPLE,
    ToolInfo,
    decode_any_json,
    example_value,
    tool_calls_for,
)
from ..transports import describe_returncode
from ..transports.bridge_host import HostEmulator
from ..transports.bridge_service import BridgeServiceWorker
from ..transports.grpc_channel import GrpcStatusError
from .oracle import same_value
from .properties import FoundFailure, PropertyFailed
from .regression import save_transcript, transcript_heading
from .target import Exchange, RestartingTarget
from .values import edge_numbers, evenly, large_values, texts, values

__all__ = [
    "FORMAT",
    "BridgeServiceCalls",
    "BridgeServiceTarget",
    "StepChecker",
    "bind_bridge_service_machine",
    "load_steps",
    "replay_case",
    "write_steps",
]

# The saved file's format: a list of steps and how the run was made.
FORMAT: Final = "snakepit-bridge-service-steps/1"
# The strategies' name for what an Any-JSON parameter carries: JSON values
# with UTF-8 strings (no lone surrogates: the host's JSON text is UTF-8).
ANY_JSON: Final = "grpc"
# Session ids the machine uses: plain, non-ASCII, astral, empty.
SESSIONS: Final = ("fuzz-s1", "fuzz-s\u00e9", "fuzz-\U0001f40d", "")
# Names no adapter registers (checked against the registered ones).
UNKNOWN_TOOLS: Final = ("snakepit_harness_no_such_tool", "ECHO", "echo ", "")
# The value an echo tool is probed with before it is trusted to echo.
ECHO_PROBE: Final = {"snakepit-harness": ["probe", 1, None]}
ECHO_TOOL: Final = "echo"
# Chunks collected from a stream before it is cut: a runaway stream is a defect.
STREAM_LIMIT: Final = 1000
# The most edge numbers one echo call sends (the stdio echo sends up to as many).
EDGE_NUMBERS_MAX: Final = 24
# One call in EXTRA_ODDS adds an argument the tool does not take.  Such a call is
# refused while binding its arguments (upstream's adapters and the reference
# worker both), so the tool body never meets its values: at one in two, half of
# every deep or long value drawn was spent on that refusal.
EXTRA_ODDS: Final = 4
# The name the discovery call uses to make a worker register (as conformance does).
DISCOVERY_TOOL: Final = "snakepit_harness_discovery_probe"

# How much of a step a replay's event line shows.
STEP_SHOWN: Final = 300
# How much of the worker's stderr the explanation beside a saved failure shows.
STDERR_SHOWN: Final = 2000

Step = dict[str, Any]


def _jsonable(value: Any) -> Any:
    """``value`` with bytes as ``{"$base64": ...}`` (the --tool-calls file's form)."""
    if isinstance(value, bytes):
        return {"$base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _from_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$base64"}:
            return base64.b64decode(value["$base64"])
        return {k: _from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_jsonable(v) for v in value]
    return value


class Problem(Exception):
    """A step's answer breaks §9; the message says how."""


def unsettled(session: str, used: set[str]) -> bool:
    """Whether the model cannot say if ``session`` is valid.

    The empty id is a call without a session (§9.7); what a session call
    answers for it the spec leaves open.  A session a tool call named
    without initialising it may have been created on use.
    """
    return not session or session in used


class StepChecker:
    """Runs steps against one worker and checks each answer against §9 and the model."""

    def __init__(
        self,
        worker: Callable[[], BridgeServiceWorker],
        *,
        timeout: float,
        echo_tool: str | None = None,
    ) -> None:
        self.worker = worker
        self.timeout = timeout
        self.echo_tool = echo_tool
        self.sessions: set[str] = set()
        # Sessions a tool call named without an InitializeSession: the worker may
        # create them on use (upstream initialises on every call, §9.10.1), so
        # whether they are valid is left open until a session call settles it.
        self.used: set[str] = set()

    def run(self, step: Step) -> None:
        """Do ``step``; raise :class:`Problem` when its answer is wrong."""
        action = _ACTIONS[step["op"]]
        worker = self.worker()
        assert worker.client is not None
        try:
            action(self, worker, step)
        except GrpcStatusError as exc:
            raise Problem(f"{step['op']}: gRPC status {exc.code}: {exc.details[:300]}") from None
        except (BridgeCrashed, BridgeTimeout, RemoteProtocolError) as exc:
            raise Problem(f"{step['op']}: {type(exc).__name__}: {exc}") from None
        if worker.poll() is not None:
            code = worker.poll()
            raise Problem(f"{step['op']}: the worker died ({describe_returncode(code)})")

    # -- the steps --------------------------------------------------------------

    def _execute(self, worker: BridgeServiceWorker, step: Step) -> None:
        assert worker.client is not None
        arguments = _from_jsonable(step["arguments"])
        self._used(step["session"])
        response = worker.client.execute_tool(
            step["tool"], arguments, session_id=step["session"], timeout=self.timeout
        )
        if response.success:
            if response.error_message:
                raise Problem("execute: success=true with an error_message (§9.5.3)")
            result = decode_any_json(response.result.value) if response.result.value else None
            if step["tool"] == self.echo_tool and "value" in arguments:
                mismatch = same_value(arguments["value"], result, "json", "result")
                if mismatch:
                    raise Problem(f"echo changed the value it was given (§9.7.1): {mismatch}")
        elif not response.error_message:
            raise Problem("execute: success=false with an empty error_message (§9.6.1)")
        if step.get("unknown") and response.success:
            raise Problem(f"execute: unknown tool {step['tool']!r} succeeded (§9.8.1)")

    def _stream(self, worker: BridgeServiceWorker, step: Step) -> None:
        assert worker.client is not None
        self._used(step["session"])
        stream = worker.client.execute_streaming_tool(
            step["tool"],
            _from_jsonable(step["arguments"]),
            session_id=step["session"],
            timeout=self.timeout,
        )
        try:
            chunks = stream.collect(limit=STREAM_LIMIT)
        except GrpcStatusError:
            return  # a failure ends the stream with a status (§9.9.4)
        finals = [i for i, chunk in enumerate(chunks) if chunk.is_final]
        if finals != [len(chunks) - 1]:
            raise Problem(
                f"stream: {len(chunks)} chunks with is_final at {finals}; exactly one final "
                "chunk, the last, is required (§9.9.1)"
            )

    def _used(self, session: str) -> None:
        if session and session not in self.sessions:
            self.used.add(session)

    def _initialize(self, worker: BridgeServiceWorker, step: Step) -> None:
        assert worker.client is not None
        answer = worker.client.initialize_session(step["session"], timeout=self.timeout)
        if not answer.success:
            raise Problem(
                f"InitializeSession({step['session']!r}) answered success=false (§9.10.1)"
            )
        self.sessions.add(step["session"])
        self.used.discard(step["session"])

    def _cleanup(self, worker: BridgeServiceWorker, step: Step) -> None:
        assert worker.client is not None
        answer = worker.client.cleanup_session(step["session"], timeout=self.timeout)
        if step["session"] in self.sessions and not answer.success:
            raise Problem(f"CleanupSession({step['session']!r}) answered success=false (§9.10.2)")
        self.sessions.discard(step["session"])
        self.used.discard(step["session"])

    def _heartbeat(self, worker: BridgeServiceWorker, step: Step) -> None:
        assert worker.client is not None
        answer = worker.client.heartbeat(step["session"], timeout=self.timeout)
        expected = step["session"] in self.sessions
        if unsettled(step["session"], self.used):
            return
        if answer.session_valid != expected:
            state = "initialised" if expected else "not initialised (or cleaned up)"
            raise Problem(
                f"Heartbeat({step['session']!r}): session_valid={answer.session_valid} for a "
                f"session {state} (§9.10.2)"
            )

    def _get(self, worker: BridgeServiceWorker, step: Step) -> None:
        assert worker.client is not None
        if step["session"] not in self.sessions or unsettled(step["session"], self.used):
            return  # SHOULD be NOT_FOUND; the conformance case grades that
        answer = worker.client.get_session(step["session"], timeout=self.timeout)
        if answer.session_id != step["session"]:
            raise Problem(
                f"GetSession({step['session']!r}) answered session_id {answer.session_id!r} "
                "(§9.10.2)"
            )

    def _ping(self, worker: BridgeServiceWorker, step: Step) -> None:
        assert worker.client is not None
        worker.client.ping(step.get("message", ""), timeout=self.timeout)


_ACTIONS: Final[dict[str, Callable[[StepChecker, BridgeServiceWorker, Step], None]]] = {
    "execute": StepChecker._execute,
    "stream": StepChecker._stream,
    "initialize": StepChecker._initialize,
    "cleanup": StepChecker._cleanup,
    "heartbeat": StepChecker._heartbeat,
    "get": StepChecker._get,
    "ping": StepChecker._ping,
}


# -- the target -------------------------------------------------------------------


class BridgeServiceTarget(RestartingTarget[BridgeServiceWorker]):
    """A worker command line with one host emulator; restarted after it breaks."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        response_timeout: float,
        tool_calls: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.response_timeout = response_timeout
        self.tool_calls = dict(tool_calls or {})
        self.host: HostEmulator | None = None
        self.tools: dict[str, ToolInfo] = {}
        self.echo_tool: str | None = None

    def ensure(self) -> BridgeServiceWorker:
        if self._bridge is not None and self._bridge.poll() is None:
            return self._bridge
        self.discard()
        if self.host is None:
            self.host = HostEmulator().start()
        worker = BridgeServiceWorker(self.argv, host_address=self.host.address)
        try:
            worker.start()
        except OSError as exc:
            worker.close()
            raise HarnessError(f"cannot start the worker {self.argv[0]!r}: {exc}") from exc
        self._bridge = worker
        if not self.tools:
            self._discover(worker)
        return worker

    def _discover(self, worker: BridgeServiceWorker) -> None:
        """The worker's tools, and whether its ``echo`` tool echoes (before any fuzzing)."""
        assert worker.client is not None and self.host is not None
        if not self.host.registered_tools():
            # A worker registers on its first call in a session (§9.4).
            worker.client.execute_tool(
                DISCOVERY_TOOL, {}, session_id="fuzz-discover", timeout=self.response_timeout
            )
        self.tools = dict(self.host.registered_tools())
        for name in self.tool_calls:
            self.tools.setdefault(name, ToolInfo(name))
        echo = self.tools.get(ECHO_TOOL)
        if echo is not None and not echo.streaming and [p.name for p in echo.params] == ["value"]:
            answer = worker.client.execute_tool(
                ECHO_TOOL, {"value": ECHO_PROBE}, timeout=self.response_timeout
            )
            if answer.success and decode_any_json(answer.result.value) == ECHO_PROBE:
                self.echo_tool = ECHO_TOOL

    def close(self) -> None:
        self.discard()
        if self.host is not None:
            self.host.stop()
            self.host = None


# -- the state machine -------------------------------------------------------------


def _argument_values(tool: ToolInfo, data: st.DataObject) -> dict[str, Any]:
    """Arguments for ``tool``: each parameter typed as registered, or any JSON value."""
    arguments: dict[str, Any] = {}
    for param in tool.params:
        typed = example_value(param.type)
        choices = [values(ANY_JSON), *large_values(ANY_JSON).values()]
        if typed is not NO_EXAMPLE:
            choices.insert(0, st.just(typed))
        if param.required or data.draw(st.booleans(), label=f"give {param.name}"):
            arguments[param.name] = data.draw(st.one_of(choices), label=param.name)
    extra = data.draw(_extra_arguments(), label="extra argument")
    if extra is not None and extra[0] not in arguments:
        arguments[extra[0]] = extra[1]  # bytes: a binary parameter (§9.7.3)
    return arguments


@functools.cache
def _extra_arguments() -> st.SearchStrategy[tuple[str, bytes] | None]:
    """None, or (1 in EXTRA_ODDS) a name and bytes: an argument the tool may not take."""
    extra = st.tuples(texts(ANY_JSON, max_size=8), st.binary(max_size=64))
    nothing: list[st.SearchStrategy[tuple[str, bytes] | None]] = [st.none()] * (EXTRA_ODDS - 1)
    return evenly([*nothing, extra])


@functools.cache
def echo_values() -> st.SearchStrategy[Any]:
    """What the echo rule sends: any JSON value, the edge numbers, or a size edge class.

    Evenly, so each size class comes in one echo call in five or six (and at
    its maximum about half of those, see :func:`.values._up_to`), as the
    stdio ``echo`` property draws them; ``values`` alone nests deeper than 50
    levels about once in a hundred.  The edge numbers (integers past 2^53 and
    at the 64-bit limits, -0.0, subnormals) come as a list of their own, as
    the stdio ``echo`` sends them beside its other arguments: a leaf among
    ``values`` is one of them too rarely for a state machine's fifty runs.
    """
    edge = st.lists(edge_numbers(ANY_JSON), min_size=1, max_size=EDGE_NUMBERS_MAX)
    return evenly([values(ANY_JSON), edge, *large_values(ANY_JSON).values()])


class BridgeServiceCalls(RuleBasedStateMachine):
    """Every tool call and session call is answered as §9 says and the worker stays alive.

    A state machine over ExecuteTool of the registered tools with Any-JSON and binary
    parameters, ExecuteStreamingTool, unknown tools, and InitializeSession, GetSession,
    Heartbeat and CleanupSession against a model of the sessions; an echo tool returns
    every value exactly (§9.5-§9.10).
    """

    target: ClassVar[BridgeServiceTarget]
    guard: ClassVar[Callable[[], None]]
    on_failure: ClassVar[Callable[[PropertyFailed], None]]

    def __init__(self) -> None:
        super().__init__()
        type(self).guard()
        self.steps: list[Step] = []
        self.checker = StepChecker(
            self.target.ensure,
            timeout=self.target.response_timeout,
            echo_tool=self.target.echo_tool,
        )
        # Each run starts from no sessions; a run's leftovers are cleaned up first.
        for session in SESSIONS:
            self._do({"op": "cleanup", "session": session})

    def _do(self, step: Step) -> None:
        self.steps.append(step)
        try:
            self.checker.run(step)
        except Problem as exc:
            worker = self.target._bridge
            tail = worker.stderr_tail() if worker is not None else b""
            failure = PropertyFailed([str(exc)], [], Exchange([], stderr_tail=tail), ANY_JSON)
            failure.grpc_calls = [dict(s) for s in self.steps]
            self.target.discard()
            type(self).on_failure(failure)
            raise failure from None

    def _tools(self, streaming: bool) -> list[ToolInfo]:
        return [t for _, t in sorted(self.target.tools.items()) if t.streaming == streaming]

    @rule(data=st.data(), session=st.sampled_from(SESSIONS))
    def execute(self, data: st.DataObject, session: str) -> None:
        tools = self._tools(streaming=False)
        if not tools:
            return
        tool = data.draw(st.sampled_from(tools), label="tool")
        given = tool_calls_for(tool, self.target.tool_calls)
        use_given = bool(given) and data.draw(st.booleans(), label="a --tool-calls call")
        if use_given:
            arguments = data.draw(st.sampled_from(given), label="arguments")
        else:
            arguments = _argument_values(tool, data)
        self._do(
            {
                "op": "execute",
                "tool": tool.name,
                "arguments": _jsonable(arguments),
                "session": session,
            }
        )

    @precondition(lambda self: self.target.echo_tool is not None)
    @rule(value=echo_values(), session=st.sampled_from(SESSIONS))
    def echo(self, value: Any, session: str) -> None:
        # Only ``value``: an extra argument would be refused before echo runs.
        assert self.target.echo_tool is not None
        self._do(
            {
                "op": "execute",
                "tool": self.target.echo_tool,
                "arguments": _jsonable({"value": value}),
                "session": session,
            }
        )

    @rule(data=st.data(), session=st.sampled_from(SESSIONS))
    def stream(self, data: st.DataObject, session: str) -> None:
        tools = self._tools(streaming=True)
        if not tools:
            return
        tool = data.draw(st.sampled_from(tools), label="streaming tool")
        arguments = _argument_values(tool, data)
        self._do(
            {
                "op": "stream",
                "tool": tool.name,
                "arguments": _jsonable(arguments),
                "session": session,
            }
        )

    @rule(name=st.sampled_from(UNKNOWN_TOOLS), session=st.sampled_from(SESSIONS))
    def unknown_tool(self, name: str, session: str) -> None:
        if name in self.target.tools:
            return
        self._do(
            {"op": "execute", "tool": name, "arguments": {}, "session": session, "unknown": True}
        )

    @rule(
        op=st.sampled_from(("initialize", "cleanup", "heartbeat", "get")),
        session=st.sampled_from(SESSIONS),
    )
    def session_call(self, op: str, session: str) -> None:
        self._do({"op": op, "session": session})

    @rule()
    def ping(self) -> None:
        self._do({"op": "ping", "message": "fuzz"})


def bind_bridge_service_machine(
    target: BridgeServiceTarget,
    guard: Callable[[], None],
    on_failure: Callable[[PropertyFailed], None],
) -> type[BridgeServiceCalls]:
    """:class:`BridgeServiceCalls` bound to ``target`` (hypothesis instantiates it bare)."""
    attributes = {
        "target": target,
        "guard": staticmethod(guard),
        "on_failure": staticmethod(on_failure),
    }
    return type("BridgeServiceCalls", (BridgeServiceCalls,), attributes)


# -- saved failures ------------------------------------------------------------------


def write_steps(found: FoundFailure, directory: Path) -> Path:
    """Save a failure's steps as ``fuzz.<hash>.bridge-service.json`` (replayable)."""
    steps = found.failure.grpc_calls or []
    path, digest = save_transcript(
        found, directory, kind="bridge-service", record={"format": FORMAT, "steps": steps}
    )
    lines = [
        *transcript_heading(found, digest, "bridge-service"),
        f"{len(steps)} step(s) in `{path.name}`; the last one failed. Replay:",
        "",
        f"    snakepit-harness replay {path.name} -- {found.command}",
        "",
        "Stderr tail:",
        "",
        "```",
        found.failure.exchange.stderr_tail.decode("utf-8", "replace")[-STDERR_SHOWN:],
        "```",
        "",
    ]
    path.with_suffix(".md").write_text("\n".join(lines), encoding="utf-8")
    return path


def load_steps(path: Path) -> dict[str, Any] | None:
    """The saved record at ``path`` when it is a bridge-service steps file, else None."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None
    return record


def replay_case(path: Path, record: Mapping[str, Any]) -> Case:
    """A saved steps file as a conformance case: ``replay FILE -- CMD`` runs it.

    The case gets a fresh worker with the run's host emulator, finds the
    worker's echo tool as the fuzzer did, and runs the steps through the
    same :class:`StepChecker`; the first wrong answer fails it.
    """
    steps: list[Step] = list(record["steps"])

    def run(ctx: BridgeServiceCaseContext) -> None:
        worker = ctx.worker
        assert worker.client is not None
        echo_tool = None
        registered = ctx.tools()
        if ECHO_TOOL in registered:
            answer = worker.client.execute_tool(
                ECHO_TOOL, {"value": ECHO_PROBE}, timeout=ctx.settings.timeout
            )
            if answer.success and decode_any_json(answer.result.value) == ECHO_PROBE:
                echo_tool = ECHO_TOOL
        checker = StepChecker(lambda: worker, timeout=ctx.settings.timeout, echo_tool=echo_tool)
        for number, step in enumerate(steps, 1):
            ctx.event(f"step {number}: {json.dumps(step, ensure_ascii=True)[:STEP_SHOWN]}")
            try:
                checker.run(step)
            except Problem as exc:
                raise CaseFailed(f"step {number}: {exc}") from None

    return Case(
        id=path.name.removesuffix(".bridge-service.json"),
        section="9",
        level=Level.REQUIRED,
        profiles=frozenset({"bridge-service"}),
        requirement=str(record.get("statement", "")),
        run=run,
        transport="bridge-service",
        bridge=BridgeUse.FRESH,
        source=str(path),
    )
