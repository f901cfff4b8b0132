"""GitLab's nesting API as protobuf messages, generated from ``nesting.proto``.

``nesting.proto`` beside this file is the wire protocol (package ``nesting``,
service ``Nesting``; the field names and numbers of ``shared/spec/nesting.md``).
``nesting_pb2.py``, ``nesting_pb2.pyi`` and ``nesting_pb2_grpc.py`` are generated
from it by grpcio-tools and never edited by hand; a test regenerates them and
fails when they drift. Regenerate with ``nox -s proto`` (or, from ``src/``:
``python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=.
fleetkit/_nesting_proto/nesting.proto``).

Private: :mod:`fleetkit.isolation` (the client) and :mod:`fleetkit.nesting` (the
daemon) are the public faces of this protocol. :data:`METHODS` maps each RPC name
to its gRPC method path, read from the generated descriptor so that no path is
spelled twice.

fleetkit's extension, invisible to GitLab's clients: the daemon reports each
VM's SSH host key in the trailing metadata of ``Create`` and ``List``, key
:data:`HOST_KEY_METADATA`, one value per VM: ``"<vm id> <key type> <base64>"``;
and, when the hypervisor gives each VM a login user of its own, that user
under :data:`USERNAME_METADATA`: ``"<vm id> <user name>"``.
"""

from __future__ import annotations

from fleetkit._nesting_proto import nesting_pb2

__all__ = ["HOST_KEY_METADATA", "METHODS", "SERVICE", "USERNAME_METADATA", "nesting_pb2"]

#: The service's full name on the wire: ``nesting.Nesting``.
SERVICE: str = nesting_pb2.DESCRIPTOR.services_by_name["Nesting"].full_name

#: RPC name -> gRPC method path, e.g. ``"Create" -> "/nesting.Nesting/Create"``.
METHODS: dict[str, str] = {
    method.name: f"/{SERVICE}/{method.name}"
    for method in nesting_pb2.DESCRIPTOR.services_by_name["Nesting"].methods
}

#: Trailing metadata key under which fleetkit's daemon reports VM host keys.
HOST_KEY_METADATA = "fleetkit-vm-host-key"

#: Trailing metadata key under which fleetkit's daemon reports VM login users.
USERNAME_METADATA = "fleetkit-vm-username"
