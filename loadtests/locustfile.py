"""The locustfile: load users for stdio pools and gRPC bridges, run by ``locust -f``.

The harness never imports this module (importing locust monkey-patches the
interpreter with gevent); it runs ``python -m locust -f <this file>`` once per
point, headless, with the point's :class:`~.point.PointConfig` as
``--snakepit-config``.  The same file serves locust's multi-process modes
(``--processes`` on this host, ``--master``/``--worker`` across hosts): see
:mod:`.node` for the life of a point in each process.

The users' hot path is what the load generator spends per request, so it is
kept lean: a task sends requests for a short slice of time instead of one
(locust's task loop and the hub switch it makes between tasks cost more than
a small round trip's bookkeeping), the worker is taken and handed back
without a context manager, and successful requests reach locust's statistics
in bulk (:mod:`.tally`).  Every response is still checked and timed.

Response times reach locust in milliseconds as floats, and
``locust.stats.bucket_response_time`` is replaced so that locust's own tables
keep sub-millisecond values; the result document is built from our own
nanosecond record, never from locust's buckets.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Final

import gevent
import gevent.queue
import locust.stats
from locust import User, constant, events, task
from locust.runners import MasterRunner, WorkerRunner
from snakepit_harness.loadtests.bridge_calls import check_tool_response, check_tool_stream
from snakepit_harness.loadtests.hires import bucket_response_time
from snakepit_harness.loadtests.node import (
    FINAL_MESSAGE,
    GO_MESSAGE,
    READY_MESSAGE,
    STREAM_PROFILE,
    PointRun,
)
from snakepit_harness.loadtests.point import PointConfig
from snakepit_harness.loadtests.profiles import RAW_CODEC, check_response, next_id
from snakepit_harness.loadtests.tally import LocustTally

from snakepit_harness.errors import HarnessError
from snakepit_harness.transports.spawn import tune_allocator

# Ours returns floats (sub-ms values survive); locust's stub says int.
locust.stats.bucket_response_time = bucket_response_time  # type: ignore[assignment]
# Responses of 1 MiB are read into fresh buffers: keep them in warm heap memory.
tune_allocator()

# How long one task sends requests before it hands back to locust's loop:
# long enough to spread locust's per-task cost over hundreds of small
# requests, short enough that a stop or the window's end is seen at once.
TASK_SLICE_S: Final = 0.05
_SLICE_NS: Final = int(TASK_SLICE_S * 1e9)
# What a user does while there is nothing to send (pool starting, window over,
# or a process whose share of the pool is empty).
IDLE_SLEEP_S: Final = 0.05
# How often a locust process checks that its parent (the harness) still lives.
PARENT_CHECK_S: Final = 0.5

RUN = PointRun()


def _add_options(parser: Any, **_: Any) -> None:
    parser.add_argument(
        "--snakepit-config",
        type=str,
        default="",
        include_in_web_ui=False,
        help="snakepit-harness point configuration (JSON); set by `snakepit-harness load`",
    )


def _on_test_start(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, MasterRunner):
        RUN.config = PointConfig.from_json(environment.parsed_options.snakepit_config)
        RUN.started = True
        return
    if not RUN.started:
        RUN.start(environment)


def _on_test_stop(environment: Any, **_: Any) -> None:
    if RUN.pool is not None:
        RUN.end_window(environment)


def _on_report_to_master(client_id: str, data: dict[str, Any], **_: Any) -> None:
    RUN.report_to_master(data)


def _on_worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    RUN.worker_report(client_id, data)


def _watch_parent(parent: int) -> None:
    """Kill the pool and exit when the process that started us is gone.

    The harness for a local runner or a master; the master for a worker it
    forked (``--processes``), which the kernel's parent-death signal does not
    reach.
    """
    while True:
        gevent.sleep(PARENT_CHECK_S)
        if os.getppid() != parent:
            RUN.close()
            os._exit(1)


def _on_init(environment: Any, **_: Any) -> None:
    RUN.environment = environment
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        runner.register_message(READY_MESSAGE, RUN.on_ready)
        runner.register_message(FINAL_MESSAGE, RUN.on_final)
    elif isinstance(runner, WorkerRunner):
        runner.register_message(GO_MESSAGE, RUN.on_go)
    gevent.spawn(_watch_parent, os.getppid())


def _on_quitting(environment: Any, **_: Any) -> None:
    try:
        if RUN.pool is not None:
            RUN.end_window(environment)
        config = RUN.config
        if not isinstance(environment.runner, WorkerRunner) and config and config.result_path:
            Path(config.result_path).write_text(json.dumps(RUN.result()))
    finally:
        RUN.close()


# Registered by call, not decorator, through an Any-typed alias: locust's
# add_listener is untyped and mypy --strict refuses untyped calls.
_EVENTS: Any = events
_EVENTS.init_command_line_parser.add_listener(_add_options)
_EVENTS.test_start.add_listener(_on_test_start)
_EVENTS.test_stop.add_listener(_on_test_stop)
_EVENTS.report_to_master.add_listener(_on_report_to_master)
_EVENTS.worker_report.add_listener(_on_worker_report)
_EVENTS.init.add_listener(_on_init)
_EVENTS.quitting.add_listener(_on_quitting)


def _fire_failure(user: User, kind: str, name: str, response_ns: int, error: str) -> None:
    user.environment.events.request.fire(
        request_type=kind,
        name=name,
        response_time=response_ns / 1e6,
        response_length=0,
        exception=HarnessError(error),
        context={},
    )


def _request_name(config: PointConfig) -> str:
    return f"{config.codec} {config.payload}"


class _PointUser(User):
    """What both users share: idle while there is nothing to send, send for a slice, tally."""

    abstract = True
    wait_time = constant(0)
    kind = ""  # locust's request type

    @task
    def call(self) -> None:
        run = RUN
        pool = run.pool
        config = run.config
        if pool is None or config is None or not run.serving or not pool.size:
            gevent.sleep(IDLE_SLEEP_S)
            return
        tally = LocustTally(self.kind, _request_name(config))
        try:
            self.send_for(run, pool, config, tally, time.perf_counter_ns() + _SLICE_NS)
        finally:
            tally.flush(self.environment)

    def send_for(
        self, run: PointRun, pool: Any, config: PointConfig, tally: LocustTally, end_ns: int
    ) -> None:
        """Send requests until ``end_ns`` (perf_counter_ns) or the window's end."""
        raise NotImplementedError

    def failed(self, run: PointRun, tally: LocustTally, elapsed_ns: int, error: str) -> None:
        run.record.add_error(error)
        _fire_failure(self, self.kind, tally.name, elapsed_ns, error)

    def take(self, run: PointRun, pool: Any, tally: LocustTally) -> tuple[Any, int] | None:
        """A worker and the wait for it, or None (the failure recorded) when none came."""
        try:
            taken: tuple[Any, int] = pool.acquire()
        except gevent.queue.Empty:
            self.failed(run, tally, 0, f"no free worker within {pool.timeout:.0f} s")
            return None
        return taken


class StdioPoolUser(_PointUser):
    """Sends the point's payload to a worker checked out of the stdio pool, in a closed loop."""

    kind = "stdio"

    def send_for(
        self, run: PointRun, pool: Any, config: PointConfig, tally: LocustTally, end_ns: int
    ) -> None:
        templates = run.templates
        record = run.record
        codec = config.codec
        timeout = config.timeout_s
        counter = run.counter
        perf_ns = time.perf_counter_ns
        while run.serving and perf_ns() < end_ns:
            count = next(counter)
            template = templates[count % len(templates)]
            request_id = next_id(count)
            taken = self.take(run, pool, tally)
            if taken is None:
                continue
            worker, waited = taken
            began = worker.busy_since_ns = perf_ns()
            try:
                payload = worker.round_trip(
                    template.parts(request_id), template.frame_size, timeout
                )
            except (HarnessError, OSError) as exc:
                pool.release(worker, broken=isinstance(exc, pool.broken_by))
                self.failed(run, tally, perf_ns() - began, str(exc).splitlines()[0])
                continue
            elapsed = perf_ns() - began
            pool.release(worker)
            problem = check_response(codec, payload, template, request_id)
            if problem is None:
                record.add(elapsed, waited)
                tally.add(elapsed, len(payload))
            else:
                self.failed(run, tally, elapsed, problem)


class GrpcUser(_PointUser):
    """Unary ``Execute`` calls; ``ExecuteStream`` with time to first message for ``stream``."""

    kind = "grpc"

    @staticmethod
    def check_unary(baseline: bool, answer: bytes, request_size: int) -> str | None:
        return _check_unary(baseline, answer, request_size)

    @staticmethod
    def check_stream(baseline: bool, messages: int, last: bytes, count: int) -> str | None:
        return _check_stream(baseline, messages, last, count)

    def send_for(
        self, run: PointRun, pool: Any, config: PointConfig, tally: LocustTally, end_ns: int
    ) -> None:
        while run.serving and time.perf_counter_ns() < end_ns:
            taken = self.take(run, pool, tally)
            if taken is not None:
                self._one(run, pool, config, tally, taken)

    def _one(
        self,
        run: PointRun,
        pool: Any,
        config: PointConfig,
        tally: LocustTally,
        taken: tuple[Any, int],
    ) -> None:
        import grpc

        worker, waited = taken
        error: str | None = None
        first: int | None = None
        length = 0
        elapsed = 0
        baseline = config.codec == RAW_CODEC
        began = worker.busy_since_ns = time.perf_counter_ns()
        try:
            if config.payload == STREAM_PROFILE:
                messages = 0
                last = b""
                for message in worker.execute_stream(run.grpc_request, timeout=config.timeout_s):
                    if first is None:
                        first = time.perf_counter_ns() - began
                    messages += 1
                    last = message
                    length += len(message)
                elapsed = time.perf_counter_ns() - began
                error = self.check_stream(baseline, messages, last, config.stream_count)
            else:
                answer = worker.execute(run.grpc_request, timeout=config.timeout_s)
                elapsed = time.perf_counter_ns() - began
                length = len(answer)
                error = self.check_unary(baseline, answer, len(run.grpc_request))
        except grpc.RpcError as exc:
            error = f"gRPC {exc.code().name}: {exc.details()}"
        finally:
            pool.release(worker)
        if error is None:
            run.record.add(elapsed, waited, first)
            tally.add(elapsed, length)
        else:
            self.failed(run, tally, elapsed, error)


def _check_unary(baseline: bool, answer: bytes, request_size: int) -> str | None:
    if baseline:
        return None if len(answer) == request_size else "echo server returned other bytes"
    from snakepit_harness.protos.snakepit_pb2 import ExecuteResponse

    response = ExecuteResponse.FromString(answer)
    return None if response.success else f"bridge answered success=false: {response.error!r}"


def _check_stream(baseline: bool, messages: int, last: bytes, count: int) -> str | None:
    if baseline:
        return None if messages > 0 else "echo stream was empty"
    from snakepit_harness.protos.snakepit_pb2 import StreamResponse

    final = StreamResponse.FromString(last)
    if not final.is_final or final.error:
        return f"stream ended without a clean final message (error {final.error!r})"
    if messages != count + 1:
        return f"ping_stream {{count: {count}}} sent {messages} messages, expected {count + 1}"
    return None


class BridgeServiceUser(GrpcUser):
    """``ExecuteTool`` (or ``ExecuteStreamingTool`` for ``stream``) of the planned tool call."""

    kind = "bridge-service"

    @staticmethod
    def check_unary(baseline: bool, answer: bytes, request_size: int) -> str | None:
        if baseline:
            return None if len(answer) == request_size else "echo server returned other bytes"
        return check_tool_response(answer)

    @staticmethod
    def check_stream(baseline: bool, messages: int, last: bytes, count: int) -> str | None:
        if baseline:
            return None if messages > 0 else "echo stream was empty"
        # Only the end is checked per call: a user's tool may stream a
        # varying number of chunks; the trial call counted them once.
        return check_tool_stream([last] if messages else [])
