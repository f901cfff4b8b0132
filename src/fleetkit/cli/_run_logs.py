"""The job logs of ``fleetkit run``: a tail in memory for the summary, and a file
per attempt under ``--logs DIR``."""

from __future__ import annotations

from pathlib import Path

from fleetkit.jobs import FileLog, Job, JobResult, LogSink, MemoryLog

__all__ = ["JobLogs"]

_TAIL_CHARS = 4096
# fleetkit's own lines at the head of every job log, left out of a tail.
_OWN_LINES = ("Running with fleetkit", "Running job ", "Dialing instance ", "Instance ")


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
    """Makes and keeps the log sinks of every attempt (``log_factory`` of the executor)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._logs: dict[tuple[int, int], _AttemptLog] = {}

    def __repr__(self) -> str:
        return f"<JobLogs {len(self._logs)} attempts, directory={self.directory}>"

    def open(self, job: Job, attempt: int) -> LogSink:
        """The sink of ``attempt`` of ``job``."""
        file = None
        if self.directory is not None:
            file = FileLog(self.directory / f"job-{job.id}-{attempt}.log")
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
        text = [
            x for x in log.memory.text.splitlines() if x.strip() and not x.startswith(_OWN_LINES)
        ]
        if text and (text[-1].startswith("ERROR: Job") or text[-1] == "Job succeeded"):
            text = text[:-1]
        return text[-lines:]

    def close(self) -> None:
        """Close every file; idempotent."""
        for log in self._logs.values():
            if log.file is not None:
                log.file.close()
