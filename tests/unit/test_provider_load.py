"""fleetkit.provider.load: plugin names, entry points, import paths and config errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import pytest

from fleetkit.errors import ConfigError, PluginNotFound, ProviderError
from fleetkit.model import ConnectInfo, ConnectorConfig
from fleetkit.provider import InstanceStatus, ProviderInfo, available, load
from fleetkit.provider._protocol import InstanceGroupFactory
from fleetkit.provider.local import LocalInstanceGroup
from tests.support import require_module


class ThirdPartyGroup:
    """A provider as a third-party package would write it: no fleetkit base class."""

    def __init__(self, config: Mapping[str, Any], connector: ConnectorConfig, owner: str | None):
        self.config = dict(config)
        self.connector = connector
        self.owner = owner

    @classmethod
    def from_config(
        cls,
        plugin_config: Mapping[str, Any],
        connector_config: ConnectorConfig,
        *,
        owner: str | None = None,
    ) -> Self:
        return cls(plugin_config, connector_config, owner)

    async def init(self) -> ProviderInfo:
        return ProviderInfo(id="third", max_size=1)

    async def update(self) -> Sequence[InstanceStatus]:
        return []

    async def increase(self, n: int) -> int:
        return 0

    async def decrease(self, ids: Sequence[str]) -> Sequence[str]:
        return list(ids)

    async def connect_info(self, instance_id: str) -> ConnectInfo:
        return ConnectInfo(id=instance_id)

    async def heartbeat(self, instance_id: str) -> None:
        return None

    async def shutdown(self) -> None:
        return None


_check: InstanceGroupFactory = ThirdPartyGroup


class NotAProvider:
    """Has from_config but builds something without the verbs."""

    @classmethod
    def from_config(cls, plugin_config: Any, connector_config: Any, *, owner: Any = None) -> str:
        return "not a group"


HERE = f"{__name__}"


@pytest.mark.parametrize(
    "plugin",
    [
        "local",
        "local:latest",
        "fleeting-plugin-local",
        "fleeting-plugin-local:1.2.3",
        "gitlab-org/fleeting/plugins/local:1",
        "registry.example.com/team/local",
        "fleetkit.provider.local:LocalInstanceGroup",
        " local ",
    ],
)
def test_local_answers_to_every_spelling(plugin: str, tmp_path: Path) -> None:
    """GitLab's reference forms, fleetkit's name and the import path all find the local provider."""
    group = load(plugin, {"root": str(tmp_path)}, owner="fleet-1")
    assert isinstance(group, LocalInstanceGroup)
    assert "fleet-1" in repr(group)


def test_gitlab_aws_names_resolve_to_fleetkit_aws() -> None:
    """'aws' and 'fleeting-plugin-aws:<version>' name fleetkit's AWS provider, imported lazily."""
    from fleetkit.provider import _resolve

    target = "fleetkit.provider.aws:AWSInstanceGroup"
    assert _resolve("aws") == target
    assert _resolve("fleeting-plugin-aws:0.5.0") == target
    assert _resolve("registry.gitlab.com/gitlab-org/fleeting/plugins/aws:latest") == target


def test_load_builds_aws_provider_and_passes_config_errors_through() -> None:
    """load('fleeting-plugin-aws:<v>') builds the AWS group; its bad keys surface as ConfigError."""
    require_module("aiobotocore", "pip install 'fleetkit[aws]'")
    from fleetkit.provider.aws import AWSInstanceGroup

    group = load(
        "fleeting-plugin-aws:1.0.0",
        {"name": "ci-asg", "region": "eu-west-1"},
        ConnectorConfig(username="ec2-user"),
        owner="r1",
    )
    assert isinstance(group, AWSInstanceGroup)
    with pytest.raises(ConfigError) as caught:
        load("aws", {"region": "eu-west-1"}, ConnectorConfig(username="ec2-user"))
    assert "plugin_config.name" in {p.path for p in caught.value.problems}


def test_unknown_plugin_lists_installed_ones() -> None:
    """An unknown name raises PluginNotFound naming the plugin and every installed provider."""
    with pytest.raises(PluginNotFound) as caught:
        load("fleeting-plugin-hetzner", {})
    message = str(caught.value)
    assert "'fleeting-plugin-hetzner'" in message
    assert "installed: aws, local" in message


def test_import_path_to_third_party_class() -> None:
    """'package.module:Class' loads any class with from_config and passes config and owner."""
    group = load(f"{HERE}:ThirdPartyGroup", {"zone": "z1"}, owner="me")
    assert isinstance(group, ThirdPartyGroup)
    assert group.config == {"zone": "z1"}
    assert group.owner == "me"
    assert group.connector == ConnectorConfig()


def test_import_path_that_does_not_import() -> None:
    """A module that cannot be imported raises PluginNotFound with the import error."""
    with pytest.raises(PluginNotFound, match=r"cannot import 'no_such_pkg\.mod'"):
        load("no_such_pkg.mod:Group", {})


def test_import_path_to_missing_class() -> None:
    """A class missing from an importable module raises PluginNotFound naming it."""
    with pytest.raises(PluginNotFound, match="has no 'Missing'"):
        load(f"{HERE}:Missing", {})


def test_class_without_from_config_is_refused() -> None:
    """A class without the from_config classmethod is not taken for a provider."""
    with pytest.raises(PluginNotFound, match="no from_config"):
        load("pathlib:Path", {})


def test_factory_returning_non_group_is_refused() -> None:
    """from_config must return an object with the InstanceGroup verbs."""
    with pytest.raises(ProviderError, match="lacks the InstanceGroup verbs"):
        load(f"{HERE}:NotAProvider", {})


def _install_entry_point(site: Path, name: str, value: str) -> None:
    dist = site / "fleetkit_thirdparty-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fleetkit-thirdparty\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(f"[fleetkit.providers]\n{name} = {value}\n")


def test_entry_point_registers_third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A distribution's fleetkit.providers entry point is found by name and listed as installed."""
    _install_entry_point(tmp_path, "thirdparty", f"{HERE}:ThirdPartyGroup")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert available()["thirdparty"] == f"{HERE}:ThirdPartyGroup"
    group = load("fleeting-plugin-thirdparty:2.0", {"zone": "a"})
    assert isinstance(group, ThirdPartyGroup)


def test_entry_point_cannot_shadow_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry point named 'local' does not replace fleetkit's own local provider."""
    _install_entry_point(tmp_path, "local", f"{HERE}:ThirdPartyGroup")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert available()["local"] == "fleetkit.provider.local:LocalInstanceGroup"


def test_local_config_errors_name_each_key() -> None:
    """Every bad local plugin_config key is reported at once, by its plugin_config path."""
    with pytest.raises(ConfigError) as caught:
        load(
            "local",
            {"max_instances": 0, "boot_delay": "5 minutes", "use_sshd": "yes", "colour": "red"},
        )
    paths = {p.path: p.message for p in caught.value.problems}
    assert set(paths) == {
        "plugin_config.max_instances",
        "plugin_config.boot_delay",
        "plugin_config.use_sshd",
        "plugin_config.colour",
    }
    assert "1..253" in paths["plugin_config.max_instances"]
    assert "Go duration" in paths["plugin_config.boot_delay"]
    assert "unknown key" in paths["plugin_config.colour"]


@pytest.mark.parametrize(
    ("value", "seconds"), [("1m30s", 90.0), ("250ms", 0.25), (2, 2.0), ("0", 0.0)]
)
def test_local_boot_delay_accepts_go_durations(value: object, seconds: float) -> None:
    """boot_delay takes Go durations (as GitLab writes them) or plain seconds."""
    group = LocalInstanceGroup.from_config({"boot_delay": value}, ConnectorConfig())
    assert group._settings.boot_delay == seconds


def test_local_negative_boot_delay_is_refused() -> None:
    """A negative boot_delay is a config error naming the key."""
    with pytest.raises(ConfigError, match=r"plugin_config\.boot_delay"):
        LocalInstanceGroup.from_config({"boot_delay": "-1s"}, ConnectorConfig())


def test_importing_provider_package_needs_no_cloud_or_ssh_library() -> None:
    """import fleetkit.provider (and load's local provider) pulls in neither aiobotocore nor asyncssh."""
    code = (
        "import json, sys\n"
        "import fleetkit.provider, fleetkit.provider.local\n"
        "print(json.dumps([m for m in ('aiobotocore', 'botocore', 'asyncssh') if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []


def test_local_owner_directories_never_collide() -> None:
    """Owners that differ only in unsafe characters still get distinct, safe directory names."""
    from fleetkit.provider.local import _slug

    owners = [None, "default", "a/b", "a_b", "a b", "..", "", "runner-1"]
    slugs = [_slug(o) for o in owners]
    assert len(set(slugs)) == len(owners)
    assert all(s and "/" not in s and s not in {".", ".."} for s in slugs)
    assert _slug("runner-1") == "runner-1"
