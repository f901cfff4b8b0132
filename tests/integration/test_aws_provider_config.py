"""The AWS provider's pure parts: plugin_config validation, the lifecycle
table, forward-only states and the backoff schedule (no AWS server)."""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest

from tests.support import IN_CI

if not IN_CI:  # skip here without the aws extra; under CI=true the imports below fail
    pytest.importorskip("aiobotocore", reason="pip install 'fleetkit[aws]'")

from fleetkit.errors import ConfigError, ProviderError
from fleetkit.model import ConnectorConfig, ProviderState
from fleetkit.provider._aws_config import parse_aws_config
from fleetkit.provider._aws_keys import generate_key_pair
from fleetkit.provider._aws_states import forward, map_lifecycle
from fleetkit.provider.aws import AWSInstanceGroup, RetryPolicy

DYNAMIC = ConnectorConfig(username="ec2-user")


def _paths(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, str]:
    return {p.path: p.message for p in exc.value.problems}


def test_valid_config_keeps_every_key() -> None:
    """Every key GitLab's AWS plugin takes, plus endpoint_url, is accepted as given."""
    given = {
        "name": "ci-asg",
        "region": "eu-west-1",
        "profile": "ci",
        "config_file": "~/.aws/config",
        "credentials_file": "~/.aws/credentials",
        "endpoint_url": "http://127.0.0.1:5000",
    }
    config = parse_aws_config(given, DYNAMIC)
    assert (config.name, config.region, config.profile) == ("ci-asg", "eu-west-1", "ci")
    assert config.endpoint_url == "http://127.0.0.1:5000"
    assert config.credentials_file == "~/.aws/credentials"


def test_unknown_key_suggests_the_close_one() -> None:
    """A misspelt key is an error at plugin_config.<key> with a did-you-mean."""
    with pytest.raises(ConfigError) as exc:
        AWSInstanceGroup.from_config({"name": "ci", "regoin": "us-east-1"}, DYNAMIC)
    assert "did you mean 'region'?" in _paths(exc)["plugin_config.regoin"]


def test_every_problem_is_reported_at_once() -> None:
    """Missing name, a non-string region and a bad endpoint are reported together."""
    bad: dict[str, Any] = {"region": 3, "endpoint_url": "127.0.0.1:5000"}
    with pytest.raises(ConfigError) as exc:
        parse_aws_config(bad, DYNAMIC)
    paths = _paths(exc)
    assert set(paths) == {
        "plugin_config.name",
        "plugin_config.region",
        "plugin_config.endpoint_url",
    }
    assert "non-empty string" in paths["plugin_config.region"]


def test_dynamic_credentials_need_a_username() -> None:
    """Instance Connect pushes a key for one OS user, so a missing username is an error."""
    with pytest.raises(ConfigError) as exc:
        parse_aws_config({"name": "ci"}, ConnectorConfig())
    assert "connector_config.username" in _paths(exc)


def test_static_credentials_need_a_key_or_password() -> None:
    """use_static_credentials without key_path or password is an error naming the flag."""
    with pytest.raises(ConfigError) as exc:
        parse_aws_config({"name": "ci"}, ConnectorConfig(use_static_credentials=True))
    assert "connector_config.use_static_credentials" in _paths(exc)


@pytest.mark.parametrize(
    ("lifecycle", "health", "expected"),
    [
        ("Pending", "Healthy", ProviderState.CREATING),
        ("Pending:Wait", "Healthy", ProviderState.CREATING),
        ("Pending:Proceed", "Healthy", ProviderState.CREATING),
        ("InService", "Healthy", ProviderState.RUNNING),
        ("InService", "Unhealthy", ProviderState.DELETING),
        ("Standby", "Healthy", ProviderState.RUNNING),
        ("EnteringStandby", "Healthy", ProviderState.RUNNING),
        ("Terminating", "Healthy", ProviderState.DELETING),
        ("Terminating:Wait", "Healthy", ProviderState.DELETING),
        ("Terminating:Proceed", "Healthy", ProviderState.DELETING),
        ("Terminated", "Healthy", ProviderState.DELETED),
        ("Detaching", "Healthy", ProviderState.DELETING),
        ("Detached", "Healthy", ProviderState.DELETED),
        ("Warmed:Pending", "Healthy", ProviderState.CREATING),
        ("Warmed:Running", "Healthy", ProviderState.CREATING),
        ("Warmed:Terminating:Wait", "Healthy", ProviderState.DELETING),
        ("Warmed:Terminated", "Healthy", ProviderState.DELETED),
        ("SomethingNew", "Healthy", None),
    ],
)
def test_lifecycle_table(lifecycle: str, health: str, expected: ProviderState | None) -> None:
    """Each Auto Scaling lifecycle state maps to the fleetkit state the module documents."""
    assert map_lifecycle(lifecycle, health) is expected


def test_states_never_move_back() -> None:
    """A lagging answer (running after deleting) keeps the later state; progress passes."""
    assert forward(ProviderState.DELETING, ProviderState.RUNNING) is ProviderState.DELETING
    assert forward(ProviderState.CREATING, ProviderState.RUNNING) is ProviderState.RUNNING
    assert forward(None, ProviderState.CREATING) is ProviderState.CREATING


def test_backoff_is_jittered_bounded_and_reproducible() -> None:
    """Delays grow within [0, min(cap, base*2**k)] and repeat exactly for the same seed."""
    policy = RetryPolicy(attempts=8, base=0.5, cap=3.0)
    first = [policy.delay(k, random.Random(42)) for k in range(8)]
    again = [policy.delay(k, random.Random(42)) for k in range(8)]
    assert first == again
    for k, delay in enumerate(first):
        assert 0.0 <= delay <= min(3.0, 0.5 * 2**k)
    other = [policy.delay(k, random.Random(43)) for k in range(8)]
    assert other != first
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


def test_generated_key_pair_is_openssh_ed25519_and_masked() -> None:
    """The Instance Connect key pair is Ed25519 in OpenSSH form, its private half masked."""
    pair = generate_key_pair("fleet-x")
    assert pair.public.startswith("ssh-ed25519 ")
    assert pair.public.endswith(" fleet-x")
    assert pair.private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert pair.private.decode() not in repr(pair)
    assert generate_key_pair().public != pair.public


def test_init_refuses_a_loop_other_than_asyncio() -> None:
    """Under trio, init says the provider needs asyncio instead of failing obscurely."""
    group = AWSInstanceGroup.from_config({"name": "ci"}, DYNAMIC)
    with pytest.raises(ProviderError, match="asyncio"):
        anyio.run(group.init, backend="trio")
