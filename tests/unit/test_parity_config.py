"""Issue 14: keys that were accepted and then silently not acted on now do what GitLab
documents, are refused with their path and why, or warn that they have no effect."""

from __future__ import annotations

import pytest

from fleetkit.config import check, load

RUNNER = """
concurrent = 4
[[runners]]
  name = "r"
  executor = "instance"
{runner}
  [runners.autoscaler]
    plugin = "aws"
    max_instances = 4
{autoscaler}
"""


def text(runner: str = "", autoscaler: str = "") -> str:
    return RUNNER.format(runner=runner, autoscaler=autoscaler)


def warnings(source: str) -> dict[str, str]:
    return {w.path: w.message for w in load(source).warnings}


@pytest.mark.parametrize("key", ["pre_get_sources_script", "post_get_sources_script"])
def test_get_sources_scripts_have_no_effect(key: str) -> None:
    """fleetkit has no get_sources stage: the scripts around it warn, pointing at pre_build_script."""
    found = warnings(text(f'  {key} = "echo hi"'))
    assert found[f"runners[0].{key}"].startswith("has no effect: fleetkit does not fetch sources")
    assert "pre_build_script" in found[f"runners[0].{key}"]


def test_request_concurrency_above_one_has_no_effect() -> None:
    """request_concurrency only shapes GitLab's long polls, which fleetkit does not make."""
    found = warnings(text("  request_concurrency = 3"))
    assert found["runners[0].request_concurrency"].startswith("3 has no effect")
    assert warnings(text("  request_concurrency = 1")) == {}


def test_feature_flags_fleetkit_does_not_know_have_no_effect() -> None:
    """Feature flags are read: the heartbeat flag is acted on, any other one warns."""
    runner = (
        "  [runners.feature_flags]\n"
        "    FF_USE_FLEETING_ACQUIRE_HEARTBEATS = true\n"
        "    FF_USE_FASTZIP = true\n"
    )
    config = load(text(runner))
    assert config.runners[0].feature_flag("FF_USE_FLEETING_ACQUIRE_HEARTBEATS")
    found = {w.path: w.message for w in config.warnings}
    assert list(found) == ["runners[0].feature_flags.FF_USE_FASTZIP"]
    assert "has no effect" in found["runners[0].feature_flags.FF_USE_FASTZIP"]


def test_a_feature_flag_must_be_a_boolean() -> None:
    """GitLab's feature_flags is map[string]bool: a string value is refused at its path."""
    found = check(text('  [runners.feature_flags]\n    FF_X = "yes"\n'))
    assert [(p.path, p.message) for p in found.problems] == [
        ("runners[0].feature_flags", "feature flags are true or false; not so: FF_X")
    ]


def test_cache_dir_has_no_effect() -> None:
    """fleetkit keeps no cache between jobs, so cache_dir changes nothing."""
    assert "runners[0].cache_dir" in warnings(text('  cache_dir = "/cache"'))


def test_a_bad_key_does_not_hide_another_in_the_same_table() -> None:
    """protocol = "rdp" beside a bad timeout: both reported (rdp went unreported before)."""
    found = check(
        text(
            autoscaler="    [runners.autoscaler.connector_config]\n"
            '      protocol = "rdp"\n      timeout = "soon"\n'
        )
    )
    paths = [p.path for p in found.problems]
    assert paths == [
        "runners[0].autoscaler.connector_config.protocol",
        "runners[0].autoscaler.connector_config.timeout",
    ]


def test_a_runner_with_another_executor_is_left_out_with_a_warning() -> None:
    """A plain docker runner beside an instance runner: fleetkit says it will not run it."""
    source = text() + '\n[[runners]]\n  name = "d"\n  executor = "docker"\n'
    found = warnings(source)
    assert 'fleetkit runs only executor "instance"' in found["runners[1].executor"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('":9252"', ("0.0.0.0", 9252)),
        ('"127.0.0.1:9000"', ("127.0.0.1", 9000)),
        ('"[::1]:1"', ("::1", 1)),
    ],
)
def test_listen_address_is_read(value: str, expected: tuple[str, int]) -> None:
    """The global listen_address (where GitLab serves metrics) is read as host and port."""
    assert load(f"listen_address = {value}\n" + text()).listen_address == expected


def test_a_bad_listen_address_is_refused() -> None:
    """A listen_address that is no host:port is a problem at its path."""
    found = check('listen_address = "9252"\n' + text())
    assert [p.path for p in found.problems] == ["listen_address"]
