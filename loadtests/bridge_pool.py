"""A pool of bridge-service workers for gevent-based load users (``--transport bridge-service``).

Each worker is launched as Snakepit launches one (§9.2): the user's command
with ``--port 0 --elixir-address <host> --snakepit-run-id <id>`` appended,
``SNAKEPIT_READY_FILE`` and the rest of Snakepit's environment, its own
session, stdin a pipe kept open (Snakepit's port).  Every worker of a point
calls back into the same host emulator, which the harness runs in a process
of its own for the point (its ``--host-delay`` is the point's).  The ready
file is polled cooperatively, stdout and stderr are drained by greenlets
(:class:`~.pool.DrainedPipe`: a blocking read would freeze every user), and
the channel uses identity serialisers: the request is the planned bytes
(:mod:`.bridge_calls`), and responses are parsed by the caller only.

A worker is checked out for one call at a time, as in the other pools; the
start-up handshake is one planned call, so start-up time includes the
worker's first ``RegisterTools`` round trip to the host.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Final

import gevent

from snakepit_harness.errors import BridgeCrashed, BridgeTimeout, RemoteProtocolError
from snakepit_harness.protocol.bridge_service import (
    BRIDGE_READY_LIMIT,
    launch_argv,
    parse_ready_file,
)
from snakepit_harness.transports.bridge_service import snakepit_environment
from snakepit_harness.transports.spawn import spawn_with_pipes

from .bridge_calls import (
    EXECUTE_STREAMING_TOOL_METHOD,
    EXECUTE_TOOL_METHOD,
    check_tool_response,
    check_tool_stream,
)
from .grpc_pool import ChannelWorker
from .pool import DEFAULT_SHARE, PoolShare, WorkerPool

__all__ = ["BridgeServicePool", "BridgeServicePoolWorker"]

# How often the ready file is looked at (Snakepit: every 50 ms).
READY_POLL_S: Final = 0.02
# A shared 2-core machine starting 8 workers at once needs more than §9.2's limit.
READY_TIMEOUT_S: Final = BRIDGE_READY_LIMIT + 15.0


class BridgeServicePoolWorker(ChannelWorker):
    """One worker process, its ready file and a channel to it."""

    unary_method: ClassVar[str] = EXECUTE_TOOL_METHOD
    stream_method: ClassVar[str] = EXECUTE_STREAMING_TOOL_METHOD

    def __init__(self, argv: Sequence[str], index: int, host_address: str) -> None:
        self.run_id = f"load{index}{uuid.uuid4().hex[:8]}"
        self._workdir = Path(tempfile.mkdtemp(prefix="snakepit-load-"))
        self.ready_file = self._workdir / f"snakepit_ready_{self.run_id}"
        launched = launch_argv(argv, host_address=host_address, run_id=self.run_id)
        env = snakepit_environment(os.environ, self.ready_file)
        try:
            proc, self._stdin_fd, stdout_fd, stderr_fd = spawn_with_pipes(
                launched, stdin=True, env=env
            )
        except OSError:
            shutil.rmtree(self._workdir, ignore_errors=True)
            raise
        super().__init__(index, proc, stdout_fd, stderr_fd)

    def stderr_tail(self) -> bytes:
        return self._stderr.tail() + self._stdout.tail()[-1000:]

    def wait_ready(self, timeout: float) -> int:
        """The port the ready file names, waiting cooperatively (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                port = parse_ready_file(self.ready_file.read_text("utf-8", "replace"))
                if port is not None:
                    return port
            if self.proc.poll() is not None:
                raise BridgeCrashed(
                    f"worker {self.index} exited before it wrote its port into "
                    f"SNAKEPIT_READY_FILE (§9.2)",
                    self.stderr_tail(),
                    self.proc.returncode,
                )
            if time.monotonic() >= deadline:
                raise BridgeTimeout(
                    f"worker {self.index}: no port in SNAKEPIT_READY_FILE within "
                    f"{timeout:.0f} s (§9.2)",
                    self.stderr_tail(),
                )
            gevent.sleep(READY_POLL_S)

    def released(self) -> None:
        # Snakepit's port: stdin stays open for the worker's life, closed after it.
        if self._stdin_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._stdin_fd)
        shutil.rmtree(self._workdir, ignore_errors=True)


class BridgeServicePool(WorkerPool[BridgeServicePoolWorker]):
    """N workers sharing one host, each ready and answering the planned call once."""

    start_limit_s: ClassVar[float] = READY_TIMEOUT_S + 30.0

    def __init__(
        self,
        argv: Sequence[str],
        size: int,
        *,
        host_address: str,
        request: bytes,
        stream: bool,
        baseline: bool,
        share: PoolShare = DEFAULT_SHARE,
    ) -> None:
        super().__init__(argv, size, share)
        self.host_address = host_address
        self.request = request
        self.stream = stream
        self.baseline = baseline

    def spawn_worker(self, index: int) -> BridgeServicePoolWorker:
        return BridgeServicePoolWorker(self.argv, index, self.host_address)

    def greet(self, worker: BridgeServicePoolWorker) -> None:
        worker.connect(worker.wait_ready(READY_TIMEOUT_S))
        if self.stream:
            chunks = list(
                worker.execute_stream(self.request, timeout=self.timeout, wait_for_ready=True)
            )
            problem = None if self.baseline else check_tool_stream(chunks)
            answer = chunks[-1] if chunks else b""
        else:
            answer = worker.execute(self.request, timeout=self.timeout, wait_for_ready=True)
            problem = None if self.baseline else check_tool_response(answer)
        if problem is not None:
            # START, not NEGOTIATION: there is no handshake here, only the first call.
            raise RemoteProtocolError(f"the first planned call failed: {problem}")

    def is_dead(self, worker: BridgeServicePoolWorker) -> bool:
        return worker.proc.poll() is not None
