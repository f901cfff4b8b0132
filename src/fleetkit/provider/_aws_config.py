"""The AWS provider's ``plugin_config``, validated into a frozen value.

Keys follow GitLab's ``fleeting-plugin-aws``: ``name`` (the Auto Scaling
group), ``region``, ``profile``, ``config_file``, ``credentials_file``, plus
fleetkit's ``endpoint_url`` (moto, LocalStack, VPC endpoints). Access keys are
deliberately not plugin_config keys: they come from the standard AWS chain
(environment, credentials file, instance role) so they never sit in a
config.toml or in a repr.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from fleetkit._text import key_path
from fleetkit.config._suggest import did_you_mean
from fleetkit.errors import ConfigError, Problem
from fleetkit.model import ConnectorConfig

__all__ = ["AWSConfig", "parse_aws_config"]

_KEYS = ("name", "region", "profile", "config_file", "credentials_file", "endpoint_url")
_ROOT = "plugin_config"


@attrs.frozen(kw_only=True)
class AWSConfig:
    """A validated ``plugin_config`` for :class:`~fleetkit.provider.aws.AWSInstanceGroup`.

    ``None`` means "not set": botocore's own resolution (environment, profile)
    applies.
    """

    name: str
    region: str | None = None
    profile: str | None = None
    config_file: str | None = None
    credentials_file: str | None = None
    endpoint_url: str | None = None


def parse_aws_config(
    plugin_config: Mapping[str, Any], connector_config: ConnectorConfig
) -> AWSConfig:
    """Validate ``plugin_config`` (and what the AWS provider needs of
    ``connector_config``); raise :class:`ConfigError` listing every problem."""
    problems: list[Problem] = []
    for key in plugin_config:
        if key not in _KEYS:
            problems.append(
                Problem(
                    key_path(_ROOT, key),
                    f"unknown key{did_you_mean(str(key), _KEYS)}; "
                    f"the AWS provider takes {', '.join(_KEYS)}",
                )
            )
    values: dict[str, str | None] = {}
    for key in _KEYS:
        value = plugin_config.get(key)
        if value is None:
            values[key] = None
        elif not isinstance(value, str) or not value.strip():
            # Described by type only: credentials_file, profile or an endpoint
            # with user:password@ may be where someone pasted a secret.
            problems.append(
                Problem(f"{_ROOT}.{key}", f"expected a non-empty string, got {_kind(value)}")
            )
        else:
            values[key] = value
    if plugin_config.get("name") is None:
        problems.append(Problem(f"{_ROOT}.name", "missing: the Auto Scaling group's name"))
    endpoint = values.get("endpoint_url")
    if endpoint and not endpoint.startswith(("http://", "https://")):
        problems.append(
            Problem(
                f"{_ROOT}.endpoint_url",
                "expected an http:// or https:// URL, got a string starting otherwise",
            )
        )
    problems += _connector_problems(connector_config)
    if problems:
        raise ConfigError(problems)
    return AWSConfig(
        name=str(values["name"]),
        region=values["region"],
        profile=values["profile"],
        config_file=values["config_file"],
        credentials_file=values["credentials_file"],
        endpoint_url=endpoint,
    )


def _kind(value: object) -> str:
    match value:
        case str():
            return "an empty string" if not value.strip() else "a string"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case dict():
            return "a table"
        case list():
            return "an array"
    return type(value).__name__


def _connector_problems(connector: ConnectorConfig) -> list[Problem]:
    problems: list[Problem] = []
    if connector.use_static_credentials:
        if connector.key_path is None and connector.password is None:
            problems.append(
                Problem(
                    "connector_config.use_static_credentials",
                    "static credentials need key_path or password",
                )
            )
    elif connector.username is None:
        # EC2 Instance Connect pushes the key for one OS user; there is no
        # portable default (ec2-user, ubuntu, admin... depend on the AMI).
        problems.append(
            Problem(
                "connector_config.username",
                "missing: dynamic credentials (EC2 Instance Connect) need the instance's "
                'OS user, e.g. username = "ec2-user"',
            )
        )
    return problems
