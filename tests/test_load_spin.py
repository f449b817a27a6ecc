"""The generator's wait policy (loadtests/spin.py) and how polling is counted in the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from snakepit_harness.loadtests.render import write_csv
from snakepit_harness.loadtests.report import Gates, build_report
from snakepit_harness.loadtests.spin import SpinPolicy

from .test_load_units import _result


class ChargedClock:
    """A CPU clock that each request advances by what its way of waiting costs."""

    def __init__(self, poll_ns: int, sleep_ns: int) -> None:
        self.cost = {True: poll_ns, False: sleep_ns}
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def _send(policy: SpinPolicy, clock: ChargedClock, requests: int) -> list[bool]:
    """Ask the policy before each request, charge the clock; return which ones polled."""
    polled = []
    for _ in range(requests):
        window = policy.next_window_ns()
        polled.append(window > 0)
        clock.now += clock.cost[window > 0]
    return polled


def test_the_policy_tries_both_ways_then_keeps_the_cheaper() -> None:
    clock = ChargedClock(poll_ns=5_000, sleep_ns=30_000)
    policy = SpinPolicy(20_000, trial=4, rest=10, clock=clock)
    polled = _send(policy, clock, 4 + 4 + 10)
    assert polled == [True] * 4 + [False] * 4 + [True] * 10
    assert policy.choices == [True]
    assert (policy.poll_cost_ns, policy.sleep_cost_ns) == (5_000, 30_000)


def test_a_slow_answer_makes_the_policy_sleep_and_it_measures_again_after_its_rest() -> None:
    clock = ChargedClock(poll_ns=45_000, sleep_ns=30_000)
    policy = SpinPolicy(20_000, trial=4, rest=10, clock=clock)
    first = _send(policy, clock, 18)
    assert first == [True] * 4 + [False] * 4 + [False] * 10
    # The machine changes (the worker now runs hot on another CPU): the next
    # pair of trials finds polling cheaper and the policy follows.
    clock.cost = {True: 4_000, False: 40_000}
    second = _send(policy, clock, 18)
    assert second == [True] * 4 + [False] * 4 + [True] * 10
    assert policy.choices == [False, True]


def test_the_policy_keeps_its_way_when_the_other_is_barely_cheaper() -> None:
    # Polling 5% cheaper than sleeping: not worth a second latency mode.
    clock = ChargedClock(poll_ns=28_500, sleep_ns=30_000)
    policy = SpinPolicy(20_000, trial=4, rest=10, clock=clock)
    assert _send(policy, clock, 18)[8:] == [False] * 10
    # Once polling (clearly cheaper), a sleep trial 5% cheaper does not bring it back.
    clock.cost = {True: 10_000, False: 40_000}
    assert _send(policy, clock, 18)[8:] == [True] * 10
    clock.cost = {True: 31_000, False: 29_500}
    assert _send(policy, clock, 18)[8:] == [True] * 10
    assert policy.choices == [False, True, True]


def test_polls_are_counted_with_the_time_they_took() -> None:
    policy = SpinPolicy()
    policy.heard(True, 3_000)
    policy.heard(False, 20_000)
    assert (policy.polls, policy.hits, policy.polled_ns) == (2, 1, 23_000)


def _polling(result: dict[str, Any], cpu_pct: float, busy_pct: float) -> dict[str, Any]:
    return dict(
        result,
        loadgen_cpu_pct=cpu_pct,
        loadgen_cpu_pct_per_node=[cpu_pct, 1.0],
        loadgen_busy_pct_per_node=[busy_pct, 1.0],
        answers_polled_share=0.9,
    )


def test_cpu_spent_polling_does_not_make_a_point_generator_bound(tmp_path: Path) -> None:
    results = [
        # 95% of a CPU, but 70 points of it polling for answers: not the limit.
        _polling(_result("bridge", 1, "msgpack", "small", 30_000, 0.03), 95.0, 25.0),
        # Busy with work, polling or not: the limit.
        _polling(_result("bridge", 2, "msgpack", "small", 50_000, 0.03), 95.0, 90.0),
    ]
    report = build_report(results, Gates(), {"sample_interval_s": 0})
    rows = report["rows"]
    assert [r["generator_bound"] for r in rows] == [False, True]
    assert [r["answers_polled_share"] for r in rows] == [0.9, 0.9]
    assert report["recommendation"]["refused"]["small"]["bound_at"] == ["pool 2 msgpack"]
    write_csv(report, tmp_path)
    header, first, _ = (tmp_path / "points.csv").read_text().splitlines()
    values = dict(zip(header.split(","), first.split(","), strict=True))
    assert values["answers_polled_share"] == "0.9"
