"""How long a simulated instance takes to boot: ``--boot-time SPEC``.

A spec is one of:

* a fixed duration: ``0s``, ``60s``, ``1m30s`` (Go durations; a bare number is seconds);
* a uniform range: ``40s..90s``;
* a lognormal by its median and shape: ``lognormal:50s,0.3`` (``sigma`` of the
  underlying normal; boot times have a long right tail, which a lognormal
  captures with two numbers);
* an empirical list, drawn from with equal weight: ``41s,38s,55s,47s`` or
  ``@boots.txt`` (one duration a line, ``#`` comments);
* a named preset (:data:`PRESETS`): ``linux-vm``, ``windows-vm``, ``ec2-mac``,
  ``microvm``.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import attrs

from fleetkit.config import parse_duration
from fleetkit.errors import ConfigError, Problem

__all__ = ["PRESETS", "BootTime", "parse_boot_time", "parse_seconds"]


@attrs.frozen
class BootTime:
    """A boot-time distribution in seconds, from a spec (see the module docs).

    ``kind`` is ``fixed``, ``uniform``, ``lognormal`` or ``empirical``; ``values``
    holds its numbers (the value; low and high; median and sigma; the samples).
    ``spec`` is the text it came from, for reports.
    """

    kind: str
    values: tuple[float, ...]
    spec: str = ""

    def draw(self, rng: random.Random) -> float:
        """One boot time in seconds."""
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "uniform":
            return rng.uniform(self.values[0], self.values[1])
        if self.kind == "lognormal":
            median, sigma = self.values
            return median * math.exp(rng.gauss(0.0, sigma))
        return rng.choice(self.values)

    @property
    def mean(self) -> float:
        """The distribution's mean in seconds."""
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "uniform":
            return (self.values[0] + self.values[1]) / 2
        if self.kind == "lognormal":
            median, sigma = self.values
            return median * math.exp(sigma * sigma / 2)
        return sum(self.values) / len(self.values)

    def __str__(self) -> str:
        return self.spec or f"{self.kind}{self.values}"


#: Named boot-time presets. Rough figures for what each kind of machine takes
#: from the create call to accepting SSH; measure your own and pass a list
#: when you can.
PRESETS: dict[str, BootTime] = {
    # A Linux VM on a public cloud: typically 30-90 s to SSH.
    "linux-vm": BootTime("lognormal", (45.0, 0.35), "linux-vm"),
    # Windows images boot and specialise slowly: minutes, not seconds.
    "windows-vm": BootTime("lognormal", (240.0, 0.3), "windows-vm"),
    # An EC2 Mac instance on a dedicated host: macOS boots in many minutes.
    "ec2-mac": BootTime("lognormal", (600.0, 0.3), "ec2-mac"),
    # A Firecracker-style microVM: well under a second to a running guest.
    "microvm": BootTime("uniform", (0.15, 1.0), "microvm"),
}


def parse_seconds(text: str) -> float:
    """A Go duration (``90s``, ``1m30s``) or a bare number of seconds, as seconds.

    Raises :class:`ValueError` naming the text when it is neither.
    """
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        value = parse_duration(text).total_seconds()
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{text!r} is not a duration >= 0")
    return value


def parse_boot_time(spec: str, *, where: str = "--boot-time") -> BootTime:
    """Parse a boot-time spec (see the module docs).

    Raises :class:`~fleetkit.errors.ConfigError` naming ``where``, the bad text
    and the forms expected.
    """
    text = spec.strip()
    try:
        return _parse(text)
    except (ValueError, OSError) as exc:
        presets = ", ".join(PRESETS)
        raise ConfigError(
            [
                Problem(
                    where,
                    f"{exc}; expected a duration (60s), a range (40s..90s), "
                    f"lognormal:MEDIAN,SIGMA, a list (41s,38s,55s), @FILE or a preset ({presets})",
                )
            ]
        ) from None


def _parse(text: str) -> BootTime:
    if text in PRESETS:
        return PRESETS[text]
    if not text:
        raise ValueError("empty boot-time spec")
    if text.startswith("lognormal:"):
        parts = text[len("lognormal:") :].split(",")
        if len(parts) != 2:
            raise ValueError(f"{text!r}: lognormal needs MEDIAN,SIGMA")
        median = parse_seconds(parts[0])
        sigma = float(parts[1])
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"{text!r}: sigma must be a number >= 0")
        return BootTime("lognormal", (median, sigma), text)
    if ".." in text:
        low_text, _, high_text = text.partition("..")
        low, high = parse_seconds(low_text), parse_seconds(high_text)
        if high < low:
            raise ValueError(f"{text!r}: the range's high end is below its low end")
        return BootTime("uniform", (low, high), text)
    if text.startswith("@"):
        lines = Path(text[1:]).read_text(encoding="utf-8").splitlines()
        samples = [line.split("#", 1)[0].strip() for line in lines]
        values = tuple(parse_seconds(s) for s in samples if s)
        if not values:
            raise ValueError(f"{text[1:]}: no boot times in the file")
        return BootTime("empirical", values, text)
    if "," in text:
        return BootTime("empirical", tuple(parse_seconds(s) for s in text.split(",")), text)
    if text[0].isalpha():
        raise ValueError(f"unknown preset {text!r}")
    return BootTime("fixed", (parse_seconds(text),), text)
