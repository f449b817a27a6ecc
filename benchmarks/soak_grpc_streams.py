"""Soak the gRPC bridge's streams with a stall detector (issue 14.6).

    python benchmarks/soak_grpc_streams.py [--calls 50000] [--calls-per-bridge 200]
        [--slow-after 0.5] [--timeout 5] [-- BRIDGE CMD...]

The ``grpc-sessions`` state machine once saw ``ExecuteStream ping_stream
{count: 1}`` get no answer within 5 s, in about 8,000 runs.  This program
makes the same calls the machine makes (``ping_stream`` with the machine's
counts, in and out of its sessions, each stream collected to its end), many
more of them, and restarts the bridge every ``--calls-per-bridge`` calls as
the fuzzer does after each failure, so that both "a call in a long-lived
bridge" and "the first calls of a fresh bridge and a fresh channel" are
soaked.

The stall detector: every call runs against the transport's deadline
(``--timeout``, the fuzzer's default 5 s).  A call slower than
``--slow-after`` is logged with what was happening around it: which call of
its bridge it was, the 1-minute load average, the bridge's scheduler state
and thread count from /proc, and the harness's own CPU time.  A call that
reaches the deadline is a stall and is logged with the bridge's stderr tail.

Prints a summary (calls, stalls, slow calls, latency percentiles, calls per
second, bridge starts) and, with ``--json FILE``, writes it.  Exit status 0
when no call stalled, 1 when one did (a soak reports; the figures are the
point), 2 when the bridge could not be started.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

from snakepit_harness.errors import HarnessError, TransportError
from snakepit_harness.transports import process
from snakepit_harness.transports.grpc import DEFAULT_STARTUP_TIMEOUT, GrpcBridge

# The state machine's sessions and ping_stream counts (fuzz/grpc_machine.py).
SESSIONS: Final = (None, "s1", "s\u00e9", "\U0001f40d", "")
STREAM_COUNTS: Final = (0, 1, 2, 5)
# Messages collected beyond the expected count before a stream is cut: a
# bridge that runs on is a defect, not something to wait out.
EXTRA_MESSAGES: Final = 10
# Latency percentiles printed (of all calls, in milliseconds).
PERCENTILES: Final = (50.0, 90.0, 99.0, 99.9)
# Progress line every this many calls: a long soak shows it is moving.
PROGRESS_EVERY: Final = 5_000
# A failed call that took at least this share of the deadline ran into it: a
# stall, not a quick error.
STALL_FRACTION: Final = 0.9
# How much of the bridge's stderr an incident keeps.
STDERR_TAIL_CHARS: Final = 2000


@dataclass
class Incident:
    """A slow or stalled call and its surroundings."""

    call: int
    call_in_bridge: int
    count: int
    session: str | None
    seconds: float
    stalled: bool
    load_1min: float = 0.0
    bridge_state: str = ""
    bridge_threads: int = 0
    error: str = ""
    stderr_tail: str = ""


@dataclass
class SoakSummary:
    calls: int = 0
    stream_messages: int = 0
    bridge_starts: int = 0
    stalls: int = 0
    slow_calls: int = 0
    wrong_answers: int = 0
    wall_seconds: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    incidents: list[Incident] = field(default_factory=list)


def _bridge_surroundings(pid: int) -> tuple[str, int]:
    """The bridge's scheduler state letter and thread count, from /proc."""
    fields = process.stat_fields(pid)
    if fields is None:
        return "gone", 0
    # /proc/PID/stat after the command: state is field 3, num_threads field 20
    # (1-based); stat_fields returns the fields after the command name.
    return fields[0], int(fields[17])


def _percentile(sorted_values: Sequence[float], pct: float) -> float:
    index = min(len(sorted_values) - 1, round(pct / 100.0 * (len(sorted_values) - 1)))
    return sorted_values[index]


class Soak:
    def __init__(self, argv: Sequence[str], options: argparse.Namespace) -> None:
        self.argv = list(argv)
        self.options = options
        self.summary = SoakSummary()
        self.random = random.Random(options.seed)
        self.bridge: GrpcBridge | None = None
        self.calls_in_bridge = 0
        self.latencies: list[float] = []

    def _fresh_bridge(self) -> GrpcBridge:
        if self.bridge is not None:
            self.bridge.close()
        self.bridge = GrpcBridge(self.argv, startup_timeout=DEFAULT_STARTUP_TIMEOUT)
        self.bridge.start()
        self.summary.bridge_starts += 1
        self.calls_in_bridge = 0
        return self.bridge

    def close(self) -> None:
        if self.bridge is not None:
            self.bridge.close()
            self.bridge = None

    def one_call(self, number: int) -> None:
        bridge = self.bridge
        if bridge is None or self.calls_in_bridge >= self.options.calls_per_bridge:
            bridge = self._fresh_bridge()
        self.calls_in_bridge += 1
        count = self.random.choice(STREAM_COUNTS)
        session = self.random.choice(SESSIONS)
        started = time.monotonic()
        error = ""
        try:
            if session is None:
                stream = bridge.execute_stream(
                    "ping_stream", {"count": count}, timeout=self.options.timeout
                )
            else:
                stream = bridge.execute_in_session_stream(
                    session, "ping_stream", {"count": count}, timeout=self.options.timeout
                )
            messages = stream.collect(limit=count + EXTRA_MESSAGES)
        except TransportError as exc:
            messages = []
            error = str(exc)
        seconds = time.monotonic() - started
        self.latencies.append(seconds)
        self.summary.calls += 1
        self.summary.stream_messages += len(messages)
        if not error and (len(messages) != count + 1 or not messages[-1].is_final):
            self.summary.wrong_answers += 1
            error = f"{len(messages)} messages for count {count}"
        stalled = bool(error) and seconds >= self.options.timeout * STALL_FRACTION
        if stalled or error or seconds >= self.options.slow_after:
            call = Incident(
                number, self.calls_in_bridge, count, session, round(seconds, 4), stalled
            )
            self._record(call, error, bridge)
        if error:
            # As the fuzzer does after a failure: a fresh bridge for what follows.
            self.calls_in_bridge = self.options.calls_per_bridge

    def _record(self, incident: Incident, error: str, bridge: GrpcBridge) -> None:
        """Complete ``incident`` with what surrounded it, log it and count it."""
        incident.load_1min = os.getloadavg()[0]
        incident.bridge_state, incident.bridge_threads = _bridge_surroundings(bridge.pid)
        incident.error = error
        if error:
            tail = bridge.stderr_tail().decode("utf-8", "replace")
            incident.stderr_tail = tail[-STDERR_TAIL_CHARS:]
        self.summary.incidents.append(incident)
        if incident.stalled:
            self.summary.stalls += 1
        else:
            self.summary.slow_calls += 1
        print(
            f"  {'STALL' if incident.stalled else 'slow'}: {json.dumps(asdict(incident))}",
            flush=True,
        )

    def run(self) -> SoakSummary:
        began = time.monotonic()
        try:
            for number in range(1, self.options.calls + 1):
                self.one_call(number)
                if number % PROGRESS_EVERY == 0:
                    rate = number / (time.monotonic() - began)
                    print(
                        f"  {number} calls, {rate:.0f}/s, stalls {self.summary.stalls}", flush=True
                    )
        finally:
            self.close()
        self.summary.wall_seconds = round(time.monotonic() - began, 2)
        ordered = sorted(self.latencies)
        if ordered:
            self.summary.latency_ms = {
                f"p{pct:g}": round(_percentile(ordered, pct) * 1000, 3) for pct in PERCENTILES
            }
            self.summary.latency_ms["max"] = round(ordered[-1] * 1000, 3)
            self.summary.latency_ms["mean"] = round(statistics.fmean(ordered) * 1000, 3)
        return self.summary


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    bridge_argv = ["snakepit-grpc-bridge"]
    if "--" in args:
        split = args.index("--")
        args, bridge_argv = args[:split], args[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--calls-per-bridge", type=int, default=200)
    parser.add_argument("--slow-after", type=float, default=0.5, metavar="SECONDS")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, metavar="FILE")
    options = parser.parse_args(args)
    soak = Soak(bridge_argv, options)
    try:
        summary = soak.run()
    except HarnessError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    rate = summary.calls / summary.wall_seconds if summary.wall_seconds else 0.0
    print(
        f"calls {summary.calls} ({summary.stream_messages} messages) over "
        f"{summary.bridge_starts} bridge starts in {summary.wall_seconds} s ({rate:.0f}/s); "
        f"stalls {summary.stalls}, slow (>= {options.slow_after} s) {summary.slow_calls}, "
        f"wrong answers {summary.wrong_answers}"
    )
    print("latency ms: " + ", ".join(f"{k} {v}" for k, v in summary.latency_ms.items()))
    if options.json is not None:
        options.json.write_text(json.dumps(asdict(summary), indent=2) + "\n", encoding="utf-8")
    return 1 if summary.stalls else 0


if __name__ == "__main__":
    sys.exit(main())
