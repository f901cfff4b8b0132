"""An AWS Auto Scaling group as a fleetkit instance group (GitLab's
``fleeting-plugin-aws``, through aiobotocore).

The group is the unit AWS scales: fleetkit only moves its desired capacity up
(``SetDesiredCapacity``) and takes chosen instances out of it
(``TerminateInstanceInAutoScalingGroup``). Nothing else should change the
group's desired capacity (no scaling policies or scheduled actions), exactly as
GitLab requires for its plugin.

Call budget (measured by ``bench/bench_aws.py``): a steady ``update`` is one
``DescribeAutoScalingGroups``; instances are described (``DescribeInstances``)
once, when first seen, and their addresses cached. An ``increase`` right after
an ``update`` is one ``SetDesiredCapacity``.

Asyncio only: aiobotocore runs on asyncio, so this provider does too.
"""

from __future__ import annotations

import functools
import logging
import os
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Self

import anyio
import attrs
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError
from botocore.loaders import create_loader

import fleetkit
from fleetkit._files import MAX_KEY_BYTES, read_bounded
from fleetkit.errors import (
    ConfigError,
    InstanceNotFound,
    Problem,
    ProviderError,
    QuotaExceeded,
    RetryLater,
)
from fleetkit.model import ConnectInfo, ConnectorConfig, ProviderState
from fleetkit.provider._aws_calls import (
    AWSAPIError,
    AWSCaller,
    AWSCallStats,
    RetryPolicy,
    translate_error,
)
from fleetkit.provider._aws_config import AWSConfig, parse_aws_config
from fleetkit.provider._aws_keys import KeyPair, generate_key_pair, key_pair_from
from fleetkit.provider._aws_states import forward, map_lifecycle
from fleetkit.provider._protocol import InstanceStatus, ProviderInfo

__all__ = ["OWNER_TAG", "AWSAPIError", "AWSCallStats", "AWSInstanceGroup", "RetryPolicy"]

_log = logging.getLogger("fleetkit.provider.aws")

OWNER_TAG = "fleetkit:owner"
"""The tag key holding the owning fleet's id, on the group (propagated at
launch) and so on every instance the group launches."""

# EC2 Instance Connect keeps a pushed key for 60 seconds; the connector is told
# a little less so that it never dials with a key about to lapse.
_PUSHED_KEY_LIFETIME = timedelta(seconds=55)
# AWS accepts up to 200 values per filter; smaller batches keep responses short.
_DESCRIBE_BATCH = 100
# DescribeInstances page size (AWS allows 5..1000).
_DESCRIBE_PAGE = 1000
# Ids known to be gone are remembered (so they are never sent to AWS again) up
# to this many; the oldest are forgotten first.
_GONE_MEMORY = 10_000
_ARCH = {"x86_64": "amd64", "arm64": "arm64", "i386": "386", "x86_64_mac": "amd64"}
_LEAVING = ("Terminating", "Terminated", "Detaching", "Detached", "Warmed:Terminat")


@attrs.frozen(kw_only=True)
class _GroupView:
    """The group as one DescribeAutoScalingGroups saw it."""

    desired: int
    max_size: int
    members: Mapping[str, tuple[str, str]]  # id -> (LifecycleState, HealthStatus)
    owner_tag: str | None
    read_at: float


@attrs.frozen(kw_only=True)
class _Details:
    """What DescribeInstances told about one instance (cached: it does not change)."""

    internal_addr: str | None
    external_addr: str | None
    owner: str | None
    os: str
    arch: str | None


class AWSInstanceGroup:
    """An AWS Auto Scaling group, driven through aiobotocore.

    Build it with :meth:`from_config`; ``rng`` seeds the retry jitter,
    ``retry`` sets the backoff, ``wall_clock`` gives the datetimes of pushed
    key expiries, ``view_max_age`` (seconds) bounds how old the group's
    desired capacity may be for :meth:`increase` to use it without describing
    the group again, and ``decrease_concurrency`` bounds parallel terminations.
    """

    def __init__(
        self,
        config: AWSConfig,
        connector_config: ConnectorConfig,
        *,
        owner: str | None = None,
        rng: random.Random | None = None,
        retry: RetryPolicy | None = None,
        wall_clock: Callable[[], datetime] | None = None,
        view_max_age: float = 10.0,
        decrease_concurrency: int = 4,
    ) -> None:
        self.config = config
        self.connector_config = connector_config
        self.owner = owner
        self._call = AWSCaller(retry or RetryPolicy(), rng or random.Random())
        # ConnectInfo.expires_at is a datetime, so one wall-clock source is
        # unavoidable; it is injected, as the runtime's is.
        self._wall_clock = wall_clock or (lambda: datetime.now(UTC))
        self._view_max_age = view_max_age
        self._limiter = anyio.CapacityLimiter(decrease_concurrency)
        self._stack: AsyncExitStack | None = None
        self._closed = False
        self._clients: dict[str, Any] = {}
        self._region = config.region or "?"
        self._group: _GroupView | None = None
        self._fresh = False
        self._reported: dict[str, ProviderState] = {}
        self._details: dict[str, _Details] = {}
        self._deleting: set[str] = set()
        self._gone: dict[str, None] = {}
        self._static_key: bytes | None = None
        self._key_pair: KeyPair | None = None
        self._pushed: dict[str, tuple[float, datetime]] = {}

    @classmethod
    def from_config(
        cls,
        plugin_config: Mapping[str, Any],
        connector_config: ConnectorConfig,
        *,
        owner: str | None = None,
        rng: random.Random | None = None,
        retry: RetryPolicy | None = None,
        wall_clock: Callable[[], datetime] | None = None,
    ) -> Self:
        """Validate ``plugin_config`` (GitLab's AWS plugin keys plus
        ``endpoint_url``) without I/O; raise :class:`ConfigError` naming each
        bad key as ``plugin_config.<key>``."""
        return cls(
            parse_aws_config(plugin_config, connector_config),
            connector_config,
            owner=owner,
            rng=rng,
            retry=retry,
            wall_clock=wall_clock,
        )

    def __repr__(self) -> str:
        return (
            f"AWSInstanceGroup(name={self.config.name!r}, region={self._region!r}, "
            f"owner={self.owner!r})"
        )

    @property
    def stats(self) -> AWSCallStats:
        """AWS requests sent so far (retries included), per operation, and the
        throttled/transient failures seen."""
        return self._call.stats

    # --- verbs ----------------------------------------------------------------

    async def init(self) -> ProviderInfo:
        """Open the AWS clients, check the group exists, tag it with the owner,
        read the static key or make the Instance Connect key pair.

        Raises :class:`ConfigError` for a missing group, file, region, profile
        or credentials.
        """
        if self._stack is not None or self._closed:
            raise ProviderError(f"{self!r}: init() called twice")
        if not _on_asyncio():
            raise ProviderError(
                f"{self!r} needs the asyncio event loop (aiobotocore is asyncio-only); "
                "run the fleet with anyio's asyncio backend"
            )
        stack = AsyncExitStack()
        self._stack = stack
        try:
            await self._open_clients(stack)
            group = await self._describe_group()
            if group is None:
                raise ConfigError(
                    [
                        Problem(
                            "plugin_config.name",
                            f"no Auto Scaling group named {self.config.name!r} "
                            f"in region {self._region}",
                        )
                    ]
                )
            await self._tag_owner(group)
            await self._prepare_credentials()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._close()
            raise
        return ProviderInfo(
            id=f"aws/{self._region}/{self.config.name}",
            max_size=group.max_size,
            version=fleetkit.__version__,
        )

    async def update(self) -> Sequence[InstanceStatus]:
        """Report every instance of the group once; instances that left it are
        reported ``DELETED`` once, then forgotten.

        One DescribeAutoScalingGroups per call, plus DescribeInstances only
        for instances not seen before. Raises :class:`RetryLater` (or
        :class:`~fleetkit.errors.Throttled`) when AWS could not be read.
        """
        self._require_open()
        group = await self._describe_group()
        if group is None:
            raise ProviderError(
                f"Auto Scaling group {self.config.name!r} no longer exists in {self._region}"
            )
        unseen = [i for i in group.members if i not in self._details]
        if unseen:
            await self._describe_instances(unseen)
        statuses: list[InstanceStatus] = []
        for instance_id, (lifecycle, health) in group.members.items():
            if instance_id in self._gone:
                continue  # reported deleted once already; AWS may list it a while
            previous = self._reported.get(instance_id)
            state = map_lifecycle(lifecycle, health)
            if state is None:
                _log.warning("instance %s: unknown lifecycle state %r", instance_id, lifecycle)
                state = previous or ProviderState.CREATING
            if instance_id in self._deleting:
                state = forward(state, ProviderState.DELETING)
            state = forward(previous, state)
            statuses.append(
                InstanceStatus(id=instance_id, state=state, owner=self._owner(instance_id))
            )
            if state is ProviderState.DELETED:
                self._forget(instance_id)
            else:
                self._reported[instance_id] = state
        for instance_id in [i for i in self._reported if i not in group.members]:
            owner = self._owner(instance_id)
            self._forget(instance_id)
            statuses.append(
                InstanceStatus(id=instance_id, state=ProviderState.DELETED, owner=owner)
            )
        return statuses

    async def increase(self, n: int) -> int:
        """Raise the group's desired capacity by up to ``n`` with one
        SetDesiredCapacity; return how many were accepted.

        Never above the group's MaxSize (checked here: some AWS look-alikes do
        not enforce it). A full group accepts 0 without calling AWS.
        """
        self._require_open()
        if n < 1:
            raise ValueError(f"increase(n) needs n >= 1, got {n}")
        group = self._group
        if (
            group is None
            or not self._fresh
            or anyio.current_time() - group.read_at > self._view_max_age
        ):
            group = await self._describe_group()
            if group is None:
                raise ProviderError(f"Auto Scaling group {self.config.name!r} no longer exists")
        accepted = min(n, group.max_size - group.desired)
        if accepted <= 0:
            _log.info(
                "group %s is at MaxSize %d: increase(%d) accepted 0",
                self.config.name,
                group.max_size,
                n,
            )
            return 0
        desired = group.desired + accepted
        # Until the call answers, the group's desired capacity is unknown.
        self._fresh = False
        try:
            await self._call(
                self._clients["autoscaling"],
                "SetDesiredCapacity",
                AutoScalingGroupName=self.config.name,
                DesiredCapacity=desired,
                HonorCooldown=False,
            )
        except AWSAPIError as exc:
            # "New SetDesiredCapacity value 11 is above max value 10": MaxSize was
            # lowered since the group was read. Other ValidationErrors (a deleted
            # group) stay AWSAPIError.
            if exc.code == "ValidationError" and "max" in exc.aws_message.lower():
                raise QuotaExceeded(
                    f"group {self.config.name!r} refused desired capacity {desired}: "
                    f"{exc.aws_message}"
                ) from exc
            raise
        self._group = attrs.evolve(group, desired=desired)
        self._fresh = True
        return accepted

    async def decrease(self, ids: Sequence[str]) -> Sequence[str]:
        """Terminate the given instances, lowering the desired capacity with
        each (TerminateInstanceInAutoScalingGroup with
        ShouldDecrementDesiredCapacity, one call per id, a few at a time).

        Returns the ids accepted, in the order given. Ids already gone, not in
        the group, or already terminating count as removed without a call. Ids
        AWS refused (after retries) are left out and logged.
        """
        self._require_open()
        wanted = list(dict.fromkeys(ids))
        group = self._group
        if group is None or any(i not in group.members and i not in self._gone for i in wanted):
            # An id from after the last update: learn of it rather than send AWS
            # an id it may not know (moto answers those with an HTTP 500).
            group = await self._describe_group()
        members = group.members if group else {}
        removed: set[str] = set()
        to_terminate: list[str] = []
        for instance_id in wanted:
            member = members.get(instance_id)
            if (
                instance_id in self._gone
                or member is None
                or instance_id in self._deleting
                or member[0].startswith(_LEAVING)
            ):
                removed.add(instance_id)
            else:
                to_terminate.append(instance_id)

        async def terminate(instance_id: str) -> None:
            async with self._limiter:
                if await self._terminate(instance_id):
                    removed.add(instance_id)

        async with anyio.create_task_group() as tg:
            for instance_id in to_terminate:
                tg.start_soon(terminate, instance_id)
        return [i for i in wanted if i in removed]

    async def connect_info(self, instance_id: str) -> ConnectInfo:
        """Addresses and connector settings for an instance of the group.

        With dynamic credentials, pushes the provider's public key for
        ``connector_config.username`` through EC2 Instance Connect (valid 60 s;
        ``expires_at`` says when to ask again). Raises :class:`InstanceNotFound`
        for an id that is not (or no longer) in the group.
        """
        self._require_open()
        group = self._group
        if instance_id in self._gone or group is None or instance_id not in group.members:
            raise InstanceNotFound(
                instance_id, f"instance {instance_id!r} is not in group {self.config.name!r}"
            )
        details = self._details.get(instance_id)
        if details is None:
            await self._describe_instances([instance_id])
            details = self._details.get(instance_id)
            if details is None:
                raise RetryLater(
                    f"instance {instance_id!r} is not yet visible to DescribeInstances"
                )
        cc = self.connector_config
        os_name = cc.os or details.os
        windows = os_name == "windows"
        info = ConnectInfo(
            id=instance_id,
            internal_addr=details.internal_addr,
            external_addr=details.external_addr,
            os=os_name,
            arch=cc.arch or details.arch or "amd64",
            protocol=cc.protocol or ("winrm" if windows else "ssh"),
            protocol_port=cc.protocol_port,
            username=cc.username or ("Administrator" if windows else None),
            password=cc.password,
            key=self._static_key,
            use_static_credentials=cc.use_static_credentials,
            keepalive=cc.keepalive,
            timeout=cc.timeout,
        )
        if cc.use_static_credentials:
            return info
        if windows:
            raise ProviderError(
                f"instance {instance_id!r} runs Windows: EC2 Instance Connect cannot give it "
                "credentials; set connector_config.use_static_credentials = true with a password"
            )
        key_pair, expires_at = await self._push_key(instance_id, info.username or "")
        return attrs.evolve(info, key=key_pair.private, expires_at=expires_at)

    async def heartbeat(self, instance_id: str) -> None:
        """Check the instance against the group as last read (no AWS call):
        raises :class:`InstanceNotFound` when it left the group."""
        self._require_open()
        group = self._group
        if instance_id in self._gone or group is None or instance_id not in group.members:
            raise InstanceNotFound(instance_id)

    async def shutdown(self) -> None:
        """Close the AWS clients and forget the generated key. Deletes no
        instance; idempotent."""
        with anyio.CancelScope(shield=True):
            await self._close()
        self._closed = True

    # --- helpers ----------------------------------------------------------------

    def _require_open(self) -> None:
        if self._closed:
            raise ProviderError(f"{self!r} is shut down")
        if self._stack is None or not self._clients:
            raise ProviderError(f"{self!r}: init() has not been called")

    async def _close(self) -> None:
        stack, self._stack = self._stack, None
        self._clients = {}
        self._key_pair = None
        self._static_key = None
        if stack is not None:
            await stack.aclose()

    async def _open_clients(self, stack: AsyncExitStack) -> None:
        cfg = self.config
        for key in ("config_file", "credentials_file"):
            path = getattr(cfg, key)
            if path is not None and not await (await anyio.Path(path).expanduser()).is_file():
                raise ConfigError([Problem(f"plugin_config.{key}", f"no such file: {path}")])
        session = AioSession()
        session.register_component("data_loader", _shared_loader())
        for key in ("profile", "config_file", "credentials_file"):
            value = getattr(cfg, key)
            if value is not None and key != "profile":
                value = str(await anyio.Path(value).expanduser())
            if value is not None:
                session.set_config_variable(key, value)
        # botocore's own retries are off: AWSCaller retries, so that it can count
        # every request and draw jitter from the injected rng.
        aio_config = AioConfig(
            retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=30
        )
        services = ["autoscaling", "ec2"]
        if not self.connector_config.use_static_credentials:
            services.append("ec2-instance-connect")
        try:
            for service in services:
                client = await stack.enter_async_context(
                    session.create_client(
                        service,
                        region_name=cfg.region,
                        endpoint_url=cfg.endpoint_url,
                        config=aio_config,
                    )
                )
                self._clients[service] = client
        except BotoCoreError as exc:
            raise translate_error("CreateClient", exc) from exc
        self._region = str(self._clients["autoscaling"].meta.region_name)

    async def _describe_group(self) -> _GroupView | None:
        groups: list[dict[str, Any]] = []
        params: dict[str, Any] = {"AutoScalingGroupNames": [self.config.name]}
        while True:
            page = await self._call(
                self._clients["autoscaling"], "DescribeAutoScalingGroups", **params
            )
            groups += page.get("AutoScalingGroups", [])
            token = page.get("NextToken")
            if not token:
                break
            params["NextToken"] = token
        found = [g for g in groups if g.get("AutoScalingGroupName") == self.config.name]
        if not found:
            self._group = None
            return None
        g = found[0]
        owner_tag = next((t["Value"] for t in g.get("Tags", []) if t.get("Key") == OWNER_TAG), None)
        view = _GroupView(
            desired=int(g["DesiredCapacity"]),
            max_size=int(g["MaxSize"]),
            members={
                i["InstanceId"]: (str(i.get("LifecycleState", "")), str(i.get("HealthStatus", "")))
                for i in g.get("Instances", [])
            },
            owner_tag=owner_tag,
            read_at=anyio.current_time(),
        )
        self._group = view
        self._fresh = True
        return view

    async def _describe_instances(self, ids: Sequence[str]) -> None:
        for batch in _batches(ids, _DESCRIBE_BATCH):
            # A filter rather than InstanceIds: an id EC2 does not know yet
            # (eventual consistency) is left out instead of failing the batch,
            # and MaxResults (pagination) is only allowed with filters.
            params: dict[str, Any] = {
                "Filters": [{"Name": "instance-id", "Values": list(batch)}],
                "MaxResults": _DESCRIBE_PAGE,
            }
            while True:
                page = await self._call(self._clients["ec2"], "DescribeInstances", **params)
                for reservation in page.get("Reservations", []):
                    for instance in reservation.get("Instances", []):
                        self._remember(instance)
                token = page.get("NextToken")
                if not token:
                    break
                params["NextToken"] = token

    def _remember(self, instance: Mapping[str, Any]) -> None:
        internal = instance.get("PrivateIpAddress")
        if not internal and instance.get("State", {}).get("Name") == "pending":
            return  # no address yet: describe it again next time
        tags = {t.get("Key"): t.get("Value") for t in instance.get("Tags", [])}
        arch = str(instance.get("Architecture", ""))
        self._details[str(instance["InstanceId"])] = _Details(
            internal_addr=str(internal) if internal else None,
            external_addr=instance.get("PublicIpAddress") or instance.get("Ipv6Address"),
            owner=tags.get(OWNER_TAG),
            os="windows"
            if instance.get("Platform") == "windows"
            else ("darwin" if arch.endswith("_mac") else "linux"),
            arch=_ARCH.get(arch),
        )

    def _owner(self, instance_id: str) -> str | None:
        details = self._details.get(instance_id)
        return details.owner if details else None

    def _forget(self, instance_id: str) -> None:
        self._reported.pop(instance_id, None)
        self._details.pop(instance_id, None)
        self._deleting.discard(instance_id)
        self._pushed.pop(instance_id, None)
        self._gone[instance_id] = None
        while len(self._gone) > _GONE_MEMORY:
            del self._gone[next(iter(self._gone))]

    async def _terminate(self, instance_id: str) -> bool:
        try:
            await self._call(
                self._clients["autoscaling"],
                "TerminateInstanceInAutoScalingGroup",
                InstanceId=instance_id,
                ShouldDecrementDesiredCapacity=True,
            )
        except AWSAPIError as exc:
            message = exc.aws_message.lower()
            # AWS answers ValidationError for an instance that already left the
            # group ("Instance Id not found - No managed instance found...").
            if exc.code == "ValidationError" and ("not found" in message or "terminat" in message):
                self._forget(instance_id)
                return True
            _log.warning("decrease: %s refused: %s", instance_id, exc)
            return False
        except ProviderError as exc:
            self._fresh = False  # whether the desired capacity dropped is unknown
            _log.warning("decrease: %s not terminated: %s", instance_id, exc)
            return False
        self._deleting.add(instance_id)
        if self._group is not None:
            self._group = attrs.evolve(self._group, desired=max(0, self._group.desired - 1))
        return True

    async def _tag_owner(self, group: _GroupView) -> None:
        if self.owner is None or group.owner_tag == self.owner:
            return
        if group.owner_tag is not None:
            _log.warning(
                "group %s was tagged for owner %r; retagging for %r (instances launched "
                "before keep the old tag and are not proven ours)",
                self.config.name,
                group.owner_tag,
                self.owner,
            )
        # A group tag with PropagateAtLaunch stamps every instance the group
        # launches from now on, so ownership is set atomically with the launch.
        await self._call(
            self._clients["autoscaling"],
            "CreateOrUpdateTags",
            Tags=[
                {
                    "ResourceId": self.config.name,
                    "ResourceType": "auto-scaling-group",
                    "Key": OWNER_TAG,
                    "Value": self.owner,
                    "PropagateAtLaunch": True,
                }
            ],
        )

    async def _prepare_credentials(self) -> None:
        cc = self.connector_config
        key: bytes | None = None
        if cc.key_path is not None:
            # GitLab reads key_path at init with static and dynamic credentials
            # alike, and fails init when it cannot.
            try:
                path = await anyio.Path(cc.key_path).expanduser()
                key = await anyio.to_thread.run_sync(read_bounded, path, MAX_KEY_BYTES)
            except OSError as exc:
                raise ConfigError(
                    [
                        Problem(
                            "connector_config.key_path",
                            f"cannot read the key file {cc.key_path}: {exc.strerror}",
                        )
                    ]
                ) from exc
        if cc.use_static_credentials:
            self._static_key = key
            return
        comment = f"fleetkit-{self.owner or 'aws'}"
        # Dynamic credentials push the configured key when there is one, as
        # GitLab's AWS plugin does, else a key made for this run.
        self._key_pair = (
            key_pair_from(key, comment) if key is not None else generate_key_pair(comment)
        )

    async def _push_key(self, instance_id: str, username: str) -> tuple[KeyPair, datetime]:
        key_pair = self._key_pair
        assert key_pair is not None  # made by init for dynamic credentials
        now = anyio.current_time()
        pushed = self._pushed.get(instance_id)
        # A push is good for a minute: reuse it while more than half is left.
        if pushed is not None and now - pushed[0] < _PUSHED_KEY_LIFETIME.total_seconds() / 2:
            return key_pair, pushed[1]
        try:
            await self._call(
                self._clients["ec2-instance-connect"],
                "SendSSHPublicKey",
                InstanceId=instance_id,
                InstanceOSUser=username,
                SSHPublicKey=key_pair.public,
            )
        except AWSAPIError as exc:
            if exc.code == "EC2InstanceNotFoundException":
                raise InstanceNotFound(instance_id) from exc
            raise
        expires_at = self._wall_clock() + _PUSHED_KEY_LIFETIME
        self._pushed[instance_id] = (now, expires_at)
        return key_pair, expires_at


@functools.cache
def _shared_loader() -> Any:
    # botocore parses each service's JSON model (EC2's is several MB) once per
    # loader; one loader for every group in the process parses it once.
    return create_loader(os.environ.get("AWS_DATA_PATH"))


def _on_asyncio() -> bool:
    try:
        import sniffio
    except ImportError:
        return True  # trio depends on sniffio: without it only asyncio can be running
    return bool(sniffio.current_async_library() == "asyncio")


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


if TYPE_CHECKING:
    from fleetkit.provider._protocol import InstanceGroup, InstanceGroupFactory

    _check: type[InstanceGroup] = AWSInstanceGroup
    _check_factory: InstanceGroupFactory = AWSInstanceGroup
