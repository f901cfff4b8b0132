"""GitLab Runner's ``config.toml`` (the autoscaler part) as typed, frozen values.

:func:`load` reads a file or text into a :class:`Config`, raising
:class:`~fleetkit.errors.ConfigError` with every problem and its TOML path
(:func:`check` returns the problems and warnings instead of raising);
:func:`dump` writes a :class:`Config` back as TOML. :func:`parse_duration` and
:func:`format_duration` read and write Go durations ("20m0s").
"""

from __future__ import annotations

from fleetkit.config._dump import dump as dump
from fleetkit.config._duration import format_duration as format_duration
from fleetkit.config._duration import parse_duration as parse_duration
from fleetkit.config._load import Findings as Findings
from fleetkit.config._load import check as check
from fleetkit.config._load import load as load
from fleetkit.config._schema import AUTOSCALER_EXECUTORS as AUTOSCALER_EXECUTORS
from fleetkit.config._schema import FEATURE_FLAGS as FEATURE_FLAGS
from fleetkit.config._schema import RUNNER_SHELLS as RUNNER_SHELLS
from fleetkit.config._schema import AutoscalerConfig as AutoscalerConfig
from fleetkit.config._schema import Config as Config
from fleetkit.config._schema import InstanceConfig as InstanceConfig
from fleetkit.config._schema import Runner as Runner
from fleetkit.config._schema import ScaleThrottle as ScaleThrottle
from fleetkit.config._schema import StateStorage as StateStorage
from fleetkit.config._schema import VMIsolation as VMIsolation

__all__ = [
    "AUTOSCALER_EXECUTORS",
    "FEATURE_FLAGS",
    "RUNNER_SHELLS",
    "AutoscalerConfig",
    "Config",
    "Findings",
    "InstanceConfig",
    "Runner",
    "ScaleThrottle",
    "StateStorage",
    "VMIsolation",
    "check",
    "dump",
    "format_duration",
    "load",
    "parse_duration",
]
