"""The local provider with OpenSSH: real sshd processes on 127.0.0.N, reached over SSH."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import anyio
import anyio.lowlevel
import asyncssh
import pytest

from fleetkit._procs import wait_until
from fleetkit._sshd import generate_keypair
from fleetkit.errors import ConfigError, InstanceNotFound, ProviderError
from fleetkit.model import ConnectInfo, ConnectorConfig, ProviderState
from fleetkit.provider.local import LocalInstanceGroup
from tests.integration.local_provider_support import (
    instance_process,
    instances_up,
    local_group,
    processes_under,
    require_sshd,
    running,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # asyncssh runs on asyncio only


@pytest.fixture(autouse=True)
def _sshd_installed() -> None:
    require_sshd()


async def ssh_run(info: ConnectInfo, command: str) -> str:
    """Run ``command`` on the instance with its connect info, the host key pinned."""
    assert info.key is not None
    assert info.host_key is not None
    known = asyncssh.import_known_hosts(f"[{info.internal_addr}]:{info.port} {info.host_key}\n")
    async with asyncssh.connect(
        info.address(),
        info.port,
        username=info.username,
        client_keys=[asyncssh.import_private_key(info.key)],
        known_hosts=known,
    ) as conn:
        result = await conn.run(command, check=True)
    return str(result.stdout)


async def running_ids(group: LocalInstanceGroup, count: int) -> list[str]:
    """Poll update until ``count`` instances run; return their ids."""
    with anyio.fail_after(10):
        while True:
            statuses = await group.update()
            ids = sorted(s.id for s in statuses if s.state is ProviderState.RUNNING)
            if len(ids) >= count:
                return ids
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_instances_are_sshds_on_their_own_loopback_addresses(tmp_path: Path) -> None:
    """Each instance is an sshd on its own 127.0.0.N with its own host key, reachable with the group's key."""
    async with local_group(tmp_path) as group:
        assert await group.increase(2) == 2
        ids = await running_ids(group, 2)
        infos = [await group.connect_info(i) for i in ids]
        assert sorted(i.internal_addr or "" for i in infos) == ["127.0.0.2", "127.0.0.3"]
        assert len({i.host_key for i in infos}) == 2
        assert {i.protocol for i in infos} == {"ssh"}
        for info in infos:
            assert await ssh_run(info, "id -un") == f"{info.username}\n"
            assert "***" in repr(info)
            assert info.key is not None
            assert info.key.decode() not in repr(info)


@pytest.mark.anyio
async def test_sshd_that_dies_makes_its_instance_deleted(tmp_path: Path) -> None:
    """Killing an instance's sshd makes update report it deleted once, and its sandbox goes."""
    async with local_group(tmp_path) as group:
        await group.increase(2)
        victim, survivor = await running_ids(group, 2)
        pid = instance_process(tmp_path / "fleet-test" / victim)
        os.kill(pid, signal.SIGKILL)
        with anyio.fail_after(5):
            await wait_until(lambda: not running(pid))
        first = {s.id: s.state for s in await group.update()}
        assert first == {victim: ProviderState.DELETED, survivor: ProviderState.RUNNING}
        second = {s.id: s.state for s in await group.update()}
        assert second == {survivor: ProviderState.RUNNING}
        assert not (tmp_path / "fleet-test" / victim).exists()
        with pytest.raises(InstanceNotFound):
            await group.heartbeat(victim)
        await group.heartbeat(survivor)


@pytest.mark.anyio
async def test_boot_delay_keeps_instances_creating(tmp_path: Path) -> None:
    """With boot_delay an instance reports creating until the delay has passed, then running."""
    async with local_group(tmp_path, boot_delay="300ms") as group:
        start = anyio.current_time()
        await group.increase(1)
        assert [s.state for s in await group.update()] == [ProviderState.CREATING]
        await running_ids(group, 1)
        assert anyio.current_time() - start >= 0.3


@pytest.mark.anyio
async def test_decrease_while_instances_start(tmp_path: Path) -> None:
    """update and decrease from another task while increase starts processes leave nothing behind."""
    async with local_group(tmp_path) as group:
        seen: list[str] = []
        accepted: list[int] = []
        async with anyio.create_task_group() as tg:

            async def grow() -> None:
                accepted.append(await group.increase(3))

            tg.start_soon(grow)
            await anyio.lowlevel.checkpoint()  # let increase reserve its instances
            statuses = await group.update()
            seen = [s.id for s in statuses]
            assert {s.state for s in statuses} == {ProviderState.CREATING}
            assert await group.decrease(seen) == seen
        assert accepted == [3]
        states = {s.id: s.state for s in await group.update()}
        assert states == dict.fromkeys(seen, ProviderState.DELETED)
        assert processes_under(tmp_path) == []


@pytest.mark.anyio
async def test_increase_stops_at_max_instances(tmp_path: Path) -> None:
    """increase accepts only what fits under max_instances, counting instances being deleted."""
    async with local_group(tmp_path, max_instances=2) as group:
        assert await group.increase(5) == 2
        assert await group.increase(1) == 0
        assert len(instances_up(tmp_path / "fleet-test")) == 2


@pytest.mark.anyio
async def test_second_live_group_for_same_owner_is_refused(tmp_path: Path) -> None:
    """Two live groups with one root and owner would sweep each other: the second init fails."""
    async with local_group(tmp_path) as group:
        await group.increase(1)
        rival = LocalInstanceGroup(root=tmp_path, owner="fleet-test")
        with pytest.raises(ProviderError, match="another live local provider"):
            await rival.init()
        assert len(instances_up(tmp_path / "fleet-test")) == 1


@pytest.mark.anyio
async def test_other_owner_on_same_root_is_left_alone(tmp_path: Path) -> None:
    """A group only sweeps its own owner's directory, never another owner's instances."""
    async with local_group(tmp_path, owner="fleet-a") as first:
        await first.increase(1)
        async with local_group(tmp_path, owner="fleet-b") as second:
            await second.increase(1)
            assert len(instances_up(tmp_path / "fleet-a")) == 1
            assert len(instances_up(tmp_path / "fleet-b")) == 1
        assert len(instances_up(tmp_path / "fleet-a")) == 1


@pytest.mark.anyio
async def test_static_credentials_are_authorized(tmp_path: Path) -> None:
    """With use_static_credentials and key_path, the given key is authorised and handed out."""
    key_path = tmp_path / "static_key"
    private, _public = generate_keypair(key_path)
    config = ConnectorConfig(use_static_credentials=True, key_path=str(key_path))
    async with local_group(tmp_path / "root", connector_config=config) as group:
        await group.increase(1)
        (instance_id,) = await running_ids(group, 1)
        info = await group.connect_info(instance_id)
        assert info.key == private
        assert info.use_static_credentials
        assert await ssh_run(info, "echo ok") == "ok\n"


@pytest.mark.anyio
async def test_dynamic_credentials_with_key_path_install_that_key(tmp_path: Path) -> None:
    """Under dynamic credentials a key_path was ignored: now it is the key installed."""
    key_path = tmp_path / "my_key"
    private, _public = generate_keypair(key_path)
    config = ConnectorConfig(key_path=str(key_path))
    async with local_group(tmp_path / "root", connector_config=config) as group:
        await group.increase(1)
        (instance_id,) = await running_ids(group, 1)
        info = await group.connect_info(instance_id)
        assert info.key == private
        assert await ssh_run(info, "echo ok") == "ok\n"


@pytest.mark.anyio
async def test_an_unreadable_key_path_fails_init_with_its_path(tmp_path: Path) -> None:
    """A key_path that cannot be read fails init, dynamic credentials or not."""
    missing = tmp_path / "missing_key"
    group = LocalInstanceGroup.from_config(
        {"root": str(tmp_path / "root")}, ConnectorConfig(key_path=str(missing)), owner="fleet-test"
    )
    with pytest.raises(ConfigError) as exc:
        await group.init()
    await group.shutdown()
    (problem,) = exc.value.problems
    assert problem.path == "connector_config.key_path"
    assert str(missing) in problem.message


@pytest.mark.anyio
async def test_no_secret_in_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The generated private key never appears in the provider's log records."""
    caplog.set_level(logging.DEBUG, logger="fleetkit")
    async with local_group(tmp_path) as group:
        await group.increase(1)
        (instance_id,) = await running_ids(group, 1)
        info = await group.connect_info(instance_id)
    assert info.key is not None
    secret = info.key.decode().splitlines()[1]
    assert secret not in caplog.text


@pytest.mark.anyio
async def test_cancelled_increase_orphans_no_process(tmp_path: Path) -> None:
    """Cancelling increase mid-start leaves every started instance known to update, so it can be removed."""
    async with local_group(tmp_path) as group:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await group.increase(3)
        statuses = await group.update()
        assert len(statuses) == 3
        assert {s.state for s in statuses} == {ProviderState.RUNNING}
        assert len(instances_up(tmp_path / "fleet-test")) == 3
