"""Load reports: table, recommendation, gates, JSON, CSV and HTML with hand-drawn SVG plots.

Everything here is computed from the sweep's result documents (our own
nanosecond records), so the table, the plots, the recommendation and the
gates cannot disagree with one another.

Decisions written down:

* Ratios are against the raw echo baseline measured in the same run at the
  same pool size and payload ("x raw"); rows without such a baseline show none.
* Recommended pool: per payload and codec, the smallest pool whose throughput
  is within 5% of the best pool's.  Recommended codec: per payload, the codec
  with the higher throughput at its own recommended pool; the ratio quoted is
  of those throughputs, plus the ratio of round-trip medians at the smallest
  pool (per-request cost with no queueing).
* The "MessagePack is 2-3x faster for large payloads" claim is judged on the
  median round trip at the smallest pool for the large profiles (structured,
  binary, request files): confirmed when JSON/MessagePack >= 2.
* The load generator is a single gevent thread: at >= 85% of one CPU it is
  the bottleneck and the throughput measures locust, not the bridge.
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .hires import format_ms
from .point import BASELINE_KIND

__all__ = [
    "LOADGEN_BOTTLENECK_PCT",
    "Gates",
    "build_report",
    "render_html",
    "render_table",
    "write_csv",
    "write_json",
]

# Within this fraction of the best throughput, a smaller pool is "as good".
POOL_TOLERANCE: Final = 0.05
# A single-threaded load generator at this share of one CPU is saturated.
LOADGEN_BOTTLENECK_PCT: Final = 85.0
# Bridges plus load generator at this share of all CPUs: the machine is full.
MACHINE_SATURATED_SHARE: Final = 0.9
# Two throughputs closer than this are not told apart by a single sweep on a
# shared machine (repeated runs here moved by 5-10%).
NOISE_SHARE: Final = 0.10
# The common claim under test: MessagePack 2-3x faster for large payloads.
CLAIM_MIN_RATIO: Final = 2.0
CLAIM_MAX_RATIO: Final = 3.5  # beyond "2-3x" even allowing for rounding
# Profiles that count as "large" for the claim (request files too).
_LARGE_PROFILES: Final = ("structured", "binary")


@dataclass
class Gates:
    max_p99_ms: float | None = None
    max_error_ratio: float | None = None
    min_rps: float | None = None
    max_rss_growth_mb: float | None = None


def _p(result: dict[str, Any], name: str) -> float | None:
    value = result.get("round_trip", {}).get(name)
    return float(value) if value is not None else None


def _key(result: dict[str, Any]) -> tuple[str, int, str]:
    config = result["config"]
    return config["payload"], config["pool"], config["codec"]


def _is_baseline(result: dict[str, Any]) -> bool:
    return bool(result["config"]["kind"] == BASELINE_KIND)


def _rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    baselines = {
        (r["config"]["payload"], r["config"]["pool"]): r
        for r in results
        if _is_baseline(r) and not r.get("error")
    }
    rows = []
    for result in results:
        config = result["config"]
        base = baselines.get((config["payload"], config["pool"]))
        row: dict[str, Any] = {
            "kind": config["kind"],
            "transport": config["transport"],
            "payload": config["payload"],
            "pool": config["pool"],
            "codec": config["codec"],
            "users": config["users"],
            "error": result.get("error"),
            "requests": result.get("requests", 0),
            "errors": result.get("errors", 0),
            "rps": result.get("rps", 0.0),
            "p50_ms": _p(result, "p50_ms"),
            "p95_ms": _p(result, "p95_ms"),
            "p99_ms": _p(result, "p99_ms"),
            "mean_ms": _p(result, "mean_ms"),
            "wait_p50_ms": result.get("checkout_wait", {}).get("p50_ms"),
            "wait_p99_ms": result.get("checkout_wait", {}).get("p99_ms"),
            "first_message_p50_ms": result.get("first_message", {}).get("p50_ms"),
            "error_ratio": result.get("error_ratio", 0.0),
            "bridge_cpu_pct": result.get("bridge_cpu_pct"),
            "loadgen_cpu_pct": result.get("loadgen_cpu_pct"),
            "startup_s": result.get("startup_s"),
            "restarts": result.get("restarts", 0),
            "nodes": result.get("nodes", 1),
            # Locust's own median, from its (re-bucketed) dict: a cross-check only.
            "locust_p50_ms": (result.get("locust_total") or {}).get("p50_ms"),
            "top_error": max(
                (result.get("error_kinds") or {"": 0}).items(), key=lambda item: item[1]
            )[0],
            "p50_vs_raw": None,
            "rps_vs_raw": None,
        }
        if base is not None and not _is_baseline(result) and not result.get("error"):
            base_p50 = _p(base, "p50_ms")
            if base_p50 and row["p50_ms"]:
                row["p50_vs_raw"] = row["p50_ms"] / base_p50
            if row["rps"] and base.get("rps"):
                row["rps_vs_raw"] = row["rps"] / base["rps"]
        rows.append(row)
    return rows


def _recommend(rows: list[dict[str, Any]]) -> dict[str, Any]:
    bridge = [r for r in rows if r["kind"] != BASELINE_KIND and not r["error"] and r["requests"]]
    by_line: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in bridge:
        by_line.setdefault((row["payload"], row["codec"]), []).append(row)
    pools: dict[str, dict[str, Any]] = {}
    for (payload, codec), line in sorted(by_line.items()):
        best = max(line, key=lambda r: r["rps"])
        good_enough = [r for r in line if r["rps"] >= (1 - POOL_TOLERANCE) * best["rps"]]
        chosen = min(good_enough, key=lambda r: r["pool"])
        pools[f"{payload}/{codec}"] = {
            "payload": payload,
            "codec": codec,
            "pool": chosen["pool"],
            "rps": chosen["rps"],
            "best_pool": best["pool"],
            "best_rps": best["rps"],
        }
    codecs: dict[str, dict[str, Any]] = {}
    for payload in sorted({r["payload"] for r in bridge}):
        options = [p for p in pools.values() if p["payload"] == payload]
        winner = max(options, key=lambda p: p["rps"])
        entry: dict[str, Any] = {
            "payload": payload,
            "codec": winner["codec"],
            "pool": winner["pool"],
            "rps": winner["rps"],
        }
        others = [p for p in options if p is not winner]
        if others:
            runner_up = max(others, key=lambda p: p["rps"])
            entry["versus"] = runner_up["codec"]
            entry["rps_ratio"] = winner["rps"] / runner_up["rps"] if runner_up["rps"] else None
        latency = _latency_ratio(bridge, payload)
        if latency is not None:
            entry.update(latency)
        codecs[payload] = entry
    return {"pools": pools, "codecs": codecs}


def _latency_ratio(bridge: list[dict[str, Any]], payload: str) -> dict[str, Any] | None:
    """JSON/MessagePack ratio of median round trips at the smallest pool measured."""
    rows = [r for r in bridge if r["payload"] == payload and r["codec"] in ("json", "msgpack")]
    if not rows:
        return None
    smallest = min(r["pool"] for r in rows)
    at = {r["codec"]: r for r in rows if r["pool"] == smallest}
    if "json" not in at or "msgpack" not in at or not at["msgpack"]["p50_ms"]:
        return None
    ratio = at["json"]["p50_ms"] / at["msgpack"]["p50_ms"]
    large = payload in _LARGE_PROFILES or payload.startswith("file:")
    out: dict[str, Any] = {"json_over_msgpack_p50": ratio, "at_pool": smallest}
    if large:
        if ratio > CLAIM_MAX_RATIO:
            verdict = (
                f"confirmed and exceeded: MessagePack is {ratio:.2f}x faster than JSON "
                "(claim: 2-3x)"
            )
        elif ratio >= CLAIM_MIN_RATIO:
            verdict = f"confirmed: MessagePack is {ratio:.2f}x faster than JSON"
        elif ratio >= 1:
            verdict = f"refuted: MessagePack is only {ratio:.2f}x faster than JSON (claim: 2-3x)"
        else:
            verdict = f"refuted: MessagePack is {1 / ratio:.2f}x slower than JSON"
        out["claim_2_3x"] = verdict
    return out


def _startup(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for pool in sorted({r["pool"] for r in rows}):
        bridge = [r["startup_s"] for r in rows if r["pool"] == pool and r["kind"] != BASELINE_KIND]
        base = [r["startup_s"] for r in rows if r["pool"] == pool and r["kind"] == BASELINE_KIND]
        bridge = [v for v in bridge if v is not None]
        base = [v for v in base if v is not None]
        out.append(
            {
                "pool": pool,
                "bridge_s": statistics.median(bridge) if bridge else None,
                "baseline_s": statistics.median(base) if base else None,
                "samples": len(bridge),
            }
        )
    return out


def _soak(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for result in results:
        samples = result.get("rss_samples") or []
        if len(samples) < 2 or result.get("error"):
            continue
        first, last = samples[0][1], samples[-1][1]
        requests = result.get("requests", 0)
        out.append(
            {
                "payload": result["config"]["payload"],
                "pool": result["config"]["pool"],
                "codec": result["config"]["codec"],
                "kind": result["config"]["kind"],
                "rss_start_mb": first / 2**20,
                "rss_end_mb": last / 2**20,
                "growth_mb": (last - first) / 2**20,
                "growth_pct": 100.0 * (last - first) / first if first else 0.0,
                "growth_kb_per_1000_requests": (last - first) / 1024 / requests * 1000
                if requests
                else 0.0,
                "samples": samples,
            }
        )
    return out


def _warnings(rows: list[dict[str, Any]]) -> list[str]:
    warnings = []
    saturated = [r for r in rows if (r["loadgen_cpu_pct"] or 0) >= LOADGEN_BOTTLENECK_PCT]
    if saturated:
        worst = max(r["loadgen_cpu_pct"] for r in saturated)
        warnings.append(
            f"the load generator used up to {worst:.0f}% of a CPU at {len(saturated)} of "
            f"{len(rows)} points (marked !): there the throughput measures locust, not the "
            "bridge; compare against the raw baseline, or add locust workers (--master/--worker)"
        )
    cpus = os.cpu_count() or 1
    busy = [
        r
        for r in rows
        if r["nodes"] == 1  # distributed points ran on other machines too
        and (r["bridge_cpu_pct"] or 0) + (r["loadgen_cpu_pct"] or 0)
        >= MACHINE_SATURATED_SHARE * 100 * cpus
    ]
    if busy:
        warnings.append(
            f"bridges and load generator together used {MACHINE_SATURATED_SHARE:.0%} or more "
            f"of this machine's {cpus} CPUs at {len(busy)} point(s): there a bigger pool "
            "cannot add throughput, the machine is full"
        )
    failed = [r for r in rows if r["error"]]
    for row in failed:
        warnings.append(
            f"{row['kind']} pool={row['pool']} codec={row['codec']} payload={row['payload']} "
            f"failed: {row['error']}"
        )
    for row in rows:
        if row["error_ratio"] > 0 and not row["error"]:
            warnings.append(
                f"pool={row['pool']} codec={row['codec']} payload={row['payload']}: "
                f"{row['errors']} request(s) failed ({row['error_ratio']:.2%}), "
                f"mostly: {row['top_error']}"
            )
    flaky = [r for r in rows if r["restarts"]]
    for row in flaky:
        warnings.append(
            f"pool={row['pool']} codec={row['codec']} payload={row['payload']}: "
            f"{row['restarts']} worker(s) crashed or timed out and were replaced"
        )
    return warnings


def _gate(rows: list[dict[str, Any]], soak: list[dict[str, Any]], gates: Gates) -> list[str]:
    breaches = []
    for row in rows:
        if row["kind"] == BASELINE_KIND or row["error"]:
            continue
        where = f"pool={row['pool']} codec={row['codec']} payload={row['payload']}"
        if gates.max_p99_ms is not None and (row["p99_ms"] or 0) > gates.max_p99_ms:
            breaches.append(f"{where}: p99 {format_ms(row['p99_ms'])} > {gates.max_p99_ms:g} ms")
        if gates.max_error_ratio is not None and row["error_ratio"] > gates.max_error_ratio:
            breaches.append(
                f"{where}: error ratio {row['error_ratio']:.4f} > {gates.max_error_ratio:g}"
            )
        if gates.min_rps is not None and row["rps"] < gates.min_rps:
            breaches.append(f"{where}: {row['rps']:.1f} req/s < {gates.min_rps:g}")
    if gates.max_rss_growth_mb is not None:
        for entry in soak:
            if entry["kind"] != BASELINE_KIND and entry["growth_mb"] > gates.max_rss_growth_mb:
                breaches.append(
                    f"pool={entry['pool']} codec={entry['codec']} payload={entry['payload']}: "
                    f"bridge memory grew {entry['growth_mb']:.1f} MB > {gates.max_rss_growth_mb:g}"
                )
    return breaches


def build_report(
    results: list[dict[str, Any]], gates: Gates, options: dict[str, Any]
) -> dict[str, Any]:
    rows = _rows(results)
    soak = _soak(results) if options.get("sample_interval_s") else []
    return {
        "version": 1,
        "options": options,
        "rows": rows,
        "recommendation": _recommend(rows),
        "startup": _startup(rows),
        "soak": soak,
        "warnings": _warnings(rows),
        "breaches": _gate(rows, soak, gates),
        "gates": {k: v for k, v in vars(gates).items() if v is not None},
    }


# -- text ---------------------------------------------------------------------


def _ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def _pct(value: float | None) -> str:
    return f"{value:.0f}%" if value is not None else "-"


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
    "p50 x raw",
    "req/s x raw",
)


def _cells(row: dict[str, Any]) -> list[str]:
    if row["error"]:
        return [row["payload"], str(row["pool"]), row["codec"], "FAILED", *["-"] * 9]
    codec = row["codec"] + (" (baseline)" if row["kind"] == BASELINE_KIND else "")
    loadgen = _pct(row["loadgen_cpu_pct"])
    if (row["loadgen_cpu_pct"] or 0) >= LOADGEN_BOTTLENECK_PCT:
        loadgen += " !"
    return [
        row["payload"],
        str(row["pool"]),
        codec,
        f"{row['rps']:,.0f}",
        format_ms(row["p50_ms"]),
        format_ms(row["p95_ms"]),
        format_ms(row["p99_ms"]),
        format_ms(row["wait_p99_ms"]),
        f"{row['error_ratio']:.2%}",
        _pct(row["bridge_cpu_pct"]),
        loadgen,
        _ratio(row["p50_vs_raw"]),
        _ratio(row["rps_vs_raw"]),
    ]


def _text_table(header: Iterable[str], rows: list[list[str]]) -> str:
    header = list(header)
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def recommendation_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for payload, entry in report["recommendation"]["codecs"].items():
        text = (
            f"payload {payload}: use {entry['codec']} with a pool of {entry['pool']} "
            f"({entry['rps']:,.0f} req/s"
        )
        if entry.get("rps_ratio"):
            text += f", {entry['rps_ratio']:.2f}x the throughput of {entry['versus']}"
        text += ")"
        if entry.get("rps_ratio") and entry["rps_ratio"] < 1 + NOISE_SHARE:
            text += (
                f"; under {NOISE_SHARE:.0%} apart, within one run's noise: "
                f"{entry['versus']} will do as well"
            )
        if entry.get("json_over_msgpack_p50"):
            text += (
                f"; median round trip JSON/MessagePack = {entry['json_over_msgpack_p50']:.2f}x "
                f"at pool {entry['at_pool']}"
            )
        lines.append(text)
        if entry.get("claim_2_3x"):
            lines.append(
                f"  claim 'MessagePack is 2-3x faster for large payloads': {entry['claim_2_3x']}"
            )
    for entry in report["recommendation"]["pools"].values():
        lines.append(
            f"  {entry['payload']}/{entry['codec']}: smallest pool within "
            f"{POOL_TOLERANCE:.0%} of the best = {entry['pool']} ({entry['rps']:,.0f} req/s; "
            f"best {entry['best_rps']:,.0f} at pool {entry['best_pool']})"
        )
    return lines


def render_table(report: dict[str, Any]) -> str:
    parts = [_text_table(TABLE_COLUMNS, [_cells(r) for r in report["rows"]])]
    startup = report["startup"]
    if startup:
        parts.append("\nPool start-up (until every worker answered its init ping):")
        parts.append(
            _text_table(
                ("pool", "bridge", "raw baseline"),
                [
                    [
                        str(s["pool"]),
                        format_ms(s["bridge_s"] * 1000) if s["bridge_s"] is not None else "-",
                        format_ms(s["baseline_s"] * 1000) if s["baseline_s"] is not None else "-",
                    ]
                    for s in startup
                ],
            )
        )
    if report["soak"]:
        parts.append("\nBridge memory over the measured window (soak):")
        parts.append(
            _text_table(
                ("payload", "pool", "codec", "start", "end", "growth", "per 1000 req"),
                [
                    [
                        s["payload"],
                        str(s["pool"]),
                        s["codec"],
                        f"{s['rss_start_mb']:.1f} MB",
                        f"{s['rss_end_mb']:.1f} MB",
                        f"{s['growth_mb']:+.2f} MB ({s['growth_pct']:+.1f}%)",
                        f"{s['growth_kb_per_1000_requests']:+.1f} KB",
                    ]
                    for s in report["soak"]
                ],
            )
        )
    lines = recommendation_lines(report)
    if lines:
        parts.append("\nRecommendation:")
        parts.extend(lines)
    for warning in report["warnings"]:
        parts.append(f"warning: {warning}")
    for breach in report["breaches"]:
        parts.append(f"LIMIT BREACHED: {breach}")
    return "\n".join(parts)


# -- files ----------------------------------------------------------------------


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))


CSV_FIELDS: Final = (
    "kind",
    "transport",
    "payload",
    "pool",
    "codec",
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
    "startup_s",
    "restarts",
    "p50_vs_raw",
    "rps_vs_raw",
    "error",
)


def write_csv(report: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    points = directory / "points.csv"
    with points.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in report["rows"]:
            writer.writerow(row)
    startup = directory / "startup.csv"
    with startup.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=("pool", "bridge_s", "baseline_s", "samples"))
        writer.writeheader()
        writer.writerows(report["startup"])
    written = [points, startup]
    if report["soak"]:
        soak = directory / "soak.csv"
        with soak.open("w", newline="") as handle:
            fields = ("kind", "payload", "pool", "codec", "rss_start_mb", "rss_end_mb", "growth_mb")
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(report["soak"])
        written.append(soak)
    return written


# -- HTML with SVG plots ----------------------------------------------------------

_COLOURS: Final = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#17becf",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
)
_W, _H = 640, 360
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 170, 30, 45
_LEGEND_CHARS = 22


def _series(
    rows: list[dict[str, Any]], metric: str
) -> list[tuple[str, bool, list[tuple[int, float]]]]:
    lines: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for row in rows:
        value = row.get(metric)
        if row["error"] or not value:
            continue
        lines.setdefault((row["payload"], row["codec"], row["kind"]), []).append(
            (row["pool"], value)
        )
    return [
        (f"{payload} · {codec}", kind == BASELINE_KIND, sorted(points))
        for (payload, codec, kind), points in sorted(lines.items())
    ]


def svg_chart(
    title: str,
    y_label: str,
    series: list[tuple[str, bool, list[tuple[int, float]]]],
    pools: list[int],
) -> str:
    """A line chart: pool sizes evenly spaced on x, a log scale on y."""
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    values = [v for _, _, points in series for _, v in points if v > 0]
    if not values:
        return f"<p>{html.escape(title)}: no data</p>"
    low = 10 ** math.floor(math.log10(min(values)))
    high = 10 ** math.ceil(math.log10(max(values)))
    if high <= low:
        high = low * 10

    def x_of(pool: int) -> float:
        index = pools.index(pool)
        return _LEFT + (plot_w * index / (len(pools) - 1) if len(pools) > 1 else plot_w / 2)

    def y_of(value: float) -> float:
        share = (math.log10(value) - math.log10(low)) / (math.log10(high) - math.log10(low))
        return _TOP + plot_h * (1 - share)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{_LEFT}" y="18" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" '
        'fill="none" stroke="#999"/>',
    ]
    decade = low
    while decade <= high * 1.0001:
        y = y_of(decade)
        out.append(
            f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
        )
        label = format_ms(decade) if "ms" in y_label else f"{decade:g}"
        out.append(
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{label}</text>'
        )
        decade *= 10
    for pool in pools:
        x = x_of(pool)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" y2="{_TOP + plot_h}" stroke="#eee"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{_TOP + plot_h + 16}" text-anchor="middle" '
            f'font-size="11">{pool}</text>'
        )
    out.append(
        f'<text x="{_LEFT + plot_w / 2}" y="{_H - 8}" text-anchor="middle" '
        'font-size="12">pool size</text>'
    )
    out.append(
        f'<text x="14" y="{_TOP + plot_h / 2}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {_TOP + plot_h / 2})">{html.escape(y_label)}</text>'
    )
    for number, (label, dashed, points) in enumerate(series):
        colour = _COLOURS[number % len(_COLOURS)]
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        coords = " ".join(f"{x_of(p):.1f},{y_of(v):.1f}" for p, v in points)
        out.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        for p, v in points:
            out.append(
                f'<circle cx="{x_of(p):.1f}" cy="{y_of(v):.1f}" r="3" fill="{colour}">'
                f"<title>{html.escape(label)} pool {p}: {v:.4g}</title></circle>"
            )
        ly = _TOP + 14 + number * 16
        lx = _LEFT + plot_w + 12
        out.append(
            f'<line x1="{lx}" x2="{lx + 20}" y1="{ly - 4}" y2="{ly - 4}" '
            f'stroke="{colour}" stroke-width="2"{dash}/>'
        )
        # The legend column fits ~22 characters (file:PATH payloads are long);
        # the full label stays in the tooltip.
        short = label if len(label) <= _LEGEND_CHARS else label[: _LEGEND_CHARS - 1] + "…"
        out.append(
            f'<text x="{lx + 26}" y="{ly}" font-size="11"><title>{html.escape(label)}</title>'
            f"{html.escape(short)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out)


def _html_table(header: Iterable[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict[str, Any]) -> str:
    rows = report["rows"]
    pools = sorted({r["pool"] for r in rows})
    charts = [
        svg_chart(
            "Throughput against pool size", "requests per second", _series(rows, "rps"), pools
        ),
        svg_chart("p99 round trip against pool size", "p99 (ms)", _series(rows, "p99_ms"), pools),
    ]
    options = report["options"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>snakepit-harness load report</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right;font-size:13px}th{background:#f3f3f3}.warn{color:#a40}"
        ".breach{color:#c00;font-weight:bold}svg{margin:0.5em 1em 0.5em 0}</style></head><body>",
        "<h1>snakepit-harness load report</h1>",
        f"<p>Bridge: <code>{html.escape(' '.join(options.get('bridge_cmd', [])))}</code>; "
        f"transport {html.escape(str(options.get('transport')))}; {options.get('users')} users; "
        f"{options.get('warmup_s')} s warm-up (excluded) + {options.get('duration_s')} s measured "
        "per point. Latencies are round trips (send to whole response), check-out wait apart; "
        "dashed lines are the raw echo baseline measured in the same run.</p>",
        "<h2>Recommendation</h2><ul>",
        *(f"<li>{html.escape(line)}</li>" for line in recommendation_lines(report)),
        "</ul>",
        *(f"<p class='warn'>warning: {html.escape(w)}</p>" for w in report["warnings"]),
        *(f"<p class='breach'>LIMIT BREACHED: {html.escape(b)}</p>" for b in report["breaches"]),
        "<h2>Plots</h2>",
        *charts,
        "<h2>Points</h2>",
        _html_table(TABLE_COLUMNS, [_cells(r) for r in rows]),
        "<h2>Pool start-up</h2><p>Time until every worker answered its init ping.</p>",
        _html_table(
            ("pool", "bridge", "raw baseline"),
            [
                [
                    str(s["pool"]),
                    format_ms(s["bridge_s"] * 1000) if s["bridge_s"] is not None else "-",
                    format_ms(s["baseline_s"] * 1000) if s["baseline_s"] is not None else "-",
                ]
                for s in report["startup"]
            ],
        ),
    ]
    if report["soak"]:
        parts.append("<h2>Bridge memory (soak)</h2>")
        parts.append(
            _html_table(
                ("payload", "pool", "codec", "start MB", "end MB", "growth MB", "growth %"),
                [
                    [
                        s["payload"],
                        str(s["pool"]),
                        s["codec"],
                        f"{s['rss_start_mb']:.1f}",
                        f"{s['rss_end_mb']:.1f}",
                        f"{s['growth_mb']:+.2f}",
                        f"{s['growth_pct']:+.1f}",
                    ]
                    for s in report["soak"]
                ],
            )
        )
    parts.append("</body></html>")
    return "\n".join(parts)
