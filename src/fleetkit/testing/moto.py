"""A moto server (AWS Auto Scaling + EC2 look-alike) on 127.0.0.1, for tests,
examples and crash tests of the AWS provider.

::

    with MotoServer() as moto:
        moto.create_group("ci", max_size=10)
        group = AWSInstanceGroup.from_config(moto.plugin_config("ci"), connector_config)

Real HTTP on a free port: requests go through aiobotocore's real signing and
serialisation. The server also records every AWS operation it receives
(:attr:`MotoServer.calls`) and can answer chosen operations with injected
faults (:meth:`MotoServer.inject`), because moto itself never throttles or
fails: those answers are built the way AWS builds them, so botocore parses
them like the real thing.

What moto does not model (see ``docs/aws.md``): lifecycle states (instances
are InService at once; :meth:`MotoServer.set_lifecycle_state` plays them),
MaxSize enforcement, AWS's ValidationError for unknown
ids (moto answers HTTP 500), throttling and capacity errors.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tempfile
import threading
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs

import attrs

__all__ = [
    "LINUX_AMI",
    "REQUEST_LIMIT_EXCEEDED",
    "SERVICE_UNAVAILABLE",
    "THROTTLING",
    "Fault",
    "MotoServer",
]

LINUX_AMI = "ami-760aaa0f"
"""An Amazon Linux x86_64 image moto knows (many of moto's AMIs are Windows)."""

_ACCESS_KEY = "testing"
_SECRET_KEY = "testing"  # moto accepts any credentials; these are not secrets


@attrs.frozen
class Fault:
    """An error answer AWS could give: HTTP ``status``, AWS error ``code`` and ``message``."""

    status: int
    code: str
    message: str


THROTTLING = Fault(400, "Throttling", "Rate exceeded")
"""Auto Scaling's throttling answer."""
REQUEST_LIMIT_EXCEEDED = Fault(503, "RequestLimitExceeded", "Request limit exceeded.")
"""EC2's throttling answer."""
SERVICE_UNAVAILABLE = Fault(503, "ServiceUnavailable", "Service is unavailable, retry.")
"""A transient server-side failure."""


class _Faults:
    """Injected answers per operation, shared with the server thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: dict[str, deque[Fault]] = {}
        self.calls: Counter[str] = Counter()

    def add(self, operation: str, fault: Fault, times: int) -> None:
        with self._lock:
            self._queued.setdefault(operation, deque()).extend([fault] * times)

    def take(self, operation: str) -> Fault | None:
        with self._lock:
            self.calls[operation] += 1
            queue = self._queued.get(operation)
            return queue.popleft() if queue else None

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.calls)

    def clear(self) -> None:
        with self._lock:
            self._queued.clear()
            self.calls.clear()


_SERVICE = re.compile(r"Credential=[^/]*/[^/]*/[^/]*/([^/]*)/")


def _wrap(app: Any, faults: _Faults) -> Callable[..., Iterable[bytes]]:
    """WSGI middleware: note each request's operation; answer with a fault if one is queued."""

    def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target:  # JSON protocol (EC2 Instance Connect): "Service.Operation"
            operation = target.rpartition(".")[2]
        else:  # query protocol (Auto Scaling, EC2): Action=... in the form body
            form = parse_qs(body.decode("utf-8", "replace"))
            operation = (form.get("Action") or [""])[0]
        if not operation or environ.get("PATH_INFO", "").startswith("/moto-api"):
            return app(environ, start_response)  # type: ignore[no-any-return]
        fault = faults.take(operation)
        if fault is None:
            return app(environ, start_response)  # type: ignore[no-any-return]
        match = _SERVICE.search(environ.get("HTTP_AUTHORIZATION", ""))
        service = match.group(1) if match else ""
        payload, content_type = _error_body(service, fault, bool(target))
        start_response(
            f"{fault.status} Injected",
            [("Content-Type", content_type), ("Content-Length", str(len(payload)))],
        )
        return [payload]

    return middleware


def _error_body(service: str, fault: Fault, json_protocol: bool) -> tuple[bytes, str]:
    if json_protocol:
        doc = {"__type": fault.code, "message": fault.message}
        return json.dumps(doc).encode(), "application/x-amz-json-1.1"
    if service == "ec2":
        xml = (
            f"<Response><Errors><Error><Code>{fault.code}</Code><Message>{fault.message}"
            "</Message></Error></Errors><RequestID>fleetkit-injected</RequestID></Response>"
        )
    else:
        xml = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{fault.code}</Code><Message>{fault.message}</Message></Error>"
            "<RequestId>fleetkit-injected</RequestId></ErrorResponse>"
        )
    return xml.encode(), "text/xml"


class MotoServer:
    """moto's ``ThreadedMotoServer`` on 127.0.0.1 and a free port, with helpers.

    Usable outside pytest: ``with MotoServer() as moto: ...`` or
    :meth:`start` / :meth:`stop`. It also writes an AWS credentials and config
    file (moto's dummy keys) into a temporary directory, removed on stop, which
    :meth:`plugin_config` points the provider at.
    """

    def __init__(self, *, region: str = "us-east-1") -> None:
        self.region = region
        self._faults = _Faults()
        self._server: Any = None
        self._dir: Path | None = None
        self._endpoint: str | None = None

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start the server thread and write the credentials files."""
        if self._server is not None:
            raise RuntimeError("MotoServer already started")
        from moto.server import ThreadedMotoServer

        faults = self._faults

        class _Server(ThreadedMotoServer):
            def _server_entry(self) -> None:
                # ThreadedMotoServer's own entry, with the app wrapped and
                # request logging off.
                from moto.moto_server.werkzeug_app import (
                    DomainDispatcherApplication,
                    MotoRequestHandler,
                    create_backend_app,
                )
                from werkzeug.serving import make_server

                class _Quiet(MotoRequestHandler):
                    def log(self, *args: Any, **kwargs: Any) -> None:
                        pass

                app = _wrap(DomainDispatcherApplication(create_backend_app), faults)
                self._server = make_server(
                    self._ip_address, self._port, app, True, request_handler=_Quiet
                )
                self._server_ready_event.set()
                self._server.serve_forever()

        server = _Server(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        self._server = server
        host, port = server.get_host_and_port()
        self._endpoint = f"http://{host}:{port}"
        self._dir = Path(tempfile.mkdtemp(prefix="fleetkit-moto-"))
        (self._dir / "credentials").write_text(
            f"[default]\naws_access_key_id = {_ACCESS_KEY}\naws_secret_access_key = {_SECRET_KEY}\n"
        )
        (self._dir / "config").write_text(f"[default]\nregion = {self.region}\n")

    def stop(self) -> None:
        """Stop the server and remove the credentials files. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._endpoint = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- use -------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        if self._endpoint is None:
            raise RuntimeError("MotoServer is not started")
        return self._endpoint

    @property
    def calls(self) -> Counter[str]:
        """AWS operations received since the last :meth:`reset`, by name."""
        return self._faults.snapshot()

    def plugin_config(self, name: str) -> dict[str, str]:
        """A ``plugin_config`` for the AWS provider that reaches group ``name`` here."""
        assert self._dir is not None, "MotoServer is not started"
        return {
            "name": name,
            "region": self.region,
            "endpoint_url": self.endpoint_url,
            "credentials_file": str(self._dir / "credentials"),
            "config_file": str(self._dir / "config"),
        }

    def inject(self, operation: str, fault: Fault, *, times: int = 1) -> None:
        """Answer the next ``times`` requests of ``operation`` (``"SetDesiredCapacity"``)
        with ``fault`` instead of passing them to moto."""
        self._faults.add(operation, fault, times)

    def reset(self) -> None:
        """Forget every AWS resource, injected fault and recorded call."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
        self._faults.clear()

    def client(self, service: str) -> Any:
        """A synchronous boto3 client for ``service`` on this server."""
        import boto3

        return boto3.client(
            service,
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=_ACCESS_KEY,
            aws_secret_access_key=_SECRET_KEY,
        )

    def create_group(
        self,
        name: str,
        *,
        max_size: int = 10,
        min_size: int = 0,
        desired: int = 0,
        image_id: str = LINUX_AMI,
        instance_type: str = "t3.micro",
    ) -> str:
        """Create a launch template and an Auto Scaling group ``name`` using it;
        return the group's name."""
        template = f"{name}-template"
        self.client("ec2").create_launch_template(
            LaunchTemplateName=template,
            LaunchTemplateData={"ImageId": image_id, "InstanceType": instance_type},
        )
        self.client("autoscaling").create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchTemplate={"LaunchTemplateName": template},
            MinSize=min_size,
            MaxSize=max_size,
            DesiredCapacity=desired,
            AvailabilityZones=[f"{self.region}a"],
        )
        return name

    def set_lifecycle_state(
        self, name: str, instance_id: str, state: str, *, health: str | None = None
    ) -> None:
        """Give one instance of group ``name`` the Auto Scaling ``LifecycleState``
        ``state`` (``"Pending"``, ``"Terminating:Wait"``, ...) and optionally a
        ``HealthStatus``, as the next describe will show them.

        moto has no lifecycle of its own (instances are InService at once); this
        lets a test play AWS's sequence. Reaches into moto's in-process backend.
        """
        from moto.autoscaling.models import autoscaling_backends
        from moto.core.models import DEFAULT_ACCOUNT_ID

        group = autoscaling_backends[DEFAULT_ACCOUNT_ID][self.region].autoscaling_groups[name]
        for instance_state in group.instance_states:
            if instance_state.instance.id == instance_id:
                instance_state.lifecycle_state = state
                if health is not None:
                    instance_state.health_status = health
                return
        raise KeyError(f"instance {instance_id!r} is not in group {name!r}")

    def group_members(self, name: str) -> list[str]:
        """Ids of the group's instances that are not terminating, sorted: what
        still counts against the group (see :meth:`group_instances`)."""
        return sorted(
            instance_id
            for instance_id, state in self.group_instances(name).items()
            if not state.startswith("Terminat")
        )

    def group_instances(self, name: str) -> dict[str, str]:
        """The group's instances as moto holds them: id -> LifecycleState."""
        answer = self.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[name]
        )
        groups = answer["AutoScalingGroups"]
        if not groups:
            return {}
        return {i["InstanceId"]: i["LifecycleState"] for i in groups[0]["Instances"]}
