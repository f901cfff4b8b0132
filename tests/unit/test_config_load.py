"""Loading realistic configs, and every kind of mistake caught with its path and a suggestion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleetkit.config import ScaleThrottle, StateStorage, check, load
from fleetkit.errors import ConfigError, Problem
from fleetkit.model import ConnectorConfig
from fleetkit.policy import DEFAULT_POLICY, Policy

CONFIGS = Path(__file__).parent / "configs"

RUNNER = """
concurrent = 10
[[runners]]
  name = "r"
  executor = "instance"
  token = "glrt-secret-token-value"
  [runners.autoscaler]
    plugin = "aws"
    max_instances = 10
"""


def problems(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return list(caught.value.problems)


def only_problem(text: str) -> Problem:
    (found,) = problems(text)
    return found


# --- realistic configs --------------------------------------------------------


def test_hetzner_with_throttle_state_storage_and_opaque_sections() -> None:
    """A full config loads every autoscaler key and keeps other executors' sections."""
    config = load(CONFIGS / "docker-autoscaler-hetzner.toml")
    assert config.concurrent == 20
    assert config.extra == {"check_interval": 3, "log_level": "info"}
    (runner,) = config.runners
    assert (runner.id, runner.limit, runner.request_concurrency) == (4242, 20, 4)
    assert runner.extra["docker"] == {
        "image": "busybox:latest",
        "privileged": False,
        "volumes": ["/cache"],
    }
    assert runner.extra["cache"]["s3"]["BucketName"] == "runner-cache"
    assert runner.extra["environment"] == ["FF_USE_FASTZIP=true"]
    assert runner.feature_flags == {"FF_USE_FLEETING_ACQUIRE_HEARTBEATS": True}
    assert runner.feature_flag("FF_USE_FLEETING_ACQUIRE_HEARTBEATS")
    scaler = runner.autoscaler
    assert scaler is not None
    assert scaler.plugin == "hetznercloud/hetzner:latest"
    assert scaler.plugin_config["volumes"] == [{"size": 50, "format": "ext4"}]
    assert scaler.plugin_config["private_networks"] == []
    assert scaler.instance_acquire_timeout == timedelta(minutes=10)
    # An integer duration is nanoseconds, as Go's TOML decoders read it.
    assert scaler.update_interval == timedelta(seconds=30)
    assert scaler.update_interval_when_expecting == timedelta(seconds=1)
    # "0s" is Go's zero value: taskscaler's default applies.
    assert scaler.deletion_retry_interval == timedelta(minutes=1)
    assert scaler.failure_threshold == 5
    assert scaler.reservation_throttling is False
    assert scaler.delete_instances_on_shutdown is True
    assert scaler.log_internal_ip is True
    assert scaler.instance_creation_time_buckets == (30.0, 60.0, 120.0, 300.0)
    assert scaler.scale_throttle == ScaleThrottle(limit=1, burst=10)
    assert scaler.state_storage == StateStorage(
        enabled=True, dir="/var/lib/gitlab-runner/taskscaler", keep_instance_with_acquisitions=True
    )
    assert scaler.connector_config == ConnectorConfig(use_external_addr=True)
    assert scaler.policy == (
        Policy(periods=("* * * * *",), idle_count=0, idle_time=timedelta(0)),
        Policy(
            periods=("* 7-19 * * mon-fri",),
            timezone="Europe/Berlin",
            idle_count=8,
            idle_time=timedelta(minutes=20),
            scale_factor=0.5,
            scale_factor_limit=12,
        ),
    )
    # Issue 14: request_concurrency was accepted in silence; it means nothing here.
    assert [w.path for w in config.warnings] == ["runners[0].request_concurrency"]
    assert "4 has no effect" in config.warnings[0].message


def test_periods_with_time_zones_pick_the_active_policy() -> None:
    """The schedule evaluates each policy's periods in its own time zone."""
    scaler = load(CONFIGS / "docker-autoscaler-hetzner.toml").runners[0].autoscaler
    assert scaler is not None
    office, anytime = scaler.policy[1], scaler.policy[0]
    schedule = scaler.schedule()
    # 06:30 UTC on a Monday in March is 07:30 in Berlin: office hours.
    assert schedule.active(datetime(2026, 3, 2, 6, 30, tzinfo=UTC)) is office
    # 18:30 UTC is 19:30 in Berlin (still 7-19); 19:00 UTC is 20:00 there.
    assert schedule.active(datetime(2026, 3, 2, 18, 30, tzinfo=UTC)) is office
    assert schedule.active(datetime(2026, 3, 2, 19, 0, tzinfo=UTC)) is anytime
    assert schedule.active(datetime(2026, 3, 1, 9, 0, tzinfo=UTC)) is anytime  # Sunday


def test_windows_shell_is_refused_until_windows_instances_run() -> None:
    """shell = "pwsh" was accepted and jobs ran in bash; now it is refused by name, and
    the rest of the Windows config (WinRM) still reads, so nothing else hides."""
    found = check(CONFIGS / "windows-winrm.toml")
    (problem,) = found.problems
    assert problem.path == "runners[0].shell"
    assert "'pwsh' is a Windows shell" in problem.message
    assert 'use shell = "bash" or "sh"' in problem.message


@pytest.mark.parametrize("shell", ["powershell", "pwsh", "cmd"])
def test_every_windows_shell_is_refused(shell: str) -> None:
    """Each Windows shell GitLab knows is refused with the key's path."""
    text = RUNNER.replace('executor = "instance"', f'executor = "instance"\n  shell = "{shell}"')
    found = only_problem(text)
    assert found.path == "runners[0].shell"
    assert "Windows" in found.message


def test_an_unknown_shell_is_refused() -> None:
    """A shell GitLab has not got (zsh) is refused with what is expected."""
    text = RUNNER.replace('executor = "instance"', 'executor = "instance"\n  shell = "zsh"')
    assert only_problem(text) == Problem(
        "runners[0].shell", "expected 'bash' or 'sh' (GitLab Runner's shells for Linux), got 'zsh'"
    )


def test_macos_with_vm_isolation() -> None:
    """VM isolation keeps nesting_config as a mapping and its own connector config."""
    (runner,) = load(CONFIGS / "macos-vm-isolation.toml").runners
    assert runner.instance is not None
    assert runner.instance.allowed_images == ("macos-sonoma-*", "registry.example.com/**")
    assert runner.instance.use_common_build_dir is True
    scaler = runner.autoscaler
    assert scaler is not None
    vm = scaler.vm_isolation
    assert vm.enabled is True
    assert vm.image == "macos-sonoma-base"
    assert vm.nesting_config == {"vm_cpu": 4, "api_key": "nesting-api-secret"}
    assert vm.connector_config == ConnectorConfig(
        username="admin", password="nested-vm-password", timeout=timedelta(minutes=20)
    )
    (policy,) = scaler.policy
    assert policy.timezone == "America/Los_Angeles"
    # 09:00 UTC is 01:00 in Los Angeles: outside 6-20, so the default policy applies.
    assert scaler.schedule().active(datetime(2026, 3, 2, 9, 0, tzinfo=UTC)) is DEFAULT_POLICY
    assert scaler.schedule().active(datetime(2026, 3, 2, 17, 0, tzinfo=UTC)) is policy


def test_several_runners_and_a_runner_fleetkit_does_not_drive() -> None:
    """Every runner loads; only the autoscaler ones are driven, global keys are kept."""
    config = load(CONFIGS / "several-runners.toml")
    assert [r.name for r in config.runners] == ["linux instances", "gcp docker", "plain docker"]
    assert [i for i, _ in config.autoscaled_runners()] == [0, 1]
    (left_out,) = config.warnings
    assert left_out.path == "runners[2].executor"
    plain = config.runners[2]
    assert plain.autoscaler is None
    assert plain.extra == {"docker": {"image": "python:3.12"}}
    assert config.extra == {
        "listen_address": "127.0.0.1:9252",
        "shutdown_timeout": 30,
        "session_server": {"session_timeout": 1800},
    }
    gcp = config.runners[1].autoscaler
    assert gcp is not None
    weekday, weekend = gcp.policy
    assert gcp.schedule().active(datetime(2026, 3, 7, 12, 0, tzinfo=UTC)) is weekend  # Saturday
    assert gcp.schedule().active(datetime(2026, 3, 6, 23, 59, tzinfo=UTC)) is weekday


def test_load_reads_text_and_path_alike() -> None:
    """A str of TOML, a str path and a Path give the same config."""
    path = CONFIGS / "macos-vm-isolation.toml"
    assert load(path.read_text()) == load(str(path)) == load(path)


def test_capacity_left_out_means_one() -> None:
    """capacity_per_instance missing means 1 slot per instance."""
    scaler = load(RUNNER).runners[0].autoscaler
    assert scaler is not None
    assert scaler.capacity_per_instance == 1


# --- mistakes: keys -----------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "path", "message"),
    [
        (
            "[runners.autoscaler.connector_config]",
            "key_file",
            "runners[0].autoscaler.connector_config.key_file",
            "is not a key of [runners.autoscaler.connector_config] (did you mean 'key_path'?)",
        ),
        (
            "[[runners.autoscaler.policy]]",
            "preemtive_mode",
            "runners[0].autoscaler.policy[0].preemtive_mode",
            "is not a key of [[runners.autoscaler.policy]] (did you mean 'preemptive_mode'?)",
        ),
        (
            "[runners.instance]",
            "allowed_image",
            "runners[0].instance.allowed_image",
            "is not a key of [runners.instance] (did you mean 'allowed_images'?)",
        ),
        (
            "[runners.autoscaler.vm_isolation]",
            "nesting_hosts",
            "runners[0].autoscaler.vm_isolation.nesting_hosts",
            "is not a key of [runners.autoscaler.vm_isolation] (did you mean 'nesting_host'?)",
        ),
    ],
)
def test_unknown_key_in_owned_section_is_an_error_with_suggestion(
    section: str, key: str, path: str, message: str
) -> None:
    """A misspelt key in a section fleetkit owns is an error that suggests the right key."""
    assert only_problem(f"{RUNNER}\n{section}\n{key} = true\n") == Problem(path, message)


def test_unknown_autoscaler_key_suggests_or_points_to_plugin_config() -> None:
    """Under [runners.autoscaler] a typo gets a suggestion, a plugin setting a pointer."""
    text = RUNNER + "    max_instance = 4\n    region = 'eu-west-1'\n"
    assert problems(text) == [
        Problem(
            "runners[0].autoscaler.max_instance",
            "is not a key of [runners.autoscaler] (did you mean 'max_instances'?)",
        ),
        Problem(
            "runners[0].autoscaler.region",
            "is not a key of [runners.autoscaler]; plugin settings go in "
            "[runners.autoscaler.plugin_config]",
        ),
    ]


def test_key_in_the_wrong_owned_section_says_where_it_belongs() -> None:
    """A policy key written under [runners.autoscaler] is pointed to the policy section."""
    assert only_problem(RUNNER + "    idle_count = 4\n") == Problem(
        "runners[0].autoscaler.idle_count",
        "is not a key of [runners.autoscaler]; it belongs in [[runners.autoscaler.policy]]",
    )


def test_autoscaler_keys_directly_under_runners_say_where_they_belong() -> None:
    """plugin, instance_ready_command and idle_time under [[runners]] are errors naming their section."""
    text = """
[[runners]]
  executor = "instance"
  plugin = "aws"
  instance_ready_command = "true"
  idle_time = "5m"
  [runners.autoscaler]
    max_instances = 2
"""
    assert problems(text) == [
        Problem(
            "runners[0].plugin", "belongs in [runners.autoscaler], not directly under [[runners]]"
        ),
        Problem(
            "runners[0].instance_ready_command",
            "belongs in [runners.autoscaler], not directly under [[runners]]",
        ),
        Problem(
            "runners[0].idle_time",
            "belongs in [[runners.autoscaler.policy]], not directly under [[runners]]",
        ),
        Problem(
            "runners[0].autoscaler.plugin",
            'is missing: name the fleeting plugin, e.g. plugin = "aws"',
        ),
    ]


def test_unknown_runner_and_global_keys_are_warnings_with_suggestions() -> None:
    """GitLab keys fleetkit does not model pass quietly; unknown ones warn with a suggestion."""
    text = "check_interval = 3\nlog_levle = 'debug'\n" + RUNNER.replace(
        '  name = "r"', '  name = "r"\n  request_concurency = 4\n  output_limit = 8192'
    )
    config = load(text)
    assert config.warnings == (
        Problem(
            "log_levle",
            "is not a GitLab Runner global key; kept but not used (did you mean 'log_level'?)",
        ),
        Problem(
            "runners[0].request_concurency",
            "is not a GitLab Runner key; kept but not used (did you mean 'request_concurrency'?)",
        ),
    )
    assert config.runners[0].extra == {"request_concurency": 4, "output_limit": 8192}


def test_runner_and_autoscaler_keys_at_the_top_level_say_where_they_belong() -> None:
    """executor or max_instances written above every [[runners]] is an error naming its section."""
    assert problems('executor = "instance"\nmax_instances = 3\n' + RUNNER) == [
        Problem("executor", "belongs in [[runners]], not at the top level"),
        Problem("max_instances", "belongs in [runners.autoscaler], not at the top level"),
    ]


# --- mistakes: executors and sections ----------------------------------------


def test_autoscaler_section_with_a_non_autoscaler_executor() -> None:
    """A runner with [runners.autoscaler] and executor docker is not an autoscaler executor."""
    assert only_problem(RUNNER.replace('"instance"', '"docker"')) == Problem(
        "runners[0].executor",
        "'docker' is not an autoscaler executor: a runner with [runners.autoscaler] needs "
        'executor = "instance" for fleetkit',
    )


def test_docker_autoscaler_is_refused_by_name() -> None:
    """docker-autoscaler ran jobs on the host like instance, with no container: now it is
    refused, saying why and what to use instead."""
    found = only_problem(RUNNER.replace('"instance"', '"docker-autoscaler"'))
    assert found.path == "runners[0].executor"
    assert "runs each job in a Docker container" in found.message
    assert "fleetkit does not run containers" in found.message
    assert 'use executor = "instance"' in found.message


def test_docker_autoscaler_refusal_keeps_the_runners_other_warnings() -> None:
    """The refusal does not hide what else the runner has: its warnings come in the same run."""
    text = RUNNER.replace('"instance"', '"docker-autoscaler"').replace(
        "concurrent = 10", "concurrent = 2"
    )
    found = check(text)
    assert [p.path for p in found.problems] == ["runners[0].executor"]
    assert [w.path for w in found.warnings] == ["concurrent"]


def test_unregistered_executor_gets_a_suggestion() -> None:
    """executor = "docker+autoscaler" is not an executor at all, and the fix is suggested."""
    found = only_problem('[[runners]]\nexecutor = "docker+autoscaler"\n')
    assert found.path == "runners[0].executor"
    assert "not a GitLab Runner executor" in found.message
    assert "did you mean 'docker-autoscaler'?" in found.message


def test_autoscaler_executor_without_autoscaler_section() -> None:
    """executor instance without [runners.autoscaler] is an error at runners[i].autoscaler."""
    assert only_problem('[[runners]]\nexecutor = "instance"\n') == Problem(
        "runners[0].autoscaler",
        "is missing: executor 'instance' needs a [runners.autoscaler] section with at least plugin",
    )


def test_runners_written_as_a_table_is_a_fragment() -> None:
    """[runners.autoscaler] without [[runners]] is a fragment; its keys are still checked."""
    text = "[runners.autoscaler]\nplugin = 'aws'\n[runners.autoscaler.connector_config]\nkey_file = 'k'\n"
    fragment, typo = problems(text)
    assert fragment.path == "runners"
    assert "expected an array of tables ([[runners]]), got a table" in fragment.message
    assert typo == Problem(
        "runners.autoscaler.connector_config.key_file",
        "is not a key of [runners.autoscaler.connector_config] (did you mean 'key_path'?)",
    )


def test_a_config_with_nothing_to_drive_warns() -> None:
    """A config whose runners use no autoscaler executor loads with warnings: the runner
    is left out, and there is nothing to drive."""
    config = load('[[runners]]\nexecutor = "shell"\n')
    assert [w.path for w in config.warnings] == ["runners[0].executor", "runners"]
    assert "fleetkit runs only executor" in config.warnings[0].message


# --- mistakes: values ---------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "path", "message"),
    [
        ("capacity_per_instance = 0", "capacity_per_instance", "must be >= 1"),
        ("max_use_count = -1", "max_use_count", "must be >= 0, got -1"),
        ("max_use_count = '10'", "max_use_count", "expected an integer, got '10' (a string)"),
        ("max_use_count = 1.5", "max_use_count", "expected an integer, got 1.5"),
        ("log_internal_ip = 1", "log_internal_ip", "expected true or false, got 1"),
        ("update_interval = '-5s'", "update_interval", "must be > 0s"),
        ("update_interval = 'soon'", "update_interval", "'soon' is not a Go duration"),
        ("update_interval = 1.5", "update_interval", "expected a Go duration"),
        ("instance_creation_time_buckets = [5, 1]", "instance_creation_time_buckets", "increasing"),
        (
            "instance_creation_time_buckets = ['a']",
            "instance_creation_time_buckets[0]",
            "expected a number",
        ),
        ("plugin_config = 'name=x'", "plugin_config", "expected a table"),
        ("policy = {idle_count = 1}", "policy", "expected an array of tables"),
    ],
)
def test_bad_autoscaler_values_name_path_value_and_expectation(
    line: str, path: str, message: str
) -> None:
    """Each bad value is reported at its TOML path with the value and what was expected."""
    found = only_problem(f"{RUNNER}    {line}\n")
    assert found.path == f"runners[0].autoscaler.{path}"
    assert message in found.message


@pytest.mark.parametrize(
    ("line", "path", "message"),
    [
        ("idle_count = -1", "idle_count", "must be >= 0, got -1"),
        ("idle_time = '-5m'", "idle_time", "must be >= 0s"),
        ("scale_factor = -0.5", "scale_factor", "must be a finite number >= 0"),
        ("scale_factor = nan", "scale_factor", "must be a finite number >= 0"),
        ("periods = ['* * *']", "periods", "'* * *' is not a 5-field cron expression"),
        ("periods = '* * * * *'", "periods", "expected an array of strings"),
        ("periods = ['* * * * *', 7]", "periods[1]", "expected a string, got 7"),
        ("timezone = 'Mars/Olympus'", "timezone", "'Mars/Olympus' is not an IANA time zone name"),
        ("preemptive_mode = 'yes'", "preemptive_mode", "expected true or false"),
    ],
)
def test_bad_policy_values(line: str, path: str, message: str) -> None:
    """Policy values are checked by fleetkit.policy's validators, reported at the policy path."""
    text = f"{RUNNER}\n[[runners.autoscaler.policy]]\nidle_count = 1\n"
    text += f"\n[[runners.autoscaler.policy]]\n{line}\n"
    found = only_problem(text)
    assert found.path == f"runners[0].autoscaler.policy[1].{path}"
    assert message in found.message


@pytest.mark.parametrize(
    ("line", "path", "message"),
    [
        ("protocol = 'telnet'", "protocol", "'telnet' is not a connector protocol"),
        ("protocol_port = 70000", "protocol_port", "must be a TCP port 0-65535"),
        ("timeout = '5 minutes'", "timeout", "unknown unit"),
        ("use_external_addr = 'true'", "use_external_addr", "expected true or false"),
    ],
)
def test_bad_connector_values(line: str, path: str, message: str) -> None:
    """Connector values are checked for both the host and the nested VM connector."""
    for section, prefix in [
        ("[runners.autoscaler.connector_config]", "connector_config"),
        ("[runners.autoscaler.vm_isolation.connector_config]", "vm_isolation.connector_config"),
    ]:
        found = only_problem(f"{RUNNER}\n{section}\n{line}\n")
        assert found.path == f"runners[0].autoscaler.{prefix}.{path}"
        assert message in found.message


def test_scale_throttle_limit_minus_one_is_unlimited_but_less_is_an_error() -> None:
    """scale_throttle.limit = -1 means unlimited; -2 is an error."""
    ok = load(f"{RUNNER}\n[runners.autoscaler.scale_throttle]\nlimit = -1\n")
    assert ok.runners[0].autoscaler is not None
    assert ok.runners[0].autoscaler.scale_throttle.limit == -1
    found = only_problem(f"{RUNNER}\n[runners.autoscaler.scale_throttle]\nlimit = -2\n")
    assert found.path == "runners[0].autoscaler.scale_throttle.limit"


def test_concurrent_zero_is_an_error() -> None:
    """concurrent = 0 is refused, as GitLab Runner refuses it."""
    assert only_problem(RUNNER.replace("concurrent = 10", "concurrent = 0")).path == "concurrent"


def test_every_problem_is_reported_in_one_run() -> None:
    """Problems in several runners and sections all come back from one load, runner by runner."""
    text = """
concurrent = "ten"
[[runners]]
  executor = "instance"
  limit = -1
  [runners.autoscaler]
    plugin = "aws"
    capacity_per_instance = 0
    [[runners.autoscaler.policy]]
      idle_time = "20 minutes"
[[runners]]
  executor = "docker-autoscaler"
  [runners.autoscaler]
    max_instances = "5"
"""
    assert [p.path for p in problems(text)] == [
        "concurrent",
        "runners[0].limit",
        "runners[0].autoscaler.capacity_per_instance",
        "runners[0].autoscaler.policy[0].idle_time",
        "runners[1].executor",
        "runners[1].autoscaler.plugin",
        "runners[1].autoscaler.max_instances",
    ]


# --- warnings ------------------------------------------------------------------


def test_concurrent_below_reachable_capacity_warns() -> None:
    """concurrent below max_instances x capacity warns that capacity is unreachable."""
    config = load(RUNNER.replace("concurrent = 10", "concurrent = 4"))
    (warning,) = config.warnings
    assert warning.path == "concurrent"
    assert "max_instances 10 x capacity_per_instance 1 = 10 slots" in warning.message


def test_concurrent_below_the_sum_of_several_runners_warns() -> None:
    """Two runners that each fit under concurrent but not together get a warning."""
    config = load(RUNNER + RUNNER.replace("concurrent = 10", ""))
    (warning,) = config.warnings
    assert warning.path == "concurrent"
    assert "20 slots the 2 autoscaled runners can run together" in warning.message


def test_settings_gitlab_would_ignore_warn() -> None:
    """use_common_build_dir without isolation or single use, and unreachable idle_count, warn."""
    text = (
        RUNNER
        + "\n[runners.instance]\nuse_common_build_dir = true\n"
        + "\n[[runners.autoscaler.policy]]\nidle_count = 11\n"
    )
    assert [w.path for w in load(text).warnings] == [
        "runners[0].autoscaler.policy[0].idle_count",
        "runners[0].instance.use_common_build_dir",
    ]


@pytest.mark.parametrize(
    ("section", "key", "value", "hint"),
    [
        ("connector_config", "arch", "x86", "(did you mean 'amd64' or '386'?)"),
        ("connector_config", "arch", "x86_64", "(did you mean 'amd64'?)"),
        ("connector_config", "arch", "aarch64", "(did you mean 'arm64'?)"),
        ("connector_config", "arch", "AMD64", "(did you mean 'amd64'?)"),
        ("connector_config", "arch", "sparc", ""),
        ("connector_config", "os", "macos", "(did you mean 'darwin'?)"),
        ("connector_config", "os", "Linux", "(did you mean 'linux'?)"),
        ("connector_config", "os", "freebds", "(did you mean 'freebsd'?)"),
        ("vm_isolation.connector_config", "arch", "x86_64", "(did you mean 'amd64'?)"),
        ("vm_isolation.connector_config", "os", "osx", "(did you mean 'darwin'?)"),
    ],
)
def test_os_and_arch_that_are_not_go_names_warn(
    section: str, key: str, value: str, hint: str
) -> None:
    """A connector os/arch Go would not know warns at its key, with the Go name when one fits."""
    config = load(RUNNER + f'\n[runners.autoscaler.{section}]\n{key} = "{value}"\n')
    (warning,) = config.warnings
    assert warning.path == f"runners[0].autoscaler.{section}.{key}"
    go_name = "GOOS" if key == "os" else "GOARCH"
    assert warning.message.startswith(f"{value!r} is not a Go {go_name} value such as ")
    if hint:
        assert warning.message.endswith(hint)
    else:
        assert "did you mean" not in warning.message


@pytest.mark.parametrize(
    ("os", "arch"),
    [
        ("linux", "amd64"),
        ("windows", "arm64"),
        ("darwin", "arm64"),
        ("freebsd", "386"),
        ("linux", "ppc64le"),
        ("linux", "s390x"),
        ("linux", "riscv64"),
        ("", ""),
    ],
)
def test_go_os_and_arch_names_do_not_warn(os: str, arch: str) -> None:
    """GOOS/GOARCH values, and empty strings (Go's "not set"), load without a warning."""
    text = RUNNER + f'\n[runners.autoscaler.connector_config]\nos = "{os}"\narch = "{arch}"\n'
    assert load(text).warnings == ()


def test_scale_factor_above_one_without_limit_warns_it_is_a_multiplier() -> None:
    """scale_factor 10 with no limit warns of unbounded idle capacity and of the percentage slip."""
    text = RUNNER + "\n[[runners.autoscaler.policy]]\nscale_factor = 10\n"
    (warning,) = load(text).warnings
    assert warning.path == "runners[0].autoscaler.policy[0].scale_factor"
    assert warning.message.startswith(
        "10 with scale_factor_limit 0 grows idle capacity without bound at 10 times the "
        "in-use slots"
    )
    assert "a multiplier (0.1 keeps 10% extra idle), not a percentage" in warning.message


@pytest.mark.parametrize(
    "lines",
    [
        "scale_factor = 1.0",
        "scale_factor = 0.1",
        "scale_factor = 2.5\nscale_factor_limit = 4",
        "scale_factor_limit = 0",
    ],
)
def test_scale_factor_bounded_or_at_most_one_does_not_warn(lines: str) -> None:
    """A scale_factor of at most 1, or one capped by scale_factor_limit, loads without a warning."""
    assert load(RUNNER + f"\n[[runners.autoscaler.policy]]\n{lines}\n").warnings == ()


def test_scale_factor_warning_names_each_policy() -> None:
    """Only the policy with the unbounded factor warns, at its own index."""
    text = (
        RUNNER
        + "\n[[runners.autoscaler.policy]]\nscale_factor = 0.5\n"
        + '\n[[runners.autoscaler.policy]]\nperiods = ["* * * * *"]\nscale_factor = 1.5\n'
    )
    (warning,) = load(text).warnings
    assert warning.path == "runners[0].autoscaler.policy[1].scale_factor"
    assert warning.message.startswith("1.5 with scale_factor_limit 0")


# --- secrets ---------------------------------------------------------------------


def test_secrets_never_appear_in_reprs() -> None:
    """Runner tokens, passwords and secret-named plugin and nesting settings are masked in repr."""
    hetzner = load(CONFIGS / "docker-autoscaler-hetzner.toml")
    winrm = load((CONFIGS / "windows-winrm.toml").read_text().replace('"pwsh"', '"bash"'))
    macos = load(CONFIGS / "macos-vm-isolation.toml")
    shown = repr(hetzner) + repr(winrm) + repr(macos) + str(macos.runners[0])
    for secret in [
        "glrt-hetzner-secret-token",
        "hcloud-api-secret",
        "glrt-windows-token",
        "WinRM-Pa55word!",
        "nesting-api-secret",
        "nested-vm-password",
    ]:
        assert secret not in shown
    assert "'***'" in shown
    assert "'location': 'fsn1'" in shown  # only secrets are masked


def test_secrets_never_appear_in_error_messages() -> None:
    """A wrongly typed token or password is described by its type, never its value."""
    text = RUNNER.replace('token = "glrt-secret-token-value"', "token = 987654321")
    text += "\n[runners.autoscaler.connector_config]\npassword = 123456789\n"
    with pytest.raises(ConfigError) as caught:
        load(text)
    message = str(caught.value)
    assert [p.path for p in caught.value.problems] == [
        "runners[0].token",
        "runners[0].autoscaler.connector_config.password",
    ]
    assert "expected a string, got an integer" in message
    assert "987654321" not in message
    assert "123456789" not in message


def test_plugin_settings_written_as_a_string_are_not_echoed() -> None:
    """plugin_config written as a string (it may hold a token) is described by type only."""
    found = only_problem(RUNNER + '    plugin_config = "token=hcloud-secret"\n')
    assert found == Problem("runners[0].autoscaler.plugin_config", "expected a table, got a string")


# --- syntax and files -------------------------------------------------------------


def test_not_toml_gives_line_column_and_hints() -> None:
    """A file that is not TOML reports where, and hints at // comments and bare placeholders."""
    text = '[[runners]]\nname = "x"\nid = <your-project-id>\n// a comment\ntoken = "t"\n'
    found = only_problem(text)
    assert found.path == "line 3, column 6"
    assert found.message.startswith("not valid TOML: Invalid value")
    assert "comments start with '#', not '//' (lines 4)" in found.message
    assert "placeholders such as <token> must be quoted" in found.message
    assert "(lines 3)" in found.message


def test_missing_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    """A path that does not exist raises ConfigError naming the file."""
    missing = tmp_path / "config.toml"
    with pytest.raises(ConfigError, match="no such file") as caught:
        load(missing)
    assert caught.value.source == str(missing)


def test_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 raise ConfigError, not UnicodeDecodeError."""
    path = tmp_path / "config.toml"
    path.write_bytes(b"concurrent = 1\nname = '\xff'\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(path)


def test_problems_from_a_file_name_the_file(tmp_path: Path) -> None:
    """ConfigError from a file carries the file name in its message."""
    path = tmp_path / "config.toml"
    path.write_text("concurrent = 0\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == f"{path}: concurrent: must be >= 1 (GitLab Runner refuses 0), got 0"


def test_check_returns_problems_and_warnings_together() -> None:
    """check() reports placement warnings even when there are problems, without raising."""
    found = check(
        RUNNER.replace('  name = "r"', '  name = "r"\n  limt = 2') + "    max_use_count = -1\n"
    )
    assert found.config is None
    assert [p.path for p in found.problems] == ["runners[0].autoscaler.max_use_count"]
    assert [w.path for w in found.warnings] == ["runners[0].limt"]
    with pytest.raises(ConfigError):
        found.raise_problems()


def test_check_of_a_good_config_carries_it() -> None:
    """check() of a valid config returns it, with the same warnings as load()."""
    found = check(CONFIGS / "several-runners.toml")
    assert found.problems == ()
    assert found.config == load(CONFIGS / "several-runners.toml")
    assert found.source == str(CONFIGS / "several-runners.toml")
