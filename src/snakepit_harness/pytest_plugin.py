"""pytest plugin (entry point ``pytest11``): the conformance suite as pytest items.

``pytest --bridge "./my-bridge --protocol msgpack" --profile v2 --codec msgpack`` adds
one item per conformance case (node ids ``conformance::<case id>``) to the
user's own session, so ``-k``, ``--junitxml`` and CI integrations work as
for any test.  Without ``--bridge`` the plugin does nothing at all.

Verdicts map onto pytest outcomes: PASS passes; FAIL, TIMEOUT, CRASH,
FRAMING and STALE fail (with the full report: bytes sent, what was observed,
stderr tail, a replay command); SKIP skips; XFAIL (listed in ``--baseline``)
is xfail; NON-STRICT warns, or fails under ``--bridge-strict`` (pytest's own
``--strict`` turns it on too: pytest owns that flag name).

This is the only module of the project that imports pytest; options are
grouped under one ``getgroup`` and named by the constants below.  Where
another plugin already owns an option name (``--profile`` is used by
pytest-profiling), only the ``--bridge-*`` spelling is registered.
"""

from __future__ import annotations

import shlex
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

__all__ = ["ConformanceFailure", "ConformanceItem", "ConformanceSuite", "ConformanceWarning"]

OPTION_BRIDGE: Final = "--bridge"
OPTION_PROFILE: Final = ("--profile", "--bridge-profile")
OPTION_CODEC: Final = ("--codec", "--bridge-codec")
OPTION_STRICT: Final = "--bridge-strict"
OPTION_BASELINE: Final = ("--baseline", "--bridge-baseline")
OPTION_TIMEOUT: Final = "--bridge-timeout"
OPTION_TARGET: Final = "--bridge-target"

_STATE_KEY = pytest.StashKey["_SuiteState"]()


class ConformanceFailure(Exception):
    """A conformance case failed; its text is the full failure report."""


class ConformanceWarning(UserWarning):
    """A recommended (SHOULD) requirement was missed: NON-STRICT."""


def _add(group: Any, names: tuple[str, ...], **kwargs: Any) -> None:
    """Add an option under every free spelling (another plugin may own the short one)."""
    try:
        group.addoption(*names, **kwargs)
    except ValueError:
        group.addoption(names[-1], **kwargs)


def pytest_addoption(parser: pytest.Parser) -> None:
    from snakepit_harness.protocol import CODEC_MODES, PROFILES

    group = parser.getgroup("snakepit", "Snakepit bridge conformance (snakepit-harness)")
    group.addoption(
        OPTION_BRIDGE,
        dest="snakepit_bridge",
        default=None,
        metavar="CMD",
        help="run the conformance suite against this bridge command line (enables the plugin)",
    )
    _add(
        group,
        OPTION_PROFILE,
        dest="snakepit_profile",
        default="v2",
        choices=PROFILES,
        help="the profile the bridge claims (default: v2)",
    )
    _add(
        group,
        OPTION_CODEC,
        dest="snakepit_codec",
        default="json",
        choices=CODEC_MODES,
        help="json, msgpack (start the bridge with its msgpack flag) or negotiate (default: json)",
    )
    group.addoption(
        OPTION_STRICT,
        dest="snakepit_strict",
        action="store_true",
        help="NON-STRICT (a SHOULD missed) fails the item (pytest's --strict also does)",
    )
    _add(
        group,
        OPTION_BASELINE,
        dest="snakepit_baseline",
        default=None,
        metavar="FILE",
        help="known failures (YAML or JSON): listed failures xfail, listed passes fail as stale",
    )
    group.addoption(
        OPTION_TIMEOUT,
        dest="snakepit_timeout",
        type=float,
        default=10.0,
        help="per-case deadline in seconds (default: 10)",
    )
    group.addoption(
        OPTION_TARGET,
        dest="snakepit_target",
        default=None,
        metavar="HOST:PORT",
        help="gRPC profile: a running bridge to connect to (instead of --bridge)",
    )


def _strict(config: pytest.Config) -> bool:
    if config.getoption("snakepit_strict"):
        return True
    try:  # pytest >= 9: --strict sets the `strict` ini value
        return bool(config.getini("strict"))
    except (ValueError, KeyError):
        return False


class _SuiteState:
    """One run shared by all items: the settings, and the suite session (driver, gates,
    baseline) the CLI uses too, started on the first item."""

    def __init__(self, config: pytest.Config) -> None:
        from snakepit_harness.conformance.baseline import load_baseline
        from snakepit_harness.conformance.model import RunSettings
        from snakepit_harness.protocol import PROFILE_TRANSPORTS

        profile = config.getoption("snakepit_profile")
        self.settings = RunSettings(
            bridge_cmd=tuple(shlex.split(config.getoption("snakepit_bridge") or "")),
            profile=profile,
            codec=config.getoption("snakepit_codec"),
            strict=_strict(config),
            timeout=config.getoption("snakepit_timeout"),
            transport=PROFILE_TRANSPORTS[profile],
            target=config.getoption("snakepit_target"),
        )
        baseline_path = config.getoption("snakepit_baseline")
        self.baseline = load_baseline(Path(baseline_path)) if baseline_path else {}
        self._session: Any = None

    @property
    def session(self) -> Any:
        if self._session is None:
            from snakepit_harness.conformance.session import SuiteSession

            self._session = SuiteSession(self.settings, baseline=self.baseline)
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


class ConformanceItem(pytest.Item):
    """One conformance case, run through the shared driver."""

    def __init__(self, *, case: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.add_marker(pytest.mark.snakepit_conformance)

    def runtest(self) -> None:
        from snakepit_harness.conformance.model import Verdict
        from snakepit_harness.conformance.reports import failure_details

        state: _SuiteState = self.config.stash[_STATE_KEY]
        result = state.session.run(self.case)
        details = "\n".join(failure_details(result))
        if result.verdict is Verdict.SKIP:
            pytest.skip(result.message)
        if result.verdict is Verdict.XFAIL:
            pytest.xfail(result.message)
        if result.verdict is Verdict.NON_STRICT and not state.settings.strict:
            warnings.warn(ConformanceWarning(details), stacklevel=1)
            return
        if result.verdict is not Verdict.PASS:
            raise ConformanceFailure(details)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ConformanceFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path | str, int | None, str]:
        return (self.case.source or "conformance", None, f"conformance: {self.case.id}")


class BaselineItem(pytest.Item):
    """Fails when the baseline lists ids that no case has (stale entries)."""

    def runtest(self) -> None:
        from snakepit_harness.conformance.registry import load_cases

        state: _SuiteState = self.config.stash[_STATE_KEY]
        unknown = sorted(set(state.baseline) - set(load_cases()))
        if unknown:
            raise ConformanceFailure("STALE baseline entries (no such case): " + ", ".join(unknown))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        return str(excinfo.value)

    def reportinfo(self) -> tuple[Path | str, int | None, str]:
        return ("baseline", None, "conformance: baseline entries")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("snakepit_bridge", default=None) or config.getoption(
        "snakepit_target", default=None
    ):
        config.addinivalue_line(
            "markers", "snakepit_conformance: a Snakepit bridge conformance case"
        )
        config.stash[_STATE_KEY] = _SuiteState(config)


class ConformanceSuite(pytest.Collector):
    """The parent of the conformance items (node id ``conformance``)."""

    def collect(self) -> list[pytest.Item | pytest.Collector]:
        return []  # items are added in pytest_collection_modifyitems


def _items(session: pytest.Session) -> Iterator[pytest.Item]:
    from snakepit_harness.conformance.registry import all_cases
    from snakepit_harness.conformance.session import belongs

    state: _SuiteState = session.config.stash[_STATE_KEY]
    suite = ConformanceSuite.from_parent(session, name="conformance", nodeid="conformance")
    for case in all_cases():
        if belongs(case, state.settings):
            yield ConformanceItem.from_parent(suite, name=case.id, case=case)
    if state.baseline:
        yield BaselineItem.from_parent(suite, name="baseline")


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselection sees the items
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    if _STATE_KEY not in config.stash:
        return
    # Gates first, as the runner orders them: their failures block the rest.
    items.extend(_items(session))


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE_KEY, None)
    if state is not None:
        state.close()
