"""Properties: any config dumps and loads back equal; no input raises anything but ConfigError."""

from __future__ import annotations

import tomllib
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st

from fleetkit.config import (
    AUTOSCALER_EXECUTORS,
    RUNNER_SHELLS,
    AutoscalerConfig,
    Config,
    InstanceConfig,
    Runner,
    ScaleThrottle,
    StateStorage,
    VMIsolation,
    dump,
    load,
)
from fleetkit.config._dump import toml_text
from fleetkit.config._suggest import EXECUTORS, GLOBAL_KEYS, RUNNER_KEYS
from fleetkit.errors import ConfigError
from fleetkit.model import ConnectorConfig
from fleetkit.policy import Policy

EXAMPLES = Path(__file__).parents[2] / "examples"
CONFIGS = Path(__file__).parent / "configs"

# --- TOML values as tomllib returns them -------------------------------------

# No NUL: a config string holding one is refused (no name, path or command can).
_chars = st.characters(blacklist_characters="\x00")
text = st.text(_chars, max_size=12)
keys = st.text(_chars, max_size=8)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
offsets = st.integers(min_value=-1439, max_value=1439).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
scalars: st.SearchStrategy[Any] = st.one_of(
    st.booleans(),
    int64,
    st.floats(allow_nan=False),
    text,
    st.datetimes(),
    st.datetimes(timezones=offsets),
    st.dates(),
    st.times(),
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)
tables = st.dictionaries(keys, toml_values, max_size=4)

# --- config trees -------------------------------------------------------------

go_durations = st.integers(min_value=0, max_value=10**12).map(lambda us: timedelta(microseconds=us))
positive_durations = go_durations.filter(bool)
counts = st.integers(min_value=0, max_value=1000)
optional_text = st.none() | text

policies = st.builds(
    Policy,
    idle_count=counts,
    idle_time=go_durations,
    scale_factor=st.floats(min_value=0, max_value=100),
    scale_factor_limit=counts,
    preemptive_mode=st.none() | st.booleans(),
    periods=st.lists(
        st.sampled_from(["* * * * *", "* 7-19 * * mon-fri", "*/15 8-17 * * 1-5", "0 0 1 * *"]),
        min_size=1,
        max_size=3,
    ),
    timezone=st.none() | st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]),
)
connectors = st.builds(
    ConnectorConfig,
    os=optional_text,
    arch=optional_text,
    protocol=st.none() | st.sampled_from(["ssh", "winrm", "winrm+https"]),
    protocol_port=st.none() | st.integers(min_value=0, max_value=65535),
    username=optional_text,
    password=optional_text,
    key_path=optional_text,
    use_static_credentials=st.booleans(),
    keepalive=st.none() | go_durations,
    timeout=st.none() | go_durations,
    use_external_addr=st.booleans(),
)
buckets = st.none() | st.lists(st.floats(min_value=0, max_value=1e6), max_size=4).map(
    lambda values: tuple(sorted(values))
)
autoscalers = st.builds(
    AutoscalerConfig,
    plugin=st.text(_chars, min_size=1, max_size=12).filter(str.strip),
    plugin_config=tables,
    capacity_per_instance=st.integers(min_value=1, max_value=64),
    max_use_count=counts,
    max_instances=counts,
    instance_ready_command=text,
    instance_acquire_timeout=positive_durations,
    update_interval=positive_durations,
    update_interval_when_expecting=positive_durations,
    deletion_retry_interval=positive_durations,
    shutdown_deletion_interval=positive_durations,
    shutdown_deletion_retries=st.integers(min_value=1, max_value=10),
    failure_threshold=st.integers(min_value=1, max_value=10),
    scale_throttle=st.builds(
        ScaleThrottle, limit=st.integers(min_value=-1, max_value=100), burst=counts
    ),
    reservation_throttling=st.booleans(),
    log_internal_ip=st.booleans(),
    log_external_ip=st.booleans(),
    delete_instances_on_shutdown=st.booleans(),
    connector_config=connectors,
    policy=st.lists(policies, max_size=3),
    vm_isolation=st.builds(
        VMIsolation,
        enabled=st.booleans(),
        nesting_host=text,
        nesting_config=tables,
        image=text,
        connector_config=connectors,
    ),
    state_storage=st.builds(
        StateStorage, enabled=st.booleans(), dir=text, keep_instance_with_acquisitions=st.booleans()
    ),
    instance_operation_time_buckets=buckets,
    instance_creation_time_buckets=buckets,
    instance_is_running_time_buckets=buckets,
    instance_deletion_time_buckets=buckets,
    instance_readiness_time_buckets=buckets,
    instance_life_duration_buckets=buckets,
)
_MODELLED_RUNNER_KEYS = {a.name for a in attrs.fields(Runner)}
runner_extras = st.dictionaries(
    st.sampled_from(sorted(RUNNER_KEYS - _MODELLED_RUNNER_KEYS)), toml_values, max_size=3
)


@st.composite
def runners(draw: st.DrawFn) -> Runner:
    autoscaler = draw(st.none() | autoscalers)
    # docker-autoscaler is refused by name: it is no runner a config can hold.
    others = [e for e in EXECUTORS if e not in (*AUTOSCALER_EXECUTORS, "docker-autoscaler")]
    executor = draw(
        st.sampled_from(AUTOSCALER_EXECUTORS) if autoscaler else st.none() | st.sampled_from(others)
    )
    return Runner(
        name=draw(optional_text),
        url=draw(optional_text),
        id=draw(st.none() | int64),
        token=draw(optional_text),
        executor=executor,
        shell=draw(st.none() | st.sampled_from(RUNNER_SHELLS)),
        pre_build_script=draw(optional_text),
        post_build_script=draw(optional_text),
        feature_flags=draw(
            st.dictionaries(
                st.sampled_from(["FF_USE_FLEETING_ACQUIRE_HEARTBEATS", "FF_X"]), st.booleans()
            )
        ),
        limit=draw(counts),
        request_concurrency=draw(counts),
        builds_dir=draw(optional_text),
        cache_dir=draw(optional_text),
        instance=draw(
            st.none()
            | st.builds(
                InstanceConfig,
                allowed_images=st.lists(text, max_size=3),
                use_common_build_dir=st.booleans(),
            )
        ),
        autoscaler=autoscaler,
        extra=draw(runner_extras),
    )


configs = st.builds(
    Config,
    concurrent=st.none() | st.integers(min_value=1, max_value=10_000),
    runners=st.lists(runners(), max_size=3),
    extra=st.dictionaries(
        # listen_address is checked (host:port), so it takes no arbitrary value.
        st.sampled_from(sorted(GLOBAL_KEYS - {"concurrent", "runners", "listen_address"})),
        toml_values,
        max_size=3,
    ),
)


@given(configs)
def test_any_config_dumps_and_loads_back_equal(config: Config) -> None:
    """dump writes TOML that load reads back to an equal Config."""
    assert load(dump(config)) == config


def test_examples_dump_and_load_back_equal() -> None:
    """The seed examples and the sample configs survive a dump and load unchanged."""
    for path in [*EXAMPLES.glob("seed-*.toml"), *CONFIGS.glob("*.toml")]:
        # The Windows sample is refused for its shell alone; the rest of it still counts.
        config = load(path.read_text().replace('shell = "pwsh"', 'shell = "bash"'))
        assert load(dump(config)) == config, path


def test_dump_leaves_defaults_out() -> None:
    """A config with only defaults below the plugin dumps to the few keys that were set."""
    config = Config(
        concurrent=2,
        runners=[Runner(executor="instance", autoscaler=AutoscalerConfig(plugin="aws"))],
    )
    assert dump(config) == (
        'concurrent = 2\n\n[[runners]]\nexecutor = "instance"\n\n'
        '[runners.autoscaler]\nplugin = "aws"\n'
    )


def test_dump_writes_go_durations_and_escapes_strings() -> None:
    """Durations are written in Go's canonical form and odd strings and keys are escaped."""
    scaler = AutoscalerConfig(
        plugin='a "quoted"\tplugin\x7f',
        plugin_config={"odd key.name": "line\nbreak", "nested": [{"a": 1}, {"b": [1, {"c": 2}]}]},
        policy=[Policy(idle_time=timedelta(hours=1, minutes=30))],
    )
    text = dump(Config(runners=[Runner(executor="instance", autoscaler=scaler)]))
    assert 'idle_time = "1h30m0s"' in text
    assert 'plugin = "a \\"quoted\\"\\tplugin\\u007f"' in text
    assert '"odd key.name" = "line\\nbreak"' in text
    assert load(text).runners[0].autoscaler == scaler


# --- nothing but ConfigError ----------------------------------------------------


def _loads_or_config_error(text_or_path: str | Path) -> None:
    error: ConfigError | None = None
    try:
        load(text_or_path)
    except ConfigError as exc:
        error = exc
    assert error is None or error.problems  # a ConfigError always says what is wrong


@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_config_error(source: str) -> None:
    """Any text, as TOML or as a path, gives a Config or a ConfigError, never another error."""
    _loads_or_config_error(source + "\n")
    _loads_or_config_error(source)


@given(tables)
def test_arbitrary_toml_raises_only_config_error(table: dict[str, Any]) -> None:
    """Any TOML document gives a Config or a ConfigError."""
    _loads_or_config_error(toml_text(table))


def _leaf_paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _leaf_paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _leaf_paths(value, (*path, index))
    return found


@given(configs, st.data())
def test_config_with_one_value_replaced_raises_only_config_error(
    config: Config, data: st.DataObject
) -> None:
    """A valid config with any one key's value replaced by any TOML value never crashes load."""
    document = tomllib.loads(dump(config))
    path = data.draw(st.sampled_from(_leaf_paths(document) or [("concurrent",)]))
    node: Any = document
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = data.draw(toml_values | st.sampled_from([[], {}, [{}], -1, 0, ""]))
    _loads_or_config_error(toml_text(document))
