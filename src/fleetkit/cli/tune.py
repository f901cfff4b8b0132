"""``fleetkit tune CONFIG --trace FILE --target-p95-wait DURATION``: the cheapest
GitLab policies that keep the p95 wait under a target.

Simulates a bounded grid of policies GitLab Runner itself can run (a base
``idle_count`` / ``idle_time`` / ``scale_factor`` policy, and the same with a
second one for weekday working hours) on the first part of the trace, in a
process pool, and prints the cheapest meeting the target beside the config's
current figures, checked on the held-out rest of the trace, and the
``[[runners.autoscaler.policy]]`` blocks to paste.

Exit status: 0 a policy was found (a held-out miss is said, not an error); 1
when an input is bad or no policy of the grid meets the target.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetkit.cli._common import (
    interruptible,
    reporting_errors,
    runner_choice,
)

if TYPE_CHECKING:
    from fleetkit.simulate import Figures
    from fleetkit.tune import SearchSpace, TuneResult

__all__ = ["register", "run"]

_DAY = 86400.0


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``tune`` to the ``fleetkit`` command."""
    parser = commands.add_parser(
        "tune",
        help="search GitLab policies with the simulator for the cheapest meeting a p95 wait",
        description="Search idle_count, idle_time, scale_factor and weekday working-hour "
        "periods with the simulator; print the cheapest policies whose p95 wait meets the "
        "target, checked on a held-out part of the trace.",
    )
    parser.add_argument("config", metavar="CONFIG", type=Path, help="the config.toml to tune")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--trace", metavar="FILE", type=Path, help="CSV or GitLab Jobs API JSON")
    source.add_argument("--workload", metavar="SPEC", help="a synthetic trace (see simulate)")
    parser.add_argument(
        "--target-p95-wait", metavar="DURATION", required=True, help="e.g. 30s or 2m"
    )
    parser.add_argument(
        "--tune-on",
        metavar="DURATION",
        help="tune on this first part of the trace (e.g. 7d or 36h), check on the rest "
        "(default: 7d if the trace is two weeks or longer, else its first half)",
    )
    parser.add_argument("--boot-time", metavar="SPEC", default="linux-vm", help="as simulate's")
    parser.add_argument("--seed", type=int, default=0, help="seed for boot times (default 0)")
    parser.add_argument("--runner", metavar="NAME_OR_INDEX", help="the [[runners]] entry to use")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    grid = parser.add_argument_group("the grid searched (comma-separated values)")
    grid.add_argument("--idle-counts", metavar="N,...", default="0,1,2,4,8")
    grid.add_argument("--idle-times", metavar="DURATION,...", default="5m,15m,30m")
    grid.add_argument("--scale-factors", metavar="X,...", default="0")
    grid.add_argument("--scale-factor-limit", metavar="N", type=int, default=0)
    grid.add_argument(
        "--day-windows",
        metavar="H-H,...",
        default="7-18,8-17",
        help="weekday working hours for a second policy ('none': static policies only)",
    )
    grid.add_argument("--day-idle-counts", metavar="N,...", default="2,4,8,12")
    parser.set_defaults(run=interruptible(run))


def _problem(where: str, what: str) -> Exception:
    from fleetkit.errors import ConfigError, Problem

    return ConfigError([Problem(where, what)])


def _list(where: str, text: str, parse: Any) -> tuple[Any, ...]:
    try:
        values = tuple(parse(part.strip()) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise _problem(where, f"{exc}") from None
    if not values:
        raise _problem(where, "expected at least one value")
    return values


def _count(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 100_000:
        raise ValueError(f"expected a count from 0 to 100000, got {text!r}")
    return value


def _window(text: str) -> tuple[int, int]:
    first, dash, last = text.partition("-")
    if not dash or not first.isdigit() or not last.isdigit():
        raise ValueError(f"expected FIRST-LAST hours such as 8-17, got {text!r}")
    low, high = int(first), int(last)
    if not 0 <= low <= high <= 23:
        raise ValueError(f"expected hours 0 <= FIRST <= LAST <= 23, got {text!r}")
    return low, high


def _span(text: str) -> float:
    """A duration, also in days (``7d``: traces span weeks)."""
    from fleetkit.simulate import parse_seconds

    if text.endswith("d") and text[:-1].replace(".", "", 1).isdigit():
        return float(text[:-1]) * _DAY
    return parse_seconds(text)


def _space(args: argparse.Namespace) -> SearchSpace:
    from fleetkit.simulate import parse_seconds
    from fleetkit.tune import SearchSpace

    def seconds(text: str) -> float:
        value = parse_seconds(text)
        if value <= 0:
            raise ValueError(f"expected a duration > 0, got {text!r}")
        return value

    def factor(text: str) -> float:
        value = float(text)
        if not 0 <= value <= 1000:
            raise ValueError(f"expected a factor from 0 to 1000, got {text!r}")
        return value

    windows = (
        ()
        if args.day_windows.strip() == "none"
        else _list("--day-windows", args.day_windows, _window)
    )
    if args.scale_factor_limit < 0:
        raise _problem("--scale-factor-limit", f"must be >= 0, got {args.scale_factor_limit}")
    return SearchSpace(
        idle_counts=_list("--idle-counts", args.idle_counts, _count),
        idle_times=_list("--idle-times", args.idle_times, seconds),
        scale_factors=_list("--scale-factors", args.scale_factors, factor),
        scale_factor_limit=args.scale_factor_limit,
        day_windows=windows,
        day_idle_counts=_list("--day-idle-counts", args.day_idle_counts, _count),
    )


def _run(args: argparse.Namespace) -> int:
    from fleetkit.simulate import (
        FleetConfig,
        Options,
        generate,
        parse_boot_time,
        parse_seconds,
        parse_workload,
        read_trace,
    )
    from fleetkit.tune import candidates, tune

    try:
        target = parse_seconds(args.target_p95_wait)
    except ValueError as exc:
        raise _problem("--target-p95-wait", str(exc)) from None
    if args.workers < 1:
        raise _problem("--workers", f"must be >= 1, got {args.workers}")
    space = _space(args)
    boot = parse_boot_time(args.boot_time)
    base = FleetConfig.from_toml(args.config, runner_choice(args.runner), name="current")
    if args.trace is not None:
        trace = read_trace(args.trace)
    else:
        trace = generate(parse_workload(args.workload, seed=args.seed))
    if not trace.jobs:
        raise _problem("--trace" if args.trace else "--workload", "the trace has no jobs")
    if args.tune_on is not None:
        try:
            split = _span(args.tune_on)
        except ValueError as exc:
            raise _problem("--tune-on", str(exc)) from None
        if not 0 < split < trace.end:
            raise _problem(
                "--tune-on", f"must be inside the trace (it spans {trace.end / _DAY:.1f} days)"
            )
    else:
        split = 7 * _DAY if trace.end >= 14 * _DAY else trace.end / 2
    total = len(candidates(space)) + 1
    print(
        f"tuning {total - 1} policies on the first {split / _DAY:.1f} days "
        f"({sum(1 for j in trace.jobs if j.arrival < split)} jobs), checking on the rest; "
        f"boot time {boot}, {args.workers} workers",
        file=sys.stderr,
    )

    def progress(done: int, of: int) -> None:
        if sys.stderr.isatty():
            print(f"\r  simulated {done}/{of}", end="", file=sys.stderr, flush=True)
        elif done == of or done % max(of // 10, 1) == 0:
            print(f"  simulated {done}/{of}", file=sys.stderr, flush=True)

    result = tune(
        base,
        trace,
        target_p95=target,
        split=split,
        space=space,
        options=Options(boot=boot, seed=args.seed),
        workers=args.workers,
        progress=progress,
    )
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return _report(result)


def _row(label: str, figures: Figures | None) -> str:
    if figures is None:
        return f"  {label:<28} {'-':>16} {'-':>10} {'-':>10}"
    return (
        f"  {label:<28} {figures.instance_minutes:>16,.0f} {figures.wait_p95_s:>9.1f}s "
        f"{figures.wait_mean_s:>9.1f}s"
    )


def _report(result: TuneResult) -> int:
    from fleetkit.tune import policy_blocks

    best = result.best
    print(f"target: p95 wait <= {result.target_p95:g}s")
    print(f"  {'':<28} {'instance-minutes':>16} {'p95 wait':>10} {'mean wait':>10}")
    print(_row("current, tuning part", result.current_tuning))
    print(_row("best, tuning part", best.figures if best else None))
    print(_row("current, held-out part", result.current_held_out))
    print(_row("best, held-out part", result.best_held_out))
    if best is None:
        closest = min(result.scored, key=lambda s: s.figures.wait_p95_s)
        print(
            f"no policy of the grid meets the target on the tuning part; the lowest p95 wait "
            f"was {closest.figures.wait_p95_s:.1f}s ({closest.candidate.label}): widen the grid "
            "(--idle-counts, --day-idle-counts) or raise the target"
        )
        return 1
    print(f"best: {best.candidate.label}")
    if result.held_out_miss:
        assert result.best_held_out is not None
        print(
            f"held-out MISS: on the part it was not tuned on, its p95 wait is "
            f"{result.best_held_out.wait_p95_s:.1f}s, over the target: the traffic differs "
            "between the parts; tune on a longer or more recent trace, or keep a margin"
        )
    else:
        print("held-out check: the target is met on the part it was not tuned on")
    print("\n# paste into [runners.autoscaler] in place of its policy blocks:")
    print(policy_blocks(best.candidate.policies), end="")
    return 0


#: Tune and print the result.
run = reporting_errors("tune", _run)
