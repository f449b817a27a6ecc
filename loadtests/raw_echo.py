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
from collections.abc import Iterator
from typing import Final

from snakepit_harness.transports.spawn import tune_allocator

# The receive buffer starts here and grows to the largest frame seen.  Reads
# go straight into it (``readv``): ``os.read(fd, 1 MiB)`` would allocate a
# fresh megabyte per call (an mmap/munmap pair), which made this "minimal"
# worker slower than the bridges it calibrates.
_INITIAL_BUFFER: Final = 64 * 1024
_HEADER_SIZE: Final = 4


def _exit_now(signum: int, frame: object) -> None:
    os._exit(0)


def read_frames(stdin_fd: int = 0) -> Iterator[memoryview]:
    """Every whole frame read from ``stdin_fd`` (its 4-byte header included), until end of input.

    A frame is a view into the receive buffer: use it before asking for the
    next one, which may move or reuse the bytes.  Frames already buffered
    (pipelined requests) come out before the next read.
    """
    buffer = bytearray(_INITIAL_BUFFER)
    view = memoryview(buffer)
    start = end = 0  # buffer[start:end] holds received, unanswered bytes
    while True:
        while end - start >= _HEADER_SIZE:
            total = _HEADER_SIZE + int.from_bytes(view[start : start + _HEADER_SIZE], "big")
            if end - start < total:
                if total > len(buffer) - start:  # make room for the whole frame
                    bigger = bytearray(max(total, 2 * len(buffer)))
                    bigger[: end - start] = view[start:end]
                    view.release()
                    buffer, view = bigger, memoryview(bigger)
                    start, end = 0, end - start
                break
            yield view[start : start + total]
            start += total
        if start == end:
            start = end = 0
        elif end == len(buffer):  # a partial header at the very end: move it down
            view[: end - start] = view[start:end]
            start, end = 0, end - start
        count = os.readv(stdin_fd, [view[end:]])
        if not count:
            return
        end += count


def serve(stdin_fd: int = 0, stdout_fd: int = 1) -> None:
    """Write every frame back unchanged, until end of input."""
    for frame in read_frames(stdin_fd):
        out = frame
        while out:
            out = out[os.write(stdout_fd, out) :]


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)
    # The same allocator settings as the reference bridges: 1 MiB echoes took
    # ~580 µs with them and ~920 µs without, and a baseline slower than the
    # bridge it calibrates would flatter the bridge.
    tune_allocator()
    with contextlib.suppress(BrokenPipeError):
        serve()
    # Skip interpreter teardown: nothing to flush, and it costs start-stop time.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
