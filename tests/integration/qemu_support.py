"""Shared pieces of the qemu hypervisor tests: one image per session, a login key, ssh."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from fleetkit.nesting.qemu_image import Image, ImageBuildError, build_image
from tests.support import missing, require_executable

_HINT = "apt-get install -y qemu-system-x86 busybox-static dropbear-bin"


@attrs.frozen
class BuiltImage:
    """The session's image, its directory of images and the login key."""

    image: Image
    images: Path
    key: Path


def require_qemu() -> None:
    """QEMU and the image's parts: skip (fail under CI) without them."""
    for tool in ("qemu-system-x86_64", "/bin/busybox", "/usr/sbin/dropbear", "ssh-keygen", "ssh"):
        require_executable(tool, _HINT)


@pytest.fixture(scope="session")
def qemu_image() -> Iterator[BuiltImage]:
    """Image ``test`` built once per session (the kernel .deb from
    ``$FLEETKIT_KERNEL_DEB`` or the cache, downloaded when missing)."""
    require_qemu()
    root = Path(tempfile.mkdtemp(prefix="fk-qi-"))
    try:
        key = root / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        try:
            image = build_image(
                "test", root / "images", authorized_keys=[key.with_suffix(".pub").read_text()]
            )
        except ImageBuildError as exc:
            missing(f"cannot build the qemu test image: {exc}")
        yield BuiltImage(image=image, images=root / "images", key=key)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def ssh(
    built: BuiltImage, addr: str, host_key: str, command: str, *, workdir: Path
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in the VM at ``addr`` with OpenSSH, the host key pinned."""
    host, port = addr.rsplit(":", 1)
    known = workdir / f"known-{port}"
    known.write_text(f"[{host}]:{port} {host_key}\n")
    return subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(built.key),
            "-p",
            port,
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={known}",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=20",
            f"{built.image.user}@{host}",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={**os.environ, "LC_ALL": "C"},
    )


def qemu_processes_under(directory: Path) -> list[int]:
    """Live QEMU processes whose arguments name a path under ``directory``."""
    needle = os.fsencode(directory)
    found = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = path.read_bytes()
        except OSError:
            continue
        if needle in args and b"qemu-system" in args:
            found.append(int(path.parent.name))
    return found
