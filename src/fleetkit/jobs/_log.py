"""Where a job's log goes: the :class:`LogSink` protocol and two sinks.

The log a sink receives is already masked: secrets never reach a sink.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol, Self

__all__ = [
    "OUTPUT_LIMIT",
    "FileLog",
    "LogSink",
    "MemoryLog",
    "TeeLog",
]


class LogSink(Protocol):
    """**Protocol:** receives a job's log text as it is produced."""

    @property
    def location(self) -> str | None:
        """Where the log can be read afterwards (a path), or ``None``."""
        ...

    async def write(self, text: str) -> None:
        """Take the next piece of the log (any length, not split at lines)."""
        ...


class MemoryLog:
    """Keeps the log in memory: all of it, or the last ``limit`` characters."""

    __slots__ = ("_parts", "_size", "limit")

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self._parts: list[str] = []
        self._size = 0

    def __repr__(self) -> str:
        return f"<MemoryLog {self._size} chars>"

    @property
    def location(self) -> None:
        """A memory log has no location."""
        return None

    @property
    def text(self) -> str:
        """The log so far (its tail, when a limit is set)."""
        return "".join(self._parts)

    async def write(self, text: str) -> None:
        """Append ``text``, dropping the oldest text beyond the limit."""
        self._parts.append(text)
        self._size += len(text)
        if self.limit is not None and self._size > self.limit:
            joined = "".join(self._parts)[-self.limit :]
            self._parts = [joined]
            self._size = len(joined)


class FileLog:
    """Writes the log to a new file, mode 0600 (its parent directories are made
    when missing).

    The file is created new and never through a symbolic link: when anything is
    already at ``path`` (a link, or a file someone prepared for fleetkit to
    write into, as root) this raises :class:`FileExistsError`. ``dir_fd``, an
    open directory, makes ``path`` a name inside it (nothing is made then), so
    a caller that checked the directory once keeps writing to that one even if
    its path is swapped. Use as a context manager, or call :meth:`close`.
    """

    __slots__ = ("_file", "path")

    def __init__(self, path: str | Path, *, dir_fd: int | None = None) -> None:
        self.path = Path(path)
        if dir_fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        target = self.path.name if dir_fd is not None else self.path
        fd = os.open(target, flags, 0o600, dir_fd=dir_fd)
        self._file: IO[str] = os.fdopen(fd, "a", encoding="utf-8")

    def __repr__(self) -> str:
        return f"<FileLog {str(self.path)!r}>"

    @property
    def location(self) -> str:
        """The file's path."""
        return str(self.path)

    async def write(self, text: str) -> None:
        """Append ``text`` and flush, so the file can be followed while the job runs."""
        # A local append of a chunk does not block the loop for long; a thread
        # hop per chunk would cost more than the write.
        self._file.write(text)
        self._file.flush()

    def close(self) -> None:
        """Close the file; idempotent."""
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


OUTPUT_LIMIT = 64 * 1024
"""Characters of a job's log kept on its :class:`~fleetkit.jobs.JobResult` (the
last ones; the whole log goes to the attempt's log sink)."""


class TeeLog:
    """Writes to ``sink`` and keeps the last ``limit`` characters in :attr:`tail`,
    for :attr:`JobResult.output <fleetkit.jobs.JobResult.output>`."""

    __slots__ = ("sink", "tail")

    def __init__(self, sink: LogSink, limit: int = OUTPUT_LIMIT) -> None:
        self.sink = sink
        self.tail = MemoryLog(limit=limit)

    @property
    def location(self) -> str | None:
        """The sink's location."""
        return self.sink.location

    async def write(self, text: str) -> None:
        """Keep ``text``'s tail and pass it on."""
        await self.tail.write(text)
        await self.sink.write(text)
