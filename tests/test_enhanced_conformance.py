"""The §7 conformance cases: registered, passing on the reference bridge, able to fail.

A case that cannot fail is a defect, so each group is also run against the
reference bridge opened up on purpose (``--allow-module builtins``, a lifted
denylist entry, no effective store cap) and must report the hole.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from snakepit_harness.conformance.registry import all_cases

BRIDGE = (sys.executable, "-m", "snakepit_bridge.enhanced_bridge", "--quiet")
HARNESS = (sys.executable, "-m", "snakepit_harness")
TIMEOUT = 120.0


def _conformance(cases: str, *bridge_options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *HARNESS,
            "conformance",
            "--profile",
            "enhanced",
            "--codec",
            "json",
            "--strict",
            "--case",
            cases,
            "--",
            *BRIDGE,
            *bridge_options,
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_enhanced_cases_are_registered() -> None:
    enhanced = [c for c in all_cases() if "enhanced" in c.profiles and c.id.startswith("enhanced.")]
    sections = {c.section for c in enhanced}
    assert {"7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "7.7"} <= sections
    probes = [c for c in enhanced if c.section == "7.2"]
    assert len(probes) >= 25
    assert any(c.id == "enhanced.store.dictionary-model" for c in enhanced)
    assert all(c.profiles == frozenset({"enhanced"}) for c in enhanced)


@pytest.mark.parametrize("cases", ["enhanced.safety.*", "enhanced.store.*", "enhanced.golden.*"])
def test_reference_bridge_passes(cases: str) -> None:
    run = _conformance(cases)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "CONFORMS" in run.stdout and " FAIL" not in run.stdout


@pytest.mark.parametrize(
    ("cases", "options", "failing"),
    [
        (
            "enhanced.safety.builtins-*",
            ("--allow-module", "builtins"),
            "enhanced.safety.builtins-eval",
        ),
        ("enhanced.safety.pandas-eval", ("--undeny", "pandas.eval"), "enhanced.safety.pandas-eval"),
        ("enhanced.store.cap", ("--max-stored", "5000"), "enhanced.store.cap"),
    ],
)
def test_cases_report_an_opened_bridge(cases: str, options: tuple[str, ...], failing: str) -> None:
    pytest.importorskip("pandas", reason="pandas not installed")
    run = _conformance(cases, *options)
    assert run.returncode == 1, run.stdout[-3000:]
    line = next(line for line in run.stdout.splitlines() if failing in line)
    assert line.startswith(("FAIL", "NON-STRICT")), line
