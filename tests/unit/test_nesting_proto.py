"""The nesting API's generated code: no drift from the .proto, and GitLab's wire format.

The byte strings below are built by hand from the field numbers and wire types
of ``shared/spec/nesting.md`` (tag = field number << 3 | wire type), so a
renumbered or retyped field fails here even if the .proto and the generated code
agree with each other.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import fleetkit._nesting_proto as proto_package
from fleetkit._nesting_proto import METHODS, SERVICE, nesting_pb2

PROTO_DIR = Path(proto_package.__file__).parent
SRC = PROTO_DIR.parent.parent
GENERATED = ("nesting_pb2.py", "nesting_pb2.pyi", "nesting_pb2_grpc.py")


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    """Regenerating from nesting.proto gives the checked-in modules byte for byte
    (`nox -s proto` regenerates them)."""
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{SRC}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_DIR.relative_to(SRC) / "nesting.proto"),
        ],
        cwd=SRC,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for name in GENERATED:
        fresh = (out / "fleetkit" / "_nesting_proto" / name).read_text()
        assert fresh == (PROTO_DIR / name).read_text(), f"{name} drifted: run `nox -s proto`"


def test_service_and_method_paths() -> None:
    """Package nesting, service Nesting, five unary RPCs on GitLab's paths."""
    assert SERVICE == "nesting.Nesting"
    rpcs = ("Init", "Create", "Delete", "List", "Shutdown")
    expected = {name: f"/nesting.Nesting/{name}" for name in rpcs}
    assert dict(METHODS) == expected
    service = nesting_pb2.DESCRIPTOR.services_by_name["Nesting"]
    shapes = {
        m.name: (m.input_type.full_name, m.output_type.full_name, m.client_streaming)
        for m in service.methods
    }
    assert shapes == {
        "Init": ("nesting.InitRequest", "nesting.InitResponse", False),
        "Create": ("nesting.CreateRequest", "nesting.CreateResponse", False),
        "Delete": ("nesting.DeleteRequest", "nesting.DeleteResponse", False),
        "List": ("nesting.ListRequest", "nesting.ListResponse", False),
        "Shutdown": ("nesting.ShutdownRequest", "nesting.ShutdownResponse", False),
    }


VM_BYTES = b"\x0a\x05vm-01" + b"\x12\x06alpine" + b"\x1a\x0f127.0.0.1:40123"


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (nesting_pb2.InitRequest(config=b'{"a":1}'), b"\x0a\x07" + b'{"a":1}'),
        (nesting_pb2.InitResponse(), b""),
        (nesting_pb2.CreateRequest(name="alpine"), b"\x0a\x06alpine"),
        (nesting_pb2.CreateRequest(name="alpine", slot=3), b"\x0a\x06alpine\x10\x03"),
        # optional: slot 0 is present on the wire, unlike a plain proto3 int32.
        (nesting_pb2.CreateRequest(name="alpine", slot=0), b"\x0a\x06alpine\x10\x00"),
        # int32 -1 is a ten-byte varint (sign-extended to 64 bits), not zigzag.
        (nesting_pb2.CreateRequest(name="", slot=-1), b"\x10" + b"\xff" * 9 + b"\x01"),
        (nesting_pb2.VirtualMachine(id="vm-01", name="alpine", addr="127.0.0.1:40123"), VM_BYTES),
        (
            nesting_pb2.CreateResponse(
                vm=nesting_pb2.VirtualMachine(id="vm-01", name="alpine", addr="127.0.0.1:40123"),
                stompedVmId="vm-00",
            ),
            b"\x0a" + bytes([len(VM_BYTES)]) + VM_BYTES + b"\x12\x05vm-00",
        ),
        (nesting_pb2.DeleteRequest(id="vm-01"), b"\x0a\x05vm-01"),
        (nesting_pb2.DeleteResponse(), b""),
        (nesting_pb2.ListRequest(), b""),
        (
            nesting_pb2.ListResponse(
                vms=[
                    nesting_pb2.VirtualMachine(id="vm-01", name="alpine", addr="127.0.0.1:40123"),
                    nesting_pb2.VirtualMachine(id="b"),
                ]
            ),
            b"\x0a" + bytes([len(VM_BYTES)]) + VM_BYTES + b"\x0a\x03\x0a\x01b",
        ),
        (nesting_pb2.ShutdownRequest(), b""),
        (nesting_pb2.ShutdownResponse(), b""),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, bytes) else "",
)
def test_wire_bytes(message: nesting_pb2.VirtualMachine, wire: bytes) -> None:
    """Each message encodes to the hand-built bytes and decodes back from them."""
    assert message.SerializeToString(deterministic=True) == wire
    assert type(message).FromString(wire) == message


def test_decoding_presence_of_optional_fields() -> None:
    """An absent slot or stompedVmId is absent, not zero or empty."""
    request = nesting_pb2.CreateRequest.FromString(b"\x0a\x06alpine")
    assert not request.HasField("slot")
    response = nesting_pb2.CreateResponse.FromString(b"\x0a" + bytes([len(VM_BYTES)]) + VM_BYTES)
    assert not response.HasField("stompedVmId")
    assert response.vm.addr == "127.0.0.1:40123"


def test_field_names_are_gitlabs() -> None:
    """JSON and reflection see GitLab's names (stompedVmId in camelCase)."""
    fields = {
        message: {f.name: f.number for f in descriptor.fields}
        for message, descriptor in nesting_pb2.DESCRIPTOR.message_types_by_name.items()
    }
    assert fields == {
        "VirtualMachine": {"id": 1, "name": 2, "addr": 3},
        "InitRequest": {"config": 1},
        "InitResponse": {},
        "CreateRequest": {"name": 1, "slot": 2},
        "CreateResponse": {"vm": 1, "stompedVmId": 2},
        "DeleteRequest": {"id": 1},
        "DeleteResponse": {},
        "ListRequest": {},
        "ListResponse": {"vms": 1},
        "ShutdownRequest": {},
        "ShutdownResponse": {},
    }
