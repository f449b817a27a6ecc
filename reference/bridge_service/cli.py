"""``snakepit-bridge-worker``: serve an adapter as Snakepit v0.13 starts its workers (§9.2).

Takes upstream's command line (``--adapter module.Class`` or
``module:Class``, ``--port``, ``--elixir-address``, ``--snakepit-run-id``,
the ``--heartbeat-*`` flags; ``SNAKEPIT_HEARTBEAT_CONFIG`` and
``SNAKEPIT_READY_FILE`` from the environment) and, where the profile grades
upstream's choices, does the safer thing by default:

- it listens on 127.0.0.1 (``--host`` to change), not on every interface;
- it never unpickles what it is sent (``--allow-pickle`` for a trusted host);
- every callback to the host has a deadline;
- it gives up after ``--host-wait`` seconds (default 10) without a host;
- it exits when its host is gone: after the missed heartbeats, or at once
  when stdin (Snakepit's port) is a pipe that closes.

Start-up order: the adapter is loaded and initialised, the host answers a
Ping, the server starts, and only then is the port written into the ready
file (atomically: a temporary file, then a rename).  Nothing is written to
stdout.  SIGTERM or SIGINT: stop taking calls, give those in flight 2 s,
exit 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import stat
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Final

from snakepit_harness.protocol.bridge_service import BridgeEnv, BridgeFlag, HeartbeatConfig

from ..adapter import BaseCommandHandler
from ..bridge_cli import AdapterLoadError, _import_module, split_adapter_spec
from .adapter import BaseAdapter, CommandHandlerAdapter
from .demo import DemoAdapter
from .host_link import HostLink, HostUnreachable
from .servicer import WorkerServicer

__all__ = ["Seams", "load_adapter", "main", "write_ready_file"]

PROG: Final = "snakepit-bridge-worker"
EXIT_USAGE: Final = 2
EXIT_FAILED: Final = 1
# Seconds the calls in flight get once a stop signal came (Snakepit waits 6 s).
STOP_GRACE: Final = 2.0
SERVER_THREADS: Final = 16
DEFAULT_HOST_WAIT: Final = 10.0
DEFAULT_MAX_MESSAGE_SIZE: Final = 64 * 1024 * 1024
_LOG_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "none": logging.CRITICAL + 10,
}

log = logging.getLogger("snakepit_bridge.bridge_service")
# What a worker that cannot serve exits with, by the error that stopped it:
# a bad --adapter is a usage mistake; an absent host or a port it cannot
# bind is a failure to start.
_EXIT_STATUS_FOR: Final[tuple[tuple[type[Exception], int], ...]] = (
    (AdapterLoadError, EXIT_USAGE),
    (HostUnreachable, EXIT_FAILED),
    (OSError, EXIT_FAILED),
)
_STOPPED_BY: Final = tuple(kind for kind, _ in _EXIT_STATUS_FOR)


def load_adapter(spec: str) -> BaseAdapter:
    """``module.Class``, ``module:Class`` or ``file.py:Class``, made into an adapter."""
    module_part, class_part = split_adapter_spec(spec)
    try:
        module = _import_module(module_part)
    except AdapterLoadError:
        raise
    except Exception as exc:
        raise AdapterLoadError(
            f"cannot import adapter module {module_part!r}: {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in class_part.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise AdapterLoadError(f"module {module_part!r} has no {class_part!r}")
    if isinstance(target, type) and issubclass(target, BaseAdapter):
        return target()
    if isinstance(target, type) and issubclass(target, BaseCommandHandler):
        return CommandHandlerAdapter(target())
    raise AdapterLoadError(
        f"{spec!r} is neither a snakepit_bridge.bridge_service.BaseAdapter "
        "nor a snakepit_bridge.BaseCommandHandler subclass"
    )


def write_ready_file(path: str, port: int) -> None:
    """Write the port the way the host reads it: whole, or not at all."""
    temporary = Path(f"{path}.tmp")
    with open(temporary, "w", encoding="ascii") as handle:
        handle.write(str(port))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Serve a Snakepit adapter over BridgeService (Snakepit v0.13)."
    )
    parser.add_argument(BridgeFlag.ADAPTER, default=None, metavar="MODULE.CLASS")
    parser.add_argument(BridgeFlag.PORT, type=int, default=0, help="0: any free port")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        BridgeFlag.ELIXIR_ADDRESS,
        dest="elixir_address",
        default=os.environ.get(BridgeEnv.GRPC_ADDRESS),
        metavar="HOST:PORT",
        help="the host to call back (none: serve without one)",
    )
    parser.add_argument(BridgeFlag.RUN_ID, dest="run_id", default="")
    parser.add_argument("--snakepit-instance-name", default="")
    parser.add_argument("--snakepit-instance-token", default="")
    parser.add_argument("--host-wait", type=float, default=DEFAULT_HOST_WAIT, metavar="SECONDS")
    parser.add_argument("--allow-pickle", action="store_true", help="unpickle binary parameters")
    parser.add_argument("--max-message-size", type=int, default=DEFAULT_MAX_MESSAGE_SIZE)
    parser.add_argument(BridgeFlag.HEARTBEAT_ENABLED, dest="hb_enabled", action="store_true")
    for flag, dest in (
        (BridgeFlag.HEARTBEAT_INTERVAL_MS, "interval_ms"),
        (BridgeFlag.HEARTBEAT_TIMEOUT_MS, "timeout_ms"),
        (BridgeFlag.HEARTBEAT_MAX_MISSED, "max_missed_heartbeats"),
        (BridgeFlag.HEARTBEAT_INITIAL_DELAY_MS, "initial_delay_ms"),
    ):
        parser.add_argument(flag, dest=f"hb_{dest}", type=int, default=None)
    parser.add_argument(BridgeFlag.HEARTBEAT_DEPENDENT, dest="hb_dependent", action="store_true")
    parser.add_argument(BridgeFlag.HEARTBEAT_INDEPENDENT, dest="hb_dependent", action="store_false")
    parser.set_defaults(hb_dependent=None)
    return parser


def heartbeat_config(args: argparse.Namespace) -> HeartbeatConfig:
    """The environment's config, overridden by the flags (as upstream merges them)."""
    options: dict[str, Any] = {}
    env = HeartbeatConfig.from_json(os.environ.get(BridgeEnv.HEARTBEAT_CONFIG))
    if env is not None:
        options.update(vars(env))
    for key, value in vars(args).items():
        if key.startswith("hb_") and value is not None and value is not False:
            options[key.removeprefix("hb_")] = value
    return HeartbeatConfig.from_mapping(options)


class _Worker:
    """The running worker: what the signals, the stdin watch and the heartbeats stop."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.reason = ""

    def end(self, reason: str) -> None:
        if not self.stop.is_set():
            self.reason = reason
            self.stop.set()

    def watch_stdin(self) -> None:
        """Snakepit's port is a pipe on stdin: EOF there means the host is gone."""
        try:
            if not stat.S_ISFIFO(os.fstat(0).st_mode):
                return
        except OSError:
            return

        def read() -> None:
            while True:
                try:
                    if not os.read(0, 65536):
                        break
                except OSError:
                    break
            self.end("stdin closed: the host is gone")

        threading.Thread(target=read, name="stdin-watch", daemon=True).start()


@dataclass(frozen=True)
class Seams:
    """What the broken sample workers (fixtures/bridge_service/) replace."""

    servicer_class: type[WorkerServicer] = WorkerServicer
    link_class: type[HostLink] = HostLink
    write_ready: Callable[[str, int], None] = write_ready_file
    stop_signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
    watch_stdin: bool = True
    # Called with the parsed options once the host answered, before the server starts.
    before_serve: Callable[[argparse.Namespace], None] | None = None


def _serve(args: argparse.Namespace, worker: _Worker, seams: Seams) -> int:
    import grpc

    from snakepit_harness.protos import snakepit_bridge_pb2_grpc

    adapter = load_adapter(args.adapter) if args.adapter else DemoAdapter()
    adapter.initialize()
    link = None
    if args.elixir_address:
        link = seams.link_class(
            args.elixir_address,
            worker_id=f"{PROG}-{os.getpid()}",
            tools=adapter.tools(),
            heartbeat=heartbeat_config(args),
            on_host_lost=worker.end,
        )
        link.wait_for_host(args.host_wait, stop=worker.stop)
        if worker.stop.is_set():
            link.close()
            return 0
    else:
        log.warning("no --elixir-address: serving without a host (no callbacks)")
    if seams.before_serve is not None:
        seams.before_serve(args)
    server = grpc.server(
        futures.ThreadPoolExecutor(SERVER_THREADS, thread_name_prefix="bridge-worker"),
        options=[
            ("grpc.max_receive_message_length", args.max_message_size),
            ("grpc.max_send_message_length", args.max_message_size),
            ("grpc.so_reuseport", 0),
        ],
    )
    add_servicer: Any = snakepit_bridge_pb2_grpc.add_BridgeServiceServicer_to_server
    add_servicer(seams.servicer_class(adapter, link, allow_pickle=args.allow_pickle), server)
    address = f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    ready_file = os.environ.get(BridgeEnv.READY_FILE)
    if ready_file:
        seams.write_ready(ready_file, port)
    log.warning("serving %s on %s:%d", type(adapter).__name__, args.host, port)
    while not worker.stop.wait(0.5):
        pass
    log.warning("stopping: %s", worker.reason)
    server.stop(STOP_GRACE).wait(STOP_GRACE + 1.0)
    if link is not None:
        link.close()
    adapter.cleanup()
    return 0


def main(argv: Sequence[str] | None = None, *, seams: Seams | None = None) -> int:
    seams = seams or Seams()
    args, unknown = make_parser().parse_known_args(argv)
    level = os.environ.get(BridgeEnv.LOG_LEVEL, "warning").lower()
    logging.basicConfig(
        stream=sys.stderr,
        level=_LOG_LEVELS.get(level, logging.WARNING),
        format=f"{PROG}[%(process)d] %(levelname)s %(message)s",
    )
    if unknown:
        log.warning("ignoring options %s", unknown)
    # The host reads stdout as logs; keep adapter prints with the other logs.
    sys.stdout = sys.stderr
    if os.environ.get(BridgeEnv.PROCESS_GROUP, "") == "1" and os.getpgrp() != os.getpid():
        try:
            os.setsid()
        except OSError:
            log.warning("could not start a process group of its own")
    worker = _Worker()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        worker.end(f"{signal.Signals(signum).name} received")

    for sig in seams.stop_signals:
        signal.signal(sig, on_signal)
    if seams.watch_stdin:
        worker.watch_stdin()
    try:
        return _serve(args, worker, seams)
    except _STOPPED_BY as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return next(code for kind, code in _EXIT_STATUS_FOR if isinstance(exc, kind))


if __name__ == "__main__":
    sys.exit(main())
