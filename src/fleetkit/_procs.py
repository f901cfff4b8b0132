"""Process trees on Linux, read from ``/proc``: find them, end them, wait for them.

Shared by the throwaway sshd (:mod:`fleetkit._sshd`), the local provider
(:mod:`fleetkit.provider.local`) and the local connector
(:mod:`fleetkit.connector.local`), which all end processes they did not start
themselves: sshd's per-connection children and the sessions those run, and
whatever a command forked.

Ending a tree without a race
----------------------------
Listing a tree and then signalling it misses whatever is forked in between, and
a process whose parent has ended is no longer below the root at all (it belongs
to init now). :func:`end_tree` therefore first *freezes* the tree: it sends
``SIGSTOP`` to every process it finds, waits until each one has actually
stopped (a stopped process forks no more, and any child it forked just before
is visible by then) and lists again, until a listing finds nothing new. Only
then are the frozen processes sent ``SIGTERM`` (and ``SIGCONT``, so they can act
on it). What they fork while handling ``SIGTERM`` is found in a second freeze
before ``SIGKILL``: below a process still alive, or in a session that a process
of the tree created (sshd calls ``setsid()`` for each connection and each
session shell, and an orphan keeps its session).

The one escape left is a process that calls ``setsid()`` itself and whose parent
ends before the second freeze (a deliberate daemon); only a cgroup would hold it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

__all__ = [
    "descendants",
    "end_detached",
    "end_process",
    "end_tree",
    "exists",
    "freeze_tree",
    "signal_all",
    "spawn_detached",
    "wait_gone",
    "wait_until",
]

_POLL_INTERVAL = 0.005
# How long a process may take to reach the stopped state (one in uninterruptible
# sleep stops only when its system call returns), and to vanish after SIGKILL.
_STOP_TIMEOUT = 1.0
_KILL_TIMEOUT = 1.0
_GONE_STATES = frozenset("ZXx")
_STOPPED_STATES = frozenset("Tt")


def _stat(pid: int | str) -> tuple[str, int, int] | None:
    """State, parent pid and session id of ``pid`` (None when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (the command) may hold spaces and parentheses: split after its
    # closing parenthesis, where field 3 (state) starts.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[3])


def _table() -> dict[int, tuple[str, int, int]]:
    """State, parent and session of every process, keyed by pid."""
    table: dict[int, tuple[str, int, int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and (stat := _stat(entry.name)) is not None:
                table[int(entry.name)] = stat
    return table


def _below(roots: Iterable[int], table: dict[int, tuple[str, int, int]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (_state, ppid, _sid) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (children, theirs, ...), read from /proc;
    empty when there is none or ``root`` is gone. A snapshot: see :func:`end_tree`."""
    return sorted(_below([root], _table()))


def exists(pid: int) -> bool:
    """Whether ``pid`` is a live process. A zombie counts as gone: it has ended,
    only its parent's ``wait()`` is missing."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in _GONE_STATES


def signal_all(pids: Iterable[int], signum: signal.Signals) -> None:
    """Send ``signum`` to each pid, skipping those that are gone or not ours to signal."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signum)


async def wait_until(done: Callable[[], bool], interval: float = _POLL_INTERVAL) -> None:
    """Wait until ``done()``: for state outside this process that sends no event
    (processes we did not start, files, log lines). Bound it with a cancel scope."""
    while True:
        if done():
            return
        await anyio.sleep(interval)


async def wait_gone(pids: Iterable[int]) -> None:
    """Wait until none of ``pids`` is alive (processes we did not start send no
    event when they end). Bound it with a cancel scope."""
    pids = list(pids)
    await wait_until(lambda: not any(exists(pid) for pid in pids))


def _spared() -> set[int]:
    """This process and its ancestors: never stopped, whatever a caller asks."""
    spared: set[int] = set()
    pid = os.getpid()
    while pid > 1 and pid not in spared:
        spared.add(pid)
        stat = _stat(pid)
        if stat is None:
            break
        pid = stat[1]
    spared.add(1)
    return spared


async def freeze_tree(roots: Iterable[int], sessions: set[int] | None = None) -> list[int]:
    """Stop (``SIGSTOP``) ``roots``, every process below them and every process in
    ``sessions``, repeating until a listing finds no process that is not stopped;
    return the live stopped pids.

    Sessions led by a process found here are added to ``sessions`` (pass a set to
    read them back, and to find their members again later). This process and
    its ancestors are never stopped, and what is below them only when found
    through another root or a session. The caller must signal what it froze
    (``SIGKILL``, or any signal followed by ``SIGCONT``).
    """
    sessions = set() if sessions is None else sessions
    roots = set(roots)
    spared = _spared()
    frozen: set[int] = set()
    while True:
        # Wait for the stop to take effect first: a process forks no more once
        # stopped, and a child it forked just before shows in the next listing.
        await _wait_stopped(frozen)
        table = _table()
        live = {pid for pid, (state, _, _) in table.items() if state not in _GONE_STATES}
        wanted = roots | {pid for pid, (_, _, sid) in table.items() if sid in sessions}
        # Never below a spared process either: an ancestor's children are this
        # process's siblings, not part of what the caller asked for.
        wanted -= spared
        wanted = ((wanted | _below(wanted | frozen, table)) & live) - spared
        new = wanted - frozen
        if not new:
            return sorted(frozen & live)
        sessions.update(pid for pid in new if table[pid][2] == pid)
        signal_all(new, signal.SIGSTOP)
        frozen |= new


async def _wait_stopped(pids: set[int]) -> None:
    """Wait until each of ``pids`` is stopped or gone. Bounded: one in
    uninterruptible sleep stops only when its system call returns, and it
    cannot fork before that either."""
    with anyio.move_on_after(_STOP_TIMEOUT):
        await wait_until(
            lambda: all(
                (stat := _stat(pid)) is None or stat[0] in _STOPPED_STATES | _GONE_STATES
                for pid in pids
            )
        )


async def end_tree(roots: Sequence[int], *, grace: float) -> None:
    """End ``roots`` and everything below them without missing a late fork:
    freeze, ``SIGTERM``, up to ``grace`` seconds to exit, then freeze what is left
    (and what it forked meanwhile) and ``SIGKILL`` it. See the module docstring.

    Returns once all of it is gone (zombies count as gone), or after a short
    bound past the ``SIGKILL``. Callers that started a root themselves still reap
    it. Shield it from cancellation where it must finish.
    """
    if not roots:
        return
    sessions: set[int] = set()
    frozen = await freeze_tree(roots, sessions)
    signal_all(frozen, signal.SIGTERM)
    signal_all(frozen, signal.SIGCONT)
    with anyio.move_on_after(grace):
        await wait_gone(frozen)
    left = await freeze_tree([pid for pid in frozen if exists(pid)], sessions)
    signal_all(left, signal.SIGKILL)
    with anyio.move_on_after(_KILL_TIMEOUT):
        await wait_gone(left)


def spawn_detached(argv: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
    """Start a long-lived process (an instance's sshd or keeper) in a session of
    its own and *not* through the event loop.

    Its own session: a Ctrl-C at the manager's terminal (SIGINT to the
    foreground process group) does not reach it. Not through the loop: asyncio
    kills every child it started that still runs when the loop closes, which
    would end instances that were meant to be kept. End it with
    :func:`end_detached`. Blocking only for the fork.
    """
    return subprocess.Popen(argv, start_new_session=True, **options)


async def end_detached(process: subprocess.Popen[bytes], *, grace: float) -> None:
    """End a process from :func:`spawn_detached` and everything below it (as
    :func:`end_process` does), then reap it. Shielded from cancellation."""
    with anyio.CancelScope(shield=True):
        if process.poll() is None:
            await end_tree([process.pid], grace=grace)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        await anyio.to_thread.run_sync(process.wait)


async def end_process(process: anyio.abc.Process, *, grace: float) -> None:
    """End a process this one started with :func:`end_tree` (so what it forked
    and the session it leads end too), then reap and close it. Does nothing but
    reap and close once it has ended by itself: its pid may belong to another
    process by then. Shielded from cancellation.
    """
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            await end_tree([process.pid], grace=grace)
        # Kill only what still runs (end_tree could not see it: no /proc). Not
        # a zombie whose exit the loop has not heard of yet: on asyncio,
        # kill() polls the Popen first, which reaps it in the child watcher's
        # place, and the watcher then reports "Unknown child process pid ...,
        # will report returncode 255" instead of the real status.
        if process.returncode is None and (exists(process.pid) or not _proc_visible()):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        await process.wait()
        await process.aclose()


def _proc_visible() -> bool:
    """Whether /proc shows this process (so that :func:`exists` can be trusted)."""
    return exists(os.getpid())
