"""A pool of gRPC bridge servers for gevent-based load users (the ``grpc`` transport).

Each worker is a bridge started with ``--port 0`` that announces its port on
stdout (PROTOCOL.md §8.2), plus one channel to it.  Like the stdio pool, a
worker is checked out for one call at a time, so "pool size" means the same
thing for both transports, and the wait for a free worker is measured apart
from the call.

``grpc.experimental.gevent.init_gevent()`` must run before the first channel
exists, or grpc's own threads block the gevent hub; :func:`init_grpc_for_gevent`
does it once and the locustfile calls it before building a pool.

Requests are serialised once (see :func:`execute_request_bytes`) and sent with
identity serialisers; bridges' responses are parsed (``ExecuteResponse``,
``StreamResponse``), the baseline's are not (they are our request echoed).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any, Final

import gevent
import gevent.queue
from gevent.socket import wait_read

from snakepit_harness.errors import BridgeCrashed, HarnessError

from .gpool import SPAWN_LOCK, spawn_with_pipes, start_concurrently
from .grpc_wire import execute_request_bytes
from .procs import record_pid

__all__ = ["GrpcPool", "GrpcWorker", "init_grpc_for_gevent"]

READY_PREFIX: Final = b"GRPC_SERVER_READY_ON_PORT="
# §8.2 allows 10 s; a shared 2-core machine starting 8 servers at once needs more.
READY_TIMEOUT_S: Final = 30.0
MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
STDERR_TAIL_BYTES: Final = 8 * 1024

_gevent_ready = False


class GrpcPoolError(HarnessError):
    """A gRPC bridge could not be started or did not answer its init call."""


def init_grpc_for_gevent() -> None:
    global _gevent_ready
    if not _gevent_ready:
        # Imported by name: grpc's type stubs do not declare this module.
        importlib.import_module("grpc.experimental.gevent").init_gevent()
        _gevent_ready = True


class _Pipe:
    """A non-blocking read end drained by a greenlet (tail kept)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self.data = bytearray()
        self.eof = False
        self.greenlet = gevent.spawn(self._drain)

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                try:
                    wait_read(self.fd)
                except (OSError, ValueError):
                    break
                continue
            except OSError:
                break
            if not chunk:
                break
            self.data += chunk
            if len(self.data) > STDERR_TAIL_BYTES * 2:
                del self.data[: len(self.data) - STDERR_TAIL_BYTES]
        self.eof = True

    def close(self) -> None:
        self.greenlet.kill(block=False)
        with contextlib.suppress(OSError):
            os.close(self.fd)


class GrpcWorker:
    """One gRPC server process and a channel to it."""

    def __init__(self, argv: Sequence[str], index: int, pid_file: str | None) -> None:
        argv = list(argv)
        if "--port" not in argv and not any(a.startswith("--port=") for a in argv):
            argv += ["--port", "0"]
        self.index = index
        self.channel: Any = None
        self.closed = False
        self.proc, _, stdout_fd, stderr_fd = spawn_with_pipes(argv, stdin=False)
        if pid_file:
            record_pid(pid_file, self.proc.pid)
        self._stdout = _Pipe(stdout_fd)
        self._stderr = _Pipe(stderr_fd)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_tail(self) -> bytes:
        return bytes(self._stderr.data[-STDERR_TAIL_BYTES:])

    def wait_ready(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in bytes(self._stdout.data).splitlines():
                if line.startswith(READY_PREFIX):
                    return int(line[len(READY_PREFIX) :].strip())
            if self._stdout.eof:
                break
            gevent.sleep(0.01)
        raise BridgeCrashed(
            f"gRPC worker {self.index}: no {READY_PREFIX.decode()}<port> line on stdout "
            f"(PROTOCOL.md §8.2) within {timeout:.0f} s",
            self.stderr_tail(),
            self.proc.poll(),
        )

    def connect(self, port: int) -> None:
        import grpc

        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{port}",
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        from .grpc_wire import EXECUTE_METHOD, EXECUTE_STREAM_METHOD

        # Identity serialisers: requests are pre-serialised bytes, responses
        # are parsed by the caller only when it needs to.
        self.execute = self.channel.unary_unary(EXECUTE_METHOD)
        self.execute_stream = self.channel.unary_stream(EXECUTE_STREAM_METHOD)

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


class GrpcPool:
    """N gRPC servers, each ready and answering an init ``ping`` (the baseline: an echo)."""

    def __init__(
        self,
        argv: Sequence[str],
        size: int,
        *,
        baseline: bool,
        pid_file: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.argv = list(argv)
        self.size = size
        self.baseline = baseline
        self.pid_file = pid_file
        self.timeout = timeout
        self.workers: list[GrpcWorker] = []
        # Every process ever started, so close() also reaches workers still
        # starting (a SIGTERM can arrive mid start-up).
        self._spawned: list[GrpcWorker] = []
        self.idle: gevent.queue.Queue[GrpcWorker] = gevent.queue.Queue()
        self.restarts = 0
        self.startup_s = 0.0
        self._closed = False

    def _new_worker(self, index: int) -> GrpcWorker:
        from .grpc_wire import ExecuteResponse

        with SPAWN_LOCK:  # one spawn at a time, as in gpool (cheap: ~1 ms each)
            worker = GrpcWorker(self.argv, index, self.pid_file)
        self._spawned.append(worker)
        try:
            worker.connect(worker.wait_ready(READY_TIMEOUT_S))
            init = execute_request_bytes(
                "ping", {"worker_id": f"load_worker_{index}", "initialization": True}
            )
            answer = worker.execute(init, timeout=self.timeout, wait_for_ready=True)
            if not self.baseline:
                response = ExecuteResponse.FromString(answer)
                if not response.success:
                    raise GrpcPoolError(
                        f"gRPC worker {index}: init ping failed: {response.error!r}"
                    )
        except Exception as exc:
            tail = worker.stderr_tail().decode("utf-8", "replace").strip()
            worker.close()
            detail = f"; stderr: {tail[-600:]}" if tail else ""
            raise GrpcPoolError(f"{exc}{detail}") from exc
        return worker

    def start(self) -> float:
        began = time.perf_counter()
        started, failure = start_concurrently(
            self._new_worker, self.size, READY_TIMEOUT_S + self.timeout + 5
        )
        for worker in started:
            self.workers.append(worker)
            self.idle.put(worker)
        if failure is not None:
            self.close()
            raise GrpcPoolError(f"the gRPC pool of {self.size} could not start: {failure}")
        self.startup_s = time.perf_counter() - began
        return self.startup_s

    @contextlib.contextmanager
    def checkout(self) -> Iterator[tuple[GrpcWorker, int]]:
        began = time.perf_counter_ns()
        worker = self.idle.get(timeout=self.timeout)
        waited = time.perf_counter_ns() - began
        try:
            yield worker, waited
        finally:
            if worker.proc.poll() is not None and not self._closed:
                self._replace(worker)  # the server died: a fresh one takes its place
            elif not self._closed:
                self.idle.put(worker)

    def _replace(self, worker: GrpcWorker) -> None:
        worker.close()
        with contextlib.suppress(ValueError):
            self.workers.remove(worker)
        self.restarts += 1
        gevent.spawn(self._restart_one, worker.index)

    def _restart_one(self, index: int) -> None:
        try:
            worker = self._new_worker(index)
        except GrpcPoolError:
            return  # the slot stays empty; the recorded errors say why
        if self._closed:
            worker.close()
            return
        self.workers.append(worker)
        self.idle.put(worker)

    def pids(self) -> list[int]:
        return [worker.pid for worker in self.workers if not worker.closed]

    def stderr_tails(self) -> list[str]:
        return [w.stderr_tail().decode("utf-8", "replace")[-400:] for w in self.workers]

    def close(self) -> None:
        self._closed = True
        for worker in self._spawned:
            worker.close()
