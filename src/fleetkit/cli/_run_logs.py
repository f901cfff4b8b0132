"""The job logs of ``fleetkit run``: a tail in memory for the summary, and a file
per attempt under ``--logs DIR``.

``fleetkit run`` often runs as root, and the jobs whose output fills the logs
are other people's: a log must never land in a file or directory someone else
prepared (a link planted as ``job-1-1.log`` pointing at ``/etc/cron.d/x``, or
a ``--logs /tmp/logs`` that is a link to a system directory). The directory is
checked once (a real directory of this user's, not writable by others; created
0700 when missing) and held open; each file is created new inside it, 0600,
without following links.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from fleetkit.jobs import FileLog, Job, JobResult, LogSink, MemoryLog

__all__ = ["JobLogs", "LogDirectoryError"]

_TAIL_CHARS = 4096
# fleetkit's own lines at the head of every job log, left out of a tail.
_OWN_LINES = ("Running with fleetkit", "Running job ", "Dialing instance ", "Instance ")
_LOG_NAME = re.compile(r"job-\d+-\d+\.log")


class LogDirectoryError(Exception):
    """``--logs DIR`` cannot take the logs; ``str`` says why, without the path."""


class _AttemptLog:
    """One attempt's log: a memory tail, and a file when a directory was given."""

    def __init__(self, file: FileLog | None) -> None:
        self.memory = MemoryLog(limit=_TAIL_CHARS)
        self.file = file

    @property
    def location(self) -> str | None:
        return self.file.location if self.file is not None else None

    async def write(self, text: str) -> None:
        await self.memory.write(text)
        if self.file is not None:
            await self.file.write(text)


class JobLogs:
    """Makes and keeps the log sinks of every attempt (``log_factory`` of the executor).

    Raises :class:`LogDirectoryError` when ``directory`` is not a private
    directory of this user's, cannot be made, or already holds job logs.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._logs: dict[tuple[int, int], _AttemptLog] = {}
        self._dir_fd = None if directory is None else _open_private_directory(directory)

    def __repr__(self) -> str:
        return f"<JobLogs {len(self._logs)} attempts, directory={self.directory}>"

    def open(self, job: Job, attempt: int) -> LogSink:
        """The sink of ``attempt`` of ``job``."""
        file = None
        if self.directory is not None:
            file = FileLog(self.directory / f"job-{job.id}-{attempt}.log", dir_fd=self._dir_fd)
        log = self._logs[(job.id, attempt)] = _AttemptLog(file)
        return log

    def finished(self, result: JobResult) -> None:
        """Close the files of ``result``'s attempts (the tails stay for the summary)."""
        for attempt in (*result.earlier, result):
            log = self._logs.get((attempt.job_id, attempt.attempt))
            if log is not None and log.file is not None:
                log.file.close()

    def tail(self, job_id: int, attempt: int, *, lines: int) -> list[str]:
        """The last ``lines`` lines of an attempt's log, without fleetkit's own last line."""
        log = self._logs.get((job_id, attempt))
        if log is None:
            return []
        # Split at newlines only: a carriage return (or another break
        # splitlines knows) inside a line stays in it, shown escaped.
        text = [
            x for x in log.memory.text.split("\n") if x.strip() and not x.startswith(_OWN_LINES)
        ]
        if text and (text[-1].startswith("ERROR: Job") or text[-1] == "Job succeeded"):
            text = text[:-1]
        return text[-lines:]

    def close(self) -> None:
        """Close every file and the directory; idempotent."""
        for log in self._logs.values():
            if log.file is not None:
                log.file.close()
        fd, self._dir_fd = self._dir_fd, None
        if fd is not None:
            os.close(fd)


def _open_private_directory(directory: Path) -> int:
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        directory.mkdir(mode=0o700)
    except FileExistsError:
        pass  # checked below, whatever it is
    except OSError as exc:
        raise LogDirectoryError(f"cannot create the directory: {exc.strerror}") from None
    except ValueError as exc:  # a NUL in the path
        raise LogDirectoryError(f"not a usable path: {exc}") from None
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(directory):
            reason = "is a symbolic link: name the directory itself"
        elif exc.errno == errno.ENOTDIR:
            reason = "is not a directory"
        else:
            reason = f"cannot open the directory: {exc.strerror}"
        raise LogDirectoryError(reason) from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise LogDirectoryError(
                f"belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()}): "
                "use a directory of your own"
            )
        if st.st_mode & 0o022:
            raise LogDirectoryError(
                f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o}): "
                "use a private directory (chmod go-w)"
            )
        earlier = sorted(n for n in os.listdir(fd) if _LOG_NAME.fullmatch(n))
        if earlier:
            raise LogDirectoryError(
                f"already holds job logs ({earlier[0]}{', ...' if len(earlier) > 1 else ''}): "
                "logs are created new, so choose an empty directory or move them away"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd
