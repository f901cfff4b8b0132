"""The AWS provider passes the provider conformance suite on moto."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
import pytest

from tests.support import IN_CI

if not IN_CI:  # skip here without the aws extra; under CI=true the imports below fail
    pytest.importorskip("aiobotocore", reason="pip install 'fleetkit[aws]'")
    pytest.importorskip("moto", reason="pip install 'moto[server]'")

from fleetkit.testing.conformance import CHECKS, Check, GroupFactory, Harness
from fleetkit.testing.moto import MotoServer
from tests.integration import aws_fixtures
from tests.integration.aws_fixtures import build

anyio_backend = aws_fixtures.anyio_backend
moto_server = aws_fixtures.moto_server
moto = aws_fixtures.moto

OWNER = "conformance"
_names = itertools.count()


def aws_factory(moto: MotoServer) -> GroupFactory:
    """A fresh Auto Scaling group of the asked MaxSize for each check; empty after it."""

    @asynccontextmanager
    async def make(max_size: int) -> AsyncIterator[Harness]:
        name = moto.create_group(f"conformance-{next(_names)}", max_size=max_size)
        group = build(moto, name, owner=OWNER)
        yield Harness(group=group, settle=lambda: anyio.sleep(0.02), max_settles=50, owner=OWNER)
        assert moto.group_instances(name) == {}, "the check left instances behind"

    def factory(*, max_size: int) -> AbstractAsyncContextManager[Harness]:
        return make(max_size)

    return factory


@pytest.mark.anyio
@pytest.mark.integration
@pytest.mark.parametrize("check", CHECKS, ids=str)
async def test_aws_provider_conforms(check: Check, moto: MotoServer) -> None:
    """The AWS provider keeps every contract of the InstanceGroup protocol."""
    await check.run(aws_factory(moto))
