"""``fleetkit simulate CONFIG...``: what these configs would cost, and how long jobs would wait.

Replays a job trace (``--trace FILE``: CSV or a GitLab Jobs API export) or a
synthetic workload (``--workload workday``) through the real fleet of each
config in virtual time, on a simulated cloud with the boot time of
``--boot-time`` and the faults asked for, and prints the figures side by side:
a table (rich on a terminal), ``--json`` for programs, ``--report DIR`` for PNG
charts. A week of traffic takes seconds.

Exit status: 0; 1 when a config, the trace or an option is bad (every problem
named, with its line or TOML path).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetkit.cli._common import (
    instant,
    interruptible,
    reporting_errors,
    runner_choice,
)

if TYPE_CHECKING:
    from fleetkit.simulate import Figures

__all__ = ["register", "run"]


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``simulate`` to the ``fleetkit`` command."""
    parser = commands.add_parser(
        "simulate",
        help="replay a job trace through configs in virtual time: cost against wait",
        description="Replay CI traffic through the real fleet of each config in virtual "
        "time and compare waits, instance-minutes and cost side by side.",
    )
    parser.add_argument("configs", metavar="CONFIG", type=Path, nargs="+", help="config.toml files")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--trace", metavar="FILE", type=Path, help="CSV or GitLab Jobs API JSON")
    source.add_argument(
        "--workload",
        metavar="SPEC",
        help="a synthetic trace: workday[:pipelines=400,jobs=4,duration=5m,sigma=0.8,days=7,"
        "weekend=0.05,lunch=0.5,shape=workday,tz=UTC,seed=0] or poisson[:rate=60,duration=5m,days=1]",
    )
    parser.add_argument("--write-trace", metavar="FILE", type=Path, help="write the trace as CSV")
    parser.add_argument(
        "--boot-time",
        metavar="SPEC",
        default="linux-vm",
        help="60s, 40s..90s, lognormal:MEDIAN,SIGMA, a list 41s,38s,55s, @FILE, or a preset: "
        "linux-vm, windows-vm, ec2-mac, microvm (default linux-vm)",
    )
    parser.add_argument(
        "--cold", action="store_true", help="start with no instance (default: warm)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for boot times and faults (default 0)"
    )
    parser.add_argument("--runner", metavar="NAME_OR_INDEX", help="the [[runners]] entry to use")
    parser.add_argument(
        "--start",
        metavar="WHEN",
        type=instant,
        help="when a trace in seconds starts (ISO 8601; default Monday 2026-01-05T00:00Z)",
    )
    parser.add_argument(
        "--price-per-hour", metavar="X", type=float, default=0.0, help="price of an instance-hour"
    )
    parser.add_argument(
        "--wait-threshold",
        metavar="DURATION",
        default="5m",
        help="count jobs waiting longer than this (default 5m)",
    )
    faults = parser.add_argument_group("faults of the simulated cloud")
    faults.add_argument(
        "--create-failure",
        metavar="P",
        type=float,
        default=0.0,
        help="share of creations that fail",
    )
    faults.add_argument(
        "--never-ready",
        metavar="P",
        type=float,
        default=0.0,
        help="share of instances that never boot",
    )
    faults.add_argument(
        "--spot-loss",
        metavar="RATE",
        type=float,
        default=0.0,
        help="instances lost per instance-hour",
    )
    faults.add_argument(
        "--ready-failure",
        metavar="P",
        type=float,
        default=0.0,
        help="share of ready commands that fail",
    )
    faults.add_argument(
        "--ready-time", metavar="DURATION", default="0s", help="time the ready command takes"
    )
    faults.add_argument(
        "--deletion-time", metavar="DURATION", default="10s", help="time a delete takes"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--report", metavar="DIR", type=Path, help="write PNG charts into DIR")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes to run configs in (default 1)"
    )
    parser.add_argument("--plain", action="store_true", help="a plain table even on a terminal")
    parser.set_defaults(run=interruptible(run))


def _run(args: argparse.Namespace) -> int:
    import attrs

    from fleetkit.errors import ConfigError, Problem
    from fleetkit.simulate import (
        CloudFaults,
        FleetConfig,
        Options,
        generate,
        parse_boot_time,
        parse_seconds,
        parse_workload,
        read_trace,
        simulate,
        write_csv,
    )
    from fleetkit.simulate._charts import require_matplotlib, write_charts
    from fleetkit.simulate._report import summary_line

    def seconds_option(name: str, text: str) -> float:
        try:
            return parse_seconds(text)
        except ValueError as exc:
            raise ConfigError([Problem(name, str(exc))]) from None

    if args.report is not None:
        require_matplotlib()
    if not (math.isfinite(args.price_per_hour) and args.price_per_hour >= 0):
        raise ConfigError([Problem("--price-per-hour", "must be a number >= 0")])
    if args.workers < 1:
        raise ConfigError([Problem("--workers", f"must be >= 1, got {args.workers}")])
    boot = parse_boot_time(args.boot_time)
    try:
        faults = CloudFaults(
            create_failure=args.create_failure,
            never_ready=args.never_ready,
            spot_loss_per_hour=args.spot_loss,
            ready_failure=args.ready_failure,
            ready_time=seconds_option("--ready-time", args.ready_time),
            deletion=seconds_option("--deletion-time", args.deletion_time),
        )
    except ValueError as exc:
        raise ConfigError([Problem("faults", str(exc))]) from None
    if faults.create_failure + faults.never_ready > 1:
        raise ConfigError([Problem("--create-failure", "plus --never-ready must be at most 1")])
    runner = runner_choice(args.runner)
    names: dict[str, int] = {}
    configs = []
    for path in args.configs:
        stem = path.stem
        names[stem] = names.get(stem, 0) + 1
        name = stem if names[stem] == 1 else f"{stem}#{names[stem]}"
        configs.append(FleetConfig.from_toml(path, runner, name=name))
    if args.trace is not None:
        trace = read_trace(args.trace, start=args.start)
        source = str(args.trace)
    else:
        workload = parse_workload(args.workload, seed=args.seed)
        if args.start is not None:
            workload = attrs.evolve(workload, start=args.start.date())
        trace = generate(workload)
        source = f"--workload {args.workload}"
        if not trace.jobs:
            raise ConfigError([Problem("--workload", "the workload has no jobs (raise its rate)")])
    if args.write_trace is not None:
        write_csv(trace, args.write_trace)
    options = Options(
        boot=boot,
        faults=faults,
        seed=args.seed,
        warm=not args.cold,
        wait_threshold=seconds_option("--wait-threshold", args.wait_threshold),
        price_per_hour=args.price_per_hour,
        series_step=_step(trace.end) if args.report is not None else None,
    )
    results = simulate(configs, trace, options, workers=args.workers)
    figures = [r.figures for r in results]
    if args.json:
        json.dump([f.to_json() for f in figures], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        head = summary_line(
            len(trace.jobs),
            trace.end,
            source,
            str(boot),
            options.warm,
            args.seed,
            trace.not_started,
        )
        _print_table(head, figures, args.price_per_hour, plain=args.plain)
    if args.report is not None:
        paths = write_charts(results, args.report)
        if not args.json:
            print("charts: " + ", ".join(str(p) for p in paths))
    return 0


def _step(span: float) -> float:
    # About 2,000 samples whatever the span, and never finer than a minute.
    return max(60.0, span / 2000)


def _print_table(head: str, figures: list[Figures], price: float, *, plain: bool) -> None:
    from fleetkit.simulate._report import rows

    table = rows(figures, price_per_hour=price)
    if not plain and sys.stdout.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            grid = Table(title=head, title_justify="left")
            grid.add_column("", no_wrap=True)
            for f in figures:
                grid.add_column(f.config, justify="right")
            for label, cells in table:
                grid.add_row(label, *cells)
            Console().print(grid)
            return
    print(head)
    width = max(len(label) for label, _ in table)
    cols = [
        max([len(f.config)] + [len(cells[i]) for _, cells in table]) for i, f in enumerate(figures)
    ]
    print(" " * width + "".join(f"  {f.config:>{w}}" for f, w in zip(figures, cols, strict=True)))
    for label, cells in table:
        print(
            f"{label:<{width}}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, cols, strict=True))
        )


#: Simulate and print the comparison.
run = reporting_errors("simulate", _run)
