"""Job and JobResult values: validation, masking in reprs, derived figures."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fleetkit.errors import ConfigError
from fleetkit.jobs import Job, JobResult, JobStatus, Variable


def test_job_takes_a_mapping_of_variables() -> None:
    """A plain mapping becomes unmasked variables, in order."""
    job = Job(id=1, name="j", script="true", variables={"A": "1", "B": "2"})
    assert job.variables == (Variable("A", "1"), Variable("B", "2"))
    assert job.environment() == {"A": "1", "B": "2"}


def test_masked_variable_value_never_appears_in_repr() -> None:
    """The repr of a job with a masked variable shows the name but not the value."""
    job = Job(id=1, name="j", script="true", variables=[Variable("TOKEN", "s3cr3t-v4lue", True)])
    assert "s3cr3t-v4lue" not in repr(job)
    assert "TOKEN" in repr(job)
    assert job.masked_values == ("s3cr3t-v4lue",)


def test_bad_job_reports_every_problem_naming_the_job() -> None:
    """A job with a bad shell, timeout and variable name lists all three, under its name."""
    with pytest.raises(ConfigError) as info:
        Job(
            id=1,
            name="build",
            script="true",
            shell="zsh",
            timeout=timedelta(0),
            variables={"1BAD": "x"},
        )
    paths = [p.path for p in info.value.problems]
    assert paths == ["job 'build'.shell", "job 'build'.timeout", "job 'build'.variables.1BAD"]


def test_duplicate_variable_is_an_error() -> None:
    """The same variable given twice is refused rather than silently overridden."""
    with pytest.raises(ConfigError, match="given twice"):
        Job(id=1, name="j", script="true", variables=[Variable("A", "1"), Variable("A", "2")])


def test_result_figures_and_passed() -> None:
    """wait and duration come from the times; an allowed failure passes, a cancel does not."""
    failed = JobResult(
        job_id=1,
        name="j",
        status=JobStatus.FAILED,
        exit_code=3,
        queued_at=10.0,
        started_at=12.5,
        finished_at=20.0,
        allow_failure=True,
    )
    assert failed.wait == 2.5
    assert failed.duration == 7.5
    assert failed.passed
    assert not failed.ok
    cancelled = JobResult(
        job_id=1,
        name="j",
        status=JobStatus.CANCELLED,
        queued_at=1.0,
        finished_at=2.0,
        allow_failure=True,
    )
    assert cancelled.wait is None
    assert not cancelled.passed


def test_result_to_dict_includes_earlier_attempts() -> None:
    """The JSON view nests the earlier attempts of a retried job."""
    first = JobResult(
        job_id=4,
        name="j",
        status=JobStatus.SYSTEM_FAILURE,
        queued_at=0.0,
        started_at=1.0,
        finished_at=2.0,
        instance_id="i-1",
        slot=0,
        message="instance 'i-1' lost",
    )
    second = JobResult(
        job_id=4,
        name="j",
        status=JobStatus.SUCCESS,
        exit_code=0,
        queued_at=0.0,
        started_at=3.0,
        finished_at=4.0,
        instance_id="i-2",
        slot=1,
        attempt=2,
        earlier=(first,),
    )
    data = second.to_dict()
    assert data["status"] == "success"
    assert data["failure_reason"] is None
    assert data["earlier"][0]["failure_reason"] == "runner_system_failure"
    assert data["attempt"] == 2
    assert [e["instance_id"] for e in data["earlier"]] == ["i-1"]
    assert data["earlier"][0]["status"] == "system_failure"


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (JobStatus.SUCCESS, None),
        (JobStatus.FAILED, "script_failure"),
        (JobStatus.TIMED_OUT, "job_execution_timeout"),
        (JobStatus.CANCELLED, "job_canceled"),
        (JobStatus.SYSTEM_FAILURE, "runner_system_failure"),
    ],
)
def test_failure_reason_uses_gitlabs_names(status: JobStatus, reason: str | None) -> None:
    """Each way a job ends maps to GitLab's failure reason for it."""
    result = JobResult(job_id=1, name="j", status=status, queued_at=0.0, finished_at=1.0)
    assert result.failure_reason == reason


def test_nul_in_script_or_value_is_refused_without_showing_the_value() -> None:
    """A NUL cannot reach a shell: the job is refused, naming the variable, not its value."""
    with pytest.raises(ConfigError) as info:
        Job(id=1, name="j", script="echo\0", variables=[Variable("K", "sec\0ret", masked=True)])
    assert [p.path for p in info.value.problems] == ["job 'j'.script", "job 'j'.variables.K"]
    assert "sec" not in str(info.value)
