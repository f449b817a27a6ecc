"""§5 Lifecycle: signals, children, broken pipe (start-up is a gate in framing.py).

Spec decisions:

* Signals go to the bridge's own pid (as Snakepit does), with its stdin still
  open, so the case tests the signal and not end of input.  "No child
  processes left behind" covers every descendant seen just before the signal,
  including ones that left the process group; they get 1 s after the bridge
  exits to go (a child told to stop needs a moment).  Leftovers are killed by
  the harness after the verdict.
* "SHOULD finish writing a response it has started" is made deterministic:
  the case waits until the first bytes of a large answer arrive, then signals,
  then keeps reading; a partial frame followed by end of output is NON-STRICT.
* §5.4 broken pipe: the harness closes its read end of the bridge's stdout and
  sends a ping; the bridge must exit within 2 s (by SIGPIPE or by handling
  EPIPE); a Python traceback or "Exception ignored" on stderr is NON-STRICT.
"""

from __future__ import annotations

import contextlib
import signal
import time
from typing import Final

from snakepit_harness.errors import BridgeCrashed, BridgeTimeout
from snakepit_harness.transports.process import alive_pids, descendants, kill_pids

from ..drivers.stdio import StdioCaseContext
from ..model import BridgeUse, CaseFailed
from ._common import (
    EXIT_LIMIT,
    Member,
    declare_family,
    expect_exit_within_limit,
    recommend_clean_exit,
)
from ._transport import STDIO_CASES

# What every lifecycle case shares: it applies to every stdio profile, and it
# ends its bridge (a signal, a closed pipe), so it gets a bridge of its own.
_case: Final = STDIO_CASES.preset(bridge=BridgeUse.FRESH)
# Time leftover descendants get to disappear after the bridge exits.
CHILD_GRACE: Final = 1.0
# Size of the echo whose answer is in flight when the signal arrives: several
# pipe buffers, so the bridge is surely mid-write when we signal.
IN_FLIGHT_BYTES: Final = 4 * 1024 * 1024
# How long to wait for the rest of stderr after the bridge exited (a child
# that inherited the pipe may keep it open; the tail read so far is judged).
STDERR_GRACE: Final = 0.5
TRACEBACK_WORDS: Final = ("Traceback (most recent call last)", "Exception ignored")


def _signal_case(ctx: StdioCaseContext, sig: signal.Signals) -> None:
    before = descendants(ctx.bridge.pid)
    if before:
        ctx.event(f"descendants before {sig.name}: {sorted(before)}")
    ctx.send_signal(sig)
    status = expect_exit_within_limit(ctx, sig.name)
    deadline = time.monotonic() + CHILD_GRACE
    left = alive_pids(before)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = alive_pids(before)
    if left:
        kill_pids(left)
        raise CaseFailed(
            f"child processes outlived the bridge after {sig.name}: pids {sorted(left)} "
            "(killed by the harness)"
        )
    recommend_clean_exit(ctx, status, sig.name)


# The §5.3 signals, one case each (lifecycle.sigterm, lifecycle.sigint).
SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)

declare_family(
    __name__,
    _signal_case,
    (
        Member(
            f"lifecycle.{sig.name.lower()}",
            f"On {sig.name} the bridge exits within 2 s (SHOULD with status 0) and leaves "
            "no child processes behind.",
            sig,
        )
        for sig in SIGNALS
    ),
    cases=_case,
    section="5.3",
    level="required",
)


@_case("lifecycle.sigterm-mid-response", section="5.3", level="recommended", timeout=20.0)
def sigterm_mid_response(ctx: StdioCaseContext) -> None:
    """A response whose writing has started when SIGTERM arrives is finished whole before the
    bridge exits.
    """
    ctx.send_value(
        {"id": 501, "command": "echo", "args": {"blob": "y" * IN_FLIGHT_BYTES}},
    )
    # Wait for the answer's first bytes without reading them: the answer is
    # bigger than the pipe, so the bridge is now blocked mid-frame and stays
    # so until we read.  (Draining stdout while waiting let a fast bridge
    # finish before the signal landed, and a cut-short answer pass.)
    while not ctx.bridge.wait_stdout_readable(min(0.1, ctx.remaining())):
        pass
    if ctx.bridge.poll() is not None:
        raise BridgeCrashed("the bridge exited before answering")
    ctx.send_signal(signal.SIGTERM)
    try:
        payload = ctx.read_frame(EXIT_LIMIT + 1.0)
    except (BridgeCrashed, BridgeTimeout) as exc:
        raise CaseFailed(
            f"the answer in flight was cut short by SIGTERM ({exc}); "
            f"{ctx.bridge.unread_stdout} bytes of it arrived"
        ) from exc
    ctx.event(f"the {len(payload)}-byte answer arrived whole after SIGTERM")
    status = ctx.expect_exit(EXIT_LIMIT)
    ctx.require(status is not None, f"the bridge did not exit within {EXIT_LIMIT:.0f} s")


@_case("lifecycle.broken-pipe", section="5.4", level="required")
def broken_pipe(ctx: StdioCaseContext) -> None:
    """When the host closes the bridge's stdout, the bridge exits within 2 s (SHOULD without a
    traceback on stderr).
    """
    ctx.close_stdout()
    # The next answer (or the bridge's own POLLHUP check) meets the closed pipe.
    with contextlib.suppress(BridgeCrashed):  # it may have left already: fine
        ctx.send_value({"id": 502, "command": "ping", "args": {}})
    expect_exit_within_limit(ctx, "its stdout being closed")
    ctx.bridge.wait_stderr_eof(STDERR_GRACE)
    stderr = ctx.bridge.stderr_tail().decode("utf-8", "replace")
    word = next((w for w in TRACEBACK_WORDS if w in stderr), None)
    if word:
        ctx.event(f"stderr: {stderr[-600:]!r}")
    ctx.recommend(word is None, f"stderr holds {word!r} after the broken pipe (should be quiet)")
