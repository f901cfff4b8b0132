"""Issue 14: the runner's `shell` runs the jobs (sh was ignored: jobs ran in bash), and
pre_build_script / post_build_script run in that shell in GitLab's order and failure rules."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from fleetkit.executor import InstanceExecutor
from fleetkit.jobs import Job, JobResult, JobStatus, LogSink, MemoryLog
from tests.integration.executor_support import local_config

pytestmark = pytest.mark.integration


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _config(tmp_path: Path, runner_lines: str) -> Path:
    path = local_config(tmp_path, use_sshd=False, capacity=4, max_instances=1)
    text = path.read_text().replace(
        'executor = "instance"', 'executor = "instance"\n' + runner_lines, 1
    )
    path.write_text(text)
    return path


async def _run(config: Path, *jobs: Job) -> list[tuple[JobResult, str]]:
    logs: dict[int, MemoryLog] = {}

    def log_factory(job: Job, attempt: int) -> LogSink:
        logs[job.id] = MemoryLog()
        return logs[job.id]

    with anyio.fail_after(60):
        async with InstanceExecutor.from_config(config, log_factory=log_factory) as executor:
            results = [r async for r in executor.submit(jobs)]
    return [(r, logs[r.job_id].text) for r in sorted(results, key=lambda r: r.job_id)]


def _shell_probe(job_id: int) -> Job:
    return Job(id=job_id, name="probe", script='echo "bash=${BASH_VERSION:-none}"')


@pytest.mark.anyio
async def test_shell_sh_runs_jobs_in_sh(tmp_path: Path) -> None:
    """shell = "sh" (the instance executor examples' setting) runs the script in sh."""
    ((result, log),) = await _run(_config(tmp_path, '  shell = "sh"'), _shell_probe(1))
    assert result.status is JobStatus.SUCCESS, log
    assert "bash=none" in log


@pytest.mark.anyio
async def test_no_shell_means_bash(tmp_path: Path) -> None:
    """Without shell, GitLab's instance executor uses bash."""
    ((result, log),) = await _run(_config(tmp_path, ""), _shell_probe(1))
    assert result.status is JobStatus.SUCCESS, log
    assert "bash=none" not in log
    assert "bash=" in log


@pytest.mark.anyio
async def test_pre_and_post_build_scripts_run_around_the_script_in_its_shell(
    tmp_path: Path,
) -> None:
    """pre_build_script, then the script, then post_build_script, in the runner's shell
    with the job's variables; a failing pre-build script fails the job before its script;
    a failing script skips post-build; a failing post-build script fails the job."""
    config = _config(
        tmp_path,
        '  shell = "sh"\n'
        "  pre_build_script = '''echo \"pre $CI_JOB_ID bash=${BASH_VERSION:-none}\"\n"
        "[ \"$CI_JOB_NAME\" != pre-fails ] || exit 3'''\n"
        "  post_build_script = '''echo \"post $CI_JOB_ID\"\n"
        "[ \"$CI_JOB_NAME\" != post-fails ] || exit 4'''\n",
    )
    runs = await _run(
        config,
        Job(id=1, name="fine", script='echo "main 1"'),
        Job(id=2, name="pre-fails", script='echo "main 2"'),
        Job(id=3, name="script-fails", script='echo "main 3"; exit 5'),
        Job(id=4, name="post-fails", script='echo "main 4"'),
    )
    (fine, fine_log), (pre, pre_log), (script, script_log), (post, post_log) = runs
    assert fine.status is JobStatus.SUCCESS, fine_log
    lines = [
        line for line in fine_log.splitlines() if line.split(" ")[0] in {"pre", "main", "post"}
    ]
    assert lines == ["pre 1 bash=none", "main 1", "post 1"]
    assert (pre.status, pre.exit_code) == (JobStatus.FAILED, 3)
    assert "main 2" not in pre_log
    assert "post 2" not in pre_log
    assert (script.status, script.exit_code) == (JobStatus.FAILED, 5)
    assert "main 3" in script_log
    assert "post 3" not in script_log
    assert (post.status, post.exit_code) == (JobStatus.FAILED, 4)
    assert "main 4" in post_log
    assert "post 4" in post_log
