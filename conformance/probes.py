"""Shared observations and grading helpers for the stdio cases.

* :func:`startup_probe` starts one bridge the way a host does and watches the
  first answers with stdin kept open.  The three gate cases
  (``framing.stdout-clean``, ``framing.flush``, ``lifecycle.startup``) judge
  the same observation, so a bridge that never answers costs one start-up
  allowance, not three, and each defect lands on the case that owns it.
* :func:`grade_failure` grades a response that should signal failure
  (§4.3-§4.6): the modern form, the legacy form (NON-STRICT), or none (FAIL).
* Memory and process helpers for §2.3, §3.2 and §5.3.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Final

from snakepit_harness.errors import BridgeCrashed, BridgeTimeout, RemoteProtocolError
from snakepit_harness.protocol import (
    ERROR_TYPES,
    NEGOTIATE,
    STDIO_EXIT_LIMIT,
    NegotiationFailed,
    Response,
    Selected,
    codec_of_object,
    failure_form,
    get_codec,
    health_ping,
    init_ping,
)
from snakepit_harness.transports import StdioBridge
from snakepit_harness.transports.process import process_memory

from .drivers.stdio import WORKER_ID, StdioCaseContext
from .matcher import describe
from .model import CaseFailed, Grade

__all__ = [
    "EOF_GRACE",
    "FLUSH_WAIT",
    "StartupProbe",
    "expect_alive",
    "grade_failure",
    "group_memory",
    "startup_probe",
]

# After end of input, how long an unflushed answer gets to appear: the time
# §2.5 gives a bridge to exit, since it writes pending output on the way.
EOF_GRACE: Final = STDIO_EXIT_LIMIT

# How long a second request, sent once the bridge is up, may take before the
# bridge is suspected of holding answers back (a healthy bridge answers a ping
# in milliseconds; this leaves room for a loaded machine).
FLUSH_WAIT: Final = 5.0


@dataclass
class StartupProbe:
    """What happened when a bridge was started as a host starts it."""

    first_answer: float | None = None  # seconds from spawn to the first answer
    answered_only_after_eof: bool = False
    steady_unflushed: bool = False  # a later answer came only after end of input
    garbage: bytes = b""  # bytes on stdout that are not frames
    garbage_error: str = ""
    exit_description: str = ""  # the bridge ended before answering
    timed_out: bool = False
    negotiation_error: str = ""  # under --codec negotiate: the answer was unusable
    codec_error: str = ""  # the first answer is not in the run's codec
    stderr_tail: bytes = b""
    sent: bytes = b""

    @property
    def answered(self) -> bool:
        return self.first_answer is not None


def _read_or_eof(
    bridge: StdioBridge, wait: float
) -> tuple[str, Response | Selected | NegotiationFailed]:
    """Read one frame within ``wait``; on silence close stdin and give EOF_GRACE.

    Returns ("answered" | "after-eof", the connection's event), or raises what
    the bridge did (BridgeTimeout, BridgeCrashed, FramingViolation).
    """
    how = "answered"
    try:
        event = bridge.read_event(wait)
    except BridgeTimeout:
        bridge.close_stdin()
        how = "after-eof"
        event = bridge.read_event(EOF_GRACE)  # BridgeTimeout when nothing comes now either
    if isinstance(event, Response | Selected | NegotiationFailed):
        return how, event
    bridge.payload_of(event)  # raises what a framing error or the end of output stands for
    raise AssertionError("payload_of returns only for frames")  # pragma: no cover


def startup_probe(ctx: StdioCaseContext) -> tuple[StartupProbe, bool]:
    """Start-up as a host does it, observed once per run; (probe, ran on ctx's bridge).

    The first gate case to ask runs the probe on its own (``raw``) bridge and
    may go on using that bridge, which is then through start-up (ctx.codec is
    the negotiated codec); later gates get the cached observation.
    """
    driver = ctx.driver
    cached = getattr(driver, "_startup_probe", None)
    if isinstance(cached, StartupProbe):
        return cached, False
    startup_timeout = ctx.settings.startup_timeout
    probe = StartupProbe()
    bridge = ctx.bridge
    conn = bridge.connection
    negotiating = driver.settings.codec == NEGOTIATE
    sent = bytearray()

    def send(wire: bytes, timeout: float) -> None:
        bridge.send_bytes(wire, timeout)
        sent.extend(wire)

    try:
        first = conn.send_offer() if negotiating else conn.send(init_ping(1, WORKER_ID))
        send(first, startup_timeout)
        how, answer = _read_or_eof(bridge, startup_timeout)
        probe.first_answer = time.monotonic() - bridge.started_at
        if how == "after-eof":
            probe.answered_only_after_eof = True
        else:
            if isinstance(answer, NegotiationFailed):
                if answer.answered_in is not None:
                    # Not a negotiation defect: the bridge was started with an
                    # explicit codec.  One start-up failure that names the fix.
                    probe.codec_error = answer.reason
                else:
                    # A bad answer is the negotiation cases' to judge: note it and stop.
                    probe.negotiation_error = answer.reason
                raise _StopProbe
            if not negotiating:
                probe.codec_error = _codec_mismatch(conn.codec.name, answer.payload)
                if probe.codec_error:
                    raise _StopProbe
            else:
                # The answer was the negotiation's; the init ping follows in
                # the selected codec.
                send(conn.send(init_ping(1, WORKER_ID)), startup_timeout)
                if _read_or_eof(bridge, startup_timeout)[0] == "after-eof":
                    probe.steady_unflushed = True
            if not probe.steady_unflushed:
                send(conn.send(health_ping(2)), FLUSH_WAIT)
                if _read_or_eof(bridge, FLUSH_WAIT)[0] == "after-eof":
                    probe.steady_unflushed = True
            # Text printed after the answers (a banner, a log line).
            bridge.wait_stdout_eof(0.05)
            if bridge.unread_stdout:
                probe.garbage = bridge.unread_bytes()
                probe.garbage_error = "bytes after the last answer that are not a whole frame"
    except _StopProbe:
        pass
    except BridgeTimeout:
        probe.timed_out = True
    except BridgeCrashed as exc:
        probe.exit_description = str(exc)
    except RemoteProtocolError as exc:
        probe.garbage = bridge.unread_bytes()
        probe.garbage_error = str(exc)
    probe.sent = bytes(sent)
    probe.stderr_tail = bridge.stderr_tail()
    ctx.codec = conn.codec
    ctx.prelude = probe.sent
    # The probe may wait the whole start-up allowance; the case's own
    # deadline starts after it.
    ctx.deadline = time.monotonic() + ctx.case_timeout()
    driver._startup_probe = probe  # type: ignore[attr-defined]
    return probe, True


class _StopProbe(Exception):
    """Nothing more to observe (the negotiation answer was unusable)."""


def _codec_mismatch(codec_name: str, answer: bytes) -> str:
    """Why the first answer is not in the run's codec ("" when it is)."""
    try:
        get_codec(codec_name).decode(answer)
    except RemoteProtocolError as exc:
        problem = f"the answer to the first request is not {codec_name}: {exc}"
        other = codec_of_object(answer)  # a stray byte decodes as a msgpack int: no hint
        if other is not None and other != codec_name:
            problem += (
                f"; it is {other}: start the bridge in {codec_name} mode (e.g. --protocol "
                f"{codec_name}) or use the matching --codec"
            )
        return problem
    return ""


def is_ping_answer(value: Any, ping_id: int) -> bool:
    """Is ``value`` the answer to our ping?  By id, or (id not echoed) by its ok result."""
    if not isinstance(value, dict):
        return False
    if value.get("id") == ping_id:
        return True
    # Without the id: a success whose result is not an echo.  Not "status ok":
    # a ping that reports another status is lifecycle.*'s defect, not ours.
    result = value.get("result")
    return value.get("success") is True and isinstance(result, dict) and "echoed" not in result


def expect_alive(ctx: StdioCaseContext, why: str = "", max_before: int = 0) -> list[Any]:
    """Send a ping; the bridge MUST still answer it (§4.3 and friends).

    Up to ``max_before`` answers to earlier requests may come first; they are
    returned.  A bridge that hangs is TIMEOUT, one that ended is CRASH.
    """
    ping_id = 900000 + ctx.next_id()
    ctx.send_value({"id": ping_id, "command": "ping", "args": {}})
    before: list[Any] = []
    for _ in range(max_before + 1):
        value = ctx.read_value()
        if is_ping_answer(value, ping_id):
            return before
        before.append(value)
    raise CaseFailed(
        f"no answer to a ping{(' ' + why) if why else ''}; instead: {describe(before)}"
    )


def grade_failure(
    ctx: StdioCaseContext,
    response: Any,
    *,
    what: str,
    error_types: frozenset[str] | None = None,
    mentions: str | None = None,
    legacy_allowed: bool = True,
) -> str:
    """Grade a response that must signal failure; returns its form.

    MUST: failure is signalled (``success: false``; the legacy form only where
    ``legacy_allowed``, graded NON-STRICT).  SHOULD: ``error`` a non-empty
    string, ``error_type`` one of ``error_types`` (default: the §4.2
    vocabulary), ``error`` naming ``mentions``.
    """
    form = failure_form(response)
    if form == "none":
        raise CaseFailed(f"{what}: the response does not signal failure: {describe(response)}")
    if form == "legacy":
        if not legacy_allowed:
            raise CaseFailed(f"{what}: expected success: false, got {describe(response)}")
        ctx.add_finding(
            Grade.NON_STRICT,
            f"{what}: signalled in the legacy form (success: true, result.status: error); "
            "the spec accepts it as non-strict (§4.4)",
        )
        return form
    error = response.get("error")
    if not isinstance(error, str) or not error:
        raise CaseFailed(f"{what}: `error` must be a non-empty string (§4.2), got {error!r}")
    wanted = error_types or ERROR_TYPES
    error_type = response.get("error_type")
    ctx.recommend(
        error_type in wanted,
        f"{what}: error_type should be {' or '.join(sorted(wanted))}, got {error_type!r}",
    )
    if mentions is not None:
        ctx.recommend(mentions in error, f"{what}: `error` should name {mentions!r}: {error!r}")
    return form


def group_memory(bridge: StdioBridge) -> dict[int, dict[str, int]]:
    """VmPeak/VmHWM of every process in the bridge's group (wrappers and children too)."""
    out = {}
    with contextlib.suppress(RuntimeError, OSError):
        for pid in bridge.group_members():
            mem = process_memory(pid)
            if mem:
                out[pid] = mem
    return out


def memory_growth(
    before: dict[int, dict[str, int]],
    after: dict[int, dict[str, int]],
    keys: tuple[str, ...] = ("VmPeak", "VmHWM"),
) -> int:
    """The largest growth of ``keys`` (default VmPeak or VmHWM) of any process in the group."""
    growth = 0
    for pid, mem in after.items():
        base = before.get(pid, {})
        for key in keys:
            if key in mem:
                growth = max(growth, mem[key] - base.get(key, mem[key]))
    return growth
