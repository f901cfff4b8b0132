"""The ``qemu`` hypervisor: a fresh QEMU microVM per job, each pristine.

A VM is one QEMU process booting an image built by
:func:`fleetkit.nesting.qemu_image.build_image` (an initramfs-only guest: no
disk, nothing kept between boots). Its network is QEMU's user-mode network
with ``restrict=on``: the guest reaches nothing, not the host, not the other
VMs, not the internet; the one way in is a forward of a loopback port of this
host to the guest's SSH server, and that ``127.0.0.1:PORT`` is the VM's
``addr``. Each VM gets a host key of its own, made before it boots and reported
to the manager, which pins it. QEMU is controlled over QMP (``qemu-qmp``):
``quit`` for an orderly stop, ``query-status`` for :meth:`QemuHypervisor.status`,
and SIGTERM/SIGKILL when a guest or QEMU hangs.

Acceleration: KVM when ``/dev/kvm`` is usable and the CPU shows ``vmx`` or
``svm``; TCG (software emulation, ``-cpu max``) otherwise, said once in the log
with the reason. A VM boots in seconds under TCG, so a warm pool of
``pool_size`` VMs per image is kept booted ahead (in :meth:`QemuHypervisor.run`,
the daemon's background work): ``create`` hands out one of them at once, never
used before and never handed out twice, and the pool boots its replacement.

Config (the JSON of ``Init``; every key optional): ``image_directory`` (default
``$XDG_DATA_HOME/fleetkit/images``), ``memory_mib`` (256), ``cpus`` (1),
``machine`` (``microvm`` or ``q35``; default ``microvm``), ``accel``
(``auto``, ``kvm`` or ``tcg``), ``max_vms`` (8: VMs handed out or booting for a
``create``), ``pool_size`` (1; 0 turns the pool off), ``warm_images`` (images
to keep warm; default: every image in the image directory),
``boot_timeout`` (seconds, 120), ``authorized_keys`` (more public key lines for
the login user, beside the image's own), ``username`` (the login user's name in
every VM; default: the image's), ``qemu`` (the binary; default
``qemu-system-x86_64`` on ``PATH``).

Every VM lives in ``STATE_DIR/q/NAME/`` (see :mod:`fleetkit.nesting._qemu_vm`),
made before QEMU starts; :meth:`QemuHypervisor.recover` ends the QEMU of each
such directory a killed daemon left (found by its initrd's path in its
arguments, only among this user's processes) and removes the directories
and their QMP sockets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from fleetkit._procs import end_tree
from fleetkit.errors import ConfigError, HypervisorError, HypervisorFull, Problem, UnknownImage
from fleetkit.nesting import _qemu_vm
from fleetkit.nesting._protocol import VM
from fleetkit.nesting._qemu_vm import Machine, QemuVM
from fleetkit.nesting.qemu_image import (
    Image,
    ImageBuildError,
    default_image_directory,
    load_image,
)

if TYPE_CHECKING:
    from fleetkit.nesting._protocol import HypervisorFactory

__all__ = ["QemuHypervisor", "choose_accel"]

log = logging.getLogger("fleetkit.nesting.qemu")

_KEYS = frozenset(
    {
        "image_directory", "memory_mib", "cpus", "machine", "accel", "max_vms", "pool_size",
        "warm_images", "boot_timeout", "authorized_keys", "qemu", "username",
    }
)  # fmt: skip
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,30}")
_KEY_LINE = re.compile(r"(ssh|ecdsa|sk)-[A-Za-z0-9@.-]+ [A-Za-z0-9+/=]+( [^\n]*)?")
_RETRY_AFTER = 5.0  # seconds before the pool tries again after a failed boot
_SWEEP_GRACE = 1.0
_SOCKET_PATH_MAX = 107


@attrs.frozen(kw_only=True)
class _Settings:
    image_directory: Path
    machine: Machine
    max_vms: int
    pool_size: int
    warm_images: tuple[str, ...] | None
    boot_timeout: float
    authorized_keys: tuple[str, ...]
    username: str | None


def choose_accel(wanted: str = "auto") -> tuple[str, str]:
    """``(accel, reason)``: ``kvm`` when asked for or when ``auto`` finds a
    usable ``/dev/kvm`` and hardware virtualisation (``vmx``/``svm``) in the
    CPU flags; ``tcg`` otherwise."""
    if wanted in ("kvm", "tcg"):
        return wanted, "set by config.accel"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "/dev/kvm is missing or not usable"
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    if not flags & {"vmx", "svm"}:
        return "tcg", (
            "the CPU shows no vmx/svm flag (a /dev/kvm without hardware "
            "virtualisation, such as PVM, cannot boot a standard kernel)"
        )
    return "kvm", "/dev/kvm and hardware virtualisation present"


def _settings(config: Mapping[str, Any]) -> tuple[_Settings, str]:
    problems: list[Problem] = []

    def bad(key: str, message: str) -> None:
        problems.append(Problem(f"config.{key}", message))

    def integer(key: str, default: int, low: int, high: int) -> int:
        value = config.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            bad(key, f"expected an integer from {low} to {high}, got {value!r}")
            return default
        return value

    for key in sorted(set(config) - _KEYS):
        bad(key, f"unknown key; the qemu hypervisor takes {', '.join(sorted(_KEYS))}")
    directory = config.get("image_directory")
    if directory is not None and (not isinstance(directory, str) or not directory.startswith("/")):
        bad("image_directory", f"expected an absolute directory path, got {directory!r}")
        directory = None
    image_directory = Path(directory) if directory else default_image_directory()
    memory = integer("memory_mib", 256, 64, 65536)
    cpus = integer("cpus", 1, 1, 64)
    max_vms = integer("max_vms", 8, 1, 256)
    pool_size = integer("pool_size", 1, 0, 32)
    machine = config.get("machine", "microvm")
    if machine not in ("microvm", "q35"):
        bad("machine", f"expected 'microvm' or 'q35', got {machine!r}")
        machine = "microvm"
    accel = config.get("accel", "auto")
    if accel not in ("auto", "kvm", "tcg"):
        bad("accel", f"expected 'auto', 'kvm' or 'tcg', got {accel!r}")
        accel = "auto"
    timeout = config.get("boot_timeout", 120)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0:
        bad("boot_timeout", f"expected a positive number of seconds, got {timeout!r}")
        timeout = 120
    warm = config.get("warm_images")
    if warm is not None and (
        not isinstance(warm, list)
        or not all(isinstance(n, str) and _NAME.fullmatch(n) for n in warm)
    ):
        bad("warm_images", "expected a list of image names")
        warm = None
    keys = config.get("authorized_keys", [])
    if not isinstance(keys, list) or not all(
        isinstance(k, str) and _KEY_LINE.fullmatch(k.strip()) for k in keys
    ):
        bad("authorized_keys", "expected a list of OpenSSH public key lines")
        keys = []
    username = config.get("username")
    if username is not None and (not isinstance(username, str) or not _USER.fullmatch(username)):
        bad("username", f"expected a lower-case user name, got {username!r}")
        username = None
    qemu = config.get("qemu", "qemu-system-x86_64")
    found = shutil.which(qemu) if isinstance(qemu, str) else None
    if found is None:
        bad("qemu", f"no QEMU binary {qemu!r} (install qemu-system-x86)")
    if problems:
        raise ConfigError(problems)
    chosen, reason = choose_accel(accel)
    settings = _Settings(
        image_directory=image_directory,
        machine=Machine(
            qemu=str(found),
            accel=chosen,
            machine=machine,
            memory_mib=memory,
            cpus=cpus,
            tsc_khz=_qemu_vm.host_tsc_khz(),
        ),
        max_vms=max_vms,
        pool_size=pool_size,
        warm_images=tuple(warm) if warm is not None else None,
        boot_timeout=float(timeout),
        authorized_keys=tuple(k.strip() for k in keys),
        username=username,
    )
    return settings, reason


class QemuHypervisor:
    """Real VMs: one QEMU process each, a warm pool per image. See the module
    docstring for isolation, layout and config."""

    def __init__(self, state_dir: Path) -> None:
        self._state_dir = Path(state_dir)
        self._root = self._state_dir / "q"
        self._settings: _Settings | None = None
        self._vms: dict[str, QemuVM] = {}
        self._pools: dict[str, deque[QemuVM]] = {}
        self._booting = 0  # cold boots for create() under way
        self._warming = 0  # pool boots under way
        self._wake = anyio.Event()
        self._images: dict[str, Image] = {}

    def __repr__(self) -> str:
        pooled = sum(len(p) for p in self._pools.values())
        return f"<QemuHypervisor state_dir={str(self._state_dir)!r} vms={len(self._vms)} pooled={pooled}>"

    async def recover(self) -> list[str]:
        """End the QEMU processes a killed daemon left; remove their directories."""
        found = await anyio.to_thread.run_sync(_left_behind, self._root)
        ids = []
        for directory, vm_id in found:
            pids = await anyio.to_thread.run_sync(_qemu_vm.qemu_processes, directory)
            with anyio.CancelScope(shield=True):
                await end_tree(pids, grace=_SWEEP_GRACE)
            await anyio.to_thread.run_sync(_qemu_vm.remove_directory, directory)
            ids.append(vm_id or f"pool-{directory.name}")
        if ids:
            log.warning(
                "qemu: removed %d VM(s) a previous daemon left: %s", len(ids), ", ".join(ids)
            )
        return ids

    async def init(self, config: Mapping[str, Any]) -> None:
        """Check the config, choose KVM or TCG (logged once, with the reason)."""
        settings, reason = _settings(config)
        if len(os.fsencode(_qemu_vm.qmp_path(Path("x" * 12)))) > _SOCKET_PATH_MAX:
            raise HypervisorError(f"{_qemu_vm.qmp_directory()} is too long for unix sockets")
        await anyio.to_thread.run_sync(_qemu_vm.ensure_qmp_directory)
        try:
            import qemu.qmp  # noqa: F401
        except ImportError:
            raise HypervisorError(
                "the qemu hypervisor needs the qemu extra (pip install 'fleetkit[qemu]')"
            ) from None
        await anyio.to_thread.run_sync(
            lambda: self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        )
        log.info(
            "qemu: guests run with %s (%s), machine %s, %d MiB, %d CPU(s), pool %d per image",
            settings.machine.accel.upper(),
            reason,
            settings.machine.machine,
            settings.machine.memory_mib,
            settings.machine.cpus,
            settings.pool_size,
        )
        self._settings = settings

    def _image(self, name: str) -> Image:
        settings = self._ready()
        if not _NAME.fullmatch(name):
            raise UnknownImage(f"image name {name!r} is not a valid qemu image name")
        directory = settings.image_directory / name
        if directory.is_symlink() or not (directory / "image.json").is_file():
            raise UnknownImage(f"no qemu image {name!r} in {settings.image_directory}")
        cached = self._images.get(name)
        if cached is not None and cached.initramfs.is_file():
            return cached
        try:
            image = load_image(directory)
        except ImageBuildError as exc:
            raise UnknownImage(f"qemu image {name!r}: {exc}") from None
        self._images[name] = image
        return image

    async def create(self, vm_id: str, image: str) -> VM:
        """Hand out a warm VM of ``image`` when the pool has one, else boot one."""
        settings = self._ready()
        found = self._image(image)
        if len(self._vms) + self._booting >= settings.max_vms:
            raise HypervisorFull(f"the qemu hypervisor holds its maximum of {settings.max_vms} VMs")
        pool = self._pools.get(image)
        while pool:
            warm = pool.popleft()  # taken out before any await: never handed out twice
            self._wake.set()
            if warm.alive():
                return await self._hand_out(warm, vm_id)
            log.warning("qemu: warm VM %s of %r had died; discarded", warm.name, image)
            await warm.stop()
        await self._evict_for_room(settings)
        self._booting += 1
        try:
            vm = await self._boot(settings, found, label=vm_id)
        finally:
            self._booting -= 1
            self._wake.set()
        return await self._hand_out(vm, vm_id)

    async def _hand_out(self, vm: QemuVM, vm_id: str) -> VM:
        vm.vm_id = vm_id
        self._vms[vm_id] = vm
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync((vm.directory / "id").write_text, vm_id + "\n")
        return self._reported(vm_id, vm)

    def _reported(self, vm_id: str, vm: QemuVM) -> VM:
        # The login user is the image's (or config.username): told to the
        # manager, which would otherwise log in as the instance's user.
        settings = self._ready()
        return VM(
            id=vm_id,
            image=vm.image.name,
            addr=vm.addr,
            host_key=vm.host_key,
            username=settings.username or vm.image.user,
        )

    async def _evict_for_room(self, settings: _Settings) -> None:
        """A cold boot must not take the VM count past ``max_vms``: drop a
        pooled VM (another image's) when the pool holds the room."""
        pooled = [vm for pool in self._pools.values() for vm in pool]
        while (
            pooled
            and len(self._vms) + self._booting + len(pooled) + self._warming >= settings.max_vms
        ):
            victim = pooled.pop()
            self._pools[victim.image.name].remove(victim)
            await victim.stop()

    async def _boot(self, settings: _Settings, image: Image, *, label: str) -> QemuVM:
        name = secrets.token_hex(6)
        return await _qemu_vm.boot(
            settings.machine,
            image,
            self._root / name,
            extra_keys=settings.authorized_keys,
            boot_timeout=settings.boot_timeout,
            label=label,
            username=settings.username,
        )

    async def delete(self, vm_id: str) -> None:
        """Stop the VM (QMP ``quit``, then signals) and remove its directory."""
        vm = self._vms.pop(vm_id, None)
        if vm is not None:
            await vm.stop()

    async def list(self) -> list[VM]:
        """The handed-out VMs whose QEMU runs."""
        return [self._reported(i, vm) for i, vm in self._vms.items() if vm.alive()]

    async def status(self, vm_id: str) -> str:
        """QMP's run state of VM ``vm_id`` (``running``...; ``stopped`` once
        QEMU has exited). :class:`~fleetkit.errors.HypervisorError` for an
        unknown id."""
        vm = self._vms.get(vm_id)
        if vm is None:
            raise HypervisorError(f"no qemu VM {vm_id}")
        return await vm.status()

    @property
    def accel(self) -> str | None:
        """``kvm`` or ``tcg`` once initialized, else None."""
        return None if self._settings is None else self._settings.machine.accel

    def process_id(self, vm_id: str) -> int:
        """The pid of VM ``vm_id``'s QEMU (:class:`KeyError` for an unknown id)."""
        return self._vms[vm_id].process.pid

    def pooled(self, image: str) -> int:
        """How many warm VMs of ``image`` wait to be handed out."""
        return len(self._pools.get(image, ()))

    async def run(self) -> None:
        """Keep ``pool_size`` warm VMs per image, booting one at a time (CPU
        is the scarce part while guests boot)."""
        settings = self._ready()
        if settings.pool_size == 0:
            await anyio.sleep_forever()
        while True:
            image = self._to_warm(settings)
            if image is None:
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            self._warming += 1
            try:
                vm = await self._boot(settings, image, label=f"pool/{image.name}")
            except HypervisorError as exc:
                log.warning("qemu: warming a VM of %r failed: %s", image.name, exc)
                await anyio.sleep(_RETRY_AFTER)
                continue
            finally:
                self._warming -= 1
            self._pools.setdefault(image.name, deque()).append(vm)

    def _to_warm(self, settings: _Settings) -> Image | None:
        names = settings.warm_images
        if names is None:
            names = tuple(
                sorted(
                    p.parent.name
                    for p in settings.image_directory.glob("*/image.json")
                    if _NAME.fullmatch(p.parent.name)
                )
            )
        pooled = sum(len(p) for p in self._pools.values())
        if len(self._vms) + self._booting + pooled + self._warming >= settings.max_vms:
            return None
        for name in names:
            if self.pooled(name) < settings.pool_size:
                try:
                    return self._image(name)
                except UnknownImage as exc:
                    log.warning("qemu: cannot warm %r: %s", name, exc)
        return None

    async def shutdown(self) -> None:
        """Stop the warm VMs and any VM still held."""
        with anyio.CancelScope(shield=True):
            for pool in self._pools.values():
                while pool:
                    await pool.popleft().stop()
            for vm_id in list(self._vms):
                await self.delete(vm_id)
            with contextlib.suppress(OSError):
                self._root.rmdir()

    def _ready(self) -> _Settings:
        if self._settings is None:
            raise HypervisorError("the qemu hypervisor was not initialized")
        return self._settings


if TYPE_CHECKING:
    _check_factory: HypervisorFactory = QemuHypervisor


def _left_behind(root: Path) -> list[tuple[Path, str | None]]:
    if not root.is_dir():
        return []
    found = []
    for directory in sorted(root.iterdir()):
        if directory.is_symlink() or not directory.is_dir():
            continue
        vm_id = None
        with contextlib.suppress(OSError):
            vm_id = (directory / "id").read_text().strip() or None
        found.append((directory, vm_id))
    return found
