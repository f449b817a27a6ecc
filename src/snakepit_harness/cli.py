"""The ``snakepit-harness`` command line: a thin edge over the subcommand modules.

Each subcommand lives in its own module, which exposes
``register(subparsers) -> None``; it adds its parser(s) and sets
``handler=<function(args) -> int>`` as a default.  Modules keep heavy imports
(grpc, locust, hypothesis) inside their handlers so that ``--help`` stays fast
and works without the optional extras.

The bridge command line comes after ``--`` and reaches handlers as
``args.bridge_cmd`` (a list, empty when none was given).

Exit codes shared by every subcommand: 0 success, 1 the bridge failed a check,
2 the harness could not do its job (bad usage, missing dependency, no cases),
3 a load-test limit was breached, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Final

from . import __version__
from .errors import HarnessError

__all__ = ["EXIT_ERROR", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "main"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_ERROR: Final = 2
EXIT_LIMIT_BREACHED: Final = 3
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, what shells report for Ctrl-C

# The modules that provide subcommands, in the order `--help` lists them.
SUBCOMMAND_MODULES: Final = (
    "snakepit_harness.conformance.cli",
    "snakepit_harness.send",
    "snakepit_harness.fuzz.cli",
    "snakepit_harness.loadtests.cli",
)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snakepit-harness",
        description="Test and conformance harness for Snakepit bridges. "
        "Put the bridge's command line after `--`.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    for module_name in SUBCOMMAND_MODULES:
        module = importlib.import_module(module_name)
        module.register(subparsers)
    return parser


def split_bridge_command(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``argv`` at the first ``--``: (harness options, bridge command line)."""
    argv = list(argv)
    if "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1 :]
    return argv, []


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    own_args, bridge_cmd = split_bridge_command(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(own_args)
    args.bridge_cmd = bridge_cmd
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    # A harness stopped by SIGTERM cleans up exactly as on Ctrl-C: the
    # transports' context managers kill every bridge process group.
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    # A shell without job control starts background commands with SIGINT
    # ignored (POSIX), and Python keeps it so: then `kill -INT` could not stop
    # a run and its bridges.  Every command must clean up when told to stop,
    # so the harness always listens to SIGINT.
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("snakepit-harness: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except HarnessError as exc:
        print(f"snakepit-harness: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # Whoever read our output went away (`... | head`): stop quietly, as
        # Unix tools do.  Point stdout at /dev/null so the interpreter's final
        # flush does not raise again on the way out.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, previous)
        if previous_int is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
