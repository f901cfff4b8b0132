"""The local provider passes the provider conformance suite, with and without sshd."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import anyio
import pytest

from fleetkit.model import ConnectorConfig
from fleetkit.provider.local import LocalInstanceGroup
from fleetkit.testing.conformance import CHECKS, Check, GroupFactory, Harness
from tests.integration.local_provider_support import leftovers, require_sshd

OWNER = "conformance"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def local_factory(root: Path, *, use_sshd: bool) -> GroupFactory:
    """Fresh local groups under ``root`` that boot in 0.1 s, as a cloud takes a while."""

    @asynccontextmanager
    async def build(max_size: int) -> AsyncIterator[Harness]:
        group = LocalInstanceGroup.from_config(
            {
                "root": str(root),
                "max_instances": max_size,
                "boot_delay": "100ms",
                "use_sshd": use_sshd,
            },
            ConnectorConfig(),
            owner=OWNER,
        )
        yield Harness(group=group, settle=lambda: anyio.sleep(0.05), max_settles=100, owner=OWNER)
        assert leftovers(root) == []

    def factory(*, max_size: int) -> AbstractAsyncContextManager[Harness]:
        return build(max_size)

    return factory


@pytest.mark.anyio
@pytest.mark.parametrize("use_sshd", [True, False], ids=["sshd", "sandbox"])
@pytest.mark.parametrize("check", CHECKS, ids=str)
async def test_local_provider_conforms(check: Check, use_sshd: bool, tmp_path: Path) -> None:
    """The local provider keeps every contract of the InstanceGroup protocol."""
    if use_sshd:
        require_sshd()
    await check.run(local_factory(tmp_path / "root", use_sshd=use_sshd))
