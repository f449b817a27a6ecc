"""How often the default fuzz budget finds a bridge broken at one edge class (issue 14.2).

    python benchmarks/fuzz_catch_rate.py [--seeds 10] [--only NAME ...] [--json FILE]

For each planted defect of ``tests/fuzz_bridges/toy_bridge.py`` (the bridge
dies when echo's args hold a value of one edge class past a threshold), runs
``snakepit-harness fuzz --profile v2 --property echo --seed S`` at the default
budget (``--max-examples`` not given) for seeds 1..N and counts the runs whose
``echo`` property failed; ``echo`` is the property that carries the edge
classes; every property has its own budget, so running only it changes
nothing about its search.  Prints a Markdown table (the one in docs/fuzz.md)
with the catches, the median wall time of a run and the median number of
examples the run reported.  Exit status 0 whatever the figures.

The bridge-service rows do the same with ``--profile bridge-service`` against
the reference worker serving an adapter of ``tests/fuzz_bridges/bs_adapters.py``,
or against a broken sample worker of ``fixtures/bridge_service/`` (there the
one state machine is the property).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
TOY_BRIDGE: Final = ROOT / "tests" / "fuzz_bridges" / "toy_bridge.py"
BS_ADAPTERS: Final = ROOT / "tests" / "fuzz_bridges" / "bs_adapters.py"
BS_SAMPLES: Final = ROOT / "fixtures" / "bridge_service"
BRIDGE_SERVICE_PROPERTY: Final = "bridge-service-calls"
# One fuzz run's ceiling: a run that takes longer is a harness problem to report.
RUN_LIMIT: Final = 300


@dataclass(frozen=True)
class PlantedDefect:
    edge_class: str
    defect: str  # toy_bridge.py --defect argument, or a bs_adapters.py class
    codec: str
    meaning: str
    profile: str = "v2"

    @property
    def property_name(self) -> str:
        return BRIDGE_SERVICE_PROPERTY if self.profile == "bridge-service" else "echo"

    def fuzz_command(self, seed: int) -> list[str]:
        if self.profile == "bridge-service" and self.defect.endswith(".py"):
            worker = [sys.executable, str(BS_SAMPLES / self.defect)]  # a broken sample worker
        elif self.profile == "bridge-service":
            worker = [sys.executable, "-m", "snakepit_bridge.bridge_service"]
            worker += ["--adapter", f"{BS_ADAPTERS}:{self.defect}"]
        else:
            worker = [sys.executable, str(TOY_BRIDGE), "--protocol", self.codec]
            worker += ["--defect", self.defect]
        return [
            sys.executable, "-m", "snakepit_harness", "fuzz", "--profile", self.profile,
            "--codec", self.codec, "--property", self.property_name, "--seed", str(seed),
            "--", *worker,
        ]  # fmt: skip


DEFECTS: Final = (
    PlantedDefect("deep nesting", "nesting:33", "json", "dies deeper than 33 levels"),
    PlantedDefect("deep nesting", "nesting:40", "json", "dies deeper than 40 levels"),
    PlantedDefect("deep nesting", "nesting:70", "json", "dies deeper than 70 levels"),
    PlantedDefect("deep nesting", "nesting:99", "json", "dies at 100 levels"),
    PlantedDefect("deep nesting", "nesting:70", "msgpack", "dies deeper than 70 levels"),
    PlantedDefect("long strings", "long-string:1000", "json", "dies past 1,000 characters"),
    PlantedDefect("long strings", "long-string:65536", "json", "dies past 64 Ki characters"),
    PlantedDefect("long strings", "long-string:99000", "msgpack", "dies past 99,000 characters"),
    PlantedDefect("big binaries", "big-binary:65536", "msgpack", "dies past 64 KiB"),
    PlantedDefect("big binaries", "big-binary:1000000", "msgpack", "dies past 1,000,000 bytes"),
    PlantedDefect("many keys", "many-keys:100", "json", "dies past 100 keys"),
    PlantedDefect("many keys", "many-keys:4000", "json", "dies past 4,000 keys"),
    PlantedDefect("negative integers", "big-negative:31", "json", "dies below -2^31"),
    PlantedDefect("negative integers", "big-negative:63", "json", "dies below -2^63"),
    PlantedDefect("big integers", "bigint", "json", "integers past 2^53 through a double"),
    PlantedDefect("edge floats", "subnormal", "json", "dies on a subnormal"),
    PlantedDefect("edge floats", "negzero", "msgpack", "drops the sign of -0.0"),
    PlantedDefect("unicode", "astral", "json", "dies beyond U+FFFF"),
    PlantedDefect("unicode", "unicode", "json", "turns U+2028 into a newline"),
    PlantedDefect(
        "deep nesting", "DeepCrash", "json", "echo dies deeper than 50 levels", "bridge-service"
    ),
    PlantedDefect(
        "big integers",
        "integers_as_floats.py",
        "json",
        "every number in a result sent as a float",
        "bridge-service",
    ),
)


def _outcome(property_name: str) -> re.Pattern[str]:
    """The verdict line of ``property_name`` in fuzz's output: PASS/FAIL and its examples."""
    return re.compile(rf"^(PASS|FAIL)\s+{re.escape(property_name)}\s+(\d+) examples", re.M)


@dataclass
class Rate:
    defect: PlantedDefect
    caught: list[int] = field(default_factory=list)  # seeds whose run failed echo
    missed: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    examples: list[int] = field(default_factory=list)


def one_run(defect: PlantedDefect, seed: int) -> tuple[bool, float, int]:
    """(caught, wall seconds, examples reported) for one seed."""
    began = time.monotonic()
    done = subprocess.run(
        defect.fuzz_command(seed),
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT,
        check=False,
        cwd=ROOT,
    )
    seconds = time.monotonic() - began
    found = _outcome(defect.property_name).search(done.stdout)
    if found is None or done.returncode not in (0, 1):
        raise RuntimeError(
            f"{defect.defect} seed {seed}: the fuzz run did not finish (exit "
            f"{done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return found.group(1) == "FAIL", seconds, int(found.group(2))


def table(rates: Sequence[Rate], seeds: int) -> str:
    lines = [
        "| edge class | planted defect | profile | codec | caught | median s a run | "
        "median examples |",
        "|---|---|---|---|---|---|---|",
    ]
    for rate in rates:
        d = rate.defect
        lines.append(
            f"| {d.edge_class} | `{d.defect}`: {d.meaning} | {d.profile} | {d.codec} | "
            f"{len(rate.caught)}/{seeds} | {statistics.median(rate.seconds):.1f} | "
            f"{statistics.median(rate.examples):.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 1..N (default 10)")
    parser.add_argument(
        "--only", action="append", default=[], metavar="DEFECT", help="e.g. nesting:70"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="FILE")
    options = parser.parse_args(argv)
    chosen = [d for d in DEFECTS if not options.only or d.defect in options.only]
    rates = []
    for defect in chosen:
        rate = Rate(defect)
        for seed in range(1, options.seeds + 1):
            caught, seconds, examples = one_run(defect, seed)
            (rate.caught if caught else rate.missed).append(seed)
            rate.seconds.append(round(seconds, 2))
            rate.examples.append(examples)
        print(
            f"{defect.defect} ({defect.codec}): {len(rate.caught)}/{options.seeds}"
            + (f", missed seeds {rate.missed}" if rate.missed else ""),
            flush=True,
        )
        rates.append(rate)
    print()
    print(table(rates, options.seeds))
    if options.json is not None:
        options.json.write_text(json.dumps([asdict(r) for r in rates], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
