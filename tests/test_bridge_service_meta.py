"""Meta-test: the bridge-service suite catches every sample worker's defect, and only that.

Every worker in ``fixtures/bridge_service/catalog.json`` runs through the real
command line, ``snakepit-harness conformance --profile bridge-service --json
FILE -- CMD``, as a subprocess, and its JSON report is checked:

* the correct workers (the reference worker, and a ``BaseCommandHandler``
  served through it) conform under ``--strict``;
* each broken worker (one defect each) makes the run exit 1 (a MUST defect)
  or exit 0 with NON-STRICT and 1 under ``--strict`` (a SHOULD defect), fails
  exactly the cases its entry expects, with an expected verdict, and nothing
  outside ``expect`` + ``also``;
* together the broken workers fail every ``required`` bridge-service case;
* no run leaves a process behind: each harness runs with a ``TMPDIR`` of its
  own, so every worker it launched carries a ready-file path under it, and
  afterwards no process may.

Runs mostly wait (start-ups, exits, deadlines), so they all start at once in
a thread pool; each test waits for its own.  Broken workers skip the two slow
cases (a host that never answers, a 16 MiB request) unless their defect is
about them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

pytest.importorskip("grpc", reason="the bridge-service profile needs the grpc extra")

pytestmark = pytest.mark.timeout(900)

FIXTURES: Final = Path(__file__).resolve().parent.parent / "fixtures" / "bridge_service"
CATALOG: Final = json.loads((FIXTURES / "catalog.json").read_text())
PREFIX: Final = "bridge-service."
FAILING: Final = frozenset({"FAIL", "NON-STRICT", "TIMEOUT", "CRASH", "FRAMING", "STALE", "ERROR"})
SLOW_CASES: Final = frozenset(
    {"bridge-service.startup.host-unreachable", "bridge-service.limits.large-request"}
)
# Required cases no broken sample fails, with why (none).
NOT_COVERED: Final[dict[str, str]] = {}
WORKERS: Final = 4
RUN_DEADLINE: Final = 300.0
HARNESS_CLEANUP: Final = 15.0
READY_FILE_ENV: Final = b"SNAKEPIT_READY_FILE="


@dataclass(frozen=True)
class SuiteRun:
    command: tuple[str, ...]
    exit_code: int
    verdicts: dict[str, str]
    output: str
    left_behind: tuple[int, ...]

    def failing(self) -> dict[str, str]:
        return {case: v for case, v in self.verdicts.items() if v in FAILING}

    def describe(self) -> str:
        failing = ", ".join(f"{case}={v}" for case, v in sorted(self.failing().items()))
        return (
            f"exit {self.exit_code}; failing: {failing or 'none'}\n"
            f"command: {' '.join(self.command)}\n{self.output[-3000:]}"
        )


def _launched_under(folder: str) -> tuple[int, ...]:
    """Live processes whose ready-file path lies under ``folder`` (launched by that run)."""
    marker = READY_FILE_ENV + folder.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and any(v.startswith(marker) for v in environ.split(b"\0")):
            found.append(int(entry.name))
    return tuple(found)


def run_conformance(
    worker: list[str], *, strict: bool, cases: tuple[str, ...] = (), exclude: tuple[str, ...] = ()
) -> SuiteRun:
    with tempfile.TemporaryDirectory(prefix="snakepit-bs-meta-") as tmp:
        report = Path(tmp) / "report.json"
        command = [
            sys.executable,
            "-m",
            "snakepit_harness",
            "conformance",
            "--profile",
            "bridge-service",
            "--json",
            str(report),
        ]
        command += ["--strict"] if strict else []
        for pattern in cases:
            command += ["--case", pattern]
        for pattern in exclude:
            command += ["--exclude", pattern]
        command += ["--", *worker]
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": tmp},
        )
        try:
            output, _ = proc.communicate(timeout=RUN_DEADLINE)
        except subprocess.TimeoutExpired:
            proc.terminate()
            output, _ = proc.communicate(timeout=HARNESS_CLEANUP)
            raise AssertionError(
                f"ran past {RUN_DEADLINE:.0f} s: {command}\n{output[-3000:]}"
            ) from None
        left = _launched_under(tmp)
        assert report.exists(), f"no JSON report (exit {proc.returncode}):\n{output[-3000:]}"
        data = json.loads(report.read_text())
    assert data["exit_code"] == proc.returncode, "the report's exit code is not the process's"
    verdicts = {r["id"]: r["verdict"] for r in data["results"]}
    return SuiteRun(tuple(command), proc.returncode, verdicts, output, left)


# -- the plan ----------------------------------------------------------------------


def _broken_runs(row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    related = set(row["expect"]) | set(row["also"])
    base = {
        "worker": [sys.executable, str(FIXTURES / row["script"])],
        "strict": False,
        "exclude": tuple(sorted(SLOW_CASES - related)),
    }
    runs = {f"broken:{row['name']}": base}
    if row["level"] != "required":
        runs[f"broken:{row['name']}:strict"] = {
            **base,
            "strict": True,
            "cases": tuple(row["expect"]),
            "exclude": (),
        }
    return runs


def _plan() -> dict[str, dict[str, Any]]:
    plan: dict[str, dict[str, Any]] = {}
    for entry in CATALOG["correct"]:
        command = list(entry["command"])
        beside = Path(sys.executable).parent / command[0]
        if beside.exists():
            command[0] = str(beside)
        plan[f"correct:{entry['name']}"] = {"worker": command, "strict": True}
    for row in CATALOG["broken"]:
        plan.update(_broken_runs(row))
    return plan


PLAN: Final = _plan()
_POOL: ThreadPoolExecutor | None = None
_FUTURES: dict[str, Future[SuiteRun]] = {}


def _run(key: str) -> SuiteRun:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="bs-meta")
        # Every run at once, the ones that wait out long limits first.
        for name in sorted(PLAN, key=lambda k: ("ready_file_text" not in k, k)):
            spec = PLAN[name]
            _FUTURES[name] = _POOL.submit(
                run_conformance,
                spec["worker"],
                strict=spec["strict"],
                cases=spec.get("cases", ()),
                exclude=spec.get("exclude", ()),
            )
    return _FUTURES[key].result()


@pytest.fixture(scope="module", autouse=True)
def _shutdown_pool() -> Any:
    yield
    if _POOL is not None:
        _POOL.shutdown(wait=True, cancel_futures=True)


# -- the tests -----------------------------------------------------------------------


@pytest.mark.parametrize("entry", CATALOG["correct"], ids=lambda e: e["name"])
def test_correct_worker_conforms_strictly(entry: dict[str, Any]) -> None:
    run = _run(f"correct:{entry['name']}")
    assert run.exit_code == 0, run.describe()
    assert not run.failing(), run.describe()
    assert not run.left_behind, f"processes left behind: {run.left_behind}"


@pytest.mark.parametrize("row", CATALOG["broken"], ids=lambda r: r["name"])
def test_broken_worker_fails_exactly_its_cases(row: dict[str, Any]) -> None:
    run = _run(f"broken:{row['name']}")
    failing = run.failing()
    for case, verdicts in row["expect"].items():
        assert failing.get(case) in verdicts, f"{case}: wanted {verdicts}\n{run.describe()}"
    unexpected = set(failing) - set(row["expect"]) - set(row["also"])
    assert not unexpected, f"also failed: {sorted(unexpected)}\n{run.describe()}"
    if row["level"] == "required":
        assert run.exit_code == 1, run.describe()
    else:
        assert run.exit_code == 0, run.describe()
        strict = _run(f"broken:{row['name']}:strict")
        assert strict.exit_code == 1, strict.describe()
    assert not run.left_behind, f"processes left behind: {run.left_behind}"


def test_every_required_case_has_a_worker_that_fails_it() -> None:
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakepit_harness",
            "conformance",
            "--list",
            "--profile",
            "bridge-service",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    required = {line.split()[0] for line in listed if " required " in line}
    assert len(required) >= 20, listed
    caught = {case for row in CATALOG["broken"] for case in row["expect"]}
    missing = required - caught - set(NOT_COVERED)
    assert not missing, f"no broken worker fails these required cases: {sorted(missing)}"


def test_catalog_entries_name_real_files_and_cases() -> None:
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakepit_harness",
            "conformance",
            "--list",
            "--profile",
            "bridge-service",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = [row["name"] for row in CATALOG["broken"]]
    assert len(names) == len(set(names)) >= 10
    for row in CATALOG["broken"]:
        assert (FIXTURES / row["script"]).is_file(), row
        for case in [*row["expect"], *row["also"]]:
            assert case.startswith(PREFIX) and f"{case} " in listed, case
