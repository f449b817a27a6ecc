"""Run a sweep: one headless locust process per point, a raw baseline beside the bridge.

This module runs in the harness's own process and never imports locust or
gevent: each point is ``python -m locust -f locustfile.py --headless ...`` in
its own session, its output captured in a log file (shown when it fails), its
result read from a JSON file it writes.  Points are ordered payload by
payload, pool by pool, the calibration baseline first and then each codec, so
that a bridge's figures and the baseline they are divided by are measured
minutes, not tens of minutes, apart on a noisy machine.

A point's load comes from one locust process or, with
``--generator-processes N``, from a locust master and N workers it forks
(locust's own ``--processes``), each driving its share of the users and of the
pool.  ``auto`` picks, per point, as many processes as the machine can spare
(:func:`auto_generator_processes`).

While the sweep runs, the harness asks the kernel to keep idle CPUs quick to
wake (``--wake-latency low``, the default; see
:mod:`snakepit_harness.transports.cpu_wake`): otherwise a point with an idle
CPU, such as pool 1, measures how long that CPU takes to leave its idle state
on every request.  Each result says whether the request was held.

Cleanup is unconditional: after every point, however it ended (success,
failure, Ctrl-C, SIGTERM), the locust process group (the forked workers are in
it) is terminated (SIGTERM, so it kills its pool itself; SIGKILL after a grace
period) and every bridge recorded in the point's pid file is SIGKILLed with its
group (:func:`snakepit_harness.transports.spawn.supervised_group`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from snakepit_harness.errors import HarnessError
from snakepit_harness.transports.bridge_host import host_process
from snakepit_harness.transports.cpu_wake import WakeLatencyHold, hold_low_wake_latency
from snakepit_harness.transports.spawn import TERMINATE_GRACE_S, supervised_group

from .bridge_calls import PlannedCall
from .point import BASELINE_KIND, BRIDGE_KIND, GENERATOR_POLLS, PointConfig, baseline_command

__all__ = [
    "AUTO",
    "LOCUSTFILE",
    "WAKE_LATENCY_CHOICES",
    "WAKE_LATENCY_LOW",
    "SweepError",
    "SweepOptions",
    "add_wake_latency_option",
    "auto_generator_processes",
    "plan",
    "run_point",
    "run_sweep",
]

LOCUSTFILE: Final = str(Path(__file__).with_name("locustfile.py"))
# Every locust process of a sweep: this interpreter, our locustfile.
LOCUST_COMMAND: Final = (sys.executable, "-m", "locust", "-f", LOCUSTFILE)
USER_CLASSES: Final = {
    "stdio": "StdioPoolUser",
    "grpc": "GrpcUser",
    "bridge-service": "BridgeServiceUser",
}
# Transports whose requests are protobuf messages: one "codec", no negotiation.
PROTOBUF_TRANSPORTS: Final = ("grpc", "bridge-service")

# Time a locust process may spend on things other than warm-up and the
# window: importing locust (~1-2 s on a busy machine), starting the pool
# (a bridge has 20 s to answer its init ping, §5.1), writing its result.
STARTUP_ALLOWANCE_S: Final = 45.0
# Distributed masters also wait for their workers to connect.
WORKER_WAIT_S: Final = 120.0
_POLL_S: Final = 0.1
# Locust starts users one by one, spawn-rate per second; at users x 100 per
# second every user is running within ~10 ms, long before the warm-up ends.
SPAWN_RATE_FACTOR: Final = 100
_LOG_TAIL_CHARS: Final = 2000

AUTO: Final = "auto"
# The raw echo is steady (no codec, no dispatch): thousands of samples in a
# few seconds give its medians, so its window is capped to keep sweeps short.
BASELINE_MAX_DURATION_S: Final = 3.0
# --wake-latency: hold idle CPUs to a low wake-up latency while the sweep runs
# (transports/cpu_wake.py), or leave the machine's idle states as they are.
WAKE_LATENCY_LOW: Final = "low"
WAKE_LATENCY_SYSTEM: Final = "system"
WAKE_LATENCY_CHOICES: Final = (WAKE_LATENCY_LOW, WAKE_LATENCY_SYSTEM)


def add_wake_latency_option(parser: argparse.ArgumentParser) -> None:
    """``--wake-latency``, as ``load`` and the benchmark programs all take it."""
    parser.add_argument(
        "--wake-latency",
        choices=WAKE_LATENCY_CHOICES,
        default=WAKE_LATENCY_LOW,
        help="low: while it measures, hold idle CPUs to a 0 µs wake-up latency "
        "(/dev/cpu_dma_latency, root only; released when the harness exits), so that a "
        "point with an idle CPU does not measure how long that CPU takes to wake; system: "
        "leave the machine's idle states as they are; see docs/load.md (default: low)",
    )


class SweepError(HarnessError):
    """A point could not be run (locust failed to start, or wrote no result)."""


@dataclass
class SweepOptions:
    bridge_cmd: list[str]
    transport: str = "stdio"
    pools: list[int] = field(default_factory=lambda: [1, 2, 4])
    codecs: list[str] = field(default_factory=lambda: ["json", "msgpack"])
    payloads: list[str] = field(default_factory=lambda: ["small"])
    users: int = 8
    warmup_s: float = 1.0
    duration_s: float = 5.0
    timeout_s: float = 30.0
    codec_select: str = "negotiate"
    baseline: str = "all"
    sample_interval_s: float = 0.0
    stream_count: int = 10
    master: bool = False
    expect_workers: int = 1
    master_bind_port: int = 5557
    generator_processes: int | str = AUTO  # a count, or AUTO (per point)
    generator_wait: str = GENERATOR_POLLS  # see PointConfig.generator_wait
    wake_latency: str = WAKE_LATENCY_LOW  # one of WAKE_LATENCY_CHOICES
    # bridge-service: milliseconds the host emulator adds to every callback
    # (a sweep dimension), and each payload's planned call (bridge_calls.py).
    host_delays_ms: list[float] = field(default_factory=lambda: [0.0])
    planned_calls: dict[str, PlannedCall] = field(default_factory=dict)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_generator_processes(pool: int, cpus: int) -> int:
    """As many generator processes as the machine can spare for a pool of ``pool``.

    One per CPU, never more than the pool (a process without a worker of its
    own has nothing to drive), at least one.  A generator process costs CPU
    only for the load it makes, and one process per worker is what keeps a
    fast pool from measuring the generator: on 2 cores, with idle CPUs held
    to low wake latency, one process was generator-bound at pools 2 and 4 in
    every run (so the default sweep could recommend nothing), and two made
    1.5-2x the throughput with headroom.  (Half the CPUs was the rule while
    wake-ups from idle cost more than a request here and a second process
    only took CPU from the bridges.)
    """
    return max(1, min(pool, cpus))


def _processes_for(options: SweepOptions, pool: int) -> int:
    if options.master:
        return options.expect_workers  # distributed: one generating process per worker
    if options.generator_processes == AUTO:
        return auto_generator_processes(pool, available_cpus())
    return int(options.generator_processes)


def _variants(options: SweepOptions, payload: str) -> list[dict[str, Any]]:
    """The bridge points of one payload at one pool: a codec each, or a host delay each."""
    if options.transport == "bridge-service":
        call = options.planned_calls[payload]
        return [
            {
                "codec": "protobuf",
                "host_delay_ms": delay,
                "tool": call.tool,
                "stream_count": call.chunks or options.stream_count,
            }
            for delay in options.host_delays_ms
        ]
    codecs = ["protobuf"] if options.transport in PROTOBUF_TRANSPORTS else options.codecs
    return [{"codec": codec} for codec in codecs]


def _baseline(options: SweepOptions, payload: str) -> dict[str, Any]:
    """What the calibration point of ``payload`` sends and runs."""
    if options.transport != "bridge-service":
        return {"bridge_cmd": baseline_command(options.transport)}
    call = options.planned_calls[payload]
    return {
        "bridge_cmd": baseline_command(options.transport, call.chunks),
        "tool": call.tool,
        "stream_count": call.chunks or options.stream_count,
    }


def plan(options: SweepOptions) -> list[PointConfig]:
    """Every point of the sweep, in the order it runs."""
    smallest = min(options.pools)
    points = []
    for payload in options.payloads:
        for pool in options.pools:
            processes = _processes_for(options, pool)
            common: dict[str, Any] = {
                "transport": options.transport,
                "pool": pool,
                "payload": payload,
                "users": options.users,
                "warmup_s": options.warmup_s,
                "duration_s": options.duration_s,
                "timeout_s": options.timeout_s,
                "codec_select": options.codec_select,
                "sample_interval_s": options.sample_interval_s,
                "stream_count": options.stream_count,
                "expect_nodes": processes if options.master or processes > 1 else 1,
                "generator_processes": processes,
                "split_pool": processes > 1 and not options.master,
                "generator_wait": options.generator_wait,
            }
            wants_baseline = options.baseline == "all" or (
                options.baseline == "smallest" and pool == smallest
            )
            if wants_baseline:
                baseline_common = dict(
                    common,
                    duration_s=min(options.duration_s, BASELINE_MAX_DURATION_S),
                    **_baseline(options, payload),
                )
                points.append(PointConfig(kind=BASELINE_KIND, codec="raw", **baseline_common))
            for variant in _variants(options, payload):
                points.append(
                    PointConfig(
                        kind=BRIDGE_KIND,
                        bridge_cmd=options.bridge_cmd,
                        **dict(common, **variant),
                    )
                )
    if points:
        points[-1].last_point = True
    return points


def _log_tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
    return ""


def locust_command(config: PointConfig, options: SweepOptions, run_time_s: float) -> list[str]:
    command = [
        *LOCUST_COMMAND,
        "--headless",
        "--users",
        str(config.users),
        "--spawn-rate",
        str(config.users * SPAWN_RATE_FACTOR),
        "--run-time",
        f"{int(run_time_s) + 1}s",
        "--stop-timeout",
        # Seconds users get to finish the request in hand once the window is
        # over; a stuck bridge would otherwise hold the point for --timeout.
        "1",
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--snakepit-config",
        config.to_json(),
    ]
    if config.split_pool:
        # Locust forks the workers and runs their master itself.
        command += ["--processes", str(config.generator_processes)]
    elif options.master:
        command += [
            "--master",
            "--expect-workers",
            str(options.expect_workers),
            "--expect-workers-max-wait",
            str(int(WORKER_WAIT_S)),
            "--master-bind-port",
            str(options.master_bind_port),
        ]
    return [*command, USER_CLASSES[config.transport]]


def run_point(
    config: PointConfig,
    options: SweepOptions,
    workdir: Path,
    index: int,
    tick: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Run one point in its own locust process and return its result document."""
    result_path = workdir / f"point-{index:03d}.json"
    log_path = workdir / f"point-{index:03d}.log"
    pid_file = workdir / f"point-{index:03d}.pids"
    config.result_path = str(result_path)
    config.pid_file = str(pid_file)
    budget = config.warmup_s + config.duration_s + STARTUP_ALLOWANCE_S
    if options.master:
        budget += WORKER_WAIT_S
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        if config.transport == "bridge-service":
            # The request is a file, not part of the command line: a 1 MiB
            # binary echo would not fit in the kernel's argument limit.
            request_path = workdir / f"point-{index:03d}.request"
            request_path.write_bytes(options.planned_calls[config.payload].request)
            config.tool_request_file = str(request_path)
            # One host for the point's workers, in every generator process.
            host_log = stack.enter_context(open(workdir / f"point-{index:03d}.host.log", "wb"))
            config.host_address = stack.enter_context(
                host_process(config.host_delay_ms or 0.0, host_log)
            )
        command = locust_command(config, options, budget)
        proc = stack.enter_context(supervised_group(command, log_path, pid_file))
        while proc.poll() is None:
            elapsed = time.monotonic() - began
            if elapsed > budget + TERMINATE_GRACE_S * 2:
                raise SweepError(
                    f"{config.label}: locust did not finish within {budget:.0f} s; "
                    f"log tail:\n{_log_tail(log_path)}"
                )
            if tick is not None:
                tick(elapsed)
            time.sleep(_POLL_S)
    if not result_path.exists():
        raise SweepError(
            f"{config.label}: locust exited with status {proc.returncode} and wrote no "
            f"result; log tail:\n{_log_tail(log_path)}"
        )
    result: dict[str, Any] = json.loads(result_path.read_text())
    result["elapsed_s"] = time.monotonic() - began
    return result


def run_sweep(
    options: SweepOptions,
    progress: TextIO,
    workdir: Path | None = None,
) -> list[dict[str, Any]]:
    """Run every planned point, reporting progress; return their results in order."""
    points = plan(options)
    results: list[dict[str, Any]] = []
    own_dir = workdir is None
    directory = Path(tempfile.mkdtemp(prefix="snakepit-load-")) if own_dir else workdir
    assert directory is not None
    directory.mkdir(parents=True, exist_ok=True)
    interactive = progress.isatty()
    sweep_began = time.monotonic()
    with contextlib.ExitStack() as stack:
        wake = stack.enter_context(hold_low_wake_latency(options.wake_latency == WAKE_LATENCY_LOW))
        stack.callback(_remove_own_directory, directory, own_dir)
        progress.write(f"CPU wake-up latency: {wake.detail}\n")
        for index, config in enumerate(points, start=1):
            head = f"[{index}/{len(points)}] {config.label} users={config.users}"
            if config.generator_processes > 1 and not options.master:
                head += f" processes={config.generator_processes}"
            if options.master:
                head += f" (waiting for {options.expect_workers} worker(s))"

            shown = [-1]

            def tick(elapsed: float, head: str = head, shown: list[int] = shown) -> None:
                # Redraw the line once a second, not on every poll.
                if interactive and int(elapsed) != shown[0]:
                    shown[0] = int(elapsed)
                    progress.write(f"\r{head} ... {shown[0]:3d} s")
                    progress.flush()

            if not interactive:
                progress.write(f"{head} ...\n")
                progress.flush()
            result = run_point(config, options, directory, index, tick)
            _record_wake_latency(result, wake)
            results.append(result)
            line = describe_result(result)
            total = time.monotonic() - sweep_began
            eta = total / index * (len(points) - index)
            prefix = f"\r{head}" if interactive else "   "
            progress.write(f"{prefix} -> {line} ({result['elapsed_s']:.1f} s; ETA {eta:.0f} s)\n")
            progress.flush()
    return results


def _record_wake_latency(result: dict[str, Any], wake: WakeLatencyHold) -> None:
    """Say in a point's result whether idle CPUs were held to low wake latency."""
    result["wake_latency_held"] = wake.held
    result["wake_latency_refused"] = wake.refused


def _remove_own_directory(directory: Path, own: bool) -> None:
    if not own:
        return
    for entry in directory.iterdir():
        with contextlib.suppress(OSError):
            entry.unlink()
    with contextlib.suppress(OSError):
        directory.rmdir()


def describe_result(result: dict[str, Any]) -> str:
    from .hires import format_ms

    if result.get("error"):
        return f"FAILED: {result['error']}"
    trip = result.get("round_trip", {})
    return (
        f"{result.get('rps', 0):,.0f} req/s, p50 {format_ms(trip.get('p50_ms'))}, "
        f"p99 {format_ms(trip.get('p99_ms'))}, errors {result.get('error_ratio', 0):.2%}"
    )


def run_worker(
    master_host: str,
    master_port: int,
    progress: TextIO,
    workdir: Path | None = None,
    wake_latency: str = WAKE_LATENCY_LOW,
) -> int:
    """Be a distributed worker: run locust workers until the master's last point is done.

    The master sends each point's configuration (``--snakepit-config``) with
    its spawn message; the worker's locustfile writes it to a state file so we
    know when the last point has been served.  Returns locust's exit status.
    This host's bridges answer this host's generator, so it holds its own
    CPUs to low wake latency (``wake_latency``), as a sweep does.
    """
    with hold_low_wake_latency(wake_latency == WAKE_LATENCY_LOW) as wake:
        progress.write(f"worker: CPU wake-up latency: {wake.detail}\n")
        return _serve_master(master_host, master_port, progress, workdir)


def _serve_master(
    master_host: str, master_port: int, progress: TextIO, workdir: Path | None
) -> int:
    directory = (
        Path(tempfile.mkdtemp(prefix="snakepit-load-worker-")) if workdir is None else workdir
    )
    directory.mkdir(parents=True, exist_ok=True)
    state = directory / "worker-state.json"
    pid_file = directory / "worker.pids"
    command = [
        *LOCUST_COMMAND,
        "--worker",
        "--master-host",
        master_host,
        "--master-port",
        str(master_port),
        "--loglevel",
        "WARNING",
    ]
    env = dict(os.environ, SNAKEPIT_WORKER_STATE=str(state), SNAKEPIT_PID_FILE=str(pid_file))
    served = 0
    while True:
        with contextlib.suppress(OSError):
            state.unlink()
        log_path = directory / f"worker-{served:03d}.log"
        progress.write(f"worker: connecting to {master_host}:{master_port} ...\n")
        progress.flush()
        with supervised_group(command, log_path, pid_file, env) as proc:
            proc.wait()
        if not state.exists():
            progress.write(f"worker: locust exited ({proc.returncode}) without a point\n")
            progress.write(_log_tail(log_path) + "\n")
            return proc.returncode or 0
        served += 1
        config = PointConfig.from_json(state.read_text())
        progress.write(f"worker: served {config.label}\n")
        if config.last_point:
            return 0
