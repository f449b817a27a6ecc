"""``snakepit-harness fuzz``: property-based fuzzing of one bridge, from the command line.

Thin edge over :mod:`.runner`: it picks the properties for the profile, runs
each against the bridge command line given after ``--`` (the bundled
reference bridge for the profile when none is given), prints a verdict per
property and, with ``--save-failures DIR``, writes each shrunk failure as a
golden-frame regression file (``FORMAT.md``) with an explanation beside it.
The seed is always printed, so any run can be repeated with ``--seed``.

Exit status: 0 every property held; 1 a property failed; 2 the harness could
not run (bad usage, the bridge did not start, hypothesis missing).

Hypothesis is imported inside the handler so ``--help`` works without it.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time
from pathlib import Path
from typing import Final

from ..cli import EXIT_ERROR, EXIT_FAILED, EXIT_OK
from ..errors import HarnessError
from ..protocol import CODEC_MODES, GRPC_PROFILES, PROFILES
from .defaults import DEFAULT_MAX_EXAMPLES, DEFAULT_RESPONSE_TIMEOUT, PROPERTY_NAMES

__all__ = ["default_bridge", "register", "run_fuzz"]

# A seed space wide enough that two runs never share one by chance, small
# enough to type back in.
_SEED_LIMIT: Final = 2**32


def default_bridge(profile: str, codec_mode: str) -> list[str]:
    """The bundled reference bridge for ``profile``, started for ``codec_mode``.

    The rows are the ones ``snakepit-harness check`` runs (one table for both).
    """
    from ..conformance.targets import CHECK_TARGETS

    wanted = "-" if profile in GRPC_PROFILES else codec_mode
    for row in CHECK_TARGETS:
        if row.profile == profile and row.codec == wanted:
            return list(row.command())
    raise HarnessError(f"no reference bridge for profile {profile} with codec {codec_mode}")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fuzz",
        help="property-based fuzzing of a bridge (hypothesis)",
        description="Generate requests, values and broken frames, check the bridge's answers "
        "against the spec, shrink any failure to a minimal input and optionally save it as a "
        "golden-frame regression. Without `-- BRIDGE CMD...` the profile's reference bridge "
        "is fuzzed.",
    )
    parser.add_argument("--profile", choices=PROFILES, required=True, help="the profile claimed")
    parser.add_argument(
        "--codec",
        choices=CODEC_MODES,
        default="json",
        help="json or msgpack from the first frame (the bridge must be started so: the "
        "reference bridges get --protocol msgpack), or negotiate (§3.4, msgpack preferred); "
        "default: json",
    )
    parser.add_argument(
        "--max-examples",
        type=int,
        default=DEFAULT_MAX_EXAMPLES,
        metavar="N",
        help=f"examples per property (default: {DEFAULT_MAX_EXAMPLES})",
    )
    parser.add_argument(
        "--max-time",
        type=float,
        default=None,
        metavar="S",
        help="wall-time budget in seconds for the whole run, shared by the properties "
        "(shrinking a failure may add up to a minute)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--save-failures",
        type=Path,
        default=None,
        metavar="DIR",
        help="write each shrunk failure as a golden-frame file (and a .md explanation) here",
    )
    parser.add_argument(
        "--property",
        action="append",
        default=[],
        dest="properties",
        metavar="NAME",
        help=f"run only this property (repeatable): {', '.join(PROPERTY_NAMES)}",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_RESPONSE_TIMEOUT,
        metavar="S",
        help="seconds without an answer after which the bridge counts as hung "
        f"(default: {DEFAULT_RESPONSE_TIMEOUT:g})",
    )
    parser.set_defaults(handler=run_fuzz)


def _say(text: str) -> None:
    print(text, flush=True)


def _warn(text: str) -> None:
    # stderr: what the harness worked around is not part of the verdict on stdout.
    print(f"snakepit-harness fuzz: {text}", file=sys.stderr, flush=True)


def run_fuzz(args: argparse.Namespace) -> int:
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        print(
            "snakepit-harness fuzz: needs hypothesis: pip install 'snakepit-harness[fuzz]'",
            file=sys.stderr,
        )
        return EXIT_ERROR
    from .runner import STOP, FuzzSession

    if args.max_examples < 1 or (args.max_time is not None and args.max_time <= 0):
        print(
            "snakepit-harness fuzz: --max-examples and --max-time must be positive", file=sys.stderr
        )
        return EXIT_ERROR
    if args.profile == "v1" and args.codec != "json":
        print(
            "snakepit-harness fuzz: the v1 profile speaks JSON only (PROTOCOL.md, profiles)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(_SEED_LIMIT)
    argv = args.bridge_cmd or default_bridge(args.profile, args.codec)
    _say(
        f"fuzz: profile {args.profile}, codec {args.codec}, seed {seed} (repeat with --seed {seed})"
    )
    _say(f"bridge: {' '.join(argv)}")
    session = FuzzSession(
        profile=args.profile,
        codec_mode=args.codec,
        argv=argv,
        seed=seed,
        max_examples=args.max_examples,
        max_time=args.max_time,
        response_timeout=args.timeout,
        save_failures=args.save_failures,
        only=args.properties,
        on_note=_warn,
    )
    failed = False
    started = time.monotonic()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def stop(signum: int, frame: object) -> None:
        STOP.set()  # later examples stop too, even if this interrupt is swallowed
        raise KeyboardInterrupt

    for sig in previous:
        signal.signal(sig, stop)
    try:
        for report in session.run():
            failed |= not report.passed
            _say(report.summary())
            for line in report.details():
                _say(f"    {line}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _say(
        f"fuzz: {'FAILED' if failed else 'passed'} in {time.monotonic() - started:.1f} s "
        f"(seed {seed})"
    )
    return EXIT_FAILED if failed else EXIT_OK
