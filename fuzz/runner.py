"""Run fuzz properties and state machines with hypothesis against one bridge, within a budget.

:func:`run_property` drives one property (or state machine): hypothesis
generates and shrinks inputs, the property exchanges frames with a long-lived
bridge (a fresh one after every crash or hang; a fresh one per run for the
machines), and the minimal failing input comes back as a
:class:`~.properties.PropertyFailed`, ready to be written as a regression.
:class:`FuzzSession` runs every property of a profile in turn, shares the time
budget, writes regression files and reports; the CLI and the pytest tests both
use it.

Budgets.  ``max_examples`` bounds the search; ``max_time`` bounds its wall
time: once spent, the run stops before the next example.  Shrinking a failure
is bounded too (:data:`~.defaults.SHRINK_BUDGET`); when it runs out, the
smallest failure reached so far is the result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.control import current_build_context
from hypothesis.errors import HypothesisException, Unsatisfiable
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from ..errors import HarnessError
from .bridge_service import (
    BridgeServiceCalls,
    BridgeServiceTarget,
    bind_bridge_service_machine,
    write_steps,
)
from .defaults import DEFAULT_MAX_EXAMPLES, DEFAULT_RESPONSE_TIMEOUT, SHRINK_BUDGET
from .grpc_machine import GrpcSessions, GrpcTarget, bind_grpc_machine
from .machines import MACHINES, STEPS_PER_RUN, bind_machine
from .properties import PROPERTIES, FoundFailure, FuzzContext, Property, PropertyFailed
from .regression import write_grpc_transcript, write_regression
from .target import StdioTarget

__all__ = [
    "FuzzSession",
    "PropertyOutcome",
    "machine_properties",
    "run_property",
]

# Set when the user asks the run to stop (SIGINT/SIGTERM, see the CLI): every
# later example raises KeyboardInterrupt at once.
STOP: Final = threading.Event()

# A state machine run is up to STEPS_PER_RUN exchanges; a quarter of the runs buys
# more exchanges than a property's examples.
MACHINE_EXAMPLES_DIVISOR: Final = 4

# Even a tightly time-boxed run spends this long shrinking a failure: a few
# dozen attempts turn a random input into a readable one.
MIN_SHRINK_BUDGET: Final = 5.0


@dataclass
class PropertyOutcome:
    """How one property fared."""

    prop: Property
    examples: int = 0
    elapsed: float = 0.0
    failure: PropertyFailed | None = None
    flaky: bool = False  # the failure did not reproduce when hypothesis replayed it
    error: str | None = None  # the harness could not run the property
    regression: Path | None = None
    notes: list[str] = field(default_factory=list)
    examples_to_failure: int = 0  # examples run until the first failure (shrinking excluded)
    seconds_to_failure: float = 0.0

    @property
    def passed(self) -> bool:
        return self.failure is None and self.error is None

    def summary(self) -> str:
        verdict = "PASS" if self.passed else ("ERROR" if self.error else "FAIL")
        return (
            f"{verdict:5} {self.prop.name:18} {self.examples:6} examples "
            f"{self.elapsed:6.1f} s  {self.prop.statement}"
        )

    def details(self) -> list[str]:
        lines = list(self.notes)
        if self.error:
            lines.append(self.error)
        if self.failure is not None:
            lines.append(
                f"first failure after {self.examples_to_failure} examples "
                f"({self.seconds_to_failure:.1f} s); the shrunk input:"
            )
            lines += self.failure.problems
            if self.flaky:
                lines.append("(hypothesis could not reproduce this failure: flaky)")
            if self.failure.history_dependent:
                lines.append("(only after earlier traffic: a fresh bridge passed this input)")
            lines += [f"frame: {step.label}" for step in self.failure.steps[:12]]
            tail = self.failure.exchange.stderr_tail.decode("utf-8", "replace").strip()
            if tail:
                lines.append("bridge stderr (tail): " + tail[-600:].replace("\n", "\n      "))
        if self.regression is not None:
            lines.append(f"regression written: {self.regression} (explained in .md beside it)")
        return lines


@dataclass
class _RunState:
    search_deadline: float
    shrink_budget: float
    first_failure_at: float | None = None
    last_failure: PropertyFailed | None = None
    examples: int = 0
    examples_to_failure: int = 0
    # Set when guard() stopped the run: hypothesis may then report its own
    # error instead of letting _BudgetSpent through (see run_property).
    budget_spent: bool = False

    def guard(self) -> None:
        """End the run once the search or the shrinking has spent its time, or on a stop."""
        if STOP.is_set():
            # Raised again here in case the first KeyboardInterrupt was swallowed
            # somewhere on its way out (a signal can land anywhere).
            raise KeyboardInterrupt
        now = time.monotonic()
        if self.first_failure_at is None and now > self.search_deadline:
            self.budget_spent = True
            raise _BudgetSpent
        if self.first_failure_at is not None and now > self.first_failure_at + self.shrink_budget:
            self.budget_spent = True
            raise _BudgetSpent

    def record(self, failure: PropertyFailed) -> None:
        if self.first_failure_at is None:
            self.first_failure_at = time.monotonic()
            self.examples_to_failure = self.examples
        self.last_failure = failure


class _BudgetSpent(BaseException):
    """Raised through hypothesis (not an Exception, so not a test failure) to stop a run.

    Rejecting examples instead would confuse hypothesis' replay of known
    prefixes (FlakyStrategyDefinition); stopping outright keeps the best
    failure seen so far, which is what shrinking had reached.
    """


def _note_budget_spent(outcome: PropertyOutcome, state: _RunState, shrink_budget: float) -> None:
    """The run was stopped by the time budget: keep the best failure, or say so."""
    if state.last_failure is not None:
        outcome.failure = state.last_failure
        outcome.notes.append(f"shrinking stopped after {shrink_budget:g} s")
    else:
        outcome.notes.append("stopped at the time budget")


def _is_final_replay() -> bool:
    try:
        return bool(getattr(current_build_context(), "is_final", False))
    except HypothesisException:
        return False


def _machine_body(name: str, doc: str | None) -> Callable[[FuzzContext, st.DataObject], None]:
    def body(context: FuzzContext, data: st.DataObject) -> None:  # pragma: no cover
        raise HarnessError(f"{name} is a state machine; run it with run_property")

    body.__doc__ = doc
    return body


@dataclass(frozen=True)
class TransportMachine:
    """A profile fuzzed by one state machine over a transport of its own (not stdio frames)."""

    name: str  # the property's name
    section: str
    machine: type[RuleBasedStateMachine]  # its docstring is the statement
    target: Callable[..., Any]  # (argv, response_timeout=...) -> the target
    bind: Callable[[Any, Callable[[], None], Callable[[PropertyFailed], None]], Any]
    save: Callable[[FoundFailure, Path], Path]  # writes a failure, as write_regression does


TRANSPORT_MACHINES: Final = {
    "grpc": TransportMachine(
        "grpc-sessions", "8", GrpcSessions, GrpcTarget, bind_grpc_machine, write_grpc_transcript
    ),
    "bridge-service": TransportMachine(
        "bridge-service-calls",
        "9",
        BridgeServiceCalls,
        BridgeServiceTarget,
        bind_bridge_service_machine,
        write_steps,
    ),
}


def machine_properties(profile: str) -> list[Property]:
    """The state machines that apply to ``profile``, as properties (name, statement, section)."""
    found = [
        Property(name, _machine_body(name, machine.__doc__), section, profiles)
        for name, (machine, profiles, section) in MACHINES.items()
        if profile in profiles
    ]
    own = TRANSPORT_MACHINES.get(profile)
    if own is not None:
        body = _machine_body(own.name, own.machine.__doc__)
        found.append(Property(own.name, body, own.section, frozenset({profile})))
    return found


def _machine_examples(max_examples: int | None) -> int | None:
    return None if max_examples is None else max(1, max_examples // MACHINE_EXAMPLES_DIVISOR)


def _settings(base: settings | None, max_examples: int | None) -> settings:
    parent = base if base is not None else settings()
    return settings(
        parent,
        max_examples=max_examples if max_examples is not None else parent.max_examples,
        deadline=None,  # the transport's deadlines catch hangs; timing varies with load
        database=None if base is None else parent.database,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
        phases=[p for p in parent.phases if p is not Phase.explain],
        stateful_step_count=min(parent.stateful_step_count, STEPS_PER_RUN),
    )


def run_property(
    prop: Property,
    target: StdioTarget | GrpcTarget | BridgeServiceTarget,
    profile: str,
    *,
    seed: int,
    max_examples: int | None = DEFAULT_MAX_EXAMPLES,
    max_time: float | None = None,
    shrink_budget: float = SHRINK_BUDGET,
    base_settings: settings | None = None,
) -> PropertyOutcome:
    """Search for an input that breaks ``prop``; return the (shrunk) failure or a pass.

    ``base_settings`` (e.g. a pytest hypothesis profile) supplies defaults;
    ``max_examples`` overrides its count when given.
    """
    started = time.monotonic()
    if max_time is not None:
        # A time-boxed run shrinks within its box too (but always a little).
        shrink_budget = min(shrink_budget, max(max_time, MIN_SHRINK_BUDGET))
    state = _RunState(
        search_deadline=started + max_time if max_time else float("inf"),
        shrink_budget=shrink_budget,
    )
    outcome = PropertyOutcome(prop)
    run: Callable[[], None]
    if profile in TRANSPORT_MACHINES:
        config = _settings(base_settings, _machine_examples(max_examples))

        def guard_own() -> None:
            state.guard()
            state.examples += 1

        bound = TRANSPORT_MACHINES[profile].bind(target, guard_own, state.record)
        own_machine = hypothesis_seed(seed)(bound)

        def run_own() -> None:
            run_state_machine_as_test(own_machine, settings=config)

        run = run_own
    elif prop.name in MACHINES:
        examples = (
            None if max_examples is None else max(1, max_examples // MACHINE_EXAMPLES_DIVISOR)
        )
        config = _settings(base_settings, examples)

        def guard() -> None:
            state.guard()
            state.examples += 1

        assert isinstance(target, StdioTarget)
        machine = hypothesis_seed(seed)(
            bind_machine(MACHINES[prop.name][0], target, profile, guard, state.record)
        )

        def run_machine() -> None:
            run_state_machine_as_test(machine, settings=config)

        run = run_machine
    else:
        assert isinstance(target, StdioTarget)
        context = FuzzContext(target, profile)

        def body(data: st.DataObject) -> None:
            state.guard()
            context.retry_fresh = state.first_failure_at is None or _is_final_replay()
            try:
                prop.body(context, data)
            except PropertyFailed as exc:
                state.examples += 1
                state.record(exc)
                raise
            # Counted once the bridge was exercised: hypothesis also makes calls
            # that end while drawing (an input too large to build), not examples.
            state.examples += 1

        config = _settings(base_settings, max_examples)
        run = hypothesis_seed(seed)(config(given(st.data())(body)))
    try:
        run()
    except PropertyFailed as exc:
        outcome.failure = exc
    except _BudgetSpent:
        _note_budget_spent(outcome, state, shrink_budget)
    except Unsatisfiable:
        outcome.notes.append("the time budget ran out before any example ran")
    except HypothesisException as exc:
        if state.budget_spent:
            # Measured with hypothesis 6.170: an example stopped by the guard
            # before its first draw ends "earlier than" every example before it
            # with the same (empty) prefix, and hypothesis reports that as
            # inconsistent data generation instead of passing _BudgetSpent on.
            # We stopped it; it is the budget, not the bridge or the strategies.
            _note_budget_spent(outcome, state, shrink_budget)
        # Flaky: the failure did not repeat on replay (a bridge whose answers
        # depend on timing or on earlier traffic).  Report the last one seen.
        elif state.last_failure is None:
            outcome.error = f"hypothesis: {exc}"
        else:
            outcome.failure = state.last_failure
            outcome.flaky = True
    except BaseExceptionGroup as group:
        failures = [e for e in group.exceptions if isinstance(e, PropertyFailed)]
        if not failures and state.last_failure is None:
            raise
        outcome.failure = failures[-1] if failures else state.last_failure
        outcome.flaky = True
    finally:
        outcome.examples = state.examples
        outcome.elapsed = time.monotonic() - started
    if state.first_failure_at is not None:
        outcome.examples_to_failure = state.examples_to_failure
        outcome.seconds_to_failure = state.first_failure_at - started
    return outcome


class FuzzSession:
    """Every property (and machine) of a profile against one bridge command line."""

    def __init__(
        self,
        *,
        profile: str,
        codec_mode: str,
        argv: Sequence[str],
        seed: int,
        max_examples: int | None = DEFAULT_MAX_EXAMPLES,
        max_time: float | None = None,
        response_timeout: float = DEFAULT_RESPONSE_TIMEOUT,
        save_failures: Path | None = None,
        only: Sequence[str] = (),
        base_settings: settings | None = None,
        shrink_budget: float = SHRINK_BUDGET,
        on_note: Callable[[str], None] | None = None,
    ) -> None:
        self.profile = profile
        # The mode asked for; after start-up, the codec the bridge really speaks
        # when that is another (see StdioTarget.check_codec), so that every
        # property and every regression file uses it.
        self.codec_mode = codec_mode
        self.notes: list[str] = []  # what start-up noticed and worked around
        self._on_note = on_note
        self._codec_checked = False
        self.argv = list(argv)
        self.seed = seed
        self.max_examples = max_examples
        self.max_time = max_time
        self.response_timeout = response_timeout
        self.save_failures = save_failures
        self.base_settings = base_settings
        self.shrink_budget = shrink_budget
        self.properties = self._select(only)

    def _select(self, only: Sequence[str]) -> list[Property]:
        chosen = [p for p in PROPERTIES if self.profile in p.profiles]
        chosen += machine_properties(self.profile)
        if only:
            known = {p.name for p in chosen}
            unknown = [name for name in only if name not in known]
            if unknown:
                raise HarnessError(
                    f"no property {', '.join(unknown)} for profile {self.profile}; "
                    f"known: {', '.join(sorted(known))}"
                )
            chosen = [p for p in chosen if p.name in only]
        if not chosen:
            raise HarnessError(f"no fuzz properties for profile {self.profile} yet")
        return chosen

    def _check_codec(self, target: StdioTarget) -> None:
        """Once per run: does the bridge speak the codec asked for?  Adopt its own if not."""
        self._codec_checked = True
        target.check_codec()
        if target.codec_mode != self.codec_mode and self.profile == "v1":
            # No other codec to go on in: stop before a property runs.
            raise HarnessError(
                f"the v1 profile speaks JSON only (PROTOCOL.md, profiles), but the bridge "
                f"answers a JSON request in {target.codec_mode}: start it in JSON mode (without "
                f"--protocol {target.codec_mode}) to fuzz it as v1, or fuzz it with --profile "
                f"v2 --codec {target.codec_mode}"
            )
        self.codec_mode = target.codec_mode
        for note in target.notes:
            self.notes.append(note)
            if self._on_note is not None:
                self._on_note(note)

    def run(self) -> Iterator[PropertyOutcome]:
        """Run each property in turn (the time budget is shared), yielding its outcome."""
        started = time.monotonic()
        for index, prop in enumerate(self.properties):
            if STOP.is_set():
                raise KeyboardInterrupt
            share = None
            if self.max_time is not None:
                left = self.max_time - (time.monotonic() - started)
                share = max(left / (len(self.properties) - index), 0.001)
            target: StdioTarget | GrpcTarget | BridgeServiceTarget
            own = TRANSPORT_MACHINES.get(self.profile)
            if own is not None:
                target = own.target(self.argv, response_timeout=self.response_timeout)
            else:
                target = StdioTarget(
                    self.argv, self.codec_mode, response_timeout=self.response_timeout
                )
            with target:
                if isinstance(target, StdioTarget) and not self._codec_checked:
                    self._check_codec(target)
                target.ensure()  # a bridge that cannot start is an error, not a failure
                outcome = run_property(
                    prop,
                    target,
                    self.profile,
                    seed=self.seed,
                    max_examples=self.max_examples,
                    max_time=share,
                    shrink_budget=self.shrink_budget,
                    base_settings=self.base_settings,
                )
            if outcome.failure is not None and self.save_failures is not None:
                own = TRANSPORT_MACHINES.get(self.profile)
                save = own.save if own is not None else write_regression
                found = FoundFailure(
                    outcome.failure,
                    prop,
                    self.profile,
                    self.codec_mode,
                    seed=self.seed,
                    bridge_argv=self.argv,
                    timeout=self.response_timeout,
                )
                outcome.regression = save(found, self.save_failures)
            yield outcome
