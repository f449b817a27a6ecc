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
import random
import sys
from array import array
from collections.abc import Iterable, Sequence
from typing import Any, Final

__all__ = [
    "MAX_SAMPLES",
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


class _Reservoir:
    """Samples kept exactly up to ``limit``; beyond it, a uniform random sample.

    A soak at 10,000 requests/s for an hour makes 36 million samples; keeping
    them all would cost gigabytes.  Past ``limit`` each new sample replaces a
    random kept one with probability limit/seen (Vitter's algorithm R), so the
    percentiles stay unbiased estimates while ``seen`` stays an exact count.
    Paired series (round trip and wait of one request) share the index.
    """

    def __init__(self, limit: int, width: int, seed: int) -> None:
        self.limit = limit
        self.series = [array("q") for _ in range(width)]
        self.seen = 0
        self._rng = random.Random(seed)

    def add(self, *values: int) -> None:
        self.seen += 1
        if len(self.series[0]) < self.limit:
            for column, value in zip(self.series, values, strict=True):
                column.append(value)
            return
        self._replace(values)

    def add_pair(self, first: int, second: int) -> None:
        """:meth:`add` for two series, without the loop (a load user calls it per request)."""
        self.seen += 1
        columns = self.series
        if len(columns[0]) < self.limit:
            columns[0].append(first)
            columns[1].append(second)
        else:
            self._replace((first, second))

    def _replace(self, values: tuple[int, ...]) -> None:
        slot = self._rng.randrange(self.seen)
        if slot < self.limit:
            for column, value in zip(self.series, values, strict=True):
                column[slot] = value

    def extend(self, columns: list[array[int]], seen: int) -> None:
        """Add whole series at once (a drained chunk); ``seen`` may exceed their length."""
        kept = len(columns[0])
        if len(self.series[0]) + kept <= self.limit:
            for mine, theirs in zip(self.series, columns, strict=True):
                mine.extend(theirs)
            self.seen += seen
            return
        for values in zip(*columns, strict=True):
            self.add(*values)
        self.seen += seen - kept

    def take(self) -> tuple[list[array[int]], int]:
        """The kept samples and the exact count, then start afresh."""
        out = self.series, self.seen
        self.series = [array("q") for _ in self.series]
        self.seen = 0
        return out


# Samples kept exactly per series (3 series x 8 bytes x 2M = 48 MB at most).
MAX_SAMPLES: Final = 2_000_000
_SEED: Final = 0x5EED  # fixed: a run's reservoir is reproducible


class LatencyRecord:
    """Samples of one measured window: round trip, check-out wait, errors.

    ``add()`` is cheap (array appends); ``drain()`` hands out what was
    recorded since the last drain, which is how distributed workers ship
    their samples to the master with each stats report.  Percentiles are
    exact up to ``max_samples`` requests, then estimated from a uniform
    sample (see :class:`_Reservoir`); counts are always exact.
    """

    def __init__(self, max_samples: int = MAX_SAMPLES) -> None:
        self._trips = _Reservoir(max_samples, 2, _SEED)  # round trip, check-out wait
        self._firsts = _Reservoir(max_samples, 1, _SEED + 1)  # streams: first message
        self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self.recording = False

    @property
    def round_trip_ns(self) -> array[int]:
        return self._trips.series[0]

    @property
    def wait_ns(self) -> array[int]:
        return self._trips.series[1]

    @property
    def first_message_ns(self) -> array[int]:
        return self._firsts.series[0]

    @property
    def requests(self) -> int:
        return self._trips.seen

    def add(
        self, round_trip_ns: int, wait_ns: int = 0, first_message_ns: int | None = None
    ) -> None:
        if not self.recording:
            return
        self._trips.add_pair(round_trip_ns, wait_ns)
        if first_message_ns is not None:
            self._firsts.add(first_message_ns)

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
        """Everything since the last drain, msgpack friendly.

        Samples travel as the bytes of their arrays (``byteorder`` says how to
        read them): a distributed worker ships them with every stats report,
        and packing and merging a hundred thousand ints one by one cost the
        load generator a microsecond per request.
        """
        (trips, waits), seen = self._trips.take()
        (firsts,), first_seen = self._firsts.take()
        out = {
            "byteorder": sys.byteorder,
            "round_trip_ns": trips.tobytes(),
            "wait_ns": waits.tobytes(),
            "first_message_ns": firsts.tobytes(),
            "requests": seen,
            "first_messages": first_seen,
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
        }
        self.errors = 0
        self.error_kinds = {}
        return out

    def merge(self, chunk: dict[str, Any]) -> None:
        """Add a drained chunk (from this or another node)."""
        swap = chunk.get("byteorder", sys.byteorder) != sys.byteorder
        trips, waits, firsts = (
            _samples(chunk.get(key, b""), swap)
            for key in ("round_trip_ns", "wait_ns", "first_message_ns")
        )
        # A chunk that was itself sampled carries its exact counts.
        self._trips.extend([trips, waits], int(chunk.get("requests", len(trips))))
        self._firsts.extend([firsts], int(chunk.get("first_messages", len(firsts))))
        self.errors += int(chunk.get("errors", 0))
        for kind, count in chunk.get("error_kinds", {}).items():
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + int(count)

    def summary(self, window_s: float) -> dict[str, Any]:
        requests = self.requests
        total = requests + self.errors
        return {
            "requests": requests,
            "samples_kept": len(self.round_trip_ns),  # < requests: percentiles estimated
            "errors": self.errors,
            "error_ratio": self.errors / total if total else 0.0,
            "error_kinds": dict(self.error_kinds),
            "window_s": window_s,
            "rps": requests / window_s if window_s > 0 else 0.0,
            "round_trip": summarize(self.round_trip_ns),
            "checkout_wait": summarize(self.wait_ns),
            "first_message": summarize(self.first_message_ns),
        }


def _samples(data: bytes | list[int], swap: bool) -> array[int]:
    """A drained series (array bytes, or a list from an older node) as an array."""
    if isinstance(data, list):
        return array("q", data)
    values = array("q")
    values.frombytes(data)
    if swap:
        values.byteswap()
    return values


def format_ms(value_ms: float | None) -> str:
    """Human latency: µs below a millisecond (never "0 ms"), ms above."""
    if value_ms is None or (isinstance(value_ms, float) and math.isnan(value_ms)):
        return "-"
    if value_ms < 1:
        return f"{value_ms * 1000:.0f} µs" if value_ms * 1000 >= 10 else f"{value_ms * 1000:.1f} µs"
    if value_ms < 100:
        return f"{value_ms:.2f} ms"
    return f"{value_ms:.0f} ms"
