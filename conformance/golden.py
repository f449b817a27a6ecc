"""Golden-frame files: conformance cases written as reviewable JSON.

The format is specified in fixtures/golden/FORMAT.md (``snakepit-golden/1``).
This module loads a file into a :class:`~.model.Case` whose body interprets
the file's steps against a case context, checks that each step's ``wire`` hex
is exactly the frame of its structured request (so reviewers can trust the
structure they read), and computes wire hex for authors.  A file is runnable
on its own: ``snakepit-harness replay FILE -- CMD``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from snakepit_harness.errors import HarnessError, RemoteProtocolError
from snakepit_harness.protocol import HEADER_SIZE, encode_frame, get_codec

from .matcher import decode_special, describe, match
from .model import BridgeUse, Case, CaseFailed, CaseSkipped, Grade, Level

__all__ = [
    "FORMAT",
    "GOLDEN_DIR",
    "GoldenError",
    "fill_wire",
    "golden_files",
    "load_case",
    "load_document",
    "run_steps",
    "wire_hex",
    "wire_mismatches",
]

FORMAT: Final = "snakepit-golden/1"

# fixtures/golden inside the installed package (shipped in the wheel).
GOLDEN_DIR: Final = Path(__file__).resolve().parent.parent / "fixtures" / "golden"

# Frames read past unrelated answers while waiting for an `alive` ping's
# response: more than any malformed input could fairly provoke, few enough
# that a bridge answering endlessly is caught.
ALIVE_MAX_SKIPPED_FRAMES: Final = 16

# Longest wait for the bridge to read one raw chunk before the next is written.
RAW_CHUNK_GAP: Final = 0.1

# Default id of the ping an `alive` step sends (high, to stand out in hex dumps).
ALIVE_DEFAULT_ID: Final = 990001

_STEP_KINDS: Final = ("send", "send_raw", "expect", "alive", "close_stdin", "expect_exit")


class GoldenError(HarnessError):
    """A golden-frame file is malformed; the message names the file and the problem."""


class StepContext(Protocol):
    """What golden steps need from a transport's case context."""

    @property
    def codec_name(self) -> str: ...

    def send_value(self, value: Any, wire: bytes | None = None) -> None: ...

    def send_raw(self, data: bytes) -> None: ...

    def wait_sent_read(self, timeout: float) -> None: ...

    def read_value(self) -> Any: ...

    def close_stdin(self) -> None: ...

    def expect_exit(self, within: float) -> int | None: ...

    def add_finding(self, grade: Grade, message: str) -> None: ...


def golden_files(directory: Path) -> Iterator[Path]:
    """Every golden file below ``directory`` (recursively, sorted)."""
    if directory.is_dir():
        yield from sorted(p for p in directory.rglob("*.json") if p.is_file())


def load_document(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GoldenError(f"{path}: cannot read golden file: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise GoldenError(f'{path}: not a golden file (needs "format": "{FORMAT}")')
    for key in ("id", "section", "level", "profiles", "requirement", "steps"):
        if key not in doc:
            raise GoldenError(f"{path}: missing required key {key!r}")
    for i, step in enumerate(doc["steps"]):
        kinds = [k for k in _STEP_KINDS if k in step]
        if len(kinds) != 1:
            raise GoldenError(f"{path}: step {i} needs exactly one of {', '.join(_STEP_KINDS)}")
    return doc


def load_case(path: Path) -> Case:
    """Turn a golden file into a case (its body runs the file's steps)."""
    doc = load_document(path)
    steps: list[dict[str, Any]] = doc["steps"]
    level = Level(doc["level"])

    def run(ctx: Any) -> None:
        run_steps(ctx, steps, level, str(path))

    try:
        return Case(
            id=doc["id"],
            section=str(doc["section"]),
            level=level,
            profiles=frozenset(doc["profiles"]),
            requirement=doc["requirement"],
            run=run,
            transport=doc.get("transport", "stdio"),
            codecs=frozenset(doc["codecs"]) if "codecs" in doc else None,
            bridge=BridgeUse(doc.get("bridge", "shared")),
            timeout=doc.get("timeout"),
            source=str(path),
        )
    except ValueError as exc:
        raise GoldenError(f"{path}: {exc}") from exc


def wire_hex(value: Any, codec: str) -> str:
    """The frame (header + payload) of a structured request, as hex."""
    return encode_frame(get_codec(codec).encode(decode_special(value))).hex()


def wire_mismatches(doc: dict[str, Any]) -> list[str]:
    """Steps whose ``wire`` hex is not a frame carrying exactly their structured ``send``.

    Any valid encoding is accepted (JSON with raw UTF-8 or with \\u escapes,
    as a real host may send either); the header must announce the payload's
    length and the payload must decode, strictly, to the structured value.
    """
    problems = []
    for i, step in enumerate(doc["steps"]):
        for codec_name, hex_text in step.get("wire", {}).items():
            raw = bytes.fromhex(hex_text)
            announced = int.from_bytes(raw[:HEADER_SIZE], "big")
            if announced != len(raw) - HEADER_SIZE:
                problems.append(f"step {i} ({codec_name}): header says {announced} bytes")
                continue
            try:
                decoded = get_codec(codec_name).decode(raw[HEADER_SIZE:])
            except RemoteProtocolError as exc:
                problems.append(f"step {i} ({codec_name}): payload does not decode: {exc}")
                continue
            diff = match(decoded, {"$eq": step["send"]})
            if diff:
                problems.append(f"step {i} ({codec_name}): " + "; ".join(diff))
    return problems


def _per_codec_bytes(table: dict[str, str], codec: str) -> bytes | None:
    hex_text = table.get(codec, table.get("any"))
    return None if hex_text is None else bytes.fromhex(hex_text)


@dataclass
class _Outcome:
    grade: Grade
    matcher: Any
    why: str


def _outcomes(expect: dict[str, Any]) -> list[_Outcome]:
    if "match" in expect:
        return [_Outcome(Grade.PASS, expect["match"], expect.get("why", ""))]
    return [
        _Outcome(Grade(o.get("grade", "pass")), o["match"], o.get("why", ""))
        for o in expect["outcomes"]
    ]


def _cap(grade: Grade, level: Level) -> Grade:
    """A recommended case never fails harder than NON-STRICT."""
    if grade is Grade.FAIL and level is not Level.REQUIRED:
        return Grade.NON_STRICT
    return grade


def _grade_value(value: Any, outcomes: list[_Outcome]) -> tuple[_Outcome | None, list[str]]:
    """The first outcome that matches, else None with the first outcome's problems."""
    first_problems: list[str] | None = None
    for outcome in outcomes:
        problems = match(value, outcome.matcher)
        if not problems:
            return outcome, []
        if first_problems is None:
            first_problems = problems
    return None, first_problems or []


def run_steps(ctx: StepContext, steps: list[dict[str, Any]], level: Level, source: str) -> None:
    """Interpret golden ``steps`` against ``ctx``, recording findings on it."""
    pending: Any = _NOTHING  # a frame read ahead by an optional expect
    for index, step in enumerate(steps):
        label = f"step {index}"
        if "send" in step:
            wire_table = step.get("wire", {})
            wire = _per_codec_bytes(wire_table, ctx.codec_name) if wire_table else None
            ctx.send_value(decode_special(step["send"]), wire)
        elif "send_raw" in step:
            data = _per_codec_bytes(step["send_raw"], ctx.codec_name)
            if data is None:
                raise CaseSkipped(f"{source}: no raw bytes for codec {ctx.codec_name}")
            if index and "send_raw" in steps[index - 1]:
                # Consecutive raw chunks must reach the bridge as separate
                # reads (a header split after two bytes), not coalesced.
                ctx.wait_sent_read(RAW_CHUNK_GAP)
            ctx.send_raw(data)
        elif "expect" in step:
            value = ctx.read_value() if pending is _NOTHING else pending
            pending = _NOTHING
            optional = step.get("optional")
            # Checked first: the frame is recognisably the next request's answer.
            absent = (
                optional is not None
                and "absent_if" in optional
                and not match(value, optional["absent_if"])
            )
            outcome, problems = (
                (None, []) if absent else _grade_value(value, _outcomes(step["expect"]))
            )
            if outcome is None and optional is not None and not absent:
                absent = any(
                    _grade_value(value, later)[0] is not None
                    for later in _later_answers(steps, index)
                )
            if absent:
                # The bridge sent nothing for this request: the frame we read
                # answers the next one.  Keep it for that step.
                assert optional is not None
                pending = value
                grade = _cap(Grade(optional.get("grade", "non-strict")), level)
                ctx.add_finding(grade, f"{label}: no response: {optional.get('why', '')}")
                if grade is Grade.FAIL:
                    raise CaseFailed(f"{label}: no response", grade)
                continue
            if outcome is None:
                grade = _cap(Grade.FAIL, level)
                why = step.get("why", "")
                message = f"{label}: unexpected response {describe(value)}: " + "; ".join(problems)
                if why:
                    message += f" ({why})"
                raise CaseFailed(message, grade)
            if outcome.grade is not Grade.PASS:
                ctx.add_finding(_cap(outcome.grade, level), f"{label}: {outcome.why}")
        elif "alive" in step:
            _alive(ctx, step["alive"] or {}, label)
        elif "close_stdin" in step:
            ctx.close_stdin()
        elif "expect_exit" in step:
            spec = step["expect_exit"]
            status = ctx.expect_exit(float(spec.get("within", 2.0)))
            if status is None:
                raise CaseFailed(
                    f"{label}: the bridge did not exit within {spec.get('within', 2.0)} s",
                    _cap(Grade.FAIL, level),
                )
            if "status" in spec and status != spec["status"]:
                ctx.add_finding(
                    _cap(Grade(spec.get("status_grade", "fail")), level),
                    f"{label}: exit status {status}, expected {spec['status']}",
                )


def _ping_answer_matcher(ping_id: Any) -> Any:
    """The answer to a ping: by its id, or (when ids are not echoed) by its ok result."""
    return {
        "$oneOf": [
            {"id": ping_id},
            {"success": True, "result": {"$type": "object", "$not": {"echoed": {"$type": "any"}}}},
        ]
    }


class _Nothing:
    pass


_NOTHING: Final = _Nothing()


def _later_answers(steps: list[dict[str, Any]], index: int) -> list[list[_Outcome]]:
    """What the frame read for step ``index`` may answer instead: each later expect up
    to the first that is not optional (optional answers can all be missing, so
    after two silent malformed frames the frame read answers the third step)."""
    found: list[list[_Outcome]] = []
    for step in steps[index + 1 :]:
        if "expect" in step:
            found.append(_outcomes(step["expect"]))
            if "optional" not in step:
                break
        elif "alive" in step:
            alive_id = (step["alive"] or {}).get("id", ALIVE_DEFAULT_ID)
            found.append([_Outcome(Grade.PASS, _ping_answer_matcher(alive_id), "")])
            break
    return found


def _alive(ctx: StepContext, spec: dict[str, Any], label: str) -> None:
    ping_id = spec.get("id", ALIVE_DEFAULT_ID)
    ctx.send_value({"id": ping_id, "command": "ping", "args": {}})
    for _ in range(ALIVE_MAX_SKIPPED_FRAMES + 1):
        value = ctx.read_value()
        if not match(value, {"id": ping_id}):
            problems = match(value, {"success": True})
            if problems:
                raise CaseFailed(f"{label}: the follow-up ping failed: " + "; ".join(problems))
            return
        if not match(value, _ping_answer_matcher(ping_id)):
            return  # the ping's answer without its id: ids are messages.id-*'s business
    raise CaseFailed(
        f"{label}: no answer to the follow-up ping (id {ping_id}) "
        f"among the next {ALIVE_MAX_SKIPPED_FRAMES + 1} frames"
    )


def fill_wire(path: Path) -> bool:
    """Recompute every ``wire`` entry of a golden file from its ``send`` value.

    For authors: write the structured request by hand, list the codecs under
    ``wire`` (any placeholder), and run
    ``python -m snakepit_harness.conformance.golden FILE...``.  Returns
    whether the file changed.  Expectations are never touched.
    """
    doc = load_document(path)
    changed = False
    for index, step in enumerate(doc["steps"]):
        for codec in step.get("wire", {}):
            single = {"steps": [{"send": step["send"], "wire": {codec: step["wire"][codec]}}]}
            if wire_mismatches(single):  # keep any valid hand-chosen encoding
                step["wire"][codec] = wire_hex(step["send"], codec)
                changed = True
        del index
    if changed:
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        Path(path).write_text(text, encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    import sys

    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    for path in paths:
        print(f"{path}: {'wire updated' if fill_wire(path) else 'up to date'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
