"""The ``conformance``, ``replay`` and ``check`` subcommands (``check`` runs in check.py).

Exit codes: 0 the bridge conforms; 1 a failing verdict (FAIL, TIMEOUT, CRASH,
FRAMING, STALE, or NON-STRICT under --strict); 2 the harness could not do its
job (bad usage, bridge not startable, ERROR, zero cases selected); 130
interrupted (Ctrl-C, or SIGTERM to the harness).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, TypeVar

from snakepit_harness.errors import HarnessError
from snakepit_harness.protocol import PROFILE_TRANSPORTS, TRANSPORTS, ExitCode

from .baseline import baseline_entries, load_baseline, write_baseline
from .check import run_check
from .drivers import transport_driver
from .model import CODEC_MODES, PROFILES, Case, CaseResult, RunSettings, Verdict
from .registry import all_cases, select_cases
from .reports import case_line, failure_details, write_requested_reports, write_terminal
from .session import RunReport, SuiteSession, belongs, interrupt_all_runs, run_suite

__all__ = ["register"]

EXIT_OK: Final = ExitCode.OK
EXIT_ERROR: Final = ExitCode.ERROR

DEFAULT_TIMEOUT: Final = 10.0

T = TypeVar("T")


def _positive(text: str) -> float:
    """argparse type: a number of seconds greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


# Report options: the flag and what it writes (reports.py writes each).
_REPORTS: Final = (("--junit", "JUnit XML"), ("--json", "JSON"), ("--html", "self-contained HTML"))


def _add_reports(parser: argparse.ArgumentParser, help_text: str) -> None:
    for flag, kind in _REPORTS:
        parser.add_argument(flag, type=Path, help=help_text.format(kind))


def _add_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=_positive,
        default=DEFAULT_TIMEOUT,
        help=f"per-case deadline in seconds (default {DEFAULT_TIMEOUT:g}; some cases take longer)",
    )


def _add_run_options(parser: argparse.ArgumentParser, *, profile_default: str | None) -> None:
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=profile_default,
        help="the profile the bridge claims"
        + (f" (default: {profile_default})" if profile_default else ""),
    )
    parser.add_argument(
        "--codec",
        choices=CODEC_MODES,
        default=None,
        help="how the harness speaks: json or msgpack from the first frame (start the bridge "
        "with the matching flag), or negotiate (§3.4, bridge in auto mode). Default: json",
    )
    parser.add_argument(
        "--strict", action="store_true", help="NON-STRICT (a SHOULD missed) fails the run"
    )
    _add_timeout(parser)
    parser.add_argument(
        "--startup-timeout",
        type=_positive,
        default=20.0,
        help="seconds a bridge may take to answer its first request (§5.1: 20)",
    )
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default=None,
        help="how to reach the bridge; implied by --profile (stdio for v1/v2/enhanced, "
        "grpc for grpc, bridge-service for bridge-service)",
    )
    parser.add_argument("--target", help="gRPC: HOST:PORT of a running bridge (no -- CMD)")
    parser.add_argument(
        "--tool-calls",
        metavar="FILE",
        help="bridge-service: JSON {tool: [arguments, ...]} naming calls for your own tools",
    )
    parser.add_argument(
        "--host-port",
        type=int,
        default=0,
        metavar="PORT",
        help="bridge-service: the port of the harness's host emulator (default: any; fix it "
        "to point a --target worker's --elixir-address at it)",
    )
    parser.add_argument(
        "--golden-dir",
        action="append",
        default=[],
        type=Path,
        help="also run the golden-frame files in this directory (repeatable)",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    conf = subparsers.add_parser(
        "conformance",
        help="run the conformance suite against a bridge",
        description="Run the conformance suite (PROTOCOL.md §2-§8) against the bridge "
        "command given after `--`.",
    )
    _add_run_options(conf, profile_default=None)
    conf.add_argument("--list", action="store_true", help="list the cases and exit")
    conf.add_argument(
        "--case",
        action="append",
        default=[],
        metavar="GLOB",
        help="only cases whose id matches (repeatable)",
    )
    conf.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip cases whose id matches (repeatable)",
    )
    conf.add_argument("--baseline", type=Path, help="known failures (YAML or JSON)")
    conf.add_argument(
        "--update-baseline",
        action="store_true",
        help="rewrite --baseline from this run (refused on a run filtered by --case/--exclude)",
    )
    _add_reports(conf, "write a {} report here")
    conf.add_argument("--quiet", action="store_true", help="no per-case lines, only failures")
    conf.set_defaults(handler=run_conformance)

    replay = subparsers.add_parser(
        "replay",
        help="run one case (by id or golden-frame file) and show every byte",
        description="Run one conformance case against the bridge after `--` and print the "
        "full transcript.",
    )
    replay.add_argument("case", help="a case id (see conformance --list) or a golden-frame file")
    _add_run_options(replay, profile_default=None)
    replay.set_defaults(handler=run_replay)

    check = subparsers.add_parser(
        "check",
        help="check the bundled reference bridges (or the bridge after --) and print a table",
        description="With no bridge: run the suite, strict, against every bundled reference "
        "bridge, profile and codec it claims. With `-- CMD`: check that bridge "
        "(--profile, default v2; codecs json and negotiate unless --codec is given).",
    )
    check.add_argument(
        "--profile", choices=PROFILES, default="v2", help="with -- CMD: the profile it claims"
    )
    check.add_argument(
        "--codec",
        action="append",
        choices=CODEC_MODES,
        default=[],
        help="with -- CMD: codec modes to run (repeatable; default json and negotiate)",
    )
    check.add_argument(
        "--strict", action="store_true", help="with -- CMD: NON-STRICT fails (always on without)"
    )
    _add_timeout(check)
    _add_reports(check, "one {} report for every run")
    check.add_argument("--verbose", action="store_true", help="print every case of every run")
    check.set_defaults(handler=run_check)


# -- helpers ------------------------------------------------------------------


def _require_bridge(args: argparse.Namespace) -> tuple[str, ...]:
    cmd = tuple(args.bridge_cmd)
    if not getattr(args, "target", None):
        if not cmd:
            raise HarnessError("no bridge command: put it after `--`, e.g. `-- ./my-bridge`")
        exe = cmd[0]
        if shutil.which(exe) is None and not Path(exe).is_file():
            raise HarnessError(f"cannot start the bridge: {exe!r} is not an executable or on PATH")
    return cmd


def _settings(args: argparse.Namespace, cmd: tuple[str, ...], profile: str) -> RunSettings:
    # Each profile exists over one transport; --transport only has to agree.
    transport = args.transport or PROFILE_TRANSPORTS[profile]
    if transport != PROFILE_TRANSPORTS[profile]:
        raise HarnessError(
            f"profile {profile} is spoken over the {PROFILE_TRANSPORTS[profile]} transport, "
            f"not {transport}"
        )
    return RunSettings(
        bridge_cmd=cmd,
        profile=profile,
        codec=args.codec or "json",
        strict=args.strict,
        timeout=args.timeout,
        transport=transport,
        target=getattr(args, "target", None),
        startup_timeout=args.startup_timeout,
        tool_calls=getattr(args, "tool_calls", None),
        host_port=getattr(args, "host_port", 0) or 0,
    )


def _list_cases(cases: Sequence[Case], out: Any) -> int:
    for c in cases:
        codecs = f" [{'|'.join(sorted(c.codecs))}]" if c.codecs else ""
        gate = " (gate)" if c.gate else ""
        print(
            f"{c.id:45} §{c.section:5} {c.level!s:12} {','.join(sorted(c.profiles)):18}"
            f"{codecs}{gate}  {c.requirement}",
            file=out,
        )
    print(f"{len(cases)} cases", file=out)
    return EXIT_OK


def _run_interruptibly(fn: Callable[[], T]) -> T:
    """Run ``fn``; on Ctrl-C (or SIGTERM, mapped by the CLI) kill every bridge first."""
    try:
        return fn()
    except KeyboardInterrupt:
        interrupt_all_runs()
        raise


# -- conformance ----------------------------------------------------------------


def run_conformance(args: argparse.Namespace) -> int:
    cases = all_cases(args.golden_dir)
    if args.list:
        if args.profile:
            cases = [c for c in cases if args.profile in c.profiles]
        return _list_cases(cases, sys.stdout)
    if not args.profile:
        raise HarnessError("--profile is required (v1, v2, enhanced, grpc or bridge-service)")
    if args.update_baseline and not args.baseline:
        raise HarnessError("--update-baseline needs --baseline FILE")
    if args.update_baseline and (args.case or args.exclude):
        raise HarnessError(
            "--update-baseline refuses a run filtered by --case/--exclude: "
            "it would drop the entries of the cases not run"
        )
    cmd = _require_bridge(args)
    settings = _settings(args, cmd, args.profile)
    transport_driver(settings.transport)  # unknown transport: clear error, exit 2
    selected = select_cases(cases, args.case, args.exclude)
    in_profile = [c for c in selected if belongs(c, settings)]
    if not in_profile:
        print(
            "snakepit-harness: no cases selected (check --profile, --case, --exclude)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    baseline = load_baseline(args.baseline) if args.baseline else {}
    known = {c.id for c in cases}

    def show(result: CaseResult) -> None:
        if not args.quiet:
            print(case_line(result), flush=True)

    title = f"profile {settings.profile}, codec {settings.codec}: {shlex.join(cmd)}"
    print(f"== snakepit-harness conformance: {title}")
    report = _run_interruptibly(
        lambda: run_suite(
            settings,
            in_profile,
            baseline={} if args.update_baseline else baseline,
            known_ids=known,
            on_result=show,
        )
    )
    report.baseline_path = str(args.baseline) if args.baseline else None
    if args.update_baseline:
        entries = baseline_entries(report.results, baseline, settings.strict)
        write_baseline(
            args.baseline, entries, header=f"profile {settings.profile}, codec {settings.codec}"
        )
        print(f"baseline {args.baseline}: {len(entries)} known failure(s) written")
        for result in report.results:
            if result.case_id in entries and result.verdict is not Verdict.PASS:
                result.baseline_reason = entries[result.case_id]
                result.verdict = Verdict.XFAIL
    write_terminal(report, sys.stdout, per_case=False)
    write_requested_reports(args, [report])
    return report.exit_code()


# -- replay -----------------------------------------------------------------------


# A bridge-service fuzz failure (fuzz/bridge_service.py): steps, not golden frames.
BRIDGE_SERVICE_STEPS_SUFFIX: Final = ".bridge-service.json"


def _bridge_service_steps_case(path: Path) -> Case:
    try:
        from snakepit_harness.fuzz.bridge_service import load_steps, replay_case
    except ImportError as exc:  # hypothesis is the fuzz extra
        raise HarnessError(
            f"replaying {path.name} needs the fuzz extra: pip install 'snakepit-harness[fuzz]'"
        ) from exc
    record = load_steps(path)
    if record is None:
        raise HarnessError(f"{path} is not a bridge-service fuzz steps file")
    return replay_case(path, record)


def _find_case(spec: str, golden_dirs: Sequence[Path]) -> Case:
    from .golden import load_case

    path = Path(spec)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise HarnessError(f"no such golden-frame file: {spec}")
        if path.name.endswith(BRIDGE_SERVICE_STEPS_SUFFIX):
            return _bridge_service_steps_case(path)
        return load_case(path)
    cases = {c.id: c for c in all_cases(golden_dirs)}
    if spec not in cases:
        close = [i for i in cases if spec.split(".", maxsplit=1)[0] in i][:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise HarnessError(f"no case {spec!r} (see `snakepit-harness conformance --list`){hint}")
    return cases[spec]


def _preferred(offered: Iterable[str], order: Sequence[str]) -> str | None:
    """The first of ``order`` that ``offered`` holds (None when it holds none of them)."""
    held = set(offered)
    return next((name for name in order if name in held), None)


def replay_choices(case: Case, profile: str | None, codec: str | None) -> tuple[str, str]:
    """The profile and codec mode a replay of ``case`` runs under.

    A flag given on the command line wins; otherwise the case (a golden-frame
    or saved fuzz file records both) decides: its profile, then its codec mode,
    JSON first when it allows several.  A saved MessagePack regression thus
    replays with nothing but ``replay FILE -- CMD``.
    """
    chosen_profile = profile or _preferred(case.profiles, PROFILES) or "v2"
    chosen_codec = codec or (
        _preferred(case.codecs, CODEC_MODES) if case.codecs is not None else None
    )
    return chosen_profile, chosen_codec or "json"


def run_replay(args: argparse.Namespace) -> int:
    case = _find_case(args.case, args.golden_dir)
    profile, codec = replay_choices(case, args.profile, args.codec)
    cmd = _require_bridge(args)
    settings = replace(_settings(args, cmd, profile), codec=codec)
    reason = case.applies_to(settings.profile, settings.codec, settings.transport)
    if reason is not None:
        # The flags given chose a run the case does not apply to: nothing to replay.
        held = "|".join(sorted(case.codecs)) if case.codecs else "any codec"
        raise HarnessError(
            f"replay selects nothing: {case.id} is a case for profile "
            f"{'|'.join(sorted(case.profiles))} under {held}, but this run asked for "
            f"profile {settings.profile} with --codec {settings.codec} ({reason}); "
            "drop the flag or give the case's own"
        )
    where = f"codec {settings.codec}: {shlex.join(cmd)}"
    print(f"== replay {case.id} (§{case.section}, {case.level}) {where}")
    print(f"   {case.requirement}")
    with SuiteSession(settings) as session:
        result = _run_interruptibly(lambda: session.run(case))
    for line in failure_details(result)[2:]:
        print(line)
    if not result.observed and result.verdict is Verdict.PASS:
        print("    (no events recorded)")
    print(f"{result.verdict} {case.id} in {result.duration:.3f} s")
    report = RunReport(settings, [result])
    return report.exit_code()


# -- check ----------------------------------------------------------------------
