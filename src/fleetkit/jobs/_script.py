"""The shell text that prepares, runs, stops and cleans up a job on an instance.

Kept apart from :mod:`fleetkit.jobs._run` so the far side's part can be read in
one place. Everything a job needs is written into ``PROJECT_DIR.tmp`` (GitLab's
place for a job's private files), mode 0700: ``env`` (the variables, masked
ones included, so that no secret ever appears on a command line, where ``ps``
would show it), the script, and ``run.sh``, which runs the script in a session
of its own (``setsid``) so that ending the job ends every process it started:
a timeout, a cancel and the end of the job each signal that whole process group.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

import attrs

__all__ = ["JobPaths", "cleanup_command", "kill_command", "prepare_script", "run_command"]

_SHELL_COMMAND = {
    "bash": "bash -eo pipefail",
    "sh": "sh -e",
    "pwsh": "pwsh -NoProfile -NonInteractive -File",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@attrs.frozen
class JobPaths:
    """Where a job lives on its instance. ``shared_base`` is true when the builds
    directory is fleetkit's fallback under the temp dir, which cleanup removes
    once empty."""

    builds_dir: str
    project_dir: str
    shared_base: bool

    @property
    def private_dir(self) -> str:
        """The job's private files (env, script, pid)."""
        return self.project_dir + ".tmp"


def relative_project_dir(instance_id: str, slot: int, job_id: int, *, common: bool = False) -> str:
    """The project directory below the builds directory: per instance, slot and job,
    or one per instance shared by its jobs (GitLab's ``use_common_build_dir``)."""
    instance = _UNSAFE.sub("_", instance_id)
    return f"{instance}/common" if common else f"{instance}/{slot}/{job_id}"


def prepare_script(
    builds_dir: str, relative: str, shell: str, script: str, env: Mapping[str, str]
) -> str:
    """A ``sh -s`` input that makes a fresh, empty project directory, writes the
    job's private files, and prints the builds and project directories.

    A relative ``builds_dir`` is taken from the login directory when it is
    writable and not ``/``, else from ``$TMPDIR/fleetkit-UID`` (an SSH login
    user may have ``/`` as its home). One round trip, and only shell builtins
    besides ``rm`` and ``mkdir``: a job's start costs little over SSH.
    """
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    if shell == "pwsh":
        script = "$ErrorActionPreference = 'Stop'\n" + script
    return (
        f"b={shlex.quote(builds_dir)}; s=0\n"
        'case "$b" in /*) ;; *)\n'
        '  if [ "$PWD" != / ] && [ -w "$PWD" ]; then b="$PWD/$b"\n'
        '  else b="${TMPDIR:-/tmp}/fleetkit-$(id -u)/$b"; s=1; fi ;;\n'
        "esac\n"
        f'p="$b/{relative}"\n'
        'rm -rf "$p" "$p.tmp" && mkdir -p "$p" && mkdir -m 700 "$p.tmp" || exit 1\n'
        "umask 077\n"
        'printf %s "$b" > "$p.tmp/builds_dir"\n'
        f'printf %s {shlex.quote(exports)} > "$p.tmp/env"\n'
        f'printf %s {shlex.quote(script)} > "$p.tmp/{script_name(shell)}"\n'
        f'printf %s {shlex.quote(_run_sh(shell))} > "$p.tmp/run.sh"\n'
        'printf \'%s\\n\' "$s" "$b" "$p"\n'
    )


def parse_prepared(stdout: str) -> JobPaths:
    """Read what :func:`prepare_script` printed."""
    shared, builds_dir, project_dir = stdout.splitlines()[-3:]
    return JobPaths(builds_dir, project_dir, shared == "1")


def script_name(shell: str) -> str:
    """The script's file name (pwsh insists on ``.ps1``)."""
    return "script.ps1" if shell == "pwsh" else "script.sh"


def _run_sh(shell: str) -> str:
    # Run as `sh DIR/run.sh`: the private dir is $0's, the project dir its name
    # without `.tmp`; both are set before the job's variables are read.
    return (
        "d=${0%/run.sh}\n"
        'export CI_PROJECT_DIR="${d%.tmp}"\n'
        'IFS= read -r CI_BUILDS_DIR < "$d/builds_dir"; export CI_BUILDS_DIR\n'
        '. "$d/env"\n'
        'cd "$CI_PROJECT_DIR" || exit 1\n'
        "if command -v setsid >/dev/null 2>&1; then\n"
        f'  setsid {_SHELL_COMMAND[shell]} "$d/{script_name(shell)}" </dev/null &\n'
        "else\n"
        f'  {_SHELL_COMMAND[shell]} "$d/{script_name(shell)}" </dev/null &\n'
        "fi\n"
        "child=$!\n"
        'echo "$child" > "$d/pid"\n'
        # A TERM from the connector (cancel) or from the sender of kill_command
        # reaches this shell: pass it on to the job's whole session.
        "trap 'kill -TERM -$child 2>/dev/null || kill -TERM $child 2>/dev/null' TERM INT HUP\n"
        "wait $child; s=$?\n"
        "while kill -0 $child 2>/dev/null; do wait $child; s=$?; done\n"
        # Whatever the script left running in the background ends with it.
        "kill -KILL -$child 2>/dev/null\n"
        "exit $s\n"
    )


def run_command(paths: JobPaths) -> str:
    """The command that runs the job."""
    return f"sh {shlex.quote(paths.private_dir + '/run.sh')}"


def kill_command(paths: JobPaths, signal: str) -> str:
    """Send ``signal`` to the job's whole session (a no-op once it ended)."""
    pid_file = shlex.quote(paths.private_dir + "/pid")
    return (
        f'{{ IFS= read -r p < {pid_file}; }} 2>/dev/null && [ -n "$p" ] && '
        f'{{ kill -{signal} -"$p" 2>/dev/null || kill -{signal} "$p" 2>/dev/null; }}; true'
    )


def cleanup_command(paths: JobPaths, relative: str, *, keep_project: bool) -> str:
    """End what is left of the job, remove its files (the project dir too unless
    kept) and the parents it leaves empty."""
    targets = [paths.private_dir] + ([] if keep_project else [paths.project_dir])
    rm = " ".join(shlex.quote(t) for t in targets)
    base = shlex.quote(paths.builds_dir)
    instance_dir, slot_dir = relative.split("/")[0], "/".join(relative.split("/")[:2])
    parents = [f"{base}/{shlex.quote(slot_dir)}", f"{base}/{shlex.quote(instance_dir)}"]
    if paths.shared_base:
        parents += [base, f'"$(dirname {base})"']
    return (
        f"{kill_command(paths, 'KILL')}; rm -rf {rm}; rmdir {' '.join(parents)} 2>/dev/null; true"
    )
