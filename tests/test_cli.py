"""The command line's shared behaviour: help, usage errors, a closed output pipe."""

from __future__ import annotations

import subprocess
import sys

PY = sys.executable


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "snakepit_harness", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_every_subcommand() -> None:
    done = harness("--help")
    assert done.returncode == 0
    for name in ("check", "conformance", "replay", "send", "fuzz", "load"):
        assert name in done.stdout


def test_no_subcommand_is_a_usage_error() -> None:
    done = harness()
    assert done.returncode == 2
    assert "usage" in done.stderr


def test_output_into_a_closed_pipe_ends_quietly() -> None:
    # `conformance --list | head -1`: the reader leaves after one line.
    done = subprocess.run(
        f"{PY} -m snakepit_harness conformance --list | head -1",
        shell=True,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr
    assert "BrokenPipeError" not in done.stderr
