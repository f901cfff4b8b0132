"""The local provider without sshd: sandbox directories, each with a keeper process."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import anyio
import pytest

from fleetkit._procs import wait_until
from fleetkit.errors import InstanceNotFound, ProviderError, RetryLater
from fleetkit.model import ProviderState
from fleetkit.provider.local import LocalInstanceGroup
from tests.integration.local_provider_support import (
    instance_process,
    local_group,
    processes_under,
    running,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_instances_are_sandboxes_for_the_local_connector(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without sshd, connect info says protocol 'local' and names the instance's
    work dir (its user's own), and a process runs in the sandbox."""
    caplog.set_level(logging.INFO, logger="fleetkit.provider.local")
    async with local_group(tmp_path, use_sshd=False) as group:
        assert await group.increase(2) == 2
        statuses = await group.update()
        assert {s.state for s in statuses} == {ProviderState.RUNNING}
        assert {s.owner for s in statuses} == {"fleet-test"}
        for status in statuses:
            info = await group.connect_info(status.id)
            assert info.protocol == "local"
            assert info.key is None
            work = Path(info.address())
            assert work.name == "work"
            assert status.id in str(work)
            assert (await anyio.Path(work).stat()).st_mode & 0o777 == 0o700
            sandbox = tmp_path / "fleet-test" / status.id
            pid = instance_process(sandbox)
            assert os.readlink(f"/proc/{pid}/cwd") == str(sandbox)
        await group.update()
    warnings = [r for r in caplog.records if "no sshd in use" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.anyio
async def test_keeper_that_dies_makes_its_instance_deleted(tmp_path: Path) -> None:
    """Killing an instance's process makes update report it deleted once and removes its sandbox."""
    async with local_group(tmp_path, use_sshd=False) as group:
        await group.increase(1)
        (status,) = await group.update()
        sandbox = tmp_path / "fleet-test" / status.id
        pid = instance_process(sandbox)
        os.kill(pid, signal.SIGKILL)
        with anyio.fail_after(5):
            await wait_until(lambda: not running(pid))
        assert [s.state for s in await group.update()] == [ProviderState.DELETED]
        assert await group.update() == []
        assert not sandbox.exists()
        with pytest.raises(InstanceNotFound):
            await group.connect_info(status.id)


@pytest.mark.anyio
async def test_decrease_is_idempotent_and_removes_everything(tmp_path: Path) -> None:
    """decrease returns every id, again for ids already gone, and ends processes and sandboxes."""
    async with local_group(tmp_path, use_sshd=False) as group:
        await group.increase(3)
        ids = [s.id for s in await group.update()]
        assert await group.decrease(ids) == ids
        assert await group.decrease([*ids, "local-never-existed"]) == [*ids, "local-never-existed"]
        assert processes_under(tmp_path) == []
        assert {s.state for s in await group.update()} == {ProviderState.DELETED}
        assert list((tmp_path / "fleet-test").iterdir()) == [tmp_path / "fleet-test" / ".lock"]


@pytest.mark.anyio
async def test_verbs_outside_init_and_shutdown_raise(tmp_path: Path) -> None:
    """Verbs before init or after shutdown raise ProviderError; shutdown twice is fine."""
    group = LocalInstanceGroup(root=tmp_path / "root", use_sshd=False)
    with pytest.raises(ProviderError, match="init"):
        await group.update()
    await group.init()
    await group.shutdown()
    await group.shutdown()
    with pytest.raises(ProviderError, match="shut down"):
        await group.increase(1)
    assert not (tmp_path / "root").exists()


@pytest.mark.anyio
async def test_failed_start_is_reported_not_hidden(tmp_path: Path) -> None:
    """When no instance can start, increase raises RetryLater and nothing stays behind."""
    root = tmp_path / "root"
    async with local_group(root, use_sshd=False) as group:
        # A file where the owner's directory should hold sandboxes: mkdir fails.
        owner_dir = root / "fleet-test"
        blocker = owner_dir.with_name("blocked")
        owner_dir.rename(blocker)
        owner_dir.write_text("not a directory")
        try:
            with pytest.raises(RetryLater, match="started none of 2"):
                await group.increase(2)
            assert {s.state for s in await group.update()} == {ProviderState.DELETED}
            assert await group.update() == []
        finally:
            owner_dir.unlink()
            blocker.rename(owner_dir)
