"""Both output streams of a command: reading only one never deadlocks, merging and
discarding stderr; against real OpenSSH and the local connector."""

from __future__ import annotations

import anyio
import pytest

from fleetkit.connector import STREAM_BUFFER, Connection
from fleetkit.errors import ConfigError

pytestmark = pytest.mark.integration

FIVE_MB = 5 * 1024 * 1024
# 5 MB of stderr, then a line on stdout: a reader of stdout alone waits for the
# command to get past its stderr.
NOISY = f"head -c {FIVE_MB} /dev/zero >&2; echo done"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def read_all(stream: anyio.abc.ByteReceiveStream) -> bytes:
    return b"".join([chunk async for chunk in stream])


@pytest.mark.anyio
async def test_reading_only_stdout_of_a_command_with_5mb_of_stderr_does_not_hang(
    conn: Connection,
) -> None:
    """stdout read alone reaches its end and the command exits; the unread stderr keeps
    its first STREAM_BUFFER bytes (the rest is dropped rather than block the command)."""
    with anyio.fail_after(60):
        async with conn.stream(NOISY) as proc:
            assert await read_all(proc.stdout) == b"done\n"
            status = await proc.wait()
            kept = await read_all(proc.stderr)
    assert status.exit_code == 0
    assert STREAM_BUFFER <= len(kept) < FIVE_MB
    assert getattr(proc, "dropped") == (0, FIVE_MB - len(kept))  # noqa: B009


@pytest.mark.anyio
async def test_reading_only_stderr_of_a_command_with_5mb_of_stdout_does_not_hang(
    conn: Connection,
) -> None:
    """The same the other way round."""
    with anyio.fail_after(60):
        async with conn.stream(f"head -c {FIVE_MB} /dev/zero; echo done >&2") as proc:
            assert await read_all(proc.stderr) == b"done\n"
            assert (await proc.wait()).exit_code == 0


@pytest.mark.anyio
async def test_both_streams_read_lose_nothing(conn: Connection) -> None:
    """run() reads both streams as they come: 5 MB of stderr arrives whole."""
    result = await conn.run(NOISY)
    assert (len(result.stderr), result.stdout) == (FIVE_MB, b"done\n")


@pytest.mark.anyio
async def test_merged_stream_keeps_the_commands_order(conn: Connection) -> None:
    """stderr="stdout" gives both streams in one, in the order the command wrote them."""
    line = "echo 1; echo 2 >&2; echo 3; echo 4 >&2"
    result = await conn.run(line, stderr="stdout")
    assert (result.stdout, result.stderr) == (b"1\n2\n3\n4\n", b"")
    argv = await conn.run(["sh", "-c", "echo a; echo b >&2"], stderr="stdout")
    assert argv.stdout == b"a\nb\n"
    async with conn.stream(NOISY, stderr="stdout") as proc:
        merged = await read_all(proc.stdout)
    assert (len(merged), merged[-5:]) == (FIVE_MB + 5, b"done\n")


@pytest.mark.anyio
async def test_discarded_stderr(conn: Connection) -> None:
    """stderr="discard" drops stderr on the far side."""
    result = await conn.run(NOISY, stderr="discard")
    assert (result.stdout, result.stderr, result.exit_code) == (b"done\n", b"", 0)


@pytest.mark.anyio
async def test_a_bad_stderr_mode_names_the_argument(conn: Connection) -> None:
    """An unknown stderr= is refused, naming it."""
    with pytest.raises(ConfigError, match=r"stream\.stderr: expected"):
        await conn.run("true", stderr="both")  # type: ignore[arg-type]
