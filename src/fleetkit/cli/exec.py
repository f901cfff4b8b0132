"""``fleetkit exec CONFIG -- COMMAND``: run one command on a slot of the fleet.

Acquires a slot (the fleet creates an instance when none is free), runs
COMMAND there with its output streamed to this process's stdout and stderr as
it comes, and exits with the command's exit status (128+N when signal N ended
it). One argument is a shell command line (``fleetkit exec c.toml -- 'make -j4
&& make test'``); several are an argument vector passed as is. The instances
this command made are deleted at the end unless ``--keep-instances``.

Exit status: the command's; 125 when fleetkit could not run it (invalid
config, no slot in time, instance unreachable); 130 after Ctrl-C, which ends
the remote command first.
"""

from __future__ import annotations

import argparse
import signal
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from fleetkit.cli._common import (
    INTERRUPTED,
    add_fleet_arguments,
    fail,
    interruptible,
    positive_seconds,
    run_async,
    runner_choice,
    watch_signals,
)
from fleetkit.errors import FleetkitError

if TYPE_CHECKING:
    # anyio and the executor are imported where used, so that other commands
    # (`fleetkit validate`) load no event loop through this module.
    import anyio.abc

    from fleetkit.connector import Connection
    from fleetkit.executor import InstanceExecutor

__all__ = ["FLEETKIT_FAILED", "register", "run"]

#: Exit status when fleetkit itself could not run the command (as `docker run`).
FLEETKIT_FAILED = 125

_SIGNALS = {s.name.removeprefix("SIG"): int(s) for s in signal.Signals}


def _add_options(parser: argparse.ArgumentParser) -> None:
    add_fleet_arguments(parser)
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=positive_seconds,
        help="end the command after this many seconds (> 0; exit status 124, as timeout(1))",
    )


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``exec`` to the ``fleetkit`` command."""
    parser = commands.add_parser(
        "exec",
        help="run one command on a slot of the fleet, output streamed, exit code passed through",
        description="Acquire a slot of the fleet CONFIG describes and run COMMAND there. "
        "One argument is a shell command line, several an argument vector. Options may "
        "come before CONFIG or between CONFIG and --.",
    )
    parser.add_argument("config", metavar="CONFIG", type=Path, help="path to config.toml")
    _add_options(parser)
    parser.add_argument("command", metavar="-- COMMAND", nargs=argparse.REMAINDER)
    parser.set_defaults(run=run)


def _split(args: argparse.Namespace) -> list[str] | None:
    """The command after ``--``, parsing options written before it into ``args``."""
    rest: list[str] = list(args.command)
    if "--" not in rest:
        return rest
    cut = rest.index("--")
    if cut:
        # argparse stops at the first positional after CONFIG; read the rest here.
        late = argparse.ArgumentParser(prog="fleetkit exec", add_help=False)
        _add_options(late)
        try:
            late.parse_args(rest[:cut], namespace=args)
        except SystemExit:
            return None
    return rest[cut + 1 :]


@interruptible
def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit status."""
    from fleetkit.config import load
    from fleetkit.executor import build, select_runner

    command = _split(args)
    if command is None:
        return 2
    if not command:
        print("fleetkit exec: no COMMAND given (fleetkit exec CONFIG -- COMMAND)", file=sys.stderr)
        return 2
    target: str | list[str] = command[0] if len(command) == 1 else command
    try:
        # One runner's fleet: the one named, or the only one fleetkit drives.
        index, _, _ = select_runner(
            load(args.config), runner_choice(args.runner), source=str(args.config)
        )
        executor = build(args.config, index, delete_instances_on_shutdown=not args.keep_instances)
        return run_async(_main, executor, target, args.timeout)
    except FleetkitError as exc:
        return fail("exec", exc, FLEETKIT_FAILED)


def _say(text: str) -> None:
    # Progress goes to a terminal only: scripts read stderr as the command's own.
    if sys.stderr.isatty():
        print(f"fleetkit exec: {text}", file=sys.stderr, flush=True)


async def _main(executor: InstanceExecutor, command: str | list[str], limit: float | None) -> int:
    import anyio

    from fleetkit.errors import CommandTimeout

    status = FLEETKIT_FAILED
    interrupted = False
    # Cancelled by Ctrl-C: ends the command (the connector ends the remote
    # process), then the executor deletes what it made.
    work = anyio.CancelScope()

    def stop(_: signal.Signals) -> None:
        nonlocal interrupted
        interrupted = True
        work.cancel()

    async with anyio.create_task_group() as tg:
        # Signals are ours before the first instance can be made.
        await tg.start(partial(watch_signals, stop, signal.SIGINT, signal.SIGTERM))
        try:
            async with executor:
                with work:
                    _say("waiting for a slot")
                    async with executor.fleet.acquire(f"exec-{id(executor):x}") as slot:
                        if slot.connect_info is None:
                            raise FleetkitError(f"instance {slot.instance_id} has no connect info")
                        _say(f"running on {slot.instance_id} slot {slot.number}")
                        async with executor.connector.connect(slot.connect_info) as conn:
                            try:
                                status = await _stream(conn, command, limit)
                            except CommandTimeout:
                                status = 124
        finally:
            tg.cancel_scope.cancel()
    return INTERRUPTED if interrupted else status


async def _stream(conn: Connection, command: str | list[str], limit: float | None) -> int:
    import anyio

    async with conn.stream(command, timeout=limit) as proc:
        await proc.stdin.aclose()
        async with anyio.create_task_group() as pumps:
            pumps.start_soon(_pump, proc.stdout, sys.stdout.buffer)
            pumps.start_soon(_pump, proc.stderr, sys.stderr.buffer)
            ended = await proc.wait()
    if ended.exit_code is not None:
        return int(ended.exit_code)
    return 128 + _SIGNALS.get(ended.signal or "", 0)


async def _pump(stream: anyio.abc.ByteReceiveStream, out: BinaryIO) -> None:
    async for chunk in stream:
        # A terminal or pipe takes small writes at once; a full pipe should
        # hold the remote command back (flow control), as it does here.
        out.write(chunk)
        out.flush()
