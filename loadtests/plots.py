"""The load report as HTML: the table, the recommendation, and two plots drawn as inline SVG.

Throughput and p99 against pool size, one line per codec x payload, the raw
baseline dashed, on a log scale; no plotting library, so the report opens
anywhere and the harness needs nothing more to write it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Final

from .hires import format_ms
from .point import BASELINE_KIND
from .render import (
    SOAK_COLUMNS,
    TABLE_COLUMNS,
    failure_lines,
    recommendation_lines,
    row_cells,
    soak_cells,
    startup_cells,
)
from .report import LoadReport
from .rows import LoadRow

__all__ = ["render_html", "svg_chart"]

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


def _series(rows: list[LoadRow], metric: str) -> list[tuple[str, bool, list[tuple[int, float]]]]:
    lines: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for row in rows:
        value = getattr(row, metric)
        if row.error or not value:
            continue
        lines.setdefault((row.payload, row.variant, row.kind), []).append((row.pool, value))
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


def render_html(report: LoadReport) -> str:
    rows = report.rows
    pools = sorted({r.pool for r in rows})
    charts = [
        svg_chart(
            "Throughput against pool size", "requests per second", _series(rows, "rps"), pools
        ),
        svg_chart("p99 round trip against pool size", "p99 (ms)", _series(rows, "p99_ms"), pools),
    ]
    options = report.options
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
        *(f"<p class='warn'>warning: {html.escape(w)}</p>" for w in report.warnings),
        *(f"<p class='breach'>LIMIT BREACHED: {html.escape(b)}</p>" for b in report.breaches),
    ]
    failures = failure_lines(report)
    if failures:
        parts.append(f"<pre class='breach'>{html.escape(chr(10).join(failures))}</pre>")
    parts += [
        "<h2>Plots</h2>",
        *charts,
        "<h2>Points</h2>",
        _html_table(TABLE_COLUMNS, [row_cells(r) for r in rows]),
        "<h2>Pool start-up</h2><p>Time until every worker answered its init ping.</p>",
        _html_table(("pool", "bridge", "raw baseline"), startup_cells(report)),
    ]
    if report.soak:
        parts.append("<h2>Bridge memory (soak)</h2>")
        parts.append(_html_table(SOAK_COLUMNS, soak_cells(report)))
    parts.append("</body></html>")
    return "\n".join(parts)
