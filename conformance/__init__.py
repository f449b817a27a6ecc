"""The conformance suite: cases for PROTOCOL.md, a supervising runner, baselines and reports.

Public names are re-exported here; the case bodies live in ``cases/`` and the
golden-frame files in ``fixtures/golden``.  See docs/conformance.md.
"""

from __future__ import annotations

from .matcher import decode_special, encode_special, match
from .model import (
    CODEC_MODES,
    PROFILES,
    BridgeUse,
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
from .registry import ALL_STDIO, V2_AND_UP, all_cases, case, load_cases, register, select_cases

__all__ = [
    "ALL_STDIO",
    "CODEC_MODES",
    "PROFILES",
    "V2_AND_UP",
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
    "all_cases",
    "case",
    "decode_special",
    "encode_special",
    "load_cases",
    "match",
    "register",
    "select_cases",
]
