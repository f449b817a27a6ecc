"""The stdio transport for the suite: bridges over stdin/stdout, and the case context.

The driver keeps one long-lived bridge for ``shared`` cases, like protobuf's
conformance runner: after a hang, a crash, garbage, or bytes left unread, it
kills that bridge's process group and the next case starts a fresh one.
``fresh`` and ``raw`` cases get a bridge of their own, killed at the end of the
case.  Start-up is the host's (PROTOCOL.md §1): the §3.4 negotiation under
``--codec negotiate``, then the init ping.  Every descendant a bridge is seen
with is killed with it, also one that left its process group.
"""

from __future__ import annotations

import shlex
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Final

from snakepit_harness.errors import CodecError, HarnessError
from snakepit_harness.protocol import NEGOTIATE, Codec, encode_frame, get_codec, init_ping
from snakepit_harness.transports import StdioBridge
from snakepit_harness.transports.process import alive_pids, descendants, kill_pids

from ..context import CaseContext
from ..matcher import describe
from ..model import BridgeUse, Case, CaseFailed, RunSettings, Verdict
from . import TransportDriver

__all__ = ["DRIVER", "StdioCaseContext", "StdioDriver", "printf_escape"]

# Hex bytes shown per frame in a case's events.
OBSERVED_FRAME_HEX: Final = 64

# After a shared case, how long to look for bytes the bridge sent beyond its
# answers (a second answer, stray text) before handing the bridge to the next
# case.  Such bytes are written right after the last answer, so a few
# milliseconds catch them without slowing the run.
SETTLE_SECONDS: Final = 0.003

# Reproduction pipelines longer than this (bytes sent) are not printed; the
# replay command reproduces them instead.
PIPELINE_MAX_BYTES: Final = 2048

# The worker id of the harness's init pings.
WORKER_ID: Final = "conformance"


def _frame_summary(payload: bytes) -> str:
    head = payload[:OBSERVED_FRAME_HEX].hex()
    more = "..." if len(payload) > OBSERVED_FRAME_HEX else ""
    return f"{len(payload)} bytes {head}{more}"


class StdioCaseContext(CaseContext):
    """Case context for the stdio transport: a bridge, the active codec, helpers."""

    def __init__(  # noqa: PLR0917 - built only by StdioDriver
        self,
        case: Case,
        settings: RunSettings,
        deadline: float,
        bridge: StdioBridge | None,
        codec: Codec,
        driver: StdioDriver,
    ) -> None:
        super().__init__(case, settings, deadline)
        self._bridge = bridge
        self.codec = codec
        self.driver = driver
        self.prelude = b""  # bytes the start-up handshake sent (for reproduction pipelines)

    @property
    def bridge(self) -> StdioBridge:
        """The case's bridge; a ``raw`` case's is spawned on first use (gates may need none)."""
        if self._bridge is None:
            self._bridge = self.driver.spawn()
            self.driver.adopt(self, self._bridge)
        return self._bridge

    @property
    def spawned(self) -> StdioBridge | None:
        """The bridge if there is one, without spawning."""
        return self._bridge

    @property
    def codec_name(self) -> str:
        return self.codec.name

    @property
    def codec_mode(self) -> str:
        return self.settings.codec

    # -- sending ------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        """Send exactly ``data`` (header included)."""
        self.record_sent(data)
        self.bridge.send_bytes(data, self.remaining())

    def wait_sent_read(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until the bridge has read everything sent so far."""
        self.bridge.wait_stdin_drained(min(timeout, self.remaining()))

    def send_value(
        self, value: Any, wire: bytes | None = None, codec: Codec | None = None
    ) -> bytes:
        """Frame and send a request (``wire``: exact bytes to send instead)."""
        if wire is None:
            wire = encode_frame((codec or self.codec).encode(value))
        self.event(f"sent {describe(value, 160)} ({len(wire)} bytes)")
        self.send_raw(wire)
        return wire

    # -- reading ------------------------------------------------------------

    def read_frame(self, timeout: float | None = None) -> bytes:
        wait = self.remaining() if timeout is None else min(timeout, self.remaining())
        payload = self.bridge.read_frame(wait)
        self.event(f"received frame {_frame_summary(payload)}")
        return payload

    def decode(self, payload: bytes, codec: Codec | None = None) -> Any:
        try:
            value = (codec or self.codec).decode(payload)
        except CodecError as exc:
            raise CaseFailed(
                f"a response does not decode as {(codec or self.codec).name}: {exc} "
                f"(payload {_frame_summary(payload)})"
            ) from exc
        self.event(f"decoded {describe(value, 200)}")
        return value

    def read_value(self, timeout: float | None = None, codec: Codec | None = None) -> Any:
        return self.decode(self.read_frame(timeout), codec)

    def request(self, value: Any, codec: Codec | None = None) -> Any:
        """Send one request and return the decoded next frame."""
        self.send_value(value, codec=codec)
        return self.read_value(codec=codec)

    # -- life cycle ---------------------------------------------------------

    def close_stdin(self) -> None:
        self.event("closed the bridge's stdin")
        self.bridge.close_stdin()

    def close_stdout(self) -> None:
        self.event("closed the bridge's stdout (read end)")
        self.bridge.close_stdout()

    def send_signal(self, sig: signal.Signals) -> None:
        self.event(f"sent {sig.name} to pid {self.bridge.pid}")
        self.bridge.send_signal(sig)

    def expect_exit(self, within: float) -> int | None:
        """Wait up to ``within`` s for the bridge to exit; its status, or None."""
        ended = self.bridge.wait_exit(min(within, self.remaining()))
        if ended is None:
            self.event(f"still running after {within:.1f} s")
            return None
        self.event(f"bridge ended: {ended.describe()} after {ended.elapsed:.2f} s")
        return ended.returncode


@dataclass
class _BridgeSession:
    """A started bridge plus what start-up learnt."""

    bridge: StdioBridge
    codec: Codec
    prelude: bytes = b""
    cases_run: int = 0


class StdioDriver(TransportDriver):
    """Spawns stdio bridges: one shared, others per case; negotiates and init-pings them."""

    kind = "stdio"

    def __init__(self, settings: RunSettings, stop: threading.Event | None = None) -> None:
        super().__init__(settings, stop)
        if not settings.bridge_cmd:
            raise HarnessError("no bridge command: put it after `--`")
        self._shared: _BridgeSession | None = None
        self._own: dict[int, StdioBridge] = {}  # id(ctx) -> a bridge of the case's own
        self._children: dict[StdioBridge, set[int]] = {}  # every bridge spawned, not yet closed
        self._lock = threading.Lock()

    # -- spawning -----------------------------------------------------------

    def spawn(self) -> StdioBridge:
        """Start one bridge process (refused once the run is being stopped)."""
        if self.stop.is_set():
            raise KeyboardInterrupt
        try:
            bridge = StdioBridge(self.settings.bridge_cmd, codec_mode=self.settings.codec).start()
        except OSError as exc:
            raise HarnessError(
                f"cannot start the bridge {shlex.join(self.settings.bridge_cmd)}: {exc}"
            ) from exc
        self._children[bridge] = set()
        return bridge

    def note_children(self, bridge: StdioBridge) -> None:
        """Remember the bridge's descendants now, while they can still be found.

        A child that left the bridge's process group (setsid) escapes
        ``killpg``, and once the bridge is gone it can no longer be traced to
        it; so descendants are noted after start-up and before every kill.
        """
        if bridge.poll() is None:
            self._children.setdefault(bridge, set()).update(descendants(bridge.pid))

    def close_bridge(self, bridge: StdioBridge) -> None:
        """Kill a bridge, its process group, and every descendant ever noted."""
        self.note_children(bridge)
        bridge.kill()
        # Before close(): an escaped child holding the stderr pipe would make
        # close() wait for an EOF that never comes.
        kill_pids(alive_pids(self._children.pop(bridge, set())))
        bridge.close()

    def base_codec(self) -> Codec:
        """The codec of the first frame: JSON under negotiation (§3.4), else the chosen one."""
        mode = self.settings.codec
        return get_codec("json" if mode == NEGOTIATE else mode)

    def start_up(self, bridge: StdioBridge, timeout: float) -> tuple[Codec, bytes]:
        """Bring ``bridge`` through the host's start-up (§1): the §3.4 negotiation
        under ``--codec negotiate``, then the init ping, whose answer the cases
        judge.  Returns the codec in use and the bytes sent (for reproductions)."""
        deadline = time.monotonic() + timeout
        prelude = b""
        if self.settings.codec == NEGOTIATE:
            selected, prelude = bridge.negotiate(timeout)
            self.negotiated = selected
        codec = bridge.connection.codec
        ping = bridge.connection.send(init_ping(1, WORKER_ID))
        bridge.send_bytes(ping, max(0.0, deadline - time.monotonic()))
        bridge.read_frame(max(0.0, deadline - time.monotonic()))
        return codec, prelude + ping

    def start_ready(self) -> _BridgeSession:
        """A new bridge through start-up."""
        bridge = self.spawn()
        try:
            codec, prelude = self.start_up(bridge, self.settings.startup_timeout)
        except BaseException:
            self.close_bridge(bridge)
            raise
        self.note_children(bridge)
        return _BridgeSession(bridge, codec, prelude)

    def handshake(self, ctx: StdioCaseContext) -> None:
        """Bring a ``raw`` case's bridge through start-up, as ``fresh`` ones are."""
        ctx.codec, ctx.prelude = self.start_up(ctx.bridge, ctx.remaining())
        ctx.event("start-up done (negotiation if any, init ping)")

    # -- the driver interface -------------------------------------------------

    def acquire(self, case: Case, deadline: float) -> StdioCaseContext:
        if case.bridge is BridgeUse.RAW:
            return StdioCaseContext(case, self.settings, deadline, None, self.base_codec(), self)
        if case.bridge is BridgeUse.FRESH:
            session = self.start_ready()
            ctx = StdioCaseContext(
                case, self.settings, deadline, session.bridge, session.codec, self
            )
            ctx.prelude = session.prelude
            self._own[id(ctx)] = session.bridge
            return ctx
        with self._lock:
            if self._shared is None or self._shared.bridge.poll() is not None:
                self._discard_shared()
                self._shared = self.start_ready()
            session = self._shared
        ctx = StdioCaseContext(case, self.settings, deadline, session.bridge, session.codec, self)
        ctx.prelude = session.prelude
        session.cases_run += 1
        return ctx

    def adopt(self, ctx: StdioCaseContext, bridge: StdioBridge) -> None:
        """Make ``bridge`` the case's own (killed when the case ends)."""
        self._own[id(ctx)] = bridge

    def release(self, ctx: CaseContext, verdict: Verdict) -> None:
        assert isinstance(ctx, StdioCaseContext)
        own = self._own.pop(id(ctx), None)
        if own is not None:
            self.close_bridge(own)
            return
        with self._lock:
            session = self._shared
            if session is None or session.bridge is not ctx.spawned:
                return
            healthy = not verdict.meaning.poisons_bridge
            if healthy:
                # Bytes beyond the case's answers would be read by the next
                # case as its own: start afresh instead.
                ctx.bridge.wait_stdout_eof(SETTLE_SECONDS)
                if ctx.bridge.unread_stdout or ctx.bridge.poll() is not None:
                    healthy = False
                    ctx.note(
                        f"the bridge left {ctx.bridge.unread_stdout} unread byte(s) on stdout "
                        "or ended after the case; the next case gets a fresh bridge"
                    )
            if not healthy:
                self._discard_shared()

    def _discard_shared(self) -> None:
        if self._shared is not None:
            self.close_bridge(self._shared.bridge)
            self._shared = None

    def close(self) -> None:
        with self._lock:
            self._discard_shared()
        for bridge in list(self._own.values()):
            self.close_bridge(bridge)
        self._own.clear()
        for bridge in list(self._children):
            self.close_bridge(bridge)

    def stderr_tail(self, ctx: CaseContext) -> bytes:
        assert isinstance(ctx, StdioCaseContext)
        return ctx.spawned.stderr_tail() if ctx.spawned else b""

    def unread_stdout(self, ctx: CaseContext) -> bytes:
        assert isinstance(ctx, StdioCaseContext)
        return ctx.spawned.unread_bytes() if ctx.spawned else b""

    def reproduction(self, ctx: CaseContext) -> list[str]:
        assert isinstance(ctx, StdioCaseContext)
        cmd = shlex.join(self.settings.bridge_cmd)
        lines = [
            f"snakepit-harness replay {ctx.case.id} --profile {self.settings.profile} "
            f"--codec {self.settings.codec} -- {cmd}"
        ]
        data = ctx.prelude + bytes(ctx.sent)
        if ctx.sent_total <= len(ctx.sent) and 0 < len(data) <= PIPELINE_MAX_BYTES:
            lines.append(f"printf '{printf_escape(data)}' | {cmd} | xxd")
        return lines


def printf_escape(data: bytes) -> str:
    """``data`` as a POSIX printf format (octal escapes; dash's printf has no \\x)."""
    out = []
    for byte in data:
        char = chr(byte)
        if 0x20 <= byte < 0x7F and char not in "'\\%":
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return "".join(out)


DRIVER = StdioDriver
