"""Images for the ``qemu`` hypervisor: an initramfs-only Linux guest built offline.

``fleetkit nesting image build NAME [--into DIR]`` (or :func:`build_image`)
makes one from Debian packages: the ``linux-image-cloud-amd64`` kernel (fetched
with ``apt-get download`` into a cache and unpacked with ``dpkg -x``, never
installed on the host) with its virtio modules, and this host's
``busybox-static``, ``dropbear-bin`` and ``bash`` with the libraries they link.
The guest has no disk: it runs from RAM and starts pristine at every boot.

An image is a directory ``DIR/NAME/``::

    image.json      metadata (below)
    vmlinuz         the kernel
    initramfs.img   gzip'd newc cpio: the whole guest (0600: holds the host key)
    host_key.pub    the image's SSH host key, public part

``image.json`` holds ``format`` (1), ``name``, ``kernel``, ``initramfs`` (file
names in the directory), ``kernel_version``, ``cmdline`` (kernel arguments; the
hypervisor adds the clock and console ones), ``user``, ``uid``, ``home``,
``authorized_keys`` (public key lines) and ``host_key``. An image made another
way works when it has the same layout and a guest that: runs an SSH server on
port 22 of ``10.0.2.15/24`` (gateway ``10.0.2.2``) with the host key in
``/etc/dropbear/dropbear_ed25519_host_key`` (dropbear format), takes the login
user's keys from ``HOME/.ssh/authorized_keys`` and its host name from
``/etc/hostname``: the hypervisor appends a small cpio to the initramfs of each
VM that replaces those three files, so that every VM has its own host key.
"""

from __future__ import annotations

import gzip
import json
import lzma
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from fleetkit.errors import FleetkitError
from fleetkit.nesting import _cpio

__all__ = [
    "DEFAULT_USER",
    "GUEST_MODULES",
    "Image",
    "ImageBuildError",
    "build_image",
    "default_image_directory",
    "guest_overlay",
    "load_image",
]

#: The login user of an image unless ``--user`` says otherwise.
DEFAULT_USER = "fleetkit"
#: Modules the guest loads (with their dependencies first): network, entropy
#: and the virtio transports of both machines (mmio for microvm, PCI for q35).
GUEST_MODULES = (
    "virtio_mmio",
    "virtio_pci",
    "virtio_net",
    "virtio_rng",
)
KERNEL_PACKAGE = "linux-image-cloud-amd64"
HOST_KEY_PATH = "etc/dropbear/dropbear_ed25519_host_key"
_FORMAT = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,30}")
_KEY_LINE = re.compile(r"(ssh|ecdsa|sk)-[A-Za-z0-9@.-]+ [A-Za-z0-9+/=]+( [^\n]*)?")
_UID = 1000
_BINARIES = {
    "bin/busybox": "/bin/busybox",
    "usr/sbin/dropbear": "/usr/sbin/dropbear",
    "bin/bash": "/bin/bash",
}

_INITTAB = """\
::sysinit:/etc/init.d/rcS
::respawn:/usr/sbin/dropbear -F -E -s -g -p 22 -r /etc/dropbear/dropbear_ed25519_host_key
::shutdown:/bin/umount -a -r
"""
# PID 1 is busybox init: it never exits and reaps orphans; it restarts the
# SSH server should it die.
_RCS = """\
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
for module in $(cat /etc/fleetkit/modules); do
  insmod "/lib/modules/$module.ko" 2>/dev/null
done
hostname -F /etc/hostname
ip link set lo up
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 100 ]; do usleep 20000; n=$((n+1)); done
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "fleetkit: guest up" > /dev/console
"""


class ImageBuildError(FleetkitError):
    """An image could not be built (a package missing, a bad option); the
    message says which."""


@attrs.frozen(kw_only=True)
class Image:
    """A built image, as its ``image.json`` describes it."""

    name: str
    directory: Path
    kernel: Path
    initramfs: Path
    kernel_version: str
    cmdline: str
    user: str
    uid: int
    home: str
    authorized_keys: tuple[str, ...]
    host_key: str


def default_image_directory() -> Path:
    """``$XDG_DATA_HOME/fleetkit/images`` (``~/.local/share/fleetkit/images``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "fleetkit" / "images"


def default_cache_directory() -> Path:
    """Where downloaded kernel packages are kept: ``$XDG_CACHE_HOME/fleetkit/debs``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fleetkit" / "debs"


def load_image(directory: Path) -> Image:
    """The image in ``directory``; :class:`ImageBuildError` naming the file
    and what is wrong when it is not one."""
    meta_path = directory / "image.json"
    try:
        meta = json.loads(meta_path.read_text())
        image = Image(
            name=str(meta["name"]),
            directory=directory,
            kernel=directory / str(meta["kernel"]),
            initramfs=directory / str(meta["initramfs"]),
            kernel_version=str(meta.get("kernel_version", "")),
            cmdline=str(meta.get("cmdline", "")),
            user=str(meta["user"]),
            uid=int(meta["uid"]),
            home=str(meta["home"]),
            authorized_keys=tuple(str(k) for k in meta.get("authorized_keys", [])),
            host_key=str(meta["host_key"]),
        )
    except OSError as exc:
        raise ImageBuildError(f"{meta_path}: cannot read: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ImageBuildError(f"{meta_path}: not an image description ({exc!r})") from None
    if meta.get("format") != _FORMAT:
        raise ImageBuildError(f"{meta_path}: format {meta.get('format')!r}, expected {_FORMAT}")
    for part in (image.kernel, image.initramfs):
        if part.parent != directory or not part.is_file():
            raise ImageBuildError(f"{meta_path}: {part.name} is not a file of the image")
    return image


def build_image(
    name: str,
    into: Path | None = None,
    *,
    user: str = DEFAULT_USER,
    authorized_keys: Sequence[str] = (),
    kernel_deb: Path | None = None,
    cache_dir: Path | None = None,
    extra_binaries: Sequence[Path] = (),
) -> Image:
    """Build image ``name`` into ``into/name`` (default
    :func:`default_image_directory`), replacing an image of that name once the
    new one is complete. ``kernel_deb`` is a ``linux-image-*`` package file;
    without it one is looked for in ``cache_dir`` (or ``$FLEETKIT_KERNEL_DEB``)
    and downloaded there with ``apt-get download`` when missing.
    ``extra_binaries`` are copied in at their host paths with their libraries.
    Blocking (runs subprocesses); returns the new image.
    """
    if not _NAME.fullmatch(name):
        raise ImageBuildError(
            f"image name {name!r}: expected letters, digits, '_', '.', '-' (not first), at most 63"
        )
    if not _USER.fullmatch(user):
        raise ImageBuildError(f"--user {user!r}: expected a lower-case user name")
    keys = [k.strip() for k in authorized_keys if k.strip()]
    for key in keys:
        if not _KEY_LINE.fullmatch(key):
            raise ImageBuildError("--authorized-key: expected an OpenSSH public key line")
    for tool in ("/usr/bin/dropbearkey", *_BINARIES.values()):
        if not Path(tool).is_file():
            raise ImageBuildError(
                f"{tool} is missing: install busybox-static, dropbear-bin and bash"
            )
    into = Path(into) if into is not None else default_image_directory()
    into.mkdir(parents=True, exist_ok=True)
    deb = _kernel_package(kernel_deb, cache_dir)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=into) as scratch:
        work = Path(scratch)
        unpacked = work / "kernel"
        _run(["dpkg", "-x", str(deb), str(unpacked)], f"unpacking {deb.name}")
        vmlinuz, modules_root, version = _kernel_parts(unpacked, deb)
        host_key, host_public = _host_key(work)
        home = f"home/{user}"
        entries = [
            *_skeleton(),
            *_binaries(
                [*_BINARIES.items(), *((str(p).lstrip("/"), str(p)) for p in extra_binaries)]
            ),
            *_modules(modules_root, GUEST_MODULES),
            *guest_overlay(
                host_key=host_key,
                authorized_keys=keys,
                hostname="fleetkit-vm",
                user=user,
                uid=_UID,
                home=home,
            ),
        ]
        image_dir = work / name
        image_dir.mkdir(mode=0o755)
        shutil.copyfile(vmlinuz, image_dir / "vmlinuz")
        initramfs = image_dir / "initramfs.img"
        initramfs.touch(mode=0o600)
        archive = gzip.compress(_cpio.newc(entries), compresslevel=6, mtime=0)
        # Padded so that a VM's own archive can follow it.
        initramfs.write_bytes(archive + b"\0" * (-len(archive) % 512))
        (image_dir / "host_key.pub").write_text(host_public + "\n")
        meta = {
            "format": _FORMAT,
            "name": name,
            "kernel": "vmlinuz",
            "initramfs": "initramfs.img",
            "kernel_version": version,
            "cmdline": "panic=-1 quiet rdinit=/init",
            "user": user,
            "uid": _UID,
            "home": "/" + home,
            "authorized_keys": keys,
            "host_key": host_public,
        }
        (image_dir / "image.json").write_text(json.dumps(meta, indent=2) + "\n")
        target = into / name
        old = work / "old"
        if target.exists():
            target.rename(old)
        image_dir.rename(target)
    return load_image(target)


def guest_overlay(
    *,
    host_key: bytes,
    authorized_keys: Iterable[str],
    hostname: str,
    user: str,
    uid: int,
    home: str,
) -> list[_cpio.Entry]:
    """The entries that make one guest its own: host key (dropbear format),
    the login user (``/etc/passwd``, ``group``, ``shadow``: no password) with
    its ``authorized_keys``, and the host name. ``home`` is the login user's
    home."""
    home = home.strip("/")
    keys = "".join(f"{k}\n" for k in authorized_keys).encode()
    # Root has no key unless it is the login user (a VM is the job's alone).
    users = [("root", 0, "root")] if user == "root" else [("root", 0, "root"), (user, uid, home)]
    passwd = "".join(f"{u}:x:{i}:{i}::/{h}:/bin/bash\n" for u, i, h in users)
    shadow = "".join(f"{u}:*:1::::::\n" for u, _, _ in users)
    groups = "".join(f"{u}:x:{i}:\n" for u, i, _ in users) + "tty:x:5:\n"
    return [
        _cpio.file("etc/passwd", passwd.encode()),
        _cpio.file("etc/shadow", shadow.encode(), 0o600),
        _cpio.file("etc/group", groups.encode()),
        _cpio.directory("etc/dropbear", 0o700),
        _cpio.file(HOST_KEY_PATH, host_key, 0o600),
        _cpio.file("etc/hostname", hostname.encode() + b"\n"),
        _cpio.directory(home, 0o700, uid, uid),
        _cpio.directory(f"{home}/.ssh", 0o700, uid, uid),
        _cpio.file(f"{home}/.ssh/authorized_keys", keys, 0o600, uid, uid),
    ]


def new_host_key(work: Path) -> tuple[bytes, str]:
    """A fresh ed25519 host key: (dropbear's private key file, public key line)."""
    return _host_key(work)


# --- building blocks ------------------------------------------------------------


def _run(command: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, check=False, timeout=600
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImageBuildError(f"{what}: {exc}") from None
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise ImageBuildError(f"{what} failed: {detail}")
    return done.stdout


def _kernel_package(kernel_deb: Path | None, cache_dir: Path | None) -> Path:
    if kernel_deb is None and os.environ.get("FLEETKIT_KERNEL_DEB"):
        kernel_deb = Path(os.environ["FLEETKIT_KERNEL_DEB"])
    if kernel_deb is not None:
        if not kernel_deb.is_file():
            raise ImageBuildError(f"--kernel-deb {kernel_deb}: no such file")
        return kernel_deb
    cache = cache_dir or default_cache_directory()
    found = sorted(cache.glob("linux-image-[0-9]*-cloud-amd64_*.deb"))
    if found:
        return found[-1]
    cache.mkdir(parents=True, exist_ok=True)
    depends = _run(["apt-cache", "depends", KERNEL_PACKAGE], f"looking up {KERNEL_PACKAGE}")
    versions = re.findall(r"Depends: (linux-image-[0-9][^\s]*)", depends)
    if not versions:
        raise ImageBuildError(f"{KERNEL_PACKAGE} depends on no kernel package (apt-get update?)")
    _run(["apt-get", "download", versions[0]], f"apt-get download {versions[0]}", cwd=cache)
    found = sorted(cache.glob("linux-image-[0-9]*-cloud-amd64_*.deb"))
    if not found:
        raise ImageBuildError(f"apt-get download {versions[0]} left no package in {cache}")
    return found[-1]


def _kernel_parts(unpacked: Path, deb: Path) -> tuple[Path, Path, str]:
    kernels = sorted((unpacked / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageBuildError(f"{deb.name} holds no boot/vmlinuz-*: not a kernel package")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    for base in ("lib/modules", "usr/lib/modules"):
        root = unpacked / base / version
        if root.is_dir():
            return kernels[-1], root, version
    raise ImageBuildError(f"{deb.name} holds no modules for {version}")


def _host_key(work: Path) -> tuple[bytes, str]:
    path = work / f"host-key-{os.urandom(4).hex()}"
    try:
        _run(
            ["/usr/bin/dropbearkey", "-t", "ed25519", "-f", str(path)],
            "generating the host key with dropbearkey",
        )
        public = _run(["/usr/bin/dropbearkey", "-y", "-f", str(path)], "reading the host key")
        private = path.read_bytes()
    finally:
        path.unlink(missing_ok=True)
    lines = [line for line in public.splitlines() if line.startswith("ssh-ed25519 ")]
    if not lines:
        raise ImageBuildError("dropbearkey printed no ssh-ed25519 public key")
    key_type, blob = lines[0].split()[:2]
    return private, f"{key_type} {blob}"


def _skeleton() -> list[_cpio.Entry]:
    entries = [
        _cpio.directory(d)
        for d in (
            "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "etc/init.d", "etc/fleetkit",
            "lib", "lib64", "lib/modules", "proc", "sys", "dev", "run", "var", "var/log",
            "root", "home",
        )
    ]  # fmt: skip
    entries += [
        _cpio.directory("tmp", 0o1777),
        _cpio.directory("var/tmp", 0o1777),
        _cpio.node("dev/console", 5, 1),
        _cpio.node("dev/null", 1, 3, 0o666),
        _cpio.symlink("init", "/bin/busybox"),
        _cpio.symlink("bin/sh", "busybox"),
        _cpio.symlink("var/run", "/run"),
        _cpio.file("etc/inittab", _INITTAB.encode()),
        _cpio.file("etc/init.d/rcS", _RCS.encode(), 0o755),
        _cpio.file("etc/shells", b"/bin/sh\n/bin/bash\n"),
        _cpio.file("etc/profile", b"export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin\n"),
    ]
    applets = _run(["/bin/busybox", "--list-full"], "listing busybox applets").split()
    have = {"bin/sh", "bin/bash", "init"}
    for applet in applets:
        if applet not in have:
            have.add(applet)
            entries.append(_cpio.symlink(applet, "/bin/busybox"))
    return entries


def _libraries(binary: str) -> list[str]:
    """The shared objects ``binary`` loads, the dynamic loader included (a naive
    parse of ``ldd`` misses it: its line has no ``=>``)."""
    done = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False)
    found = []
    for line in done.stdout.splitlines():
        match = re.search(r"(?:=> )?(/\S+) \(0x", line)
        if match:
            found.append(match.group(1))
    return found


def _binaries(binaries: Iterable[tuple[str, str]]) -> list[_cpio.Entry]:
    entries: list[_cpio.Entry] = []
    seen: set[str] = set()
    dirs: set[str] = set()

    def add(path: str, source: str, mode: int) -> None:
        if path in seen:
            return
        seen.add(path)
        parent = str(Path(path).parent)
        parts = Path(parent).parts
        for n in range(1, len(parts) + 1):
            d = "/".join(parts[:n])
            if d not in dirs:
                dirs.add(d)
                entries.append(_cpio.directory(d))
        entries.append(_cpio.file(path, Path(source).read_bytes(), mode))

    for path, source in binaries:
        if not Path(source).is_file():
            raise ImageBuildError(f"{source}: no such binary on this host")
        add(path, source, 0o755)
        for library in _libraries(source):
            add(library.lstrip("/"), library, 0o755)
    return entries


def _module_files(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in root.rglob("*.ko*"):
        stem = path.name.split(".ko")[0].replace("-", "_")
        found.setdefault(stem, path)
    return found


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return lzma.decompress(data) if path.name.endswith(".xz") else data


def _depends(data: bytes) -> list[str]:
    match = re.search(rb"\0depends=([^\0]*)\0", data)
    if not match or not match.group(1):
        return []
    return [d.decode().replace("-", "_") for d in match.group(1).split(b",") if d]


def _modules(root: Path, wanted: Iterable[str]) -> list[_cpio.Entry]:
    """``wanted`` with their dependencies (from each module's ``depends=``
    line: the package carries no ``modules.dep``), in load order, plus the
    list the guest's rcS loads them from. A module built into the kernel is
    skipped."""
    files = _module_files(root)
    builtin = set()
    builtin_list = root / "modules.builtin"
    if builtin_list.is_file():
        builtin = {
            Path(line).name.split(".ko")[0].replace("-", "_")
            for line in builtin_list.read_text().split()
        }
    order: list[str] = []
    contents: dict[str, bytes] = {}

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in order or name in builtin:
            return
        if name in trail:
            raise ImageBuildError(f"module dependency cycle: {' -> '.join((*trail, name))}")
        if name not in files:
            raise ImageBuildError(f"the kernel package has no module {name}")
        data = contents.setdefault(name, _module_bytes(files[name]))
        for dependency in _depends(data):
            visit(dependency, (*trail, name))
        order.append(name)

    for name in wanted:
        visit(name.replace("-", "_"), ())
    entries = [_cpio.file(f"lib/modules/{name}.ko", contents[name]) for name in order]
    entries.append(_cpio.file("etc/fleetkit/modules", ("\n".join(order) + "\n").encode()))
    return entries
