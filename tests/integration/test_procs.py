"""fleetkit._procs against real process trees: listing, freezing and ending them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.abc
import pytest

from fleetkit._procs import (
    descendants,
    end_process,
    end_tree,
    exists,
    freeze_tree,
    wait_gone,
    wait_until,
)
from tests.integration.conftest import cmdlines_containing


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _marker() -> str:
    """A sleep duration no other process on the machine uses, to find ours by."""
    return f"3600.{uuid.uuid4().int % 10**9:09d}"


def _pids(paths: list[Path]) -> list[int]:
    return [int(path.parent.name) for path in paths]


@contextlib.asynccontextmanager
async def _shell(script: str, *markers: str) -> AsyncIterator[anyio.abc.Process]:
    """``sh -c script`` in a session of its own; afterwards every process it or
    its children started (found by ``markers``) is killed, pass or fail."""
    process = await anyio.open_process(
        ["sh", "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        with anyio.CancelScope(shield=True):
            for marker in markers:
                for pid in _pids(cmdlines_containing(marker.encode())):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            await process.aclose()


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _state(pid: int) -> str:
    return _stat_fields(pid)[0]


def _parent(pid: int) -> int:
    return int(_stat_fields(pid)[1])


async def _ready(process: anyio.abc.Process) -> None:
    """Wait for the script's ``echo ready``, sent once its traps and children are set up."""
    assert process.stdout is not None
    with anyio.fail_after(5):
        assert (await process.stdout.receive()).startswith(b"ready")


@pytest.mark.anyio
async def test_descendants_lists_the_whole_tree_and_exists_sees_ends() -> None:
    """descendants finds grandchildren; exists turns false once a process has ended."""
    marker = _marker()
    # "; true" keeps the inner sh from exec-ing sleep: sleep is a grandchild.
    script = f"sh -c 'sleep {marker}; true' & echo ready; wait"
    async with _shell(script, marker) as process:
        await _ready(process)
        with anyio.fail_after(5):
            await wait_until(lambda: bool(cmdlines_containing(f"sleep\0{marker}".encode())))
        (sleeper,) = _pids(cmdlines_containing(f"sleep\0{marker}".encode()))
        tree = descendants(process.pid)
        assert sleeper in tree
        assert _parent(sleeper) in tree
        assert exists(sleeper)
        os.kill(sleeper, signal.SIGKILL)
        with anyio.fail_after(5):
            await wait_gone([sleeper])
        assert not exists(sleeper)
    assert descendants(process.pid) == []


@pytest.mark.anyio
async def test_end_tree_ends_what_a_process_forks_while_being_terminated() -> None:
    """A process that answers TERM by starting an orphan in its session and exiting
    leaves nothing behind: the orphan is found by session and killed."""
    marker, inner = _marker(), _marker()
    script = f"trap 'sleep {marker} & exit 0' TERM; sleep {inner} & echo ready; wait"
    async with _shell(script, marker, inner) as process:
        await _ready(process)
        # Until the background sleep has exec'd, it is a copy of sh that still
        # has the TERM trap and would swallow the TERM.
        with anyio.fail_after(5):
            await wait_until(lambda: bool(cmdlines_containing(f"sleep\0{inner}".encode())))
        await end_tree([process.pid], grace=5)
        assert _pids(cmdlines_containing(marker.encode())) == []
        assert _pids(cmdlines_containing(inner.encode())) == []
        assert not exists(process.pid)


@pytest.mark.anyio
async def test_end_process_ends_the_tree_then_reaps_the_process() -> None:
    """end_process ends a started process and its child, and leaves the process
    reaped with its exit status; on one already ended it only reaps."""
    inner = _marker()
    async with _shell(f"sleep {inner} & echo ready; wait", inner) as process:
        await _ready(process)
        with anyio.fail_after(5):
            await wait_until(lambda: bool(cmdlines_containing(f"sleep\0{inner}".encode())))
        await end_process(process, grace=5)
        assert process.returncode == -signal.SIGTERM
        assert _pids(cmdlines_containing(inner.encode())) == []
    async with _shell("exit 3") as process:
        with anyio.fail_after(5):
            await wait_until(lambda: not exists(process.pid))
        await end_process(process, grace=5)
        assert process.returncode == 3


@pytest.mark.anyio
async def test_freeze_tree_stops_a_tree_that_keeps_forking() -> None:
    """freeze_tree returns a stopped tree: a shell forking in a loop has no child
    outside what it froze, and no process of it is still running."""
    marker = _marker()
    script = f"echo ready; while :; do sleep {marker} & done"
    async with _shell(script, marker) as process:
        await _ready(process)
        with anyio.fail_after(5):
            await wait_until(lambda: len(descendants(process.pid)) >= 3)
        frozen = await freeze_tree([process.pid])
        try:
            assert process.pid in frozen
            live = [pid for pid in descendants(process.pid) if exists(pid)]
            assert len(live) >= 2
            assert set(live) <= set(frozen)
            assert {_state(pid) for pid in [process.pid, *live]} <= {"T", "t"}
        finally:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.anyio
async def test_freeze_tree_spares_this_process_and_its_ancestors() -> None:
    """Asked to freeze this process and its parent, freeze_tree stops nothing
    (neither them nor, through the parent, the rest of its children)."""
    assert await freeze_tree([os.getpid(), os.getppid()]) == []


class _ReapWitness(anyio.abc.Process):
    """A process whose ``wait()`` first lets asyncio's child watcher reap it:
    until then the watcher is held, as a loaded machine may hold it, so the
    process stays a zombie that only someone else's ``waitpid`` could take."""

    def __init__(self, process: anyio.abc.Process, let_go: threading.Event) -> None:
        self._process, self._let_go = process, let_go

    async def wait(self) -> int:
        self._let_go.set()
        return await self._process.wait()

    def terminate(self) -> None:
        self._process.terminate()

    def kill(self) -> None:
        self._process.kill()

    def send_signal(self, signum: signal.Signals) -> None:
        self._process.send_signal(signum)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    @property
    def stdin(self) -> anyio.abc.ByteSendStream | None:
        return self._process.stdin

    @property
    def stdout(self) -> anyio.abc.ByteReceiveStream | None:
        return self._process.stdout

    @property
    def stderr(self) -> anyio.abc.ByteReceiveStream | None:
        return self._process.stderr

    async def aclose(self) -> None:
        await self._process.aclose()


@pytest.mark.anyio
async def test_end_process_leaves_the_reaping_of_an_ended_process_to_its_runner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process that has just ended is a zombie until asyncio's watcher thread
    reaps it. end_process must not signal it then: Popen.send_signal polls
    first, reaps it in the watcher's place, and the watcher reports 'Unknown
    child process pid ..., will report returncode 255' instead of its status."""
    let_go = threading.Event()
    real_waitpid = os.waitpid

    def held_waitpid(pid: int, options: int) -> tuple[int, int]:
        if threading.current_thread().name.startswith("asyncio-waitpid"):
            let_go.wait(timeout=60)
        return real_waitpid(pid, options)

    monkeypatch.setattr(os, "waitpid", held_waitpid)
    process = await anyio.open_process(["sh", "-c", "exit 3"])
    with anyio.fail_after(30):
        await wait_until(lambda: not exists(process.pid))  # a zombie now
        await end_process(_ReapWitness(process, let_go), grace=1)
    assert process.returncode == 3
