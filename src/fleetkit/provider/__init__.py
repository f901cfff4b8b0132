"""Instance groups (fleeting's providers): the protocol, and finding one by name.

``load(plugin, plugin_config, connector_config)`` turns the ``plugin`` and
``plugin_config`` of ``[runners.autoscaler]`` into an :class:`InstanceGroup`.
Concrete providers are imported only when asked for, so importing this package
needs neither aiobotocore nor asyncssh.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from collections.abc import Mapping
from typing import Any

from fleetkit.errors import PluginNotFound, ProviderError
from fleetkit.model import ConnectorConfig
from fleetkit.provider._protocol import InstanceGroup as InstanceGroup
from fleetkit.provider._protocol import InstanceGroupFactory as InstanceGroupFactory
from fleetkit.provider._protocol import InstanceStatus as InstanceStatus
from fleetkit.provider._protocol import ProviderInfo as ProviderInfo

__all__ = [
    "ENTRY_POINT_GROUP",
    "InstanceGroup",
    "InstanceGroupFactory",
    "InstanceStatus",
    "ProviderInfo",
    "available",
    "load",
]

ENTRY_POINT_GROUP = "fleetkit.providers"

# fleetkit's own providers answer even when the package metadata is missing (a
# source checkout on sys.path), and a third-party entry point cannot shadow them.
_BUILTIN: dict[str, str] = {
    "local": "fleetkit.provider.local:LocalInstanceGroup",
    "aws": "fleetkit.provider.aws:AWSInstanceGroup",
}

# GitLab resolves `<name>`, `<name>:<version>`, `<repo>/<name>[:version]` and
# `<registry>/<repo>/<name>[:version]`, and installs the binary as
# `fleeting-plugin-<name>`; the version constraints are `latest`, MAJOR,
# MAJOR.MINOR and MAJOR.MINOR.PATCH (spec §1.2, `plugin`).
_VERSION = re.compile(r"(latest|v?\d+(\.\d+){0,2}([-+][0-9A-Za-z.-]+)?)")
_GITLAB_PREFIX = "fleeting-plugin-"
_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def available() -> dict[str, str]:
    """The installed providers: name -> ``"module:Class"`` (built-ins first)."""
    found = dict(_BUILTIN)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, entry.value)
    return found


def load(
    plugin: str,
    plugin_config: Mapping[str, Any] | None = None,
    connector_config: ConnectorConfig | None = None,
    *,
    owner: str | None = None,
) -> InstanceGroup:
    """Find the provider ``plugin`` names and build it from its configuration.

    ``plugin`` is a GitLab plugin reference (``"aws"``, ``"fleeting-plugin-aws"``,
    ``"aws:1.2"``, ``"gitlab-org/fleeting/plugins/aws:latest"``), a fleetkit
    name (``"local"``), a name registered under the entry-point group
    ``fleetkit.providers``, or an import path ``"package.module:Class"``.
    The version part of a GitLab reference is accepted and ignored: the
    installed provider answers.

    The class's ``from_config`` validates ``plugin_config`` (raising
    :class:`~fleetkit.errors.ConfigError` naming ``plugin_config.<key>``); the
    returned group still needs :meth:`InstanceGroup.init`.

    Raises :class:`~fleetkit.errors.PluginNotFound`, listing the installed
    providers, when nothing answers to ``plugin`` or its module cannot be
    imported (for instance a missing extra).
    """
    target = _resolve(plugin)
    factory = _import(plugin, target)
    from_config = getattr(factory, "from_config", None)
    if not callable(from_config):
        raise PluginNotFound(
            f"plugin {plugin!r} ({target}) has no from_config classmethod; "
            "see fleetkit.provider.InstanceGroupFactory"
        )
    group = from_config(
        dict(plugin_config or {}), connector_config or ConnectorConfig(), owner=owner
    )
    if not isinstance(group, InstanceGroup):
        raise ProviderError(
            f"plugin {plugin!r} ({target}).from_config returned {type(group).__name__}, "
            "which lacks the InstanceGroup verbs"
        )
    return group


def _resolve(plugin: str) -> str:
    """The ``module:Class`` path the plugin reference names."""
    ref = plugin.strip()
    if _IMPORT_PATH.fullmatch(ref) and not _VERSION.fullmatch(ref.rpartition(":")[2]):
        return ref
    name = ref.rpartition("/")[2]
    base, colon, version = name.partition(":")
    if colon and _VERSION.fullmatch(version):
        name = base
    name = name.removeprefix(_GITLAB_PREFIX)
    installed = available()
    if name in installed:
        return installed[name]
    listing = ", ".join(sorted(installed)) or "none"
    raise PluginNotFound(
        f"no provider answers to plugin {plugin!r}; installed: {listing} "
        f"(or give 'package.module:Class', or register one under the entry-point "
        f"group {ENTRY_POINT_GROUP!r})"
    )


def _import(plugin: str, target: str) -> Any:
    module_name, _, qualname = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except ImportError as exc:
        hint = " (pip install 'fleetkit[aws]')" if module_name == "fleetkit.provider.aws" else ""
        raise PluginNotFound(
            f"plugin {plugin!r}: cannot import {module_name!r}: {exc}{hint}"
        ) from exc
    except AttributeError as exc:
        raise PluginNotFound(f"plugin {plugin!r}: {module_name!r} has no {qualname!r}") from exc
    return obj
