"""Job traces: what arrived when, and for how long it ran.

Two formats are read, chosen by content (a JSON array, or CSV text):

* CSV with a header row and the columns ``created_at`` (ISO 8601 with a zone,
  or seconds from the trace's start: one form for the whole file), ``duration``
  (seconds) and, optionally, ``name``. Other columns are ignored.
* GitLab's Jobs API export: a JSON array of job objects. A job arrives when it
  became pending (``started_at - queued_duration``, else ``created_at``) and
  runs ``duration`` seconds (else ``finished_at - started_at``). Jobs that never
  started (canceled, skipped or manual jobs) are not replayed and are counted in
  :attr:`Trace.not_started`.

Every bad row is reported with its line number in one
:class:`~fleetkit.errors.ConfigError`; no row is dropped silently.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs

from fleetkit.errors import ConfigError, Problem

__all__ = ["DEFAULT_START", "Trace", "TraceJob", "parse_trace", "read_trace", "write_csv"]

#: Where a trace given in seconds from its start begins, when nothing says:
#: a Monday at 00:00 UTC, so weekday policies line up with the trace's days.
DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)

#: Bad rows listed in one error before the rest are only counted.
_MAX_LISTED = 20


@attrs.frozen(slots=True)
class TraceJob:
    """One job: it arrives ``arrival`` seconds after the trace's start and runs
    ``duration`` seconds once it has a slot."""

    arrival: float
    duration: float
    name: str = ""


@attrs.frozen
class Trace:
    """Jobs in arrival order, from ``start`` (a zone-aware datetime).

    ``end`` is how long the trace covers in seconds (at least the last
    arrival); ``not_started`` counts jobs of an export that never ran.
    """

    start: datetime
    jobs: tuple[TraceJob, ...]
    end: float = attrs.field()
    not_started: int = 0
    source: str = ""

    @end.default
    def _end(self) -> float:
        return self.jobs[-1].arrival if self.jobs else 0.0

    def between(self, start: float, end: float) -> Trace:
        """The jobs arriving in [``start``, ``end``) seconds, as a trace of its own
        that starts at ``start`` (to tune on one week and check on the next)."""
        jobs = tuple(
            TraceJob(j.arrival - start, j.duration, j.name)
            for j in self.jobs
            if start <= j.arrival < end
        )
        return Trace(
            self.start + timedelta(seconds=start),
            jobs,
            end=max(0.0, min(end, self.end) - start),
            source=self.source,
        )

    @property
    def job_seconds(self) -> float:
        """The sum of the jobs' durations."""
        return math.fsum(j.duration for j in self.jobs)


def read_trace(path: str | Path, *, start: datetime | None = None) -> Trace:
    """Read a CSV or GitLab JSON trace from ``path`` (see the module docs).

    ``start`` anchors a trace in seconds (default :data:`DEFAULT_START`).
    Raises :class:`~fleetkit.errors.ConfigError` listing bad rows by line.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem("", f"cannot read the trace: {exc}")], source=source) from None
    return parse_trace(text, start=start, source=source)


def parse_trace(text: str, *, start: datetime | None = None, source: str = "trace") -> Trace:
    """Parse trace text (CSV or a GitLab JSON export); see :func:`read_trace`."""
    if text.lstrip().startswith("["):
        return _parse_json(text, source)
    return _parse_csv(text, start, source)


def write_csv(trace: Trace, path: str | Path) -> None:
    """Write ``trace`` as CSV with ISO 8601 ``created_at`` (UTC) and ``duration``."""
    with Path(path).open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["created_at", "duration", "name"])
        for job in trace.jobs:
            at = trace.start + timedelta(seconds=job.arrival)
            writer.writerow(
                [
                    at.astimezone(UTC).isoformat(timespec="milliseconds"),
                    f"{job.duration:.3f}",
                    job.name,
                ]
            )


def _fail(problems: list[Problem], source: str, total: int) -> ConfigError:
    listed = problems[:_MAX_LISTED]
    if total > len(listed):
        listed.append(Problem("", f"... and {total - len(listed)} more bad rows"))
    return ConfigError(listed, source=source)


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (write e.g. 2026-01-05T09:00:00Z)")
    return value


def _number(text: object, what: str) -> float:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what} {text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} {text!r} must be a number of seconds >= 0")
    return value


def _parse_csv(text: str, start: datetime | None, source: str) -> Trace:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ConfigError([Problem("line 1", f"unreadable CSV: {exc}")], source=source) from None
    if header is None:
        raise ConfigError([Problem("line 1", "empty trace: expected a CSV header")], source=source)
    columns = [h.strip() for h in header]
    missing = [c for c in ("created_at", "duration") if c not in columns]
    if missing:
        raise ConfigError(
            [
                Problem(
                    "line 1",
                    f"the header lacks {', '.join(missing)} (expected created_at,duration[,name]; "
                    f"found {','.join(columns)})",
                )
            ],
            source=source,
        )
    at_col, dur_col = columns.index("created_at"), columns.index("duration")
    name_col = columns.index("name") if "name" in columns else None
    rows: list[tuple[float | datetime, float, str]] = []
    problems: list[Problem] = []
    bad = 0
    form: str | None = None  # "seconds" or "iso", fixed by the first good row
    for row in _rows(reader, problems, source):
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # blank lines carry no job
        try:
            if len(row) <= max(at_col, dur_col):
                raise ValueError(f"expected at least {max(at_col, dur_col) + 1} columns")
            raw_at = row[at_col].strip()
            try:
                at: float | datetime = _number(raw_at, "created_at")
                this = "seconds"
            except ValueError:
                if not raw_at:
                    raise ValueError("created_at is empty") from None
                try:
                    at = _instant(raw_at)
                except ValueError as exc:
                    raise ValueError(
                        f"created_at is neither seconds nor ISO 8601 with a zone: {exc}"
                    ) from None
                this = "iso"
            if form is None:
                form = this
            elif form != this:
                raise ValueError(
                    f"created_at {raw_at!r} mixes forms: earlier rows use "
                    f"{'seconds from start' if form == 'seconds' else 'ISO 8601'}"
                )
            duration = _number(row[dur_col].strip(), "duration")
            name = row[name_col].strip() if name_col is not None and name_col < len(row) else ""
        except ValueError as exc:
            bad += 1
            problems.append(Problem(f"line {line}", str(exc)))
            continue
        rows.append((at, duration, name or f"job-{len(rows) + 1}"))
    if problems:
        raise _fail(problems, source, bad)
    if form == "iso":
        instants = [r[0] for r in rows if isinstance(r[0], datetime)]
        origin = min(instants)
        jobs = [
            TraceJob((at - origin).total_seconds(), duration, name)
            for at, (_, duration, name) in zip(instants, rows, strict=True)
        ]
        return _trace(origin, jobs, 0, source)
    seconds = [TraceJob(float(at), d, n) for at, d, n in rows if isinstance(at, float)]
    return _trace(start or DEFAULT_START, seconds, 0, source)


def _rows(reader: Any, problems: list[Problem], source: str) -> Iterable[list[str]]:
    """The reader's rows; a row csv cannot read (a NUL, an overlong field) is
    fatal there, as the rest of the file cannot be trusted to line up."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problems.append(Problem(f"line {reader.line_num}", f"unreadable CSV: {exc}"))
            raise _fail(problems, source, len(problems)) from None
        yield row


def _trace(start: datetime, jobs: Iterable[TraceJob], not_started: int, source: str) -> Trace:
    # A stable sort keeps the file's order among jobs that arrive together.
    ordered = tuple(sorted(jobs, key=lambda j: j.arrival))
    if not ordered:
        raise ConfigError([Problem("", "the trace has no jobs")], source=source)
    return Trace(start, ordered, not_started=not_started, source=source)


def _json_elements(text: str, source: str) -> list[tuple[int, Any]]:
    """The array's elements with the line each starts on."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    out: list[tuple[int, Any]] = []
    length = len(text)

    def skip(p: int) -> int:
        while p < length and text[p] in " \t\r\n":
            p += 1
        return p

    try:
        pos = skip(pos)
        if pos < length and text[pos] == "]":
            return out
        while True:
            pos = skip(pos)
            value, end = decoder.raw_decode(text, pos)
            out.append((text.count("\n", 0, pos) + 1, value))
            pos = skip(end)
            if pos < length and text[pos] == ",":
                pos += 1
                continue
            if pos < length and text[pos] == "]":
                break
            raise json.JSONDecodeError("expected ',' or ']'", text, pos)
    except RecursionError:
        line = text.count("\n", 0, pos) + 1
        raise ConfigError(
            [Problem(f"line {line}", "JSON nested too deeply for a job export")], source=source
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [Problem(f"line {exc.lineno}", f"invalid JSON: {exc.msg} (column {exc.colno})")],
            source=source,
        ) from None
    if skip(pos + 1) != length:
        line = text.count("\n", 0, pos) + 1
        raise ConfigError([Problem(f"line {line}", "text after the JSON array")], source=source)
    return out


def _parse_json(text: str, source: str) -> Trace:
    problems: list[Problem] = []
    bad = 0
    rows: list[tuple[datetime, float, str]] = []
    not_started = 0
    for index, (line, job) in enumerate(_json_elements(text, source)):
        where = f"line {line} (job [{index}])"
        try:
            if not isinstance(job, dict):
                raise TypeError("expected a job object")
            if job.get("started_at") is None and job.get("duration") is None:
                not_started += 1  # canceled, skipped or manual: it never took a runner
                continue
            created = job.get("created_at")
            if not isinstance(created, str):
                raise TypeError("created_at is missing (expected an ISO 8601 time)")
            started = job.get("started_at")
            queued = job.get("queued_duration")
            if isinstance(started, str) and queued is not None:
                arrival = _instant(started) - timedelta(seconds=_number(queued, "queued_duration"))
            else:
                arrival = _instant(created)
            if job.get("duration") is not None:
                duration = _number(job["duration"], "duration")
            elif isinstance(started, str) and isinstance(job.get("finished_at"), str):
                duration = (_instant(job["finished_at"]) - _instant(started)).total_seconds()
                if duration < 0:
                    raise ValueError("finished_at is before started_at")
            else:
                raise ValueError("neither duration nor started_at and finished_at")
            name = job.get("name")
            label = f"{job.get('id', index)}:{name}" if name else str(job.get("id", index))
        except (TypeError, ValueError) as exc:
            bad += 1
            problems.append(Problem(where, str(exc)))
            continue
        rows.append((arrival, duration, label))
    if problems:
        raise _fail(problems, source, bad)
    if not rows:
        raise ConfigError([Problem("", "the export has no job that ran")], source=source)
    origin = min(r[0] for r in rows)
    jobs = [TraceJob((r[0] - origin).total_seconds(), r[1], r[2]) for r in rows]
    return _trace(origin, jobs, not_started, source)
