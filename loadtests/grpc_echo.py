"""The gRPC calibration baseline: a bare grpcio server that echoes request bytes.

It serves the two methods the load users call, ``Execute`` and
``ExecuteStream`` of ``snakepit.SnakepitBridge``, with identity serialisers:
no protobuf parsing, no dispatch, no JSON, just grpcio's own cost.  A gRPC
bridge's figures are read as ratios against it (PROTOCOL.md §8 says nothing of
speed; the issue's target is the bridge's unary ``ping`` at most 1.5x this).

``ExecuteStream`` answers with the request bytes ``STREAM_COPIES`` times, a
stand-in for ``ping_stream``'s data messages plus its final one.

Start-up follows §8.2: ``--port P`` (0 = any), then one stdout line
``GRPC_SERVER_READY_ON_PORT=<port>``; SIGTERM/SIGINT stop it at once.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from typing import Any, Final

from snakepit_harness.protocol import READY_PREFIX

__all__ = ["main", "serve", "serve_echo", "serve_until_signalled"]

STREAM_COPIES: Final = 11  # ping_stream's default 10 data messages + the final one
# Same limits a bridge is asked for (§8.9): large payloads must fit.
MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
_WORKER_THREADS: Final = 8


def _echo(request: bytes, context: Any) -> bytes:
    return request


def _echo_stream(request: bytes, context: Any) -> Iterator[bytes]:
    for _ in range(STREAM_COPIES):
        yield request


def serve_echo(
    service: str,
    unary: tuple[str, Callable[[bytes, Any], bytes]],
    stream: tuple[str, Callable[[bytes, Any], Iterator[bytes]]],
    port: int,
    host: str = "127.0.0.1",
) -> tuple[Any, int]:
    """A started grpcio server of ``service`` with two identity-serialised methods; its port.

    Shared by both calibration baselines (this one and ``bridge_echo``): the
    same server, threads and limits, only the service and method names differ.
    """
    import grpc

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=_WORKER_THREADS),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    handler = grpc.method_handlers_generic_handler(
        service,
        {
            unary[0]: grpc.unary_unary_rpc_method_handler(unary[1]),
            stream[0]: grpc.unary_stream_rpc_method_handler(stream[1]),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"{host}:{port}")
    server.start()
    return server, bound


def serve_until_signalled(server: Any, announce: Callable[[], None]) -> int:
    """Announce readiness, then serve until SIGTERM or SIGINT; stop at once (exit 0)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    announce()
    while not stop.wait(0.5):
        pass
    server.stop(grace=0)
    return 0


def serve(port: int, host: str = "127.0.0.1") -> tuple[Any, int]:
    from .grpc_calls import SERVICE

    return serve_echo(SERVICE, ("Execute", _echo), ("ExecuteStream", _echo_stream), port, host)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    options, _ = parser.parse_known_args(argv)
    server, port = serve(options.port, options.host)

    def announce() -> None:
        sys.stdout.write(f"{READY_PREFIX}{port}\n")
        sys.stdout.flush()

    return serve_until_signalled(server, announce)


if __name__ == "__main__":
    sys.exit(main())
