"""The call a bridge-service load test makes, chosen from what the worker registers.

A user's worker has its own tools, so the harness asks it before the sweep:
:func:`plan_tool_calls` starts the worker once beside an in-process host
emulator, reads its ``RegisterTools`` (§9.4), picks the tool each payload
calls, makes that call once (a tool that fails now would fail every point;
a default choice then goes on to the next candidate)
and returns the requests as serialised ``ExecuteToolRequest`` bytes.  Load
users send those bytes unchanged with identity serialisers, so the
generator builds no protobuf per request.

Which tool a payload calls:

* ``call``: ``--tool NAME`` with its ``--tool-calls`` arguments or, without
  them, example values for its registered parameters; without ``--tool``, the
  first tool of the ``--tool-calls`` file; else ``echo(value)`` with the
  ``small`` profile, then the other unary tools it can make arguments for, in
  the order registered (at most MAX_CANDIDATES): the first that succeeds.
* ``small``, ``structured``, ``binary``, ``file:PATH``: the profile's
  arguments as ``echo``'s ``value``; a profile of one bytes field (``binary``)
  sends the bytes themselves as ``value``, a binary parameter (§9.7.3).
  They need an ``echo`` tool with one ``value`` parameter.
* ``stream``: ``--tool`` when it streams, else the streaming tools in turn,
  with the same argument rules; how many chunks it sends is counted once, so
  the baseline sends as many.

Runs in the harness's process (no gevent); the response checks the load
users apply are here too, stdlib and protobuf only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from snakepit_harness.errors import HarnessError, RemoteProtocolError
from snakepit_harness.protocol.bridge_service import (
    BRIDGE_SERVICE,
    ToolInfo,
    example_arguments,
)

from .profiles import FILE_PREFIX, load_profile

__all__ = [
    "CALL_PAYLOAD",
    "EXECUTE_STREAMING_TOOL_METHOD",
    "EXECUTE_TOOL_METHOD",
    "STREAM_PAYLOAD",
    "NoToolsRegistered",
    "PlannedCall",
    "TrialCallFailed",
    "check_tool_response",
    "check_tool_stream",
    "plan_tool_calls",
]

EXECUTE_TOOL_METHOD: Final = f"/{BRIDGE_SERVICE}/ExecuteTool"
EXECUTE_STREAMING_TOOL_METHOD: Final = f"/{BRIDGE_SERVICE}/ExecuteStreamingTool"

CALL_PAYLOAD: Final = "call"
STREAM_PAYLOAD: Final = "stream"
ECHO_TOOL: Final = "echo"
# The session every load request runs in: a worker registers its tools once
# per session (§9.4.3), so one session keeps that out of the steady state.
LOAD_SESSION: Final = "snakepit-harness-load"
# A tool no worker has: called once, in the load session, when the worker has
# not registered its tools by the time it answers a ping.
PROBE_TOOL: Final = "snakepit_harness_load_probe"
# Seconds the one trial call of each planned request may take.
TRIAL_TIMEOUT_S: Final = 30.0


class TrialCallFailed(RemoteProtocolError):
    """The worker answered the planned call with a failure: every point would fail."""

    def __init__(self, message: str, stderr_tail: bytes = b"") -> None:
        super().__init__(message)
        self.stderr_tail = stderr_tail


class NoToolsRegistered(TrialCallFailed):
    """The worker told the host of no tools: no call can be planned."""


@dataclass(frozen=True)
class PlannedCall:
    """What one payload's requests are: a tool, its arguments, the serialised request."""

    payload: str
    tool: str
    stream: bool
    request: bytes
    chunks: int = 0  # a stream's chunk count, final included (0: unary)
    how: str = ""  # how the tool and its arguments were chosen, for the report


def _arguments_for(
    tool: ToolInfo, tool_calls: Mapping[str, Sequence[Mapping[str, Any]]]
) -> tuple[dict[str, Any], str] | None:
    """The arguments to call ``tool`` with, and how they were chosen; None if none can be made."""
    given = tool_calls.get(tool.name)
    if given:
        return dict(given[0]), f"{tool.name} with the first --tool-calls arguments"
    example = example_arguments(tool)
    if example is None:
        return None
    return example, f"{tool.name} with example values for its registered parameters"


# How many tools a default call or stream tries, in registration order, before
# it gives up: a tool that fails (or needs arguments it cannot guess) is not a
# reason to refuse the worker while another tool of it answers.
MAX_CANDIDATES: Final = 5

Candidate = tuple[ToolInfo, dict[str, Any], str]  # tool, arguments, how they were chosen


def _callable(
    candidates: Sequence[ToolInfo], tool_calls: Mapping[str, Sequence[Mapping[str, Any]]]
) -> list[Candidate]:
    """Those of ``candidates`` the harness can make arguments for, with them."""
    found = []
    for candidate in candidates:
        arguments = _arguments_for(candidate, tool_calls)
        if arguments is not None:
            found.append((candidate, *arguments))
    if not found:
        names = ", ".join(t.name for t in candidates)
        raise HarnessError(
            f"every tool that could be called ({names}) has a required parameter of a type the "
            "harness cannot make an example of; name its arguments with --tool-calls FILE"
        )
    return found[:MAX_CANDIDATES]


def _is_echo(tool: ToolInfo | None) -> bool:
    """An ``echo(value)`` tool (or one that registers no parameters): the profiles' target."""
    return (
        tool is not None and not tool.streaming and [p.name for p in tool.params] in (["value"], [])
    )


def _candidates(
    payload: str,
    tools: Mapping[str, ToolInfo],
    tool: str | None,
    tool_calls: Mapping[str, Sequence[Mapping[str, Any]]],
) -> list[Candidate]:
    """The calls ``payload`` may make, best first: the first one that succeeds is planned.

    A tool named by ``--tool`` or the ``--tool-calls`` file is the only
    candidate; otherwise the default call tries ``echo`` of ``small`` and then
    the other unary tools, and ``stream`` the streaming tools.
    """
    registered = ", ".join(sorted(tools)) or "none"
    if tool is not None and tool not in tools:
        raise HarnessError(
            f"--tool {tool}: the worker registers no such tool (it has: {registered})"
        )
    if payload == STREAM_PAYLOAD:
        streaming = [t for t in tools.values() if t.streaming]
        if tool is not None and tools[tool].streaming:
            streaming = [tools[tool]]
        if not streaming:
            raise HarnessError(
                f"payload stream needs a streaming tool; the worker registers none ({registered})"
            )
        return _callable(streaming, tool_calls)
    if payload == CALL_PAYLOAD:
        for name in (tool, next(iter(tool_calls), None)):
            if name is not None and name in tools:
                if tools[name].streaming:
                    raise HarnessError(f"tool {name!r} streams: load it with --payload stream")
                return _callable([tools[name]], tool_calls)
        unary = [t for t in tools.values() if not t.streaming]
        if not unary:
            raise HarnessError(f"the worker registers no unary tool ({registered})")
        echo = tools.get(ECHO_TOOL)
        first: list[Candidate] = []
        if echo is not None and _is_echo(echo):
            first = [(echo, {"value": load_profile("small")[0][1]}, "echo of small")]
            unary = [t for t in unary if t is not echo]
        if not unary:
            return first
        try:
            rest = _callable(unary, tool_calls)
        except HarnessError:
            if not first:
                raise
            rest = []
        return [*first, *rest][:MAX_CANDIDATES]
    echo = tools.get(ECHO_TOOL)
    if echo is None or not _is_echo(echo):
        raise HarnessError(
            f"payload {payload} is sent to an echo(value) tool, which the worker does not "
            f"register (it has: {registered}); use --payload call with --tool NAME"
        )
    requests = load_profile(payload)
    if len(requests) > 1 and payload.startswith(FILE_PREFIX):
        raise HarnessError(
            f"payload {payload}: bridge-service load sends one request; the file holds "
            f"{len(requests)}"
        )
    return [(echo, {"value": _echo_value(payload, requests[0][1])}, f"echo of {payload}")]


def _holds_bytes(value: Any) -> bool:
    if isinstance(value, bytes):
        return True
    if isinstance(value, dict):
        return any(_holds_bytes(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_bytes(item) for item in value)
    return False


def _echo_value(payload: str, value: Any) -> Any:
    """``value`` as echo's argument: Any-JSON, or bytes as a binary parameter (§9.7.3).

    BridgeService carries bytes only as a whole top-level argument, so a
    profile of one bytes field (``binary``) sends those bytes as ``value``;
    bytes anywhere deeper cannot be sent.
    """
    if not _holds_bytes(value):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (only,) = value.values()
        if isinstance(only, bytes):
            return only
    raise HarnessError(
        f"payload {payload} holds bytes inside a structure; a BridgeService call carries "
        "bytes only as a whole argument (a binary parameter, PROTOCOL.md §9.7.3)"
    )


def plan_tool_calls(
    argv: Sequence[str],
    payloads: Sequence[str],
    *,
    tool: str | None = None,
    tool_calls: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    timeout: float = TRIAL_TIMEOUT_S,
) -> dict[str, PlannedCall]:
    """Start the worker once, learn its tools, and plan (and try) each payload's call."""
    from snakepit_harness.transports.bridge_host import HostEmulator
    from snakepit_harness.transports.bridge_service import BridgeServiceWorker
    from snakepit_harness.transports.grpc_channel import GrpcStatusError

    calls = dict(tool_calls or {})
    planned: dict[str, PlannedCall] = {}
    with HostEmulator() as host, BridgeServiceWorker(argv, host_address=host.address) as worker:
        client = worker.client
        assert client is not None
        # The worker registers its tools with its first call in a session (§9.4).
        client.ping("snakepit-harness load", timeout=timeout)
        if not host.registered_tools():
            # Only to make it register: how it answers an unknown tool (a tool
            # error, or a status as some workers do) is conformance's business.
            with contextlib.suppress(GrpcStatusError):
                client.execute_tool(PROBE_TOOL, {}, session_id=LOAD_SESSION)
        tools = dict(host.registered_tools())
        if not tools:
            raise NoToolsRegistered(
                "the worker registered no tools with the host (RegisterTools, §9.4) after a "
                "ping and a first call, so there is nothing to load it with",
                worker.stderr_tail(),
            )
        for payload in payloads:
            candidates = _candidates(payload, tools, tool, calls)
            planned[payload] = _first_that_works(
                payload, candidates, client, timeout, worker.stderr_tail
            )
    return planned


def _first_that_works(
    payload: str,
    candidates: Sequence[Candidate],
    client: Any,
    timeout: float,
    stderr_tail: Callable[[], bytes],
) -> PlannedCall:
    """Try the candidate calls in turn; the first that succeeds is the payload's call."""
    from snakepit_harness.transports.bridge_service import build_tool_request
    from snakepit_harness.transports.grpc_channel import GrpcStatusError

    failed: list[str] = []
    for chosen, arguments, how in candidates:
        request = build_tool_request(
            chosen.name, arguments, session_id=LOAD_SESSION, stream=chosen.streaming
        )
        try:
            chunks = _trial(client, chosen, request, timeout)
        except (TrialCallFailed, GrpcStatusError) as exc:
            failed.append(str(exc))
            continue
        said = f"{how} (tried first: {'; '.join(failed)})" if failed else how
        data: bytes = request.SerializeToString()
        return PlannedCall(payload, chosen.name, chosen.streaming, data, chunks, said)
    message = f"{failed[0]}, so every point would"
    if len(failed) > 1:
        message += f"; and the other tools tried failed too: {'; '.join(failed[1:])}"
    raise TrialCallFailed(message, stderr_tail())


def _trial(client: Any, tool: ToolInfo, request: Any, timeout: float) -> int:
    """Make the call once; its chunk count (streams) or 0.  TrialCallFailed if it failed."""
    if tool.streaming:
        chunks = list(client.open_stream(request, timeout=timeout))
        problem = check_tool_stream([c.SerializeToString() for c in chunks])
        count = len(chunks)
    else:
        answer = client.call("ExecuteTool", request, timeout)
        problem = check_tool_response(answer.SerializeToString())
        count = 0
    if problem is not None:
        raise TrialCallFailed(f"the trial call of {tool.name!r} failed: {problem}")
    return count


def check_tool_response(answer: bytes) -> str | None:
    """Why a serialised ``ExecuteToolResponse`` is not a success (None when it is)."""
    from snakepit_harness.protos.snakepit_bridge_pb2 import ExecuteToolResponse

    response = ExecuteToolResponse.FromString(answer)
    if response.success:
        return None
    return f"the tool answered success=false: {response.error_message[:200]!r}"


def check_tool_stream(chunks: Sequence[bytes]) -> str | None:
    """Why serialised ``ToolChunk`` messages are not one clean stream (§9.8)."""
    from snakepit_harness.protos.snakepit_bridge_pb2 import ToolChunk

    if not chunks:
        return "the stream ended without a chunk"
    last = ToolChunk.FromString(chunks[-1])
    if not last.is_final:
        return f"the stream's last chunk (of {len(chunks)}) is not marked is_final"
    return None
