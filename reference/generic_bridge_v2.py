"""The reference v2 bridge: ``snakepit-generic-bridge-v2`` (profile ``v2``).

JSON and MessagePack (MessagePack needs the ``msgpack`` extra), §3.4
negotiation in the default ``--protocol auto``, the generic commands, and
``--adapter module.Class`` (or ``module:Class``) to serve any
:class:`~snakepit_bridge.BaseCommandHandler` subclass instead.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .bridge_cli import make_parser, run_bridge
from .generic import GenericCommandHandler

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(
        "snakepit-generic-bridge-v2",
        "Reference Snakepit v2 bridge: JSON or MessagePack frames on stdio, "
        "generic commands or your adapter (--adapter module.Class).",
    )
    return run_bridge(parser, GenericCommandHandler, argv)


if __name__ == "__main__":
    sys.exit(main())
