"""The conformance data model: cases, levels, verdicts and results.

A :class:`Case` is data plus a check: a stable hierarchical id
(``framing.oversize-header``), the PROTOCOL.md section it tests, a
:class:`Level`, the profiles and codec modes it applies to, how it uses the
bridge (:class:`BridgeUse`), the transport kind it needs, and ``run``, a
function that drives the bridge through a case context and records findings.
Golden-frame files (fixtures/golden, see FORMAT.md there) become cases of the
same type, so the runner, the reports and the baseline never care where a
case came from.

A case grades what it sees: a MUST not met is a FAIL, a SHOULD not met (or an
outcome the spec accepts but does not recommend, such as the legacy
unknown-command form) is NON-STRICT.  The transport classifies the hard
failures: TIMEOUT, CRASH and FRAMING.  The baseline turns expected failures
into XFAIL and passing-but-listed cases into STALE.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

# Re-exported: the profiles a bridge may claim, and how the harness speaks to
# a stdio bridge (a fixed codec from the first frame, or §3.4 negotiation).
from snakepit_harness.protocol import CODEC_MODES, PROFILES

__all__ = [
    "CODEC_MODES",
    "FAILING_VERDICTS",
    "PROFILES",
    "VERDICT_MEANINGS",
    "BridgeUse",
    "Case",
    "CaseFailed",
    "CaseResult",
    "CaseSkipped",
    "Finding",
    "Grade",
    "Level",
    "RunSettings",
    "Verdict",
    "VerdictMeaning",
]


class Level(enum.StrEnum):
    """How binding the requirement a case tests is (MUST / SHOULD / MAY)."""

    REQUIRED = "required"  # MUST: a miss is FAIL
    RECOMMENDED = "recommended"  # SHOULD: a miss is NON-STRICT (FAIL under --strict)
    INFO = "info"  # MAY: observations only, never a failure


class Grade(enum.StrEnum):
    """How an observed outcome rates; the worst grade of a case's findings wins."""

    PASS = "pass"
    NON_STRICT = "non-strict"
    FAIL = "fail"


class Verdict(enum.StrEnum):
    """The one-word result of a case."""

    PASS = "PASS"
    FAIL = "FAIL"  # a MUST was not met
    NON_STRICT = "NON-STRICT"  # a SHOULD was not met, or an accepted-but-legacy outcome
    TIMEOUT = "TIMEOUT"  # the bridge did not answer before the case's deadline
    CRASH = "CRASH"  # the bridge exited (status or signal) when it should not have
    FRAMING = "FRAMING"  # bytes on stdout that are not frames
    SKIP = "SKIP"  # not applicable here (reason given)
    XFAIL = "XFAIL"  # failed, and listed in the baseline
    STALE = "STALE"  # listed in the baseline but passed, or no such case
    ERROR = "ERROR"  # the harness itself could not run the case (exit 2)

    @property
    def meaning(self) -> VerdictMeaning:
        return VERDICT_MEANINGS[self]

    def fails(self, strict: bool) -> bool:
        """Does this verdict make the run fail (NON-STRICT: only under --strict)?"""
        meaning = VERDICT_MEANINGS[self]
        return meaning.fails_when_strict if strict else meaning.fails_run


@dataclass(frozen=True)
class VerdictMeaning:
    """What a verdict does to the run around it; one row of ``VERDICT_MEANINGS``."""

    fails_run: bool  # the run exits 1 (does not conform)
    fails_when_strict: bool  # ... only under --strict
    poisons_bridge: bool  # the bridge it ran on is replaced before the next case
    blocks_as_gate: bool  # a gate case ending so blocks the other cases
    baselinable: bool  # listed in the baseline, it becomes XFAIL
    harness_error: bool  # the harness, not the bridge, failed (exit 2)


_M = VerdictMeaning
# The one table of verdict semantics: the runner, the pytest plugin, the
# baseline and the reports all ask it.  Columns as in VerdictMeaning.
VERDICT_MEANINGS: Final[dict[Verdict, VerdictMeaning]] = {
    #                     fails  strict poisons blocks baseline error
    Verdict.PASS: _M(False, False, False, False, False, False),
    Verdict.FAIL: _M(True, True, False, True, True, False),
    Verdict.NON_STRICT: _M(False, True, False, False, True, False),
    Verdict.TIMEOUT: _M(True, True, True, True, True, False),
    Verdict.CRASH: _M(True, True, True, True, True, False),
    Verdict.FRAMING: _M(True, True, True, True, True, False),
    Verdict.SKIP: _M(False, False, False, False, False, False),
    Verdict.XFAIL: _M(False, False, False, False, False, False),
    Verdict.STALE: _M(True, True, False, False, False, False),
    Verdict.ERROR: _M(False, False, True, True, False, True),
}

# Verdicts that make a run fail (NON-STRICT only under --strict).
FAILING_VERDICTS: Final = frozenset(v for v, m in VERDICT_MEANINGS.items() if m.fails_run)


class BridgeUse(enum.StrEnum):
    """What bridge process a case needs."""

    # The long-lived bridge, already through start-up (negotiation, init ping).
    # The case must leave it at a frame boundary with nothing unanswered.
    SHARED = "shared"
    # A bridge of its own, already through start-up, killed afterwards
    # (cases that signal, close pipes, or may legitimately end the bridge).
    FRESH = "fresh"
    # A bridge of its own exactly as spawned: no negotiation, no init ping
    # (cases about the first frame and start-up itself).
    RAW = "raw"


@dataclass(frozen=True)
class Finding:
    """One observation a case made, with its grade."""

    grade: Grade
    message: str


class CaseFailed(Exception):
    """Raised inside a case to stop it with a finding (grade FAIL or NON-STRICT)."""

    def __init__(self, message: str, grade: Grade = Grade.FAIL) -> None:
        super().__init__(message)
        self.grade = grade


class CaseSkipped(Exception):
    """Raised inside a case that turns out not to apply (the reason is reported)."""


# A case body: receives the transport's case context (see runner.StdioCaseContext).
CaseFn = Callable[[Any], None]


@dataclass(frozen=True)
class Case:
    """One conformance case.  ``id`` is stable: baselines and reports key on it."""

    id: str
    section: str  # PROTOCOL.md section, e.g. "2.3"
    level: Level
    profiles: frozenset[str]
    requirement: str  # one sentence, what the bridge must (or should) do
    run: CaseFn = field(compare=False, repr=False)
    transport: str = "stdio"
    # Codec modes the case applies to (None: all).  Negotiation cases need a
    # bridge in auto mode, which is what --codec negotiate declares.
    codecs: frozenset[str] | None = None
    bridge: BridgeUse = BridgeUse.SHARED
    # A gate case checks something every other case depends on (the bridge
    # answers at all, flushes, keeps stdout clean).  When a gate fails, the
    # other cases are skipped as blocked: one root cause, one failure, and a
    # hung bridge costs one deadline instead of one per case.
    gate: bool = False
    timeout: float | None = None  # per-case deadline; None: the run's --timeout
    source: str = ""  # "python:module" or the golden file's path

    def applies_to(self, profile: str, codec_mode: str, transport: str) -> str | None:
        """None if the case applies; else the reason it does not."""
        if profile not in self.profiles:
            return f"not part of profile {profile}"
        if transport != self.transport:
            return f"needs the {self.transport} transport"
        if self.codecs is not None and codec_mode not in self.codecs:
            wanted = "|".join(sorted(self.codecs))
            return f"only under --codec {wanted}"
        return None


@dataclass(frozen=True)
class RunSettings:
    """Everything a run needs to know about the bridge and how to judge it."""

    bridge_cmd: tuple[str, ...]
    profile: str = "v2"
    codec: str = "json"  # one of CODEC_MODES (stdio); ignored by other transports
    strict: bool = False
    timeout: float = 10.0  # default per-case deadline, seconds
    transport: str = "stdio"
    target: str | None = None  # an address for network transports (gRPC HOST:PORT)
    # §5.1: how long a bridge may take to answer its first request.
    startup_timeout: float = 20.0


@dataclass
class CaseResult:
    """What happened when one case ran (or did not)."""

    case_id: str
    section: str
    level: Level
    requirement: str
    verdict: Verdict
    message: str = ""
    duration: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    sent_hex: str = ""  # bytes the case sent (hex, possibly truncated)
    sent_total: int = 0
    observed: list[str] = field(default_factory=list)  # frames/events seen, in order
    stderr_tail: str = ""
    reproduction: list[str] = field(default_factory=list)
    baseline_reason: str = ""

    def failed(self, strict: bool) -> bool:
        """Does this result make the run fail?"""
        return self.verdict.fails(strict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.case_id,
            "section": self.section,
            "level": str(self.level),
            "requirement": self.requirement,
            "verdict": str(self.verdict),
            "message": self.message,
            "duration": round(self.duration, 4),
            "findings": [{"grade": str(f.grade), "message": f.message} for f in self.findings],
            "sent_hex": self.sent_hex,
            "sent_total": self.sent_total,
            "observed": self.observed,
            "stderr_tail": self.stderr_tail,
            "reproduction": self.reproduction,
            "baseline_reason": self.baseline_reason,
        }
