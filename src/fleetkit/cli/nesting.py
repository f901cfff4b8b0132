"""``fleetkit nesting``: run a nesting daemon, or talk to one as GitLab's ``nesting`` CLI does.

Verbs::

    fleetkit nesting serve --hypervisor NAME [--config FILE] [--socket PATH] [--state-dir DIR]
                           [--socket-owner USER]
    fleetkit nesting init [--config FILE]
    fleetkit nesting create IMAGE [--slot N] [--json]
    fleetkit nesting delete ID
    fleetkit nesting list [--json]
    fleetkit nesting shutdown
    fleetkit nesting image build NAME [--into DIR] [--user USER] [--authorized-key LINE]...
                                 [--authorized-keys-file FILE] [--kernel-deb FILE]
                                 [--cache-dir DIR] [--binary PATH]...

Every verb takes ``--socket PATH`` (default: ``$NESTING_SOCKET``, else
``$XDG_RUNTIME_DIR/nesting.sock``, else ``~/nesting.sock``). ``create`` and
``list`` print one VM per line, ``ID NAME ADDR`` separated by tabs; with
``--json`` one JSON object per line that adds ``host_key`` (and, for
``create``, ``stomped_vm_id``). ``serve`` logs to stderr and runs until
SIGTERM or SIGINT, then deletes every VM.

Exit status: 0 success; 1 the daemon answered with an error (not initialized,
no such VM or image, hypervisor failure), or ``serve`` could not start (unsafe
socket path, another daemon on the state dir, unknown hypervisor), or the
``isolation`` extra is not installed; 2 usage
errors and unreadable or invalid ``--config``; 3 no daemon answers on the
socket.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetkit.cli._common import fail, interruptible, run_async
from fleetkit.errors import ConfigError, FleetkitError, NestingUnavailable

if TYPE_CHECKING:
    from fleetkit.isolation import NestingClient, VirtualMachine

__all__ = ["DAEMON_UNREACHABLE", "register"]

#: Exit status when no daemon answers on the socket.
DAEMON_UNREACHABLE = 3
_REFUSED = 1
_BAD_INPUT = 2


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``nesting`` and its verbs to the ``fleetkit`` command."""
    parser = commands.add_parser(
        "nesting",
        help="run a nesting daemon (VMs per job slot) or call one: serve, init, create, ...",
        description="GitLab's nesting API: serve it over a hypervisor, or call a daemon.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = verbs.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--socket",
            metavar="PATH",
            type=Path,
            help="the daemon's unix socket (default: $NESTING_SOCKET, else "
            "$XDG_RUNTIME_DIR/nesting.sock, else ~/nesting.sock)",
        )
        return sub

    serve = verb("serve", "serve the nesting API on a unix socket until SIGTERM or SIGINT")
    serve.add_argument("--hypervisor", required=True, metavar="NAME", help="e.g. sandbox")
    serve.add_argument(
        "--config", type=Path, metavar="FILE", help="JSON hypervisor config to initialize with"
    )
    serve.add_argument(
        "--state-dir", type=Path, metavar="DIR", help="default: <socket>.state beside the socket"
    )
    serve.add_argument(
        "--socket-owner",
        metavar="USER",
        help="hand the socket (still 0600) to this user, so that it may call the daemon",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    serve.set_defaults(run=_serve)

    init = verb("init", "initialize the daemon with a JSON hypervisor config")
    init.add_argument("--config", type=Path, metavar="FILE", help="JSON file (default: {})")
    init.set_defaults(run=_client_verb)

    create = verb("create", "create a VM from IMAGE (stomping the VM in --slot)")
    create.add_argument("image", metavar="IMAGE")
    create.add_argument("--slot", type=_slot, metavar="N")
    create.add_argument("--json", action="store_true", help="print JSON with the host key")
    create.set_defaults(run=_client_verb)

    delete = verb("delete", "delete the VM ID")
    delete.add_argument("id", metavar="ID")
    delete.set_defaults(run=_client_verb)

    listing = verb("list", "list the daemon's VMs")
    listing.add_argument("--json", action="store_true", help="print JSON with host keys")
    listing.set_defaults(run=_client_verb)

    shutdown = verb("shutdown", "delete every VM of the daemon")
    shutdown.set_defaults(run=_client_verb)
    _register_image(verbs)


def _register_image(verbs: argparse._SubParsersAction[Any]) -> None:
    image = verbs.add_parser("image", help="build images for the qemu hypervisor")
    image_verbs = image.add_subparsers(dest="image_verb", required=True, metavar="VERB")
    build = image_verbs.add_parser(
        "build",
        help="build an initramfs-only Linux guest from Debian packages, offline",
        description="Build image NAME (kernel, initramfs, image.json) into DIR/NAME.",
    )
    build.add_argument("name", metavar="NAME")
    build.add_argument(
        "--into", type=Path, metavar="DIR", help="default: $XDG_DATA_HOME/fleetkit/images"
    )
    build.add_argument("--user", default="fleetkit", help="the login user (default: fleetkit)")
    build.add_argument(
        "--authorized-key", action="append", default=[], metavar="LINE",
        help="a public key line the login user accepts (repeatable)",
    )  # fmt: skip
    build.add_argument(
        "--authorized-keys-file", type=Path, metavar="FILE", help="public key lines, one a line"
    )
    build.add_argument(
        "--kernel-deb", type=Path, metavar="FILE",
        help="a linux-image-*-cloud-amd64 .deb (default: cached, else apt-get download)",
    )  # fmt: skip
    build.add_argument("--cache-dir", type=Path, metavar="DIR", help="where kernel .debs are kept")
    build.add_argument(
        "--binary", action="append", default=[], type=Path, metavar="PATH",
        help="another host binary to copy in with its libraries (repeatable)",
    )  # fmt: skip
    build.set_defaults(run=_image_build)


def _image_build(args: argparse.Namespace) -> int:
    from fleetkit.nesting.qemu_image import build_image

    keys = list(args.authorized_key)
    if args.authorized_keys_file is not None:
        try:
            keys += args.authorized_keys_file.read_text().splitlines()
        except OSError as exc:
            return fail(
                "nesting image build",
                f"--authorized-keys-file {args.authorized_keys_file}: {exc.strerror}",
                _BAD_INPUT,
            )
    try:
        image = build_image(
            args.name,
            args.into,
            user=args.user,
            authorized_keys=[k for k in keys if k.strip() and not k.startswith("#")],
            kernel_deb=args.kernel_deb,
            cache_dir=args.cache_dir,
            extra_binaries=args.binary,
        )
    except FleetkitError as exc:
        return fail("nesting image build", exc, _REFUSED)
    print(image.directory)
    return 0


def _slot(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a slot number") from None
    if not 0 <= value < 2**31:
        raise argparse.ArgumentTypeError(f"slot must be 0 or more, got {value}")
    return value


def _read_config(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; ConfigError naming the file otherwise."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _missing_extra() -> str | None:
    """Why the gRPC stack cannot be imported, or None when it can."""
    try:
        import google.protobuf  # noqa: F401
        import grpc  # noqa: F401
    except ImportError as exc:
        return f"needs the isolation extra (pip install 'fleetkit[isolation]'): {exc}"
    return None


@interruptible
def _serve(args: argparse.Namespace) -> int:
    if (missing := _missing_extra()) is not None:
        return fail("nesting serve", missing, _REFUSED)
    from fleetkit.nesting import NestingDaemon

    logging.basicConfig(
        level=args.log_level.upper(), format="fleetkit nesting: %(levelname)s %(message)s"
    )
    try:
        config = _read_config(args.config) if args.config is not None else None
    except ConfigError as exc:
        return fail("nesting serve", exc, _BAD_INPUT)
    try:
        daemon = NestingDaemon(
            args.hypervisor,
            socket_path=args.socket,
            state_dir=args.state_dir,
            config=config,
            socket_owner=args.socket_owner,
        )
        run_async(daemon.serve)
    except ConfigError as exc:
        one_line = "; ".join(str(p) for p in exc.problems)
        return fail("nesting serve", f"--config: {one_line}", _BAD_INPUT)
    except FleetkitError as exc:
        return fail("nesting serve", exc, _REFUSED)
    return 0


@interruptible
def _client_verb(args: argparse.Namespace) -> int:
    if (missing := _missing_extra()) is not None:
        return fail(f"nesting {args.verb}", missing, _REFUSED)
    from fleetkit.nesting import default_socket_path

    socket = args.socket if args.socket is not None else default_socket_path()
    config: dict[str, Any] = {}
    if args.verb == "init" and args.config is not None:
        try:
            config = _read_config(args.config)
        except ConfigError as exc:
            return fail("nesting init", exc, _BAD_INPUT)
    try:
        run_async(_call, args, str(Path(socket).absolute()), config)
    except NestingUnavailable as exc:
        return fail(f"nesting {args.verb}", exc, DAEMON_UNREACHABLE)
    except FleetkitError as exc:
        return fail(f"nesting {args.verb}", exc, _REFUSED)
    return 0


async def _call(args: argparse.Namespace, socket: str, config: dict[str, Any]) -> None:
    from fleetkit.isolation import NestingClient

    async with NestingClient(f"unix:{socket}", timeout=600) as client:
        await _dispatch(client, args, config)


async def _dispatch(
    client: NestingClient, args: argparse.Namespace, config: dict[str, Any]
) -> None:
    if args.verb == "init":
        await client.init(config)
    elif args.verb == "create":
        result = await client.create(args.image, slot=args.slot)
        _print_vm(result.vm, args.json, created=True, stomped=result.stomped_vm_id)
        if result.stomped_vm_id and not args.json:
            print(f"fleetkit nesting create: stomped VM {result.stomped_vm_id}", file=sys.stderr)
    elif args.verb == "delete":
        await client.delete(args.id)
    elif args.verb == "list":
        for vm in await client.list():
            _print_vm(vm, args.json)
    elif args.verb == "shutdown":
        await client.shutdown()


def _print_vm(
    vm: VirtualMachine, as_json: bool, *, created: bool = False, stomped: str | None = None
) -> None:
    if not as_json:
        print(f"{vm.id}\t{vm.name}\t{vm.addr}")
        return
    record: dict[str, Any] = {
        "id": vm.id,
        "name": vm.name,
        "addr": vm.addr,
        "host_key": vm.host_key,
    }
    if created:
        record["stomped_vm_id"] = stomped
    print(json.dumps(record))
