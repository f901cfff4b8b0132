"""What ``fleetkit run`` shows while it works: rich on a terminal, plain lines
otherwise, nothing with ``--json``."""

from __future__ import annotations

import argparse
import heapq
import itertools
import logging
import math
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import anyio

from fleetkit._text import printable
from fleetkit.cli._common import seconds
from fleetkit.jobs import JobResult

if TYPE_CHECKING:
    from fleetkit.executor import InstanceExecutor

__all__ = [
    "Display",
    "PlainDisplay",
    "QuietDisplay",
    "RichDisplay",
    "choose_display",
    "warnings_to",
]

_STATES = ("requested", "creating", "running", "ready", "draining", "deleting")
_REFRESH = 0.25
# How long a plain line waits for lines about earlier happenings to catch up.
_REORDER = 1.0
_INSTANCE_ROWS = 12


class Display(Protocol):
    """**Protocol:** what the command tells its display."""

    def begin(self, start: float) -> None:
        """``start`` (runtime clock) is time zero of what is shown."""
        ...

    async def refresh_loop(self, start: float) -> None:
        """Keep the display current until cancelled; ``start`` is time zero."""
        ...

    def finished(self, result: JobResult) -> None:
        """A job finished."""
        ...

    def note(self, text: str) -> None:
        """Something worth a line happened."""
        ...

    def close(self) -> None:
        """Show the last state; idempotent."""
        ...


def choose_display(args: argparse.Namespace, executor: InstanceExecutor, *, total: int) -> Display:
    """rich when stdout is a terminal (and rich is installed), else plain; quiet for --json."""
    if args.json:
        return QuietDisplay()
    if not args.plain and sys.stdout.isatty():
        try:
            import rich  # noqa: F401
        except ImportError:
            pass
        else:
            return RichDisplay(executor, total)
    return PlainDisplay(executor, total, sys.stdout)


def _instances(executor: InstanceExecutor) -> dict[str, int]:
    # Every runner's fleet together.
    counts: dict[str, int] = {}
    for fleet in executor.fleets:
        for state, n in fleet.stats().instances.items():
            counts[state] = counts.get(state, 0) + n
    return {state: counts.get(state, 0) for state in _STATES if counts.get(state, 0)}


def _instance_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{state} {n}" for state, n in counts.items()) or "none"


def _result_line(result: JobResult, now: float, *, runner: bool = False) -> str:
    return f"[{now:6.1f}s] {_result_text(result, runner=runner)}"


def _result_text(result: JobResult, *, runner: bool = False) -> str:
    """The job's line; with ``runner`` (several runners in the run) it names its runner."""
    status = "ok" if result.ok else result.status.value
    if not result.ok and result.allow_failure and result.status.value != "cancelled":
        status += " (allowed)"
    where = f"{result.instance_id} slot {result.slot}" if result.instance_id else "-"
    retried = f", after {len(result.earlier)} system failure(s)" if result.earlier else ""
    return printable(
        f"{status:<16} {result.name:<24} on {where}"
        + (f" ({result.runner})" if runner and result.runner else "")
        + "  "
        f"wait {seconds(result.wait)}  took {seconds(result.duration)}{retried}"
    )


class QuietDisplay:
    """Shows nothing (``--json``)."""

    def begin(self, start: float) -> None:
        """Nothing to show."""

    async def refresh_loop(self, start: float) -> None:
        """Nothing to refresh."""

    def finished(self, result: JobResult) -> None:
        """Nothing to show."""

    def note(self, text: str) -> None:
        """Nothing to show."""

    def close(self) -> None:
        """Nothing to close."""


class PlainDisplay:
    """A line per finished job, per change of the fleet, per note: each stamped with
    the time it happened and printed in that order.

    Things reach the display by different paths (job results at once, instance
    happenings through the fleet's event stream, polled), so lines wait in a
    buffer for :data:`_REORDER` seconds and leave it sorted by their time.
    """

    def __init__(self, executor: InstanceExecutor, total: int, out: TextIO) -> None:
        self.executor = executor
        self.total = total
        self.out = out
        self.start: float | None = None
        self._last_instances: dict[str, int] | None = None
        self._notes_seen = 0
        self._pending: list[tuple[float, int, str]] = []
        self._order = itertools.count()

    def _now(self) -> float:
        return anyio.current_time()

    def begin(self, start: float) -> None:
        """Time zero of the stamps."""
        if self.start is None:
            self.start = start

    def _emit(self, at: float, text: str) -> None:
        heapq.heappush(self._pending, (at, next(self._order), text))

    def _flush(self, upto: float) -> None:
        zero = self.start if self.start is not None else 0.0
        while self._pending and self._pending[0][0] <= upto:
            at, _, text = heapq.heappop(self._pending)
            # Notes carry others' text (job names, provider messages): shown as data.
            print(f"[{at - zero:6.1f}s] {printable(text)}", file=self.out, flush=True)

    async def refresh_loop(self, start: float) -> None:
        """Print the fleet's instance counts and happenings when they change."""
        self.begin(start)
        while True:
            self.poll()
            self._flush(self._now() - _REORDER)
            await anyio.sleep(_REFRESH)

    def poll(self) -> None:
        """Take in what changed since the last poll."""
        for note in self.executor.ledger.notes_since(self._notes_seen):
            self._emit(note.at, f"instance {note.text}")
            self._notes_seen = note.seq
        counts = _instances(self.executor)
        if counts != self._last_instances:
            self._last_instances = counts
            jobs = self.executor.counts()
            self._emit(
                self._now(),
                f"instances: {_instance_text(counts)}; jobs queued {jobs.queued}, "
                f"running {jobs.running}, done {jobs.done}/{self.total}",
            )

    def finished(self, result: JobResult) -> None:
        """One line for the finished job, at the time it finished."""
        several = len(self.executor.lanes) > 1
        self._emit(result.finished_at, _result_text(result, runner=several))

    def note(self, text: str) -> None:
        """A line of its own, now."""
        self._emit(self._now(), text)

    def close(self) -> None:
        """Print everything still waiting, in order."""
        self.poll()
        self._flush(math.inf)


class RichDisplay:
    """A live panel: instances by state, job counts, last jobs and happenings."""

    def __init__(self, executor: InstanceExecutor, total: int) -> None:
        from rich.console import Console
        from rich.live import Live

        self.executor = executor
        self.total = total
        self.start = 0.0
        self.console = Console()
        self.lines: deque[str] = deque(maxlen=10)
        self.notes: deque[str] = deque(maxlen=4)
        self.live = Live(console=self.console, refresh_per_second=8, transient=False)
        self.live.start()
        self._closed = False

    def _now(self) -> float:
        return anyio.current_time() - self.start

    def _render(self) -> Any:
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        counts = _instances(self.executor)
        jobs = self.executor.counts()
        figures = self.executor.figures()
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        bar = "".join(
            {"ready": "[green]■[/]", "draining": "[yellow]■[/]", "deleting": "[red]■[/]"}.get(
                state, "[blue]□[/]"
            )
            * n
            for state, n in counts.items()
        )
        table.add_row("instances", Text.from_markup(f"{bar}  {_instance_text(counts)}"))
        table.add_row(
            "jobs",
            f"queued {jobs.queued} · running {jobs.running} · done {jobs.done}/{self.total}",
        )
        table.add_row(
            "fleet",
            f"{figures.created} created · {figures.deleted} deleted · "
            f"{figures.instance_minutes:.2f} instance-minutes",
        )
        notes = [printable(note.text) for note in list(self.executor.ledger.notes)[-4:]] + [
            printable(n) for n in self.notes
        ]
        body = Group(
            table,
            Text(""),
            *self._instance_rows(),
            Text(""),
            *(Text(line, no_wrap=True, overflow="ellipsis") for line in self.lines),
            Text(""),
            *(Text(f"· {n}", style="dim", no_wrap=True, overflow="ellipsis") for n in notes[-6:]),
        )
        return Panel(body, title=f"fleetkit run · {self._now():.1f}s", border_style="cyan")

    def _instance_rows(self) -> list[Any]:
        """One line per instance: its state and its slots, busy ones filled."""
        from rich.text import Text

        styles = {"ready": "green", "draining": "yellow", "deleting": "red"}
        rows = []
        instances = [
            (fleet.limits.capacity_per_instance, instance)
            for fleet in self.executor.fleets
            for instance in fleet.snapshot().instances
        ]
        for capacity, instance in instances[:_INSTANCE_ROWS]:
            state = instance.state.value
            busy = len(instance.slots_in_use)
            slots = "■" * busy + "□" * max(capacity - busy, 0)
            line = Text(f"  {printable(instance.id):<22} ", no_wrap=True, overflow="ellipsis")
            line.append(f"{state:<9}", style=styles.get(state, "blue"))
            line.append(f" {slots}  {busy}/{capacity} busy, {instance.use_count} jobs so far")
            rows.append(line)
        if len(instances) > _INSTANCE_ROWS:
            rows.append(Text(f"  ... and {len(instances) - _INSTANCE_ROWS} more", style="dim"))
        return rows

    def begin(self, start: float) -> None:
        """Time zero of the panel's clock."""
        self.start = start

    async def refresh_loop(self, start: float) -> None:
        """Redraw the panel a few times a second."""
        self.start = start
        while True:
            self.live.update(self._render())
            await anyio.sleep(_REFRESH)

    def finished(self, result: JobResult) -> None:
        """Add the job's line to the panel."""
        several = len(self.executor.lanes) > 1
        self.lines.append(_result_line(result, self._now(), runner=several))

    def note(self, text: str) -> None:
        """Show a note under the panel's last lines."""
        self.notes.append(text)

    def close(self) -> None:
        """Draw the last frame and stop the live display; idempotent."""
        if not self._closed:
            self._closed = True
            self.live.update(self._render())
            self.live.stop()


class _NoteHandler(logging.Handler):
    def __init__(self, display: Display) -> None:
        super().__init__(logging.WARNING)
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.display.note(f"{record.levelname.lower()}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - logging's own convention: a handler never raises
            self.handleError(record)


@contextmanager
def warnings_to(display: Display) -> Iterator[None]:
    """Show fleetkit's warnings and errors as the display's notes while the block runs,
    instead of as stray lines that would tear a live panel."""
    if isinstance(display, QuietDisplay):
        yield  # --json: warnings stay on stderr, where logging puts them
        return
    logger = logging.getLogger("fleetkit")
    handler = _NoteHandler(display)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
