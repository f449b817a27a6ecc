"""The gRPC reference bridge (PROTOCOL.md §8): any adapter, served over gRPC.

``snakepit-grpc-bridge`` (or ``python -m snakepit_bridge.grpc_bridge``) serves
``snakepit.SnakepitBridge`` on 127.0.0.1 (``--host`` to change), prints
``GRPC_SERVER_READY_ON_PORT=<port>`` once the server is serving, and exits 0 on
SIGTERM/SIGINT.  Commands come from an adapter (a
:class:`~snakepit_bridge.BaseCommandHandler`, ``--adapter module.Class``); the
default, :class:`StreamingTestHandler`, is the generic command set plus the
streaming and timing test commands the conformance suite uses
(:class:`StreamingCommands`, which :func:`serve` also adds to any adapter that
lacks them, since §8.5 asks every gRPC bridge for ``ping_stream``).

How commands map onto the RPCs:

- ``args`` map values are decoded one by one as UTF-8 JSON; a value that is not
  JSON is handed to the command as raw ``bytes`` (§8.3).  A dict result becomes
  the ``result`` map (each value JSON-encoded, raw ``bytes`` values passed
  through), any other result the single entry ``result``.
- A command that returns an iterator (a generator) is a *streaming* command:
  ``ExecuteStream`` sends each item as a data chunk and the generator's return
  value (``return {...}``) as the final chunk.  ``Execute`` on a streaming
  command is a ``bad_request`` failure.  A non-streaming command answers
  ``ExecuteStream`` with one final message carrying its result (§8.5).
- Failures give ``success=false`` / a final message with ``error`` set; the
  ``result``/``chunk`` map then carries ``error_type`` (the §4.2 vocabulary),
  since the proto has no field for it.
- ``ExecuteInSession[Stream]`` puts ``session_id`` into ``args`` (the request
  field wins over an ``args`` entry), so session-aware commands such as the
  enhanced store scope their state by it (§8.6).  A session counts as active in
  ``GetInfo`` stats from its first call until ``clear_session`` succeeds in it.
- ``timeout_ms`` (> 0) bounds the call: a unary command runs on a small pool
  and the RPC fails with ``DEADLINE_EXCEEDED`` when it overruns (the command
  itself is told through :func:`current_call` and stops if it cooperates); a
  stream is checked between chunks.  Calls without ``timeout_ms`` run inline on
  the server thread: the lean path the load tests measure.
- When a client cancels a stream, or its deadline passes, the producer is
  stopped: the bridge stops pulling from the generator and closes it, and
  cooperative waits (:meth:`CallScope.wait`) wake at once.

Spec decisions (where §8 leaves room): raw bytes pass through untouched as
whole map entries; ``bytes`` nested inside a result (``echo`` of a raw
argument) are sent as their UTF-8 text when they are text, and binary ones
give ``serialization_error``, since the entry must be JSON; a stream's data
and final messages all echo the ``request_id``; unknown command-line options
are ignored with a warning (pool launchers add their own, e.g. Snakepit's
``--snakepit-run-id``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from concurrent import futures
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

from snakepit_harness.protocol import READY_PREFIX

from .adapter import BaseCommandHandler
from .bridge_cli import EXIT_USAGE, AdapterLoadError, add_adapter_option, load_adapter
from .grpc_commands import CallScope, StreamingCommands, StreamingTestHandler, current_call
from .grpc_servicer import (
    DEFAULT_MAX_MESSAGE_SIZE,
    SERVICE_NAME,
    BridgeServicer,
    generic_handler,
)
from .grpc_values import decode_map, decode_value, encode_map

if TYPE_CHECKING:
    import grpc

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "READY_PREFIX",
    "BridgeServicer",
    "CallScope",
    "RunningServer",
    "StreamingCommands",
    "StreamingTestHandler",
    "current_call",
    "decode_map",
    "decode_value",
    "encode_map",
    "generic_handler",
    "main",
    "serve",
]

# -- the server ----------------------------------------------------------------


# SIGTERM: let in-flight RPCs finish for this long, then cancel them; well
# inside the 5 s of §8.10.
SHUTDOWN_GRACE_SECONDS: Final = 1.0
SHUTDOWN_WAIT_SECONDS: Final = 2.0


class RunningServer:
    """A started server: its port, and how to stop it."""

    def __init__(self, server: grpc.Server, servicer: BridgeServicer, health: Any, port: int):
        self.server = server
        self.servicer = servicer
        self.health = health
        self.port = port

    def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        with contextlib.suppress(Exception):
            self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait(SHUTDOWN_WAIT_SECONDS)
        self.servicer.close()


# Server threads: ThreadPoolExecutor creates them only when all are busy, so a
# sequential client uses one or two; the cap bounds concurrent RPCs (each open
# stream holds one) on a small machine.
SERVER_THREADS: Final = 32
PRESTARTED_SERVER_THREADS: Final = 2


def _prestart_workers(pool: futures.ThreadPoolExecutor, count: int) -> None:
    """Make ``pool`` start ``count`` workers now (tasks that wait for each other).

    A sequential client settles on two server threads: the next call often
    arrives before the thread that sent the last answer is idle again.  Starting
    them before the ready line means the thread count seen by a client (or a
    leak check) is the steady one from the first call on.
    """
    barrier = threading.Barrier(count)
    for done in [pool.submit(barrier.wait, 5.0) for _ in range(count)]:
        done.result()


def server_options(max_message_size: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_size),
        ("grpc.max_send_message_length", max_message_size),
        # Without this a second server could silently share an explicit --port.
        ("grpc.so_reuseport", 0),
    ]


def serve(
    handler: BaseCommandHandler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    servicer_class: type[BridgeServicer] = BridgeServicer,
) -> RunningServer:
    """Start serving ``handler``; returns once the server accepts calls."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    StreamingCommands().install(handler)  # ping_stream & co. for adapters without them
    servicer = servicer_class(handler, max_message_size=max_message_size)
    pool = futures.ThreadPoolExecutor(SERVER_THREADS, thread_name_prefix="grpc-server")
    server = grpc.server(pool, options=server_options(max_message_size))
    server.add_generic_rpc_handlers((generic_handler(servicer),))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    _prestart_workers(pool, PRESTARTED_SERVER_THREADS)
    _prestart_workers(servicer.timed_pool, 1)
    return RunningServer(server, servicer, health_servicer, bound)


# -- command line --------------------------------------------------------------


# Exit status when the bridge cannot listen (the port is taken, the address is wrong).
EXIT_CANNOT_LISTEN: Final = 1


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snakepit-grpc-bridge",
        description="Serve a Snakepit adapter over gRPC (PROTOCOL.md §8).",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 = any free port")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    add_adapter_option(
        parser, "serve this adapter instead of the generic and streaming test commands"
    )
    parser.add_argument(
        "--max-message-size",
        type=int,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        metavar="BYTES",
        help=f"largest message sent or received (default {DEFAULT_MAX_MESSAGE_SIZE})",
    )
    parser.add_argument("--quiet", action="store_true", help="no informational stderr lines")
    return parser


def main(
    argv: list[str] | None = None,
    *,
    servicer_class: type[BridgeServicer] = BridgeServicer,
    default_adapter: type[BaseCommandHandler] = StreamingTestHandler,
    stop_signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> int:
    """Run the bridge until a stop signal; returns the exit status.

    ``servicer_class``, ``default_adapter`` and ``stop_signals`` are seams for
    the broken sample bridges in ``fixtures/grpc_bridges/``.
    """
    args, unknown = make_parser().parse_known_args(argv)
    if unknown and not args.quiet:
        print(f"snakepit-grpc-bridge: ignoring options {unknown}", file=sys.stderr)
    if not 0 <= args.port <= 65535:
        print(f"snakepit-grpc-bridge: --port {args.port} is not a TCP port", file=sys.stderr)
        return EXIT_USAGE
    # Only the ready line may reach stdout: adapter prints go to stderr.
    ready_out = sys.stdout
    sys.stdout = sys.stderr
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in stop_signals:
        signal.signal(sig, on_signal)
    try:
        adapter = load_adapter(args.adapter) if args.adapter else default_adapter
        running = serve(
            adapter(),
            host=args.host,
            port=args.port,
            max_message_size=args.max_message_size,
            servicer_class=servicer_class,
        )
    except AdapterLoadError as exc:
        print(f"snakepit-grpc-bridge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"snakepit-grpc-bridge: {exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    ready_out.write(f"{READY_PREFIX}{running.port}\n")
    ready_out.flush()
    if not args.quiet:
        print(
            f"snakepit-grpc-bridge: serving {adapter.__name__} on {args.host}:{running.port}",
            file=sys.stderr,
        )
    while not stop.wait(0.5):
        pass
    running.stop()
    sys.stderr.flush()
    main_thread = threading.main_thread()
    if any(t is not main_thread and t.is_alive() for t in threading.enumerate()):
        # A command that ignores cancellation would hold interpreter exit
        # hostage (concurrent.futures joins every worker at exit, daemon or
        # not); §8.10 wants us gone, and everything worth flushing is flushed.
        sys.stdout.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
