"""InstanceExecutor with VM isolation: the image check before any slot, in virtual time.

The security hole of issue 11: with ``vm_isolation`` on, a job whose image is
outside ``allowed_images`` ran on the host. Now it fails before a slot is
taken, and nothing of it runs anywhere.
"""

from __future__ import annotations

import pytest
import trio.testing

from fleetkit.executor import InstanceExecutor
from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.isolation import IsolationSettings, Isolator
from fleetkit.jobs import Job, JobStatus, MemoryLog, Variable
from fleetkit.model import Limits
from fleetkit.policy import Policy
from fleetkit.testing.connector import FakeConnector
from fleetkit.testing.simulated import SimulatedGroup

SETTINGS = FleetSettings(update_interval=10.0, delete_instances_on_shutdown=True)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def _isolator() -> Isolator:
    return Isolator(
        IsolationSettings(
            nesting_host="unix:nesting.sock",
            image="default",
            allowed_images=("default", "ubuntu:*"),
        )
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("image", "variables", "shown"),
    [
        ("evil/root", {}, "'evil/root'"),
        ("ubuntu:$TAG", {"TAG": "24.04/../../evil"}, "'ubuntu:24.04/../../evil'"),
    ],
)
async def test_a_refused_image_fails_the_job_before_any_slot_and_runs_nothing(
    image: str, variables: dict[str, str], shown: str
) -> None:
    """The job fails with a message naming the (expanded) image and the
    patterns; no instance is asked for, no command runs anywhere."""
    group = SimulatedGroup(seed=3)
    fleet = Fleet(group, Limits(max_instances=2), Policy(idle_count=0), settings=SETTINGS)
    fake = FakeConnector()
    logs: list[MemoryLog] = []

    def log_factory(job: Job, attempt: int) -> MemoryLog:
        logs.append(MemoryLog())
        return logs[-1]

    job = Job(
        id=7,
        name="smuggle",
        script="touch /tmp/escaped",
        image=image,
        variables=variables,
        allow_failure=True,
    )
    async with InstanceExecutor(
        fleet, fake, isolator=_isolator(), log_factory=log_factory
    ) as executor:
        result = await executor.run(job)
    assert result.status is JobStatus.FAILED
    assert result.passed  # allow_failure: the run as a whole can still pass
    assert result.started_at is None
    assert result.instance_id is None
    assert shown in (result.message or "")
    assert "allowed_images ['default', 'ubuntu:*']" in (result.message or "")
    assert fake.calls == []
    assert fake.connects == []
    assert group.live_ids() == []
    assert "ERROR: Job failed: job 7 ('smuggle'): image" in logs[0].text


@pytest.mark.anyio
async def test_a_masked_variable_in_a_refused_image_is_not_shown() -> None:
    """A secret that a variable put into the image name never reaches the result."""
    fleet = Fleet(SimulatedGroup(seed=4), Limits(max_instances=1), Policy(), settings=SETTINGS)
    job = Job(
        id=8,
        name="leak",
        script="true",
        image="registry/$TOKEN",
        variables=[Variable("TOKEN", "hunter2-secret", masked=True)],
    )
    async with InstanceExecutor(fleet, FakeConnector(), isolator=_isolator()) as executor:
        result = await executor.run(job)
    assert result.status is JobStatus.FAILED
    assert "hunter2-secret" not in (result.message or "")
    assert "registry/[MASKED]" in (result.message or "")
