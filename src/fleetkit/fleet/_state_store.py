"""State storage: the instance table on disk, written atomically, read at start,
and held by one fleet at a time.

GitLab's ``state_storage`` (spec §1.6) keeps per-instance state so a restarted
manager can tell its own idle instances from ones that were mid-job. The file
holds ids, owners, use counts and the acquisitions held; it holds no connect
info, so no credential ever reaches the disk, and it is still created 0600
because acquisition keys may name private jobs.

A write goes to a temp file in the same directory, is flushed to disk and
renamed over the old file, so a crash at any moment leaves either the old or
the new table, never a torn one.

Two fleets writing one table would each overwrite the other's instances (two
configs with the same URL and token get the same directory): a store takes an
exclusive ``flock`` on ``state.lock`` beside the table for as long as it is
open, and writes who holds it there, so a second fleet is refused with a
message naming the path and the holder. The kernel drops the lock when its
holder dies, so a crashed manager never blocks the next start.

Every failure is a :class:`~fleetkit.errors.StateStoreError` naming the file:
the table is read with a size bound and checked field by field, because a
corrupt or hostile ``state.json`` must stop a start cleanly, not crash it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import socket
import stat
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from fleetkit._files import MiB
from fleetkit.errors import StateStoreError
from fleetkit.fleet._stored import StoredInstance

__all__ = ["StateStore", "StoredInstance"]

_FORMAT = 1
# 10,000 instances take about 1 MB; anything near this bound is not ours.
_MAX_BYTES = 64 * MiB
_LOCK_NAME = "state.lock"


class StateStore:
    """The instance table of one fleet under ``directory/state.json``.

    :meth:`load` takes the store's lock and keeps it until :meth:`close` (a
    fleet loads at start and closes at shutdown); :meth:`save` on a store that
    is not open takes the lock for the write only. Also a context manager.
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / "state.json"
        self._lock_fd: int | None = None
        self._dir_fd: int | None = None

    def __repr__(self) -> str:
        held = ", held" if self._lock_fd is not None else ""
        return f"StateStore({str(self.path)!r}{held})"

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _fail(self, what: str) -> StateStoreError:
        return StateStoreError(f"state storage {self.path}: {what}")

    # --- the lock -----------------------------------------------------------

    def open(self) -> None:
        """Take the lock (creating the private directory); idempotent.

        Raises :class:`~fleetkit.errors.StateStoreError` when another live
        store holds it, naming the holder, or when the directory is not private.
        """
        if self._lock_fd is None:
            dir_fd = self._open_directory()
            try:
                self._lock_fd = self._take_lock(dir_fd)
            except BaseException:
                os.close(dir_fd)
                raise
            self._dir_fd = dir_fd

    def close(self) -> None:
        """Release the lock; idempotent."""
        fd, self._lock_fd = self._lock_fd, None
        dir_fd, self._dir_fd = self._dir_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock
        if dir_fd is not None:
            os.close(dir_fd)

    def _open_directory(self) -> int:
        # Every file below is reached through this descriptor: once checked,
        # the directory cannot be swapped for a link to somewhere else.
        directory = self.path.parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if directory.is_symlink():
                raise self._fail(
                    "its directory is a symbolic link: name the directory itself"
                ) from None
            raise self._fail(f"cannot create its directory: {exc.strerror}") from exc
        except ValueError as exc:  # a NUL in the path
            raise self._fail(f"not a usable directory: {exc}") from None
        try:
            self._check_private(os.fstat(dir_fd))
        except BaseException:
            os.close(dir_fd)
            raise
        return dir_fd

    def _take_lock(self, dir_fd: int) -> int:
        try:
            # O_NOFOLLOW: a link planted here must not make us create or
            # truncate a file elsewhere.
            fd = os.open(
                _LOCK_NAME,
                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=dir_fd,
            )
        except OSError as exc:
            raise self._fail(f"cannot open {_LOCK_NAME}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise self._fail(f"cannot lock {_LOCK_NAME}: {exc.strerror}") from exc
            raise self._fail(
                f"in use by another fleet ({holder}); two fleets must not share one "
                "state table (two configs with the same url and token, or runner id, "
                "get the same directory): stop the other one, or give this runner its "
                "own [runners.autoscaler.state_storage] dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_text().encode(), 0)
        return fd

    def _check_private(self, st: os.stat_result) -> None:
        if st.st_uid not in (os.geteuid(), 0):
            raise self._fail(
                f"its directory belongs to uid {st.st_uid}, not to this user "
                f"(uid {os.geteuid()}): another user could change the table"
            )
        if st.st_mode & 0o022:
            raise self._fail(
                f"its directory is writable by others (mode {stat.S_IMODE(st.st_mode):04o}): "
                "another user could change the table; chmod go-w it"
            )

    # --- the table ----------------------------------------------------------

    def load(self) -> dict[str, StoredInstance]:
        """The stored instances (empty when there is no file yet); takes the lock."""
        self.open()
        assert self._dir_fd is not None
        try:
            raw = _read_at(self._dir_fd, self.path.name, _MAX_BYTES)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise self._fail(f"cannot read: {exc.strerror}") from exc
        try:
            return _parse(raw)
        except _Corrupt as exc:
            raise self._fail(
                f"not a fleetkit state file ({exc}); move it away to start without it"
            ) from None

    def save(self, instances: Mapping[str, StoredInstance]) -> None:
        """Replace the stored table with ``instances`` atomically (mode 0600)."""
        payload: dict[str, Any] = {
            "format": _FORMAT,
            "instances": {
                i.id: {
                    "owner": i.owner,
                    "use_count": i.use_count,
                    "acquisitions": {str(k): v for k, v in i.acquisitions.items()},
                }
                for i in instances.values()
            },
        }
        temporary = self._lock_fd is None
        self.open()
        try:
            self._write(json.dumps(payload, sort_keys=True).encode())
        finally:
            if temporary:
                self.close()

    def _write(self, data: bytes) -> None:
        dir_fd = self._dir_fd
        assert dir_fd is not None
        tmp = f".state-{secrets.token_hex(8)}.tmp"
        try:
            # Created new (O_EXCL), 0600 before any byte is written.
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=dir_fd,
            )
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                raise
        except OSError as exc:
            raise self._fail(f"cannot write: {exc.strerror}") from exc


def _read_at(dir_fd: int, name: str, limit: int) -> bytes:
    """``name`` inside ``dir_fd``, not through a link, at most ``limit`` bytes."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit // MiB} MiB")
    return data


def _holder_text() -> str:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
    return json.dumps(
        {"pid": os.getpid(), "host": socket.gethostname(), "since": started, "command": command}
    )


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0))
        text = f"pid {int(info['pid'])} on {info['host']} since {info['since']}"
        command = str(info.get("command") or "")
        # The other holder wrote this file, but as a different user it may be
        # anyone: show it as data, never as terminal control.
        shown = command if command.isprintable() else repr(command)
        return text + (f", {shown[:120]}" if shown else "")
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


class _Corrupt(Exception):
    """What is wrong with a state file, for the message."""


def _reject_constant(name: str) -> Any:
    raise _Corrupt(f"{name} is not a value a state file holds")


def _parse(raw: bytes) -> dict[str, StoredInstance]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Corrupt(f"not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _Corrupt(f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise _Corrupt("nested too deeply") from None
    if not isinstance(data, dict):
        raise _Corrupt(f"expected a JSON object, got {_kind(data)}")
    if data.get("format") != _FORMAT:
        found = data.get("format")
        shown = (
            repr(found) if isinstance(found, int) and not isinstance(found, bool) else _kind(found)
        )
        raise _Corrupt(f"format: expected {_FORMAT}, got {shown}")
    instances = data.get("instances")
    if not isinstance(instances, dict):
        raise _Corrupt(f"instances: expected an object, got {_kind(instances)}")
    return {key: _instance(key, entry) for key, entry in instances.items()}


def _instance(key: str, entry: object) -> StoredInstance:
    where = f"instances[{key[:80]!r}]"
    if not isinstance(entry, dict):
        raise _Corrupt(f"{where}: expected an object, got {_kind(entry)}")
    owner = entry.get("owner")
    if owner is not None and not isinstance(owner, str):
        raise _Corrupt(f"{where}.owner: expected a string or null, got {_kind(owner)}")
    use_count = entry.get("use_count")
    if not _count(use_count):
        raise _Corrupt(f"{where}.use_count: expected an integer >= 0, got {_kind(use_count)}")
    acquisitions = entry.get("acquisitions")
    if not isinstance(acquisitions, dict):
        raise _Corrupt(f"{where}.acquisitions: expected an object, got {_kind(acquisitions)}")
    held: dict[int, str] = {}
    for slot, holder in acquisitions.items():
        if not (slot.isascii() and slot.isdigit() and len(slot) <= 9) or not isinstance(
            holder, str
        ):
            raise _Corrupt(f"{where}.acquisitions: expected slot numbers mapped to job keys")
        held[int(slot)] = holder
    assert isinstance(use_count, int)
    return StoredInstance(id=key, owner=owner, use_count=use_count, acquisitions=held)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63


def _kind(value: object) -> str:
    # Described by type, not shown: the file may be anyone's, and large.
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int():
            return "an integer out of range" if value < 0 or value >= 1 << 63 else "an integer"
        case float():
            return "a number with a fraction or exponent"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "an object"
    return type(value).__name__
