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
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from snakepit_harness.protocol.bridge_service import BRIDGE_SERVICE, BridgeEnv

from .grpc_echo import serve_echo, serve_until_signalled

__all__ = ["main", "serve"]

DEFAULT_STREAM_CHUNKS: Final = 4


def serve(port: int, stream_chunks: int) -> tuple[Any, int]:
    def echo(request: bytes, context: Any) -> bytes:
        return request

    def echo_stream(request: bytes, context: Any) -> Iterator[bytes]:
        for _ in range(stream_chunks):
            yield request

    return serve_echo(
        BRIDGE_SERVICE, ("ExecuteTool", echo), ("ExecuteStreamingTool", echo_stream), port
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stream-chunks", type=int, default=DEFAULT_STREAM_CHUNKS)
    # --elixir-address and --snakepit-run-id are accepted and ignored: no callbacks.
    options, _ = parser.parse_known_args(argv)
    server, port = serve(options.port, options.stream_chunks)

    def announce() -> None:
        ready = os.environ.get(BridgeEnv.READY_FILE)
        if ready:  # atomically: the harness must never read half a port
            temporary = Path(ready + ".tmp")
            temporary.write_text(str(port))
            temporary.replace(ready)

    return serve_until_signalled(server, announce)


if __name__ == "__main__":
    sys.exit(main())
