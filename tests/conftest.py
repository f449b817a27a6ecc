"""Shared pytest set-up: the fuzz hypothesis profiles (dev, ci) from fuzz/profiles.py, and
the ``both_loops`` fixture that runs bridge tests with and without the C fast loop."""

from __future__ import annotations

import contextlib

import pytest
from snakepit_bridge.protocol import FAST_LOOP_OFF_REASON, PURE_PYTHON_ENV, _fastloop

with contextlib.suppress(ImportError):  # hypothesis is an optional extra
    from snakepit_harness.fuzz.profiles import register_profiles

    register_profiles()


@pytest.fixture(params=["c-fast-loop", "python-loop"])
def both_loops(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test against bridges with the C fast loop and again with the Python loop only.

    The bridges under test are subprocesses started after this fixture, so the
    environment variable decides which loop they serve with.
    """
    if request.param == "python-loop":
        monkeypatch.setenv(PURE_PYTHON_ENV, "1")
    elif _fastloop is None:
        pytest.skip(FAST_LOOP_OFF_REASON)
    else:
        monkeypatch.delenv(PURE_PYTHON_ENV, raising=False)
    return str(request.param)
