"""A pool of gRPC bridge servers for gevent-based load users (the ``grpc`` transport).

Each worker is a bridge started with ``--port 0`` that announces its port on
stdout (PROTOCOL.md §8.2), plus one channel to it.  Like the stdio pool, a
worker is checked out for one call at a time, so "pool size" means the same
thing for both transports, and the wait for a free worker is measured apart
from the call.

``grpc.experimental.gevent.init_gevent()`` must run before the first channel
exists, or grpc's own threads block the gevent hub; :func:`init_grpc_for_gevent`
does it once and the locustfile calls it before building a pool.

Requests are serialised once (:mod:`.grpc_calls`) and sent with identity
serialisers; bridges' responses are parsed by the caller, the baseline's are
not (they are our request echoed).
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Final

import gevent

from snakepit_harness.errors import BridgeCrashed, HandshakeFailed
from snakepit_harness.protocol import READY_PREFIX
from snakepit_harness.protos import snakepit_pb2
from snakepit_harness.transports.spawn import spawn_with_pipes

from .grpc_calls import EXECUTE_METHOD, EXECUTE_STREAM_METHOD, execute_request_bytes
from .pool import DEFAULT_SHARE, DrainedPipe, PoolShare, WorkerPool

__all__ = ["ChannelWorker", "GrpcPool", "GrpcWorker", "init_grpc_for_gevent"]

_READY_LINE: Final = READY_PREFIX.encode()
# §8.2 allows 10 s; a shared 2-core machine starting 8 servers at once needs more.
READY_TIMEOUT_S: Final = 30.0
MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
STDERR_TAIL_BYTES: Final = 8 * 1024

_gevent_ready = False


def init_grpc_for_gevent() -> None:
    global _gevent_ready
    if not _gevent_ready:
        # Imported by name: grpc's type stubs do not declare this module.
        importlib.import_module("grpc.experimental.gevent").init_gevent()
        _gevent_ready = True


class ChannelWorker:
    """What every gRPC pool worker is: a process, its drained pipes and one channel to it.

    Subclasses name the two methods the load users call (``unary_method``,
    ``stream_method``) and say how the process starts; the channel uses
    identity serialisers (requests are pre-serialised bytes, responses are
    parsed by the caller only when it needs to).
    """

    unary_method: ClassVar[str]
    stream_method: ClassVar[str]

    def __init__(self, index: int, proc: Any, stdout_fd: int, stderr_fd: int) -> None:
        self.index = index
        self.proc = proc
        self.channel: Any = None
        self.closed = False
        self.busy_since_ns = 0
        self._stdout = DrainedPipe(stdout_fd, STDERR_TAIL_BYTES)
        self._stderr = DrainedPipe(stderr_fd, STDERR_TAIL_BYTES)

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def stderr_tail(self) -> bytes:
        return self._stderr.tail()

    def connect(self, port: int) -> None:
        import grpc

        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{port}",
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self.execute = self.channel.unary_unary(self.unary_method)
        self.execute_stream = self.channel.unary_stream(self.stream_method)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.channel is not None:
            with contextlib.suppress(Exception):
                self.channel.close()
        self.proc.kill_group()
        self._stdout.close()
        self._stderr.close()
        self.released()

    def released(self) -> None:
        """After the process is gone: what else the worker had (nothing, here)."""


class GrpcWorker(ChannelWorker):
    """One gRPC server process (§8.2) and a channel to it."""

    unary_method: ClassVar[str] = EXECUTE_METHOD
    stream_method: ClassVar[str] = EXECUTE_STREAM_METHOD

    def __init__(self, argv: Sequence[str], index: int) -> None:
        argv = list(argv)
        if "--port" not in argv and not any(a.startswith("--port=") for a in argv):
            argv += ["--port", "0"]
        proc, _, stdout_fd, stderr_fd = spawn_with_pipes(argv, stdin=False)
        super().__init__(index, proc, stdout_fd, stderr_fd)

    def wait_ready(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self._stdout.tail().splitlines():
                if line.startswith(_READY_LINE):
                    return int(line[len(_READY_LINE) :].strip())
            if self._stdout.eof:
                break
            gevent.sleep(0.01)
        raise BridgeCrashed(
            f"gRPC worker {self.index}: no {READY_PREFIX}<port> line on stdout "
            f"(PROTOCOL.md §8.2) within {timeout:.0f} s",
            self.stderr_tail(),
            self.proc.poll(),
        )


class GrpcPool(WorkerPool[GrpcWorker]):
    """N gRPC servers, each ready and answering an init ``ping`` (the baseline: an echo)."""

    start_limit_s: ClassVar[float] = READY_TIMEOUT_S + 30.0

    def __init__(
        self,
        argv: Sequence[str],
        size: int,
        *,
        baseline: bool,
        share: PoolShare = DEFAULT_SHARE,
    ) -> None:
        super().__init__(argv, size, share)
        self.baseline = baseline

    def spawn_worker(self, index: int) -> GrpcWorker:
        return GrpcWorker(self.argv, index)

    def greet(self, worker: GrpcWorker) -> None:
        worker.connect(worker.wait_ready(READY_TIMEOUT_S))
        init = execute_request_bytes(
            "ping", {"worker_id": f"load_worker_{worker.index}", "initialization": True}
        )
        answer = worker.execute(init, timeout=self.timeout, wait_for_ready=True)
        if not self.baseline:
            response = snakepit_pb2.ExecuteResponse.FromString(answer)
            if not response.success:
                raise HandshakeFailed(f"init ping failed: {response.error!r}", answer)

    def is_dead(self, worker: GrpcWorker) -> bool:
        # A server that died shows no error in the call that found it gone.
        return worker.proc.poll() is not None
