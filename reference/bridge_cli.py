"""Command-line plumbing shared by the reference stdio bridges (PROTOCOL §5.5).

``make_parser`` builds the conventional options (``--protocol``, ``--quiet``,
``--mode``, ``--max-frame-size``, ``--adapter``); ``load_adapter`` turns
``module.Class``, ``module:Class`` or ``path/to/file.py:Class`` into an
adapter class;
``serve`` runs a handler with the parsed options; ``run_bridge`` is the whole
``main()`` of a bridge.  Nothing here imports msgpack: the v1 bridge must run
on the standard library alone.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Final

from snakepit_harness.protocol import DEFAULT_MAX_FRAME_SIZE

from .adapter import BaseCommandHandler
from .protocol import PROTOCOL_CHOICES, CodecNotAvailable, ProtocolHandler, claim_stdout

__all__ = [
    "EXIT_USAGE",
    "AdapterLoadError",
    "add_adapter_option",
    "load_adapter",
    "make_parser",
    "run_bridge",
    "serve",
    "split_adapter_spec",
    "whole_number",
]

# Exit status for a bridge that cannot start (bad options, adapter not found),
# the argparse convention.
EXIT_USAGE: Final = 2


class AdapterLoadError(ValueError):
    """``--adapter`` does not name a usable adapter class."""


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number of at least ``minimum`` (argparse names the option)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def make_parser(
    prog: str,
    description: str,
    *,
    protocols: Sequence[str] = PROTOCOL_CHOICES,
    adapter: bool = True,
) -> argparse.ArgumentParser:
    """The bridges' conventional options; ``protocols`` narrows ``--protocol`` (v1: json, auto)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--protocol",
        choices=list(protocols),
        default="auto",
        help="payload codec; 'auto' starts in JSON and honours a negotiation frame (default: auto)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no informational lines on stderr (errors still)"
    )
    parser.add_argument(
        "--mode",
        default=None,
        metavar="MODE",
        help="accepted for compatibility with Snakepit (e.g. pool-worker) and ignored",
    )
    parser.add_argument(
        "--max-frame-size",
        type=whole_number(1),
        default=DEFAULT_MAX_FRAME_SIZE,
        metavar="BYTES",
        help=f"largest request payload accepted (default: {DEFAULT_MAX_FRAME_SIZE})",
    )
    if adapter:
        add_adapter_option(parser, "serve this adapter instead of the generic commands")
    parser.set_defaults(codecs=tuple(p for p in protocols if p != "auto"))
    return parser


def add_adapter_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--adapter``, the same on every bridge: ``what`` says what it replaces."""
    parser.add_argument(
        "--adapter",
        default=None,
        metavar="MODULE.CLASS",
        help=f"{what}: a BaseCommandHandler subclass, as MODULE.CLASS or MODULE:CLASS "
        "(or FILE.py:CLASS for a file)",
    )


def _is_path(module_part: str) -> bool:
    return module_part.endswith(".py") or os.sep in module_part or "/" in module_part


def split_adapter_spec(spec: str) -> tuple[str, str]:
    """``(module, class)`` named by an ``--adapter`` value.

    Three forms: ``module:Class`` (the class part may be dotted, for a nested
    class), ``path/to/file.py:Class``, and ``module.Class``, the form
    Snakepit's own documents use, where the last dot splits module from class.
    Raises :class:`AdapterLoadError` for anything else.
    """
    module_part, colon, class_part = spec.rpartition(":")
    if colon:
        if module_part and class_part:
            return module_part, class_part
    elif _is_path(spec):
        raise AdapterLoadError(
            f"--adapter {spec!r} looks like a file: name the class after a colon, FILE.py:CLASS"
        )
    else:
        module_part, dot, class_part = spec.rpartition(".")
        if dot and module_part and class_part:
            return module_part, class_part
    raise AdapterLoadError(
        f"--adapter wants MODULE.CLASS or MODULE:CLASS (or FILE.py:CLASS), got {spec!r}"
    )


def _import_module(module_part: str) -> object:
    if _is_path(module_part):
        path = Path(module_part)
        if not path.is_file():
            raise AdapterLoadError(f"--adapter: the file {module_part!r} does not exist")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise AdapterLoadError(f"cannot load {module_part!r} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(module_part)
    except ModuleNotFoundError as exc:
        if exc.name != module_part.split(".", maxsplit=1)[0] or os.getcwd() in sys.path:
            raise
    # A console script's sys.path starts with its bin directory, not the current
    # one; `python -m` would have found a module here, so look here too.
    sys.path.insert(0, os.getcwd())
    return importlib.import_module(module_part)


def load_adapter(spec: str) -> type[BaseCommandHandler]:
    """Import the class ``spec`` names (see :func:`split_adapter_spec`); it must be
    a BaseCommandHandler subclass."""
    module_part, class_part = split_adapter_spec(spec)
    try:
        module = _import_module(module_part)
    except AdapterLoadError:
        raise
    except ModuleNotFoundError as exc:
        raise AdapterLoadError(
            f"--adapter {spec!r}: cannot import module {module_part!r}: {exc} "
            "(is it on PYTHONPATH or in the current directory?)"
        ) from exc
    except Exception as exc:
        raise AdapterLoadError(
            f"--adapter {spec!r}: importing module {module_part!r} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    target: object = module
    for part in class_part.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AdapterLoadError(
                f"--adapter {spec!r}: module {module_part!r} has no {class_part!r}"
            ) from None
    if not isinstance(target, type) or not issubclass(target, BaseCommandHandler):
        raise AdapterLoadError(
            f"--adapter {spec!r}: {class_part} is not a subclass of "
            "snakepit_bridge.BaseCommandHandler"
        )
    return target


def serve(handler: BaseCommandHandler, args: argparse.Namespace) -> None:
    """Serve ``handler`` with the options parsed by :func:`make_parser`."""
    ProtocolHandler(
        handler,
        protocol=args.protocol,
        quiet=args.quiet,
        max_frame_size=args.max_frame_size,
        codecs=getattr(args, "codecs", ("json", "msgpack")),
    ).run()


def _exit_now(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def run_bridge(
    parser: argparse.ArgumentParser,
    default_handler: Callable[[], BaseCommandHandler],
    argv: Sequence[str] | None = None,
) -> int:
    """A bridge's ``main()``: parse, load the adapter, serve; returns the exit status."""
    args = parser.parse_args(argv)
    # Until ProtocolHandler.run() takes over, a SIGTERM/SIGINT (a host giving up
    # during a slow adapter import) still ends the bridge with status 0 (§5.3).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_now)
    # Before any adapter code runs, so even its import-time prints miss the frames (§2.7).
    claim_stdout()
    try:
        spec = getattr(args, "adapter", None)
        handler = load_adapter(spec)() if spec else default_handler()
        serve(handler, args)
    except (AdapterLoadError, CodecNotAvailable) as exc:
        sys.stderr.write(f"{parser.prog}: {exc}\n")
        return EXIT_USAGE
    return 0
