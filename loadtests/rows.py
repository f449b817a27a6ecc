"""One row per point: what a locust process's result document says, typed, with its ratios.

A result document is JSON written by a locust process (see :mod:`.node`);
:func:`rows_from_results` turns each into a :class:`LoadRow`, adds the ratios
against the raw baseline measured at the same pool size and payload, and
decides whether the load generator was the bottleneck there
(:attr:`LoadRow.generator_bound`).  Everything the report shows is computed
from these rows, so the table, the files, the plots, the recommendation and
the gates cannot disagree.  Stdlib only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Final

from .point import BASELINE_KIND, describe_point

__all__ = ["LOADGEN_BOTTLENECK_PCT", "LoadRow", "PointFailure", "rows_from_results"]

# A load-generating process at this share of one CPU is saturated: locust runs
# every user of a process on one thread, so there the throughput measures the
# generator, not the bridge.
LOADGEN_BOTTLENECK_PCT: Final = 85.0


@dataclass(frozen=True)
class PointFailure:
    """Why a point could not be measured, as ``snakepit-harness send`` would say it."""

    verdict: str  # FRAMING, NEGOTIATION, TIMEOUT, CRASH, DECODE, START
    detail: str
    data_hex: str = ""  # the bytes involved (what the bridge wrote), in hex
    stderr_tail: str = ""

    @classmethod
    def from_document(cls, data: dict[str, Any] | None) -> PointFailure | None:
        if not data:
            return None
        return cls(
            verdict=str(data.get("verdict", "START")),
            detail=str(data.get("detail", "")),
            data_hex=str(data.get("data_hex", "")),
            stderr_tail=str(data.get("stderr_tail", "")),
        )


@dataclass
class LoadRow:
    """The figures of one point (a bridge or the baseline at one pool, codec and payload)."""

    kind: str  # "bridge" or "baseline"
    transport: str
    payload: str
    pool: int
    codec: str
    users: int
    # bridge-service: the delay the host emulator added to every callback (ms);
    # None elsewhere and for the baseline, which makes no callbacks.
    host_delay_ms: float | None = None
    error: str | None = None
    failure: PointFailure | None = None
    requests: int = 0
    errors: int = 0
    rps: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    wait_p50_ms: float | None = None
    wait_p99_ms: float | None = None
    first_message_p50_ms: float | None = None
    error_ratio: float = 0.0
    bridge_cpu_pct: float | None = None
    # The busiest load-generating process, % of one CPU.
    loadgen_cpu_pct: float | None = None
    startup_s: float | None = None
    restarts: int = 0
    nodes: int = 1
    # False when the load came from locust workers on other hosts (--master).
    same_host: bool = True
    # Locust processes that generated the load; their CPU (and the master's,
    # when there is one) over the window, per request; whether any was saturated.
    generator_processes: int = 1
    generator_cpu_us_per_request: float | None = None
    generator_bound: bool = False
    # The share of requests whose answer the generator found by polling the
    # pipe (loadtests/spin.py), None where it did not poll; and the generator's
    # CPU per request without the time it spent polling (its own work).
    answers_polled_share: float | None = None
    generator_busy_us_per_request: float | None = None
    # Whether idle CPUs were held to a low wake-up latency over the point
    # (transports/cpu_wake.py), and why not where that was asked for and
    # refused (empty otherwise).
    wake_latency_held: bool = False
    wake_latency_refused: str = ""
    # Locust's own median, from its (re-bucketed) dict: a cross-check only.
    locust_p50_ms: float | None = None
    top_error: str = ""
    notes: list[str] = field(default_factory=list)
    p50_vs_raw: float | None = None
    rps_vs_raw: float | None = None

    @property
    def is_baseline(self) -> bool:
        return self.kind == BASELINE_KIND

    @property
    def measured(self) -> bool:
        """A bridge point with figures (not the baseline, not failed, some requests)."""
        return not self.is_baseline and not self.error and self.requests > 0

    @property
    def generator_cpu_pct(self) -> float:
        """Every generator process together, % of one CPU (what they took from the machine)."""
        if self.generator_cpu_us_per_request is None:
            return self.loadgen_cpu_pct or 0.0
        return self.generator_cpu_us_per_request * self.rps / 1e4

    @property
    def variant(self) -> str:
        """What a line of the sweep varies besides the pool: the codec, and any host delay."""
        if self.host_delay_ms is None:
            return self.codec
        return f"{self.codec} host+{self.host_delay_ms:g}ms"

    @property
    def where(self) -> str:
        return describe_point(self.pool, self.codec, self.payload, self.host_delay_ms)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _trip(result: dict[str, Any], name: str) -> float | None:
    value = result.get("round_trip", {}).get(name)
    return float(value) if value is not None else None


def _generator_bound(result: dict[str, Any]) -> bool:
    # A process's busy share leaves out the CPU it spent polling for answers
    # (loadtests/spin.py): polling fills time it had nothing else to do in.
    busy = [pct for pct in result.get("loadgen_busy_pct_per_node") or [] if pct is not None]
    per_process = busy or list(result.get("loadgen_cpu_pct_per_node") or [])
    if not per_process and result.get("loadgen_cpu_pct") is not None:
        per_process = [result["loadgen_cpu_pct"]]
    if result.get("coordinator_cpu_pct") is not None:
        per_process.append(result["coordinator_cpu_pct"])
    return any(pct >= LOADGEN_BOTTLENECK_PCT for pct in per_process)


def _row(result: dict[str, Any]) -> LoadRow:
    config = result["config"]
    kinds = result.get("error_kinds") or {"": 0}
    generator_us = result.get("generator_cpu_us_per_request")
    if generator_us is None and result.get("loadgen_cpu_pct") and result.get("rps"):
        # One process: its CPU share of the window over the request rate.
        generator_us = 1e4 * result["loadgen_cpu_pct"] / result["rps"]
    return LoadRow(
        kind=config["kind"],
        transport=config["transport"],
        payload=config["payload"],
        pool=config["pool"],
        codec=config["codec"],
        users=config["users"],
        host_delay_ms=config.get("host_delay_ms"),
        error=result.get("error"),
        failure=PointFailure.from_document(result.get("failure")),
        requests=result.get("requests", 0),
        errors=result.get("errors", 0),
        rps=result.get("rps", 0.0),
        p50_ms=_trip(result, "p50_ms"),
        p95_ms=_trip(result, "p95_ms"),
        p99_ms=_trip(result, "p99_ms"),
        mean_ms=_trip(result, "mean_ms"),
        wait_p50_ms=result.get("checkout_wait", {}).get("p50_ms"),
        wait_p99_ms=result.get("checkout_wait", {}).get("p99_ms"),
        first_message_p50_ms=result.get("first_message", {}).get("p50_ms"),
        error_ratio=result.get("error_ratio", 0.0),
        bridge_cpu_pct=result.get("bridge_cpu_pct"),
        loadgen_cpu_pct=result.get("loadgen_cpu_pct"),
        startup_s=result.get("startup_s"),
        restarts=result.get("restarts", 0),
        nodes=result.get("nodes", 1),
        same_host=result.get("nodes", 1) == 1 or bool(config.get("split_pool")),
        generator_processes=result.get("generator_processes", config.get("generator_processes", 1)),
        generator_cpu_us_per_request=generator_us,
        generator_bound=_generator_bound(result),
        answers_polled_share=result.get("answers_polled_share"),
        generator_busy_us_per_request=result.get("generator_busy_us_per_request"),
        wake_latency_held=bool(result.get("wake_latency_held")),
        wake_latency_refused=str(result.get("wake_latency_refused") or ""),
        locust_p50_ms=(result.get("locust_total") or {}).get("p50_ms"),
        top_error=max(kinds.items(), key=lambda item: item[1])[0],
        notes=list(result.get("notes") or []),
    )


def rows_from_results(results: list[dict[str, Any]]) -> list[LoadRow]:
    """Rows in the sweep's order, with ratios against the same-run baseline."""
    rows = [_row(result) for result in results]
    baselines = {(r.payload, r.pool): r for r in rows if r.is_baseline and not r.error}
    for row in rows:
        base = baselines.get((row.payload, row.pool))
        if base is None or row.is_baseline or row.error:
            continue
        if base.p50_ms and row.p50_ms:
            row.p50_vs_raw = row.p50_ms / base.p50_ms
        if row.rps and base.rps:
            row.rps_vs_raw = row.rps / base.rps
    return rows
