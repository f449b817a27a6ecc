"""The reference enhanced bridge: ``snakepit-enhanced-bridge`` (profile ``enhanced``).

Everything the v2 bridge does (JSON, MessagePack, §3.4 negotiation, the
generic commands) plus the §7 commands of
:class:`~snakepit_bridge.enhanced.EnhancedCommandHandler`.  Options beyond the
v2 ones set the safety policy, the store's cap and the result limits;
``--show-policy`` prints the allowlist and denylist in force and exits, so a
user can read what is refused before changing it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import Final

from .bridge_cli import make_parser, run_bridge, whole_number
from .enhanced import (
    DEFAULT_DENYLIST,
    DEFAULT_LIMITS,
    DEFAULT_MAX_STORED,
    EnhancedCommandHandler,
    SafetyPolicy,
    SerializationLimits,
    default_allowed_modules,
)
from .enhanced.rules import is_module_name

__all__ = ["LIMIT_OPTIONS", "build_handler", "build_parser", "main"]


def _module_name(text: str) -> str:
    if not is_module_name(text):
        raise argparse.ArgumentTypeError(f"not a module name: {text!r}")
    return text


# The result limits of §7.7 as options: (option, SerializationLimits field, what it bounds).
LIMIT_OPTIONS: Final = (
    ("--max-items", "max_items", "items of a list/dict shown in results"),
    ("--max-depth", "max_depth", "nesting shown in results"),
    ("--head-rows", "head_rows", "rows of a DataFrame/Series head"),
    ("--max-repr", "max_repr", "characters of string_repr"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        "snakepit-enhanced-bridge",
        "Reference Snakepit enhanced bridge: the v2 bridge plus safe calls into "
        "allowlisted modules, a per-session object store and pipelines (PROTOCOL §7).",
        adapter=False,
    )
    safety = parser.add_argument_group("safety (PROTOCOL §7.2)")
    safety.add_argument(
        "--allow-module",
        action="append",
        type=_module_name,
        default=[],
        metavar="NAME",
        help="also allow this module and its submodules (repeatable); default allowlist: "
        + ", ".join(default_allowed_modules()),
    )
    safety.add_argument(
        "--only-modules",
        action="store_true",
        help="allow only the --allow-module names, not the default allowlist",
    )
    safety.add_argument(
        "--deny",
        action="append",
        default=[],
        metavar="NAME",
        help="add a dotted name (module, function, class, method; * globs) to the denylist",
    )
    safety.add_argument(
        "--undeny",
        action="append",
        default=[],
        metavar="NAME",
        help="remove an entry from the default denylist (at your own risk; see --show-policy)",
    )
    safety.add_argument(
        "--show-policy",
        action="store_true",
        help="print the allowlist and denylist in force, then exit",
    )
    store = parser.add_argument_group("store and results (PROTOCOL §7.3, §7.7)")
    store.add_argument(
        "--max-stored",
        type=whole_number(0),
        default=DEFAULT_MAX_STORED,
        metavar="N",
        help=f"objects per session before store_full (default: {DEFAULT_MAX_STORED})",
    )
    for option, name, what in LIMIT_OPTIONS:
        default = getattr(DEFAULT_LIMITS, name)
        store.add_argument(
            option,
            dest=name,
            type=whole_number(0),
            default=default,
            metavar="N",
            help=f"{what} (default: {default})",
        )
    return parser


def build_handler(
    args: argparse.Namespace,
    *,
    handler_class: type[EnhancedCommandHandler] = EnhancedCommandHandler,
    policy_class: type[SafetyPolicy] = SafetyPolicy,
) -> EnhancedCommandHandler:
    """The handler the parsed options describe.

    ``handler_class`` and ``policy_class`` are seams for the broken sample
    bridges in ``fixtures/enhanced_bridges/``.
    """
    allowed = [] if args.only_modules else list(default_allowed_modules())
    denylist = [entry for entry in DEFAULT_DENYLIST if entry not in set(args.undeny)]
    policy = policy_class(
        allowed_modules=(*allowed, *args.allow_module),
        denylist=(*denylist, *args.deny),
    )
    limits = SerializationLimits(**{name: getattr(args, name) for _, name, _ in LIMIT_OPTIONS})
    return handler_class(policy, max_stored=args.max_stored, limits=limits)


def main(
    argv: Sequence[str] | None = None,
    *,
    handler_class: type[EnhancedCommandHandler] = EnhancedCommandHandler,
    policy_class: type[SafetyPolicy] = SafetyPolicy,
) -> int:
    """Run the bridge; ``handler_class`` and ``policy_class`` as in :func:`build_handler`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.only_modules and not args.allow_module:
        parser.error("--only-modules needs at least one --allow-module")
    if args.show_policy:
        policy = build_handler(args, handler_class=handler_class, policy_class=policy_class).policy
        lines = ["allowed modules (and their submodules):"]
        lines += [f"  {name}" for name in policy.allowed_modules]
        lines += ["denylist:"] + [f"  {entry}" for entry in policy.denylist]
        with contextlib.suppress(BrokenPipeError):  # `| head` is fine
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
        return 0
    return run_bridge(
        parser,
        lambda: build_handler(args, handler_class=handler_class, policy_class=policy_class),
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
