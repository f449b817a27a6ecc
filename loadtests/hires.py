"""Microsecond-resolution latency records, the source of truth for every load figure.

Locust keeps response times in a dict keyed by whole milliseconds, so a 40 µs
round trip is stored as 0 ms.  Two things fix that here, without locust being
imported by this module:

* :func:`bucket_response_time` replaces ``locust.stats.bucket_response_time``
  (installed by the locustfile): three significant digits at every scale, so
  0.0423 ms stays 0.0423 ms and locust's own tables stop saying 0;
* :class:`LatencyRecord` keeps every sample in nanoseconds and computes exact
  nearest-rank percentiles; reports are built from it, never from locust's
  dict, whose keys remain an approximation.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from typing import Any, Final

__all__ = [
    "PERCENTILES",
    "LatencyRecord",
    "bucket_response_time",
    "format_ms",
    "percentile",
    "summarize",
]

# The percentiles every report shows.
PERCENTILES: Final = (50, 95, 99)

# Three significant digits: fine enough to tell 41 µs from 45 µs, coarse
# enough that locust's per-key dict (shipped between distributed nodes) stays
# at a few thousand keys.
_SIGNIFICANT_DIGITS: Final = 3


def bucket_response_time(response_time: float) -> float:
    """Round a response time (ms) to 3 significant digits, keeping sub-ms values."""
    if response_time <= 0:
        return 0.0
    digits = _SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(response_time))
    return round(response_time, digits)


def percentile(sorted_values: Sequence[int], pct: float) -> int:
    """Nearest-rank percentile of an ascending sequence (0 for an empty one)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(samples_ns: Iterable[int]) -> dict[str, Any]:
    """Count, mean, min, max and percentiles of nanosecond samples, in ms (floats)."""
    ordered = sorted(samples_ns)
    if not ordered:
        return {"count": 0}
    out: dict[str, Any] = {
        "count": len(ordered),
        "mean_ms": sum(ordered) / len(ordered) / 1e6,
        "min_ms": ordered[0] / 1e6,
        "max_ms": ordered[-1] / 1e6,
    }
    for pct in PERCENTILES:
        out[f"p{pct}_ms"] = percentile(ordered, pct) / 1e6
    return out


class LatencyRecord:
    """Samples of one measured window: round trip, check-out wait, errors.

    ``add()`` is cheap (two array appends); ``drain()`` hands out what was
    recorded since the last drain, which is how distributed workers ship
    their samples to the master with each stats report.
    """

    def __init__(self) -> None:
        self.round_trip_ns = array("q")
        self.wait_ns = array("q")
        self.first_message_ns = array("q")  # streaming calls: time to first message
        self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self.recording = False

    def add(
        self, round_trip_ns: int, wait_ns: int = 0, first_message_ns: int | None = None
    ) -> None:
        if not self.recording:
            return
        self.round_trip_ns.append(round_trip_ns)
        self.wait_ns.append(wait_ns)
        if first_message_ns is not None:
            self.first_message_ns.append(first_message_ns)

    def add_error(self, kind: str) -> None:
        if not self.recording:
            return
        self.errors += 1
        # Keep the message short and bounded so a flood of distinct texts
        # cannot grow the dict without limit.
        key = kind[:160]
        if key in self.error_kinds or len(self.error_kinds) < 50:
            self.error_kinds[key] = self.error_kinds.get(key, 0) + 1

    def drain(self) -> dict[str, Any]:
        """Everything since the last drain, as plain lists (JSON/msgpack friendly)."""
        out = {
            "round_trip_ns": self.round_trip_ns.tolist(),
            "wait_ns": self.wait_ns.tolist(),
            "first_message_ns": self.first_message_ns.tolist(),
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
        }
        self.round_trip_ns = array("q")
        self.wait_ns = array("q")
        self.first_message_ns = array("q")
        self.errors = 0
        self.error_kinds = {}
        return out

    def merge(self, chunk: dict[str, Any]) -> None:
        """Add a drained chunk (from this or another node)."""
        self.round_trip_ns.extend(chunk.get("round_trip_ns", []))
        self.wait_ns.extend(chunk.get("wait_ns", []))
        self.first_message_ns.extend(chunk.get("first_message_ns", []))
        self.errors += int(chunk.get("errors", 0))
        for kind, count in chunk.get("error_kinds", {}).items():
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + int(count)

    def summary(self, window_s: float) -> dict[str, Any]:
        requests = len(self.round_trip_ns)
        total = requests + self.errors
        return {
            "requests": requests,
            "errors": self.errors,
            "error_ratio": self.errors / total if total else 0.0,
            "error_kinds": dict(self.error_kinds),
            "window_s": window_s,
            "rps": requests / window_s if window_s > 0 else 0.0,
            "round_trip": summarize(self.round_trip_ns),
            "checkout_wait": summarize(self.wait_ns),
            "first_message": summarize(self.first_message_ns),
        }


def format_ms(value_ms: float | None) -> str:
    """Human latency: µs below a millisecond (never "0 ms"), ms above."""
    if value_ms is None or (isinstance(value_ms, float) and math.isnan(value_ms)):
        return "-"
    if value_ms < 1:
        return f"{value_ms * 1000:.0f} µs" if value_ms * 1000 >= 10 else f"{value_ms * 1000:.1f} µs"
    if value_ms < 100:
        return f"{value_ms:.2f} ms"
    return f"{value_ms:.0f} ms"
