"""The per-job flow: a VM for a job's slot, reached through the instance's connection.

Theory of operation
-------------------
GitLab Runner's flow for one job (``spec/nesting.md``), one function each:

1. :meth:`Isolator.choose`: the image (job's, else ``vm_isolation.image``),
   variables expanded, checked against ``allowed_images`` *after* expansion.
   A refusal is :class:`~fleetkit.errors.ImageRejected`, raised before any
   connection or VM exists and never counted against the instance.
2. :meth:`Isolator.nesting`: the nesting client, whose gRPC stream runs over the
   instance's connection (:meth:`~fleetkit.connector.Connection.forward` of
   ``nesting_host``: a private local unix socket; no port is opened on the
   instance).
3. :meth:`Isolator.vm`: ``Create(image, slot)`` (``Init`` with
   ``nesting_config`` as JSON on ``not initialized``; a stomped VM, left by a
   job that died in this slot, is logged), then an SSH connection to the VM's
   address *through* the instance's connection (``connect(info, via=conn)``),
   with ``vm_isolation.connector_config``. When the block ends, however it ends
   (success, failure, timeout, cancel, lost connection), ``Delete`` runs
   shielded and bounded (GitLab allows one minute).
4. :meth:`Isolator.open` does 2-3 for a slot of a fleet, connecting to the
   instance first; :meth:`Isolator.connector_for` wraps 3 as a
   :class:`~fleetkit.connector.Connector` so :func:`fleetkit.jobs.run_job` runs
   a job in the VM unchanged; :meth:`Isolator.ready_check` is the fleet's
   ready-up step (an instance is ready only when its daemon answers).

Failures to reach the daemon, to create the VM or to reach the VM are the
instance's (:class:`~fleetkit.errors.IsolationError` other than
``ImageRejected``, or :class:`~fleetkit.errors.ConnectorError`): callers count
them as health failures (``failure_threshold``) and retry the job elsewhere.

Credentials for the VM come from ``vm_isolation.connector_config``; where it
names none (no ``key_path``, no ``password``), the instance's own are used, and
where it names no ``username``, the instance's. The VM's host key is checked
when the daemon reports it (fleetkit's daemon does), else pinned on first use
and forgotten when the VM is deleted.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import anyio
import attrs

from fleetkit._resource import AsyncResource
from fleetkit.config import VMIsolation
from fleetkit.connector import Connection, Connector, TunnelTarget
from fleetkit.errors import (
    ConfigError,
    ConnectorError,
    ImageRejected,
    IsolationError,
    NestingUnavailable,
    Problem,
    VMNotFound,
)
from fleetkit.isolation._images import ImageChoice, choose_image, image_allowed
from fleetkit.isolation._nesting_client import NestingClient, VirtualMachine
from fleetkit.model import ConnectInfo, ConnectorConfig, mask_secret

__all__ = [
    "IsolatedVM",
    "IsolationSettings",
    "Isolator",
    "Note",
    "ReadyProbe",
    "parse_nesting_host",
]

log = logging.getLogger("fleetkit.isolation")

#: An async callback that adds one line to a job's log (``note("text\n")``).
Note = Callable[[str], Awaitable[None]]
#: Opens a fresh connection to the instance (``connector.connect(info)``).
Redial = Callable[[], AbstractAsyncContextManager[Connection]]

# GitLab allows Delete one minute.
_DELETE_TIMEOUT = 60.0
_CALL_TIMEOUT = 120.0
_READY_RETRY = 0.5


def parse_nesting_host(value: str, *, where: str = "vm_isolation.nesting_host") -> TunnelTarget:
    """``nesting_host`` as a tunnel target: ``unix:///abs`` and ``unix:/abs``
    give ``"/abs"``, ``unix:rel`` gives ``"rel"`` (relative to the directory
    commands start in on the instance), ``host:port`` gives ``(host, port)``
    (``[::1]:port`` for IPv6). Raises :class:`~fleetkit.errors.ConfigError`
    naming ``where`` otherwise."""
    if value.startswith("unix:"):
        path = value.removeprefix("unix:")
        if path.startswith("//"):
            path = path[2:]
            if not path.startswith("/"):
                raise ConfigError(
                    [Problem(where, f"expected unix:///absolute/path, got {value!r}")]
                )
        if not path or "\0" in path:
            raise ConfigError(
                [Problem(where, f"expected a socket path after unix:, got {value!r}")]
            )
        return path
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            [
                Problem(
                    where, f"expected unix:///abs/path, unix:rel/path or host:port, got {value!r}"
                )
            ]
        )
    return host, int(port)


def _grpc_target(local: TunnelTarget) -> str:
    if isinstance(local, str):
        return f"unix:{local}"
    host, port = local
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_addr(addr: str, where: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit():
        raise IsolationError(f"{where}: the daemon reported the VM address {addr!r}, not host:port")
    return host, int(port)


@attrs.frozen(kw_only=True)
class IsolationSettings:
    """What VM isolation needs (``[runners.autoscaler.vm_isolation]`` and
    ``[runners.instance] allowed_images``).

    ``nesting_config`` goes to the daemon's ``Init`` as JSON and may hold
    secrets (its repr is masked). ``delete_timeout`` bounds ``Delete`` after a
    job, ``call_timeout`` every other nesting call (seconds).
    """

    nesting_host: str
    nesting_config: Mapping[str, Any] = attrs.field(factory=dict, repr=mask_secret)
    image: str = ""
    allowed_images: tuple[str, ...] = ()
    connector_config: ConnectorConfig = attrs.field(factory=ConnectorConfig)
    delete_timeout: float = _DELETE_TIMEOUT
    call_timeout: float = _CALL_TIMEOUT

    @property
    def target(self) -> TunnelTarget:
        """``nesting_host`` parsed (see :func:`parse_nesting_host`)."""
        return parse_nesting_host(self.nesting_host)

    @classmethod
    def from_config(
        cls, vm_isolation: VMIsolation, allowed_images: Sequence[str] = ()
    ) -> IsolationSettings:
        """From a loaded ``[runners.autoscaler.vm_isolation]``
        (:class:`fleetkit.config.VMIsolation`) and ``[runners.instance]
        allowed_images``."""
        return cls(
            nesting_host=vm_isolation.nesting_host,
            nesting_config=dict(vm_isolation.nesting_config),
            image=vm_isolation.image,
            allowed_images=tuple(allowed_images),
            connector_config=vm_isolation.connector_config,
        )


@attrs.frozen
class IsolatedVM:
    """A VM made for one job: the daemon's ``vm``, an open ``connection`` to it,
    the ``image`` it was made from, and the id of the VM it replaced in its slot
    (``stomped_vm_id``; a job that died there left it)."""

    vm: VirtualMachine
    connection: Connection
    image: str
    slot: int
    stomped_vm_id: str | None = None


class ReadyProbe(Protocol):
    """**Protocol:** what :meth:`Isolator.ready_check` returns: called with an
    instance's connect info, ``None`` when its daemon answers, else why not
    (the shape of :class:`fleetkit.fleet.ReadyCheck`)."""

    def __call__(self, info: ConnectInfo) -> Awaitable[str | None]: ...


class _Slot(Protocol):
    """What :meth:`Isolator.open` needs of a slot (a :class:`fleetkit.fleet.Slot`
    has it; ``report_failure`` is used when the slot offers it)."""

    @property
    def instance_id(self) -> str: ...

    @property
    def number(self) -> int: ...

    @property
    def connect_info(self) -> ConnectInfo | None: ...


async def _say(note: Note | None, text: str) -> None:
    if note is not None:
        await note(text)


class Isolator(AsyncResource):
    """Runs the per-job flow of VM isolation; see the module docstring.

    ``vm_connector`` dials the VMs through the instances' connections (default:
    an :class:`~fleetkit.connector.ssh.SSHConnector` set up from
    ``settings.connector_config``, built on first use and closed by
    :meth:`aclose`)::

        isolator = Isolator(IsolationSettings(nesting_host="unix:nesting.sock", image="default"))
        async with fleet.acquire("job-1") as slot, isolator.open(slot, connector) as vm:
            result = await vm.connection.run("uname -a")
    """

    def __init__(
        self, settings: IsolationSettings, *, vm_connector: Connector | None = None
    ) -> None:
        parse_nesting_host(settings.nesting_host)  # a bad one fails here, not at a job
        self.settings = settings
        self._vm_connector = vm_connector
        self._owns_vm_connector = vm_connector is None
        self._vm_key: bytes | None = None

    def __repr__(self) -> str:
        return (
            f"<Isolator nesting_host={self.settings.nesting_host!r} "
            f"image={self.settings.image!r} allowed_images={list(self.settings.allowed_images)!r}>"
        )

    # --- 1. the image -------------------------------------------------------

    def choose(
        self,
        job_image: str | None,
        variables: Mapping[str, str],
        *,
        where: str,
        masked: Sequence[str] = (),
    ) -> ImageChoice:
        """The job's image, expanded and checked; see
        :func:`~fleetkit.isolation.choose_image`."""
        return choose_image(
            job_image,
            self.settings.image,
            variables,
            self.settings.allowed_images,
            where=where,
            masked=masked,
        )

    # --- 2. the nesting client ----------------------------------------------

    @asynccontextmanager
    async def nesting(self, conn: Connection) -> AsyncIterator[NestingClient]:
        """A nesting client of the daemon at ``nesting_host`` on ``conn``'s
        instance, its gRPC stream carried by ``conn``; closed on exit."""
        async with contextlib.AsyncExitStack() as stack:
            try:
                local = await stack.enter_async_context(conn.forward(self.settings.target))
            except ConnectorError as exc:
                raise NestingUnavailable(
                    f"nesting daemon at {self.settings.nesting_host}: no forward ({exc})"
                ) from exc
            client = NestingClient(
                _grpc_target(local),
                init_config=dict(self.settings.nesting_config),
                timeout=self.settings.call_timeout,
            )
            async with client:
                yield client

    # --- 3. the VM ------------------------------------------------------------

    @asynccontextmanager
    async def vm(
        self,
        conn: Connection,
        instance: ConnectInfo,
        *,
        slot: int,
        image: str,
        note: Note | None = None,
        redial: Redial | None = None,
    ) -> AsyncIterator[IsolatedVM]:
        """A VM from ``image`` in ``slot`` on ``conn``'s instance (described by
        ``instance``), with an open connection to it; deleted when the block
        ends, however it ends. When ``conn`` broke meanwhile, ``redial`` (a
        fresh connection to the instance) carries the ``Delete``; all of it
        within ``settings.delete_timeout``.

        ``image`` is checked against ``allowed_images`` once more (it may not
        have come through :meth:`choose`): a refusal raises
        :class:`~fleetkit.errors.ImageRejected` before anything is created.
        ``note`` receives the lines a job log shows (create, stomp, delete).
        """
        if not image or not image_allowed(image, self.settings.allowed_images):
            raise ImageRejected(
                f"instance {instance.id} slot {slot}: image {image!r} is not allowed by "
                f"[runners.instance] allowed_images {list(self.settings.allowed_images)!r}"
            )
        async with self.nesting(conn) as client:
            await _say(note, f"Creating VM from image {image} in slot {slot}...\n")
            created = await client.create(image, slot=slot)
            vm = created.vm
            await _say(note, f"VM {vm.id} created at {vm.addr}\n")
            try:
                if created.stomped_vm_id:
                    log.warning(
                        "instance %s slot %d: VM %s was left in the slot (a job died there); "
                        "the daemon deleted it for %s",
                        instance.id,
                        slot,
                        created.stomped_vm_id,
                        vm.id,
                    )
                    await _say(
                        note, f"VM {created.stomped_vm_id} left in slot {slot} was deleted\n"
                    )
                info = await self._vm_info(vm, instance)
                async with self._connector().connect(info, via=conn) as vm_conn:
                    await _say(note, f"VM {vm.id} ({vm.name}) connected\n")
                    yield IsolatedVM(
                        vm=vm,
                        connection=vm_conn,
                        image=image,
                        slot=slot,
                        stomped_vm_id=created.stomped_vm_id,
                    )
            finally:
                with anyio.CancelScope(shield=True):
                    await self._delete(client, vm, instance, note, redial)

    async def _delete(
        self,
        client: NestingClient,
        vm: VirtualMachine,
        instance: ConnectInfo,
        note: Note | None,
        redial: Redial | None,
    ) -> None:
        await _say(note, f"Deleting VM {vm.id}...\n")
        with anyio.move_on_after(self.settings.delete_timeout) as bound:
            try:
                try:
                    await client.delete(vm.id)
                except NestingUnavailable:
                    if redial is None:
                        raise
                    # The job's connection broke (that may be why it ended).
                    async with redial() as fresh, self.nesting(fresh) as again:
                        await again.delete(vm.id)
            except VMNotFound:
                await _say(note, f"VM {vm.id} deleted\n")  # gone already (a Shutdown, a stomp)
            except (IsolationError, ConnectorError) as exc:
                # The next Create in this slot stomps it; nothing more to do here.
                log.warning("instance %s: VM %s not deleted: %s", instance.id, vm.id, exc)
                await _say(note, f"WARNING: VM {vm.id} could not be deleted: {exc}\n")
            else:
                await _say(note, f"VM {vm.id} deleted\n")
        if bound.cancelled_caught:
            log.warning(
                "instance %s: VM %s not deleted within %gs",
                instance.id,
                vm.id,
                self.settings.delete_timeout,
            )
        forget: Any = getattr(self._vm_connector, "forget", None)
        if forget is not None:
            with contextlib.suppress(ConnectorError):
                await forget(_vm_id(instance, vm))

    async def _vm_info(self, vm: VirtualMachine, instance: ConnectInfo) -> ConnectInfo:
        where = f"instance {instance.id}: VM {vm.id}"
        host, port = _split_addr(vm.addr, where)
        config = self.settings.connector_config
        key, password = instance.key, instance.password
        if config.key_path:
            key, password = await self._read_key(config.key_path), config.password
        elif config.password:
            key, password = None, config.password
        return ConnectInfo(
            id=_vm_id(instance, vm),
            internal_addr=host,
            protocol=config.protocol or "ssh",
            protocol_port=port,
            os=config.os or instance.os,
            arch=config.arch or instance.arch,
            # The daemon's choice for this VM wins: only that user can log in.
            username=vm.username or config.username or instance.username,
            password=password,
            key=key,
            keepalive=config.keepalive,
            timeout=config.timeout,
            host_key=vm.host_key,
        )

    async def _read_key(self, path: str) -> bytes:
        if self._vm_key is None:
            try:
                self._vm_key = await (await anyio.Path(path).expanduser()).read_bytes()
            except OSError as exc:
                raise ConfigError(
                    [
                        Problem(
                            "vm_isolation.connector_config.key_path",
                            f"cannot be read: {exc.strerror}: {path}",
                        )
                    ]
                ) from exc
        return self._vm_key

    def _connector(self) -> Connector:
        if self._vm_connector is None:
            from fleetkit.connector.ssh import SSHConnector

            config = self.settings.connector_config
            options: dict[str, Any] = {"use_external_addr": False}
            if config.timeout is not None:
                options["dial_timeout"] = float(config.timeout)
            if config.keepalive is not None:
                options["keepalive"] = float(config.keepalive)
            self._vm_connector = SSHConnector(**options)
        return self._vm_connector

    # --- 4. for a fleet's slot, for run_job, for ready-up --------------------

    @asynccontextmanager
    async def open(
        self,
        slot: _Slot,
        connector: Connector,
        *,
        image: str | None = None,
        variables: Mapping[str, str] | None = None,
        note: Note | None = None,
    ) -> AsyncIterator[IsolatedVM]:
        """A VM on ``slot``'s instance for the slot's number: ``image`` (else
        ``settings.image``) expanded with ``variables`` and checked, the
        instance reached with ``connector``, the VM deleted on exit.

        A failure that is the instance's (no connection, no daemon, no VM) is
        reported to the slot (``slot.report_failure()`` where it has one, as a
        :class:`fleetkit.fleet.Slot` does) and raised."""
        where = f"instance {slot.instance_id} slot {slot.number}"
        chosen = self.choose(image, variables or {}, where=where)
        info = slot.connect_info
        if info is None:
            raise ConnectorError(f"{where}: the slot has no connect info")
        try:
            async with (
                connector.connect(info) as conn,
                self.vm(
                    conn,
                    info,
                    slot=slot.number,
                    image=chosen.image,
                    note=note,
                    redial=lambda: connector.connect(info),
                ) as vm,
            ):
                yield vm
        except ImageRejected:
            raise
        except (ConnectorError, IsolationError):
            report: Any = getattr(slot, "report_failure", None)
            if report is not None:
                report()
            raise

    def connector_for(
        self, connector: Connector, *, slot: int, image: str, note: Note | None = None
    ) -> Connector:
        """A :class:`~fleetkit.connector.Connector` for one job in ``slot``:
        ``connect(info)`` reaches the instance with ``connector``, opens a VM
        from ``image`` and yields the VM's connection; leaving the block
        deletes the VM. So :func:`fleetkit.jobs.run_job` runs the job in the VM."""
        return _VMConnector(self, connector, slot, image, note)

    def ready_check(self, connector: Connector, *, within: float = 60.0) -> ReadyProbe:
        """A ready-up step for :class:`fleetkit.fleet.Fleet`: ``None`` once the
        instance's nesting daemon answers (a ``List``, which sends no ``Init``),
        else, after ``within`` seconds of trying, why not."""

        async def check(info: ConnectInfo) -> str | None:
            reason = "no answer"
            with anyio.move_on_after(within):
                while True:
                    try:
                        async with connector.connect(info) as conn, self.nesting(conn) as client:
                            await client.ping()
                        return None
                    except (ConnectorError, IsolationError) as exc:
                        reason = f"{type(exc).__name__}: {exc}"
                    await anyio.sleep(_READY_RETRY)
            return f"nesting daemon at {self.settings.nesting_host} does not answer: {reason}"

        return check

    async def aclose(self) -> None:
        """Close the VM connector this isolator built (pooled connections)."""
        connector, self._vm_connector = self._vm_connector, None
        close: Any = getattr(connector, "aclose", None)
        if self._owns_vm_connector and close is not None:
            with anyio.CancelScope(shield=True):
                await close()


def _vm_id(instance: ConnectInfo, vm: VirtualMachine) -> str:
    # Two daemons may number their VMs alike: pins and logs keep them apart.
    return f"{instance.id}/{vm.id}"


class _VMConnector:
    """See :meth:`Isolator.connector_for`."""

    def __init__(
        self, isolator: Isolator, connector: Connector, slot: int, image: str, note: Note | None
    ) -> None:
        self._isolator = isolator
        self._connector = connector
        self._slot = slot
        self._image = image
        self._note = note

    def __repr__(self) -> str:
        return f"<VMConnector slot={self._slot} image={self._image!r} via={self._connector!r}>"

    def connect(
        self, info: ConnectInfo, *, via: Connection | None = None
    ) -> AbstractAsyncContextManager[Connection]:
        return self._connect(info, via)

    @asynccontextmanager
    async def _connect(
        self, info: ConnectInfo, via: Connection | None
    ) -> AsyncIterator[Connection]:
        async with (
            self._connector.connect(info, via=via) as conn,
            self._isolator.vm(
                conn,
                info,
                slot=self._slot,
                image=self._image,
                note=self._note,
                redial=lambda: self._connector.connect(info, via=via),
            ) as vm,
        ):
            yield vm.connection
