"""Directories and files that are fleetkit's own, checked before they are used.

A root-run fleetkit that reuses a directory another local user made (in
``/tmp``, say) would create and overwrite files wherever that user's symlinks
point. So every directory fleetkit makes or reuses goes through
:func:`own_dir`: it must be a real directory (not a symlink), owned by this
process's user, writable by nobody else, and every directory above it must be
one that only root or this user can change (a world-writable one only with the
sticky bit, like ``/tmp``). A directory that is missing is made with the mode
asked for. Anything else is refused with :class:`UnsafePath`, naming the path
and the reason. Files are then opened below such a directory with
``O_NOFOLLOW`` (:func:`open_own_file`), so no symlink is followed at the end.

Blocking; call through ``anyio.to_thread.run_sync`` from async code.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
from pathlib import Path

__all__ = ["UnsafePath", "check_own_dir", "open_own_file", "own_dir", "write_own_file"]


class UnsafePath(OSError):
    """A path fleetkit would use is not safely its own; ``str`` names path and reason."""


def _who(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _check_parent(directory: Path) -> None:
    """A directory above one of ours: only root or we may change what is in it."""
    info = directory.stat()
    if info.st_uid not in (0, os.geteuid()):
        raise UnsafePath(
            f"{directory} is owned by {_who(info.st_uid)}, who could replace what is below it"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise UnsafePath(
            f"{directory} is writable by other users without the sticky bit "
            f"(mode {stat.S_IMODE(info.st_mode):04o}), so what is below it could be replaced"
        )


def check_own_dir(path: Path) -> None:
    """Raise :class:`UnsafePath` unless ``path`` is a directory of ours, not a
    symlink, owned by this user and writable by no one else."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise UnsafePath(f"{path} does not exist") from None
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePath(f"{path} is a symlink; fleetkit follows none in its directories")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePath(f"{path} is not a directory")
    if info.st_uid != os.geteuid():
        raise UnsafePath(
            f"{path} is owned by {_who(info.st_uid)}, not by this process's user "
            f"{_who(os.geteuid())}"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafePath(
            f"{path} is writable by other users (mode {stat.S_IMODE(info.st_mode):04o})"
        )


def own_dir(path: Path, mode: int, *, levels: int = 1) -> Path:
    """Make or reuse ``path`` (and the ``levels - 1`` directories above it) as
    fleetkit's own; return it absolute. Made directories get ``mode``; reused
    ones keep theirs, which must not let others write. The directories above
    those levels must be safe parents (see the module docstring)."""
    path = path.absolute()
    ours = [path, *path.parents][:levels]
    top = ours[-1]
    # The parents are checked where they really are: a symlink among them
    # (/var/run -> /run) is fine when its target is safe.
    for parent in reversed(list(Path(os.path.realpath(top.parent)).parents)):
        _check_parent(parent)
    _check_parent(Path(os.path.realpath(top.parent)))
    for directory in reversed(ours):
        try:
            directory.mkdir(mode=mode)
        except FileExistsError:
            pass
        else:
            directory.chmod(mode)  # the umask may have taken bits away
        check_own_dir(directory)
    return path


def open_own_file(directory: Path, name: str, flags: int, mode: int = 0o600) -> int:
    """Open ``directory/name`` without following a symlink at the end; a new
    file gets ``mode``. The caller closes the descriptor. Raises
    :class:`UnsafePath` when the file exists but is not a regular file of ours."""
    try:
        fd = os.open(directory / name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the name is a symlink
            raise UnsafePath(f"{directory / name} is a symlink; fleetkit follows none") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        raise UnsafePath(f"{directory / name} is not a regular file owned by this process's user")
    return fd


def write_own_file(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Write ``path`` anew (never through a symlink), with ``mode``."""
    if isinstance(data, str):
        data = data.encode()
    path.unlink(missing_ok=True)
    fd = open_own_file(path.parent, path.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.fchmod(fd, mode)  # the umask may have taken bits away
    with os.fdopen(fd, "wb") as file:
        file.write(data)
