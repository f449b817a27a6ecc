"""Run ``mypy --strict`` over the project as it will be installed.

The folders are mapped into packages by ``package-dir`` in pyproject.toml
(``reference/`` is ``snakepit_bridge``, ``conformance/`` is
``snakepit_harness.conformance``, ...), which mypy cannot follow through an
editable install's import hook.  So we lay out the packages as symlinks under
``build/typecheck`` (directory links, so new modules appear by themselves) and
point mypy at that tree, then at ``tests/``, ``benchmarks/`` and ``setup.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"


def build_tree() -> list[Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dir: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    if TREE.exists():
        shutil.rmtree(TREE)
    TREE.mkdir(parents=True)
    # Parents before children: a child links inside its parent's real folder.
    tops = []
    for package, folder in sorted(package_dir.items(), key=lambda kv: kv[0].count(".")):
        parts = package.split(".")
        target = ROOT / folder
        if len(parts) == 1:
            here = TREE / parts[0]
            here.mkdir()
            for entry in target.iterdir():
                if entry.name != "__pycache__":
                    os.symlink(entry, here / entry.name)
            tops.append(here)
        else:
            os.symlink(target, TREE.joinpath(*parts))
    return tops


def main() -> int:
    tops = build_tree()
    env = dict(os.environ, MYPYPATH=str(TREE))
    command = [
        sys.executable,
        "-m",
        "mypy",
        *map(str, tops),
        "tests",
        "benchmarks",
        "setup.py",
        *sys.argv[1:],
    ]
    return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
