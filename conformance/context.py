"""What every case body gets, whatever the transport: the deadline, ids, grading, a record.

A case never sees the driver's bookkeeping: it calls ``require``/``recommend``
(MUST and SHOULD), ``skip``, ``note`` and ``event`` on its context, and the
transport's subclass (``drivers.stdio.StdioCaseContext``,
``drivers.grpc.GrpcCaseContext``) adds the calls that reach the bridge.  The
session turns what the context recorded into the case's verdict.
"""

from __future__ import annotations

import time
from typing import Any, Final

from snakepit_harness.errors import BridgeTimeout

from .matcher import describe, match
from .model import Case, CaseFailed, CaseSkipped, Finding, Grade, RunSettings

__all__ = ["OBSERVED_MAX_EVENTS", "SENT_RECORD_BYTES", "CaseContext", "case_deadline"]

# Bytes of a case's traffic kept for its report (hex); more is summarised.
SENT_RECORD_BYTES: Final = 4096
# Events shown per case in the report.
OBSERVED_MAX_EVENTS: Final = 40


def case_deadline(case: Case, settings: RunSettings) -> float:
    """Seconds a case may take: the run's --timeout, or more where the case needs it
    (16 MiB frames); a longer --timeout always wins."""
    return max(settings.timeout, case.timeout or 0.0)


class CaseContext:
    """What every case body gets, whatever the transport: deadline, ids, findings."""

    def __init__(self, case: Case, settings: RunSettings, deadline: float) -> None:
        self.case = case
        self.settings = settings
        self.deadline = deadline
        self.findings: list[Finding] = []
        self.notes: list[str] = []
        self.observed: list[str] = []
        self.sent = bytearray()
        self.sent_total = 0
        self._next_id = 1

    # -- time and ids -------------------------------------------------------

    def remaining(self) -> float:
        """Seconds left before the case's deadline (raises BridgeTimeout at zero)."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BridgeTimeout(f"the case's deadline passed (after {self.case_timeout():.1f} s)")
        return left

    def case_timeout(self) -> float:
        return case_deadline(self.case, self.settings)

    def next_id(self) -> int:
        value = self._next_id
        self._next_id += 1
        return value

    # -- grading ------------------------------------------------------------

    def add_finding(self, grade: Grade, message: str) -> None:
        if grade is not Grade.PASS:
            self.findings.append(Finding(grade, message))

    def require(self, condition: object, message: str) -> None:
        """A MUST: when ``condition`` is false the case fails here."""
        if not condition:
            raise CaseFailed(message, Grade.FAIL)

    def recommend(self, condition: object, message: str) -> None:
        """A SHOULD: when ``condition`` is false, record NON-STRICT and go on."""
        if not condition:
            self.add_finding(Grade.NON_STRICT, message)

    def require_match(self, value: Any, matcher: Any, what: str = "response") -> None:
        problems = match(value, matcher)
        if problems:
            raise CaseFailed(f"{what} {describe(value)}: " + "; ".join(problems))

    def recommend_match(self, value: Any, matcher: Any, what: str = "response") -> bool:
        problems = match(value, matcher)
        if problems:
            self.add_finding(Grade.NON_STRICT, f"{what}: " + "; ".join(problems))
        return not problems

    def note(self, message: str) -> None:
        self.notes.append(message)

    def skip(self, reason: str) -> None:
        raise CaseSkipped(reason)

    def event(self, text: str) -> None:
        if len(self.observed) < OBSERVED_MAX_EVENTS:
            self.observed.append(text)
        elif len(self.observed) == OBSERVED_MAX_EVENTS:
            self.observed.append("... (more events not shown)")

    def record_sent(self, data: bytes) -> None:
        self.sent_total += len(data)
        room = SENT_RECORD_BYTES - len(self.sent)
        if room > 0:
            self.sent += data[:room]
