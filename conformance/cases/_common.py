"""What several stdio case modules share: the spec's exit deadline, and families of cases.

No cases are declared here (the registry imports this module like any case
module, and finds nothing to register).

* A bridge that is told to stop (end of input, §2.5; a signal, §5.3; a closed
  stdout, §5.4) gets the same 2 s to be gone, judged the same way:
  :func:`expect_exit_within_limit` and :func:`recommend_clean_exit`.
* A *family* is a set of cases that run one body with a different argument
  each (the three places end of input can come, the two signals): a table of
  :class:`Member` rows declared by :func:`declare_family`, so adding a member
  is one row and not another copy of the body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Generic, TypedDict, TypeVar, Unpack

from ..drivers.stdio import StdioCaseContext
from ..model import BridgeUse, CaseFailed, Level
from ..registry import case

__all__ = [
    "EXIT_LIMIT",
    "Declaration",
    "Member",
    "declare_family",
    "expect_exit_within_limit",
    "recommend_clean_exit",
]

# §2.5, §5.3 and §5.4 all give a bridge that is told to stop 2 s to exit.
EXIT_LIMIT: Final = 2.0

T = TypeVar("T")


def expect_exit_within_limit(ctx: StdioCaseContext, after: str) -> int:
    """The bridge's exit status once it has exited; FAIL if it is still running
    ``EXIT_LIMIT`` s after ``after`` (what told it to stop, as the message says it)."""
    status = ctx.expect_exit(EXIT_LIMIT)
    if status is None:
        raise CaseFailed(f"the bridge did not exit within {EXIT_LIMIT:.0f} s of {after}")
    return status


def recommend_clean_exit(ctx: StdioCaseContext, status: int, after: str) -> None:
    """NON-STRICT unless the bridge exited with status 0 (a SHOULD of §2.5 and §5.3)."""
    ctx.recommend(status == 0, f"exit status {status} after {after} (should be 0)")


class Declaration(TypedDict, total=False):
    """The keywords of :func:`~snakepit_harness.conformance.registry.case` that say where
    a case runs (profiles, codecs, bridge, gate): what a module's or a family's cases
    share, spread into each declaration with ``**``.  Section, level, requirement
    and timeout are each case's own."""

    profiles: frozenset[str]
    codecs: tuple[str, ...]
    bridge: BridgeUse | str
    gate: bool


@dataclass(frozen=True)
class Member(Generic[T]):
    """One case of a family: its id, its requirement, and the argument its body gets."""

    id: str
    requirement: str
    arg: T

    @property
    def function_name(self) -> str:
        """The name a ``def`` of its own would have had: the id after its section part,
        in snake case (``framing.eof-at-boundary`` -> ``eof_at_boundary``)."""
        return self.id.split(".", 1)[1].replace(".", "_").replace("-", "_")


def declare_family(
    module: str,
    body: Callable[[StdioCaseContext, T], None],
    members: Iterable[Member[T]],
    *,
    section: str,
    level: Level | str,
    **declaration: Unpack[Declaration],
) -> None:
    """Declare each member as a case running ``body(ctx, member.arg)``.

    The members share ``section``, ``level`` and ``declaration``.
    The registry names a case's source after its function
    (``python:<module>.<name>``), so each member's function is given the module
    that declares the family and its :attr:`Member.function_name`.
    """
    for member in members:
        case(
            member.id, section=section, level=level, requirement=member.requirement, **declaration
        )(_bound(module, member.function_name, body, member.arg))


def _bound(
    module: str, name: str, body: Callable[[StdioCaseContext, T], None], arg: T
) -> Callable[[StdioCaseContext], None]:
    def run(ctx: StdioCaseContext) -> None:
        body(ctx, arg)

    run.__module__ = module
    run.__name__ = run.__qualname__ = name
    return run
