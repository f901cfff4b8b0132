"""One QEMU process: its command line, its boot to an SSH banner, its stop.

Each VM lives in a directory of its own (``state/q/NAME/``): the VM's initrd
(the image's initramfs followed by a cpio with this VM's host key, keys and
host name), ``console.log`` (the guest's serial console), ``qemu.log``
(QEMU's stderr) and, once handed out, ``id`` (the daemon's VM id). QEMU's
control socket is ``NAME`` in a short private directory of this user
(:func:`qmp_directory`): a state directory deep in a file system would take a
unix socket path past its 107 bytes. The initrd's path is in QEMU's
arguments, which is how :func:`qemu_processes` finds the QEMU of a directory
after a crash.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.abc
import attrs

from fleetkit._procs import end_process
from fleetkit.errors import HypervisorError
from fleetkit.nesting import _cpio
from fleetkit.nesting.qemu_image import Image, guest_overlay, new_host_key

__all__ = ["Machine", "QemuVM", "boot", "host_tsc_khz", "qemu_processes"]

log = logging.getLogger("fleetkit.nesting.qemu")

_PROBE_INTERVAL = 0.25
_PROBE_TIMEOUT = 1.5
_PORT_ATTEMPTS = 4
_PORT_TAKEN = "Could not set up host forwarding rule"
_QUIT_TIMEOUT = 3.0
_KILL_GRACE = 1.0


@attrs.frozen(kw_only=True)
class Machine:
    """How to run QEMU: binary, accelerator (``kvm`` or ``tcg``), machine type
    (``microvm`` or ``q35``), memory and CPUs."""

    qemu: str
    accel: str
    machine: str
    memory_mib: int
    cpus: int
    tsc_khz: int | None


@attrs.define(eq=False)
class QemuVM:
    """A running guest."""

    name: str
    image: Image
    directory: Path
    process: anyio.abc.Process
    port: int
    host_key: str
    vm_id: str | None = None

    @property
    def addr(self) -> str:
        """``127.0.0.1:PORT``: the loopback forward to the guest's SSH server."""
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        """Whether QEMU still runs."""
        return self.process.returncode is None

    async def status(self) -> str:
        """The guest's run state as QMP's ``query-status`` reports it
        (``running``, ``paused``, ...), or ``stopped`` when QEMU has exited."""
        if not self.alive():
            return "stopped"
        from qemu.qmp import QMPClient, QMPError

        client = QMPClient(self.name)
        try:
            with anyio.fail_after(_QUIT_TIMEOUT):
                await client.connect(str(qmp_path(self.directory)))
                reply = await client.execute("query-status")
        except (OSError, TimeoutError, QMPError) as exc:
            raise HypervisorError(f"qemu VM {self.vm_id or self.name}: QMP: {exc}") from None
        finally:
            await client.disconnect()
        return str(reply["status"]) if isinstance(reply, dict) else "unknown"

    async def stop(self) -> None:
        """Orderly where QEMU answers (QMP ``quit``), hard where it does not
        (SIGTERM, then SIGKILL); then the VM's directory goes. Shielded."""
        with anyio.CancelScope(shield=True):
            if self.alive():
                await _quit(self.name, qmp_path(self.directory))
                with anyio.move_on_after(_QUIT_TIMEOUT):
                    await self.process.wait()
            await end_process(self.process, grace=_KILL_GRACE)
            await anyio.to_thread.run_sync(remove_directory, self.directory)


async def _quit(name: str, qmp: Path) -> None:
    from qemu.qmp import QMPClient, QMPError

    client = QMPClient(name)
    with anyio.move_on_after(_QUIT_TIMEOUT), contextlib.suppress(OSError, QMPError, EOFError):
        await client.connect(str(qmp))
        await client.execute("quit")
    with anyio.move_on_after(_QUIT_TIMEOUT), contextlib.suppress(Exception):
        await client.disconnect()


def qmp_directory() -> Path:
    """Where this user's QMP sockets are: ``$TMPDIR/fleetkit-qmp-UID``."""
    return Path(tempfile.gettempdir()) / f"fleetkit-qmp-{os.geteuid()}"


def qmp_path(directory: Path) -> Path:
    """The QMP socket of the VM in ``directory``."""
    return qmp_directory() / directory.name


def ensure_qmp_directory() -> Path:
    """Make :func:`qmp_directory` (0700) and check that it is this user's own
    directory, not a symlink, and private; :class:`HypervisorError` otherwise
    (another local user may have made it first to catch the sockets)."""
    path = qmp_directory()
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise HypervisorError(
            f"{path} is not a private directory of this user: remove it, or set TMPDIR"
        )
    return path


def host_tsc_khz() -> int | None:
    """The host's TSC frequency in kHz (for ``tsc_early_khz``: microvm has no
    HPET or PM timer, and under TCG its clock calibration hangs at random
    without it), or None when unknown."""
    sysfs = Path("/sys/devices/system/cpu/cpu0/tsc_freq_khz")
    with contextlib.suppress(OSError, ValueError):
        return int(sysfs.read_text().strip())
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return round(float(line.split(":")[1]) * 1000)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def command(machine: Machine, image: Image, directory: Path, port: int) -> list[str]:
    """QEMU's arguments for one VM."""
    cmdline = [image.cmdline, "console=ttyS0", "8250.nr_uarts=1", "random.trust_cpu=on"]
    if machine.tsc_khz:
        cmdline += [f"tsc_early_khz={machine.tsc_khz}", "tsc=reliable", "no_timer_check"]
    bus = "device" if machine.machine == "microvm" else "pci"
    return [
        machine.qemu,
        "-name", f"fleetkit-{directory.name}",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-accel", machine.accel,
        "-cpu", "host" if machine.accel == "kvm" else "max",
        "-M", machine.machine,
        "-m", str(machine.memory_mib),
        "-smp", str(machine.cpus),
        "-kernel", str(image.kernel),
        "-initrd", str(directory / "initrd"),
        "-append", " ".join(cmdline),
        "-serial", f"file:{directory / 'console.log'}",
        # restrict=on: the guest reaches nothing (host, other VMs, network);
        # only the explicit forward of its SSH port exists.
        "-netdev", f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", f"virtio-net-{bus},netdev=net0",
        "-device", f"virtio-rng-{bus}",
        "-qmp", f"unix:{qmp_path(directory)},server=on,wait=off",
    ]  # fmt: skip


def _prepare(directory: Path, image: Image, extra_keys: Sequence[str], username: str | None) -> str:
    """Make the VM's directory and initrd; return its host public key."""
    directory.mkdir(mode=0o700, parents=True)
    private, public = new_host_key(directory)
    overlay = _cpio.newc(
        guest_overlay(
            host_key=private,
            authorized_keys=[*image.authorized_keys, *extra_keys],
            hostname=f"vm-{directory.name}",
            user=username or image.user,
            uid=0 if username == "root" else image.uid,
            home=("/root" if username == "root" else f"/home/{username}")
            if username
            else image.home,
        )
    )
    initrd = directory / "initrd"
    with initrd.open("xb") as out, image.initramfs.open("rb") as base:
        os.fchmod(out.fileno(), 0o600)
        shutil.copyfileobj(base, out)
        # The kernel unpacks archives one after another; a later file replaces
        # an earlier one, so this VM's key and authorized_keys win.
        out.write(b"\0" * (-out.tell() % 4))
        out.write(overlay)
    return public


def remove_directory(directory: Path) -> None:
    """Remove a VM's directory (never following a symlink out of it) and its
    QMP socket."""
    qmp_path(directory).unlink(missing_ok=True)
    if directory.is_symlink():
        directory.unlink()
    else:
        shutil.rmtree(directory, ignore_errors=True)


def _tail(path: Path, lines: int = 3) -> str:
    with contextlib.suppress(OSError):
        text = path.read_bytes().decode("utf-8", "replace").strip().splitlines()
        kept = [line.strip() for line in text[-lines:] if line.strip()]
        return " | ".join(kept)[-300:] or "(empty)"
    return "(none)"


async def _banner(port: int) -> bool:
    """Whether an SSH server answers on ``port`` (QEMU's forward accepts
    connections before the guest listens, so only the banner counts)."""
    data = b""
    try:
        with anyio.fail_after(_PROBE_TIMEOUT):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                while b"\n" not in data and len(data) < 1024:
                    data += await stream.receive(1024)
    except (OSError, TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError):
        pass
    # The banner may share a read with binary key exchange data.
    first = data.split(b"\r\n")[0].split(b"\n")[0]
    return first.decode("ascii", "replace").startswith("SSH-2.0-")


async def boot(
    machine: Machine,
    image: Image,
    directory: Path,
    *,
    extra_keys: Sequence[str],
    boot_timeout: float,
    label: str,
    username: str | None = None,
) -> QemuVM:
    """Start a VM in ``directory`` (which must not exist) and return it once its
    SSH banner arrives. On failure or cancellation nothing of it is left.
    ``label`` names the VM in errors."""
    started: list[anyio.abc.Process] = []
    try:
        with anyio.fail_after(boot_timeout):
            return await _boot(machine, image, directory, extra_keys, username, label, started)
    except BaseException as exc:
        console = _tail(directory / "console.log")
        await discard(started[-1] if started else None, directory)
        if isinstance(exc, TimeoutError):
            raise HypervisorError(
                f"qemu VM {label} from {image.name!r} did not boot within {boot_timeout:g} s "
                f"({machine.accel}); console: {console}"
            ) from None
        if isinstance(exc, OSError):
            raise HypervisorError(f"qemu VM {label} from {image.name!r}: {exc}") from None
        raise


async def _boot(
    machine: Machine,
    image: Image,
    directory: Path,
    extra_keys: Sequence[str],
    username: str | None,
    label: str,
    started: list[anyio.abc.Process],
) -> QemuVM:
    host_key = await anyio.to_thread.run_sync(_prepare, directory, image, extra_keys, username)
    for _ in range(_PORT_ATTEMPTS):
        port = await anyio.to_thread.run_sync(_free_port)
        with (directory / "qemu.log").open("ab") as stderr:
            process = await anyio.open_process(
                command(machine, image, directory, port),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        started.append(process)
        while process.returncode is None:
            # One probe in flight at a time: each makes the guest's server fork.
            if await _banner(port):
                return QemuVM(
                    name=directory.name,
                    image=image,
                    directory=directory,
                    process=process,
                    port=port,
                    host_key=host_key,
                )
            await anyio.sleep(_PROBE_INTERVAL)
        await process.wait()
        if _PORT_TAKEN not in _tail(directory / "qemu.log", 20):
            raise HypervisorError(
                f"qemu VM {label} from {image.name!r}: QEMU exited with status "
                f"{process.returncode}: {_tail(directory / 'qemu.log')}"
            )
        log.info("qemu VM %s: port %d was taken meanwhile; trying another", label, port)
        await process.aclose()
        started.pop()
    raise HypervisorError(f"qemu VM {label}: no free loopback port for its SSH forward")


async def discard(process: anyio.abc.Process | None, directory: Path) -> None:
    """Kill and remove a VM that failed to boot (shielded)."""
    with anyio.CancelScope(shield=True):
        if process is not None:
            await end_process(process, grace=0)
        await anyio.to_thread.run_sync(remove_directory, directory)


def qemu_processes(directory: Path) -> list[int]:
    """This user's processes whose arguments name ``directory``'s initrd
    (a process of another user naming it is never ours to signal)."""
    needle = os.fsencode(directory / "initrd")
    found = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle in entry.read_bytes().split(b"\0") and _mine(entry.parent):
                found.append(int(entry.parent.name))
        except (OSError, ValueError):
            continue
    return found


def _mine(proc: Path) -> bool:
    for line in (proc / "status").read_text().splitlines():
        if line.startswith("Uid:"):
            real, effective = (int(uid) for uid in line.split()[1:3])
            return real == effective == os.geteuid()
    return False
