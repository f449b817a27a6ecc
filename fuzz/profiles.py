"""Hypothesis profiles for the fuzz tests: ``dev`` (the default run) and ``ci`` (tox -e fuzz).

:func:`active_profile` registers both and returns the one named by
``HYPOTHESIS_PROFILE`` (``dev`` when unset).  It does not *load* it: the
counts are per property against a real bridge process, far below what
in-process hypothesis tests elsewhere should run, so only the fuzz tests pass
these settings to the runner.  ``dev`` keeps the fuzz area of the default test
run near a minute on a loaded two-core machine; ``ci`` is the bounded pass of
a few hundred examples per property against each reference bridge.
"""

from __future__ import annotations

import os
from typing import Final

from hypothesis import HealthCheck, settings

__all__ = ["CI_EXAMPLES", "DEV_EXAMPLES", "PROFILE_ENV", "active_profile", "register_profiles"]

PROFILE_ENV: Final = "HYPOTHESIS_PROFILE"
DEV_EXAMPLES: Final = 10
CI_EXAMPLES: Final = 200


def register_profiles() -> None:
    """Register the ``dev`` and ``ci`` profiles (idempotent)."""
    # Bridges are real processes: hangs are caught by the transport's deadlines,
    # and slow examples are the bridge's pace, not a strategy's fault.
    lenient = list(HealthCheck)
    settings.register_profile(
        "dev", max_examples=DEV_EXAMPLES, deadline=None, suppress_health_check=lenient
    )
    settings.register_profile(
        "ci",
        max_examples=CI_EXAMPLES,
        deadline=None,
        suppress_health_check=lenient,
        database=None,
    )


def active_profile() -> settings:
    """The profile named by ``HYPOTHESIS_PROFILE`` (``dev`` when unset or not ours)."""
    register_profiles()
    name = os.environ.get(PROFILE_ENV, "dev")
    if name not in ("dev", "ci"):
        name = "dev"
    return settings.get_profile(name)
