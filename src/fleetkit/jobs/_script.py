"""The shell text that prepares, runs, stops and cleans up a job on an instance.

Kept apart from :mod:`fleetkit.jobs._run` so the far side's part can be read in
one place. Everything a job needs is written into ``PROJECT_DIR.tmp`` (GitLab's
place for a job's private files), mode 0700: ``env`` (the variables, masked
ones included, so that no secret ever appears on a command line, where ``ps``
would show it), the script, and ``gate``, a fifo.

The job runs under a wrapper whose text travels on its command line (no secret
in it), so a job cannot rewrite it while it runs. The wrapper starts the job's
shell in a session of its own (``setsid``) and announces that process on the
first line of its output while the job still waits at the gate; only then does
the job's shell read the variables (into itself, never into the wrapper) and
start the script. Ending the job (timeout, cancel, cleanup) signals the
announced session: nothing the job can write, its private files included,
decides what fleetkit signals.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

import attrs

__all__ = [
    "JobPaths",
    "JobSession",
    "cleanup_command",
    "kill_command",
    "parse_announcement",
    "prepare_script",
    "run_command",
    "user_script",
]

_SHELL_COMMAND = {
    "bash": ("bash", "-eo pipefail"),
    "sh": ("sh", "-e"),
    "pwsh": ("pwsh", "-NoProfile -NonInteractive -File"),
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_CGROUP_PATH = re.compile(r"/[A-Za-z0-9_./-]+\Z")


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
        """The job's private files (env, script, gate)."""
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
    besides ``rm``, ``mkdir`` and ``mkfifo``: a job's start costs little over SSH.
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
        'mkfifo -m 600 "$p.tmp/gate" || exit 1\n'
        'printf \'%s\\n\' "$s" "$b" "$p"\n'
    )


def user_script(script: str, pre_build: str | None, post_build: str | None) -> str:
    """The job's script with the runner's ``pre_build_script`` before it and
    ``post_build_script`` after it, as GitLab Runner writes its user-script
    stage: one script, which the shell's errexit ends at the first failure."""
    parts = [text for text in (pre_build, script, post_build) if text]
    return "\n".join(parts)


def parse_prepared(stdout: str) -> JobPaths:
    """Read what :func:`prepare_script` printed."""
    shared, builds_dir, project_dir = stdout.splitlines()[-3:]
    return JobPaths(builds_dir, project_dir, shared == "1")


def script_name(shell: str) -> str:
    """The script's file name (pwsh insists on ``.ps1``)."""
    return "script.ps1" if shell == "pwsh" else "script.sh"


_ANNOUNCE = "fleetkit-job"
# The child's part, run as `sh -c CHILD fleetkit-job PRIVATE_DIR`: it waits at
# the gate (a fifo) until the wrapper has announced it, and only then reads
# the job's variables, into itself only, and becomes the job's shell.
_CHILD = (
    # Into the job's cgroup (when there is one) before any of the job's code runs.
    '[ "$3" = - ] || echo 0 > "$3/cgroup.procs" 2>/dev/null\n'
    'exec 9<"$1/gate" || exit 125\n'
    "exec 9<&-\n"
    'export CI_PROJECT_DIR="${1%.tmp}"\n'
    'IFS= read -r CI_BUILDS_DIR < "$1/builds_dir"; export CI_BUILDS_DIR\n'
    '. "$1/env"\n'
    'cd "$CI_PROJECT_DIR" || exit 1\n'
)


def _wrapper(shell: str) -> str:
    # The wrapper's own names (d, j, k, c, s) are never set from the job: the
    # job's variables are read by the child alone, after the fork. The text
    # arrives on the command line, not from a file the job could rewrite while
    # the wrapper waits (a shell reads a script file as it goes).
    program, options = _SHELL_COMMAND[shell]
    # The shell is looked up before the job's variables (PATH among them) are read.
    child = (
        f'set -- "$1" "$(command -v {program})" "$2"\n'
        + _CHILD
        + f'exec "$2" {options} "$1/{script_name(shell)}"\n'
    )
    return (
        "d=$1; g=-\n"
        # A cgroup for the job below the one the instance delegated to its
        # user (FLEETKIT_CGROUP, set by the instance, never by the job): what
        # the job starts stays in it whatever it does to its session.
        'case "${FLEETKIT_CGROUP:-}" in /*)\n'
        '  mkdir "$FLEETKIT_CGROUP/job-$$" 2>/dev/null && g="$FLEETKIT_CGROUP/job-$$" ;;\n'
        "esac\n"
        f"j={shlex.quote(child)}\n"
        "if command -v setsid >/dev/null 2>&1; then\n"
        '  k=session; setsid sh -c "$j" fleetkit-job "$d" "$g" </dev/null &\n'
        "else\n"
        '  k=child; sh -c "$j" fleetkit-job "$d" "$g" </dev/null &\n'
        "fi\n"
        "c=$!\n"
        # The announcement is the first line of stdout and is printed while the
        # child still waits at the gate: no output of the job can come first.
        f'printf \'{_ANNOUNCE} %s %s %s\\n\' "$c" "$k" "$g"\n'
        # Opening the fifo read-write never blocks, and lets the child's open
        # for reading return: the gate opens.
        'exec 8<>"$d/gate"\n'
        # A TERM from the connector (cancel) reaches this shell: pass it on to
        # the job's whole session.
        "trap 'kill -TERM -$c 2>/dev/null || kill -TERM $c 2>/dev/null' TERM INT HUP\n"
        "wait $c; s=$?\n"
        "while kill -0 $c 2>/dev/null; do wait $c; s=$?; done\n"
        # Whatever the script left running in its session or cgroup ends with it.
        "kill -KILL -$c 2>/dev/null\n"
        '[ "$g" = - ] || { echo 1 > "$g/cgroup.kill"; } 2>/dev/null\n'
        "exit $s\n"
    )


def run_command(paths: JobPaths, shell: str) -> str:
    """The command that runs the job. Its first line of output is the
    announcement :func:`parse_announcement` reads; the job's output follows."""
    return f"sh -c {shlex.quote(_wrapper(shell))} fleetkit-job {shlex.quote(paths.private_dir)}"


@attrs.frozen
class JobSession:
    """The job's first process as the wrapper announced it, before any of the
    job's code ran: ``pid``, and whether it leads a session (and process group)
    of its own, which is then the job's."""

    pid: int
    leads_session: bool
    #: The job's own cgroup (v2) when the instance offers one, else None.
    cgroup: str | None = None


def parse_announcement(line: bytes) -> JobSession | None:
    """Read the wrapper's first line; ``None`` when it is not an announcement."""
    words = line.decode("ascii", errors="replace").split()
    # The cgroup word is left out by wrappers of before cgroups (and scripted ones).
    if len(words) not in (3, 4) or words[0] != _ANNOUNCE or not words[1].isdigit():
        return None
    pid = int(words[1])
    if pid <= 1 or words[2] not in {"session", "child"}:
        return None
    cgroup = None if len(words) == 3 or words[3] == "-" else words[3]
    if cgroup is not None and not _CGROUP_PATH.match(cgroup):
        return None
    return JobSession(pid, words[2] == "session", cgroup)


def kill_command(session: JobSession | None, signal: str) -> str:
    """Send ``signal`` to the job's process group (a no-op once it ended).

    The target is what the wrapper announced before the job ran: nothing the
    job can write decides which processes are signalled. Without a session of
    its own (no ``setsid`` on the instance) the job is ended through its
    wrapper alone, by the connector.
    """
    if session is None:
        return "true"
    parts = []
    if session.leads_session:
        parts.append(f"kill -{signal} -{session.pid} 2>/dev/null")
    if session.cgroup is not None:
        group = shlex.quote(session.cgroup)
        if signal == "KILL":
            parts.append(f"{{ echo 1 > {group}/cgroup.kill; }} 2>/dev/null")
        else:
            parts.append(
                f"while read -r p; do kill -{signal} $p 2>/dev/null; done "
                f"< {group}/cgroup.procs 2>/dev/null"
            )
    return "; ".join([*parts, "true"])


def cleanup_command(
    paths: JobPaths, relative: str, *, keep_project: bool, session: JobSession | None
) -> str:
    """End what is left of the job, remove its files (the project dir too unless
    kept) and the parents it leaves empty."""
    targets = [paths.private_dir] + ([] if keep_project else [paths.project_dir])
    rm = " ".join(shlex.quote(t) for t in targets)
    base = shlex.quote(paths.builds_dir)
    instance_dir, slot_dir = relative.split("/")[0], "/".join(relative.split("/")[:2])
    parents = [f"{base}/{shlex.quote(slot_dir)}", f"{base}/{shlex.quote(instance_dir)}"]
    if paths.shared_base:
        parents += [base, f'"$(dirname {base})"']
    remove_cgroup = ""
    if session is not None and session.cgroup is not None:
        # Empty only once the killed processes are gone: a few tries.
        group = shlex.quote(session.cgroup)
        remove_cgroup = (
            f"for i in 1 2 3 4 5 6 7 8 9 10; do [ -d {group} ] || break; "
            f"rmdir {group} 2>/dev/null && break; sleep 0.05; done; "
        )
    return (
        f"{kill_command(session, 'KILL')}; {remove_cgroup}rm -rf {rm}; "
        f"rmdir {' '.join(parents)} 2>/dev/null; true"
    )
