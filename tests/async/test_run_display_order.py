"""Issue 14: `fleetkit run --plain` prints lines in the order things happened, each
stamped with the time it happened, whatever order they reached the display in."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import anyio
import pytest
import trio.testing

from fleetkit.cli._run_display import PlainDisplay
from fleetkit.executor import InstanceLedger, JobCounts
from fleetkit.fleet import InstanceDeleted, InstanceReady, InstanceSeen
from fleetkit.jobs import JobResult, JobStatus


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


class _Executor:
    """What the display reads of an executor: its ledger, job counts, instance counts."""

    def __init__(self) -> None:
        self.ledger = InstanceLedger()
        stats = SimpleNamespace(instances={})
        self.fleet = SimpleNamespace(stats=lambda: stats)
        self.fleets = (self.fleet,)
        self.lanes = (SimpleNamespace(name="r"),)

    def counts(self) -> JobCounts:
        return JobCounts(0, 0, 0)


def _stamps(text: str) -> list[tuple[float, str]]:
    found = re.findall(r"^\[\s*([\d.]+)s\] (.*)$", text, flags=re.MULTILINE)
    return [(float(at), line) for at, line in found]


@pytest.mark.anyio
async def test_instance_ready_prints_before_the_jobs_that_ran_on_it() -> None:
    """The ready event is polled after the job's result arrived; it still prints first,
    stamped with its own time, not the poll's."""
    executor = _Executor()
    out = io.StringIO()
    display = PlainDisplay(executor, 1, out)  # type: ignore[arg-type]
    start = anyio.current_time()
    display.begin(start)
    await anyio.sleep(5)
    executor.ledger.record(InstanceSeen(at=start + 1, instance_id="i-1"))
    executor.ledger.record(InstanceReady(at=start + 2, instance_id="i-1"))
    display.finished(
        JobResult(
            job_id=1,
            name="build",
            status=JobStatus.SUCCESS,
            exit_code=0,
            queued_at=start,
            started_at=start + 2.5,
            finished_at=start + 4,
            instance_id="i-1",
            slot=0,
        )
    )
    await anyio.sleep(5)
    display.poll()
    executor.ledger.record(InstanceDeleted(at=start + 6, instance_id="i-1", expected=True))
    display.note("all jobs done")  # at 10s, noted before the deletion at 6s was polled
    display.close()
    lines = _stamps(out.getvalue())
    assert [at for at, _ in lines] == sorted(at for at, _ in lines)
    texts = [text for _, text in lines]
    assert texts.index("instance i-1 ready") < next(
        i for i, t in enumerate(texts) if t.startswith("ok") and "build" in t
    )
    assert (1.0, "instance i-1 created") in lines
    assert (2.0, "instance i-1 ready") in lines
    assert (6.0, "instance i-1 deleted") in lines
    assert lines[-1] == (10.0, "all jobs done")
