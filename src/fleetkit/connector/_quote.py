"""The POSIX shell script a remote command runs in, and its environment.

An SSH server runs the command line it is sent with the login user's shell.
An argument vector is quoted with :func:`shlex.quote` (single quotes; nothing
inside them is special), so any string without NUL arrives byte for byte.

Environment values never appear in that command line: anyone on the instance
can read a process's arguments (``ps``), and values are often secrets (job
tokens). Nor do they go as SSH ``env`` requests, which OpenSSH drops unless
``AcceptEnv`` lists the name. They are the first lines of the command's
standard input: one line per variable, with backslash and newline written as
``printf %b`` octal escapes, which the script reads (``read -r``, one byte at a
time from a pipe, so the command still gets the rest of its input whole),
decodes and exports before the command starts.

Why a wrapper at all: closing an SSH channel leaves the remote process running,
and OpenSSH delivers a ``signal`` request to the session's shell only, not its
children. The wrapper runs the command as a background job and waits for it, so
a TERM reaches the wrapper's trap at once (a shell defers traps until a
foreground child ends), and the trap sends TERM to the whole process group,
which sshd made the wrapper lead (it calls ``setsid`` per session). A
watchdog does the same when the session's sshd disappears (the client
vanished), checking once a second. Costs:
like every background job of a non-interactive shell, the command starts with
SIGINT and SIGQUIT ignored; and since ``wait`` reports death by signal N as
status 128+N, the wrapper re-raises signals 1-15 on itself so that the server
reports ``exit-signal``: a command that itself exits 129-143 is reported as
killed by that signal.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

__all__ = ["env_header", "remote_script"]

# TERM goes to the wrapper's own process group (-$$), which exists only when
# the wrapper leads it, as under sshd; otherwise only the wrapper is ended, so
# a server that does not call setsid never has a group beyond ours signalled.
# `kill -TERM -PGID` is the one form dash, bash and busybox all take (dash
# rejects both `--` and `-s TERM -PGID`).
_TRAP = "trap 'trap - TERM; kill -TERM -$$ 2>/dev/null || kill -TERM $$' TERM\n"
# Expansions are quoted: the command's environment may set IFS.
#
# The watchdog ends the command when the session's sshd (the wrapper's parent)
# is gone: a client that vanished without a word would otherwise leave the
# command running for good. It also stops when the wrapper is gone ($$ is the
# wrapper's pid in a subshell). /proc where there is one, else ps: kill -0
# would mistake a parent owned by another user for a dead one.
_RUN = (
    "p=$PPID\n"
    "(\n"
    '  if [ -d /proc/$$ ]; then up() { [ -d /proc/"$1" ]; }\n'
    '  else up() { ps -p "$1" >/dev/null 2>&1; }; fi\n'
    '  while up "$p" && up "$$"; do sleep 1; done\n'
    '  kill -TERM -"$$" 2>/dev/null\n'
    ") </dev/null >/dev/null 2>&1 &\n"
    "w=$!\n"
    "exec 3<&0\n{\n"
)
_EPILOGUE = (
    "\n} 0<&3 3<&- &\n"
    'wait "$!" 2>/dev/null\n'
    "s=$?\n"
    'kill "$w" 2>/dev/null\n'
    "trap - TERM\n"
    'case "$s" in 129|13[0-9]|14[0-3]) kill -"$((s - 128))" "$$" ;; esac\n'
    'exit "$s"\n'
)
# Three octal digits after \0 always, so a digit that follows is never taken
# into the escape.
_ESCAPES = str.maketrans({"\\": "\\0134", "\n": "\\0012"})


def command_line(command: str | Sequence[str]) -> str:
    """A shell command line: a line as given, an argument vector quoted."""
    return command if isinstance(command, str) else shlex.join(command)


def env_reader(env: Mapping[str, str]) -> str:
    """Script lines that read, decode and export each variable from stdin;
    names must already be validated."""
    # Read into a scratch variable: "IFS= read -r IFS" would lose the value
    # when the shell restores IFS after the read.
    lines = "".join(
        "IFS= read -r fleetkit_v || exit 125\n"
        f"{name}=$(printf '%bx' \"$fleetkit_v\")\n"
        f'{name}="${{{name}%x}}"\n'
        f"export {name}\n"
        for name in env
    )
    return f"{lines}unset fleetkit_v\n" if lines else ""


def env_header(env: Mapping[str, str]) -> bytes:
    """The stdin lines :func:`env_reader` reads: one escaped value a line."""
    return "".join(value.translate(_ESCAPES) + "\n" for value in env.values()).encode()


def remote_script(command: str | Sequence[str], env: Mapping[str, str]) -> str:
    """The script sent as an SSH exec request for ``command``; send
    :func:`env_header` of the same ``env`` first on its stdin."""
    return f"{_TRAP}{env_reader(env)}{_RUN}{command_line(command)}{_EPILOGUE}"
