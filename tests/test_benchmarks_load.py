"""The load generator's benchmark programs run and print what docs/load.md quotes.

Real runs, kept small: the floor's bare loop for a few thousand requests, and
one run of ``bench_load.py`` over pools 1 and 2 with half-second windows.
Their figures are not judged here (a benchmark reports, it does not gate);
what is checked is that every figure the docs cite is printed, and sane.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("locust") is None:
    pytest.skip("the load extra (locust) is not installed", allow_module_level=True)

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done


@pytest.mark.parametrize("wake", ["low", "system"])
def test_the_generator_floor_prints_both_ways_of_waiting(wake: str) -> None:
    figures = json.loads(
        _run(
            "generator_floor.py", "--requests", "3000", "--json", "--wake-latency", wake, timeout=60
        ).stdout
    )
    assert set(figures) == {"sleep", "poll", "wake_latency_held"}
    for way in ("sleep", "poll"):
        assert figures[way]["rps"] > 0 and figures[way]["us_per_request"] > 0
    assert isinstance(figures["wake_latency_held"], bool)
    if wake == "system":
        assert figures["wake_latency_held"] is False


def test_bench_load_prints_the_scaling_table_and_the_floor_ratios() -> None:
    out = _run(
        "bench_load.py", "--runs", "1", "--pools", "1,2", "--processes", "2", "--duration", "0.5",
        timeout=300,
    ).stdout  # fmt: skip
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("pool "))
    assert "req/s, 1 process" in header and "req/s, 2 processes" in header
    assert "gen µs/req, 1" in header and "bound, 2" in header
    rows = [line.split() for line in lines if re.match(r"^[12] +(raw echo|bridge) ", line)]
    assert [(row[0], row[1]) for row in rows] == [
        ("1", "raw"), ("1", "bridge"), ("2", "raw"), ("2", "bridge"),
    ]  # fmt: skip
    held = re.search(r"idle CPUs held to low wake-up latency at (\d+) of (\d+) points", out)
    assert held is not None and held.group(2) == "8"  # 4 points, with 1 and with 2 processes
    assert re.search(r"generator floor .*: [\d.]+ µs per request sleeping", out)
    for processes in (1, 2):
        assert re.search(
            rf"pool-1 raw baseline, {processes} generator process\(es\): [\d.]+ µs per request "
            r"= [\d.]+x the polling floor",
            out,
        ), out
