"""Speed of the reference bridges as ratios against baselines measured in the same run.

    python benchmarks/bench_bridges.py [--runs 5] [--quick] [--pin CPU] [--wake-latency low|system]

Prints, for each case, the median over ``--runs`` runs of the ratio
``median round trip of the bridge / median round trip of its baseline``;
within a run the two are measured in alternating batches so that both see
the same machine (a shared machine's pipe round trip moves between ~25 µs and
~100 µs depending on whether both processes share a CPU).  Targets (issue 7):

* ``ping`` through the v2 bridge <= 1.3x the raw echo of the same frame;
* a 1 MiB binary echo under MessagePack <= 1.5x the raw echo of the same bytes;
* the gRPC bridge's unary ``ping`` <= 1.5x a bare grpcio echo server;
* JSON-vs-MessagePack per payload (small, structured, binary), to confirm or
  refute "MessagePack is 2-3x faster for large payloads".

Two "floor" rows run ``floor_bridge.py`` (decode, a four-key answer, encode;
nothing else, in a Python loop) against the same raw echo: the closest a
pure-Python bridge gets on this machine.  The reference bridges serve small
requests through their C fast loop (``snakepit_bridge._fastloop``) and so can run
below that floor; two more rows measure the v2 bridge with the C loop switched
off (``SNAKEPIT_BRIDGE_PURE_PYTHON=1``), to show what it is worth.

The client is deliberately lean (blocking pipes, ``writev``, reads straight
into a buffer of the frame's size) so that the bridge's own costs are not
drowned by the client's.  No locust, no gevent: this is a plain program.
Like ``load``, it holds idle CPUs to a low wake-up latency while it measures
(``--wake-latency low``, the default where ``/dev/cpu_dma_latency`` may be
opened; ``snakepit_harness.transports.cpu_wake``).  Without it, on a virtual
machine whose idle CPUs halt, which process pays a halted CPU's wake-up
depends on where the kernel happens to run it: here the raw echo read 73-78
µs a round trip and the bridges 7-12 µs, ratios of 0.10-0.16x that said
nothing about the bridges.  Exit status 0 whatever the figures (a benchmark
reports, it does not gate).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from snakepit_harness.loadtests.point import baseline_command
from snakepit_harness.loadtests.profiles import RequestTemplate, make_templates, next_id
from snakepit_harness.loadtests.sweep import WAKE_LATENCY_LOW, add_wake_latency_option

from snakepit_harness.protocol import READY_PREFIX
from snakepit_harness.transports.cpu_wake import hold_low_wake_latency
from snakepit_harness.transports.spawn import tune_allocator

PIPE_SIZE: Final = 1024 * 1024
V2_BRIDGE: Final = [sys.executable, "-m", "snakepit_bridge.generic_bridge_v2", "--quiet"]
GRPC_BRIDGE: Final = [sys.executable, "-m", "snakepit_bridge.grpc_bridge", "--quiet"]
# The same bridge with its C fast loop switched off (``env`` sets the switch).
PURE_V2_BRIDGE: Final = ["env", "SNAKEPIT_BRIDGE_PURE_PYTHON=1", *V2_BRIDGE]
# The least a Python bridge can do per request: how close to the raw echo Python gets here.
FLOOR_BRIDGE: Final = [sys.executable, str(Path(__file__).with_name("floor_bridge.py"))]

# Round trips per batch, by payload: enough for a stable median, few enough
# that a run of every case stays under a minute on a busy 2-core machine.
BATCH: Final = {"ping": 400, "small": 400, "binary": 20, "structured": 6}
QUICK_BATCH: Final = {"ping": 150, "small": 150, "binary": 8, "structured": 3}
BATCHES_PER_RUN: Final = 4  # alternating bridge/baseline batches per run, each side
WARMUP_CALLS: Final = 5


class StdioPeer:
    """A bridge or the raw echo on blocking pipes, one request at a time."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            pipesize=PIPE_SIZE,
            bufsize=0,
        )
        assert self.proc.stdin and self.proc.stdout
        self.fd_in = self.proc.stdin.fileno()
        self.fd_out = self.proc.stdout.fileno()

    def round_trip(self, parts: list[bytes]) -> bytearray:
        total = sum(len(p) for p in parts)
        written = os.writev(self.fd_in, parts)
        if written < total:
            rest = memoryview(b"".join(parts))[written:]
            while rest:
                rest = rest[os.write(self.fd_in, rest) :]
        header = self._read_exact(4)
        return self._read_exact(int.from_bytes(header, "big"))

    def _read_exact(self, size: int) -> bytearray:
        buffer = bytearray(size)
        view = memoryview(buffer)
        position = 0
        while position < size:
            count = os.readv(self.fd_out, [view[position:]])
            if count == 0:
                raise RuntimeError("peer closed its stdout")
            position += count
        return buffer  # no copy: it would be timed as part of the round trip

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                stream.close()


@contextlib.contextmanager
def stdio_peer(argv: list[str], init: RequestTemplate | None = None) -> Iterator[StdioPeer]:
    peer = StdioPeer(argv)
    try:
        if init is not None:  # answer one request before timing starts
            peer.round_trip(init.parts(next_id(0)))
        yield peer
    finally:
        peer.close()


def timed_batch(call: Callable[[int], object], count: int) -> float:
    """Median seconds of ``count`` calls."""
    samples = []
    for number in range(count):
        began = time.perf_counter()
        call(number)
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


@dataclass
class Pair:
    """A bridge case and its baseline: each a zero-arg factory of a context giving a call."""

    name: str
    target: float | None
    bridge: Callable[[], Any]
    baseline: Callable[[], Any]
    batch: int


def measure(pair: Pair, runs: int) -> tuple[list[float], float, float]:
    """Ratios per run, and the last run's bridge and baseline medians (seconds)."""
    ratios = []
    bridge_median = base_median = 0.0
    for _ in range(runs):
        with pair.bridge() as bridge_call, pair.baseline() as base_call:
            for number in range(WARMUP_CALLS):
                bridge_call(number)
                base_call(number)
            bridge_samples, base_samples = [], []
            for _ in range(BATCHES_PER_RUN):
                base_samples.append(timed_batch(base_call, pair.batch))
                bridge_samples.append(timed_batch(bridge_call, pair.batch))
            bridge_median = statistics.median(bridge_samples)
            base_median = statistics.median(base_samples)
            ratios.append(bridge_median / base_median)
    return ratios, bridge_median, base_median


def stdio_call(argv: list[str], payload: str, codec: str) -> Callable[[], Any]:
    """A factory of contexts yielding ``call(n)`` for a stdio peer."""

    @contextlib.contextmanager
    def factory() -> Iterator[Callable[[int], object]]:
        templates = make_templates(payload, codec)
        template = templates[0]
        command = argv
        if codec != "raw":
            command = [*argv, "--protocol", codec]
        with stdio_peer(command, template) as peer:

            def call(number: int) -> bytearray:
                return peer.round_trip(template.parts(next_id(number)))

            yield call

    return factory


def grpc_call(argv: list[str]) -> Callable[[], Any]:
    @contextlib.contextmanager
    def factory() -> Iterator[Callable[[int], object]]:
        import grpc
        from snakepit_harness.loadtests.grpc_calls import EXECUTE_METHOD, execute_request_bytes

        proc = subprocess.Popen(
            [*argv, "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )
        try:
            assert proc.stdout
            line = proc.stdout.readline()
            if not line.startswith(READY_PREFIX):
                raise RuntimeError(f"{argv}: no ready line, got {line!r}")
            port = int(line.split("=", 1)[1])
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            execute = channel.unary_unary(
                EXECUTE_METHOD, request_serializer=None, response_deserializer=None
            )
            request = execute_request_bytes("ping", {})
            execute(request, timeout=10, wait_for_ready=True)

            def call(number: int) -> object:
                return execute(request, timeout=10)

            yield call
            channel.close()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    return factory


# The ping rows: (name pattern, bridge command, target).  Each runs under both
# codecs against the raw echo of the same frame.
PING_ROWS: Final = (
    ("v2 ping ({codec}) vs raw echo", V2_BRIDGE, 1.3),
    ("v2 ping ({codec}), Python loop only", PURE_V2_BRIDGE, None),
    ("floor: Python decode+encode ping ({codec})", FLOOR_BRIDGE, None),
)


def cases(batch: dict[str, int], with_grpc: bool) -> list[Pair]:
    raw = baseline_command("stdio")
    pairs = [
        Pair(
            name.format(codec=codec),
            target,
            stdio_call(argv, "ping", codec),
            stdio_call(raw, "ping", "raw"),
            batch["ping"],
        )
        for name, argv, target in PING_ROWS
        for codec in ("msgpack", "json")
    ]
    pairs.append(
        Pair(
            "v2 1 MiB binary echo (msgpack) vs raw echo",
            1.5,
            stdio_call(V2_BRIDGE, "binary", "msgpack"),
            stdio_call(raw, "binary", "raw"),
            batch["binary"],
        )
    )
    if with_grpc:
        pairs.append(
            Pair(
                "gRPC unary ping vs bare grpcio echo",
                1.5,
                grpc_call(GRPC_BRIDGE),
                grpc_call(baseline_command("grpc")),
                batch["ping"],
            )
        )
    for payload in ("small", "structured", "binary"):
        pairs.append(
            Pair(
                f"{payload}: JSON / MessagePack round trip",
                None,
                stdio_call(V2_BRIDGE, payload, "json"),
                stdio_call(V2_BRIDGE, payload, "msgpack"),
                batch[payload],
            )
        )
    return pairs


# "MessagePack is 2-3x faster for large payloads": the range the claim names.
CLAIMED_SPEEDUP: Final = (2.0, 3.0)


def _claim_verdict(ratio: float) -> str:
    low, high = CLAIMED_SPEEDUP
    if ratio < low:
        return "refuted (below 2x)"
    return "confirmed" if ratio <= high else "confirmed and exceeded (above 3x)"


def _fmt_seconds(value: float) -> str:
    return f"{value * 1e6:.0f} µs" if value < 1e-3 else f"{value * 1e3:.2f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Reference bridge speed as same-run ratios.")
    parser.add_argument("--runs", type=int, default=5, help="runs per case (median reported)")
    parser.add_argument("--quick", action="store_true", help="smaller batches (noisier)")
    parser.add_argument("--no-grpc", action="store_true", help="skip the gRPC case")
    parser.add_argument("--only", help="run only cases whose name contains this text")
    parser.add_argument(
        "--pin", type=int, metavar="CPU", help="pin this process and its children to one CPU"
    )
    add_wake_latency_option(parser)
    parser.add_argument(
        "--v2-bridge",
        help="the v2 bridge's command line (shell words; default: the reference v2 bridge)",
    )
    options = parser.parse_args(argv)
    with hold_low_wake_latency(options.wake_latency == WAKE_LATENCY_LOW) as wake:
        return _run(options, wake.detail)


def _run(options: argparse.Namespace, wake_latency: str) -> int:
    tune_allocator()  # the client's 1 MiB reads then reuse warm memory, like the peers'
    if options.v2_bridge:
        V2_BRIDGE[:] = shlex.split(options.v2_bridge)
    if options.pin is not None:
        os.sched_setaffinity(0, {options.pin})
    batch = QUICK_BATCH if options.quick else BATCH
    print(f"bench_bridges: {options.runs} runs per case; ratio = bridge / baseline (medians)")
    # The machine's state is part of the result: shared cores move every figure.
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    pinned = f"; pinned to CPU {options.pin}" if options.pin is not None else ""
    print(f"machine: {os.cpu_count()} CPUs, load average {load}{pinned}")
    print(f"CPU wake-up latency: {wake_latency}")
    header = (
        f"{'case':48} {'ratio':>7} {'runs (min-max)':>15} {'bridge':>10} {'baseline':>10}  target"
    )
    print(header)
    print("-" * len(header))
    for pair in cases(batch, not options.no_grpc):
        if options.only and options.only not in pair.name:
            continue
        if options.v2_bridge and pair.name.endswith("Python loop only"):
            continue  # those rows are about the reference bridge's C loop
        ratios, bridge, base = measure(pair, options.runs)
        ratio = statistics.median(ratios)
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
        if pair.name.startswith("floor"):
            verdict = "(no target: the floor for a pure-Python bridge)"
        elif pair.name.endswith("Python loop only"):
            verdict = "(no target: without the C fast loop)"
        elif pair.target is None:
            verdict = (
                f"MessagePack {ratio:.2f}x faster"
                if ratio >= 1
                else f"JSON {1 / ratio:.2f}x faster"
            )
            if "small" not in pair.name:
                verdict += f"; 2-3x claim {_claim_verdict(ratio)}"
        else:
            verdict = f"<= {pair.target}x: {'MET' if ratio <= pair.target else 'MISSED'}"
        print(
            f"{pair.name:48} {ratio:6.2f}x {spread:>15} {_fmt_seconds(bridge):>10} "
            f"{_fmt_seconds(base):>10}  {verdict}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
