"""The POSIX shell script a remote command runs in.

An SSH server runs the command line it is sent with the login user's shell, so
every argument and environment value is quoted with :func:`shlex.quote`
(single quotes; nothing inside them is special), which makes any string
without NUL arrive byte for byte. Environment goes in as ``export`` lines
rather than SSH ``env`` requests, which OpenSSH drops unless ``AcceptEnv``
lists the name.

Why a wrapper at all: closing an SSH channel leaves the remote process running,
and OpenSSH delivers a ``signal`` request to the session's shell only, not its
children. The wrapper runs the command as a background job and waits for it, so
a TERM reaches the wrapper's trap at once (a shell defers traps until a
foreground child ends), and the trap sends TERM to the whole process group,
which sshd made the wrapper lead (it calls ``setsid`` per session). Costs:
like every background job of a non-interactive shell, the command starts with
SIGINT and SIGQUIT ignored; and since ``wait`` reports death by signal N as
status 128+N, the wrapper re-raises signals 1-15 on itself so that the server
reports ``exit-signal``: a command that itself exits 129-143 is reported as
killed by that signal.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

__all__ = ["remote_script"]

_PROLOGUE = "trap 'trap - TERM; kill -TERM 0' TERM\nexec 3<&0\n{\n"
_EPILOGUE = (
    "\n} 0<&3 3<&- &\n"
    "wait $! 2>/dev/null\n"
    "s=$?\n"
    "trap - TERM\n"
    "case $s in 129|13[0-9]|14[0-3]) kill -$((s - 128)) $$ ;; esac\n"
    "exit $s\n"
)


def command_line(command: str | Sequence[str]) -> str:
    """A shell command line: a line as given, an argument vector quoted."""
    return command if isinstance(command, str) else shlex.join(command)


def exports(env: Mapping[str, str]) -> str:
    """``export NAME='value'`` lines; names must already be validated."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def remote_script(command: str | Sequence[str], env: Mapping[str, str]) -> str:
    """The full script sent as an SSH exec request for ``command`` with ``env``."""
    return f"{_PROLOGUE}{exports(env)}{command_line(command)}{_EPILOGUE}"
