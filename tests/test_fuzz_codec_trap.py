"""Issue 14.5, fuzz side: a bridge whose command line already chose its codec.

``fuzz --codec json -- bridge --protocol msgpack`` (or ``--codec negotiate``)
used to fail every property for the harness's reason: every answer was
MessagePack, read as JSON.  Now start-up notices the codec the bridge answers
in, goes on in it with a note on stderr, and a failure found there is saved
under the codec it was found in, so it replays with nothing but ``replay FILE
-- CMD``.  v1 has no other codec, so there the mistake is an error naming the
fix.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .test_fuzz_bridges import replay, toy

pytestmark = pytest.mark.fuzz

PY = sys.executable


def fuzz(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "snakepit_harness", "fuzz", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.parametrize(
    ("asked", "note"),
    [
        ("json", "answered a JSON init ping (§5.1) in MessagePack"),
        ("negotiate", "answered the negotiation frame (§3.4) in msgpack"),
    ],
)
def test_a_bridge_started_in_msgpack_is_fuzzed_in_msgpack_with_a_note(
    asked: str, note: str
) -> None:
    done = fuzz(
        "--profile", "v2", "--codec", asked, "--property", "echo", "--property", "compute",
        "--max-examples", "30", "--seed", "3", "--", *toy("msgpack"),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASS") == 2
    assert note in done.stderr and "the run goes on under msgpack" in done.stderr
    assert note not in done.stdout  # the verdict stream stays the verdicts


def test_a_bridge_that_speaks_the_codec_asked_gets_no_note() -> None:
    done = fuzz(
        "--profile", "v2", "--codec", "msgpack", "--property", "echo",
        "--max-examples", "10", "--seed", "3", "--", *toy("msgpack"),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "goes on under" not in done.stderr


def test_a_defect_found_after_the_switch_is_saved_under_msgpack_and_replays(
    tmp_path: Path,
) -> None:
    bad = toy("msgpack", "--defect", "bigint")
    done = fuzz(
        "--profile", "v2", "--codec", "json", "--property", "echo", "--seed", "7",
        "--save-failures", str(tmp_path), "--", *bad,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL  echo" in done.stdout
    (saved,) = sorted(tmp_path.glob("*.json"))
    assert json.loads(saved.read_text())["codecs"] == ["msgpack"]
    assert replay(saved, bad).returncode == 1
    passing = replay(saved, toy("msgpack"))
    assert passing.returncode == 0, passing.stdout + passing.stderr


def test_v1_against_a_msgpack_bridge_is_an_error_naming_the_fix() -> None:
    done = fuzz("--profile", "v1", "--max-examples", "5", "--", *toy("msgpack"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the v1 profile speaks JSON only" in done.stderr
    assert "--profile v2 --codec msgpack" in done.stderr


def test_garbage_is_still_the_bridges_failure_not_a_codec_switch() -> None:
    # A bridge whose answers decode in neither codec is not "speaking the other one".
    garbage = (
        "import os, sys\n"
        "while True:\n"
        "    head = os.read(0, 4)\n"
        "    if not head: sys.exit(0)\n"
        "    body = os.read(0, int.from_bytes(head, 'big'))\n"
        "    os.write(1, (3).to_bytes(4, 'big') + b'\\xc1\\xc1\\xc1')\n"
    )
    done = fuzz(
        "--profile", "v2", "--codec", "json", "--property", "echo", "--max-examples", "5",
        "--timeout", "2", "--", PY, "-c", garbage,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "goes on under" not in done.stderr
    assert "FAIL  echo" in done.stdout
