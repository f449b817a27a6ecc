"""The locustfile: load users for stdio pools and gRPC bridges, run by ``locust -f``.

The harness never imports this module (importing locust monkey-patches the
interpreter with gevent); it runs ``python -m locust -f <this file>`` once per
point, headless, with the point's :class:`~.point.PointConfig` as
``--snakepit-config``.  The same file serves locust's distributed mode: the
master forwards that option to its workers, each worker runs its own pool, and
the workers ship their samples to the master with every stats report.

Life of a point (in each load-generating process):

1. ``test_start``: build the pool (stdio: :class:`~.gpool.StdioPool`; gRPC:
   :class:`~.grpc_pool.GrpcPool`) and time its start-up (until every worker
   answered its init ping).
2. Warm-up (``warmup_s``): users run, nothing is recorded.
3. The measured window (``duration_s``): every call is timed with
   ``perf_counter_ns``; CPU of the bridges and of this process, and (soak
   mode) bridge memory, are read at its edges.
4. The window ends: the local runner quits; a distributed worker reports
   "done" and its master quits once every expected worker has.
5. ``quitting``: the result document is written (local runner or master) and
   the pool is killed.

Response times reach locust in milliseconds as floats, and
``locust.stats.bucket_response_time`` is replaced so that locust's own tables
keep sub-millisecond values; the result document is built from our own
nanosecond record, never from locust's buckets.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.queue
import locust.stats
from locust import User, constant, events, task
from locust.runners import MasterRunner, WorkerRunner
from snakepit_harness.loadtests.hires import LatencyRecord, bucket_response_time
from snakepit_harness.loadtests.point import BASELINE_KIND, PointConfig
from snakepit_harness.loadtests.procs import cpu_seconds, rss_bytes, tune_allocator
from snakepit_harness.loadtests.profiles import (
    RAW_CODEC,
    RequestTemplate,
    bytes_as_base64,
    check_response,
    load_profile,
    make_templates,
    next_id,
)

from snakepit_harness.errors import HarnessError

# Ours returns floats (sub-ms values survive); locust's stub says int.
locust.stats.bucket_response_time = bucket_response_time  # type: ignore[assignment]
# Responses of 1 MiB are read into fresh buffers: keep them in warm heap memory.
tune_allocator()

STREAM_PROFILE = "stream"  # gRPC only: ExecuteStream("ping_stream", {count})
# A request still unanswered after this share of the window is counted as failed.
STUCK_SHARE = 0.5


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Run:
    """State of the point in this process (one per locust process)."""

    def __init__(self) -> None:
        self.config: PointConfig | None = None
        self.pool: Any = None
        self.templates: list[RequestTemplate] = []
        self.grpc_request = b""
        self.record = LatencyRecord()
        self.counter = itertools.count()
        self.error: str | None = None
        self.started = False
        self.window_began = 0.0
        self.window_ended = 0.0
        self.marks: dict[str, float] = {}
        self.rss_samples: list[tuple[float, int]] = []
        self.final: dict[str, Any] | None = None
        self.final_sent = False
        self.finals: dict[str, dict[str, Any]] = {}  # master: per worker
        self.locust_total: dict[str, Any] = {}
        self.quit_requested = False
        self.environment: Any = None
        # Requests on the wire: counter -> perf_counter_ns at send.
        self.in_flight: dict[int, int] = {}

    # -- pool ---------------------------------------------------------------

    def start(self, environment: Any) -> None:
        config = PointConfig.from_json(environment.parsed_options.snakepit_config)
        self.config = config
        self.started = True
        try:
            self._start_pool(config)
        except Exception as exc:  # any failure must become the point's error, not a hang
            if self.pool is not None:
                self.pool.close()
            self.error = f"{type(exc).__name__}: {exc}"
            self.final = {"error": self.error}
            self._request_quit(environment)
            return
        gevent.spawn(self._window, environment, config)

    def _start_pool(self, config: PointConfig) -> None:
        baseline = config.kind == BASELINE_KIND
        # A distributed worker keeps its own pid file (the master's path is
        # the master's) and tells its harness which point it served.
        pid_file = os.environ.get("SNAKEPIT_PID_FILE") or config.pid_file or None
        state_file = os.environ.get("SNAKEPIT_WORKER_STATE")
        if state_file:
            Path(state_file).write_text(config.to_json())
        if config.transport == "grpc":
            from snakepit_harness.loadtests.grpc_pool import GrpcPool, init_grpc_for_gevent
            from snakepit_harness.loadtests.grpc_wire import execute_request_bytes

            init_grpc_for_gevent()  # before any channel exists
            if config.payload == STREAM_PROFILE:
                command, args = "ping_stream", {"count": config.stream_count}
            else:
                # §8.3: argument values are JSON texts, so bytes travel as base64
                # (a bridge cannot put raw bytes nested in a result back in JSON).
                command, args = load_profile(config.payload)[0]
                args = bytes_as_base64(args)
            self.grpc_request = execute_request_bytes(command, args)
            self.pool = GrpcPool(
                config.bridge_cmd,
                config.pool,
                baseline=baseline,
                pid_file=pid_file,
                timeout=config.timeout_s,
            )
        else:
            from snakepit_harness.loadtests.gpool import StdioPool

            self.templates = make_templates(config.payload, config.codec)
            self.pool = StdioPool(
                config.bridge_cmd,
                config.pool,
                config.codec,
                select=config.codec_select,
                pid_file=pid_file,
                timeout=config.timeout_s,
            )
        self.pool.start()

    # -- the measured window -----------------------------------------------

    def _window(self, environment: Any, config: PointConfig) -> None:
        gevent.sleep(config.warmup_s)
        pids = self.pool.pids()
        self.marks = {"bridge_cpu": cpu_seconds(pids), "own_cpu": _own_cpu_seconds()}
        self.rss_samples = [(0.0, rss_bytes(pids))]
        if not isinstance(environment.runner, WorkerRunner):
            environment.runner.stats.reset_all()
        self.window_began = time.perf_counter()
        self.record.recording = True
        end = self.window_began + config.duration_s
        interval = config.sample_interval_s
        while (now := time.perf_counter()) < end:
            gevent.sleep(min(interval, end - now) if interval > 0 else end - now)
            if interval > 0:
                offset = time.perf_counter() - self.window_began
                self.rss_samples.append((offset, rss_bytes(self.pool.pids())))
        self.end_window(environment)
        self._request_quit(environment)

    def end_window(self, environment: Any) -> None:
        """Close the window (idempotent) and compute this node's final figures."""
        if not self.record.recording or self.final is not None:
            return
        self.window_ended = time.perf_counter()
        window = self.window_ended - self.window_began
        # A bridge that stopped answering must not look merely slow: requests
        # still unanswered after STUCK_SHARE of the window count as errors.
        now_ns = time.perf_counter_ns()
        stuck = [t for t in self.in_flight.values() if now_ns - t > STUCK_SHARE * window * 1e9]
        for _ in stuck:
            self.record.add_error(
                f"no answer within {STUCK_SHARE * window:.1f} s "
                "(still waiting when the window ended)"
            )
        self.record.recording = False
        pids = self.pool.pids()
        bridge_cpu = cpu_seconds(pids) - self.marks["bridge_cpu"]
        own_cpu = _own_cpu_seconds() - self.marks["own_cpu"]
        if self.rss_samples[-1][0] < window - 0.5:
            self.rss_samples.append((window, rss_bytes(pids)))
        self.final = {
            "window_s": window,
            "startup_s": self.pool.startup_s,
            "bridge_cpu_pct": 100.0 * bridge_cpu / window if window > 0 else 0.0,
            "loadgen_cpu_pct": 100.0 * own_cpu / window if window > 0 else 0.0,
            "rss_samples": self.rss_samples,
            "restarts": self.pool.restarts,
            "stderr_tails": [tail for tail in self.pool.stderr_tails() if tail.strip()][:3],
        }
        if not isinstance(environment.runner, WorkerRunner):
            total = environment.runner.stats.total
            self.locust_total = {
                "requests": total.num_requests,
                "p50_ms": total.get_response_time_percentile(0.5),
                "p99_ms": total.get_response_time_percentile(0.99),
            }

    def _request_quit(self, environment: Any) -> None:
        runner = environment.runner
        if isinstance(runner, WorkerRunner) or self.quit_requested:
            return  # a worker waits for its master's quit
        self.quit_requested = True
        # Spawned apart from the runner's greenlets, which quit() kills.
        gevent.spawn(runner.quit)

    # -- results -------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        assert self.config is not None
        finals = list(self.finals.values()) if self.finals else [self.final or {}]
        errors = [f["error"] for f in finals if f.get("error")]
        good = [f for f in finals if not f.get("error")]
        window = max((f["window_s"] for f in good), default=0.0)
        out: dict[str, Any] = {
            "config": json.loads(self.config.to_json()),
            "error": errors[0] if errors else self.error,
            "nodes": len(finals),
        }
        if good:
            out.update(self.record.summary(window))
            out["startup_s"] = max(f["startup_s"] for f in good)
            out["bridge_cpu_pct"] = sum(f["bridge_cpu_pct"] for f in good)
            out["loadgen_cpu_pct"] = max(f["loadgen_cpu_pct"] for f in good)
            out["loadgen_cpu_pct_per_node"] = [f["loadgen_cpu_pct"] for f in good]
            out["rss_samples"] = _sum_rss([f["rss_samples"] for f in good])
            out["restarts"] = sum(f["restarts"] for f in good)
            out["stderr_tails"] = [t for f in good for t in f.get("stderr_tails", [])][:3]
            out["locust_total"] = self.locust_total
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def _sum_rss(per_node: list[list[Any]]) -> list[list[float]]:
    """Add the nodes' memory samples index by index (they share the interval)."""
    length = min(len(samples) for samples in per_node)
    return [
        [per_node[0][i][0], float(sum(samples[i][1] for samples in per_node))]
        for i in range(length)
    ]


RUN = _Run()


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
    share: dict[str, Any] = {"chunk": RUN.record.drain()}
    if RUN.final is not None and not RUN.final_sent:
        share["final"] = RUN.final
        RUN.final_sent = True
    data["snakepit"] = share


def _on_worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    share = data.get("snakepit")
    if not share:
        return
    RUN.record.merge(share["chunk"])
    if share.get("final") is not None:
        RUN.finals[client_id] = share["final"]
    config = RUN.config
    expected = config.expect_nodes if config else 1
    if len(RUN.finals) >= expected and not RUN.quit_requested:
        environment = RUN.environment
        if environment is not None:
            RUN.quit_requested = True
            gevent.spawn(environment.runner.quit)


# How often a locust process checks that its parent (the harness) still lives.
PARENT_CHECK_S = 0.5


def _watch_parent(parent: int) -> None:
    """Kill the pool and exit when the harness that started us is gone."""
    while True:
        gevent.sleep(PARENT_CHECK_S)
        if os.getppid() != parent:
            RUN.close()
            os._exit(1)


def _on_init(environment: Any, **_: Any) -> None:
    RUN.environment = environment
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


def _fire(user: User, kind: str, response_ns: int, length: int, error: str | None) -> None:
    config = RUN.config
    name = f"{config.codec} {config.payload}" if config else "request"
    user.environment.events.request.fire(
        request_type=kind,
        name=name,
        response_time=response_ns / 1e6,
        response_length=length,
        exception=HarnessError(error) if error else None,
        context={},
    )


class StdioPoolUser(User):
    """Sends the point's payload to a worker checked out of the stdio pool, in a closed loop."""

    wait_time = constant(0)

    @task
    def call(self) -> None:
        pool = RUN.pool
        config = RUN.config
        if pool is None or config is None or RUN.final is not None:
            gevent.sleep(0.05)
            return
        count = next(RUN.counter)
        template = RUN.templates[count % len(RUN.templates)]
        request_id = next_id(count)
        parts = template.parts(request_id)
        error: str | None = None
        payload = b""
        elapsed = waited = 0
        try:
            with pool.checkout() as (worker, waited):
                began = time.perf_counter_ns()
                RUN.in_flight[count] = began
                try:
                    payload = worker.round_trip(parts, config.timeout_s)
                finally:
                    RUN.in_flight.pop(count, None)
                elapsed = time.perf_counter_ns() - began
        except gevent.queue.Empty:
            error = f"no free worker within {config.timeout_s:.0f} s"
        except (HarnessError, OSError) as exc:
            error = str(exc).splitlines()[0]
        if error is None:
            error = check_response(config.codec, payload, template, request_id)
        if error is None:
            RUN.record.add(elapsed, waited)
        else:
            RUN.record.add_error(error)
        _fire(self, "stdio", elapsed, len(payload), error)


class GrpcUser(User):
    """Unary ``Execute`` calls; ``ExecuteStream`` with time to first message for ``stream``."""

    wait_time = constant(0)

    @task
    def call(self) -> None:
        import grpc

        pool = RUN.pool
        config = RUN.config
        if pool is None or config is None or RUN.final is not None:
            gevent.sleep(0.05)
            return
        error: str | None = None
        first: int | None = None
        length = 0
        elapsed = waited = 0
        baseline = config.codec == RAW_CODEC
        count = next(RUN.counter)
        try:
            with pool.checkout() as (worker, waited):
                began = time.perf_counter_ns()
                RUN.in_flight[count] = began
                if config.payload == STREAM_PROFILE:
                    messages = 0
                    last = b""
                    for message in worker.execute_stream(
                        RUN.grpc_request, timeout=config.timeout_s
                    ):
                        if first is None:
                            first = time.perf_counter_ns() - began
                        messages += 1
                        last = message
                        length += len(message)
                    elapsed = time.perf_counter_ns() - began
                    error = _check_stream(baseline, messages, last, config.stream_count)
                else:
                    answer = worker.execute(RUN.grpc_request, timeout=config.timeout_s)
                    elapsed = time.perf_counter_ns() - began
                    length = len(answer)
                    error = _check_unary(baseline, answer, len(RUN.grpc_request))
        except gevent.queue.Empty:
            error = f"no free worker within {config.timeout_s:.0f} s"
        except grpc.RpcError as exc:
            error = f"gRPC {exc.code().name}: {exc.details()}"
        finally:
            RUN.in_flight.pop(count, None)
        if error is None:
            RUN.record.add(elapsed, waited, first)
        else:
            RUN.record.add_error(error)
        _fire(self, "grpc", elapsed, length, error)


def _check_unary(baseline: bool, answer: bytes, request_size: int) -> str | None:
    if baseline:
        return None if len(answer) == request_size else "echo server returned other bytes"
    from snakepit_harness.loadtests.grpc_wire import ExecuteResponse

    response = ExecuteResponse.FromString(answer)
    return None if response.success else f"bridge answered success=false: {response.error!r}"


def _check_stream(baseline: bool, messages: int, last: bytes, count: int) -> str | None:
    if baseline:
        return None if messages > 0 else "echo stream was empty"
    from snakepit_harness.loadtests.grpc_wire import StreamResponse

    final = StreamResponse.FromString(last)
    if not final.is_final or final.error:
        return f"stream ended without a clean final message (error {final.error!r})"
    if messages != count + 1:
        return f"ping_stream {{count: {count}}} sent {messages} messages, expected {count + 1}"
    return None
