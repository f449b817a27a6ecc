"""Baselines of known failures: read, apply, rewrite.

A baseline lists case ids a bridge is known to fail, each with a reason, so
that a bridge's CI can adopt the suite before it conforms fully.  A listed
case that fails is XFAIL; a listed case that passes, or an id no case has, is
STALE and fails the run (protobuf's conformance runner does the same), so the
list can only shrink.  The file is YAML or JSON::

    # snakepit-harness conformance baseline
    version: 1
    failures:
      - id: framing.oversize-header
        reason: "mallocs the announced size; fix tracked in #12"

``failures`` may also be a mapping ``{id: reason}``.  Writing never needs
PyYAML: the YAML written uses JSON-quoted strings, which YAML reads as-is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from snakepit_harness.errors import HarnessError

from .model import CaseResult, Verdict

__all__ = ["BaselineError", "baseline_entries", "load_baseline", "write_baseline"]

BASELINE_VERSION: Final = 1


# A reason line longer than this is cut (reports stay readable).
REASON_MAX_CHARS: Final = 200


class BaselineError(HarnessError):
    """The baseline file cannot be read or is malformed."""


def _parse(path: Path, text: str) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise BaselineError(f"{path}: not valid JSON: {exc}") from exc
    try:
        return json.loads(text)  # JSON is YAML too; no PyYAML needed for it
    except ValueError:
        pass
    try:
        import yaml
    except ImportError as exc:
        raise BaselineError(
            f"{path}: reading a YAML baseline needs PyYAML: pip install 'snakepit-harness[yaml]' "
            "(or write the baseline as JSON)"
        ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BaselineError(f"{path}: not valid YAML: {exc}") from exc


def load_baseline(path: str | Path) -> dict[str, str]:
    """The baseline's entries, ``{case id: reason}``; a missing file is empty."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read the baseline: {exc}") from exc
    data = _parse(path, text)
    if data is None:
        return {}
    if not isinstance(data, dict) or "failures" not in data:
        raise BaselineError(f"{path}: a baseline is a mapping with a `failures` list")
    failures = data["failures"] or []
    entries: dict[str, str] = {}
    if isinstance(failures, dict):
        items = [{"id": k, "reason": v} for k, v in failures.items()]
    elif isinstance(failures, list):
        items = failures
    else:
        raise BaselineError(f"{path}: `failures` must be a list or a mapping")
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise BaselineError(f"{path}: entry {number} needs an `id` (a case id)")
        reason = item.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise BaselineError(f"{path}: entry {item['id']!r} needs a `reason`")
        if item["id"] in entries:
            raise BaselineError(f"{path}: {item['id']!r} is listed twice")
        entries[item["id"]] = reason.strip()
    return entries


def _observed_reason(result: CaseResult) -> str:
    first = (result.message or "").strip().splitlines()
    text = first[0] if first else ""
    verdict = result.verdict
    if verdict is Verdict.XFAIL:
        return result.baseline_reason or text
    line = f"{verdict}: {text}" if text else str(verdict)
    return line[:REASON_MAX_CHARS]


def baseline_entries(
    results: Iterable[CaseResult], previous: dict[str, str], strict: bool
) -> dict[str, str]:
    """The entries a baseline should hold after this run (old reasons kept)."""
    out: dict[str, str] = {}
    for result in results:
        # A failure that could be baselined (NON-STRICT only when it fails the
        # run), or one the old baseline already lists.
        verdict = result.verdict
        failing = verdict is Verdict.XFAIL or (
            verdict.meaning.baselinable and verdict.fails(strict)
        )
        if failing and result.section:  # section is empty for stale pseudo-results
            out[result.case_id] = previous.get(result.case_id) or _observed_reason(result)
    return out


def write_baseline(path: str | Path, entries: dict[str, str], header: str = "") -> None:
    """Write ``entries`` as YAML (JSON when the file name ends in .json)."""
    path = Path(path)
    ordered = sorted(entries.items())
    if path.suffix.lower() == ".json":
        doc = {
            "version": BASELINE_VERSION,
            "failures": [{"id": i, "reason": r} for i, r in ordered],
        }
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    else:
        lines = ["# snakepit-harness conformance baseline: known failures, one per case id."]
        if header:
            lines.append(f"# {header}")
        lines += [f"version: {BASELINE_VERSION}", "failures:" + ("" if ordered else " []")]
        for case_id, reason in ordered:
            lines.append(f"  - id: {json.dumps(case_id)}")
            lines.append(f"    reason: {json.dumps(reason, ensure_ascii=False)}")
        text = "\n".join(lines) + "\n"
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BaselineError(f"{path}: cannot write the baseline: {exc}") from exc
