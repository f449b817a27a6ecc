"""The reference v1 bridge: ``snakepit-generic-bridge`` (profile ``v1``).

The deprecated generic bridge: JSON only, standard library only (it must run
after ``pip install .`` without msgpack), ping/echo/compute/info.  It accepts
``--mode pool-worker`` and ignores it, as Snakepit passes it.  ``--protocol``
takes ``json`` or ``auto``; in both it speaks JSON, and in ``auto`` it answers
a negotiation frame with ``json`` (see :mod:`snakepit_bridge.protocol`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import ClassVar

from .bridge_cli import make_parser, run_bridge
from .generic import GenericCommandHandler

__all__ = ["GenericV1CommandHandler", "main"]


class GenericV1CommandHandler(GenericCommandHandler):
    """The generic commands under the v1 bridge's name."""

    bridge_name: ClassVar[str] = "snakepit-generic-bridge"
    bridge_version: ClassVar[str] = "1.0.0"


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(
        "snakepit-generic-bridge",
        "Reference Snakepit v1 bridge: JSON frames on stdio, generic commands.",
        protocols=("json", "auto"),
        adapter=False,
    )
    return run_bridge(parser, GenericV1CommandHandler, argv)


if __name__ == "__main__":
    sys.exit(main())
