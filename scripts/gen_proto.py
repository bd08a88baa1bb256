"""Regenerate the Python stubs of proto/*.proto with grpc_tools.protoc.

    .venv/bin/python scripts/gen_proto.py            # rewrite proto/*_pb2*.py(i) in the repo
    .venv/bin/python scripts/gen_proto.py --out DIR  # write DIR/proto/... instead (the test does this)

The repository root is the include path and each file is compiled as ``proto/<name>.proto``, so
protoc itself writes the gRPC module's import as ``from proto import <name>_pb2``: the generated
code imports as part of the ``proto`` package with no hand edits. The script checks that line
and fails if a protoc release ever writes it differently, rather than patching code silently.

Output depends only on the .proto files and the grpcio-tools version (which stamps its version
into the files), so ``tests/unit/test_proto_generated.py`` can regenerate into a temporary
directory and demand byte-for-byte equality with the committed files.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = "proto"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


class GenerationError(RuntimeError):
    """protoc failed, or wrote something this script does not expect."""


def sources(root: Path = ROOT) -> list[Path]:
    """The .proto files to compile, in name order."""
    return sorted((root / PROTO_DIR).glob("*.proto"))


def outputs(stem: str) -> list[str]:
    """The generated files of one .proto, relative to the output root."""
    return [f"{PROTO_DIR}/{stem}{suffix}" for suffix in SUFFIXES]


def generate(out_root: Path, root: Path = ROOT) -> list[Path]:
    """Compile every proto/*.proto into ``out_root/proto/``; return the files written."""
    (out_root / PROTO_DIR).mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    written: list[Path] = []
    for source in sources(root):
        relative = source.relative_to(root).as_posix()
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"--proto_path={root}",
                f"--proto_path={well_known}",
                f"--python_out={out_root}",
                f"--pyi_out={out_root}",
                f"--grpc_python_out={out_root}",
                relative,
            ]
        )
        if code != 0:
            raise GenerationError(f"protoc failed with exit code {code} on {relative}")
        stem = source.stem
        files = [out_root / name for name in outputs(stem)]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise GenerationError(f"protoc did not write {', '.join(missing)}")
        _check_import(files[2], stem)
        written += files
    return written


def _check_import(grpc_module: Path, stem: str) -> None:
    text = grpc_module.read_text(encoding="utf-8")
    wanted = re.compile(rf"^from {PROTO_DIR} import {stem}_pb2 as \w+$", re.MULTILINE)
    if not wanted.search(text):
        raise GenerationError(
            f"{grpc_module.name} does not import 'from {PROTO_DIR} import {stem}_pb2'; "
            "check how this grpcio-tools release names imports"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, help="output root (default: the repository)")
    args = parser.parse_args(argv)
    if args.out is not None:
        generate(args.out)
        return 0
    # Generate aside, then replace: a failed run leaves the committed files as they were.
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            target = ROOT / path.relative_to(tmp)
            shutil.copyfile(path, target)
            sys.stderr.write(f"wrote {target.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
