"""How the load generator scales: throughput with 1 and with N generator processes, per pool size.

    python benchmarks/bench_load.py [--runs 3] [--processes N] [--pools 1,2,4]
                                    [--duration 3] [--bridge "CMD"] [--wake-latency low|system]

Each run is two sweeps of ``snakepit-harness load --codec msgpack --payload
small --baseline all`` over the pool sizes, one with ``--generator-processes
1`` and one with ``N`` (interleaved, so both see the same machine), and the
table gives, for the raw echo baseline and for the bridge at each pool size,
the medians over the runs of: throughput with 1 and with N processes, their
ratio, the generator's CPU per request (every generator process, the locust
master included, over the window, divided by the requests), and how many runs
were generator-bound (a process at >= 85% of a CPU).  Each run also measures
the generator's floor (``generator_floor.py``: a bare gevent loop of writev,
hub wait, readv against the raw echo, the least a load user can spend, once
sleeping in the hub and once polling first), and the last lines give the
pool-1 raw baseline's µs per request against both.

Read it with the machine in mind: generator processes and bridges share the
CPUs, so on a small machine a second generator process takes CPU from the
bridges as much as it adds load.  The figures are this machine's, measured
in the same run; rerun it on the machine you size pools for.  Exit status 0
whatever the figures (a benchmark reports, it does not gate).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from snakepit_harness.loadtests.sweep import add_wake_latency_option

V2_BRIDGE: Final = [sys.executable, "-m", "snakepit_bridge.generic_bridge_v2", "--quiet"]
FLOOR_SCRIPT: Final = Path(__file__).with_name("generator_floor.py")
# Workers: the raw echo (the fastest there is, where the generator shows most)
# and the bridge under test.
KINDS: Final = (("baseline", "raw echo"), ("bridge", "bridge"))


@dataclass
class Cell:
    """One (pool, worker, processes) figure over the runs."""

    rps: list[float] = field(default_factory=list)
    us_per_request: list[float] = field(default_factory=list)
    bound: int = 0

    def add(self, row: dict[str, Any]) -> None:
        self.rps.append(row["rps"])
        if row["generator_cpu_us_per_request"] is not None:
            self.us_per_request.append(row["generator_cpu_us_per_request"])
        self.bound += bool(row["generator_bound"])


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def sweep(
    bridge: list[str], pools: list[int], processes: int, duration: float, wake_latency: str
) -> list[Any]:
    """One sweep's rows (JSON), or an error naming what failed."""
    with tempfile.TemporaryDirectory(prefix="bench-load-") as directory:
        report = Path(directory) / "report.json"
        command = [
            sys.executable,
            "-m",
            "snakepit_harness",
            "load",
            "--pool",
            ",".join(map(str, pools)),
            "--codec",
            "msgpack",
            "--payload",
            "small",
            "--baseline",
            "all",
            "--generator-processes",
            str(processes),
            "--duration",
            str(duration),
            "--wake-latency",
            wake_latency,
            "--json",
            str(report),
            "--",
            *bridge,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if not report.exists():
            raise SystemExit(f"bench_load: the sweep failed ({done.returncode}):\n{done.stderr}")
        rows: list[Any] = json.loads(report.read_text())["rows"]
        return rows


def floor_us(wake_latency: str) -> dict[str, float]:
    """The generator floor's CPU µs per request, sleeping and polling, measured now."""
    done = subprocess.run(
        [sys.executable, str(FLOOR_SCRIPT), "--json", "--wake-latency", wake_latency],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench_load: the floor measurement failed:\n{done.stderr}")
    figures = json.loads(done.stdout)
    return {wait: float(figures[wait]["us_per_request"]) for wait in ("sleep", "poll")}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "-"


def table(cells: dict[tuple[int, str, int], Cell], pools: list[int], many: int, runs: int) -> str:
    header = (
        "pool",
        "worker",
        "req/s, 1 process",
        f"req/s, {many} processes",
        f"{many}/1",
        "gen µs/req, 1",
        f"gen µs/req, {many}",
        "bound, 1",
        f"bound, {many}",
    )
    lines = []
    for pool in pools:
        for kind, label in KINDS:
            one, more = cells[pool, kind, 1], cells[pool, kind, many]
            rps_one, rps_more = _median(one.rps), _median(more.rps)
            ratio = rps_more / rps_one if rps_one and rps_more else None
            lines.append(
                [
                    str(pool),
                    label,
                    _fmt(rps_one, ",.0f"),
                    _fmt(rps_more, ",.0f"),
                    _fmt(ratio, ".2f") + ("x" if ratio else ""),
                    _fmt(_median(one.us_per_request), ".1f"),
                    _fmt(_median(more.us_per_request), ".1f"),
                    f"{one.bound}/{runs}",
                    f"{more.bound}/{runs}",
                ]
            )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    cpus = available_cpus()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (median)")
    parser.add_argument(
        "--processes",
        type=int,
        default=max(2, cpus),
        help=f"the N of the comparison (default: max(2, CPUs) = {max(2, cpus)})",
    )
    parser.add_argument("--pools", default="1,2,4", help="pool sizes (default: 1,2,4)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per point")
    parser.add_argument("--bridge", help="the bridge command (default: the reference v2 bridge)")
    add_wake_latency_option(parser)
    args = parser.parse_args(argv)
    pools = [int(p) for p in args.pools.split(",")]
    bridge = shlex.split(args.bridge) if args.bridge else V2_BRIDGE
    cells = {
        (pool, kind, procs): Cell()
        for pool in pools
        for kind, _ in KINDS
        for procs in (1, args.processes)
    }
    load_before = os.getloadavg()[0]
    floors: list[dict[str, float]] = []
    held: list[bool] = []  # per row: whether idle CPUs were held to low wake latency
    for run in range(1, args.runs + 1):
        floors.append(floor_us(args.wake_latency))
        for procs in (1, args.processes):
            print(f"run {run}/{args.runs}: {procs} generator process(es) ...", file=sys.stderr)
            for row in sweep(bridge, pools, procs, args.duration, args.wake_latency):
                cells[row["pool"], row["kind"], procs].add(row)
                held.append(bool(row.get("wake_latency_held")))
    print(
        f"{cpus} CPUs; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; "
        f"small requests under MessagePack, {args.duration:g} s per point, "
        f"medians of {args.runs} runs; --wake-latency {args.wake_latency}; "
        f"bridge: {' '.join(bridge)}"
    )
    print(table(cells, pools, args.processes, args.runs))
    print(f"idle CPUs held to low wake-up latency at {sum(held)} of {len(held)} points")
    floor = {wait: statistics.median(f[wait] for f in floors) for wait in floors[0]}
    print(
        f"\ngenerator floor (bare gevent loop, raw echo): {floor['sleep']:.1f} µs per request "
        f"sleeping in the hub, {floor['poll']:.1f} polling first (the pool's default way)"
    )
    if min(pools) == 1:
        for procs in (1, args.processes):
            measured = _median(cells[1, "baseline", procs].us_per_request)
            if measured is not None:
                print(
                    f"pool-1 raw baseline, {procs} generator process(es): {measured:.1f} µs "
                    f"per request = {measured / floor['poll']:.2f}x the polling floor, "
                    f"{measured / floor['sleep']:.2f}x the sleeping one"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
