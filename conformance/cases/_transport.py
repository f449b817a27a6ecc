"""How the case modules declare their cases, whatever transport they drive.

Each case module declares cases for one transport and one profile set (the
stdio modules: mostly every stdio profile; gRPC and bridge-service: their
own); :class:`TransportCases` is the ``case`` decorator with those filled in
(and an id prefix, where the profile's ids share one).
:meth:`TransportCases.preset` adds options a family of cases shares (a raw
bridge and start-up's time limit, the codecs a MessagePack case runs under,
say) under one name, and :meth:`TransportCases.for_profiles` narrows the
profile set for the cases of a module that apply to fewer profiles.

A case's requirement is its function's docstring (folded into one line), so
the text the report shows is what a reader of the function sees first, and
the decorator carries only the citation: id, section, level.

No cases are declared here (the registry imports this module like any case
module, and finds nothing to register).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final, TypedDict, Unpack

from ..model import BridgeUse, CaseFn
from ..registry import ALL_STDIO, case

__all__ = ["STDIO_CASES", "CaseOptions", "TransportCases", "requirement_of"]


class CaseOptions(TypedDict, total=False):
    """What a case may set beyond its citation: the codec modes it runs under (all, if
    unset), how it gets its bridge, whether it is a gate, its time limit (see
    :func:`~snakepit_harness.conformance.registry.case`)."""

    codecs: tuple[str, ...] | None
    bridge: BridgeUse
    gate: bool
    timeout: float | None


@dataclass(frozen=True)
class TransportCases:
    """The ``case`` decorator for one transport's module: ``transport``, ``profiles``,
    ``prefix`` + id, and the ``defaults`` of a preset."""

    transport: str
    profiles: frozenset[str]
    prefix: str = ""
    defaults: CaseOptions = field(default_factory=CaseOptions)

    def preset(self, **defaults: Unpack[CaseOptions]) -> TransportCases:
        """This decorator with ``defaults`` for the options its cases do not set."""
        return replace(self, defaults={**self.defaults, **defaults})

    def for_profiles(self, profiles: frozenset[str]) -> TransportCases:
        """This decorator (preset and all) for cases that apply to ``profiles`` instead."""
        return replace(self, profiles=profiles)

    def __call__(
        self, case_id: str, *, section: str, level: str, **options: Unpack[CaseOptions]
    ) -> Callable[[CaseFn], CaseFn]:
        """Declare the function as case ``prefix + case_id``, cited as ``section``; its
        docstring is the requirement.  ``options`` override the preset's."""
        chosen: CaseOptions = {
            "codecs": None,
            "bridge": BridgeUse.SHARED,
            "gate": False,
            "timeout": None,
            **self.defaults,
            **options,
        }

        def decorate(fn: CaseFn) -> CaseFn:
            return case(
                self.prefix + case_id,
                section=section,
                level=level,
                profiles=self.profiles,
                requirement=requirement_of(fn),
                transport=self.transport,
                **chosen,
            )(fn)

        return decorate


# The stdio modules' decorator (§2-§7): a case applies to every stdio profile
# unless its module narrows it with ``for_profiles``.
STDIO_CASES: Final = TransportCases("stdio", ALL_STDIO)


def requirement_of(fn: CaseFn) -> str:
    """A case function's docstring as one line: the requirement the case grades."""
    if not fn.__doc__:
        raise TypeError(f"case {fn.__qualname__} has no docstring saying its requirement")
    return " ".join(fn.__doc__.split())
