"""Where the nesting daemon listens and keeps its state, made and checked safely.

The socket path follows GitLab's rule (``$NESTING_SOCKET``, else
``$XDG_RUNTIME_DIR/nesting.sock``, else ``nesting.sock`` in the home
directory). Whoever can connect to the socket can create VMs, and whoever can
replace it can impersonate the daemon, so before binding:

* the socket's directory is made 0700 when missing; an existing one must be a
  real directory (not a symlink) owned by this user (or root), and not
  writable by others unless sticky (as ``/tmp``);
* an existing socket path must be a socket owned by this user, not a symlink:
  then it is a dead daemon's (the state lock proves it) and is replaced;
  anything else is refused;
* the socket itself is created 0600 (umask while binding, then checked);
  with a socket owner (``--socket-owner USER``: a login user other than the
  daemon's, such as an instance's unprivileged SSH user) it is then handed to
  that user, still 0600, in a directory others may enter but not list or
  write.

The state dir (default: ``<socket>.state`` beside the socket) is 0700, owned
by this user, and holds ``lock``: ``flock``-ed for the daemon's lifetime, so a
daemon that gets it knows no other serves this state, and what the
hypervisor finds there was left by a dead one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import attrs

from fleetkit.errors import IsolationError

__all__ = [
    "SOCKET_ENV",
    "SocketOwner",
    "StateLock",
    "check_socket_path",
    "default_socket_path",
    "default_state_dir",
    "private_dir",
    "remove_socket",
    "restrict_socket",
    "socket_umask",
]

#: The environment variable naming the socket (GitLab's).
SOCKET_ENV = "NESTING_SOCKET"
_SOCKET_NAME = "nesting.sock"
# sockaddr_un.sun_path is 108 bytes with the terminating NUL.
_MAX_SOCKET_PATH = 107
_LOCK_NAME = "lock"


def default_socket_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$NESTING_SOCKET``, else ``$XDG_RUNTIME_DIR/nesting.sock``, else
    ``~/nesting.sock`` (GitLab's rule for Linux)."""
    env = os.environ if environ is None else environ
    if env.get(SOCKET_ENV):
        return Path(env[SOCKET_ENV]).expanduser().absolute()
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / _SOCKET_NAME
    return Path.home() / _SOCKET_NAME


def default_state_dir(socket_path: Path) -> Path:
    """``<socket>.state`` beside the socket: one state per socket, so daemons
    on different sockets never share one."""
    return socket_path.with_name(socket_path.name + ".state")


def _check_owned(path: Path, info: os.stat_result, what: str) -> None:
    if info.st_uid not in (os.geteuid(), 0):
        raise IsolationError(f"{what} {path} belongs to uid {info.st_uid}, not to this user")


def private_dir(path: Path, what: str, *, mode: int = 0o700) -> Path:
    """Make ``path`` a directory of this user (``mode``, default 0700), or check
    an existing one is safe for a socket or state: not a symlink, owned by this
    user or root, not writable by others unless sticky. Returns the absolute
    path."""
    path = path.absolute()
    try:
        info = path.lstat()
    except FileNotFoundError:
        missing = [path, *(p for p in path.parents if not p.exists())]
        for directory in reversed(missing):
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=mode)
                directory.chmod(mode)  # not narrowed by the umask
        info = path.lstat()
    except OSError as exc:
        raise IsolationError(f"cannot use {what} {path}: {exc.strerror}") from exc
    if stat.S_ISLNK(info.st_mode):
        raise IsolationError(f"{what} {path} is a symlink; refusing it")
    if not stat.S_ISDIR(info.st_mode):
        raise IsolationError(f"{what} {path} is not a directory")
    _check_owned(path, info, what)
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise IsolationError(
            f"{what} {path} is writable by other users (mode {stat.S_IMODE(info.st_mode):o}); "
            "they could replace the daemon's files"
        )
    return path


def check_socket_path(path: Path, owner: SocketOwner | None = None) -> Path:
    """Check ``path`` can be bound safely and clear a dead daemon's socket there.

    Call with the state lock held. Raises :class:`~fleetkit.errors.IsolationError`
    for a path too long for a unix socket, a symlink, anything not a socket,
    or a socket of another user (``owner``'s is the daemon's own). With
    ``owner``, a missing directory is made 0711 (enter, not list) and every
    directory above the socket must let others enter, so ``owner`` can reach it.
    """
    path = path.absolute()
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
        raise IsolationError(
            f"socket path {path} is longer than the {_MAX_SOCKET_PATH} bytes a unix socket allows"
        )
    private_dir(path.parent, "socket directory", mode=0o700 if owner is None else 0o711)
    if owner is not None:
        closed = [d for d in path.parents if not d.stat().st_mode & stat.S_IXOTH]
        if closed:
            raise IsolationError(
                f"socket owner {owner.name} cannot reach {path}: {closed[0]} is closed to other "
                f"users (mode {stat.S_IMODE(closed[0].stat().st_mode):o})"
            )
    try:
        info = path.lstat()
    except FileNotFoundError:
        return path
    if stat.S_ISLNK(info.st_mode):
        raise IsolationError(f"socket path {path} is a symlink; refusing it")
    if not stat.S_ISSOCK(info.st_mode):
        raise IsolationError(
            f"socket path {path} exists and is not a socket; refusing to replace it"
        )
    if info.st_uid not in _socket_uids(owner):
        raise IsolationError(f"socket {path} belongs to uid {info.st_uid}, not to this user")
    path.unlink()  # a dead daemon's: this daemon holds the state lock
    return path


def _socket_uids(owner: SocketOwner | None) -> set[int]:
    return {os.geteuid()} if owner is None else {os.geteuid(), owner.uid}


@contextlib.contextmanager
def socket_umask() -> Iterator[None]:
    """A umask under which a socket is bound 0600 (process-wide: the daemon
    binds before it starts anything else)."""
    old = os.umask(0o177)
    try:
        yield
    finally:
        os.umask(old)


def restrict_socket(path: Path, owner: SocketOwner | None = None) -> None:
    """Make the bound socket 0600, checked to be the one this user made, and
    hand it to ``owner`` when given (still 0600: that user alone may connect)."""
    info = path.lstat()
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.geteuid():
        raise IsolationError(f"socket {path} was replaced while binding; refusing to serve")
    os.chmod(path, 0o600, follow_symlinks=False)
    if owner is not None:
        os.chown(path, owner.uid, owner.gid, follow_symlinks=False)


def remove_socket(path: Path, owner: SocketOwner | None = None) -> None:
    """Remove the daemon's socket at stop (only a socket, only its own)."""
    try:
        info = path.lstat()
    except OSError:
        return
    if stat.S_ISSOCK(info.st_mode) and info.st_uid in _socket_uids(owner):
        path.unlink(missing_ok=True)


@attrs.frozen
class SocketOwner:
    """The user the socket is handed to (``--socket-owner``), so that a login
    user other than the daemon's own may call it."""

    name: str
    uid: int
    gid: int

    @classmethod
    def lookup(cls, user: str) -> SocketOwner:
        """By name or numeric uid; :class:`~fleetkit.errors.IsolationError` when unknown."""
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except KeyError:
            raise IsolationError(f"socket owner {user!r} is not a user of this host") from None
        return cls(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)


class StateLock:
    """The daemon's exclusive ``flock`` on ``STATE_DIR/lock`` (with its pid in it)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = private_dir(state_dir, "state directory")
        self._file: IO[bytes] | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`~fleetkit.errors.IsolationError` naming
        the daemon that holds it."""
        path = self.state_dir / _LOCK_NAME
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise IsolationError(f"cannot open the state lock {path}: {exc.strerror}") from exc
        lock = os.fdopen(fd, "r+b")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock.read().decode(errors="replace").strip() or "unknown"
            lock.close()
            raise IsolationError(
                f"another nesting daemon (pid {holder}) serves from {self.state_dir}"
            ) from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n".encode())
        lock.flush()
        self._file = lock

    def release(self, *, remove: bool) -> None:
        """Drop the lock; with ``remove``, delete the lock file and the state dir
        when nothing else is left in it."""
        lock, self._file = self._file, None
        if lock is None:
            return
        if remove:
            (self.state_dir / _LOCK_NAME).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.state_dir.rmdir()
        lock.close()
