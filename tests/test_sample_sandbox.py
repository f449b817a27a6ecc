"""The sandbox of the broken enhanced samples lets the probes' effects through, and no more.

The samples with a safety hole (fixtures/enhanced_bridges/) install it first:
whatever a hole lets through may start only the suite's own probe commands
and write only under the temporary folder.  Checked in a child process, since
an audit hook cannot be removed.  Every attempt here is harmless even if the
sandbox failed to refuse it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import json, os, subprocess, sys, tempfile
    from snakepit_harness.fixtures.enhanced_bridges import sandbox

    probe = tempfile.mkdtemp(prefix="snakepit-probe-")
    marker = os.path.join(probe, "marker")
    sandbox.install()

    def attempt(fn):
        try:
            fn()
        except PermissionError:
            return "refused"
        return "allowed"

    def fork():
        if os.fork() == 0:
            os._exit(0)

    print(json.dumps({
        "probe folder": probe,
        "touch the probe's marker": attempt(lambda: os.system(f"touch {marker}")),
        "the marker exists": os.path.exists(marker),
        "run touch of the marker": attempt(lambda: subprocess.run(["touch", marker])),
        "true": attempt(lambda: os.system("true")),
        "another command": attempt(lambda: os.system("exit 7")),
        "touch outside a probe folder": attempt(lambda: os.system("touch /dev/null")),
        "another program": attempt(lambda: subprocess.run(["rm", marker])),
        "write in the temporary folder": attempt(lambda: open(marker, "w").close()),
        "write elsewhere": attempt(lambda: open(os.devnull, "w").close()),
        "read elsewhere": attempt(lambda: open(os.devnull).close()),
        "remove elsewhere": attempt(lambda: os.remove("/nonexistent-snakepit-file")),
        "fork": attempt(fork),
    }))
    """
)


def test_sandbox_allows_the_probes_effects_only() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(proc.stdout)
    shutil.rmtree(seen.pop("probe folder"))
    assert seen == {
        "touch the probe's marker": "allowed",
        "the marker exists": True,
        "run touch of the marker": "allowed",
        "true": "allowed",
        "another command": "refused",
        "touch outside a probe folder": "refused",
        "another program": "refused",
        "write in the temporary folder": "allowed",
        "write elsewhere": "refused",
        "read elsewhere": "allowed",
        "remove elsewhere": "refused",
        "fork": "refused",
    }
