"""The calibration baseline: a minimal raw echo worker (stdio framing, no codec).

It reads length-prefixed frames from stdin and writes each one back unchanged,
without decoding anything.  Whatever a real bridge costs beyond this worker is
the bridge's own work (decoding, dispatch, encoding); what this worker costs
is the machine's pipe round trip plus the load generator.  Every load figure
is reported as a ratio against this worker measured in the same run, because
absolute pipe latencies on a shared machine vary by 4x (25 µs when both
processes share a CPU, about 100 µs when they do not).

Run: ``python -m snakepit_harness.loadtests.raw_echo``.  Exits 0 at end of
input, on SIGTERM/SIGINT and on a broken pipe (PROTOCOL.md §2.5, §5.3, §5.4).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Final

# Read in large chunks: a 1 MiB frame should take a handful of reads.
_READ_CHUNK: Final = 1024 * 1024
_HEADER_SIZE: Final = 4


def _exit_now(signum: int, frame: object) -> None:
    os._exit(0)


def serve(stdin_fd: int = 0, stdout_fd: int = 1) -> None:
    buffer = bytearray()
    while True:
        # Answer every whole frame already buffered (pipelined requests).
        while len(buffer) >= _HEADER_SIZE:
            size = int.from_bytes(buffer[:_HEADER_SIZE], "big")
            end = _HEADER_SIZE + size
            if len(buffer) < end:
                break
            view = memoryview(buffer)[:end]
            while view:
                view = view[os.write(stdout_fd, view) :]
            view.release()
            del buffer[:end]
        chunk = os.read(stdin_fd, _READ_CHUNK)
        if not chunk:
            return
        buffer += chunk


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)
    with contextlib.suppress(BrokenPipeError):
        serve()
    # Skip interpreter teardown: nothing to flush, and it costs start-stop time.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
