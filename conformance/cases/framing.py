"""§2 Framing: stdout holds only frames, big frames both ways, oversize headers, EOF, flushing.

Spec decisions:

* §2.3 oversize header: "more than the bridge's maximum" cannot be known from
  outside, so ``framing.oversize-header`` announces 0xFFFFFFFF bytes (the most a
  header can say, beyond any sensible maximum) and streams 256 MiB of it while
  sampling memory: the bridge must not buffer what it can never accept (its
  group's resident memory must not grow by ``BUFFERING_LIMIT`` while the bytes
  arrive) nor allocate the announced size (VmPeak/VmHWM must not grow by
  ``ALLOCATION_LIMIT``), and may answer
  ``frame_too_large`` at once, keep waiting to discard the rest, or exit
  non-zero with a message on stderr.  An exit with a memory error on stderr
  counts as having tried to allocate.  ``framing.oversize-discard`` (SHOULD)
  announces 64 MiB + 1 (over the reference default limit), sends all of it,
  and expects ``frame_too_large`` with ``id: null`` and a bridge still
  serving; a bridge whose limit is higher answers the bytes as an ordinary
  (malformed) frame, which passes with a note.
* §2.2 16 MiB: the request case sends a ``ping`` whose payload is exactly
  16 MiB (so the answer is small); the response case sends an ``echo`` whose
  answer is just under 16 MiB.
* §2.2 "configurable maximum" and §2.7 "stdout stays clean when adapter code
  prints" cannot be observed through the generic commands: no case.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from snakepit_harness.errors import BridgeCrashed, BridgeTimeout, RemoteProtocolError
from snakepit_harness.protocol import (
    ERROR_TYPES,
    HEADER_SIZE,
    SPEC_MIN_FRAME_SIZE,
    encode_header,
    get_codec,
)

from ..drivers.stdio import StdioCaseContext
from ..model import BridgeUse, CaseFailed, CaseSkipped, Grade
from ..probes import (
    StartupProbe,
    expect_alive,
    group_memory,
    memory_growth,
    startup_probe,
)
from ._common import (
    Member,
    declare_family,
    expect_exit_within_limit,
    recommend_clean_exit,
)
from ._transport import STDIO_CASES

# The most a 4-byte header can announce.
HUGE_ANNOUNCEMENT: Final = 0xFFFFFFFF
# Bytes of the huge frame's body streamed after its header: enough that a
# bridge buffering the payload as it arrives (no limit at all, on its way to
# the 4 GiB announced) grows by far more than any discarding bridge, little
# enough to take a second or two.
HUGE_STREAMED: Final = 256 * 1024 * 1024
# Resident growth (VmHWM) while those bytes arrive that counts as buffering
# them: a quarter of what was sent.  A bridge that discards in bounded chunks
# (§2.3) stays within a few MiB.
BUFFERING_LIMIT: Final = 64 * 1024 * 1024
# Memory is sampled each time this much more of the body has been written.
HUGE_SAMPLE_EVERY: Final = 32 * 1024 * 1024
# The streaming stops after this long whatever was sent (a slow machine).
HUGE_STREAM_WINDOW: Final = 6.0
# A write that makes no progress for this long means the bridge stopped
# reading (it waits, answered, or is busy): streaming ends there.
HUGE_WRITE_STALL: Final = 1.0
# Growth of VmPeak/VmHWM that counts as allocating the announced size at
# once: far above what reading the body costs, far below the 4 GiB announced.
ALLOCATION_LIMIT: Final = 512 * 1024 * 1024
# How long to give a bridge to react to the huge header before measuring.
OVERSIZE_SETTLE: Final = 0.3
# Over the reference default maximum (64 MiB), so a bridge with the default
# limit must discard it.
DISCARD_ANNOUNCEMENT: Final = 64 * 1024 * 1024 + 1
_CHUNK: Final = 1024 * 1024
# Stderr words that say the bridge tried to allocate and failed.
MEMORY_ERROR_WORDS: Final = ("MemoryError", "bad_alloc", "out of memory", "Cannot allocate")
# Bytes the large-response echo's answer stays under 16 MiB by (envelope room).
ENVELOPE_ROOM: Final = 4096

# Frames of 16 MiB and more take a while to encode, pipe and decode on a slow
# machine: the cases that send or receive one get this long.
BIG_FRAME_TIMEOUT: Final = 30.0

# Every case here applies to each stdio profile and codec (STDIO_CASES).
# What the start-up gates share: a raw bridge (the start-up probe starts it as
# a host does), and a failure blocks the cases that need a working bridge (so a
# gate is always required).
_gate_case: Final = STDIO_CASES.preset(bridge=BridgeUse.RAW, gate=True)
GateBody = Callable[[StdioCaseContext, StartupProbe, bool], None]
# The §2.2 16 MiB cases, on the shared bridge.
_big_frame_case: Final = STDIO_CASES.preset(timeout=BIG_FRAME_TIMEOUT)
# Cases that leave their bridge unfit for the next case (gigabytes announced,
# stdin closed) get one of their own.
_own_bridge_case: Final = STDIO_CASES.preset(bridge=BridgeUse.FRESH)


# -- gates ------------------------------------------------------------------


def _gate(id: str, *, section: str) -> Callable[[GateBody], GateBody]:
    """Declare a start-up gate: its body judges the start-up probe, run once for the
    three gates (``body(ctx, probe, probed_here)``, ``probed_here`` when this gate ran it);
    the body's docstring is the requirement."""

    def declare(body: GateBody) -> GateBody:
        @functools.wraps(body)  # the case's source and requirement are the body's
        def run(ctx: StdioCaseContext) -> None:
            body(ctx, *startup_probe(ctx))

        _gate_case(id, section=section, level="required")(run)
        return body

    return declare


@_gate("framing.stdout-clean", section="2.1")
def stdout_clean(ctx: StdioCaseContext, probe: StartupProbe, probed_here: bool) -> None:
    """The bridge writes nothing to stdout but frames (diagnostics go to stderr)."""
    if probe.garbage or probe.garbage_error:
        ctx.event(f"stdout bytes that are not frames (hex): {probe.garbage.hex()}")
        ctx.event(f"as text: {probe.garbage.decode('utf-8', 'replace')!r}")
        raise RemoteProtocolError(
            f"stdout holds bytes that are not frames at start-up: {probe.garbage_error}"
        )
    _skip_if_any(probe, UNUSABLE_NEGOTIATION, WRONG_CODEC, UNFLUSHED, UNANSWERED)
    # A few more answers on a ready bridge: text printed per request shows up
    # here.  Only ping and echo: other commands' defects belong to their cases.
    try:
        if not probed_here:
            ctx.driver.handshake(ctx)
        for request in (
            {"id": 101, "command": "ping", "args": {}},
            {"id": 102, "command": "echo", "args": {"text": "stdout check"}},
        ):
            ctx.send_value(request)
            ctx.read_frame()
    except (BridgeTimeout, BridgeCrashed) as exc:
        raise _blocked(f"ping/echo did not answer ({exc}); see the other cases") from exc
    ctx.bridge.wait_stdout_eof(0.05)
    leftover = ctx.bridge.unread_bytes()
    if leftover:
        ctx.event(f"stdout bytes after the answers (hex): {leftover.hex()}")
        raise RemoteProtocolError("stdout holds bytes after the last answer that are not frames")


@dataclass(frozen=True)
class StartupProblem:
    """A start-up problem that one case judges (named in ``why``): another gate
    that meets it cannot judge, and skips saying so."""

    shows: Callable[[StartupProbe], object]
    why: str  # the skip's reason; ``{probe}`` stands for the probe

    def skip_if_shown(self, probe: StartupProbe) -> None:
        if self.shows(probe):
            raise _blocked(self.why.format(probe=probe))


GARBAGE: Final = StartupProblem(
    lambda p: p.garbage_error, "stdout holds garbage (framing.stdout-clean)"
)
UNUSABLE_NEGOTIATION: Final = StartupProblem(
    lambda p: p.negotiation_error,
    "the negotiation answer is unusable (negotiation.*): {probe.negotiation_error}",
)
WRONG_CODEC: Final = StartupProblem(
    lambda p: p.codec_error, "the first answer is not in the run's codec (lifecycle.startup)"
)
UNFLUSHED: Final = StartupProblem(
    lambda p: p.answered_only_after_eof or p.steady_unflushed,
    "answers came only after end of input (framing.flush)",
)
UNANSWERED: Final = StartupProblem(
    lambda p: not p.answered, "the bridge never answered at start-up (lifecycle.startup)"
)


def _skip_if_any(probe: StartupProbe, *problems: StartupProblem) -> None:
    """Skip at the first of ``problems`` (in order) that the probe shows."""
    for problem in problems:
        problem.skip_if_shown(probe)


def _blocked(why: str) -> Exception:
    return CaseSkipped(f"cannot judge: {why}")


@_gate("framing.flush", section="2.6")
def flush(ctx: StdioCaseContext, probe: StartupProbe, probed_here: bool) -> None:
    """Each response is flushed at once: the host need not send more input (or close stdin) to
    receive it.
    """
    _skip_if_any(probe, GARBAGE, UNUSABLE_NEGOTIATION, WRONG_CODEC)
    if UNFLUSHED.shows(probe):  # this case's own verdict
        raise CaseFailed(
            "an answer arrived only after the harness closed the bridge's stdin: "
            "the bridge does not flush its responses"
        )
    UNANSWERED.skip_if_shown(probe)
    # The probe already sent a second request once the bridge was up and saw
    # it answered with stdin open: steady-state flushing is judged too.


@_gate("lifecycle.startup", section="5.1")
def startup(ctx: StdioCaseContext, probe: StartupProbe, _: bool) -> None:
    """The bridge answers its first request within 20 s of being started (SHOULD within 2 s)."""
    GARBAGE.skip_if_shown(probe)
    if probe.answered_only_after_eof:
        raise _blocked("the first answer came only after end of input (framing.flush)")
    ctx.event(f"start-up bytes sent (hex): {probe.sent.hex()}")
    if probe.exit_description:
        raise BridgeCrashed(
            f"the bridge ended before answering its first request: {probe.exit_description}",
            probe.stderr_tail,
        )
    if probe.timed_out or probe.first_answer is None:
        raise BridgeTimeout(
            f"no answer to the first request within {ctx.settings.startup_timeout:.0f} s",
            probe.stderr_tail,
        )
    ctx.event(f"first answer after {probe.first_answer:.3f} s")
    if probe.codec_error:
        raise CaseFailed(probe.codec_error)
    ctx.recommend(
        probe.first_answer <= 2.0,
        f"the first answer took {probe.first_answer:.2f} s (should be within 2 s)",
    )


# -- big frames --------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _padding_length(command: str, request_id: int, codec_name: str, size: int) -> int:
    """Characters of ``args.padding`` that make the encoded request exactly ``size`` bytes.

    Cached: ``check`` runs many configurations in one process, and encoding
    16 MiB requests over and over to find the length is pure waste.
    """
    request = {"id": request_id, "command": command, "args": {}}
    return len(_padded(request, codec_name, size)["args"]["padding"])


def _padded(request: dict[str, Any], codec_name: str, size: int) -> dict[str, Any]:
    """``request`` with ``args.padding`` sized so the encoded payload is ``size`` bytes."""
    codec = get_codec(codec_name)
    request = {**request, "args": {**request["args"], "padding": ""}}
    base = len(codec.encode(request))
    # A str's header grows with its length under MessagePack (str8/16/32);
    # adjust until exact.
    pad = size - base
    for _ in range(8):
        request["args"]["padding"] = "x" * max(0, pad)
        got = len(codec.encode(request))
        if got == size:
            return request
        pad += size - got
    raise RuntimeError(f"cannot pad a request to exactly {size} bytes")


@_big_frame_case("framing.large-request", section="2.2", level="required")
def large_request(ctx: StdioCaseContext) -> None:
    """The bridge accepts a request frame whose payload is 16 MiB."""
    pad = _padding_length("ping", 301, ctx.codec_name, SPEC_MIN_FRAME_SIZE)
    request = {"id": 301, "command": "ping", "args": {"padding": "x" * pad}}
    ctx.send_value(request)
    reply = ctx.read_value()
    ctx.require_match(reply, {"success": True}, "the answer to a 16 MiB ping")


@_big_frame_case("framing.large-response", section="2.2", level="required")
def large_response(ctx: StdioCaseContext) -> None:
    """The bridge sends a response frame of (nearly) 16 MiB whole and intact."""
    pad = _padding_length("echo", 302, ctx.codec_name, SPEC_MIN_FRAME_SIZE - ENVELOPE_ROOM)
    padding = "x" * pad
    ctx.send_value({"id": 302, "command": "echo", "args": {"padding": padding}})
    payload = ctx.read_frame()
    reply = ctx.decode(payload)
    result = reply.get("result") if isinstance(reply, dict) else None
    echoed = result.get("echoed") if isinstance(result, dict) else None
    if not isinstance(echoed, dict) or echoed.get("padding") != padding:
        got = echoed.get("padding") if isinstance(echoed, dict) else echoed
        length = len(got) if isinstance(got, str) else None
        raise CaseFailed(
            f"the {len(payload)}-byte answer does not carry the {len(padding)}-character "
            f"string back intact (got {type(got).__name__} of length {length})"
        )
    ctx.event(f"answer of {len(payload)} bytes carried the string intact")


# -- oversize ----------------------------------------------------------------


def _memory_words(stderr: bytes) -> str | None:
    text = stderr.decode("utf-8", "replace")
    return next((w for w in MEMORY_ERROR_WORDS if w in text), None)


@_own_bridge_case("framing.oversize-header", section="2.3", level="required")
def oversize_header(ctx: StdioCaseContext) -> None:
    """A header announcing more than the bridge's maximum does not make the bridge allocate that
    amount.
    """
    before = group_memory(ctx.bridge)
    if not before:
        ctx.note("no /proc memory figures for the bridge: allocation not measured")
    ctx.send_raw(encode_header(HUGE_ANNOUNCEMENT))
    streamed = _stream_body(ctx, before)
    ctx.event(f"streamed {streamed // (1024 * 1024)} MiB of the announced body")
    # Give the bridge a moment to do whatever it does with the header.
    answer: bytes | None = None
    try:
        answer = ctx.read_frame(OVERSIZE_SETTLE)
    except BridgeTimeout:
        pass
    except BridgeCrashed:
        pass
    after = group_memory(ctx.bridge)
    growth = memory_growth(before, after)
    ctx.event(f"memory growth of the bridge's processes: {growth // 1024} KiB")
    if growth >= ALLOCATION_LIMIT:
        raise CaseFailed(
            f"the bridge's memory grew by {growth // (1024 * 1024)} MiB after a header "
            f"announcing {HUGE_ANNOUNCEMENT} bytes: it allocates what the header says"
        )
    status = ctx.bridge.poll()
    if status is not None:
        ctx.bridge.wait_stderr_eof(1.0)
        stderr = ctx.bridge.stderr_tail()
        word = _memory_words(stderr)
        if word:
            raise CaseFailed(
                f"the bridge ended ({status}) with {word!r} on stderr: it tried to allocate "
                "the announced size"
            )
        if status < 0:
            raise BridgeCrashed(
                f"the bridge was killed by signal {-status} after an oversize header",
                stderr,
                status,
            )
        if status == 0 or not stderr.strip():
            ctx.add_finding(
                Grade.NON_STRICT,
                f"the bridge exited with status {status} "
                f"{'and nothing on stderr' if not stderr.strip() else ''}; it MAY exit only "
                "with a non-zero status after a message on stderr, and SHOULD keep serving",
            )
        else:
            ctx.note(f"the bridge exited with status {status} (allowed: §2.3 MAY)")
        return
    if answer is not None:
        reply = ctx.decode(answer)
        ctx.recommend_match(
            reply,
            {"success": False, "id": None, "error_type": "frame_too_large"},
            "the answer to an oversize header",
        )


def _stream_body(ctx: StdioCaseContext, before: dict[int, dict[str, int]]) -> int:
    """Write zeros after the huge header while the bridge reads them; FAIL as soon as
    its resident memory grows with them.  Returns the bytes written."""
    chunk = bytes(_CHUNK)
    streamed = 0
    window_ends = time.monotonic() + min(HUGE_STREAM_WINDOW, ctx.remaining())
    while streamed < HUGE_STREAMED and time.monotonic() < window_ends:
        try:
            ctx.bridge.send_bytes(chunk, min(HUGE_WRITE_STALL, ctx.remaining()))
        except (BridgeTimeout, BridgeCrashed):
            break  # it stopped reading (waits, answered) or ended: judged below
        ctx.record_sent(chunk)  # counted; the record keeps only its first bytes
        streamed += len(chunk)
        if streamed % HUGE_SAMPLE_EVERY == 0 or streamed == HUGE_STREAMED:
            growth = memory_growth(before, group_memory(ctx.bridge), keys=("VmHWM",))
            if growth >= BUFFERING_LIMIT:
                raise CaseFailed(
                    f"the bridge's resident memory grew by {growth // (1024 * 1024)} MiB while "
                    f"{streamed // (1024 * 1024)} MiB of a frame announcing "
                    f"{HUGE_ANNOUNCEMENT} bytes arrived: it buffers a payload it can never "
                    "accept, on its way to allocating the announced amount"
                )
            if ctx.bridge.poll() is not None:
                break
    return streamed


@_own_bridge_case(
    "framing.oversize-discard", section="2.3", level="recommended", timeout=BIG_FRAME_TIMEOUT
)
def oversize_discard(ctx: StdioCaseContext) -> None:
    """After an oversize frame the bridge discards its payload, answers frame_too_large with id
    null, and keeps serving.
    """
    ctx.send_raw(encode_header(DISCARD_ANNOUNCEMENT))
    chunk = bytes(_CHUNK)
    left = DISCARD_ANNOUNCEMENT
    try:
        while left:
            part = chunk[: min(left, _CHUNK)]
            ctx.bridge.send_bytes(part, ctx.remaining())
            left -= len(part)
    except BridgeCrashed as exc:
        status = ctx.bridge.poll()
        raise CaseFailed(
            f"the bridge stopped reading and ended ({exc}) instead of discarding the payload "
            f"(exit status {status}); §2.3 allows that only as a MAY",
            Grade.NON_STRICT,
        ) from exc
    ctx.record_sent(b"(" + str(DISCARD_ANNOUNCEMENT).encode() + b" zero bytes)")
    reply = ctx.read_value()
    other_errors = ERROR_TYPES - {"frame_too_large"}
    if isinstance(reply, dict) and reply.get("error_type") in other_errors:
        ctx.note(
            f"the bridge took a {DISCARD_ANNOUNCEMENT}-byte frame as ordinary "
            f"(answered {reply.get('error_type')}): its maximum is higher; "
            "discarding not checked"
        )
        expect_alive(ctx, "after a 64 MiB frame")
        return
    ctx.recommend_match(
        reply,
        {"success": False, "id": None, "error_type": "frame_too_large"},
        "the answer to an oversize frame",
    )
    expect_alive(ctx, "after an oversize frame")


# -- end of input --------------------------------------------------------------


@dataclass(frozen=True)
class EndOfInput:
    """Where in the stream end of input comes (§2.5): one case each."""

    slug: str  # the case id's last part
    where: str  # as the requirement says it
    sent_first: bytes  # what the harness sends before closing stdin
    # Only end of input on a frame boundary is a clean end that SHOULD exit 0.
    status_matters: bool = False

    @property
    def requirement(self) -> str:
        should = " (SHOULD with status 0)" if self.status_matters else ""
        return f"At end of input {self.where} the bridge exits within 2 s{should}."


END_OF_INPUT: Final = (
    EndOfInput("at-boundary", "on a frame boundary", b"", status_matters=True),
    EndOfInput(
        "inside-frame",
        "in the middle of a frame's payload",
        encode_header(100) + b'{"id": 1, "comm',
    ),
    EndOfInput(
        "inside-header", "in the middle of a frame header", encode_header(100)[: HEADER_SIZE - 2]
    ),
)


def _end_of_input(ctx: StdioCaseContext, at: EndOfInput) -> None:
    if at.sent_first:
        ctx.send_raw(at.sent_first)
    ctx.close_stdin()
    began = time.monotonic()
    status = expect_exit_within_limit(ctx, "end of input")
    ctx.event(f"exited {time.monotonic() - began:.2f} s after end of input")
    if at.status_matters:
        recommend_clean_exit(ctx, status, "end of input")


declare_family(
    __name__,
    _end_of_input,
    (Member(f"framing.eof-{at.slug}", at.requirement, at) for at in END_OF_INPUT),
    cases=_own_bridge_case,
    section="2.5",
    level="required",
)
