"""What several stdio case modules share: the spec's exit deadline, and families of cases.

No cases are declared here (the registry imports this module like any case
module, and finds nothing to register).

* A bridge that is told to stop (end of input, §2.5; a signal, §5.3; a closed
  stdout, §5.4) gets the same 2 s to be gone, judged the same way:
  :func:`expect_exit_within_limit` and :func:`recommend_clean_exit`.
* A *family* is a set of cases that run one body with a different argument
  each (the three places end of input can come, the two signals): a table of
  :class:`Member` rows declared by :func:`declare_family` through the module's
  :class:`~._transport.TransportCases` decorator, so adding a member is one row
  and not another copy of the body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from snakepit_harness.protocol import STDIO_EXIT_LIMIT

from ..drivers.stdio import StdioCaseContext
from ..model import CaseFailed
from ._transport import TransportCases

__all__ = [
    "EXIT_LIMIT",
    "Member",
    "declare_family",
    "expect_exit_within_limit",
    "recommend_clean_exit",
]

# §2.5, §5.3 and §5.4 all give a bridge that is told to stop 2 s to exit: the
# protocol core's STDIO_EXIT_LIMIT, under the name these cases read best with.
EXIT_LIMIT: Final = STDIO_EXIT_LIMIT

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
    cases: TransportCases,
    section: str,
    level: str,
) -> None:
    """Declare each member, through the decorator ``cases``, as a case running
    ``body(ctx, member.arg)``.

    The members share ``cases`` (profiles and options), ``section`` and ``level``.
    The registry names a case's source after its function
    (``python:<module>.<name>``), so each member's function is given the module
    that declares the family and its :attr:`Member.function_name`; its docstring
    is the member's requirement, which ``cases`` takes as the case's.
    """
    for member in members:
        cases(member.id, section=section, level=level)(_bound(module, member, body))


def _bound(
    module: str, member: Member[T], body: Callable[[StdioCaseContext, T], None]
) -> Callable[[StdioCaseContext], None]:
    def run(ctx: StdioCaseContext) -> None:
        body(ctx, member.arg)

    run.__module__ = module
    run.__name__ = run.__qualname__ = member.function_name
    run.__doc__ = member.requirement
    return run
