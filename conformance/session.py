"""Running cases to verdicts: one case (:func:`run_case`), a suite session, a whole run.

:func:`run_case` asks the transport's driver for a case context, runs the case
body with its deadline, and turns what happened into a verdict: the findings
the case recorded (FAIL / NON-STRICT), or the exception that stopped it (one
table, ``_STOPPED_BY``: TIMEOUT, CRASH, FRAMING, SKIP, ERROR).

A :class:`SuiteSession` holds what lives across cases: the driver, the
baseline and the gate state.  It decides whether a case runs at all
(applicability, a failed gate blocks the others) and applies the baseline
(XFAIL, STALE).  The CLI's :func:`run_suite` and the pytest plugin both run
cases through it, so a case means the same in either.  What each verdict does
(fails the run, poisons the bridge, blocks as a gate, may be baselined) is
``model.VERDICT_MEANINGS``.

Nothing outlives :meth:`SuiteSession.close`; a run can be stopped from another
thread with the ``stop`` event (``check`` runs configurations in parallel),
and :func:`interrupt_all_runs` kills every bridge of every run at once.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Self

from snakepit_harness.errors import (
    BridgeCrashed,
    BridgeTimeout,
    CodecError,
    HandshakeFailed,
    HarnessError,
    LocalProtocolError,
    RemoteProtocolError,
)
from snakepit_harness.protocol import ExitCode, UnencodableValue

from .context import CaseContext, case_deadline
from .drivers import TransportDriver, transport_driver
from .model import (
    Case,
    CaseFailed,
    CaseResult,
    CaseSkipped,
    Finding,
    Grade,
    Level,
    RunSettings,
    Verdict,
)

__all__ = [
    "RunReport",
    "SuiteSession",
    "apply_baseline",
    "belongs",
    "interrupt_all_runs",
    "run_case",
    "run_suite",
]

# What an exception that stopped a case body means: (type, verdict, message
# prefix), most specific first.  CaseFailed (the case's own finding) and
# KeyboardInterrupt are handled apart.
_STOPPED_BY: Final[tuple[tuple[type[BaseException], Verdict, str], ...]] = (
    (CaseSkipped, Verdict.SKIP, ""),
    # Only under --codec negotiate; the negotiation.* cases own this defect.
    (HandshakeFailed, Verdict.SKIP, "blocked: start-up negotiation failed (see negotiation.*): "),
    (BridgeTimeout, Verdict.TIMEOUT, ""),
    (BridgeCrashed, Verdict.CRASH, ""),
    (CodecError, Verdict.FAIL, "a response does not decode: "),
    (RemoteProtocolError, Verdict.FRAMING, ""),
    (UnencodableValue, Verdict.SKIP, "the codec cannot carry this case's request: "),
    (LocalProtocolError, Verdict.ERROR, ""),
    (HarnessError, Verdict.ERROR, ""),
)


def _verdict_from_findings(findings: Iterable[Finding], level: Level) -> Verdict:
    if level is Level.INFO:
        return Verdict.PASS
    grades = {f.grade for f in findings}
    if Grade.FAIL in grades:
        return Verdict.FAIL
    if Grade.NON_STRICT in grades:
        return Verdict.NON_STRICT
    return Verdict.PASS


def _stopped_by(exc: BaseException) -> tuple[Verdict, str]:
    for kind, verdict, prefix in _STOPPED_BY:
        if isinstance(exc, kind):
            return verdict, prefix + str(exc)
    # A bug in a case must not stop the run.
    return (
        Verdict.ERROR,
        f"the case raised {type(exc).__name__}: {exc}\n{traceback.format_exc()}",
    )


def _failed_case(ctx: CaseContext | None, case: Case, exc: CaseFailed) -> tuple[Verdict, str]:
    grade = exc.grade
    if case.level is Level.RECOMMENDED and grade is Grade.FAIL:
        grade = Grade.NON_STRICT
    if ctx is None:
        return Verdict.FAIL, str(exc)
    ctx.findings.append(Finding(grade, str(exc)))
    return _verdict_from_findings(ctx.findings, case.level), ""


def run_case(driver: TransportDriver, case: Case, settings: RunSettings) -> CaseResult:
    """Run one case to a verdict (never raises for anything the bridge does)."""
    result = CaseResult(case.id, case.section, case.level, case.requirement, Verdict.PASS)
    began = time.monotonic()
    timeout = case_deadline(case, settings)
    ctx: CaseContext | None = None
    message = ""
    early_stderr = b""
    try:
        ctx = driver.acquire(case, time.monotonic() + timeout)
        ctx.deadline = time.monotonic() + timeout  # start-up is not the case's time
        case.run(ctx)
        verdict = _verdict_from_findings(ctx.findings, case.level)
    except CaseFailed as exc:
        verdict, message = _failed_case(ctx, case, exc)
    except KeyboardInterrupt:
        if ctx is not None:
            driver.release(ctx, Verdict.ERROR)
        raise
    except Exception as exc:
        verdict, message = _stopped_by(exc)
        early_stderr = getattr(exc, "stderr_tail", b"") or b""
    result.duration = time.monotonic() - began
    result.verdict = verdict
    if ctx is not None:
        _record_context(result, driver, ctx, message)
    else:
        _record_start_failure(result, settings, message, early_stderr)
    return result


def _record_context(
    result: CaseResult, driver: TransportDriver, ctx: CaseContext, message: str
) -> None:
    """What the case's context saw goes into its result; the driver takes the bridge back."""
    verdict = result.verdict
    result.findings = list(ctx.findings)
    if not message and ctx.findings:
        worst = [f for f in ctx.findings if f.grade is Grade.FAIL] or ctx.findings
        message = worst[0].message
    result.message = message
    result.observed = list(ctx.observed) + [f"note: {n}" for n in ctx.notes]
    result.sent_hex = bytes(ctx.sent).hex()
    result.sent_total = ctx.sent_total
    went_wrong = verdict not in (Verdict.PASS, Verdict.SKIP)
    if went_wrong:
        if verdict is Verdict.FRAMING:
            garbage = driver.unread_stdout(ctx)
            result.observed.append(f"unread stdout bytes (hex): {garbage.hex() or '(none)'}")
            if garbage:
                result.observed.append(f"as text: {garbage.decode('utf-8', 'replace')!r}")
        result.reproduction = driver.reproduction(ctx)
    driver.release(ctx, verdict)
    # The tail is read after release: a killed bridge's stderr is complete.
    if went_wrong:
        result.stderr_tail = driver.stderr_tail(ctx).decode("utf-8", "replace")


def _record_start_failure(
    result: CaseResult, settings: RunSettings, message: str, stderr_tail: bytes
) -> None:
    """Start-up (acquire) failed: no context, but the transport error carries the
    stderr tail, and the case can still be replayed."""
    if result.verdict not in (Verdict.PASS, Verdict.SKIP):
        result.stderr_tail = stderr_tail.decode("utf-8", "replace")
        where = (
            f"-- {shlex.join(settings.bridge_cmd)}"
            if settings.bridge_cmd
            else f"--transport {settings.transport} --target {settings.target}"
        )
        result.reproduction = [
            f"snakepit-harness replay {result.case_id} --profile {settings.profile} "
            f"--codec {settings.codec} {where}"
        ]
        message += " (while starting the bridge for this case)"
    result.message = message


def apply_baseline(result: CaseResult, reason: str) -> None:
    """A listed case: a failure becomes XFAIL, a pass becomes STALE."""
    result.baseline_reason = reason
    if result.verdict is Verdict.PASS:
        result.verdict = Verdict.STALE
        result.message = f"listed in the baseline ({reason}) but passes now: remove the entry"
    elif result.verdict.meaning.baselinable:
        result.message = f"expected failure ({reason}): {result.message}"
        result.verdict = Verdict.XFAIL


def belongs(case: Case, settings: RunSettings) -> bool:
    """Is ``case`` part of a run with ``settings`` at all (its profile and transport)?

    Cases of other profiles are not even SKIPs: a v1 report does not list
    forty gRPC cases.
    """
    return settings.profile in case.profiles and case.transport == settings.transport


# Sessions in progress, so an interrupt can kill every bridge of every run at
# once (check runs several configurations in threads).
_ACTIVE: set[SuiteSession] = set()
_ACTIVE_LOCK = threading.Lock()


def interrupt_all_runs() -> None:
    """Stop every run in progress and kill all their bridges (Ctrl-C, SIGTERM)."""
    with _ACTIVE_LOCK:
        sessions = list(_ACTIVE)
    for session in sessions:
        session.driver.stop.set()
        with contextlib.suppress(Exception):
            session.driver.close()


class SuiteSession:
    """One run's driver, baseline and gates; decides whether and how each case counts.

    Use as a context manager; :meth:`run` gives every case its result (SKIP
    with the reason when it does not apply or a gate failed).
    """

    def __init__(
        self,
        settings: RunSettings,
        *,
        baseline: dict[str, str] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.baseline = baseline or {}
        self.driver = transport_driver(settings.transport)(settings, stop)
        self.blocked_by: str | None = None
        with _ACTIVE_LOCK:
            _ACTIVE.add(self)

    def belongs(self, case: Case) -> bool:
        return belongs(case, self.settings)

    def skip_reason(self, case: Case) -> str | None:
        """Why ``case`` does not run now (None: it runs)."""
        s = self.settings
        reason = case.applies_to(s.profile, s.codec, s.transport)
        if reason is None and self.blocked_by is not None and not case.gate:
            reason = f"blocked: gate case {self.blocked_by} failed (fix it first)"
        return reason

    def run(self, case: Case) -> CaseResult:
        """``case``'s result, the gate and the baseline applied."""
        if self.driver.stop.is_set():
            raise KeyboardInterrupt
        reason = self.skip_reason(case)
        if reason is not None:
            return CaseResult(
                case.id, case.section, case.level, case.requirement, Verdict.SKIP, message=reason
            )
        result = run_case(self.driver, case, self.settings)
        if case.gate and result.verdict.meaning.blocks_as_gate:
            self.blocked_by = self.blocked_by or case.id
        if case.id in self.baseline:
            apply_baseline(result, self.baseline[case.id])
        return result

    def stale_entries(self, known_ids: Iterable[str]) -> list[CaseResult]:
        """STALE results for baseline entries naming no case (none if ``known_ids`` is empty)."""
        known = set(known_ids)
        if not known:
            return []
        return [
            CaseResult(
                case_id,
                "",
                Level.REQUIRED,
                "(baseline entry)",
                Verdict.STALE,
                message=f"the baseline lists {case_id!r} ({reason}) but no such case exists",
                baseline_reason=reason,
            )
            for case_id, reason in self.baseline.items()
            if case_id not in known
        ]

    def close(self) -> None:
        self.driver.close()
        with _ACTIVE_LOCK:
            _ACTIVE.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass
class RunReport:
    """Every result of one run, plus what the reports need to know about it."""

    settings: RunSettings
    results: list[CaseResult] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    duration: float = 0.0
    negotiated: str | None = None
    baseline_path: str | None = None
    interrupted: bool = False

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for result in self.results:
            out[str(result.verdict)] = out.get(str(result.verdict), 0) + 1
        return out

    def failures(self) -> list[CaseResult]:
        return [r for r in self.results if r.failed(self.settings.strict)]

    def exit_code(self) -> int:
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if not self.results:
            return ExitCode.ERROR  # zero cases selected: the harness did not do its job
        if self.failures():
            return ExitCode.FAILED
        if any(r.verdict.meaning.harness_error for r in self.results):
            return ExitCode.ERROR
        if all(r.verdict is Verdict.SKIP for r in self.results):
            return ExitCode.ERROR
        return ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        s = self.settings
        return {
            "tool": "snakepit-harness conformance",
            "bridge": list(s.bridge_cmd),
            "target": s.target,
            "profile": s.profile,
            "codec": s.codec,
            "negotiated": self.negotiated,
            "transport": s.transport,
            "strict": s.strict,
            "baseline": self.baseline_path,
            "started_at": self.started_at,
            "duration": round(self.duration, 3),
            "counts": self.counts(),
            "exit_code": self.exit_code(),
            "results": [r.to_json() for r in self.results],
        }


def run_suite(
    settings: RunSettings,
    cases: Iterable[Case],
    *,
    baseline: dict[str, str] | None = None,
    known_ids: Iterable[str] = (),
    on_result: Callable[[CaseResult], None] | None = None,
    stop: threading.Event | None = None,
) -> RunReport:
    """Run ``cases`` (already selected) and return the report.

    Cases of the settings' profile and transport run (or are SKIP with the
    reason); others are left out.  ``baseline`` maps case ids to reasons;
    ``known_ids`` are all ids that exist (entries outside it are STALE).
    KeyboardInterrupt (Ctrl-C, or SIGTERM as the CLI maps it) propagates after
    every bridge is killed.
    """
    report = RunReport(settings)
    began = time.monotonic()

    def emit(result: CaseResult) -> None:
        report.results.append(result)
        if on_result is not None:
            on_result(result)

    session = SuiteSession(settings, baseline=baseline, stop=stop)
    try:
        for case in cases:
            if session.belongs(case):
                emit(session.run(case))
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    finally:
        session.close()
        report.duration = time.monotonic() - began
        report.negotiated = session.driver.negotiated
    for stale in session.stale_entries(known_ids):
        emit(stale)
    return report
