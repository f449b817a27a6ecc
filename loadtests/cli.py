"""``snakepit-harness load``: sweep pool sizes, codecs and payloads with locust; report and gate.

A thin edge: parse options, run the sweep (:mod:`.sweep`, one locust process
per point), build the report (:mod:`.report`), write the files asked for, and
turn limits into the exit code (3 when one is breached, 1 when a point could
not be measured because the bridge failed).  Locust is never imported here.

Several load-generating processes on this host: ``--generator-processes N``
(or ``auto``, the default: as many as the machine can spare) runs each point
as a locust master with N forked workers, each driving its share of the users
and of the pool.  Distributed mode: ``--master`` runs the same sweep with each
point's locust process as a master waiting for ``--expect-workers`` workers;
``--worker --master-host H`` runs locust workers that take every point's
configuration (bridge command included) from the master.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from snakepit_harness.errors import (
    BridgeCrashed,
    BridgeTimeout,
    HarnessError,
    RemoteProtocolError,
    TransportError,
)
from snakepit_harness.protocol import CODEC_NAMES, ExitCode
from snakepit_harness.transports.grpc_channel import GrpcStatusError

from .bridge_calls import NoToolsRegistered
from .point import GENERATOR_POLLS, GENERATOR_WAITS
from .spin import SPIN_WINDOW_NS
from .sweep import AUTO, PROTOBUF_TRANSPORTS, add_wake_latency_option

if TYPE_CHECKING:
    from .bridge_calls import PlannedCall

__all__ = ["register", "run_load"]

DEFAULT_BRIDGES: Final = {
    "stdio": (sys.executable, "-m", "snakepit_bridge.generic_bridge_v2"),
    "grpc": (sys.executable, "-m", "snakepit_bridge.grpc_bridge"),
    "bridge-service": (sys.executable, "-m", "snakepit_bridge.bridge_service"),
}
TRANSPORTS: Final = tuple(DEFAULT_BRIDGES)
# What --payload means when it is not given: a stdio or grpc bridge echoes the
# small profile; a bridge-service worker gets one call of its own tools.
DEFAULT_PAYLOADS: Final = {"stdio": ["small"], "grpc": ["small"], "bridge-service": ["call"]}
# Payloads that only one transport understands (they name a kind of call, not data).
TRANSPORT_PAYLOADS: Final = {"grpc": ("stream",), "bridge-service": ("call", "stream")}

DEFAULT_DURATION_S: Final = 5.0
# A soak needs long enough for a leak to show over the noise of the allocator.
DEFAULT_SOAK_DURATION_S: Final = 60.0
DEFAULT_SOAK_INTERVAL_S: Final = 1.0
DEFAULT_MASTER_PORT: Final = 5557  # locust's own default


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"pool sizes must be positive integers, got {text!r}")
    return sorted(set(values))


def _processes(text: str) -> int | str:
    if text == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return value


def _delay_list(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated milliseconds, got {text!r}"
        ) from None
    if not values or any(not v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"host delays must be 0 or more ms, got {text!r}")
    return sorted(set(values))


def _name_list(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected at least one name")
    return list(dict.fromkeys(values))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "load",
        help="load-test a bridge with locust: pool sizes x codecs x payloads",
        description="Run each point (pool size, codec, payload) in its own headless locust "
        "process, beside a raw echo baseline measured in the same run; print a table and a "
        "recommendation; write HTML/JSON/CSV; exit 3 when a limit is breached. "
        "Without `-- BRIDGE CMD...` the reference bridge is used.",
    )
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument(
        "--pool", type=_int_list, default=[1, 2, 4], help="pool sizes (default: 1,2,4)"
    )
    sweep.add_argument(
        "--codec",
        type=_name_list,
        default=["json", "msgpack"],
        help="codecs (default: json,msgpack)",
    )
    sweep.add_argument(
        "--payload",
        type=_name_list,
        default=None,
        help="payload profiles: ping, small, structured, binary, file:PATH; with "
        "--transport grpc also stream; with --transport bridge-service call (one call of "
        "the worker's own tool, see --tool), stream, and the profiles as echo's value "
        "(default: small; call for bridge-service)",
    )
    sweep.add_argument(
        "--users", type=int, default=None, help="locust users (default: 2x the largest pool)"
    )
    sweep.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"measured seconds per point (default: {DEFAULT_DURATION_S:g}; "
        f"{DEFAULT_SOAK_DURATION_S:g} with --soak)",
    )
    sweep.add_argument(
        "--warmup", type=float, default=0.5, help="unmeasured warm-up seconds (default: 0.5)"
    )
    sweep.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    sweep.add_argument("--transport", choices=TRANSPORTS, default="stdio")
    sweep.add_argument(
        "--codec-select",
        choices=("negotiate", "none"),
        default="negotiate",
        help="how a stdio bridge learns the codec: a §3.4 negotiation frame, or none "
        "(the command line already chose it) (default: negotiate)",
    )
    sweep.add_argument(
        "--baseline",
        choices=("all", "smallest", "none"),
        default="all",
        help="measure the raw echo baseline at every pool size, only the smallest, or not at all",
    )
    sweep.add_argument("--stream-count", type=int, default=10, help="messages per gRPC ping_stream")
    sweep.add_argument(
        "--generator-processes",
        type=_processes,
        default=AUTO,
        metavar="N|auto",
        help="locust processes generating the load on this host, each driving its share of "
        "the users and of the pool (locust --processes); auto: per point, one per CPU, "
        "at most the pool size, at least 1 (default: auto)",
    )
    parser.add_argument(
        "--generator-wait",
        choices=GENERATOR_WAITS,
        default=GENERATOR_POLLS,
        help="how a generator process waits for an answer while all its stdio workers are "
        f"busy: poll the pipe for up to {SPIN_WINDOW_NS // 1000} µs before sleeping, where "
        "timed trials find that faster (poll), or sleep at once (sleep); see docs/load.md "
        "(default: poll)",
    )
    add_wake_latency_option(parser)
    service = parser.add_argument_group("bridge-service (Snakepit v0.13 workers)")
    service.add_argument(
        "--host-delay",
        type=_delay_list,
        default=[0.0],
        metavar="MS[,MS...]",
        help="milliseconds the harness's host adds to every callback a worker makes "
        "(session registration, tool registration): a sweep dimension (default: 0)",
    )
    service.add_argument(
        "--tool",
        help="the worker's tool that payload call sends to (and stream, when it streams); "
        "default: chosen from what the worker registers (docs/load.md)",
    )
    service.add_argument(
        "--tool-calls",
        type=Path,
        metavar="FILE",
        help="JSON {tool: [arguments, ...]}: the first arguments of the called tool are sent",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--html", type=Path, help="write an HTML report with plots")
    out.add_argument(
        "--csv", type=Path, metavar="DIR", help="write points.csv, startup.csv (and soak.csv)"
    )
    out.add_argument("--json", type=Path, help="write the full report as JSON")
    out.add_argument("--work-dir", type=Path, help="keep each point's locust log and result here")
    gates = parser.add_argument_group("gates (exit status 3 when breached)")
    gates.add_argument("--max-p99", type=float, metavar="MS", help="highest allowed p99, ms")
    gates.add_argument(
        "--max-error-ratio", type=float, metavar="R", help="highest allowed error ratio"
    )
    gates.add_argument("--min-rps", type=float, metavar="N", help="lowest allowed requests/s")
    gates.add_argument(
        "--max-rss-growth", type=float, metavar="MB", help="soak: highest bridge memory growth"
    )
    soak = parser.add_argument_group("soak")
    soak.add_argument(
        "--soak", action="store_true", help="long points; report bridge memory growth"
    )
    soak.add_argument(
        "--soak-interval",
        type=float,
        default=DEFAULT_SOAK_INTERVAL_S,
        help="seconds between memory samples",
    )
    dist = parser.add_argument_group("distributed (locust master/worker)")
    dist.add_argument("--master", action="store_true", help="run each point as a locust master")
    dist.add_argument("--expect-workers", type=int, default=1, help="workers a master waits for")
    dist.add_argument("--master-bind-port", type=int, default=DEFAULT_MASTER_PORT)
    dist.add_argument("--worker", action="store_true", help="be a locust worker for a master")
    dist.add_argument("--master-host", default="127.0.0.1")
    dist.add_argument("--master-port", type=int, default=DEFAULT_MASTER_PORT)
    parser.set_defaults(handler=run_load)


def _check_dependencies(transport: str) -> None:
    grpc = transport in PROTOBUF_TRANSPORTS
    needed = ["locust", "gevent"] + (["grpc"] if grpc else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        extra = "load,grpc" if grpc else "load"
        raise HarnessError(
            f"the load subcommand needs {', '.join(missing)}: "
            f"pip install 'snakepit-harness[{extra}]'"
        )


def _validate(args: argparse.Namespace) -> None:
    from .profiles import BUILTIN_PROFILES, FILE_PREFIX, load_profile

    positive = {
        "--users": args.users,
        "--duration": args.duration,
        "--timeout": args.timeout,
        "--expect-workers": args.expect_workers,
        "--stream-count": args.stream_count,
        "--soak-interval": args.soak_interval,
    }
    for option, value in positive.items():
        if value is not None and value <= 0:
            raise HarnessError(f"{option} must be positive, not {value:g}")
    if args.warmup < 0:
        raise HarnessError(f"--warmup cannot be negative ({args.warmup:g})")
    if args.master and args.transport == "bridge-service":
        raise HarnessError(
            "--master is not supported with --transport bridge-service: each point's host "
            "emulator runs on this host, on loopback, where remote workers cannot call back"
        )
    if args.master and args.generator_processes != AUTO:
        raise HarnessError(
            "--generator-processes applies to this host; with --master, each --worker host "
            "is one generating process (start several workers for more)"
        )
    if args.transport != "bridge-service" and (args.tool or args.tool_calls):
        raise HarnessError("--tool and --tool-calls apply to --transport bridge-service only")
    if args.transport != "bridge-service" and args.host_delay != [0.0]:
        raise HarnessError("--host-delay applies to --transport bridge-service only")
    for codec in args.codec:
        if codec not in CODEC_NAMES:
            raise HarnessError(f"unknown codec {codec!r}; use json and/or msgpack")
    special = TRANSPORT_PAYLOADS.get(args.transport, ())
    for payload in args.payload:
        if payload in special:
            continue
        if payload not in BUILTIN_PROFILES and not payload.startswith(FILE_PREFIX):
            known = ", ".join([*BUILTIN_PROFILES, *special, "file:PATH"])
            raise HarnessError(f"unknown payload profile {payload!r}; known: {known}")
        if payload.startswith(FILE_PREFIX):
            load_profile(payload)  # a bad file fails now, not in every point


def resolve_command(argv: list[str]) -> list[str]:
    """Find the bridge's executable now (exit 2 at once, not a failure per point).

    A bare name is looked up on PATH and then beside this interpreter, so the
    console scripts of the virtualenv the harness runs from (e.g.
    ``snakepit-generic-bridge-v2``) work without activating it.
    """
    program = argv[0]
    if os.sep in program:
        if not os.access(program, os.X_OK):
            raise HarnessError(f"the bridge command {program!r} is not an executable file")
        return argv
    found = shutil.which(program)
    if found is None:
        beside = Path(sys.executable).parent / program
        if os.access(beside, os.X_OK):
            found = str(beside)
    if found is None:
        raise HarnessError(f"the bridge command {program!r} was not found on PATH")
    return [found, *argv[1:]]


def _plan_calls(args: argparse.Namespace, bridge_cmd: list[str]) -> dict[str, PlannedCall]:
    """bridge-service: ask the worker for its tools and try each payload's call once."""
    if args.transport != "bridge-service":
        return {}
    from snakepit_harness.transports.bridge_service import read_tool_calls

    from .bridge_calls import plan_tool_calls

    tool_calls = read_tool_calls(args.tool_calls) if args.tool_calls is not None else None
    planned = plan_tool_calls(
        bridge_cmd, args.payload, tool=args.tool, tool_calls=tool_calls, timeout=args.timeout
    )
    for payload, call in planned.items():
        print(f"snakepit-harness load: payload {payload}: {call.how}", file=sys.stderr)
    return planned


# What went wrong with a worker before the sweep, by the error that said so
# (the first match in this order); the names are the load report's verdicts.
UNPLANNABLE_VERDICTS: Final[tuple[tuple[type[Exception], str], ...]] = (
    (BridgeTimeout, "TIMEOUT"),
    (BridgeCrashed, "CRASH"),
    (TransportError, "START"),
    (GrpcStatusError, "RPC"),
    (NoToolsRegistered, "NO TOOLS"),
    (RemoteProtocolError, "TOOL CALL"),
)


def _say_unplannable(exc: HarnessError) -> None:
    verdict = next(name for kind, name in UNPLANNABLE_VERDICTS if isinstance(exc, kind))
    print(
        f"snakepit-harness load: the worker cannot be load-tested: {verdict}: {exc}",
        file=sys.stderr,
    )
    tail = getattr(exc, "stderr_tail", b"")
    if tail:
        print("--- worker stderr (tail) ---", file=sys.stderr)
        print(tail.decode("utf-8", "replace").rstrip(), file=sys.stderr)


def run_load(args: argparse.Namespace) -> int:
    from .plots import render_html
    from .render import render_table, write_csv, write_json
    from .report import Gates, build_report
    from .sweep import SweepOptions, run_sweep, run_worker

    _check_dependencies(args.transport)
    if args.worker:
        return run_worker(
            args.master_host, args.master_port, sys.stderr, args.work_dir, args.wake_latency
        )
    if args.payload is None:
        args.payload = list(DEFAULT_PAYLOADS[args.transport])
    _validate(args)
    if args.transport in PROTOBUF_TRANSPORTS and args.codec != ["json", "msgpack"]:
        print(
            f"snakepit-harness load: --codec is ignored with --transport {args.transport} "
            "(protobuf)",
            file=sys.stderr,
        )
    bridge_cmd = resolve_command(args.bridge_cmd or list(DEFAULT_BRIDGES[args.transport]))
    try:
        planned_calls = _plan_calls(args, bridge_cmd)
    except (TransportError, RemoteProtocolError, GrpcStatusError) as exc:
        # The worker's fault, not the command line's: a verdict, as for a point.
        _say_unplannable(exc)
        return ExitCode.FAILED
    duration = args.duration or (DEFAULT_SOAK_DURATION_S if args.soak else DEFAULT_DURATION_S)
    options = SweepOptions(
        bridge_cmd=bridge_cmd,
        transport=args.transport,
        pools=args.pool,
        codecs=args.codec,
        payloads=args.payload,
        users=args.users or 2 * max(args.pool),
        warmup_s=args.warmup,
        duration_s=duration,
        timeout_s=args.timeout,
        codec_select=args.codec_select,
        baseline=args.baseline,
        sample_interval_s=args.soak_interval if args.soak else 0.0,
        stream_count=args.stream_count,
        master=args.master,
        expect_workers=args.expect_workers,
        master_bind_port=args.master_bind_port,
        generator_processes=args.generator_processes,
        generator_wait=args.generator_wait,
        wake_latency=args.wake_latency,
        host_delays_ms=args.host_delay,
        planned_calls=planned_calls,
    )
    results = run_sweep(options, sys.stderr, args.work_dir)
    gates = Gates(args.max_p99, args.max_error_ratio, args.min_rps, args.max_rss_growth)
    described: dict[str, Any] = dict(vars(options))
    # The planned calls are bytes; the report says what each one is.
    described["planned_calls"] = {
        payload: {"tool": call.tool, "stream": call.stream, "chunks": call.chunks, "how": call.how}
        for payload, call in planned_calls.items()
    }
    report = build_report(results, gates, described)
    print(render_table(report))
    if args.json:
        write_json(report, args.json)
    if args.csv:
        write_csv(report, args.csv)
    if args.html:
        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_text(render_html(report), encoding="utf-8")
    if report.breaches:
        return ExitCode.LIMIT_BREACHED
    if any(row.error for row in report.rows):
        return ExitCode.FAILED
    return ExitCode.OK
