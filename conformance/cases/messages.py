"""§4 Messages: pipelining and order, failure-response shape; §6.1 ping counters.

Most §4 and §6 cases are golden-frame files (fixtures/golden); these need
logic a file cannot express.

Spec decisions:

* §4.7 is checked by content, not by id: eight requests go out in one write
  (echoes carrying a sequence number, a health ping, an unknown command, a
  malformed frame), and the answers must come back in that order, each
  exactly once; a sentinel ping afterwards must be the very next answer.
  A bridge that does not echo ids fails only the ``messages.id-*`` cases.
* §4.2 failure shape is checked on the answer to ``compute`` divide-by-zero
  (a failure every bridge must signal, §6.3).  A bridge that signals it in the
  legacy form has no failure envelope to check: SKIP (the legacy form is
  graded by ``messages.handler-error``).
"""

from __future__ import annotations

import itertools
from typing import Any, Final

from snakepit_harness.protocol import ERROR_TYPES, encode_frame, failure_form

from ..drivers.stdio import StdioCaseContext
from ..model import CaseFailed
from ._transport import STDIO_CASES

PIPELINE_DEPTH: Final = 8

# Every case here applies to each stdio profile and codec, on the shared bridge.
_case: Final = STDIO_CASES


def _pipeline_requests(codec_name: str) -> list[tuple[str, Any]]:
    """(kind, request) pairs; kind says how to recognise the answer."""
    echo = [
        ("echo", {"id": 800 + i, "command": "echo", "args": {"seq": i, "pad": "p" * (i * 97)}})
        for i in range(PIPELINE_DEPTH - 3)
    ]
    return [
        echo[0],
        ("ping", {"id": 811, "command": "ping", "args": {"health_check": True}}),
        echo[1],
        ("failure", {"id": 812, "command": "no_such_command_conformance", "args": {}}),
        echo[2],
        ("malformed", None),
        *echo[3:],
    ]


def _recognise(kind: str, request: Any, reply: Any) -> bool:
    if not isinstance(reply, dict):
        return False
    result = reply.get("result")
    if kind == "echo":
        echoed = result.get("echoed") if isinstance(result, dict) else None
        return isinstance(echoed, dict) and echoed.get("seq") == request["args"]["seq"]
    if kind == "ping":
        return reply.get("success") is True and isinstance(result, dict) and "echoed" not in result
    # failures: the modern or the legacy form
    return failure_form(reply) != "none"


@_case("messages.pipelining", section="4.7", level="required")
def pipelining(ctx: StdioCaseContext) -> None:
    """Requests sent together, before any answer is read, are each answered exactly once, in the
    order received.
    """
    plan = _pipeline_requests(ctx.codec_name)
    wire = bytearray()
    for kind, request in plan:
        if kind == "malformed":
            wire += encode_frame(b"\xc1" if ctx.codec_name == "msgpack" else b"{not json")
        else:
            wire += encode_frame(ctx.codec.encode(request))
    ctx.event(f"sent {len(plan)} frames in one write ({len(wire)} bytes)")
    ctx.send_raw(bytes(wire))
    # A malformed frame SHOULD be answered (§4.3); a bridge that stays silent
    # on it is judged by the messages.malformed.* cases, not here.
    sentinel = {"id": 899, "command": "ping", "args": {}}
    ctx.send_value(sentinel)
    expected = [*plan, ("ping", sentinel)]
    answers: list[Any] = []
    for _ in range(len(expected) + 1):
        reply = ctx.read_value()
        answers.append(reply)
        if len(answers) >= len(expected) - 1 and _recognise("ping", sentinel, reply):
            break
    else:
        raise CaseFailed(f"more answers than requests: {len(answers)} for {len(expected)}")
    if len(answers) == len(expected) - 1:
        expected = [e for e in expected if e[0] != "malformed"]  # silent on it
    if len(answers) != len(expected):
        raise CaseFailed(
            f"{len(answers)} answers for {len(expected)} requests (each exactly once, §4.7)"
        )
    for index, ((kind, request), reply) in enumerate(zip(expected, answers, strict=True)):
        ok = failure_form(reply) != "none" if kind == "malformed" else None
        if ok is None:
            ok = _recognise(kind, request, reply)
        if not ok:
            what = kind + (f" seq {request['args']['seq']}" if kind == "echo" else "")
            raise CaseFailed(
                f"answer #{index} should answer request #{index} ({what}) but is {reply!r}"[:400]
                + " (answers must come exactly once, in request order)"
            )


@_case("messages.error-shape", section="4.2", level="required")
def error_shape(ctx: StdioCaseContext) -> None:
    """A failure response has success false, a non-empty error string and a timestamp string (SHOULD
    an error_type from the §4.2 list).
    """
    reply = ctx.request(
        {"id": 901, "command": "compute", "args": {"operation": "divide", "a": 1, "b": 0}}
    )
    form = failure_form(reply)
    if form == "legacy":
        ctx.skip("the bridge signals this failure in the legacy form (messages.handler-error)")
    if form == "none":
        ctx.skip("the bridge did not signal this failure (messages.handler-error)")
    ctx.require_match(
        reply,
        {"success": False, "error": {"$type": "string", "$nonEmpty": True}},
        "failure response",
    )
    ctx.require(
        isinstance(reply.get("timestamp"), str),
        f"`timestamp` must be a string on every response (§4.2), got {reply.get('timestamp')!r}",
    )
    error_type = reply.get("error_type")
    ctx.recommend(
        isinstance(error_type, str) and error_type in ERROR_TYPES,
        f"error_type should be one of the §4.2 list, got {error_type!r}",
    )


@_case("commands.ping.counters", section="6.1", level="recommended")
def ping_counters(ctx: StdioCaseContext) -> None:
    """ping's uptime and requests_handled never decrease from one ping to the next."""
    samples: list[tuple[Any, Any]] = []
    for _ in range(3):
        reply = ctx.request({"id": ctx.next_id(), "command": "ping", "args": {}})
        result = reply.get("result") if isinstance(reply, dict) else None
        if not isinstance(result, dict):
            raise CaseFailed(f"ping answered without a result object: {reply!r}"[:300])
        samples.append((result.get("uptime"), result.get("requests_handled")))
    for name, index in (("uptime", 0), ("requests_handled", 1)):
        values = [s[index] for s in samples]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(numbers) != len(values):
            ctx.recommend(False, f"{name} should be a number, got {values!r}")
            continue
        ctx.recommend(
            all(a <= b for a, b in itertools.pairwise(numbers)),
            f"{name} decreased between pings: {values!r}",
        )
