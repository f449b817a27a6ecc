"""Fuzzing real bridge processes: reference bridges hold, planted defects are caught and replay.

The defects live in tests/fuzz_bridges/toy_bridge.py, each showing only on an
unusual input (a particular unicode string, a number past 2^53, a write split
inside a header or a UTF-8 character, ...).  Each must be caught within the
default example budget, and the regression file written for it must replay as
a failure with ``snakepit-harness replay`` while the same bridge without the
defect passes it: the file pins the defect, not noise.  Example counts for the
reference bridges come from the hypothesis profile (``HYPOTHESIS_PROFILE=dev``
by default, ``ci`` in ``tox -e fuzz``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from snakepit_harness.fuzz.cli import default_bridge
from snakepit_harness.fuzz.defaults import DEFAULT_MAX_EXAMPLES, PROPERTY_NAMES
from snakepit_harness.fuzz.machines import MACHINES
from snakepit_harness.fuzz.profiles import PROFILE_ENV, active_profile
from snakepit_harness.fuzz.properties import PROPERTIES
from snakepit_harness.fuzz.runner import FuzzSession, PropertyOutcome

pytestmark = pytest.mark.fuzz

PY = sys.executable
TOY = str(Path(__file__).parent / "fuzz_bridges" / "toy_bridge.py")

# A short shrink budget keeps the suite quick; the failure found is the same.
TEST_SHRINK_BUDGET = 2.0


def toy(codec: str, *extra: str) -> list[str]:
    argv = [PY, TOY, *extra]
    return argv if codec == "negotiate" else [*argv, "--protocol", codec]


def run_session(
    argv: list[str], profile: str, codec: str, *, only: tuple[str, ...] = (), **options: object
) -> list[PropertyOutcome]:
    session = FuzzSession(
        profile=profile,
        codec_mode=codec,
        argv=argv,
        only=only,
        shrink_budget=TEST_SHRINK_BUDGET,
        **options,  # type: ignore[arg-type]
    )
    return list(session.run())


def replay(path: Path, argv: list[str], *flags: str) -> subprocess.CompletedProcess[str]:
    """``replay FILE -- CMD``: the file's own profile and codec, unless ``flags`` say otherwise."""
    return subprocess.run(
        [PY, "-m", "snakepit_harness", "replay", str(path), "--timeout", "3", *flags, "--", *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_property_names_match_the_registries() -> None:
    names = [p.name for p in PROPERTIES] + list(MACHINES)
    assert set(names) <= set(PROPERTY_NAMES)
    for prop in PROPERTIES:
        assert prop.body.__doc__ and prop.statement.endswith(".")


REFERENCE_CONFIGS = [("v1", "json"), ("v2", "msgpack"), ("v2", "negotiate"), ("enhanced", "json")]


@pytest.mark.parametrize(("profile", "codec"), REFERENCE_CONFIGS)
def test_reference_bridge_holds_every_property(profile: str, codec: str) -> None:
    outcomes = run_session(
        default_bridge(profile, codec),
        profile,
        codec,
        seed=20261128,
        max_examples=None,  # the hypothesis profile decides
        base_settings=active_profile(),
    )
    assert {o.prop.name for o in outcomes} >= {"echo", "compute", "split-writes"}
    failures = [f"{o.prop.name}: {o.failure or o.error}" for o in outcomes if not o.passed]
    assert not failures
    assert all(o.examples > 0 for o in outcomes)


def test_a_time_boxed_run_stops_cleanly_at_its_budget() -> None:
    # hypothesis 6.170 reported every budget stop as "inconsistent data
    # generation", so each --max-time run ended in ERROR on a correct bridge.
    outcomes = run_session(
        default_bridge("v2", "json"),
        "v2",
        "json",
        only=("invalid-frames", "split-writes", "pipelined-session"),
        seed=20261128,
        max_examples=1_000_000,  # only the budget can end the search
        max_time=6.0,
    )
    assert [o.prop.name for o in outcomes] == [
        "invalid-frames",
        "split-writes",
        "pipelined-session",
    ]
    for outcome in outcomes:
        assert outcome.passed and outcome.error is None, (outcome.prop.name, outcome.error)
        assert outcome.examples > 0
    assert any("stopped at the time budget" in o.notes for o in outcomes)


# (defect, the property that must catch it, profile, codec, extra options)
DEFECTS: list[tuple[str, str, str, str, dict[str, float]]] = [
    ("unicode", "echo", "v2", "json", {}),
    # Issue 14.2: an edge class near the top of its range (docs/fuzz.md's table).
    ("nesting:70", "echo", "v2", "json", {}),
    ("bigint", "compute", "v2", "json", {}),
    ("bigint", "echo", "v2", "msgpack", {}),
    ("split-header", "split-writes", "v2", "json", {"response_timeout": 1.0}),
    ("split-utf8", "split-writes", "v2", "json", {"response_timeout": 1.0}),
    ("hang", "echo", "v2", "json", {"response_timeout": 1.0}),
    ("crash-array", "invalid-frames", "v2", "json", {}),
    ("eof-hang", "invalid-frames", "v2", "json", {}),
    ("reorder", "pipelined-session", "v2", "json", {}),
    ("store-session", "store-model", "enhanced", "json", {}),
]
# More planted defects, run in the CI pass (HYPOTHESIS_PROFILE=ci) only, to keep the
# default run short; their oracles are covered in-process by tests/test_fuzz_wire.py.
if os.environ.get(PROFILE_ENV) == "ci":
    DEFECTS += [
        ("negzero", "echo", "v2", "json", {}),
        ("bigint", "echo", "v2", "json", {}),
        ("int-divide", "compute", "v2", "msgpack", {}),
        ("big-binary:1000000", "echo", "v2", "msgpack", {}),
        ("many-keys:4000", "echo", "v2", "json", {}),
    ]


@pytest.mark.parametrize(
    ("defect", "prop", "profile", "codec", "options"),
    DEFECTS,
    ids=[f"{d[0]}-{d[1]}-{d[3]}" for d in DEFECTS],
)
def test_planted_defect_is_caught_and_its_regression_replays(
    tmp_path: Path, defect: str, prop: str, profile: str, codec: str, options: dict[str, float]
) -> None:
    bad = toy(codec, "--defect", defect)
    (outcome,) = run_session(
        bad,
        profile,
        codec,
        only=(prop,),
        seed=7,
        max_examples=DEFAULT_MAX_EXAMPLES,
        save_failures=tmp_path,
        **options,
    )
    assert outcome.failure is not None, f"{defect} not caught in {outcome.examples} examples"
    assert outcome.regression is not None
    doc = json.loads(outcome.regression.read_text())
    assert doc["format"] == "snakepit-golden/1" and doc["id"].startswith("fuzz.")
    explanation = outcome.regression.with_suffix(".md").read_text()
    assert outcome.prop.statement in explanation and "--seed 7" in explanation

    # The file alone says under which profile and codec it runs (issue 14.3).
    failing = replay(outcome.regression, bad)
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert f"--profile {profile} --codec {codec}" in failing.stdout
    passing = replay(outcome.regression, toy(codec))
    assert passing.returncode == 0, passing.stdout + passing.stderr
    if codec != "json":
        # An explicit flag wins, and one that selects nothing is an error saying why.
        refused = replay(outcome.regression, toy(codec), "--codec", "json")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "replay selects nothing" in refused.stderr
        assert f"under {codec}" in refused.stderr and "--codec json" in refused.stderr


def _processes_with(tag: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if tag.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_hung_bridge_is_reported_in_time_and_nothing_is_left_behind() -> None:
    tag = f"fuzz-test-{uuid.uuid4().hex}"
    done = subprocess.run(
        [
            PY,
            "-m",
            "snakepit_harness",
            "fuzz",
            "--profile",
            "v2",
            "--property",
            "echo",
            "--seed",
            "7",
            "--timeout",
            "1",
            "--max-time",
            "5",
            "--",
            *toy("json", "--defect", "hang", "--tag", tag),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "seed 7" in done.stdout
    assert "HANG" in done.stdout
    assert _processes_with(tag) == []


def test_sigterm_stops_a_run_at_once_and_leaves_nothing_behind() -> None:
    tag = f"fuzz-test-{uuid.uuid4().hex}"
    process = subprocess.Popen(
        [
            PY,
            "-m",
            "snakepit_harness",
            "fuzz",
            "--profile",
            "v2",
            "--max-examples",
            "100000",
            "--property",
            "invalid-frames",
            "--",
            *toy("json", "--tag", tag),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _processes_with(tag) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # well inside the run
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, err
    assert "interrupted" in err
    assert _processes_with(tag) == []


def test_cli_passes_a_correct_bridge_and_prints_the_seed() -> None:
    done = subprocess.run(
        [
            PY,
            "-m",
            "snakepit_harness",
            "fuzz",
            "--profile",
            "v2",
            "--property",
            "compute",
            "--property",
            "echo",
            "--max-examples",
            "30",
            "--",
            *toy("json"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(repeat with --seed " in done.stdout
    assert done.stdout.count("PASS") == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "v1", "--codec", "msgpack"], "JSON only"),
        (["--profile", "v2", "--property", "nope"], "no property nope"),
        (["--profile", "v2", "--max-examples", "0"], "must be positive"),
        (["--profile", "v2", "--", "/nonexistent/bridge"], "cannot start"),
    ],
)
def test_cli_usage_errors_exit_two(args: list[str], message: str) -> None:
    done = subprocess.run(
        [PY, "-m", "snakepit_harness", "fuzz", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr


def test_grpc_sessions_hold_on_the_reference_and_catch_a_defect(tmp_path: Path) -> None:
    (good,) = run_session(
        default_bridge("grpc", "json"),
        "grpc",
        "json",
        seed=3,
        max_examples=None,
        base_settings=active_profile(),
    )
    assert good.passed, good.failure or good.error
    adapter = str(Path(TOY).parent)
    bad = [
        "env",
        f"PYTHONPATH={adapter}",
        PY,
        "-m",
        "snakepit_bridge.grpc_bridge",
        "--adapter",
        "grpc_defects:BigIntEcho",
    ]
    (caught,) = run_session(
        bad, "grpc", "json", seed=3, max_examples=DEFAULT_MAX_EXAMPLES, save_failures=tmp_path
    )
    assert caught.failure is not None
    assert "expected int" in str(caught.failure)  # an integer past 2^53 came back a float
    assert caught.regression is not None and caught.regression.name.endswith(".grpc.json")
    assert json.loads(caught.regression.read_text())["calls"]
