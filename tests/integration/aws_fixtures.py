"""Fixtures for the AWS provider's tests: one moto server per session, reset
before each test. Test modules import this module and bind its fixtures
(``moto = aws_fixtures.moto``); aiobotocore needs the asyncio backend."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest

from tests.support import IN_CI

if not IN_CI:  # skip here without the aws extra; under CI=true the imports below fail
    pytest.importorskip("aiobotocore", reason="pip install 'fleetkit[aws]'")
    pytest.importorskip("moto", reason="pip install 'moto[server]'")

from fleetkit.model import ConnectorConfig
from fleetkit.provider.aws import AWSInstanceGroup, RetryPolicy
from fleetkit.testing.moto import MotoServer

FAST_RETRY = RetryPolicy(attempts=3, base=0.001, cap=0.01)
"""Backoff short enough for tests, still exercising every retry."""
DYNAMIC = ConnectorConfig(username="ec2-user")
"""Connector settings with dynamic credentials (EC2 Instance Connect)."""
WALL = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """aiobotocore runs on asyncio only."""
    return "asyncio"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server on 127.0.0.1 for the session; stopped at the end."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def moto(moto_server: MotoServer) -> MotoServer:
    """The session's moto server, emptied (resources, faults, call counts)."""
    moto_server.reset()
    return moto_server


def build(
    moto: MotoServer,
    name: str = "ci",
    *,
    connector: ConnectorConfig = DYNAMIC,
    owner: str | None = "fleet-test",
    retry: RetryPolicy = FAST_RETRY,
    seed: int = 7,
) -> AWSInstanceGroup:
    """A provider for group ``name`` on ``moto`` (not initialised)."""
    return AWSInstanceGroup.from_config(
        moto.plugin_config(name),
        connector,
        owner=owner,
        rng=random.Random(seed),
        retry=retry,
        wall_clock=lambda: WALL,
    )


@asynccontextmanager
async def running(
    moto: MotoServer,
    name: str = "ci",
    *,
    max_size: int = 3,
    connector: ConnectorConfig = DYNAMIC,
    owner: str | None = "fleet-test",
) -> AsyncIterator[AWSInstanceGroup]:
    """Create group ``name`` on moto and yield an initialised provider for it."""
    moto.create_group(name, max_size=max_size)
    group = build(moto, name, connector=connector, owner=owner)
    await group.init()
    try:
        yield group
    finally:
        await group.shutdown()
