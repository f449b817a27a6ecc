"""One point as one locust process sees it: its pool, its measured window, its share of the result.

A point runs in one locust process (a local runner), or in several: a master
with ``--processes`` workers forked on this host, or distributed workers on
other hosts.  Each generating process builds its pool (on this host, its share
of the point's pool), then all of them start their warm-up and window
together: a worker tells the master its pool is up (``snakepit_ready``), and
the master answers every worker at once (``snakepit_go``) when all are, so
that per-process windows cover the same stretch of time and their requests
add up.  Each worker ships its samples with every stats report, and the rest
with its final figures the moment its window ends; the master merges them,
adds its own CPU, and writes the result document.  Locust's own message
machinery carries all of it.

Imported inside locust processes only (gevent).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import gevent
import gevent.event
from locust.runners import MasterRunner, WorkerRunner

from snakepit_harness.transports.process import cpu_seconds, own_cpu_seconds, rss_bytes

from .hires import LatencyRecord
from .point import BASELINE_KIND, GENERATOR_POLLS, PointConfig
from .pool import PoolError, PoolShare, WorkerPool
from .profiles import RequestTemplate, bytes_as_base64, load_profile, make_templates

__all__ = ["STREAM_PROFILE", "PointRun"]

STREAM_PROFILE: Final = "stream"  # gRPC only: ExecuteStream("ping_stream", {count})
# A request still unanswered after this share of the window is counted as failed.
STUCK_SHARE: Final = 0.5
# A worker whose master never says go (it died, or another worker's pool hung)
# starts its window anyway after this long; the harness's budget ends the point.
GO_WAIT_S: Final = 120.0
READY_MESSAGE: Final = "snakepit_ready"
GO_MESSAGE: Final = "snakepit_go"
# A worker's last samples and final figures, sent the moment its window ends
# (stats reports come every 3 s, which would hold every point up that long).
FINAL_MESSAGE: Final = "snakepit_final"


class PointRun:
    """State of the point in this process (one per locust process)."""

    def __init__(self) -> None:
        self.config: PointConfig | None = None
        self.pool: WorkerPool[Any] | None = None
        self.templates: list[RequestTemplate] = []
        self.grpc_request = b""
        self.record = LatencyRecord()
        self.counter = itertools.count()
        self.started = False
        self.serving = False  # the window's users may send (pool up, window not over)
        self.window_began = 0.0
        self.marks: dict[str, float] = {}
        self.rss_samples: list[tuple[float, int]] = []
        self.final: dict[str, Any] | None = None
        self.final_sent = False
        self.finals: dict[str, dict[str, Any]] = {}  # master: per worker
        self.ready: set[str] = set()  # master: workers whose pool is up
        self.locust_total: dict[str, Any] = {}
        self.quit_requested = False
        self.environment: Any = None
        self.go = gevent.event.Event()

    # -- pool ---------------------------------------------------------------

    def start(self, environment: Any) -> None:
        config = PointConfig.from_json(environment.parsed_options.snakepit_config)
        self.config = config
        self.started = True
        runner = environment.runner
        index = runner.worker_index if isinstance(runner, WorkerRunner) else 0
        try:
            self.pool = self._make_pool(config, index)
            self.pool.start()
        except Exception as exc:  # any failure must become the point's error, not a hang
            if self.pool is not None:
                self.pool.close()
            self.final = {"error": _error_text(exc), "failure": _failure(exc)}
            self._tell_master_ready(runner)
            self._ship_final(runner)
            self._request_quit(environment)
            return
        self._tell_master_ready(runner)
        gevent.spawn(self._window, environment, config)

    def _make_pool(self, config: PointConfig, process_index: int) -> WorkerPool[Any]:
        # A distributed worker keeps its own pid file (the master's path is
        # the master's) and tells its harness which point it served.
        pid_file = os.environ.get("SNAKEPIT_PID_FILE") or config.pid_file or None
        state_file = os.environ.get("SNAKEPIT_WORKER_STATE")
        if state_file:
            Path(state_file).write_text(config.to_json())
        size, first = config.pool_share(process_index)
        share = PoolShare(pid_file, config.timeout_s, first, config.pool)
        pool: WorkerPool[Any] = _POOL_MAKERS[config.transport](self, config, size, share)
        return pool

    # -- the start together ---------------------------------------------------

    def _tell_master_ready(self, runner: Any) -> None:
        if isinstance(runner, WorkerRunner):
            runner.send_message(READY_MESSAGE, {"failed": self.final is not None})
        else:
            self.go.set()

    def on_ready(self, environment: Any, msg: Any, **_: Any) -> None:
        """Master: a worker's pool is up (or failed); say go once every worker's is."""
        self.ready.add(msg.node_id)
        config = self.config
        if config is not None and len(self.ready) >= config.expect_nodes and not self.go.is_set():
            self.go.set()
            environment.runner.send_message(GO_MESSAGE)
            gevent.spawn(self._master_window, environment, config)

    def on_go(self, environment: Any, msg: Any, **_: Any) -> None:
        self.go.set()

    def _master_window(self, environment: Any, config: PointConfig) -> None:
        gevent.sleep(config.warmup_s)
        environment.runner.stats.reset_all()
        self.marks["master_cpu"] = own_cpu_seconds()
        self.marks["master_began"] = time.perf_counter()

    # -- the measured window -----------------------------------------------

    def _window(self, environment: Any, config: PointConfig) -> None:
        assert self.pool is not None
        self.go.wait(timeout=GO_WAIT_S)
        self.serving = True
        gevent.sleep(config.warmup_s)
        pids = self.pool.pids()
        self.marks.update(bridge_cpu=cpu_seconds(pids), own_cpu=own_cpu_seconds())
        self.marks["polls"], self.marks["poll_hits"], self.marks["poll_s"] = _poll_counts(self.pool)
        self.rss_samples = [(0.0, rss_bytes(pids))]
        environment.runner.stats.reset_all()  # a worker's drops its unsent warm-up
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
        if not self.record.recording or self.final is not None or self.pool is None:
            return
        pool = self.pool
        self.serving = False
        window = time.perf_counter() - self.window_began
        # A bridge that stopped answering must not look merely slow: requests
        # still unanswered after STUCK_SHARE of the window count as errors.
        now_ns = time.perf_counter_ns()
        limit_ns = STUCK_SHARE * window * 1e9
        for worker in pool.workers:
            if worker.busy_since_ns and now_ns - worker.busy_since_ns > limit_ns:
                self.record.add_error(
                    f"no answer within {STUCK_SHARE * window:.1f} s "
                    "(still waiting when the window ended)"
                )
        self.record.recording = False
        pids = pool.pids()
        bridge_cpu = cpu_seconds(pids) - self.marks["bridge_cpu"]
        own_cpu = own_cpu_seconds() - self.marks["own_cpu"]
        polls, hits, polled_s = _poll_counts(pool)
        # CPU spent polling for answers in the window: idle time in disguise, not work.
        window_poll_s = polled_s - self.marks["poll_s"]
        if self.rss_samples[-1][0] < window - 0.5:
            self.rss_samples.append((window, rss_bytes(pids)))
        self.final = {
            "window_s": window,
            "startup_s": pool.startup_s,
            "workers": pool.size,
            "bridge_cpu_pct": 100.0 * bridge_cpu / window if window > 0 else 0.0,
            "loadgen_cpu_pct": 100.0 * own_cpu / window if window > 0 else 0.0,
            "loadgen_cpu_s": own_cpu,
            "rss_samples": self.rss_samples,
            "restarts": pool.restarts,
            "stderr_tails": [tail for tail in pool.stderr_tails() if tail.strip()][:3],
            "notes": list(getattr(pool, "notes", [])),
            "answers_polled": polls - self.marks["polls"],
            "answers_found_polling": hits - self.marks["poll_hits"],
            "loadgen_poll_s": window_poll_s,
            "loadgen_busy_pct": 100.0 * (own_cpu - window_poll_s) / window if window > 0 else 0.0,
        }
        if not self._ship_final(environment.runner):
            self.locust_total = _locust_total(environment)

    def _ship_final(self, runner: Any) -> bool:
        """A worker: send the master its final figures now; False where there is no master."""
        if not isinstance(runner, WorkerRunner):
            return False
        self.final_sent = True
        # Locust sends its own statistics to the master every 3 s: flush them
        # first (the final would otherwise overtake them), so that locust's
        # total, our cross-check, holds this worker's whole window.  A window
        # shorter than one report left it empty.  Private, hence looked up:
        # without it only the cross-check would be missing.
        send_stats = getattr(runner, "_send_stats", None)
        if send_stats is not None:
            send_stats()
        runner.send_message(FINAL_MESSAGE, {"chunk": self.record.drain(), "final": self.final})
        return True

    def _request_quit(self, environment: Any) -> None:
        runner = environment.runner
        if isinstance(runner, WorkerRunner) or self.quit_requested:
            return  # a worker waits for its master's quit
        self.quit_requested = True
        # Spawned apart from the runner's greenlets, which quit() kills.
        gevent.spawn(runner.quit)

    # -- distributed --------------------------------------------------------------

    def report_to_master(self, data: dict[str, Any]) -> None:
        share: dict[str, Any] = {"chunk": self.record.drain()}
        if self.final is not None and not self.final_sent:
            share["final"] = self.final
            self.final_sent = True
        data["snakepit"] = share

    def worker_report(self, client_id: str, data: dict[str, Any]) -> None:
        share = data.get("snakepit")
        if share:
            self._take(client_id, share)

    def on_final(self, environment: Any, msg: Any, **_: Any) -> None:
        """Master: a worker's window is over (or its pool failed)."""
        self._take(msg.node_id, msg.data)

    def _take(self, client_id: str, share: dict[str, Any]) -> None:
        self.record.merge(share["chunk"])
        if share.get("final") is not None:
            self.finals[client_id] = share["final"]
        config = self.config
        expected = config.expect_nodes if config else 1
        if len(self.finals) >= expected and not self.quit_requested:
            environment = self.environment
            self._close_master_window(environment)
            if environment is not None:
                self.quit_requested = True
                gevent.spawn(environment.runner.quit)

    def _close_master_window(self, environment: Any) -> None:
        if "master_cpu" in self.marks and "master_cpu_s" not in self.marks:
            self.marks["master_cpu_s"] = own_cpu_seconds() - self.marks["master_cpu"]
            self.marks["master_window_s"] = time.perf_counter() - self.marks["master_began"]
            if environment is not None:
                self.locust_total = _locust_total(environment)

    # -- results -------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        """The point's result document (see :mod:`.point`), from every node's figures."""
        assert self.config is not None
        finals = list(self.finals.values()) if self.finals else [self.final or {}]
        failed = [f for f in finals if f.get("error")]
        good = [f for f in finals if not f.get("error")]
        out: dict[str, Any] = {
            "config": json.loads(self.config.to_json()),
            "error": failed[0]["error"] if failed else None,
            "failure": failed[0].get("failure") if failed else None,
            "nodes": len(finals),
            "generator_processes": len(finals),
        }
        if not good:
            return out
        window = max(f["window_s"] for f in good)
        out.update(self.record.summary(window))
        generator_cpu = sum(f["loadgen_cpu_s"] for f in good)
        coordinator_pct = None
        if "master_cpu_s" in self.marks:
            generator_cpu += self.marks["master_cpu_s"]
            master_window = self.marks["master_window_s"]
            coordinator_pct = 100.0 * self.marks["master_cpu_s"] / master_window
        requests = out["requests"]
        out.update(
            startup_s=max(f["startup_s"] for f in good),
            bridge_cpu_pct=sum(f["bridge_cpu_pct"] for f in good),
            loadgen_cpu_pct=max(f["loadgen_cpu_pct"] for f in good),
            loadgen_cpu_pct_per_node=[f["loadgen_cpu_pct"] for f in good],
            loadgen_busy_pct_per_node=[f.get("loadgen_busy_pct") for f in good],
            coordinator_cpu_pct=coordinator_pct,
            generator_cpu_us_per_request=1e6 * generator_cpu / requests if requests else None,
            # The same without the polling: what the generator's own work cost.
            generator_busy_us_per_request=(
                1e6 * (generator_cpu - sum(f.get("loadgen_poll_s", 0.0) for f in good)) / requests
                if requests
                else None
            ),
            answers_polled_share=_polled_share(good, requests),
            idle_processes=sum(1 for f in good if f.get("workers") == 0),
            rss_samples=_sum_rss([f["rss_samples"] for f in good]),
            restarts=sum(f["restarts"] for f in good),
            stderr_tails=[t for f in good for t in f.get("stderr_tails", [])][:3],
            notes=sorted({n for f in good for n in f.get("notes", [])}),
            locust_total=self.locust_total,
        )
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def _stdio_pool(run: PointRun, config: PointConfig, size: int, share: PoolShare) -> Any:
    from .gpool import StdioPool

    run.templates = make_templates(config.payload, config.codec)
    return StdioPool(
        config.bridge_cmd,
        size,
        config.codec,
        select=config.codec_select,
        share=share,
        poll_answers=config.generator_wait == GENERATOR_POLLS,
    )


def _grpc_pool(run: PointRun, config: PointConfig, size: int, share: PoolShare) -> Any:
    from .grpc_calls import execute_request_bytes
    from .grpc_pool import GrpcPool, init_grpc_for_gevent

    init_grpc_for_gevent()  # before any channel exists
    if config.payload == STREAM_PROFILE:
        command, args = "ping_stream", {"count": config.stream_count}
    else:
        # §8.3: argument values are JSON texts, so bytes travel as base64
        # (a bridge cannot put raw bytes nested in a result back in JSON).
        command, args = load_profile(config.payload)[0]
        args = bytes_as_base64(args)
    run.grpc_request = execute_request_bytes(command, args)
    return GrpcPool(config.bridge_cmd, size, baseline=config.kind == BASELINE_KIND, share=share)


def _bridge_service_pool(run: PointRun, config: PointConfig, size: int, share: PoolShare) -> Any:
    from .bridge_pool import BridgeServicePool
    from .grpc_pool import init_grpc_for_gevent

    init_grpc_for_gevent()  # before any channel exists
    # Planned and tried by the harness before the sweep (bridge_calls.py).
    run.grpc_request = Path(config.tool_request_file).read_bytes()
    return BridgeServicePool(
        config.bridge_cmd,
        size,
        host_address=config.host_address,
        request=run.grpc_request,
        stream=config.payload == STREAM_PROFILE,
        baseline=config.kind == BASELINE_KIND,
        share=share,
    )


# How each transport's pool is built (and what the users send set up).
_POOL_MAKERS: Final[dict[str, Callable[[PointRun, PointConfig, int, PoolShare], Any]]] = {
    "stdio": _stdio_pool,
    "grpc": _grpc_pool,
    "bridge-service": _bridge_service_pool,
}


def _locust_total(environment: Any) -> dict[str, Any]:
    total = environment.runner.stats.total
    if not total.num_requests:  # nothing reached locust's statistics: no figure, not 0
        return {"requests": 0, "p50_ms": None, "p99_ms": None}
    return {
        "requests": total.num_requests,
        "p50_ms": total.get_response_time_percentile(0.5),
        "p99_ms": total.get_response_time_percentile(0.99),
    }


def _error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, PoolError) else f"{type(exc).__name__}: {exc}"


def _failure(exc: BaseException) -> dict[str, Any] | None:
    """A start-up failure as the report shows it: verdict, detail, bytes (hex), stderr."""
    if not isinstance(exc, PoolError):
        return None
    return {
        "verdict": exc.verdict,
        "detail": exc.detail,
        "data_hex": exc.data.hex(),
        "stderr_tail": exc.stderr_tail.decode("utf-8", "replace"),
    }


def _sum_rss(per_node: list[list[Any]]) -> list[list[float]]:
    """Add the nodes' memory samples index by index (they share the interval)."""
    length = min(len(samples) for samples in per_node)
    return [
        [per_node[0][i][0], float(sum(samples[i][1] for samples in per_node))]
        for i in range(length)
    ]


def is_master(environment: Any) -> bool:
    return isinstance(environment.runner, MasterRunner)


def _poll_counts(pool: Any) -> tuple[int, int, float]:
    """A stdio pool's (answers polled for, found by polling, seconds polling) so far.

    (0, 0, 0.0) for pools that never poll (gRPC, bridge-service).
    """
    counts = getattr(pool, "poll_counts", None)
    return counts() if counts is not None else (0, 0, 0.0)


def _polled_share(finals: list[dict[str, Any]], requests: int) -> float | None:
    """The share of the window's requests whose answer the generator found by polling.

    None when no generator process polled (gRPC and bridge-service pools,
    ``--generator-wait sleep``, or workers never all busy at once): the figure
    explains ``gen µs/req``.
    """
    polled = sum(f.get("answers_polled", 0) for f in finals)
    if not polled or not requests:
        return None
    found: int = sum(f.get("answers_found_polling", 0) for f in finals)
    return min(1.0, found / requests)
