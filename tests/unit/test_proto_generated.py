"""The committed proto stubs are exactly what scripts/gen_proto.py generates from proto/*.proto.

Edit the .proto, run ``.venv/bin/python scripts/gen_proto.py``, commit both: this test fails on
any difference, so stubs can never drift from their source or be edited by hand.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gen_proto() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_proto"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["gen_proto"]


def test_there_is_a_proto_to_check(gen_proto: ModuleType) -> None:
    assert [p.name for p in gen_proto.sources()] == ["callcontrol.proto"]


def test_committed_stubs_match_a_fresh_generation(gen_proto: ModuleType, tmp_path: Path) -> None:
    written = gen_proto.generate(tmp_path)
    assert written, "the generator wrote nothing"
    fresh = {p.relative_to(tmp_path).as_posix() for p in written}
    committed = {
        p.relative_to(ROOT).as_posix()
        for suffix in gen_proto.SUFFIXES
        for p in (ROOT / "proto").glob(f"*{suffix}")
    }
    assert committed == fresh, "stubs without a .proto, or a .proto without committed stubs"
    stale = [name for name in sorted(fresh) if (tmp_path / name).read_bytes() != (ROOT / name).read_bytes()]
    assert not stale, f"{stale} differ from a fresh generation; run scripts/gen_proto.py and commit"


def test_the_grpc_module_imports_its_messages_from_the_proto_package() -> None:
    from proto import callcontrol_pb2, callcontrol_pb2_grpc

    text = (ROOT / "proto" / "callcontrol_pb2_grpc.py").read_text(encoding="utf-8")
    assert "from proto import callcontrol_pb2 as" in text
    assert callcontrol_pb2.DESCRIPTOR.package == "edgecare.callcontrol.v1"
    assert hasattr(callcontrol_pb2_grpc, "add_CallControlServicer_to_server")


def test_the_generator_refuses_a_grpc_module_with_a_foreign_import(
    gen_proto: ModuleType, tmp_path: Path
) -> None:
    module = tmp_path / "x_pb2_grpc.py"
    module.write_text("import x_pb2 as x__pb2\n", encoding="utf-8")
    with pytest.raises(gen_proto.GenerationError, match="from proto import x_pb2"):
        gen_proto._check_import(module, "x")
