"""Shared pytest set-up: the fuzz hypothesis profiles (dev, ci) from fuzz/profiles.py."""

from __future__ import annotations

import contextlib

with contextlib.suppress(ImportError):  # hypothesis is an optional extra
    from snakepit_harness.fuzz.profiles import register_profiles

    register_profiles()
