"""FakeConnector (fleetkit.testing.connector): scripted answers in anyio time, under MockClock."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.abc
import pytest
import trio.testing

from fleetkit.connector import CommandResult
from fleetkit.errors import CommandTimeout, ConnectionLost, ConnectTimeout
from fleetkit.model import ConnectInfo
from fleetkit.testing.connector import FakeCall, FakeConnector

INFO = ConnectInfo(id="i-1", internal_addr="10.0.0.1")


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


@pytest.mark.anyio
async def test_rules_answer_newest_first_and_default_otherwise() -> None:
    """The newest matching rule answers; an unmatched command gets the default."""
    fake = FakeConnector()
    fake.on("echo", CommandResult(0, b"old", b""))
    fake.on("echo hi", CommandResult(0, b"new", b""))
    async with fake.connect(INFO) as conn:
        assert (await conn.run(["echo", "hi"])).stdout == b"new"
        assert (await conn.run("echo other")).stdout == b"old"
        assert (await conn.run("true")).exit_code == 0
    assert fake.commands() == ["echo hi", "echo other", "true"]


@pytest.mark.anyio
async def test_calls_record_env_and_stdin() -> None:
    """Each call records its instance, environment and stdin."""
    fake = FakeConnector()
    async with fake.connect(INFO) as conn:
        await conn.run("cat", env={"A": "1"}, stdin="data")
    assert fake.calls == [FakeCall("i-1", "cat", {"A": "1"}, b"data", None)]


@pytest.mark.anyio
async def test_delay_past_timeout_raises_in_virtual_time() -> None:
    """A rule slower than the command's timeout raises CommandTimeout after exactly the timeout."""
    fake = FakeConnector()
    fake.on("^make", CommandResult(0, b"", b""), delay=600)
    start = anyio.current_time()
    async with fake.connect(INFO) as conn:
        with pytest.raises(CommandTimeout):
            await conn.run("make test", timeout=30)
    assert anyio.current_time() - start == pytest.approx(30)


@pytest.mark.anyio
async def test_times_limits_a_rule_and_errors_are_raised() -> None:
    """A rule with times answers that often; an error answer is raised."""
    fake = FakeConnector()
    fake.on("probe", ConnectionLost("i-1: gone"), times=1)
    async with fake.connect(INFO) as conn:
        with pytest.raises(ConnectionLost):
            await conn.run("probe")
        assert (await conn.run("probe")).ok


@pytest.mark.anyio
async def test_connect_failures_are_scripted_per_instance() -> None:
    """fail_connect makes the next connects to one instance fail, then succeed."""
    fake = FakeConnector()
    fake.fail_connect("i-1", ConnectTimeout("i-1: booting"), times=2)
    for _ in range(2):
        with pytest.raises(ConnectTimeout):
            async with fake.connect(INFO):
                pass
    async with fake.connect(INFO) as conn:
        assert (await conn.run("true")).ok
    assert fake.connects == ["i-1"] * 3


@pytest.mark.anyio
async def test_stream_gives_output_and_status(tmp_path: Path) -> None:
    """The streaming form yields the scripted output and exit status; files round-trip."""
    fake = FakeConnector()
    fake.on("build", CommandResult(3, b"x" * 100_000, b"warn"))
    async with fake.connect(INFO) as conn:
        async with conn.stream("build") as proc:
            out = b"".join([chunk async for chunk in proc.stdout])
            status = await proc.wait()
        source = tmp_path / "a"
        source.write_bytes(b"payload")
        await conn.upload(source, "/remote/a")
        await conn.download("/remote/a", tmp_path / "b")
    assert (len(out), status.exit_code) == (100_000, 3)
    assert (tmp_path / "b").read_bytes() == b"payload"


@pytest.mark.anyio
async def test_forward_carries_each_connection_over_its_own_tunnel(tmp_path: Path) -> None:
    """A connection's forward (the generic one, over open_tunnel) gives a socket in
    a 0700 directory; each dial opens one tunnel; the directory is gone afterwards."""
    far = tmp_path / "far.sock"
    fake = FakeConnector()
    opened: list[str] = []

    async def dial_far() -> anyio.abc.ByteStream:
        opened.append("far")
        return await anyio.connect_unix(far)

    fake.on_tunnel("/run/far.sock", dial_far)

    async def shout(client: anyio.abc.SocketStream) -> None:
        async with client:
            async for chunk in client:
                await client.send(chunk.upper())

    async with (
        await anyio.create_unix_listener(far) as listener,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(listener.serve, shout)
        async with fake.connect(INFO) as conn, conn.forward("/run/far.sock") as local:
            assert isinstance(local, str)
            assert (await anyio.Path(local).parent.stat()).st_mode & 0o777 == 0o700
            for word in (b"one", b"two"):
                async with await anyio.connect_unix(local) as client:
                    await client.send(word)
                    assert await client.receive() == word.upper()
        assert not await anyio.Path(local).parent.exists()
        assert opened == ["far", "far"]
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_connect_records_the_connection_dialled_through() -> None:
    """connect(via=...) is recorded per instance id."""
    fake = FakeConnector()
    async with fake.connect(INFO) as outer, fake.connect(ConnectInfo(id="vm-1"), via=outer):
        pass
    assert fake.vias == {"vm-1": outer}
