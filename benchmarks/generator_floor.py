"""The generator's floor: the least CPU a gevent loop spends per request on this machine.

    python benchmarks/generator_floor.py [--requests 40000] [--wake-latency low|system]

One greenlet sends the small profile's ping frame to the raw echo baseline
(``snakepit_harness.loadtests.raw_echo``, 1 MiB pipes) and reads the echo
back, in a closed loop: ``writev``, a wait on the gevent hub, ``readv``;
nothing else (no locust, no pool, no checks, no statistics).  It does so
twice: sleeping in the hub at once, and polling the pipe for the load pool's
window first (``loadtests/spin.py``), and prints for each the requests per
second and this process's CPU per request.  A load user cannot
do less, so the generator's ``gen µs/req`` at the raw baseline is best read as
a ratio against this figure, measured on the same machine at the same time
(``bench_load.py`` does).  Like ``load``, it holds idle CPUs to a low wake-up
latency while it measures (``--wake-latency low``, the default, where this
process may open ``/dev/cpu_dma_latency``; see
``snakepit_harness.transports.cpu_wake``), so that the floor is measured under
the same conditions as the sweep it is compared with.  Run it in its own
process: importing gevent here is harmless, but it patches nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Final

import gevent
from gevent import get_hub
from snakepit_harness.loadtests.spin import SPIN_WINDOW_NS
from snakepit_harness.loadtests.sweep import WAKE_LATENCY_LOW, add_wake_latency_option

from snakepit_harness.transports.cpu_wake import hold_low_wake_latency

PIPE_SIZE: Final = 1024 * 1024  # as the load pool asks for (1 MiB frames)
WARM_UP_REQUESTS: Final = 2000
_READ: Final = 1  # libev's EV_READ


def _frame() -> bytes:
    body = json.dumps(
        {"id": 1, "command": "ping", "args": {"message": "hello from the load test", "n": 42}}
    ).encode()
    return len(body).to_bytes(4, "big") + body


def measure(requests: int, poll_ns: int = 0) -> tuple[float, float]:
    """(requests per second, CPU µs per request) of the bare loop.

    ``poll_ns`` > 0: poll the pipe that long for each answer before waiting
    in the hub, as the load pool does where its trials find it faster
    (``loadtests/spin.py``); 0: wait at once.
    """
    echo = subprocess.Popen(
        [sys.executable, "-m", "snakepit_harness.loadtests.raw_echo"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        pipesize=PIPE_SIZE,
    )
    assert echo.stdin is not None and echo.stdout is not None
    write_fd, read_fd = echo.stdin.fileno(), echo.stdout.fileno()
    os.set_blocking(read_fd, False)
    hub = get_hub()
    readable = hub.loop.io(read_fd, _READ)
    frame = _frame()
    buffer = bytearray(64 * 1024)
    figures: list[float] = []

    def poll(window_ns: int) -> int:
        """Bytes read while polling for up to ``window_ns`` (0 when nothing came)."""
        until = time.perf_counter_ns() + window_ns
        while True:
            try:
                return os.readv(read_fd, [buffer])
            except BlockingIOError:
                if time.perf_counter_ns() >= until:
                    return 0

    def loop(count: int) -> None:
        for _ in range(count):
            os.writev(write_fd, [frame])
            received = poll(poll_ns) if poll_ns else 0
            while received < len(frame):
                hub.wait(readable)
                try:
                    received += os.readv(read_fd, [buffer])
                except BlockingIOError:
                    continue

    def run() -> None:
        loop(WARM_UP_REQUESTS)
        cpu, wall = time.process_time(), time.perf_counter()
        loop(requests)
        figures.extend([time.perf_counter() - wall, time.process_time() - cpu])

    try:
        gevent.spawn(run).join()
    finally:
        echo.kill()
        echo.wait()
    wall_s, cpu_s = figures
    return requests / wall_s, cpu_s / requests * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=40_000)
    add_wake_latency_option(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print {sleep: {rps, us_per_request}, poll: {...}, wake_latency_held: bool}",
    )
    args = parser.parse_args(argv)
    figures: dict[str, dict[str, float]] = {}
    with hold_low_wake_latency(args.wake_latency == WAKE_LATENCY_LOW) as wake:
        for wait, poll_ns in (("sleep", 0), ("poll", SPIN_WINDOW_NS)):
            rps, us = measure(args.requests, poll_ns)
            figures[wait] = {"rps": rps, "us_per_request": us}
    if args.json:
        print(json.dumps({**figures, "wake_latency_held": wake.held}))
        return 0
    print(f"CPU wake-up latency: {wake.detail}")
    for wait, figure in figures.items():
        print(
            f"generator floor ({wait}): {figure['rps']:,.0f} req/s, "
            f"{figure['us_per_request']:.1f} µs of CPU per request"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
