"""Issue 10, the input side, replayed as an attacker or a careless user would: each
test feeds the landed code one hostile input or action through its real entry
point (the ``fleetkit`` command, ``run_job`` over the local connector) and checks
that it is refused with a clean one-line error, or handled, never a traceback.

Item numbers are the issue's. The pure parts (masking, policies, the jobs file,
config loading, the state store) also have unit tests and hypothesis fuzzing
under ``tests/unit``.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from functools import partial
from pathlib import Path

import anyio
import pytest

from fleetkit.connector.local import LocalConnector
from fleetkit.jobs import MASK, Job, JobOptions, JobStatus, MemoryLog, Variable, run_job
from fleetkit.model import ConnectInfo
from tests.integration.executor_support import (
    FLEETKIT,
    local_config,
    run_fleetkit,
    run_on_terminal,
)
from tests.integration.jobs_support import StaticSlot, processes_with
from tests.support import missing

pytestmark = pytest.mark.integration

SECRET = "MASKEDVAL-SECRET-3344"


def _jobs_file(tmp_path: Path, body: str, name: str = "jobs.toml") -> Path:
    path = tmp_path / name
    path.write_text('[defaults]\nshell = "sh"\n' + body)
    return path


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text, text
    assert "Error:" not in text.replace("ERROR:", ""), text


def _wait_for(condition: object, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _start_run(
    config: Path, jobs: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*FLEETKIT, "run", str(config), str(jobs), "--plain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """The output of ``proc`` once it ends; SIGINT (the command deletes what it made)
    if it is still running after a minute."""
    try:
        return proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.communicate()


# --- item 7: a reload that fails leaves the run as it was ---------------------


def test_item_7_sighup_with_a_tzdata_directory_as_timezone_keeps_the_run(
    tmp_path: Path,
) -> None:
    """SIGHUP after the config's timezone became "America" (a tzdata directory): the
    reload is refused with the reason, the running jobs finish, the summary comes."""
    marker = str(7000 + secrets.randbelow(900))
    jobs = _jobs_file(
        tmp_path,
        f'[[job]]\nname = "long"\nparallel = 4\nscript = "echo up; sleep 2.{marker}"\n',
    )
    config = local_config(tmp_path, use_sshd=False, capacity=4, max_instances=1)
    with _start_run(config, jobs) as proc:
        _wait_for(lambda: len(processes_with(f"sleep 2.{marker}")) == 4, "the four jobs")
        text = config.read_text().replace(
            'idle_time = "1m"', 'idle_time = "1m"\n      timezone = "America"'
        )
        config.write_text(text)
        proc.send_signal(signal.SIGHUP)
        out, err = _stop(proc)
    _no_traceback(err)
    assert proc.returncode == 0, err
    assert "reload failed, policies unchanged" in out
    assert "'America' is not an IANA time zone name: it is a region" in out
    assert "4 jobs: 4 ok" in out


# --- item 8: no prefix of a masked value at a timeout or a cancel -------------


def _local_target(tmp_path: Path) -> tuple[LocalConnector, StaticSlot]:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    info = ConnectInfo(id="dir-0", internal_addr=str(sandbox), protocol="local")
    return LocalConnector(), StaticSlot(info.id, 0, info)


def _prints_most_of_the_secret_then_hangs(timeout: timedelta) -> Job:
    # 19 of the 21 characters, no newline, then the job hangs: the stream is cut
    # inside the value by the timeout or the cancel.
    return Job(
        id=8,
        name="leaks",
        shell="sh",
        script='echo ready\nprintf "token=%s" "${TOKEN%??}"\nsleep 600\n',
        variables=[Variable("TOKEN", SECRET, masked=True)],
        timeout=timeout,
    )


@pytest.mark.anyio
async def test_item_8_a_timeout_inside_a_masked_value_leaks_no_prefix(tmp_path: Path) -> None:
    """The job times out after printing 19 of 21 characters of a masked value: the log
    shows the mask, not the characters."""
    connector, slot = _local_target(tmp_path)
    log = MemoryLog()
    job = _prints_most_of_the_secret_then_hangs(timedelta(seconds=2))
    with anyio.fail_after(30):
        result = await run_job(slot, job, connector, log=log, options=JobOptions(kill_grace=0.2))
    assert result.status is JobStatus.TIMED_OUT, log.text
    assert f"token={MASK}" in log.text
    assert SECRET[4:12] not in log.text


@pytest.mark.anyio
async def test_item_8_a_cancel_inside_a_masked_value_leaks_no_prefix(tmp_path: Path) -> None:
    """The same cut by the caller's cancel."""
    connector, slot = _local_target(tmp_path)
    log = MemoryLog()
    job = _prints_most_of_the_secret_then_hangs(timedelta(minutes=5))
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                partial(run_job, slot, job, connector, log=log, options=JobOptions(kill_grace=0.2))
            )
            while "ready" not in log.text:  # noqa: ASYNC110 - the log has no event to wait on
                await anyio.sleep(0.05)
            await anyio.sleep(0.5)  # the printf right after it
            tg.cancel_scope.cancel()
    assert "Job cancelled" in log.text
    assert f"token={MASK}" in log.text
    assert SECRET[4:12] not in log.text


# --- item 19: two fleets never share one state table --------------------------


def _stateful_config(tmp_path: Path, name: str, state: Path) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    storage = (
        f'    [runners.autoscaler.state_storage]\n      enabled = true\n      dir = "{state}"\n'
    )
    return local_config(directory, use_sshd=False, max_instances=1, extra_autoscaler=storage)


def test_item_19_two_configs_with_one_url_and_token_do_not_share_state(tmp_path: Path) -> None:
    """A second run whose config has the same url and token (so the same state
    directory) is refused, naming state.json and the first run's pid; the first
    run is unharmed."""
    state = tmp_path / "state"
    first_config = _stateful_config(tmp_path, "a", state)
    second_config = _stateful_config(tmp_path, "b", state)
    marker = str(1900 + secrets.randbelow(90))
    # The first run's job holds until the second run is over, however slow the
    # machine; the flag lives where a job's login user can see it.
    flags = Path(tempfile.mkdtemp(prefix="fleetkit-test-"))
    flags.chmod(0o755)
    done = flags / "second-run-over"
    hold = f"while [ ! -e {done} ]; do sleep 0.{marker}; done"
    jobs = _jobs_file(tmp_path, f'[[job]]\nname = "holds"\nscript = "{hold}"\n')
    try:
        with _start_run(first_config, jobs) as first:
            _wait_for(lambda: processes_with(f"sleep 0.{marker}"), "the first run's job")
            second = run_fleetkit("run", second_config, jobs, "--plain")
            done.touch()
            out, err = _stop(first)
    finally:
        shutil.rmtree(flags)
    _no_traceback(second.stderr)
    assert second.returncode == 1, second.stderr
    (line,) = second.stderr.strip().splitlines()
    assert "state.json: in use by another fleet" in line
    assert f"pid {first.pid} " in line
    assert first.returncode == 0, err
    assert "1 jobs: 1 ok" in out
    assert os.path.exists(state)


# --- items 12 to 18 through the command: one line, the documented status ------

Case = tuple[str, list[str], int, str]


_NUMBERS = itertools.count()


def _fresh(tmp_path: Path, suffix: str) -> Path:
    return tmp_path / f"input-{next(_NUMBERS)}{suffix}"


def _config_with(tmp_path: Path, old: str, new: str) -> Path:
    base = local_config(tmp_path, use_sshd=False, max_instances=1)
    text = base.read_text()
    assert old in text
    path = _fresh(tmp_path, ".toml")
    path.write_text(text.replace(old, new, 1))
    return path


def _policy(tmp_path: Path, line: str) -> Path:
    return _config_with(tmp_path, 'idle_time = "1m"', f'idle_time = "1m"\n      {line}')


def _plugin(tmp_path: Path, line: str) -> Path:
    return _config_with(tmp_path, "use_sshd = false", f"use_sshd = false\n      {line}")


def _autoscaler(tmp_path: Path, section: str) -> Path:
    base = local_config(tmp_path, use_sshd=False, max_instances=1)
    path = _fresh(tmp_path, ".toml")
    path.write_text(base.read_text() + section)
    return path


def _jobs(tmp_path: Path, body: str | bytes) -> Path:
    path = _fresh(tmp_path, "-jobs.toml")
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text('[defaults]\nshell = "sh"\n' + body)
    return path


def _ok_jobs(tmp_path: Path) -> Path:
    return _jobs_file(tmp_path, '[[job]]\nname = "ok"\nscript = "true"\n', "ok-jobs.toml")


def _validate(config: Path) -> list[str]:
    return ["validate", str(config)]


def _run_with(config: Path, jobs: Path, *options: str) -> list[str]:
    return ["run", *options, str(config), str(jobs), "--plain"]


def _cases(tmp_path: Path) -> dict[str, Case]:
    """Every hostile command line: (item, argv, exit status, what stderr must say)."""
    local = local_config(tmp_path, use_sshd=False, max_instances=1)
    ok = _ok_jobs(tmp_path)
    nested = tmp_path / "nested.toml"
    nested.write_text("a = " + "[" * 3000 + "]" * 3000 + "\n")
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "{b = " * 40 + "1" + "}" * 40 + "\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    key = "[runners.autoscaler.connector_config]\n      use_static_credentials = true\n"
    return {
        # item 12
        "nested TOML": ("12", _validate(nested), 1, "nested more than 32"),
        "nested inline tables": ("12", _validate(deep), 1, "nested more than 32"),
        "tzdata directory": (
            "12",
            _validate(_policy(tmp_path, 'timezone = "America"')),
            1,
            "policy[0].timezone: 'America' is not an IANA time zone name: it is a region",
        ),
        "time zone of 300 characters": (
            "12",
            _validate(_policy(tmp_path, f'timezone = "{"A" * 300}"')),
            1,
            "policy[0].timezone: 'AAAA",
        ),
        "NUL in plugin_config.root": (
            "12",
            _validate(_config_with(tmp_path, 'root = "', 'root = "/tmp/a\\u0000b/')),
            1,
            "plugin_config.root: contains a NUL character",
        ),
        "missing key_path": (
            "12",
            _validate(_autoscaler(tmp_path, f'    {key}      key_path = "{tmp_path}/nokey"\n')),
            1,
            "connector_config.key_path: cannot read the key file",
        ),
        "/dev/zero as key_path": (
            "12",
            _validate(_autoscaler(tmp_path, f'    {key}      key_path = "/dev/zero"\n')),
            1,
            "connector_config.key_path: cannot read the key file /dev/zero: larger than 1 MiB",
        ),
        "integer beyond int64": (
            "12",
            _validate(
                _config_with(tmp_path, "max_instances = 1", "max_instances = 99999999999999999999")
            ),
            1,
            "max_instances: expected an integer within Go's 64-bit range",
        ),
        "/dev/zero as config": ("12", _validate(Path("/dev/zero")), 1, "larger than 16 MiB"),
        "/dev/zero as jobs file": (
            "12",
            _run_with(local, Path("/dev/zero")),
            1,
            "cannot read jobs file: larger than 16 MiB",
        ),
        "huge job timeout": (
            "12",
            _run_with(
                local,
                _jobs(
                    tmp_path, '[[job]]\nname = "x"\nscript = "true"\ntimeout = 10000000000000000\n'
                ),
            ),
            1,
            "job[0].timeout: 10000000000000000 seconds is out of range",
        ),
        "non-UTF-8 jobs file": (
            "12",
            _run_with(local, _jobs(tmp_path, b'[[job]]\nname = "\xff"\nscript = "true"\n')),
            1,
            "not UTF-8 text (byte 16)",
        ),
        "--logs at a file": (
            "12",
            _run_with(local, ok, "--logs", str(a_file)),
            2,
            "is not a directory",
        ),
        "--logs at an unwritable path": (
            "12",
            _run_with(local, ok, "--logs", "/proc/1/fleetkit-logs"),
            2,
            "--logs /proc/1/fleetkit-logs: cannot create the directory",
        ),
        "exec --timeout nan": (
            "12",
            ["exec", "--timeout", "nan", str(local), "--", "true"],
            2,
            "--timeout: expected a number of seconds > 0",
        ),
        # item 13
        "plan --instances 2**63-1": (
            "13",
            ["plan", str(local), "--instances", str(2**63 - 1)],
            2,
            "--instances: expected a count 0..100000",
        ),
        "plan --pending 10**7": (
            "13",
            ["plan", str(local), "--pending", str(10**7)],
            2,
            "--pending: expected a count 0..100000",
        ),
        "plan --at year 1": (
            "13",
            ["plan", str(local), "--at", "0001-01-01T00:00"],
            2,
            "outside the years 1900-9000",
        ),
        # item 14
        "period that never fires": (
            "14",
            _validate(_policy(tmp_path, 'periods = ["0 0 31 2 *"]')),
            1,
            "policy[0].periods: '0 0 31 2 *' never matches",
        ),
        "reversed range": (
            "14",
            _validate(_policy(tmp_path, 'periods = ["* 18-8 * * *"]')),
            1,
            "has the range '18-8', which runs backwards",
        ),
        "reversed weekday names": (
            "14",
            _validate(_policy(tmp_path, 'periods = ["* * * * fri-mon"]')),
            1,
            "has the range 'fri-mon', which runs backwards",
        ),
        "negative connector timeout": (
            "14",
            _validate(
                _autoscaler(
                    tmp_path, '    [runners.autoscaler.connector_config]\n      timeout = "-1s"\n'
                )
            ),
            1,
            "connector_config.timeout: must be >= 0s",
        ),
        "negative idle_time": (
            "14",
            _validate(_config_with(tmp_path, '"1m"', '"-1m"')),
            1,
            "policy[0].idle_time: must be >= 0s",
        ),
        "infinite boot_delay": (
            "14",
            _validate(_plugin(tmp_path, "boot_delay = inf")),
            1,
            "plugin_config.boot_delay: expected a Go duration",
        ),
        "negative job timeout": (
            "14",
            _run_with(
                local, _jobs(tmp_path, '[[job]]\nname = "x"\nscript = "true"\ntimeout = "-1s"\n')
            ),
            1,
            "job[0].timeout: must be > 0s",
        ),
        "exec --timeout 0": (
            "14",
            ["exec", "--timeout", "0", str(local), "--", "true"],
            2,
            "--timeout: expected a number of seconds > 0",
        ),
        "exec --timeout -1": (
            "14",
            ["exec", str(local), "--timeout=-1", "--", "true"],
            2,
            "--timeout: expected a number of seconds > 0",
        ),
        "exec --timeout inf": (
            "14",
            ["exec", "--timeout", "inf", str(local), "--", "true"],
            2,
            "--timeout: expected a number of seconds > 0",
        ),
        # item 15
        "job name with a newline": (
            "15",
            _run_with(
                local, _jobs(tmp_path, '[[job]]\nname = "x\\nERROR: Job failed"\nscript = "true"\n')
            ),
            1,
            "job[0].name: must be one line of text without control characters, got \\n",
        ),
        "job name with an OSC title": (
            "15",
            _run_with(
                local,
                _jobs(tmp_path, '[[job]]\nname = "x\\u001b]0;pwned\\u0007"\nscript = "true"\n'),
            ),
            1,
            "got \\x1b, \\x07",
        ),
        "job name with a bidi override": (
            "15",
            _run_with(
                local, _jobs(tmp_path, '[[job]]\nname = "deploy\\u202eod"\nscript = "true"\n')
            ),
            1,
            "got \\u202e",
        ),
        # item 16
        "--logs through a symlinked directory": (
            "16",
            _run_with(local, ok, "--logs", str(_linked_dir(tmp_path))),
            2,
            "is a symbolic link",
        ),
        "--logs with a planted log link": (
            "16",
            _run_with(local, ok, "--logs", str(_planted_log(tmp_path))),
            2,
            "already holds job logs (job-1-1.log)",
        ),
        "--logs in a world-writable directory": (
            "16",
            _run_with(local, ok, "--logs", "/tmp"),
            2,
            "is writable by others",
        ),
    }


def _linked_dir(tmp_path: Path) -> Path:
    link = tmp_path / "logs-link"
    link.symlink_to("/etc")
    return link


def _planted_log(tmp_path: Path) -> Path:
    logs = tmp_path / "planted"
    logs.mkdir(mode=0o700)
    victim = tmp_path / "root-owned"
    victim.write_text("precious\n")
    (logs / "job-1-1.log").symlink_to(victim)
    return logs


CASE_NAMES = [
    "nested TOML",
    "nested inline tables",
    "tzdata directory",
    "time zone of 300 characters",
    "NUL in plugin_config.root",
    "missing key_path",
    "/dev/zero as key_path",
    "integer beyond int64",
    "/dev/zero as config",
    "/dev/zero as jobs file",
    "huge job timeout",
    "non-UTF-8 jobs file",
    "--logs at a file",
    "--logs at an unwritable path",
    "exec --timeout nan",
    "plan --instances 2**63-1",
    "plan --pending 10**7",
    "plan --at year 1",
    "period that never fires",
    "reversed range",
    "reversed weekday names",
    "negative connector timeout",
    "negative idle_time",
    "infinite boot_delay",
    "negative job timeout",
    "exec --timeout 0",
    "exec --timeout -1",
    "exec --timeout inf",
    "job name with a newline",
    "job name with an OSC title",
    "job name with a bidi override",
    "--logs through a symlinked directory",
    "--logs with a planted log link",
    "--logs in a world-writable directory",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_hostile_command_lines_get_one_clean_error(tmp_path: Path, name: str) -> None:
    """Each hostile input is refused with an error naming it, with the documented exit
    status (1: invalid input, 2: usage), no traceback and nothing started."""
    cases = _cases(tmp_path)
    assert sorted(cases) == sorted(CASE_NAMES)
    _item, argv, status, expected = cases[name]
    done = run_fleetkit(*argv, timeout=60)
    _no_traceback(done.stderr)
    assert done.returncode == status, done.stderr
    assert expected in done.stderr, done.stderr
    assert "instance local-" not in done.stdout


# --- item 15: job output reaches the terminal neutralised, the log file as is --


def test_item_15_escapes_in_job_output_are_shown_as_text_but_logged_as_bytes(
    tmp_path: Path,
) -> None:
    """A failing job prints an OSC title, a clear-screen and a forged line: the
    summary's log tail shows them as escapes, the --logs file keeps the bytes."""
    jobs = _jobs_file(
        tmp_path,
        '[[job]]\nname = "hostile output"\n'
        "script = \"printf '\\\\033]0;pwned\\\\007\\\\033[2Jcleared\\\\rERROR: forged\\\\n'; exit 3\"\n",
    )
    config = local_config(tmp_path, use_sshd=False, max_instances=1)
    logs = tmp_path / "logs"
    done = run_fleetkit("run", config, jobs, "--plain", "--logs", logs)
    _no_traceback(done.stderr)
    assert done.returncode == 1, done.stderr
    assert "\x1b" not in done.stdout
    assert "\x07" not in done.stdout
    assert "\r" not in done.stdout
    assert "| \\x1b]0;pwned\\x07\\x1b[2Jcleared\\rERROR: forged" in done.stdout
    logged = (logs / "job-1-1.log").read_bytes()
    assert b"\x1b]0;pwned\x07\x1b[2Jcleared\rERROR: forged\n" in logged
    assert (logs / "job-1-1.log").stat().st_mode & 0o777 == 0o600
    assert logs.stat().st_mode & 0o777 == 0o700


# --- item 16: a planted link is never written through -------------------------


def test_item_16_a_log_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    """As root, --logs naming a directory another user owns (where they could plant
    links or read along) is refused, and nothing is written there."""
    if os.geteuid() != 0:
        missing("needs root (CI runs as root): the directory must belong to another user")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)  # nobody
    config = local_config(tmp_path, use_sshd=False, max_instances=1)
    done = run_fleetkit("run", config, _ok_jobs(tmp_path), "--plain", "--logs", theirs)
    _no_traceback(done.stderr)
    assert done.returncode == 2, done.stderr
    assert "belongs to uid 65534, not to this user" in done.stderr
    assert list(theirs.iterdir()) == []


def test_item_16_the_planted_link_target_is_untouched(tmp_path: Path) -> None:
    """The file a planted job-1-1.log link points to keeps its content."""
    logs = _planted_log(tmp_path)
    config = local_config(tmp_path, use_sshd=False, max_instances=1)
    done = run_fleetkit("run", config, _ok_jobs(tmp_path), "--plain", "--logs", logs)
    assert done.returncode == 2, done.stderr
    assert (tmp_path / "root-owned").read_text() == "precious\n"


# --- item 18: credential values are described by type only --------------------


def test_item_18_aws_errors_describe_credential_values_by_type(tmp_path: Path) -> None:
    """Wrongly typed credentials_file, profile and endpoint_url: the errors name the
    keys and the types, never the values written there."""
    config = tmp_path / "aws.toml"
    config.write_text(
        """
concurrent = 1
[[runners]]
  name = "aws"
  url = "https://gitlab.example.com"
  token = "glrt-x"
  executor = "instance"
  [runners.autoscaler]
    plugin = "aws"
    max_instances = 1
    [runners.autoscaler.plugin_config]
      name = "group"
      credentials_file = { aws_secret_access_key = "AKIAHOSTILESECRET0001" }
      profile = ["AKIAHOSTILESECRET0002"]
      config_file = 123456789012
      endpoint_url = "ftp://user:AKIAHOSTILESECRET0003@host"
    [runners.autoscaler.connector_config]
      username = "ec2-user"
"""
    )
    done = run_fleetkit("validate", config)
    _no_traceback(done.stderr)
    assert done.returncode == 1, done.stderr
    assert "plugin_config.credentials_file: expected a non-empty string, got a table" in done.stderr
    assert "plugin_config.profile: expected a non-empty string, got an array" in done.stderr
    assert "plugin_config.config_file: expected a non-empty string, got a number" in done.stderr
    assert "plugin_config.endpoint_url" in done.stderr
    assert "AKIAHOSTILESECRET" not in done.stderr + done.stdout
    assert "123456789012" not in done.stderr + done.stdout


# --- item 12: a corrupt state.json, and Ctrl-C while starting ------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\xff\xfe", "not UTF-8 text"),
        (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
        (
            b'{"format":1,"instances":{"i":{"owner":null,"use_count":1e999,"acquisitions":{}}}}',
            "use_count: expected an integer >= 0",
        ),
    ],
    ids=["not UTF-8", "deeply nested", "use_count 1e999"],
)
def test_item_12_a_corrupt_state_file_stops_the_start_cleanly(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    """fleetkit run with a corrupt state.json: one line naming the file, exit 1, no
    instance made."""
    from fleetkit.config import load
    from fleetkit.executor import owner_id

    state = tmp_path / "state"
    config = _stateful_config(tmp_path, "a", state)
    store = state / owner_id(load(config).runners[0], 0)
    store.mkdir(parents=True, mode=0o700)
    (store / "state.json").write_bytes(content)
    done = run_fleetkit("run", config, _ok_jobs(tmp_path), "--plain")
    _no_traceback(done.stderr)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert f"state storage {store / 'state.json'}: not a fleetkit state file (" in line
    assert expected in line
    assert "created" not in done.stdout


_READY_HOOK = """
import os, sys

def _ready(event, args):
    if event == "open" and str(args[0]).endswith("ctrl-c-jobs.toml"):
        os.write(2, b"TEST-READY\\n")

sys.addaudithook(_ready)
"""


def test_item_12_ctrl_c_during_start_up_exits_130_without_a_traceback(tmp_path: Path) -> None:
    """SIGINT at moments spread over start-up (subcommand imports, config, jobs,
    provider, event loop, first instance): every time exit 130, no traceback,
    nothing left running.

    The moments count from the command's first read of its input (the jobs
    file, seen through an audit hook), so that a slow machine does not move them
    into the interpreter's start, where no code of fleetkit's runs yet to catch
    a Ctrl-C.
    """
    marker = str(1200 + secrets.randbelow(90))
    jobs = _jobs_file(
        tmp_path, f'[[job]]\nname = "x"\nscript = "sleep 4.{marker}"\n', "ctrl-c-jobs.toml"
    )
    config = local_config(tmp_path, use_sshd=False, max_instances=1)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_READY_HOOK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), *sys.path])}
    for delay in (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8):
        with _start_run(config, jobs, env=env) as proc:
            assert proc.stderr is not None
            assert proc.stderr.readline() == "TEST-READY\n"
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            _, err = _stop(proc)
        _no_traceback(err)
        assert proc.returncode == 130, (delay, err)
    assert processes_with(f"sleep 4.{marker}") == []
    assert not any((tmp_path / "instances").glob("*/local-*"))


def test_item_15_the_rich_panel_on_a_terminal_gets_no_escape_from_a_job(tmp_path: Path) -> None:
    """On a real terminal (a pty, so the rich panel draws), a job that prints a window
    title and a clear-screen and then fails: its log tail reaches the screen as
    text, never as the sequences themselves."""
    jobs = _jobs_file(
        tmp_path,
        '[[job]]\nname = "hostile output"\n'
        "script = \"printf '\\\\033]0;pwned\\\\007\\\\033[2Jcleared\\\\n'; exit 3\"\n",
    )
    config = local_config(tmp_path, use_sshd=False, max_instances=1)
    status, screen = run_on_terminal("run", config, jobs, columns=160)
    assert status == 1
    assert b"fleetkit run \xc2\xb7" in screen  # the panel was drawn
    assert b"\x1b]0;pwned" not in screen
    assert b"\x07" not in screen
    assert b"\x1b[2Jcleared" not in screen
    assert b"| \\x1b]0;pwned\\x07\\x1b[2Jcleared" in screen
