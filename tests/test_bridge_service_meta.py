"""Meta-test of the bridge-service profile: correct workers conform, and no run leaves a process.

``tests/test_meta_conformance.py`` runs every broken sample of
``fixtures/bridge_service/catalog.json`` (with the other profiles' samples)
and checks its verdicts.  This module adds what is particular to this profile:

* the correct workers, the reference worker and a ``BaseCommandHandler``
  served through it, conform under ``--strict`` through the real command line
  (``snakepit-harness conformance --profile bridge-service --json FILE -- CMD``);
* no run leaves a process behind, also for the samples that try hardest to
  (a child in a session of its own, SIGTERM ignored, the host's loss
  ignored): each harness runs with a ``TMPDIR`` of its own, so every worker
  it launched carries a ready-file path under it, and afterwards no process may.

Runs mostly wait, so they start at once in a thread pool; each test waits for its own.
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
FAILING: Final = frozenset({"FAIL", "NON-STRICT", "TIMEOUT", "CRASH", "FRAMING", "STALE", "ERROR"})
# The correct workers: name -> command (console scripts are looked up beside this Python).
CORRECT: Final = {
    "reference": ["snakepit-bridge-worker"],
    "command-handler": [
        "snakepit-bridge-worker",
        "--adapter",
        "snakepit_bridge.generic:GenericCommandHandler",
    ],
}
# Samples whose defect is about processes: their runs must still leave none.
LEFTOVER_PRONE: Final = ("orphan_child", "ignores_sigterm", "ignores_host_loss")
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


def _broken(name: str) -> dict[str, Any]:
    return next(row for row in CATALOG["broken"] if row["name"] == name)


def _plan() -> dict[str, dict[str, Any]]:
    plan: dict[str, dict[str, Any]] = {}
    for name, command in CORRECT.items():
        beside = Path(sys.executable).parent / command[0]
        worker = [str(beside) if beside.exists() else command[0], *command[1:]]
        plan[f"correct:{name}"] = {"worker": worker, "strict": True}
    for name in LEFTOVER_PRONE:
        row = _broken(name)
        plan[f"broken:{name}"] = {
            "worker": [sys.executable, str(FIXTURES / row["script"])],
            "strict": False,
            "cases": (*row["expect"], *row["also"]),
        }
    return plan


PLAN: Final = _plan()
_POOL: ThreadPoolExecutor | None = None
_FUTURES: dict[str, Future[SuiteRun]] = {}


def _run(key: str) -> SuiteRun:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="bs-meta")
        for name in sorted(PLAN):  # every run at once
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


@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_worker_conforms_strictly(name: str) -> None:
    run = _run(f"correct:{name}")
    assert run.exit_code == 0, run.describe()
    assert not run.failing(), run.describe()
    assert not run.left_behind, f"processes left behind: {run.left_behind}"


@pytest.mark.parametrize("name", LEFTOVER_PRONE)
def test_no_process_outlives_a_run(name: str) -> None:
    run = _run(f"broken:{name}")
    assert run.exit_code == 1, run.describe()
    for case, verdicts in _broken(name)["expect"].items():
        assert run.verdicts.get(case) in verdicts, run.describe()
    assert not run.left_behind, f"processes left behind by the harness: {run.left_behind}"


def test_the_catalog_is_registered_with_the_other_profiles() -> None:
    from snakepit_harness.fixtures.bridges.catalog import CATALOG_DIRS

    assert CATALOG_DIRS["bridge-service"].resolve() == FIXTURES.resolve()
    assert len(CATALOG["broken"]) >= 10
    assert all(row["transport"] == "bridge-service" for row in CATALOG["broken"])
