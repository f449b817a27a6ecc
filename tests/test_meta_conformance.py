"""Meta-test: the conformance suite catches every sample defect, and only that.

Every sample bridge of the three catalogs (``fixtures/bridges/`` for stdio v1
and v2, ``fixtures/enhanced_bridges/`` for the enhanced profile,
``fixtures/grpc_bridges/`` for gRPC; each listed in its ``catalog.json``) runs
under the real command line, ``snakepit-harness conformance ... --json FILE
-- CMD``, as a subprocess, and the JSON report is checked:

* the correct stdio bridges (C, Node.js, the Python base) conform under
  ``--strict`` on v1 and on v2 with json, msgpack and negotiation (the
  reference bridges of every profile are ``snakepit-harness check``'s job);
* each broken bridge (one defect each) makes the run exit 1 (required defects)
  or exit 0 with NON-STRICT and 1 under ``--strict`` (SHOULD-level defects),
  fails exactly the case ids its catalog entry expects, with the expected
  verdicts and a message saying why, and no case outside ``expect`` + ``also``;
* together, the broken bridges' expected cases cover every ``required`` and
  every ``recommended`` case of ``conformance --list`` (every profile and
  transport), but for the ones a catalog lists as ``not_independently_failable``
  with the reason.  Info-level cases are exempt.

A catalog entry with ``suite_issue`` names a known suite bug that currently
gives another verdict; its test is xfail with that reason until fixed.

Runs are many but mostly waiting (deadlines, exits), so every run the
selected tests need starts at once in a thread pool, the slowest first; each
test then waits only for its own run.  Broken bridges skip the 8-16 MiB cases
unless their defect is about them (``BIG_PAYLOAD_CASES``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from snakepit_harness.fixtures.bridges.build import (
    BuildError,
    bridge_argv,
)
from snakepit_harness.fixtures.bridges.catalog import CATALOG_DIRS, load_catalog, readme_table

# Each test waits for its run in a shared pool; under load the queue is long.
pytestmark = pytest.mark.timeout(600)

# The three catalogs by kind: "stdio" (v1/v2, and the correct bridges), "enhanced", "grpc".
CATALOGS: Final = {
    kind: load_catalog(folder / "catalog.json") for kind, folder in CATALOG_DIRS.items()
}
CATALOG: Final = CATALOGS["stdio"]

# Verdicts that count as "this case failed" in a report.  NON-STRICT is a
# failure of a recommended case; the run's exit code says whether it counts.
FAILING: Final = frozenset({"FAIL", "NON-STRICT", "TIMEOUT", "CRASH", "FRAMING", "STALE", "ERROR"})

# The codec configurations a v2 bridge claims (§3.4): explicit json, explicit
# msgpack (the bridge started with --protocol msgpack), and negotiation.
V2_CONFIGS: Final = (("json", ()), ("msgpack", ("--protocol", "msgpack")), ("negotiate", ()))

# The cases that move 8-16 MiB payloads cost more than all the others
# together (on both sides of the pipe).  A broken bridge's run leaves them out
# unless its defect is about them; the correct bridges run them all.
BIG_PAYLOAD_CASES: Final = frozenset(
    {
        "framing.large-request",
        "framing.large-response",
        "lifecycle.sigterm-mid-response",
        "grpc.limits.large-request",
    }
)

# Threads: most runs wait on bridges (deadlines, exits, start-up), not CPU.
WORKERS: Final = 6
# A whole conformance run of a sample bridge; the slowest (a 16 MiB request
# that hangs) takes about 30 s on a loaded 2-core machine.
RUN_DEADLINE: Final = 180.0
# After SIGTERM the harness kills its bridges and writes its reports.
HARNESS_CLEANUP: Final = 15.0


@dataclass(frozen=True)
class SuiteRun:
    """One `snakepit-harness conformance` run: its exit code and verdicts."""

    command: tuple[str, ...]
    exit_code: int
    verdicts: dict[str, str]
    output: str
    messages: dict[str, str]

    def failing(self) -> dict[str, str]:
        return {case: v for case, v in self.verdicts.items() if v in FAILING}

    def describe(self) -> str:
        failing = ", ".join(f"{case}={v}" for case, v in sorted(self.failing().items()))
        return (
            f"exit {self.exit_code}; failing: {failing or 'none'}\n"
            f"command: {' '.join(self.command)}\n{self.output[-3000:]}"
        )


def run_conformance(
    bridge: list[str],
    profile: str,
    codec: str | None,
    *,
    transport: str = "stdio",
    strict: bool = False,
    cases: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    timeout: float | None = None,
    startup_timeout: float | None = None,
) -> SuiteRun:
    with tempfile.TemporaryDirectory(prefix="snakepit-meta-") as tmp:
        report = Path(tmp) / "report.json"
        command = [
            sys.executable,
            "-m",
            "snakepit_harness",
            "conformance",
            "--profile",
            profile,
            "--json",
            str(report),
        ]
        if codec is not None:  # gRPC has no codec choice
            command += ["--codec", codec]
        if transport != "stdio":
            command += ["--transport", transport]
        if strict:
            command.append("--strict")
        for pattern in cases:
            command += ["--case", pattern]
        for pattern in exclude:
            command += ["--exclude", pattern]
        if timeout is not None:
            command += ["--timeout", str(timeout)]
        if startup_timeout is not None:
            command += ["--startup-timeout", str(startup_timeout)]
        command += ["--", *bridge]
        returncode, output = _run_harness(command)
        assert report.exists(), f"no JSON report (exit {returncode}):\n{output[-3000:]}"
        data = json.loads(report.read_text())
    verdicts = {result["id"]: result["verdict"] for result in data["results"]}
    messages = {result["id"]: result["message"] for result in data["results"]}
    assert data["exit_code"] == returncode, "the report's exit code is not the process's"
    return SuiteRun(tuple(command), returncode, verdicts, output, messages)


def _run_harness(command: list[str]) -> tuple[int, str]:
    """Run the harness; past the deadline stop it with SIGTERM, which makes it
    kill its bridges' process groups (SIGKILL would orphan them)."""
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        output, _ = proc.communicate(timeout=RUN_DEADLINE)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            output, _ = proc.communicate(timeout=HARNESS_CLEANUP)
        finally:
            proc.kill()
            proc.wait()
        raise AssertionError(
            f"the harness ran past {RUN_DEADLINE:.0f} s: {' '.join(command)}\n{output[-3000:]}"
        ) from None
    return proc.returncode, output


# -- the run plan -------------------------------------------------------------


def _sample_id(kind: str, row: dict[str, Any]) -> str:
    """How tests and runs name a broken bridge: stdio ones by name, others kind/name."""
    return row["name"] if kind == "stdio" else f"{kind}/{row['name']}"


BROKEN: Final = {
    _sample_id(kind, row): (kind, row)
    for kind, catalog in CATALOGS.items()
    for row in catalog["broken"]
}
assert len(BROKEN) == sum(len(c["broken"]) for c in CATALOGS.values()), "duplicate sample names"


def _broken(sample: str) -> dict[str, Any]:
    return dict(BROKEN[sample][1])


def _broken_argv(sample: str) -> list[str]:
    kind, row = BROKEN[sample]
    return [sys.executable, str(CATALOG_DIRS[kind] / row["script"]), *row.get("args", ())]


def _broken_runs(sample: str) -> dict[str, dict[str, Any]]:
    """The runs a broken bridge needs: its own, and a --strict one for SHOULD defects."""
    row = _broken(sample)
    related = set(row["expect"]) | set(row["also"])
    base = {
        "bridge": _broken_argv(sample),
        "profile": row["profile"],
        "codec": row.get("codec"),
        "transport": row.get("transport", "stdio"),
        "cases": tuple(row.get("cases", ())),
        "exclude": () if row.get("cases") else tuple(sorted(BIG_PAYLOAD_CASES - related)),
        "timeout": row.get("timeout"),
        "startup_timeout": row.get("startup_timeout"),
    }
    runs = {f"broken:{sample}": base}
    if row["level"] != "required":
        # Only the expected cases: the full run already showed nothing else fails.
        runs[f"broken:{sample}:strict"] = {
            **base,
            "strict": True,
            "cases": tuple(row["expect"]),
            "exclude": (),
        }
    return runs


def _correct_argv(name: str, codec_args: tuple[str, ...]) -> list[str] | None:
    try:
        return [*bridge_argv(name), *codec_args]
    except BuildError:
        return None  # reported as a skip by the test that needs it


def _plan() -> dict[str, dict[str, Any]]:
    plan: dict[str, dict[str, Any]] = {}
    for sample in BROKEN:
        plan.update(_broken_runs(sample))
    for entry in CATALOG["correct"]:
        # The Python base is also every broken bridge's v2 baseline; v1 (a
        # subset of the same cases) is proven on the other languages.
        if entry["name"] != "python":
            plan[f"correct:{entry['name']}:v1:json"] = {
                "bridge": (entry["name"], ()),
                "profile": "v1",
                "codec": "json",
                "strict": True,
            }
        for codec, codec_args in V2_CONFIGS:
            plan[f"correct:{entry['name']}:v2:{codec}"] = {
                "bridge": (entry["name"], codec_args),
                "profile": "v2",
                "codec": codec,
                "strict": True,
            }
    return plan


# Runs known to wait out deadlines go first so they overlap with the rest.
SLOW_FIRST: Final = (
    "broken:hang_on_large_frame",
    "broken:malformed_silent",
    "broken:silent_unknown_command",
    "broken:negotiation_drops_first_frame",
    "broken:ignore_sigterm",
    "broken:eof_inside_frame_hang",
    "broken:child_left_behind",
    "broken:ping_not_ok",
    "broken:oversize_allocates",
    "broken:msgpack_unbounded",
    "broken:grpc/ignores_sigterm",
    "broken:grpc/stream_ignores_cancel",
    "broken:grpc/ready_before_serving",
)


def _execute(spec: dict[str, Any]) -> SuiteRun | str:
    """The run ``spec`` describes, or why it cannot run here."""
    bridge = spec["bridge"]
    if isinstance(bridge, tuple):  # a correct sample, built on demand
        bridge = _correct_argv(*bridge)
        if bridge is None:
            return "the sample bridge cannot be built here (no C compiler or node)"
    if spec.get("transport") == "grpc":
        missing = [
            name for name in ("grpc", "grpc_health") if importlib.util.find_spec(name) is None
        ]
        if missing:
            return f"the grpc extra is not installed (no {', '.join(missing)})"
    return run_conformance(
        bridge,
        spec["profile"],
        spec["codec"],
        transport=spec.get("transport", "stdio"),
        strict=spec.get("strict", False),
        cases=spec.get("cases", ()),
        exclude=spec.get("exclude", ()),
        timeout=spec.get("timeout"),
        startup_timeout=spec.get("startup_timeout"),
    )


_POOL: ThreadPoolExecutor | None = None
_FUTURES: dict[str, Future[SuiteRun | str]] = {}


def _submit(keys: list[str]) -> None:
    """Start the runs ``keys`` (those not started yet), slow ones first."""
    global _POOL
    plan = _plan()
    if _POOL is None:
        # Build the C bridge once before the threads race to do it.
        with contextlib.suppress(BuildError):
            bridge_argv("c")
        _POOL = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="meta-run")
    wanted = [key for key in dict.fromkeys(keys) if key not in _FUTURES]
    wanted.sort(key=lambda key: SLOW_FIRST.index(key) if key in SLOW_FIRST else len(SLOW_FIRST))
    for key in wanted:
        _FUTURES[key] = _POOL.submit(_execute, plan[key])


def _keys_of(sample_or_key: str) -> list[str]:
    if sample_or_key.startswith("correct:"):
        return [sample_or_key]
    return list(_broken_runs(sample_or_key))


# Test parameters that name runs (a sample, or a correct bridge's run key).
RUN_PARAMS: Final = ("sample", "key")


@pytest.fixture(scope="module", autouse=True)
def _start_selected_runs(request: pytest.FixtureRequest) -> Any:
    """Start every run the selected tests of this module need, all at once."""
    keys: list[str] = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if getattr(item, "module", None) is request.module and callspec is not None:
            for name, value in callspec.params.items():
                if name in RUN_PARAMS:
                    keys += _keys_of(value)
    _submit(keys)
    yield
    if _POOL is not None:
        # Runs not waited for (a test failed early) are not left running.
        for future in _FUTURES.values():
            future.cancel()


def result(key: str) -> SuiteRun:
    if key not in _FUTURES:
        _submit([key])
    run = _FUTURES[key].result(timeout=RUN_DEADLINE * 4)
    if isinstance(run, str):
        pytest.skip(f"{key}: {run}")
    return run


# -- correct bridges ------------------------------------------------------------

CORRECT_KEYS: Final = [k for k in _plan() if k.startswith("correct:")]


@pytest.mark.parametrize("key", CORRECT_KEYS)
def test_correct_bridge_conforms_strictly(key: str) -> None:
    name = key.split(":")[1]
    if name == "node" and shutil.which("node") is None:
        pytest.skip("node is not installed")
    run = result(key)
    assert run.exit_code == 0, run.describe()
    assert not run.failing(), run.describe()
    ran = [case for case, verdict in run.verdicts.items() if verdict == "PASS"]
    assert len(ran) >= 40, f"only {len(ran)} cases passed; the run did not exercise the bridge"


# -- broken bridges -------------------------------------------------------------


def _broken_params() -> list[Any]:
    params = []
    for sample, (_, row) in BROKEN.items():
        marks = []
        if row.get("suite_issue"):
            marks.append(pytest.mark.xfail(reason=row["suite_issue"], strict=False))
        params.append(pytest.param(sample, id=sample, marks=marks))
    return params


# Frameworks some enhanced probes need; without them the suite SKIPs those probes.
FRAMEWORKS: Final = ("pandas", "numpy")


def _skip_if_framework_absent(run: SuiteRun, case_id: str) -> None:
    """An expected case SKIPped for a framework this machine lacks is not the sample's doing."""
    message = run.messages.get(case_id, "")
    if run.verdicts.get(case_id) == "SKIP" and "frameworks_available" in message:
        absent = [name for name in FRAMEWORKS if importlib.util.find_spec(name) is None]
        if any(name in message for name in absent):
            pytest.skip(f"{case_id}: {message}")


@pytest.mark.parametrize("sample", _broken_params())
def test_broken_bridge_fails_exactly_its_cases(sample: str) -> None:
    row = _broken(sample)
    run = result(f"broken:{sample}")
    failing = run.failing()
    for case_id, verdicts in row["expect"].items():
        assert case_id in run.verdicts, f"{case_id} did not run\n{run.describe()}"
        _skip_if_framework_absent(run, case_id)
        assert run.verdicts[case_id] in verdicts, (
            f"{sample}: {case_id} is {run.verdicts[case_id]}, expected one of {verdicts}\n"
            f"{run.describe()}"
        )
        assert run.messages.get(case_id), f"{sample}: {case_id} failed without saying why"
    allowed = set(row["expect"]) | set(row["also"])
    # With each case's own message: a flaky unrelated failure must say why.
    unrelated = {
        case: f"{v}: {run.messages.get(case, '')}"
        for case, v in failing.items()
        if case not in allowed
    }
    assert not unrelated, f"{sample}: unrelated cases failed: {unrelated}\n{run.describe()}"
    if row["level"] == "required":
        assert run.exit_code == 1, run.describe()
    else:
        # A SHOULD-level defect passes the run, and fails it under --strict.
        assert run.exit_code == 0, run.describe()
        strict = result(f"broken:{sample}:strict")
        assert strict.exit_code == 1, strict.describe()
        for case_id in row["expect"]:
            assert strict.verdicts.get(case_id) == "NON-STRICT", strict.describe()


# -- coverage and bookkeeping ------------------------------------------------------


def _listed_cases() -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "snakepit_harness", "conformance", "--list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    cases = []
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1].startswith("§"):
            cases.append(
                {"id": fields[0], "level": fields[2], "profiles": set(fields[3].split(","))}
            )
    assert cases, f"`conformance --list` listed nothing:\n{proc.stdout}{proc.stderr}"
    return cases


def _exempt() -> dict[str, str]:
    """Cases the catalogs declare not independently failable, with the reasons."""
    return {
        entry["case"]: entry["reason"]
        for catalog in CATALOGS.values()
        for entry in catalog.get("not_independently_failable", [])
    }


def test_every_required_case_can_fail() -> None:
    """Every required case of every profile and transport has a sample that must fail it."""
    required = {c["id"] for c in _listed_cases() if c["level"] == "required"}
    covered = {
        case_id
        for _, row in BROKEN.values()
        if row["level"] == "required"
        for case_id, verdicts in row["expect"].items()
        if set(verdicts) - {"NON-STRICT"}
    }
    missing = required - covered - set(_exempt())
    assert not missing, f"required cases no broken sample bridge is expected to fail: {missing}"


def test_every_recommended_case_can_grade_non_strict() -> None:
    """Every recommended case of every profile and transport has a sample it grades NON-STRICT."""
    recommended = {c["id"] for c in _listed_cases() if c["level"] == "recommended"}
    covered = {
        case_id
        for _, row in BROKEN.values()
        for case_id, verdicts in row["expect"].items()
        if "NON-STRICT" in verdicts
    }
    missing = recommended - covered - set(_exempt())
    assert not missing, f"recommended cases no sample bridge is expected to downgrade: {missing}"


def test_catalogs_name_only_real_cases_and_justify_every_exemption() -> None:
    listed = {c["id"]: c for c in _listed_cases()}
    named = {c for _, row in BROKEN.values() for c in [*row["expect"], *row["also"]]}
    unknown = named - set(listed)
    assert not unknown, f"the catalogs name case ids the suite does not have: {unknown}"
    for kind, catalog in CATALOGS.items():
        for entry in catalog.get("not_independently_failable", []):
            case = listed.get(entry["case"])
            assert case is not None, f"{kind}: exempts {entry['case']}, which the suite lacks"
            assert case["level"] in ("required", "recommended"), f"{kind}: {entry} is info-level"
            assert entry.get("reason", "").strip(), f"{kind}: {entry['case']} has no reason"
    exempt_and_covered = set(_exempt()) & {c for _, row in BROKEN.values() for c in row["expect"]}
    assert not exempt_and_covered, (
        f"exempted as not independently failable, yet a sample fails them: {exempt_and_covered}"
    )


# Files in a catalog's folder that are not broken bridges.
NOT_SAMPLES: Final = {
    "stdio": {"python/sample_bridge.py"},
    "enhanced": {"__init__.py", "sandbox.py"},
    "grpc": {"__init__.py"},
    "bridge-service": {"__init__.py"},
}
SAMPLE_GLOBS: Final = {
    "stdio": "python/*.py",
    "enhanced": "*.py",
    "grpc": "*.py",
    "bridge-service": "*.py",
}


@pytest.mark.parametrize("kind", list(CATALOGS))
def test_catalog_readme_and_files_agree(kind: str) -> None:
    folder, catalog = CATALOG_DIRS[kind], CATALOGS[kind]
    scripts = {
        p.relative_to(folder).as_posix() for p in folder.glob(SAMPLE_GLOBS[kind])
    } - NOT_SAMPLES[kind]
    listed = {row["script"] for row in catalog["broken"]}
    assert scripts == listed, (
        f"{kind}: scripts not in catalog.json: {scripts - listed}; gone: {listed - scripts}"
    )
    assert readme_table(catalog) in (folder / "README.md").read_text(), (
        f"{folder / 'README.md'}'s table is not catalog.json's: "
        "run python -m snakepit_harness.fixtures.bridges.catalog"
    )
    for entry in catalog.get("correct", []):
        assert (folder / entry["source"]).is_file()
