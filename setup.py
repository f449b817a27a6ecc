"""Builds the optional C fast loop of the reference bridges; everything else is in pyproject.toml.

``snakepit_bridge._fastloop`` runs the common case of the stdio server loop in
C (see reference/protocol.py).  The bridges are complete without it, so a
machine without a C compiler (or without Python's headers) still installs:
the build is attempted, and a failure is a warning, not an error.  Set
``SNAKEPIT_BRIDGE_NO_EXTENSION=1`` to skip it on purpose.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

SKIP_ENV = "SNAKEPIT_BRIDGE_NO_EXTENSION"
# What a compiler or a missing header can raise while building one extension.
BUILD_FAILURES = (CCompilerError, ExecError, PlatformError, OSError, ValueError)


class OptionalBuildExt(build_ext):
    """Build each extension if this machine can; say so and go on if it cannot."""

    def run(self) -> None:
        try:
            super().run()
        except BUILD_FAILURES as exc:
            self._skipped(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except BUILD_FAILURES as exc:
            self._skipped(exc)

    @staticmethod
    def _skipped(exc: BaseException) -> None:
        print(
            f"warning: the optional C fast loop was not built ({exc}); "
            "the reference bridges run in pure Python",
            file=sys.stderr,
        )


extensions = []
if os.environ.get(SKIP_ENV, "") in ("", "0"):
    extensions.append(
        Extension(
            "snakepit_bridge._fastloop",
            sources=["reference/_fastloop.c"],
            optional=True,
        )
    )

setup(ext_modules=extensions, cmdclass={"build_ext": OptionalBuildExt})
