"""The messages a host sends and the rules for what comes back (PROTOCOL.md §3.4, §4, §5).

Builders return plain values, ready for a codec; checkers take decoded values
and return what is wrong in words (an empty list when nothing is), so that a
conformance case can grade them, ``send`` can print them and the fuzz oracle
can judge them with the same rules.  Nothing here does I/O or raises for a
bad bridge: being wrong is the bridge's right, reporting it is the caller's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from ._constants import CODEC_NAMES

__all__ = [
    "NEGOTIATION_OFFER",
    "failure_form",
    "health_ping",
    "init_ping",
    "is_ok_result",
    "negotiation_offer",
    "request",
    "response_problems",
    "selection_problem",
]

# §3.4, what a host sends to negotiate: MessagePack preferred, as Snakepit does.
NEGOTIATION_OFFER: Final = {
    "type": "protocol_negotiation",
    "supported": ["msgpack", "json"],
    "preferred": "msgpack",
}


def negotiation_offer(
    supported: Sequence[str] = ("msgpack", "json"), preferred: str | None = None
) -> dict[str, Any]:
    """A §3.4 negotiation frame offering ``supported`` (``preferred``: its first by default)."""
    if not supported:
        raise ValueError("a negotiation offer needs at least one codec")
    return {
        "type": "protocol_negotiation",
        "supported": list(supported),
        "preferred": preferred if preferred is not None else supported[0],
    }


def selection_problem(reply: Any, offered: Sequence[str] = CODEC_NAMES) -> str:
    """Why ``reply`` is not a usable §3.4 answer to an offer of ``offered`` ("" when it is)."""
    if not isinstance(reply, dict) or reply.get("type") != "protocol_selected":
        return f"the negotiation answer is not protocol_selected: {reply!r}"
    selected = reply.get("protocol")
    if selected not in offered:
        return f"the bridge selected {selected!r}, which was not offered ({', '.join(offered)})"
    return ""


def request(
    request_id: int | str, command: str, args: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A §4.1 request."""
    return {"id": request_id, "command": command, "args": {} if args is None else args}


def init_ping(request_id: int | str = 1, worker_id: str = "snakepit-harness") -> dict[str, Any]:
    """The ping a host sends once a bridge is up (§1, §5.1)."""
    return request(request_id, "ping", {"worker_id": worker_id, "initialization": True})


def health_ping(request_id: int | str) -> dict[str, Any]:
    """The ping a host sends every 30 s, also while a request is in flight (§1, §5.2)."""
    return request(request_id, "ping", {"health_check": True})


def response_problems(response: Any, request_id: Any) -> list[str]:
    """The ways ``response`` breaks the envelope rules of §4.2 (empty when none)."""
    if not isinstance(response, dict):
        return [f"the response is a {type(response).__name__}, not an object (§4.2)"]
    problems = []
    if "id" not in response:
        problems.append("no `id` (§4.2)")
    elif response["id"] != request_id or type(response["id"]) is not type(request_id):
        problems.append(f"`id` is {response['id']!r}, the request's was {request_id!r} (§4.2)")
    success = response.get("success")
    if not isinstance(success, bool):
        problems.append("`success` is missing or not a boolean (§4.2)")
    elif success and "result" not in response:
        problems.append("`success` is true but there is no `result` (§4.2)")
    elif not success and not (isinstance(response.get("error"), str) and response["error"]):
        problems.append("`success` is false but `error` is not a non-empty string (§4.2)")
    if not isinstance(response.get("timestamp"), str):
        problems.append("`timestamp` is missing or not a string (§4.2)")
    return problems


def is_ok_result(response: Any) -> bool:
    """Does ``response`` say ``success: true`` with ``result.status == "ok"`` (§5.1, §6)?"""
    if not isinstance(response, dict) or response.get("success") is not True:
        return False
    result = response.get("result")
    return isinstance(result, dict) and result.get("status") == "ok"


def failure_form(response: Any) -> str:
    """How ``response`` signals failure (§4.4): "modern" (``success: false``),
    "legacy" (``success: true`` with ``result.status == "error"``) or "none"."""
    if not isinstance(response, dict):
        return "none"
    if response.get("success") is False:
        return "modern"
    result = response.get("result")
    legacy = isinstance(result, dict) and result.get("status") == "error"
    return "legacy" if response.get("success") is True and legacy else "none"
