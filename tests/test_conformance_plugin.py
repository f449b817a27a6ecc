"""The pytest plugin, run the way a user runs it: `pytest --bridge CMD` in a fresh directory
(a real pytest subprocess, the plugin loaded through its pytest11 entry point)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TINY = Path(__file__).parent / "bridges" / "tiny_bridge.py"


def pytest_in(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", *args],
        check=False,
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
    )


def bridge(*defects: str) -> str:
    cmd = f"{sys.executable} {TINY} --quiet"
    return cmd + "".join(f" --defect {d}" for d in defects)


def test_no_bridge_option_means_no_effect(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text("def test_mine():\n    assert True\n")
    run = pytest_in(tmp_path)
    assert run.returncode == 0, run.stdout
    assert "1 passed" in run.stdout
    assert "conformance::" not in run.stdout


def test_cases_run_as_items_next_to_the_users_tests(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text("def test_mine():\n    assert True\n")
    junit = tmp_path / "out.xml"
    run = pytest_in(
        tmp_path,
        "--bridge",
        bridge(),
        "--profile",
        "v2",
        "-k",
        "mine or commands or messages.id",
        f"--junitxml={junit}",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PASSED conformance::commands.compute.divide" in run.stdout
    assert "PASSED test_user.py::test_mine" in run.stdout
    assert "deselected" in run.stdout  # -k applies to conformance items
    assert 'classname="conformance" name="commands.compute.divide"' in junit.read_text()


def test_failures_warnings_strictness_and_baseline(tmp_path: Path) -> None:
    baseline = tmp_path / "known.json"
    baseline.write_text(
        json.dumps({"failures": [{"id": "messages.id-integer", "reason": "ids not echoed"}]})
    )
    cmd = bridge("no-id-echo", "bad-timestamp")
    selection = "messages.id or timestamp-format or baseline"
    run = pytest_in(tmp_path, "--bridge", cmd, "-k", selection, "--baseline", str(baseline))
    assert run.returncode == 1, run.stdout
    assert "FAILED conformance::messages.id-string" in run.stdout
    assert "snakepit-harness replay messages.id-string" in run.stdout
    assert "XFAIL conformance::messages.id-integer" in run.stdout
    # A missed SHOULD warns without --bridge-strict ...
    assert "PASSED conformance::messages.timestamp-format" in run.stdout
    assert "ConformanceWarning" in run.stdout
    # ... and fails with it.
    strict = pytest_in(tmp_path, "--bridge", cmd, "-k", "timestamp-format", "--bridge-strict")
    assert strict.returncode == 1
    assert "FAILED conformance::messages.timestamp-format" in strict.stdout
