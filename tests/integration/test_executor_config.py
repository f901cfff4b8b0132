"""InstanceExecutor.from_config: which runner, which settings, which limits, and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetkit.config import load
from fleetkit.errors import ConfigError
from fleetkit.executor import InstanceExecutor, owner_id, select_runner

pytestmark = pytest.mark.integration

TWO_RUNNERS = """
concurrent = 6

[[runners]]
  name = "docker"
  executor = "docker"

[[runners]]
  name = "small"
  url = "https://gitlab.example.com"
  token = "glrt-secret-token-one"
  executor = "instance"
  limit = 4
  builds_dir = "/srv/builds"
  environment = ["REGION=eu", "MODE=a=b"]
  [runners.autoscaler]
    plugin = "local"
    capacity_per_instance = 2
    max_instances = 5
    update_interval = "3s"
    update_interval_when_expecting = "250ms"
    instance_acquire_timeout = "2m"
    log_internal_ip = true
    [runners.autoscaler.state_storage]
      enabled = true
    [[runners.autoscaler.policy]]
      idle_count = 1
      idle_time = "10m"

[[runners]]
  name = "big"
  url = "https://gitlab.example.com"
  token = "glrt-secret-token-two"
  executor = "instance"
  [runners.autoscaler]
    plugin = "local"
    max_instances = 2
"""


def _config(tmp_path: Path, text: str = TWO_RUNNERS) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_several_driven_runners_are_all_served_when_none_is_named(tmp_path: Path) -> None:
    """With two autoscaled runners and none named, one executor serves both, each with
    its own fleet (it used to refuse and ask for one: GitLab serves them all)."""
    executor = InstanceExecutor.from_config(_config(tmp_path))
    assert [lane.name for lane in executor.lanes] == ["small", "big"]
    assert executor.fleets[0] is not executor.fleets[1]


def test_runner_by_name_sets_limits_settings_and_variables(tmp_path: Path) -> None:
    """The named runner's autoscaler becomes the fleet's limits and settings; concurrent
    and limit cap admission; environment and builds_dir reach the jobs."""
    path = _config(tmp_path)
    executor = InstanceExecutor.from_config(path, runner="small")
    fleet = executor.fleet
    assert (fleet.limits.capacity_per_instance, fleet.limits.max_instances) == (2, 5)
    settings = fleet.settings
    assert (settings.update_interval, settings.update_interval_when_expecting) == (3.0, 0.25)
    assert settings.acquire_timeout == 120.0
    assert settings.owner_id is not None
    assert settings.state_storage_dir == tmp_path / ".taskscaler" / settings.owner_id
    assert executor.concurrent == 4  # min(concurrent 6, limit 4)
    assert executor.builds_dir == "/srv/builds"
    assert executor.variables == {"REGION": "eu", "MODE": "a=b"}
    assert executor.retries == 1
    (lane,) = executor.lanes
    assert (lane.options.log_internal_ip, lane.options.log_external_ip) == (True, False)


def test_runner_by_index_and_not_driven_runner(tmp_path: Path) -> None:
    """An index picks a runner; a runner that is not an instance executor is refused by path."""
    path = _config(tmp_path)
    assert InstanceExecutor.from_config(path, runner=2).fleet.limits.max_instances == 2
    with pytest.raises(ConfigError, match=r"runners\[0\]: fleetkit drives runners"):
        InstanceExecutor.from_config(path, runner=0)
    with pytest.raises(ConfigError, match="no runner named 'nope'"):
        InstanceExecutor.from_config(path, runner="nope")


def test_owner_id_is_stable_and_hides_the_token(tmp_path: Path) -> None:
    """The owner id is the same for the same runner, differs between runners, shows no token."""
    config = load(_config(tmp_path))
    small = select_runner(config, "small")[1]
    big = select_runner(config, "big")[1]
    assert owner_id(small, 1) == owner_id(small, 1)
    assert owner_id(small, 1) != owner_id(big, 2)
    assert "secret" not in owner_id(small, 1)


def test_unknown_plugin_is_reported(tmp_path: Path) -> None:
    """A plugin no provider answers to is a ConfigError at its TOML path, naming it."""
    text = TWO_RUNNERS.replace('plugin = "local"\n    max_instances = 2', 'plugin = "nimbus"')
    with pytest.raises(ConfigError) as caught:
        InstanceExecutor.from_config(_config(tmp_path, text), runner="big")
    (problem,) = caught.value.problems
    assert problem.path.endswith("].autoscaler.plugin")
    assert "no provider answers to plugin 'nimbus'" in problem.message


@pytest.mark.parametrize(("max_use_count", "honoured"), [(1, True), (0, False)])
def test_common_build_dir_only_for_single_use_instances(
    tmp_path: Path, max_use_count: int, honoured: bool
) -> None:
    """use_common_build_dir applies with max_use_count = 1 (or VM isolation), as in GitLab."""
    text = (
        TWO_RUNNERS.replace(
            '    plugin = "local"\n    max_instances = 2',
            f'    plugin = "local"\n    max_instances = 2\n    max_use_count = {max_use_count}',
        )
        + "  [runners.instance]\n    use_common_build_dir = true\n"
    )  # the last runner's
    executor = InstanceExecutor.from_config(_config(tmp_path, text), runner="big")
    assert executor.common_build_dir is honoured
