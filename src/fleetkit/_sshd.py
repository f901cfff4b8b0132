"""A throwaway OpenSSH server on a loopback port, for tests, benchmarks and the
local provider.

:class:`SSHDaemon` writes its own config, host key and ``authorized_keys`` into a
working directory, checks the config with ``sshd -t`` and runs
``sshd -D -e -f CONFIG`` in the foreground, logging to ``WORKDIR/sshd.log``.
Nothing system-wide changes except, when running as root, the one dedicated login
user that :func:`ensure_login_user` creates on demand and ``/run/sshd`` (the
privilege separation directory sshd refuses to start without).

Why a dedicated login user: logging in as root runs root's ``~/.bashrc`` before
every command (on this kind of machine it starts pyenv, ~150 ms a command), so as
root the daemon lets a user whose shell is ``/bin/sh`` log in instead.
"""

from __future__ import annotations

import getpass
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.abc

from fleetkit._owned import UnsafePath, open_own_file, own_dir, write_own_file
from fleetkit._procs import end_detached, spawn_detached, wait_until
from fleetkit._resource import AsyncResource

__all__ = [
    "SSHDaemon",
    "SSHDaemonError",
    "ensure_login_user",
    "generate_keypair",
    "sshd_available",
]

_DEFAULT_USER = "fleetkit"
_START_TIMEOUT = 10.0
_STOP_GRACE = 5.0
_PRIVSEP_DIR = Path("/run/sshd")
# useradd exits 9 when the name exists (another process won the race) and 10
# when it cannot lock /etc/passwd (another useradd is running): retry those.
_USERADD_EXISTS = 9
_USERADD_LOCKED = 10


class SSHDaemonError(RuntimeError):
    """The throwaway sshd could not be configured or started. Raised by
    :meth:`SSHDaemon.start` and :func:`ensure_login_user`; the message carries
    sshd's own output."""


def sshd_available(sshd_path: str = "/usr/sbin/sshd") -> bool:
    """Whether an OpenSSH server and ``ssh-keygen`` are installed here."""
    return os.access(sshd_path, os.X_OK) and shutil.which("ssh-keygen") is not None


def generate_keypair(path: Path) -> tuple[bytes, str]:
    """Create an ed25519 key pair at ``path`` (private) and ``path.pub`` with
    ``ssh-keygen``, replacing any existing pair.

    Returns the private key bytes (OpenSSH format) and the public key line
    (``ssh-ed25519 AAAA...``, without comment). Blocking: call it through
    ``anyio.to_thread.run_sync`` from async code.
    """
    for stale in (path, path.with_name(path.name + ".pub")):
        stale.unlink(missing_ok=True)
    done = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise SSHDaemonError(
            f"ssh-keygen failed for {path}: {done.stderr.decode(errors='replace').strip()}"
        )
    public = path.with_name(path.name + ".pub").read_text().split()
    return path.read_bytes(), " ".join(public[:2])


def ensure_login_user(name: str = _DEFAULT_USER, *, comment: str | None = None) -> str:
    """Return the user the throwaway sshd lets log in, creating it if needed.

    Not root: the current user, unchanged. Root: a dedicated unprivileged user
    ``name`` with no home directory (home ``/``) and shell ``/bin/sh``, created
    with ``useradd -M -d / -s /bin/sh NAME``; its password is then set to ``*``
    (``usermod -p '*'``) because with PAM off sshd refuses a "locked" account
    (``!`` in /etc/shadow) even for key logins. Idempotent and safe to race:
    an existing user is reused as it is. Blocking.

    With ``comment``, the user is made with that GECOS field, and an existing
    user is reused only when its GECOS field is ``comment`` (it is then
    fleetkit's own, not someone's account that happens to have the name);
    otherwise :class:`SSHDaemonError` is raised.
    """
    if os.geteuid() != 0:
        return getpass.getuser()
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        _run_useradd(name, comment)
        entry = pwd.getpwnam(name)
    if comment is not None and (entry.pw_gecos != comment or entry.pw_uid == 0):
        raise SSHDaemonError(
            f"user {name} exists but is not fleetkit's (GECOS {entry.pw_gecos!r}, "
            f"expected {comment!r}); fleetkit will not run jobs as it"
        )
    if _shadow_locked(name):
        _run_checked(["usermod", "-p", "*", name], f"usermod -p '*' {name}")
    return name


def _run_useradd(name: str, comment: str | None = None) -> None:
    command = ["useradd", "-M", "-d", "/", "-s", "/bin/sh", name]
    if comment is not None:
        command[1:1] = ["-c", comment]
    for _attempt in range(20):
        done = subprocess.run(command, capture_output=True, check=False)
        if done.returncode in (0, _USERADD_EXISTS):
            return
        if done.returncode != _USERADD_LOCKED:
            break
        # A concurrent useradd holds the lock for milliseconds; this runs in a
        # worker thread, so a short blocking wait is fine here.
        subprocess.run(["sleep", "0.05"], check=False)
    raise SSHDaemonError(
        f"useradd {name} failed (exit {done.returncode}): "
        f"{done.stderr.decode(errors='replace').strip()}"
    )


def _shadow_locked(name: str) -> bool:
    try:
        lines = Path("/etc/shadow").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split(":")
        if fields[0] == name and len(fields) > 1:
            return fields[1].startswith("!")
    return False


def _run_checked(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, check=False)
    if done.returncode != 0:
        raise SSHDaemonError(f"{what} failed: {done.stderr.decode(errors='replace').strip()}")


def _free_port(address: str) -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


def reachable_by_others(path: Path) -> bool:
    """Whether every directory from / down to ``path`` lets others traverse it."""
    return all(directory.stat().st_mode & stat.S_IXOTH for directory in [path, *path.parents])


def _prepare_files(
    workdir: Path, login_user: str, authorized_keys: Sequence[str]
) -> tuple[Path, Path, str, Path, Path | None]:
    """Write the host key and authorized_keys; return the absolute workdir, the
    host key path, its public line, the authorized_keys path and the side
    directory to remove at stop (or None). Blocking."""
    # The workdir is sshd's: it must be this user's own, or a local user who
    # planted it (or a symlink in it) would steer what root writes and what
    # keys sshd trusts. 0711: the login user only traverses it.
    workdir = own_dir(workdir.absolute(), 0o711)
    if os.geteuid() == 0:
        _PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    host_key = workdir / "host_ed25519"
    _, host_public_key = generate_keypair(host_key)

    # sshd opens authorized_keys with the login user's privileges, so that
    # user must be able to reach the file. A workdir under a private parent
    # (pytest's tmp_path is under a 0700 directory) gets a side directory in
    # the system temp dir, removed again by stop().
    side_dir: Path | None = None
    keys_dir = workdir
    if login_user != getpass.getuser() and not reachable_by_others(workdir):
        side_dir = Path(tempfile.mkdtemp(prefix="fleetkit-sshd-"))
        side_dir.chmod(0o711)
        keys_dir = side_dir
    keys_file = keys_dir / "authorized_keys"
    write_own_file(keys_file, "".join(f"{key.strip()}\n" for key in authorized_keys), 0o644)
    return workdir, host_key, host_public_key, keys_file, side_dir


def _open_log(path: Path) -> IO[bytes]:
    fd = open_own_file(path.parent, path.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    return os.fdopen(fd, "ab")


def _render_config(settings: Mapping[str, str]) -> str:
    return "".join(f"{key} {value}\n" for key, value in settings.items())


class SSHDaemon(AsyncResource):
    """A running ``sshd -D`` with its own config, host key and authorized keys.

    Create it with :meth:`start` (or ``async with await SSHDaemon.start(...)``)
    and end it with :meth:`stop` (or :meth:`aclose`). ``host_public_key`` is the host key in
    OpenSSH one-line form (``ssh-ed25519 AAAA...``), for pinning in clients.
    """

    address: str
    port: int
    pid: int
    login_user: str
    host_public_key: str
    workdir: Path

    def __init__(
        self,
        *,
        process: subprocess.Popen[bytes],
        address: str,
        port: int,
        login_user: str,
        host_public_key: str,
        workdir: Path,
        side_dir: Path | None,
    ) -> None:
        self._process = process
        self.address = address
        self.port = port
        self.pid = process.pid
        self.login_user = login_user
        self.host_public_key = host_public_key
        self.workdir = workdir
        self._side_dir = side_dir
        self._stopped = False

    def __repr__(self) -> str:
        state = "alive" if self.alive() else "stopped"
        return f"<SSHDaemon {self.login_user}@{self.address}:{self.port} pid={self.pid} {state}>"

    @property
    def log_path(self) -> Path:
        """sshd's log (its stderr under ``-e``)."""
        return self.workdir / "sshd.log"

    @classmethod
    async def start(
        cls,
        workdir: Path,
        *,
        address: str = "127.0.0.1",
        port: int = 0,
        login_user: str | None = None,
        authorized_keys: Sequence[str] = (),
        password_auth: bool = False,
        extra_config: Mapping[str, str] = {},
        sshd_path: str = "/usr/sbin/sshd",
        cgroup: Path | None = None,
    ) -> SSHDaemon:
        """Configure and start sshd on ``address:port`` (0: a free port), wait
        until the port accepts connections and return the running daemon.

        ``authorized_keys`` are public key lines allowed to log in as
        ``login_user`` (default: :func:`ensure_login_user`). ``extra_config``
        adds or overrides ``sshd_config`` keywords (``{"MaxSessions": "4"}``).
        Raises :class:`SSHDaemonError` with sshd's output when the config is
        rejected or the daemon exits during start-up. With ``cgroup`` (a
        cgroup v2 directory), sshd is moved into it before it accepts a
        connection, so every session it runs stays there.
        """
        if not sshd_available(sshd_path):
            raise SSHDaemonError(f"{sshd_path} or ssh-keygen is not installed")
        if login_user is None:
            login_user = await anyio.to_thread.run_sync(ensure_login_user)
        try:
            prepared = await anyio.to_thread.run_sync(
                _prepare_files, Path(workdir), login_user, authorized_keys
            )
        except UnsafePath as exc:
            raise SSHDaemonError(f"refusing to run sshd: {exc}") from None
        workdir, host_key, host_public_key, keys_file, side_dir = prepared
        settings = {
            "ListenAddress": address,
            "HostKey": str(host_key),
            "PidFile": str(workdir / "sshd.pid"),
            "AuthorizedKeysFile": str(keys_file),
            "AllowUsers": login_user,
            "PubkeyAuthentication": "yes",
            "PasswordAuthentication": "yes" if password_auth else "no",
            "KbdInteractiveAuthentication": "no",
            "PermitRootLogin": "prohibit-password",
            "UsePAM": "no",
            "StrictModes": "no",
            "PrintMotd": "no",
            "Subsystem": "sftp internal-sftp",
            **extra_config,
        }
        identity = {
            "address": address,
            "login_user": login_user,
            "host_public_key": host_public_key,
            "workdir": workdir,
            "side_dir": side_dir,
        }
        try:
            return await cls._launch(settings, port, sshd_path, identity, cgroup)
        except BaseException:
            if side_dir is not None:
                shutil.rmtree(side_dir, ignore_errors=True)
            raise

    @classmethod
    async def _launch(
        cls,
        settings: dict[str, str],
        port: int,
        sshd_path: str,
        identity: dict[str, Any],
        cgroup: Path | None,
    ) -> SSHDaemon:
        workdir: Path = identity["workdir"]
        address: str = identity["address"]
        config_path = workdir / "sshd_config"
        log_path = workdir / "sshd.log"
        # A port picked here may be taken by someone else before sshd binds it:
        # on a bind failure pick another, a few times.
        attempts = 1 if port else 5
        last_error = ""
        for _attempt in range(attempts):
            chosen = port or _free_port(address)
            config = _render_config({"Port": str(chosen), **settings})
            await anyio.to_thread.run_sync(write_own_file, config_path, config, 0o600)
            checked = await anyio.run_process(
                [sshd_path, "-t", "-f", str(config_path)], check=False
            )
            if checked.returncode != 0:
                raise SSHDaemonError(
                    f"sshd rejected {config_path}: "
                    f"{checked.stderr.decode(errors='replace').strip()}"
                )
            log = await anyio.to_thread.run_sync(_open_log, log_path)
            try:
                log_offset = log.tell()
                # Its own session, outside the event loop: neither a Ctrl-C at
                # the manager's terminal nor the loop's end takes it down, as
                # neither would end a cloud VM.
                process = spawn_detached(
                    [sshd_path, "-D", "-e", "-f", str(config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            finally:
                log.close()
            if cgroup is not None:
                # Before it listens: no session can start outside the cgroup.
                (cgroup / "cgroup.procs").write_text(f"{process.pid}\n")
            daemon = cls(process=process, port=chosen, **identity)
            try:
                listening = await daemon._wait_listening(log_offset)
            except BaseException:
                await daemon._terminate()
                raise
            if listening:
                return daemon
            await daemon._terminate()
            last_error = daemon._log_since(log_offset).decode(errors="replace").strip()
            if "Address already in use" not in last_error:
                break
        raise SSHDaemonError(f"sshd did not start on {address}: {last_error[-2000:]}")

    async def _wait_listening(self, log_offset: int) -> bool:
        # A port that accepts is not proof enough: a daemon that failed to bind
        # may sit next to someone else's listener on that port. So wait for this
        # daemon's own "Server listening" line, then for the port.
        with anyio.move_on_after(_START_TIMEOUT):
            await wait_until(
                lambda: not self.alive() or b"Server listening on" in self._log_since(log_offset)
            )
            while self.alive():
                try:
                    stream = await anyio.connect_tcp(self.address, self.port)
                except OSError:
                    await anyio.sleep(0.01)
                    continue
                await stream.aclose()
                return True
        return False

    def _log_since(self, offset: int) -> bytes:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read()

    def alive(self) -> bool:
        """Whether the sshd process is still running."""
        return self._process.poll() is None

    async def _terminate(self) -> None:
        # Each connection runs in an sshd child that calls setsid(), so neither
        # TERM to the listener nor a process-group kill reaches it: end the
        # whole tree, frozen first so that no late fork escapes.
        await end_detached(self._process, grace=_STOP_GRACE)

    async def stop(self) -> None:
        """Stop sshd and every process below it, open sessions included: TERM,
        then KILL after a grace period, with no gap for a connection forked
        meanwhile (see :func:`fleetkit._procs.end_tree`). Idempotent and
        shielded from cancellation, so it finishes inside a cancelled scope.
        """
        if self._stopped:
            return
        self._stopped = True
        with anyio.CancelScope(shield=True):
            await self._terminate()
            if self._side_dir is not None:
                shutil.rmtree(self._side_dir, ignore_errors=True)

    async def aclose(self) -> None:
        """The same as :meth:`stop`, which ``async with`` calls on exit."""
        await self.stop()
