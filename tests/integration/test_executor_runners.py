"""Issue 14: several [[runners]] in one executor, each with its own fleet, under the
global concurrent; a job names its runner (by name or tags), and a job no runner
can take is refused before anything runs."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from fleetkit.errors import ConfigError
from fleetkit.executor import InstanceExecutor
from fleetkit.jobs import Job, JobStatus
from tests.integration.executor_support import run_fleetkit, sandbox_root
from tests.integration.local_provider_support import leftovers

pytestmark = pytest.mark.integration

_RUNNER = """
[[runners]]
  name = "{name}"
  url = "https://gitlab.example.com"
  token = "glrt-{name}"
  executor = "instance"
  shell = "sh"
  {routing}
  [runners.autoscaler]
    plugin = "local"
    capacity_per_instance = 2
    max_instances = 2
    update_interval = "200ms"
    update_interval_when_expecting = "100ms"
    delete_instances_on_shutdown = true
    shutdown_deletion_interval = "100ms"
    shutdown_deletion_retries = 20
    [runners.autoscaler.plugin_config]
      root = "{root}"
      use_sshd = false
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _config(tmp_path: Path, concurrent: int = 3) -> Path:
    root = sandbox_root(tmp_path)
    text = f"concurrent = {concurrent}\n"
    text += _RUNNER.format(name="small", routing="limit = 1", root=root)
    text += _RUNNER.format(name="big", routing='tags = ["big", "linux"]', root=root)
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


_ids = itertools.count(1)


def _job(**kw: object) -> Job:
    job_id = next(_ids)
    return Job(id=job_id, name=f"job {job_id}", script="sleep 0.4", **kw)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_each_runner_has_its_fleet_and_jobs_go_where_they_are_sent(tmp_path: Path) -> None:
    """Jobs by name go to that runner, tagged jobs to the runner with those tags,
    untagged ones to a runner without tags; concurrent caps them all together and a
    runner's limit its own."""
    jobs = [
        *(_job(runner="small") for _ in range(2)),
        *(_job(tags=("big",)) for _ in range(3)),
        _job(),
    ]
    with anyio.fail_after(90):
        async with InstanceExecutor.from_config(_config(tmp_path)) as executor:
            assert [lane.name for lane in executor.lanes] == ["small", "big"]
            assert len({id(f) for f in executor.fleets}) == 2
            results = [r async for r in executor.submit(jobs)]
    by_id = {r.job_id: r for r in results}
    assert all(r.status is JobStatus.SUCCESS for r in results), [r.message for r in results]
    assert [by_id[j.id].runner for j in jobs] == ["small", "small", "big", "big", "big", "small"]
    spans = [(r.started_at, r.finished_at) for r in results]
    assert _most_at_once(spans) <= 3
    small = [(r.started_at, r.finished_at) for r in results if r.runner == "small"]
    assert _most_at_once(small) == 1  # limit = 1
    instances: dict[str, set[str | None]] = {"small": set(), "big": set()}
    for r in results:
        instances[str(r.runner)].add(r.instance_id)
    assert not instances["small"] & instances["big"]
    assert leftovers(sandbox_root(tmp_path)) == []


@pytest.mark.anyio
async def test_a_job_no_runner_takes_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """A job naming an unknown runner, or tags no runner has, fails the whole batch
    at submit: no job runs and no instance is made."""
    jobs = [_job(), _job(runner="gpu"), _job(tags=("windows",))]
    async with InstanceExecutor.from_config(_config(tmp_path)) as executor:
        with pytest.raises(ConfigError) as caught:
            executor.submit(jobs)
        assert executor.counts().done == 0
        assert executor.figures().created == 0
    paths = [p.path for p in caught.value.problems]
    assert paths == [f"job {jobs[1].name!r}.runner", f"job {jobs[2].name!r}.tags"]
    assert "no runner named 'gpu'" in caught.value.problems[0].message


def _most_at_once(spans: Sequence[tuple[float | None, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans if s is not None] + [(f, -1) for _, f in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def test_fleetkit_run_serves_every_runner_and_refuses_an_unroutable_job_first(
    tmp_path: Path,
) -> None:
    """`fleetkit run` with two runners runs each job on its runner and names it; a jobs
    file with a job no runner takes exits 1 before any instance is made."""
    config = _config(tmp_path)
    jobs = tmp_path / "jobs.toml"
    jobs.write_text(
        '[[job]]\nname = "a"\nrunner = "small"\nscript = "true"\n'
        '[[job]]\nname = "b"\ntags = ["linux"]\nscript = "true"\n'
    )
    done = run_fleetkit("run", config, jobs, "--plain")
    assert done.returncode == 0, done.stderr
    assert re.search(r"ok\s+a\s+on local-\S+ slot \d \(small\)", done.stdout), done.stdout
    assert re.search(r"ok\s+b\s+on local-\S+ slot \d \(big\)", done.stdout), done.stdout
    jobs.write_text(jobs.read_text() + '[[job]]\nname = "c"\ntags = ["gpu"]\nscript = "true"\n')
    refused = run_fleetkit("run", config, jobs, "--plain")
    assert refused.returncode == 1
    assert "job 'c'.tags: no runner has every tag of ['gpu']" in refused.stderr
    assert "instance" not in refused.stdout
    assert leftovers(sandbox_root(tmp_path)) == []


def test_the_two_runner_example_runs() -> None:
    """examples/runners.toml with its jobs file: each job on its runner, in its shell, with
    the runner's pre- and post-build scripts."""
    examples = Path(__file__).parents[2] / "examples"
    done = run_fleetkit(
        "run", examples / "runners.toml", examples / "runners-jobs.toml", "--plain", "--json"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    runners = {job["name"]: job["runner"] for job in report["jobs"]}
    assert {runners[f"compile {i}/3"] for i in (1, 2, 3)} == {"builder"}
    assert {runners[f"unit tests {i}/4"] for i in (1, 2, 3, 4)} == {"tester"}
    assert report["summary"]["ok"] == 7
