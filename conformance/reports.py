"""Reports written from one :class:`~.session.RunReport`: terminal, JUnit XML, JSON, HTML.

* Terminal: one line per case with its verdict and time, then every failure
  in full (message, findings, bytes sent in hex, what was observed, stderr
  tail, how to reproduce), then a summary line.
* JUnit XML: one ``testsuite`` per spec section, ``testcase`` name = case id,
  classname = ``snakepit.<profile>.<codec>.<area>``; failures carry messages.
* JSON: ``RunReport.to_json()``.
* HTML: one self-contained file (inline CSS, no scripts, no external links).
"""

from __future__ import annotations

import argparse
import html
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TextIO

from .model import CaseResult, Verdict
from .session import RunReport

__all__ = [
    "case_line",
    "failure_details",
    "summary_line",
    "write_html",
    "write_json",
    "write_junit",
    "write_requested_reports",
    "write_terminal",
]

# Hex bytes of a case's traffic shown in the terminal (the JSON report has more).
TERMINAL_HEX_BYTES: Final = 256
# Lines of stderr shown per failure in the terminal.
TERMINAL_STDERR_LINES: Final = 15

# Verdicts in the order summaries list them: the enum's own order.
_VERDICT_ORDER: Final = tuple(Verdict)


def _title(report: RunReport) -> str:
    s = report.settings
    codec = s.codec + (f" -> {report.negotiated}" if report.negotiated else "")
    target = " ".join(s.bridge_cmd) or (s.target or "")
    return f"profile {s.profile}, codec {codec}, {'strict' if s.strict else 'non-strict'}: {target}"


def case_line(result: CaseResult) -> str:
    extra = f"  {result.message.splitlines()[0][:120]}" if result.message else ""
    if result.verdict is Verdict.PASS:
        extra = ""
    return f"{result.verdict!s:<10} {result.duration:7.3f}s  {result.case_id}{extra}"


def _hex_block(data_hex: str, total: int) -> str:
    shown = data_hex[: TERMINAL_HEX_BYTES * 2]
    more = total - len(shown) // 2
    return shown + (f" ... (+{more} bytes)" if more > 0 else "")


def failure_details(result: CaseResult) -> list[str]:
    """The full story of one failure, as lines."""
    lines = [
        f"--- {result.verdict} {result.case_id} (§{result.section}, {result.level})",
        f"    requirement: {result.requirement}",
    ]
    if result.message:
        lines += [f"    {line}" for line in result.message.splitlines()]
    for finding in result.findings:
        if finding.message != result.message:
            lines.append(f"    [{finding.grade}] {finding.message}")
    if result.baseline_reason:
        lines.append(f"    baseline: {result.baseline_reason}")
    if result.sent_total:
        lines.append(f"    sent (hex): {_hex_block(result.sent_hex, result.sent_total)}")
    if result.observed:
        lines.append("    observed:")
        lines += [f"      {event}" for event in result.observed]
    if result.stderr_tail.strip():
        tail = result.stderr_tail.rstrip().splitlines()[-TERMINAL_STDERR_LINES:]
        lines.append("    stderr tail:")
        lines += [f"      | {line}" for line in tail]
    if result.reproduction:
        lines.append("    reproduce:")
        lines += [f"      $ {line}" for line in result.reproduction]
    return lines


def summary_line(report: RunReport) -> str:
    counts = report.counts()
    parts = [f"{counts[str(v)]} {v}" for v in _VERDICT_ORDER if counts.get(str(v))]
    verdict = {0: "CONFORMS", 1: "DOES NOT CONFORM", 2: "HARNESS ERROR", 130: "INTERRUPTED"}
    code = report.exit_code()
    return (
        f"{verdict.get(code, '?')}: {', '.join(parts) or 'no cases'} "
        f"in {report.duration:.1f} s (exit {code})"
    )


def write_terminal(report: RunReport, out: TextIO, *, per_case: bool = True) -> None:
    if per_case:
        print(f"== snakepit-harness conformance: {_title(report)}", file=out)
        for result in report.results:
            print(case_line(result), file=out)
    shown = [
        r
        for r in report.results
        if r.failed(report.settings.strict)
        or r.verdict in (Verdict.NON_STRICT, Verdict.ERROR, Verdict.XFAIL)
    ]
    if shown:
        print("", file=out)
    for result in shown:
        for line in failure_details(result):
            print(line, file=out)
    print(summary_line(report), file=out)


def write_json(report: RunReport, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")


# -- JUnit ------------------------------------------------------------------


def _area(case_id: str) -> str:
    return case_id.split(".", maxsplit=1)[0]


def write_junit(reports: Sequence[RunReport], path: str | Path) -> None:
    """JUnit XML: a ``testsuite`` per (run, spec section)."""
    root = ET.Element("testsuites", name="snakepit-harness conformance")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total_time = 0.0
    for report in reports:
        s = report.settings
        sections: dict[str, list[CaseResult]] = {}
        for result in report.results:
            sections.setdefault(result.section or "baseline", []).append(result)
        for section, results in sections.items():
            suite = ET.SubElement(root, "testsuite")
            suite.set("name", f"{s.profile}/{s.codec} §{section}")
            suite.set(
                "timestamp", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(report.started_at))
            )
            counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
            suite_time = 0.0
            for result in results:
                counts["tests"] += 1
                suite_time += result.duration
                case_el = ET.SubElement(suite, "testcase")
                case_el.set("name", result.case_id)
                case_el.set("classname", f"snakepit.{s.profile}.{s.codec}.{_area(result.case_id)}")
                case_el.set("time", f"{result.duration:.3f}")
                details = "\n".join(failure_details(result))
                message = (
                    f"{result.verdict}: {result.message.splitlines()[0] if result.message else ''}"
                )
                if result.verdict is Verdict.ERROR:
                    counts["errors"] += 1
                    el = ET.SubElement(case_el, "error", message=message, type=str(result.verdict))
                    el.text = details
                elif result.failed(s.strict):
                    counts["failures"] += 1
                    el = ET.SubElement(
                        case_el, "failure", message=message, type=str(result.verdict)
                    )
                    el.text = details
                elif result.verdict in (Verdict.SKIP, Verdict.XFAIL):
                    counts["skipped"] += 1
                    ET.SubElement(case_el, "skipped", message=message)
                elif result.verdict is Verdict.NON_STRICT:
                    out = ET.SubElement(case_el, "system-out")
                    out.text = details
            for key, value in counts.items():
                suite.set(key, str(value))
                totals[key] += value
            suite.set("time", f"{suite_time:.3f}")
            total_time += suite_time
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


# -- HTML -------------------------------------------------------------------

_CSS: Final = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:2em}
table{border-collapse:collapse;width:100%} td,th{border-bottom:1px solid #ddd;padding:3px 8px;
text-align:left;vertical-align:top} th{background:#f4f4f4}
.v{font-weight:bold;white-space:nowrap} .PASS{color:#1a7f37} .FAIL,.CRASH,.TIMEOUT,.FRAMING,
.STALE,.ERROR{color:#c62828} .NON-STRICT{color:#b26a00} .SKIP,.XFAIL{color:#777}
pre{background:#f7f7f7;padding:8px;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.num{text-align:right;font-variant-numeric:tabular-nums}
"""


def write_html(reports: Sequence[RunReport], path: str | Path) -> None:
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>snakepit-harness conformance report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>snakepit-harness conformance report</h1>",
    ]
    for report in reports:
        parts.append(f"<h2>{html.escape(_title(report))}</h2>")
        parts.append(f"<p>{html.escape(summary_line(report))}</p>")
        parts.append(
            "<table><tr><th>verdict</th><th>case</th><th>§</th><th>level</th>"
            "<th>time (s)</th><th>details</th></tr>"
        )
        for r in report.results:
            detail = ""
            if r.verdict is not Verdict.PASS:
                body = html.escape("\n".join(failure_details(r)))
                summary = html.escape(r.message.splitlines()[0][:160] if r.message else "")
                detail = f"<details><summary>{summary}</summary><pre>{body}</pre></details>"
            parts.append(
                f"<tr><td class='v {html.escape(str(r.verdict))}'>{html.escape(str(r.verdict))}"
                f"</td><td title='{html.escape(r.requirement)}'>{html.escape(r.case_id)}</td>"
                f"<td>{html.escape(r.section)}</td><td>{html.escape(str(r.level))}</td>"
                f"<td class='num'>{r.duration:.3f}</td><td>{detail}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    Path(path).write_text("\n".join(parts) + "\n", encoding="utf-8")


def write_requested_reports(args: argparse.Namespace, reports: list[RunReport]) -> None:
    """Write the report files the command line asked for (``--junit``, ``--json``, ``--html``)."""
    if getattr(args, "junit", None):
        write_junit(reports, args.junit)
    if getattr(args, "json", None):
        if len(reports) == 1:
            write_json(reports[0], args.json)
        else:
            args.json.write_text(
                json.dumps({"runs": [r.to_json() for r in reports]}, indent=2) + "\n",
                encoding="utf-8",
            )
    if getattr(args, "html", None):
        write_html(reports, args.html)
