from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VirtualMachine(_message.Message):
    __slots__ = ("id", "name", "addr")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    addr: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., addr: _Optional[str] = ...) -> None: ...

class InitRequest(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: bytes
    def __init__(self, config: _Optional[bytes] = ...) -> None: ...

class InitResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateRequest(_message.Message):
    __slots__ = ("name", "slot")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    name: str
    slot: int
    def __init__(self, name: _Optional[str] = ..., slot: _Optional[int] = ...) -> None: ...

class CreateResponse(_message.Message):
    __slots__ = ("vm", "stompedVmId")
    VM_FIELD_NUMBER: _ClassVar[int]
    STOMPEDVMID_FIELD_NUMBER: _ClassVar[int]
    vm: VirtualMachine
    stompedVmId: str
    def __init__(self, vm: _Optional[_Union[VirtualMachine, _Mapping]] = ..., stompedVmId: _Optional[str] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("vms",)
    VMS_FIELD_NUMBER: _ClassVar[int]
    vms: _containers.RepeatedCompositeFieldContainer[VirtualMachine]
    def __init__(self, vms: _Optional[_Iterable[_Union[VirtualMachine, _Mapping]]] = ...) -> None: ...

class ShutdownRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShutdownResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
