"""The fuzz properties: what must hold for every input hypothesis can think of.

Each property is a function ``(context, data)`` that draws its input from
``data`` (hypothesis' interactive draws, so a run can stop early on a time
budget without drawing anything), performs one exchange with the bridge and
raises :class:`PropertyFailed` with the exact bytes and the problems found.
The first line of each docstring is the property's statement; reports and
regression files quote it.

A failure on a bridge that already served earlier examples is tried again on a
fresh bridge, so that the recorded bytes reproduce it from a cold start (a
regression file replays against a new process); a failure that needs the
earlier traffic is still reported, marked as depending on history.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from hypothesis import strategies as st

from ..protocol import STDIO_PROFILES
from .oracle import match_responses, normalise, same_value
from .strategies import (
    Expectation,
    SplitPlan,
    Step,
    compute_requests,
    frame,
    frame_steps,
    request_ids,
    split_plans,
    valid_steps,
)
from .target import Exchange, StdioTarget, sentinel_step
from .values import args_objects, encode_payload, json_styles

__all__ = [
    "PROPERTIES",
    "FoundFailure",
    "FuzzContext",
    "Property",
    "PropertyFailed",
]

# Byte-by-byte writes wait for the bridge to read each byte; past this many
# bytes the rest of the stream goes in one write (the header and the first
# payloads, where split bugs live, are still covered).
BYTEWISE_MAX_BYTES: Final = 1024


@dataclass
class FuzzContext:
    """What a property needs: the bridge and the profile it claims."""

    target: StdioTarget
    profile: str
    # Retry a failure on a fresh bridge (a self-contained transcript).  The
    # runner turns it off while shrinking, where a restart per failing
    # candidate would dominate the time, and back on for the final replay.
    retry_fresh: bool = True

    @property
    def codec(self) -> str:
        return self.target.codec_name


class PropertyFailed(AssertionError):
    """A property does not hold; carries everything needed to reproduce and explain it."""

    def __init__(
        self,
        problems: Sequence[str],
        steps: Sequence[Step],
        exchange: Exchange,
        codec: str,
        *,
        history_dependent: bool = False,
        split: str = "",
        expected_responses: Sequence[Any] | None = None,
        timeline: Sequence[tuple[str, int]] | None = None,
    ) -> None:
        text = "; ".join(problems)
        if history_dependent:
            text += " (only after earlier traffic: a fresh bridge passed this input)"
        super().__init__(text)
        self.problems = list(problems)
        self.steps = list(steps)
        self.exchange = exchange
        self.codec = codec
        self.history_dependent = history_dependent
        self.split = split
        # For split-write failures: the answers to the same frames written whole.
        self.expected_responses = None if expected_responses is None else list(expected_responses)
        # For state machines: ("write", chunk index) and ("read", step index) in the
        # order they happened; None means every write, then every read.
        self.timeline = None if timeline is None else list(timeline)
        # For gRPC failures: the calls made, in order, with what came back.
        self.grpc_calls: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class FoundFailure:
    """A failure as it is saved: what broke, where, and what repeats the run that found it."""

    failure: PropertyFailed
    prop: Property
    profile: str
    codec_mode: str
    seed: int
    bridge_argv: Sequence[str]
    timeout: float  # the response timeout the run used; a replay uses it too

    @property
    def command(self) -> str:
        """The bridge's command line, as a user would type it."""
        return " ".join(self.bridge_argv)


def _problems(exchange: Exchange, steps: Sequence[Step], codec: str) -> list[str]:
    problems = match_responses(steps, exchange.responses, codec)
    if exchange.trouble:
        problems.insert(0, exchange.trouble)
    return problems


def _check(
    ctx: FuzzContext,
    steps: Sequence[Step],
    chunks: Sequence[bytes],
    *,
    split: str = "whole frames",
    judge: Callable[[Exchange], list[str]] | None = None,
    expected_responses: Sequence[Any] | None = None,
) -> Exchange:
    """Run one exchange; on trouble retry on a fresh bridge, then raise PropertyFailed."""
    target = ctx.target
    codec = ctx.codec
    framing = bool(steps) and steps[-1].breaks_framing

    def attempt() -> tuple[Exchange, list[str]]:
        if framing:
            exchange = target.exchange_then_eof(chunks)
        else:
            exchange = target.exchange(chunks, expected_frames=len(steps))
        problems = _problems(exchange, steps, codec)
        if not problems and judge is not None:
            problems = judge(exchange)
        return exchange, problems

    had_history = target.served > 0 and not framing and ctx.retry_fresh
    exchange, problems = attempt()
    if not problems:
        return exchange
    history_dependent = False
    if had_history:
        target.discard()
        fresh, fresh_problems = attempt()
        if fresh_problems:
            exchange, problems = fresh, fresh_problems
        else:
            history_dependent = True
    # One raise statement: hypothesis tells bugs apart by where they are raised.
    raise PropertyFailed(
        problems,
        steps,
        exchange,
        codec,
        history_dependent=history_dependent,
        split=split,
        expected_responses=expected_responses,
    )


def _with_sentinel(steps: Sequence[Step], codec: str) -> list[Step]:
    if steps and steps[-1].breaks_framing:
        return list(steps)
    return [*steps, sentinel_step(codec)]


def _whole(steps: Sequence[Step]) -> list[bytes]:
    return [step.wire for step in steps]


# -- the properties -----------------------------------------------------------


def valid_requests_answered(ctx: FuzzContext, data: st.DataObject) -> None:
    """Every valid request gets exactly one well-formed response with its id, in order, and the bridge stays alive.

    The requests (§6, and §7.3 for ``enhanced``) are written pipelined (§4.7):
    one write each, or all in one write; then a sentinel ``ping`` must answer.
    """  # noqa: E501
    codec = ctx.codec
    steps = _with_sentinel(data.draw(valid_steps(ctx.profile, codec, max_size=8)), codec)
    coalesced = data.draw(st.booleans(), label="coalesced")
    chunks = [b"".join(_whole(steps))] if coalesced else _whole(steps)
    _check(ctx, steps, chunks, split="coalesced" if coalesced else "whole frames")


def echo_round_trips(ctx: FuzzContext, data: st.DataObject) -> None:
    """echo returns exactly what it was given, for every value the codec can carry.

    §6.2 and §3: deep nesting, unicode edge cases, integers past 2^53 and at the
    64-bit limits, -0.0, and (MessagePack) bytes that must stay bytes.
    """
    codec = ctx.codec
    args = data.draw(args_objects(codec, large=True), label="args")
    request_id = data.draw(request_ids(codec), label="id")
    style = data.draw(json_styles(), label="style")
    request = {"id": request_id, "command": "echo", "args": args}
    step = Step(
        wire=frame(encode_payload(request, codec, style)),
        label="valid 'echo' request",
        request=request,
        expect=Expectation("echo", args),
    )
    steps = _with_sentinel([step], codec)
    _check(ctx, steps, _whole(steps))


def compute_matches_python(ctx: FuzzContext, data: st.DataObject) -> None:
    """compute agrees with Python arithmetic; division by zero and non-numbers are signalled as failures.

    §6.3: ``divide`` is true division; an unknown operation, a zero divisor
    and (SHOULD) a non-numeric operand fail without ending the bridge.
    """  # noqa: E501
    codec = ctx.codec
    body, expect = data.draw(compute_requests(codec), label="compute")
    request = {"id": data.draw(st.integers(1, 2**31 - 1), label="id"), **body}
    step = Step(
        wire=frame(encode_payload(request, codec)),
        label="valid 'compute' request",
        request=request,
        expect=expect,
    )
    steps = _with_sentinel([step], codec)
    _check(ctx, steps, _whole(steps))


def invalid_frames_survived(ctx: FuzzContext, data: st.DataObject) -> None:
    """Any byte sequence that is not a valid frame leaves the bridge answering a following ping (or exiting within the spec's limits where allowed), never hanging.

    Payload damage (§3.3, §4.3) must be survived: the sentinel ``ping`` after it
    is answered, and each malformed frame gets at most one well-formed answer.
    Framing damage (§2.3-§2.5: truncated headers, lengths off by one, oversize
    lengths, stray bytes) cannot be resynchronised, so the input then ends and
    the bridge must exit within 2 s, having answered every whole request first.
    """  # noqa: E501
    codec = ctx.codec
    steps = _with_sentinel(data.draw(frame_steps(ctx.profile, codec), label="frames"), codec)
    coalesced = data.draw(st.booleans(), label="coalesced")
    chunks = [b"".join(_whole(steps))] if coalesced else _whole(steps)
    _check(ctx, steps, chunks, split="coalesced" if coalesced else "whole frames")


def _bytewise(data: bytes) -> list[bytes]:
    head = data[:BYTEWISE_MAX_BYTES]
    chunks = [head[i : i + 1] for i in range(len(head))]
    if len(data) > BYTEWISE_MAX_BYTES:
        chunks.append(data[BYTEWISE_MAX_BYTES:])
    return chunks


def split_writes_agree(ctx: FuzzContext, data: st.DataObject) -> None:
    """The same frames written whole, byte by byte, or coalesced produce the same responses.

    §2.1: framing is by length alone, so how the host's writes cut the stream
    (inside a header, inside a UTF-8 character, several frames at once) must
    not change a single answer.  Every cut is read by the bridge before the
    next write, so splits really arrive as separate reads.
    """
    codec = ctx.codec
    # Generic commands only: their answers do not depend on earlier requests.
    drawn = data.draw(
        frame_steps("v2", codec, allow_framing_damage=False, huge=False), label="frames"
    )
    steps = _with_sentinel(drawn, codec)
    stream = b"".join(_whole(steps))
    cut: SplitPlan = data.draw(split_plans(len(stream)), label="cuts")
    baseline = _check(ctx, steps, _whole(steps)).responses
    want = normalise(baseline)
    plans = (
        ("coalesced", [stream]),
        ("byte by byte", _bytewise(stream)),
        (f"split at {list(cut.cuts)}", cut.chunks(stream)),
    )
    for name, chunks in plans:

        def differs(exchange: Exchange, name: str = name) -> list[str]:
            got = normalise(exchange.responses)
            same = same_value(want, got, codec) is None  # NaN equals NaN here
            return [] if same else [_difference(want, got, name, codec)]

        _check(ctx, steps, chunks, split=name, judge=differs, expected_responses=baseline)


def _difference(want: Any, got: Any, name: str, codec: str) -> str:
    for index, (a, b) in enumerate(zip(want, got, strict=False)):
        if same_value(a, b, codec) is not None:
            return (
                f"written {name}, response {index} differs from the one to whole frames "
                f"(§2.1): {b!r} instead of {a!r}"
            )
    return f"written {name}, {len(got)} responses instead of {len(want)} (§2.1)"


# -- registry -----------------------------------------------------------------

PropertyBody = Callable[[FuzzContext, st.DataObject], None]

_STDIO: Final = frozenset(STDIO_PROFILES)


@dataclass(frozen=True)
class Property:
    """A named property, the profiles it applies to, and the spec section it rests on."""

    name: str
    body: PropertyBody
    section: str
    profiles: frozenset[str] = _STDIO

    @property
    def statement(self) -> str:
        doc = self.body.__doc__ or self.name
        return doc.strip().splitlines()[0]


PROPERTIES: Final[tuple[Property, ...]] = (
    Property("responses", valid_requests_answered, "4.7"),
    Property("echo", echo_round_trips, "6.2"),
    Property("compute", compute_matches_python, "6.3"),
    Property("invalid-frames", invalid_frames_survived, "4.3"),
    Property("split-writes", split_writes_agree, "2.1"),
)
