"""Regenerate the committed gRPC code from the ``.proto`` files in ``src/snakepit_harness/protos``.

The protos live in the folder installed as ``snakepit_harness.protos`` and are
compiled under the *virtual* path ``snakepit_harness/protos/`` (protoc's
``-IVIRTUAL=DISK`` mapping), so the generated ``*_pb2_grpc.py`` modules import
their messages absolutely (``from snakepit_harness.protos import
snakepit_pb2``) and work from any working directory.  ``generate(out_dir)``
writes every generated file into a folder of your choice (the drift test
compares them with the committed ones); running the script copies them into
``src/snakepit_harness/protos/``.

Usage: ``python tools/gen_protos.py [--check]`` (``--check`` only reports
drift, exit status 1 when the committed code is stale).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "src" / "snakepit_harness" / "protos"
VIRTUAL_DIR = "snakepit_harness/protos"
# Every proto compiled, in the order protoc is given them.
PROTO_NAMES = ("snakepit.proto", "snakepit_bridge.proto")
# What protoc makes of one proto: messages, their type stubs, the service code.
_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _generated_names(proto_names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(
        name.removesuffix(".proto") + suffix for name in proto_names for suffix in _SUFFIXES
    )


GENERATED = _generated_names(PROTO_NAMES)


def generate(out_dir: Path) -> dict[str, Path]:
    """Compile the protos into ``out_dir``; map each generated file name to its path.

    Only the protos of PROTO_NAMES found in PROTO_DIR are compiled (a test
    compiles a changed copy of one alone); ``main`` insists on all of them.
    """
    present = tuple(name for name in PROTO_NAMES if (PROTO_DIR / name).is_file())
    import grpc_tools
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    # google/protobuf/*.proto (Any, Timestamp) ship inside grpc_tools.
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    command = [
        "grpc_tools.protoc",
        f"--proto_path={VIRTUAL_DIR}={PROTO_DIR}",
        f"--proto_path={well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(f"{VIRTUAL_DIR}/{name}" for name in present),
    ]
    status = protoc.main(command)
    if status != 0:
        raise RuntimeError(f"protoc failed with status {status}: {' '.join(command)}")
    produced = out_dir / VIRTUAL_DIR
    return {name: produced / name for name in _generated_names(present)}


def stale_files(generated: dict[str, Path]) -> list[str]:
    """Names of the committed files that differ from (or lack) the generated ones."""
    stale = []
    for name, path in generated.items():
        committed = PROTO_DIR / name
        if not committed.exists() or committed.read_bytes() != path.read_bytes():
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="only report whether the committed code is stale"
    )
    args = parser.parse_args(argv)
    missing = [name for name in PROTO_NAMES if not (PROTO_DIR / name).is_file()]
    if missing:
        print(f"missing proto sources in {PROTO_DIR}: {', '.join(missing)}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        stale = stale_files(generated)
        if args.check:
            for name in stale:
                print(f"stale: {PROTO_DIR.relative_to(ROOT) / name}", file=sys.stderr)
            return 1 if stale else 0
        for name, path in generated.items():
            shutil.copyfile(path, PROTO_DIR / name)
            print(f"wrote {PROTO_DIR.relative_to(ROOT) / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
