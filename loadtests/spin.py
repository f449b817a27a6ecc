"""Whether a load user polls for its answer before sleeping: measured, not guessed.

While every worker a generator process drives is busy, the process has
nothing to do but wait for an answer.  If it sleeps in the hub at once, every
request costs a sleep and a wake-up on each side; when the worker runs on
another CPU (the kernel's choice whenever a CPU is idle, as at pool 1 on two
cores) that is a cross-CPU wake-up, and on a virtual machine it costs far
more than the request.  Measured here (pool 1, small requests, the raw echo
baseline): 34-41 µs of the generator's CPU per request when it slept, 21-23
µs when it polled the pipe first, and three times the throughput (with the
machine's idle states: a sweep now holds idle CPUs to a low wake-up latency,
see :mod:`snakepit_harness.transports.cpu_wake`, and then polling still wins,
by less: 8.7-9.0 µs a request in all).  Snakepit's
own host does the same: the BEAM's schedulers busy-wait a while before they
sleep (``erl +sbwt``, on by default).

Polling does not always pay: when the answer comes later than the window (a
slow bridge), when the worker shares our CPU and cannot run while we poll, or
when the process is busy with other workers' answers, the window is spent
for nothing.  So the policy measures both: it sends a trial of requests
polling and a trial sleeping, times each trial, and uses the faster way for
the next ``rest`` requests before it measures again (placement and load
change during a run), changing its way only for a clear gain
(``SPIN_SWITCH_MARGIN``).  Time per request in a closed loop is what both
matter to: where the generator is the limit it is the generator's CPU per
request, and where it is not, the wake-up latency it adds to every round
trip.  Pure bookkeeping, no I/O: the workers (:mod:`.gpool`) poll.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Final

__all__ = ["SPIN_WINDOW_NS", "SpinPolicy"]

# How long to poll for an answer.  Here the raw echo's answer came ~20 µs
# after the request when we polled and the reference v2 bridge's ~40 µs (its
# CPU halts between requests on this virtual machine, and waking it is most of
# that); 20 µs caught the echo but not the bridge, 50 µs both (pool 1: the
# bridge's throughput went from 12k to 22-24k req/s).
# Longer only costs more where the answer is late, which the trials catch.
SPIN_WINDOW_NS: Final = 50_000
# Requests in each trial (one polling, one sleeping): a few milliseconds of
# work, long enough that one scheduling hiccup does not decide.
SPIN_TRIAL: Final = 256
# The way in use changes only when the other is faster by this share: where
# the two are about even (a bridge answering near the window's end),
# flipping from cycle to cycle would mix two latency modes in one point's
# figures.  The first choice is against sleeping, the harness's old way.
SPIN_SWITCH_MARGIN: Final = 0.1
# Requests sent the faster way before the next pair of trials; the trials
# then cost the slower way's price on about one request in 18.
SPIN_REST: Final = 4096


class _Phase(enum.Enum):
    """What the policy is doing, in the order the phases cycle."""

    TRIAL_POLLING = "trial-polling"
    TRIAL_SLEEPING = "trial-sleeping"
    USING = "using"  # the faster way, until the next trials


class SpinPolicy:
    """Says how long to poll for the next answer (0: sleep at once), from timed trials."""

    def __init__(
        self,
        window_ns: int = SPIN_WINDOW_NS,
        *,
        trial: int = SPIN_TRIAL,
        rest: int = SPIN_REST,
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self.window_ns = window_ns
        self.trial = trial
        self.rest = rest
        self.clock = clock
        self._phase = _Phase.USING  # with nothing left: the first request starts a trial
        self._left = 0
        self._began = 0
        self.polling = True
        self._chosen = False  # the way in use between trials (True: poll)
        # Nanoseconds per request in the last trials, polling and sleeping.
        self.poll_cost_ns = 0.0
        self.sleep_cost_ns = 0.0
        # Over the whole run, for the point's figures and the tests.
        self.polls = 0
        self.hits = 0
        self.polled_ns = 0
        self.choices: list[bool] = []  # what each pair of trials chose (True: poll)

    def next_window_ns(self) -> int:
        """Nanoseconds to poll for the next answer; 0 means wait in the hub at once."""
        if self._left == 0:
            self._next_phase()
        self._left -= 1
        return self.window_ns if self.polling else 0

    def heard(self, hit: bool, spent_ns: int) -> None:
        """How a poll went: whether it found the answer, and how long it polled.

        Statistics only: the time spent polling is CPU the process would
        have slept through, so the load report does not count it as work
        when it judges whether the generator was the limit.
        """
        self.polls += 1
        self.hits += hit
        self.polled_ns += spent_ns

    def _next_phase(self) -> None:
        now = self.clock()
        if self._phase is _Phase.TRIAL_POLLING:
            self.poll_cost_ns = (now - self._began) / self.trial
            self._phase, self.polling, self._left = _Phase.TRIAL_SLEEPING, False, self.trial
        elif self._phase is _Phase.TRIAL_SLEEPING:
            self.sleep_cost_ns = (now - self._began) / self.trial
            incumbent, challenger = (
                (self.poll_cost_ns, self.sleep_cost_ns)
                if self._chosen
                else (self.sleep_cost_ns, self.poll_cost_ns)
            )
            if challenger < incumbent * (1 - SPIN_SWITCH_MARGIN):
                self._chosen = not self._chosen
            self.polling = self._chosen
            self.choices.append(self.polling)
            self._phase, self._left = _Phase.USING, self.rest
        else:
            self._phase, self.polling, self._left = _Phase.TRIAL_POLLING, True, self.trial
        self._began = now
