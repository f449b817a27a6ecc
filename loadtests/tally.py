"""Successful requests added to locust's own statistics in bulk, not one event per request.

Locust's per-request path (the ``request`` event, then two ``StatsEntry.log``
calls that each bucket the response time) cost about 5 µs of generator CPU
per request, a quarter of the stdio user's hot path on this machine.  What
locust keeps is a cross-check and its own summary (the report is built from
our nanosecond record), so a user tallies its successful requests and adds
them to locust's statistics after every batch, in the form in which locust's
workers ship statistics to their master (``StatsEntry.unserialize`` then
``extend``): the merge locust itself does in distributed mode.  Failures go
through the ``request`` event one by one (rare, and their messages matter).

Imported inside locust processes only.
"""

from __future__ import annotations

import time
from typing import Any

from locust.stats import StatsEntry

from .hires import bucket_response_time

__all__ = ["LocustTally"]

_NS_PER_MS = 1e6


class LocustTally:
    """Response times of one request name, waiting to be added to locust's statistics."""

    def __init__(self, method: str, name: str) -> None:
        self.method = method
        self.name = name
        self._times_ns: list[int] = []
        self._length = 0
        self._began = 0.0

    def add(self, response_ns: int, length: int) -> None:
        if not self._times_ns:
            self._began = time.time()
        self._times_ns.append(response_ns)
        self._length += length

    def flush(self, environment: Any) -> None:
        """Add what was tallied to ``environment.stats`` (its entry and the total)."""
        times = self._times_ns
        if not times:
            return
        buckets: dict[float, int] = {}
        for response_ns in times:
            key = bucket_response_time(response_ns / _NS_PER_MS)
            buckets[key] = buckets.get(key, 0) + 1
        now = time.time()
        stats = environment.stats
        # Floats where locust's types say int: our response times keep their
        # sub-millisecond part, as the replaced bucket_response_time does.
        document: Any = {
            "name": self.name,
            "method": self.method,
            "last_request_timestamp": now,
            "start_time": self._began,
            "num_requests": len(times),
            "num_none_requests": 0,
            "num_failures": 0,
            "total_response_time": sum(times) / _NS_PER_MS,
            "max_response_time": max(times) / _NS_PER_MS,
            "min_response_time": min(times) / _NS_PER_MS,
            "total_content_length": self._length,
            "response_times": buckets,
            "num_reqs_per_sec": {int(now): len(times)},
            "num_fail_per_sec": {},
        }
        batch = StatsEntry.unserialize(document, stats)
        stats.get(self.name, self.method).extend(batch)
        stats.total.extend(batch)
        self._times_ns = []
        self._length = 0
