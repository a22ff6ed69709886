"""The committed generated protobuf/gRPC code matches pedvit.proto and imports with the installed runtime."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRANSPORT = REPO / "pedvit" / "transport"


def _gen_proto_module():
    spec = importlib.util.spec_from_file_location("gen_proto", REPO / "scripts" / "gen_proto.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_current(tmp_path: Path) -> None:
    gen = _gen_proto_module()
    written = gen.generate(tmp_path)
    assert sorted(p.name for p in written) == sorted(gen.GENERATED)
    for path in written:
        committed = TRANSPORT / path.name
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run `python scripts/gen_proto.py`"
        )


def test_grpc_module_imports_package_relative() -> None:
    text = (TRANSPORT / "pedvit_pb2_grpc.py").read_text()
    assert "from . import pedvit_pb2 as" in text
    assert "from pedvit.transport import pedvit_pb2" not in text


def test_generated_code_imports_cleanly() -> None:
    # A fresh interpreter with warnings as errors: catches protobuf gencode/runtime version skew.
    code = "import pedvit.transport.pedvit_pb2_grpc as g; g.WindowWorkerStub; print('ok')"
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
