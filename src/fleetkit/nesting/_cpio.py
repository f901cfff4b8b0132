"""A writer for the ``newc`` cpio format, the one Linux unpacks as an initramfs.

The machine has no ``cpio`` command, and an archive made here needs entries
that do not exist on the host (``/dev/console``, files owned by the guest's
login user), so the archive is written from a list of entries.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable

import attrs

__all__ = ["Entry", "directory", "file", "newc", "node", "symlink"]

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


@attrs.frozen
class Entry:
    """One archive member: ``path`` without a leading slash, ``mode`` with its
    file type bits, ``data`` (a symlink's target for a link)."""

    path: str
    mode: int
    data: bytes = b""
    uid: int = 0
    gid: int = 0
    rdev: tuple[int, int] = (0, 0)


def directory(path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    """A directory entry."""
    return Entry(path.strip("/"), stat.S_IFDIR | mode, uid=uid, gid=gid)


def file(path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    """A regular file entry."""
    return Entry(path.strip("/"), stat.S_IFREG | mode, data, uid=uid, gid=gid)


def symlink(path: str, target: str) -> Entry:
    """A symbolic link entry pointing at ``target``."""
    return Entry(path.strip("/"), stat.S_IFLNK | 0o777, target.encode())


def node(path: str, major: int, minor: int, mode: int = 0o600) -> Entry:
    """A character device entry (the kernel makes it while unpacking)."""
    return Entry(path.strip("/"), stat.S_IFCHR | mode, rdev=(major, minor))


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(ino: int, entry: Entry, name: bytes) -> bytes:
    fields = (
        ino,
        entry.mode,
        entry.uid,
        entry.gid,
        2 if stat.S_ISDIR(entry.mode) else 1,
        0,  # mtime: 0 keeps archives reproducible
        len(entry.data),
        0,
        0,
        entry.rdev[0],
        entry.rdev[1],
        len(name) + 1,
        0,
    )
    return _MAGIC + b"".join(b"%08X" % value for value in fields)


def newc(entries: Iterable[Entry]) -> bytes:
    """The archive of ``entries`` in order, with its trailer, padded to 512 bytes
    (so that another archive may follow it in the same initramfs)."""
    out = bytearray()
    for ino, entry in enumerate([*entries, Entry(_TRAILER, 0)], start=1):
        name = entry.path.encode()
        head = _header(ino if entry.path != _TRAILER else 0, entry, name)
        out += head + name + b"\0"
        out += _pad(len(head) + len(name) + 1)
        out += entry.data + _pad(len(entry.data))
    out += b"\0" * (-len(out) % 512)
    return bytes(out)
