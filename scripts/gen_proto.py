#!/usr/bin/env python
"""Regenerate pedvit/transport/pedvit_pb2.py and pedvit_pb2_grpc.py from pedvit.proto.

Usage: python scripts/gen_proto.py [--out DIR]

The proto is compiled with the repository root as include path, so its descriptor is registered as
"pedvit/transport/pedvit.proto" (unique in the global protobuf pool). grpc_tools writes an absolute
`from pedvit.transport import pedvit_pb2` into the _grpc module; we rewrite it to a package-relative
import so the generated pair works wherever the package is vendored.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_REL = Path("pedvit/transport/pedvit.proto")
GENERATED = ("pedvit_pb2.py", "pedvit_pb2_grpc.py")

_ABS_IMPORT = re.compile(r"^from pedvit\.transport import pedvit_pb2 as ", re.MULTILINE)


def generate(out_dir: Path) -> list[Path]:
    """Compile the proto and write the two generated modules into `out_dir`; return their paths."""
    from grpc_tools import protoc  # imported lazily: a test/dev-only dependency

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{REPO_ROOT}",
                f"--python_out={tmp}",
                f"--grpc_python_out={tmp}",
                str(REPO_ROOT / PROTO_REL),
            ]
        )
        if rc != 0:
            raise RuntimeError(f"protoc failed with exit code {rc}")
        written = []
        for name in GENERATED:
            text = (Path(tmp) / PROTO_REL.parent / name).read_text()
            if name.endswith("_grpc.py"):
                text, n = _ABS_IMPORT.subn("from . import pedvit_pb2 as ", text)
                if n != 1:
                    raise RuntimeError("could not find the pedvit_pb2 import to make package-relative")
            target = out_dir / name
            target.write_text(text)
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / PROTO_REL.parent, help="output directory")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
