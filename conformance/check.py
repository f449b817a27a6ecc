"""The ``check`` subcommand: many bridge configurations at once, in one table.

Without a bridge command it checks every bundled reference bridge against the
profile and codec it claims (``targets.CHECK_TARGETS``); with one, that bridge
against the profiles asked for.  Configurations run side by side, a large one
split into parts whose results are merged back as if it had run alone.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Final

from snakepit_harness.errors import HarnessError
from snakepit_harness.protocol import PROFILE_TRANSPORTS, ExitCode

from .model import Case, RunSettings, Verdict
from .registry import all_cases
from .reports import failure_details, summary_line, write_requested_reports, write_terminal
from .session import RunReport, belongs, interrupt_all_runs, run_suite
from .targets import CHECK_TARGETS, CheckTarget, user_targets

__all__ = ["run_check"]

# Configurations `check` runs at once.  Most of a run is waiting (bridge
# start-up, deadlines, signals), so four overlap well even on two cores.
CHECK_PARALLEL: Final = 4
# A configuration with more cases than this is split into parts run side by
# side (each with its own bridges), so one long profile does not set the pace.
CHECK_CHUNK_CASES: Final = 70


def _check_rows(args: argparse.Namespace) -> list[tuple[str, RunSettings | None, str]]:
    """(label, settings or None, skip reason) for every configuration to run."""
    rows: list[tuple[str, RunSettings | None, str]] = []
    if args.bridge_cmd:
        cmd = tuple(args.bridge_cmd)
        exe = cmd[0]
        if shutil.which(exe) is None and not Path(exe).is_file():
            raise HarnessError(f"cannot start the bridge: {exe!r} is not an executable or on PATH")
        for profile, codec in user_targets(args.profile, tuple(args.codec)):
            transport = PROFILE_TRANSPORTS[profile]
            rows.append(
                (
                    f"{_label(cmd)} {profile}/{codec}",
                    RunSettings(
                        cmd,
                        profile,
                        codec if codec != "-" else "json",
                        args.strict,
                        args.timeout,
                        transport,
                    ),
                    "",
                )
            )
        return rows
    target: CheckTarget
    for target in CHECK_TARGETS:
        missing = target.missing()
        if missing:
            rows.append((target.name, None, missing))
            continue
        codec = target.codec if target.codec != "-" else "json"
        rows.append(
            (
                target.name,
                RunSettings(
                    target.command(), target.profile, codec, True, args.timeout, target.transport
                ),
                "",
            )
        )
    return rows


def _label(cmd: tuple[str, ...]) -> str:
    """A short name for a bridge command line ("python3 my_bridge.py")."""
    words = [Path(a).name for a in cmd[:2]]
    return " ".join(words)[:32]


def _chunks(settings: RunSettings, cases: list[Case]) -> list[list[Case]]:
    """Split a large configuration into parts that can run side by side.

    Part 0 gets the gate cases, every part an interleaved share of the
    others; when merging, a failed gate turns the other parts' results into
    SKIP "blocked", as in a single run.
    """
    mine = [c for c in cases if belongs(c, settings)]
    if len(mine) <= CHECK_CHUNK_CASES:
        return [mine]
    gates = [c for c in mine if c.gate]
    rest = [c for c in mine if not c.gate]
    parts = -(-len(mine) // CHECK_CHUNK_CASES)
    return [(gates if i == 0 else []) + rest[i::parts] for i in range(parts)]


def run_check(args: argparse.Namespace) -> int:
    rows = _check_rows(args)
    cases = all_cases()
    known = {c.id for c in cases}
    partial: dict[tuple[int, int], RunReport] = {}
    errors: dict[int, str] = {}
    stop = threading.Event()
    began = time.monotonic()

    def work(index: int, part: int, settings: RunSettings, chosen: list[Case]) -> None:
        try:
            partial[index, part] = run_suite(settings, chosen, known_ids=known, stop=stop)
        except KeyboardInterrupt:
            errors[index] = "interrupted"
        except HarnessError as exc:
            errors[index] = str(exc)
        except Exception as exc:  # a thread must report, not vanish
            errors[index] = f"{type(exc).__name__}: {exc}"

    pending = [
        (i, part, s, chosen)
        for i, (_, s, _) in enumerate(rows)
        if s is not None
        for part, chosen in enumerate(_chunks(s, cases))
    ]
    # Longest first: the slow parts start at once and the short ones fill the gaps.
    pending.sort(key=lambda item: -len(item[3]))
    running: list[threading.Thread] = []
    try:
        while pending or running:
            running = [t for t in running if t.is_alive()]
            while pending and len(running) < CHECK_PARALLEL:
                # Daemon threads: an interrupted harness must not wait for them.
                thread = threading.Thread(target=work, args=pending.pop(0), daemon=True)
                thread.start()
                running.append(thread)
            time.sleep(0.02)
    except KeyboardInterrupt:
        stop.set()
        interrupt_all_runs()
        raise
    reports = _merge_parts(partial, errors)
    elapsed = time.monotonic() - began
    return _print_check(rows, reports, errors, elapsed, args)


def _merge_parts(
    partial: dict[tuple[int, int], RunReport], errors: dict[int, str]
) -> dict[int, RunReport]:
    """One report per configuration, in case order, from its parts."""
    merged: dict[int, RunReport] = {}
    gates = {c.id for c in all_cases() if c.gate}
    for (index, _part), report in sorted(partial.items()):
        if index in errors:
            continue
        if index not in merged:
            merged[index] = report
            continue
        whole = merged[index]
        failed_gate = next(
            (r.case_id for r in whole.results if r.case_id in gates and r.failed(strict=False)),
            None,
        )
        for result in report.results:
            if failed_gate and result.verdict is not Verdict.SKIP:
                result.verdict = Verdict.SKIP
                result.message = f"blocked: gate case {failed_gate} failed (fix it first)"
            whole.results.append(result)
        whole.duration = max(whole.duration, report.duration)
        whole.negotiated = whole.negotiated or report.negotiated
    order = {c.id: n for n, c in enumerate(all_cases())}
    for report in merged.values():
        report.results.sort(key=lambda r: order.get(r.case_id, len(order)))
    return merged


def _print_check(
    rows: list[tuple[str, RunSettings | None, str]],
    reports: dict[int, RunReport],
    errors: dict[int, str],
    elapsed: float,
    args: argparse.Namespace,
) -> int:
    worst: int = ExitCode.OK
    header = (
        f"{'bridge / profile / codec':44} {'cases':>5} {'pass':>5} {'fail':>5} "
        f"{'n-s':>4} {'skip':>5} {'time':>6}  result"
    )
    blank = f"{'':>5} {'':>5} {'':>5} {'':>4} {'':>5} {'':>6}"
    lines = [header, "-" * len(header)]
    for index, (label, settings, skip) in enumerate(rows):
        if settings is None:
            lines.append(f"{label:44} {blank}  SKIPPED ({skip})")
            continue
        if index in errors:
            worst = max(worst, ExitCode.ERROR)
            lines.append(f"{label:44} {blank}  ERROR: {errors[index]}")
            continue
        report = reports[index]
        code = report.exit_code()
        worst = max(worst, code) if code != ExitCode.OK else worst
        c = report.counts()
        failing = len(report.failures())
        verdict = {0: "CONFORMS", 1: "DOES NOT CONFORM", 2: "HARNESS ERROR"}.get(code, str(code))
        lines.append(
            f"{label:44} {len(report.results):>5} {c.get('PASS', 0):>5} {failing:>5} "
            f"{c.get('NON-STRICT', 0):>4} {c.get('SKIP', 0):>5} {report.duration:>5.1f}s  {verdict}"
        )
    for index, report in sorted(reports.items()):
        if args.verbose:
            write_terminal(report, sys.stdout)
        elif report.exit_code() != ExitCode.OK:
            print(f"\n== {rows[index][0]}")
            for result in report.results:
                if result.failed(report.settings.strict) or result.verdict is Verdict.ERROR:
                    print("\n".join(failure_details(result)))
            print(summary_line(report))
    print()
    print("\n".join(lines))
    print(f"total {elapsed:.1f} s; exit {worst}")
    write_requested_reports(args, [reports[i] for i in sorted(reports)])
    return worst
