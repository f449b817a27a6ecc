"""Turn a shrunk fuzz failure into a golden-frame file that replays it.

The file follows ``fixtures/golden/FORMAT.md`` (``snakepit-golden/1``): the
exact bytes fuzz wrote, one ``send_raw`` step per write (so a split that broke
the bridge is split again), then one ``expect`` step per frame saying what a
correct bridge answers, ``close_stdin`` and ``expect_exit`` where the framing
was broken.  ``snakepit-harness replay FILE -- CMD`` and the conformance suite
run it like any golden file.  Beside it, ``FILE.md`` says in words which
property broke, what was seen, the seed and how to replay.

The expectations are derived from the property's oracle (never recorded from
the bridge under test): what PROTOCOL.md requires for each request.  That
holds for split-write failures too, so that a file replays against any bridge
and can join the conformance suite: the bridge's own answers to the frames
written whole carried its error wording and its ``bridge_type``, which a
correct bridge need not share.  The price: a split that changes only what the
spec leaves open (an error message's wording) is reported by the fuzzer, but
its file checks only what the spec fixes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from ..conformance.golden import FORMAT
from ..conformance.matcher import encode_special
from ..protocol import STDIO_EXIT_LIMIT
from .oracle import expected_compute, python_type_name
from .properties import FoundFailure, Property, PropertyFailed
from .strategies import Expectation, Step
from .target import SCHEDULING_ALLOWANCE

__all__ = [
    "FORMAT",
    "build_document",
    "save_transcript",
    "transcript_heading",
    "write_grpc_transcript",
    "write_regression",
]

# A replay on a busy machine gets the same allowance over §2.5's 2 s as the fuzz run.
EXIT_WITHIN: Final = STDIO_EXIT_LIMIT + SCHEDULING_ALLOWANCE

_TIMESTAMP: Final = {"$type": "string"}


def _exact(value: Any, codec: str) -> Any:
    """A matcher for exactly ``value``; a float stays a float under MessagePack."""
    matcher: dict[str, Any] = {"$eq": encode_special(value)}
    if codec == "msgpack" and isinstance(value, float):
        matcher["$not"] = {"$type": "integer"}
    return matcher


def _failure_outcomes(base: dict[str, Any], why: str) -> dict[str, Any]:
    return {
        "outcomes": [
            {"match": {**base, "success": False, "error": {"$type": "string", "$nonEmpty": True}}},
            {
                "match": {**base, "success": True, "result": {"status": "error"}},
                "why": "the older unknown-command form (§4.4)",
            },
        ],
        "why": why,
    }


def _expectation(step: Step, codec: str) -> dict[str, Any]:
    """The ``expect`` payload for the answer to the valid request in ``step``."""
    assert step.request is not None and step.expect is not None
    expect: Expectation = step.expect
    base: dict[str, Any] = {"id": encode_special(step.request_id), "timestamp": _TIMESTAMP}
    ok: dict[str, Any] = {**base, "success": True, "result": {"status": "ok"}}
    if expect.kind == "envelope":
        return {"match": {**base, "success": {"$type": "boolean"}}}
    if expect.kind == "failure":
        return _failure_outcomes(base, f"{step.request['command']!r} must fail (§4.4)")
    if expect.kind == "success":
        return {"match": {**base, "success": True}}
    if expect.kind == "not_found":
        return {"match": {**base, "success": False, "error_type": "not_found"}}
    if expect.kind == "stored":
        shown: dict[str, Any] = {"type": python_type_name(expect.value)}
        if isinstance(expect.value, list | dict):
            shown["length"] = len(expect.value)
        else:
            shown["value"] = {"$eq": encode_special(expect.value)}
        return {"match": {**base, "success": True, "result": {"object": shown}}}
    if expect.kind == "listing":
        ids = expect.value
        listing = {"$len": len(ids), **({"$contains": ids} if ids else {})}
        return {
            "match": {
                **base,
                "success": True,
                "result": {"stored_objects": listing, "count": len(ids)},
            }
        }
    if expect.kind == "echo":
        ok["result"]["echoed"] = {"$eq": encode_special(expect.value)}
        return {"match": ok, "why": "echo returns exactly its args (§6.2)"}
    if expect.kind == "compute":
        operation, a, b = expect.value
        must_succeed, want = expected_compute(operation, a, b, codec)
        if not must_succeed:
            return _failure_outcomes(base, f"compute with {want} must fail (§6.3)")
        ok["result"].update(
            {
                "operation": operation,
                "inputs": {"$eq": encode_special({"a": a, "b": b})},
                "result": _exact(want, codec),
            }
        )
        return {"match": ok, "why": "compute agrees with Python arithmetic (§6.3)"}
    args = step.request.get("args", {})
    if step.request["command"] == "ping" and "worker_id" in args:
        ok["result"]["worker_id"] = {"$eq": encode_special(args["worker_id"])}
    return {"match": ok}


def _loose_expectation(step: Step) -> dict[str, Any]:
    """An optional answer to a malformed frame: id null (or the frame's own), well-formed."""
    ids: list[Any] = [None]
    if step.loose_id is not None:
        ids.append(encode_special(step.loose_id))
    return {
        "expect": {
            "match": {
                "id": {"$oneOf": ids},
                "success": {"$type": "boolean"},
                "timestamp": _TIMESTAMP,
            }
        },
        "optional": {"grade": "pass", "why": f"{step.label}: answering it is a SHOULD (§4.3)"},
    }


def build_document(
    failure: PropertyFailed,
    prop: Property,
    profile: str,
    codec_mode: str,
    *,
    timeout: float,
) -> dict[str, Any]:
    """The golden-frame document that replays ``failure``."""
    codec = failure.codec
    exchange = failure.exchange
    steps: list[dict[str, Any]] = []
    if failure.timeline is not None:
        for kind, index in failure.timeline:
            if kind == "write":
                steps.append({"send_raw": {codec: exchange.chunks[index].hex()}})
            else:
                steps.append({"expect": _expectation(failure.steps[index], codec)})
        return _document(failure, prop, profile, codec_mode, steps, timeout=timeout)
    steps += [{"send_raw": {codec: chunk.hex()}} for chunk in exchange.chunks if chunk]
    answers = [
        {"expect": _expectation(step, codec)}
        if step.request is not None
        else _loose_expectation(step)
        for step in failure.steps
    ]
    if exchange.closed_input:
        # Before end of input, and no optional answer after the last
        # required one: a bridge that rightly says nothing more would
        # otherwise be read past its exit.
        while answers and "optional" in answers[-1]:
            answers.pop()
    steps += answers
    if exchange.closed_input:
        steps += [{"close_stdin": True}, {"expect_exit": {"within": EXIT_WITHIN}}]
    return _document(failure, prop, profile, codec_mode, steps, timeout=timeout)


def _document(
    failure: PropertyFailed,
    prop: Property,
    profile: str,
    codec_mode: str,
    steps: list[dict[str, Any]],
    *,
    timeout: float,
) -> dict[str, Any]:
    digest = hashlib.sha256(
        json.dumps([prop.name, codec_mode, steps], sort_keys=True).encode()
    ).hexdigest()[:8]
    return {
        "format": FORMAT,
        "id": f"fuzz.{digest}",
        "section": prop.section,
        "level": "required",
        "profiles": [profile],
        "codecs": [codec_mode],
        "bridge": "fresh",
        "timeout": timeout,
        "requirement": prop.statement,
        "steps": steps,
        "notes": f"fuzz property {prop.name!r} ({'; '.join(failure.problems)[:2000]})",
    }


def _explanation(
    doc: dict[str, Any],
    failure: PropertyFailed,
    prop: Property,
    *,
    seed: int,
    bridge_argv: Sequence[str],
    file_name: str,
) -> str:
    exchange = failure.exchange
    lines = [
        f"# {doc['id']}: fuzz property `{prop.name}` broken",
        "",
        f"**Property** (PROTOCOL.md §{prop.section}): {prop.statement}",
        "",
        "**What went wrong:**",
        "",
        *[f"- {problem}" for problem in failure.problems],
        "",
        f"**Input** ({failure.codec}, written {failure.split or 'whole frames'}, "
        f"{len(exchange.chunks)} write(s), {len(exchange.wire)} bytes):",
        "",
        *[
            f"{i}. {step.label}: `{step.wire[:64].hex()}{'...' if len(step.wire) > 64 else ''}`"
            for i, step in enumerate(failure.steps)
        ],
        "",
    ]
    if failure.history_dependent:
        lines += [
            "Note: a fresh bridge passed this input; the failure needed earlier traffic, "
            "so the file may replay as a pass.",
            "",
        ]
    if exchange.stderr_tail:
        tail = exchange.stderr_tail.decode("utf-8", "replace")[-2000:].rstrip()
        lines += ["**Bridge stderr (tail):**", "", "```", tail, "```", ""]
    command = " ".join(bridge_argv)
    lines += [
        f"Found with `--seed {seed}`. Replay:",
        "",
        "```",
        f"snakepit-harness replay {file_name} --codec {doc['codecs'][0]} -- {command}",
        "```",
        "",
    ]
    return "\n".join(lines)


def write_regression(found: FoundFailure, directory: Path) -> Path:
    """Write ``fuzz.<hash>.json`` and its ``.md`` explanation into ``directory``."""
    doc = build_document(
        found.failure, found.prop, found.profile, found.codec_mode, timeout=found.timeout
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{doc['id']}.json"
    # ensure_ascii: lone surrogates survive only as \\u escapes.
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=True) + "\n", encoding="utf-8")
    explanation = _explanation(
        doc,
        found.failure,
        found.prop,
        seed=found.seed,
        bridge_argv=found.bridge_argv,
        file_name=str(path),
    )
    path.with_suffix(".md").write_text(explanation, encoding="utf-8", errors="replace")
    return path


def save_transcript(
    found: FoundFailure, directory: Path, *, kind: str, record: Mapping[str, Any]
) -> tuple[Path, str]:
    """Save a state machine's failure as ``fuzz.<hash>.<kind>.json``; returns the path and hash.

    ``record`` holds what is particular to the transport (its calls or steps);
    the property, problems and what repeats the run are added here.  The hash
    is of the whole record, so two different failures never share a file.
    """
    whole = {
        **record,
        "property": found.prop.name,
        "statement": found.prop.statement,
        "profile": found.profile,
        "problems": found.failure.problems,
        "seed": found.seed,
        "bridge": list(found.bridge_argv),
        "timeout": found.timeout,
    }
    text = json.dumps(whole, indent=1, ensure_ascii=True, default=repr)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"fuzz.{digest}.{kind}.json"
    path.write_text(text + "\n", encoding="utf-8")
    return path, digest


def transcript_heading(found: FoundFailure, digest: str, kind: str) -> list[str]:
    """The first lines of a transcript's ``.md``: which property broke, and how."""
    return [
        f"# fuzz.{digest}: {kind} fuzz property `{found.prop.name}` broken",
        "",
        f"**Property** (PROTOCOL.md §{found.prop.section}): {found.prop.statement}",
        "",
        *[f"- {problem}" for problem in found.failure.problems],
        "",
    ]


def write_grpc_transcript(found: FoundFailure, directory: Path) -> Path:
    """Write a gRPC failure's calls as ``fuzz.<hash>.grpc.json`` with a ``.md`` beside it.

    The golden-frame format is stdio only, so this transcript is for reading
    (and for re-running with the printed seed), not for ``replay``.
    """
    calls = found.failure.grpc_calls or []
    path, digest = save_transcript(
        found, directory, kind="grpc", record={"section": found.prop.section, "calls": calls}
    )
    lines = [
        *transcript_heading(found, digest, "gRPC"),
        f"{len(calls)} call(s) in `{path.name}`; the last one failed.",
        "",
        f"Repeat: `snakepit-harness fuzz --profile grpc --seed {found.seed} -- {found.command}`",
        "",
    ]
    path.with_name(f"fuzz.{digest}.grpc.md").write_text("\n".join(lines), encoding="utf-8")
    return path
