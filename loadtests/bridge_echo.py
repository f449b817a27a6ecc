"""The bridge-service calibration baseline: a bare grpcio server that echoes request bytes.

Launched exactly like a worker (§9.2: ``--port 0 --elixir-address ...
--snakepit-run-id ...`` appended, ``SNAKEPIT_READY_FILE`` set), it serves the
two methods the load users call, ``ExecuteTool`` and ``ExecuteStreamingTool``
of ``snakepit.bridge.BridgeService``, with identity serialisers: no protobuf
parsing, no adapter, no callback to the host, just grpcio's own cost.  A
worker's figures are read as ratios against it; what a worker costs above it
is its own work plus its round trips to the host.

``ExecuteStreamingTool`` answers with the request bytes ``--stream-chunks``
times (the planned stream's own chunk count).  The port goes into the ready
file once the server serves; SIGTERM/SIGINT stop it at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any, Final

from snakepit_harness.protocol.bridge_service import BRIDGE_SERVICE, BridgeEnv

__all__ = ["main", "serve"]

# Same limit the workers are asked for: large payloads must fit.
MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
_WORKER_THREADS: Final = 8
DEFAULT_STREAM_CHUNKS: Final = 4


def serve(port: int, stream_chunks: int) -> tuple[Any, int]:
    import grpc

    def echo(request: bytes, context: Any) -> bytes:
        return request

    def echo_stream(request: bytes, context: Any) -> Iterator[bytes]:
        for _ in range(stream_chunks):
            yield request

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=_WORKER_THREADS),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    handler = grpc.method_handlers_generic_handler(
        BRIDGE_SERVICE,
        {
            "ExecuteTool": grpc.unary_unary_rpc_method_handler(echo),
            "ExecuteStreamingTool": grpc.unary_stream_rpc_method_handler(echo_stream),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, bound


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stream-chunks", type=int, default=DEFAULT_STREAM_CHUNKS)
    # --elixir-address and --snakepit-run-id are accepted and ignored: no callbacks.
    options, _ = parser.parse_known_args(argv)
    server, port = serve(options.port, options.stream_chunks)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ready = os.environ.get(BridgeEnv.READY_FILE)
    if ready:
        temporary = Path(ready + ".tmp")
        temporary.write_text(str(port))
        temporary.replace(ready)
    while not stop.wait(0.5):
        pass
    server.stop(grace=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
