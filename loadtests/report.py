"""The load report: rows, recommendation, start-up, soak, warnings and gates, from one sweep.

:func:`build_report` turns the sweep's result documents into a
:class:`LoadReport`; :mod:`.render` writes it as a table, JSON and CSV, and
:mod:`.plots` as HTML with hand-drawn SVG plots.  A report reads like its JSON
document (``report["rows"]``), which is what tools and tests consume.

Decisions written down:

* Ratios are against the raw echo baseline measured in the same run at the
  same pool size and payload ("x raw"); rows without such a baseline show none.
* Recommended pool: per payload and codec, the smallest pool whose throughput
  is within 5% of the best pool's.  Recommended codec: per payload, the codec
  with the higher throughput at its own recommended pool; the ratio quoted is
  of those throughputs, plus the ratio of round-trip medians at the smallest
  pool (per-request cost with no queueing).
* Generator-bound points are never judged.  At such a point a load-generating
  process was saturated, so its throughput is only a lower bound of what the
  bridge can do, and any pool size could turn out to be the best or "good
  enough": a line (payload x codec) is judged only when the generator had
  headroom at every one of its points, and a codec only when every codec's
  line was judged.  Otherwise the report says the generator was the limit,
  shows the figures as measured, and says what to do.
* The "MessagePack is 2-3x faster for large payloads" claim is judged on the
  median round trip at the smallest pool for the large profiles (structured,
  binary, request files): confirmed when JSON/MessagePack >= 2.
* bridge-service: a line is a payload at one host delay (the callback latency
  the worker meets, ``protobuf host+10ms``): each gets its pool.  There is no
  codec to choose and a host delay is the user's circumstance, not a choice,
  so these payloads get no codec sentence.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from snakepit_harness.protocol import CODEC_NAMES

from .hires import format_ms
from .rows import LOADGEN_BOTTLENECK_PCT, LoadRow, rows_from_results

__all__ = [
    "LOADGEN_BOTTLENECK_PCT",
    "CodecChoice",
    "Gates",
    "LoadReport",
    "PoolChoice",
    "Recommendation",
    "Refusal",
    "build_report",
]

# Within this fraction of the best throughput, a smaller pool is "as good".
POOL_TOLERANCE: Final = 0.05
# Bridges plus load generator at this share of all CPUs: the machine is full.
MACHINE_SATURATED_SHARE: Final = 0.9
# Two throughputs closer than this are not told apart by a single sweep on a
# shared machine (repeated runs here moved by 5-10%).
NOISE_SHARE: Final = 0.10
# The codecs the report compares per payload: the two the stdio profiles have.
_CODECS_COMPARED: Final = CODEC_NAMES


@dataclass(frozen=True)
class CodecClaim:
    """A claim about the codecs that the report confirms or refutes from its figures.

    ``ratio`` is JSON's median round trip over MessagePack's at the smallest
    pool; the claim is about ``profiles`` (and request files) only.
    """

    text: str
    min_ratio: float  # at or above: confirmed
    max_ratio: float  # above: confirmed and exceeded
    profiles: tuple[str, ...]

    def applies_to(self, payload: str) -> bool:
        return payload in self.profiles or payload.startswith("file:")

    def verdict(self, ratio: float) -> str:
        if ratio > self.max_ratio:
            return (
                f"confirmed and exceeded: MessagePack is {ratio:.2f}x faster than JSON "
                f"(claim: {self.text})"
            )
        if ratio >= self.min_ratio:
            return f"confirmed: MessagePack is {ratio:.2f}x faster than JSON"
        if ratio >= 1:
            return (
                f"refuted: MessagePack is only {ratio:.2f}x faster than JSON (claim: {self.text})"
            )
        return f"refuted: MessagePack is {1 / ratio:.2f}x slower than JSON"


# The common claim under test: MessagePack 2-3x faster for large payloads;
# beyond 3.5x is past "2-3x" even allowing for rounding.
MSGPACK_CLAIM: Final = CodecClaim("2-3x", 2.0, 3.5, ("structured", "binary"))


@dataclass
class Gates:
    max_p99_ms: float | None = None
    max_error_ratio: float | None = None
    min_rps: float | None = None
    max_rss_growth_mb: float | None = None


@dataclass(frozen=True)
class PoolChoice:
    """One line's pool: the smallest within POOL_TOLERANCE of the line's best throughput."""

    payload: str
    codec: str
    pool: int
    rps: float
    best_pool: int
    best_rps: float


@dataclass(frozen=True)
class CodecChoice:
    """One payload's codec: the higher throughput at its own recommended pool."""

    payload: str
    codec: str
    pool: int
    rps: float
    versus: str | None = None
    rps_ratio: float | None = None
    json_over_msgpack_p50: float | None = None
    at_pool: int | None = None
    claim_2_3x: str | None = None


@dataclass(frozen=True)
class Refusal:
    """A line or payload not judged because the generator was the limit at some of its points."""

    payload: str
    codec: str | None  # None: the payload's codec comparison
    bound_at: list[str]  # "pool 2 msgpack", ... where a generator process was saturated
    worst_cpu_pct: float
    measured: CodecChoice | PoolChoice | None  # what the figures say, not a recommendation


@dataclass
class Recommendation:
    pools: dict[str, PoolChoice] = field(default_factory=dict)
    codecs: dict[str, CodecChoice] = field(default_factory=dict)
    refused: dict[str, Refusal] = field(default_factory=dict)


@dataclass(frozen=True)
class StartupFigure:
    pool: int
    bridge_s: float | None
    baseline_s: float | None
    samples: int


@dataclass(frozen=True)
class SoakFigure:
    payload: str
    pool: int
    codec: str
    kind: str
    rss_start_mb: float
    rss_end_mb: float
    growth_mb: float
    growth_pct: float
    growth_kb_per_1000_requests: float
    samples: list[list[float]]


@dataclass
class LoadReport:
    options: dict[str, Any]
    rows: list[LoadRow]
    recommendation: Recommendation
    startup: list[StartupFigure]
    soak: list[SoakFigure]
    warnings: list[str]
    breaches: list[str]
    gates: Gates

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 2,
            "options": self.options,
            "rows": [row.to_json() for row in self.rows],
            "recommendation": asdict(self.recommendation),
            "startup": [asdict(s) for s in self.startup],
            "soak": [asdict(s) for s in self.soak],
            "warnings": self.warnings,
            "breaches": self.breaches,
            "gates": {k: v for k, v in vars(self.gates).items() if v is not None},
        }

    def __getitem__(self, key: str) -> Any:
        """The JSON document's entry ``key`` (the form tools and tests read)."""
        return self.to_json()[key]


# -- recommendation -----------------------------------------------------------------


def _choose_pool(line: list[LoadRow]) -> PoolChoice:
    best = max(line, key=lambda r: r.rps)
    good_enough = [r for r in line if r.rps >= (1 - POOL_TOLERANCE) * best.rps]
    chosen = min(good_enough, key=lambda r: r.pool)
    return PoolChoice(best.payload, best.variant, chosen.pool, chosen.rps, best.pool, best.rps)


def _choose_codec(payload: str, options: list[PoolChoice], rows: list[LoadRow]) -> CodecChoice:
    winner = max(options, key=lambda p: p.rps)
    versus = rps_ratio = None
    others = [p for p in options if p is not winner]
    if others:
        runner_up = max(others, key=lambda p: p.rps)
        versus = runner_up.codec
        rps_ratio = winner.rps / runner_up.rps if runner_up.rps else None
    latency = _latency_ratio(rows, payload)
    return CodecChoice(payload, winner.codec, winner.pool, winner.rps, versus, rps_ratio, *latency)


def _refusal(payload: str, codec: str | None, rows: list[LoadRow], measured: Any) -> Refusal:
    bound = [r for r in rows if r.generator_bound]
    return Refusal(
        payload,
        codec,
        [f"pool {r.pool} {r.variant}" for r in bound],
        max(r.loadgen_cpu_pct or 0.0 for r in bound),
        measured,
    )


def _line_order(item: tuple[tuple[str, str], list[LoadRow]]) -> tuple[str, str, float]:
    """Lines by payload, codec, then host delay as a number (host+1ms before host+10ms)."""
    (payload, _), line = item
    return (payload, line[0].codec, line[0].host_delay_ms or 0.0)


def _recommend(rows: list[LoadRow]) -> Recommendation:
    out = Recommendation()
    bridge = [r for r in rows if r.measured]
    lines: dict[tuple[str, str], list[LoadRow]] = {}
    for row in bridge:
        lines.setdefault((row.payload, row.variant), []).append(row)
    measured_pools: dict[tuple[str, str], PoolChoice] = {}
    for (payload, codec), line in sorted(lines.items(), key=_line_order):
        choice = measured_pools[payload, codec] = _choose_pool(line)
        key = f"{payload}/{codec}"
        if any(r.generator_bound for r in line):
            out.refused[key] = _refusal(payload, codec, line, choice)
        else:
            out.pools[key] = choice
    for payload in sorted({r.payload for r in bridge}):
        of_payload = [r for r in bridge if r.payload == payload]
        if any(r.host_delay_ms is not None for r in of_payload):
            # bridge-service: one codec (protobuf); its lines differ by host
            # delay, which is the user's circumstance, not a choice to make.
            continue
        options = [choice for (p, _), choice in measured_pools.items() if p == payload]
        measured = _choose_codec(payload, options, of_payload)
        if any(r.generator_bound for r in of_payload):
            out.refused[payload] = _refusal(payload, None, of_payload, measured)
        else:
            out.codecs[payload] = measured
    return out


def _latency_ratio(rows: list[LoadRow], payload: str) -> tuple[Any, ...]:
    """(JSON/MessagePack ratio of median round trips at the smallest pool, that pool, claim)."""
    compared = [r for r in rows if r.payload == payload and r.codec in _CODECS_COMPARED]
    if not compared:
        return (None, None, None)
    smallest = min(r.pool for r in compared)
    at = {r.codec: r for r in compared if r.pool == smallest}
    if "json" not in at or "msgpack" not in at or not at["msgpack"].p50_ms:
        return (None, None, None)
    ratio = (at["json"].p50_ms or 0.0) / at["msgpack"].p50_ms
    if not MSGPACK_CLAIM.applies_to(payload):
        return (ratio, smallest, None)
    return (ratio, smallest, MSGPACK_CLAIM.verdict(ratio))


# -- start-up and soak --------------------------------------------------------------


def _startup(rows: list[LoadRow]) -> list[StartupFigure]:
    out = []
    for pool in sorted({r.pool for r in rows}):
        at = [r for r in rows if r.pool == pool and r.startup_s is not None]
        bridge = [r.startup_s for r in at if not r.is_baseline and r.startup_s is not None]
        base = [r.startup_s for r in at if r.is_baseline and r.startup_s is not None]
        out.append(
            StartupFigure(
                pool,
                statistics.median(bridge) if bridge else None,
                statistics.median(base) if base else None,
                len(bridge),
            )
        )
    return out


def _soak(results: list[dict[str, Any]]) -> list[SoakFigure]:
    out = []
    for result in results:
        samples = result.get("rss_samples") or []
        if len(samples) < 2 or result.get("error"):
            continue
        first, last = samples[0][1], samples[-1][1]
        requests = result.get("requests", 0)
        config = result["config"]
        out.append(
            SoakFigure(
                payload=config["payload"],
                pool=config["pool"],
                codec=config["codec"],
                kind=config["kind"],
                rss_start_mb=first / 2**20,
                rss_end_mb=last / 2**20,
                growth_mb=(last - first) / 2**20,
                growth_pct=100.0 * (last - first) / first if first else 0.0,
                growth_kb_per_1000_requests=(last - first) / 1024 / requests * 1000
                if requests
                else 0.0,
                samples=samples,
            )
        )
    return out


# -- warnings and gates -------------------------------------------------------------


def _warnings(rows: list[LoadRow]) -> list[str]:
    warnings = []
    saturated = [r for r in rows if r.generator_bound]
    if saturated:
        worst = max(r.loadgen_cpu_pct or 0.0 for r in saturated)
        warnings.append(
            f"the load generator used up to {worst:.0f}% of a CPU at {len(saturated)} of "
            f"{len(rows)} points (marked !): there the throughput measures locust, not the "
            "bridge, and those points are not judged; compare against the raw baseline, run "
            "more generator processes (--generator-processes N), or add locust workers on "
            "other hosts (--master/--worker)"
        )
    cpus = os.cpu_count() or 1
    busy = [
        r
        for r in rows
        if r.same_host  # distributed points ran on other machines too
        and (r.bridge_cpu_pct or 0) + r.generator_cpu_pct >= MACHINE_SATURATED_SHARE * 100 * cpus
    ]
    if busy:
        warnings.append(
            f"bridges and load generator together used {MACHINE_SATURATED_SHARE:.0%} or more "
            f"of this machine's {cpus} CPUs at {len(busy)} point(s): there a bigger pool "
            "cannot add throughput, the machine is full"
        )
    for row in rows:
        if row.error:
            warnings.append(f"{row.kind} {row.where} failed: {row.error}")
        elif row.error_ratio > 0:
            warnings.append(
                f"{row.where}: {row.errors} request(s) failed ({row.error_ratio:.2%}), "
                f"mostly: {row.top_error}"
            )
    for row in rows:
        if row.restarts:
            warnings.append(
                f"{row.where}: {row.restarts} worker(s) crashed or timed out and were replaced"
            )
    refused = dict.fromkeys(r.wake_latency_refused for r in rows if r.wake_latency_refused)
    warnings.extend(
        f"idle CPUs kept their own wake-up latency ({why}): where a CPU was idle (pool 1 "
        "above all), every request also paid for waking it, which on a virtual machine can "
        "cost more than the request; run as root for figures without it "
        "(docs/load.md, --wake-latency)"
        for why in refused
    )
    notes = dict.fromkeys(note for row in rows for note in row.notes)
    warnings.extend(notes)
    return warnings


def _gate(rows: list[LoadRow], soak: list[SoakFigure], gates: Gates) -> list[str]:
    breaches = []
    for row in rows:
        if row.is_baseline or row.error:
            continue
        where = row.where
        if gates.max_p99_ms is not None and (row.p99_ms or 0) > gates.max_p99_ms:
            breaches.append(f"{where}: p99 {format_ms(row.p99_ms)} > {gates.max_p99_ms:g} ms")
        if gates.max_error_ratio is not None and row.error_ratio > gates.max_error_ratio:
            breaches.append(
                f"{where}: error ratio {row.error_ratio:.4f} > {gates.max_error_ratio:g}"
            )
        if gates.min_rps is not None and row.rps < gates.min_rps:
            breaches.append(f"{where}: {row.rps:.1f} req/s < {gates.min_rps:g}")
    if gates.max_rss_growth_mb is not None:
        for entry in soak:
            if entry.kind != "baseline" and entry.growth_mb > gates.max_rss_growth_mb:
                breaches.append(
                    f"pool={entry.pool} codec={entry.codec} payload={entry.payload}: "
                    f"bridge memory grew {entry.growth_mb:.1f} MB > {gates.max_rss_growth_mb:g}"
                )
    return breaches


def build_report(
    results: list[dict[str, Any]], gates: Gates, options: dict[str, Any]
) -> LoadReport:
    rows = rows_from_results(results)
    soak = _soak(results) if options.get("sample_interval_s") else []
    return LoadReport(
        options=options,
        rows=rows,
        recommendation=_recommend(rows),
        startup=_startup(rows),
        soak=soak,
        warnings=_warnings(rows),
        breaches=_gate(rows, soak, gates),
        gates=gates,
    )
