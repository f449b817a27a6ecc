"""A load report for people and machines: the text table, JSON and CSV.

The table's last lines are what a person must act on: warnings, breached
limits, and for every point that could not be measured its verdict, the
bytes involved and the bridge's stderr tail, as ``snakepit-harness send``
prints them.  HTML with plots is :mod:`.plots`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from .hires import format_ms
from .report import NOISE_SHARE, POOL_TOLERANCE, CodecChoice, LoadReport, PoolChoice, Refusal
from .rows import LoadRow

__all__ = [
    "CSV_FIELDS",
    "SOAK_COLUMNS",
    "TABLE_COLUMNS",
    "failure_lines",
    "recommendation_lines",
    "render_table",
    "row_cells",
    "soak_cells",
    "startup_cells",
    "text_table",
    "write_csv",
    "write_json",
]

# Bytes of a misbehaving bridge's output shown in hex (as `send` shows them).
HEX_PREVIEW_BYTES: Final = 256


def _ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def _pct(value: float | None) -> str:
    return f"{value:.0f}%" if value is not None else "-"


def _us(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


TABLE_COLUMNS: Final = (
    "payload",
    "pool",
    "codec",
    "req/s",
    "p50",
    "p95",
    "p99",
    "wait p99",
    "errors",
    "bridge CPU",
    "locust CPU",
    "gen procs",
    "gen µs/req",
    "gen bound",
    "p50 x raw",
    "req/s x raw",
)


def row_cells(row: LoadRow) -> list[str]:
    """One table row (text and HTML alike)."""
    if row.error:
        return [row.payload, str(row.pool), row.variant, "FAILED", *["-"] * 12]
    codec = row.variant + (" (baseline)" if row.is_baseline else "")
    loadgen = _pct(row.loadgen_cpu_pct) + (" !" if row.generator_bound else "")
    return [
        row.payload,
        str(row.pool),
        codec,
        f"{row.rps:,.0f}",
        format_ms(row.p50_ms),
        format_ms(row.p95_ms),
        format_ms(row.p99_ms),
        format_ms(row.wait_p99_ms),
        f"{row.error_ratio:.2%}",
        _pct(row.bridge_cpu_pct),
        loadgen,
        str(row.generator_processes),
        _us(row.generator_cpu_us_per_request),
        "yes" if row.generator_bound else "no",
        _ratio(row.p50_vs_raw),
        _ratio(row.rps_vs_raw),
    ]


def startup_cells(report: LoadReport) -> list[list[str]]:
    return [
        [
            str(s.pool),
            format_ms(s.bridge_s * 1000) if s.bridge_s is not None else "-",
            format_ms(s.baseline_s * 1000) if s.baseline_s is not None else "-",
        ]
        for s in report.startup
    ]


SOAK_COLUMNS: Final = ("payload", "pool", "codec", "start", "end", "growth", "per 1000 req")


def soak_cells(report: LoadReport) -> list[list[str]]:
    return [
        [
            s.payload,
            str(s.pool),
            s.codec,
            f"{s.rss_start_mb:.1f} MB",
            f"{s.rss_end_mb:.1f} MB",
            f"{s.growth_mb:+.2f} MB ({s.growth_pct:+.1f}%)",
            f"{s.growth_kb_per_1000_requests:+.1f} KB",
        ]
        for s in report.soak
    ]


def text_table(header: Iterable[str], rows: list[list[str]]) -> str:
    header = list(header)
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


# -- the recommendation in words ------------------------------------------------------


def _codec_sentence(entry: CodecChoice, verb: str) -> str:
    text = (f"{verb} " if verb else "") + (
        f"{entry.codec} with a pool of {entry.pool} ({entry.rps:,.0f} req/s"
    )
    if entry.rps_ratio:
        text += f", {entry.rps_ratio:.2f}x the throughput of {entry.versus}"
    text += ")"
    if entry.rps_ratio and entry.rps_ratio < 1 + NOISE_SHARE:
        text += (
            f"; under {NOISE_SHARE:.0%} apart, within one run's noise: "
            f"{entry.versus} will do as well"
        )
    if entry.json_over_msgpack_p50:
        text += (
            f"; median round trip JSON/MessagePack = {entry.json_over_msgpack_p50:.2f}x "
            f"at pool {entry.at_pool}"
        )
    return text


def _pool_sentence(entry: PoolChoice) -> str:
    return (
        f"smallest pool within {POOL_TOLERANCE:.0%} of the best = {entry.pool} "
        f"({entry.rps:,.0f} req/s; best {entry.best_rps:,.0f} at pool {entry.best_pool})"
    )


def _refusal_sentence(refusal: Refusal) -> str:
    where = ", ".join(refusal.bound_at)
    return (
        f"no recommendation: the load generator was the limit (up to "
        f"{refusal.worst_cpu_pct:.0f}% of a CPU at {where}), so the throughput there measures "
        "locust, not the bridge"
    )


ADVICE: Final = (
    "  to measure the bridge instead: more generator processes (--generator-processes N, "
    "on a machine with CPUs to spare), or locust workers on other hosts (--master/--worker)"
)


def recommendation_lines(report: LoadReport) -> list[str]:
    recommendation = report.recommendation
    lines = []
    payloads = sorted(
        set(recommendation.codecs)
        | {r.payload for r in recommendation.refused.values() if r.codec is None}
    )
    for payload in payloads:
        if payload in recommendation.codecs:
            entry = recommendation.codecs[payload]
            lines.append(f"payload {payload}: " + _codec_sentence(entry, "use"))
            if entry.claim_2_3x:
                lines.append(
                    f"  claim 'MessagePack is 2-3x faster for large payloads': {entry.claim_2_3x}"
                )
            continue
        refusal = recommendation.refused[payload]
        text = f"payload {payload}: {_refusal_sentence(refusal)}"
        if isinstance(refusal.measured, CodecChoice):
            text += "; as measured: " + _codec_sentence(refusal.measured, "")
        lines.append(text)
        lines.append(ADVICE)
    for key, pool in recommendation.pools.items():
        lines.append(f"  {key}: {_pool_sentence(pool)}")
    for key, refusal in recommendation.refused.items():
        if refusal.codec is not None:
            lines.append(f"  {key}: not judged, generator-bound at {', '.join(refusal.bound_at)}")
    if recommendation.refused and ADVICE not in lines:
        lines.append(ADVICE)  # lines refused with no payload sentence (bridge-service)
    return lines


def failure_lines(report: LoadReport) -> list[str]:
    """Each failed point's verdict, the bytes the bridge wrote and its stderr tail."""
    lines = []
    for row in report.rows:
        failure = row.failure
        if failure is None:
            continue
        lines.append(f"{row.kind} {row.where}: {failure.verdict}: {failure.detail}")
        if failure.data_hex:
            shown = failure.data_hex[: 2 * HEX_PREVIEW_BYTES]
            lines.append(f"bytes the bridge wrote (hex, first {HEX_PREVIEW_BYTES}): {shown}")
        if failure.stderr_tail.strip():
            lines.append("--- bridge stderr (tail) ---")
            lines.append(failure.stderr_tail.rstrip())
    return lines


def render_table(report: LoadReport) -> str:
    parts = [text_table(TABLE_COLUMNS, [row_cells(r) for r in report.rows])]
    if report.startup:
        parts.append("\nPool start-up (until every worker answered its init ping):")
        parts.append(text_table(("pool", "bridge", "raw baseline"), startup_cells(report)))
    if report.soak:
        parts.append("\nBridge memory over the measured window (soak):")
        parts.append(text_table(SOAK_COLUMNS, soak_cells(report)))
    lines = recommendation_lines(report)
    if lines:
        parts.append("\nRecommendation:")
        parts.extend(lines)
    parts.extend(f"warning: {warning}" for warning in report.warnings)
    parts.extend(f"LIMIT BREACHED: {breach}" for breach in report.breaches)
    failures = failure_lines(report)
    if failures:
        parts.append("")
        parts.extend(failures)
    return "\n".join(parts)


# -- files ----------------------------------------------------------------------


def write_json(report: LoadReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2))


CSV_FIELDS: Final = (
    "kind",
    "transport",
    "payload",
    "pool",
    "codec",
    "host_delay_ms",
    "users",
    "requests",
    "errors",
    "rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "mean_ms",
    "wait_p50_ms",
    "wait_p99_ms",
    "first_message_p50_ms",
    "error_ratio",
    "bridge_cpu_pct",
    "loadgen_cpu_pct",
    "generator_processes",
    "generator_cpu_us_per_request",
    "generator_bound",
    "generator_busy_us_per_request",
    "answers_polled_share",
    "wake_latency_held",
    "startup_s",
    "restarts",
    "p50_vs_raw",
    "rps_vs_raw",
    "error",
)


def write_csv(report: LoadReport, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    document = report.to_json()
    points = directory / "points.csv"
    with points.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(document["rows"])
    startup = directory / "startup.csv"
    with startup.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=("pool", "bridge_s", "baseline_s", "samples"))
        writer.writeheader()
        writer.writerows(document["startup"])
    written = [points, startup]
    if report.soak:
        soak = directory / "soak.csv"
        with soak.open("w", newline="") as handle:
            fields = ("kind", "payload", "pool", "codec", "rss_start_mb", "rss_end_mb", "growth_mb")
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(document["soak"])
        written.append(soak)
    return written
