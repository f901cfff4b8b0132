"""The search: every candidate simulated on the tuning part, the cheapest that
meets the target checked on the held-out part."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed

import attrs

from fleetkit.simulate import Figures, FleetConfig, Options, Result, Trace, simulate_one
from fleetkit.tune._space import Candidate, SearchSpace, candidates

__all__ = ["Scored", "TuneResult", "tune"]

#: ``progress(done, total)`` after each simulation.
Progress = Callable[[int, int], None]


@attrs.frozen
class Scored:
    """A candidate and its figures on the tuning part."""

    candidate: Candidate
    figures: Figures


@attrs.frozen(kw_only=True)
class TuneResult:
    """What :func:`tune` found.

    ``best`` is the cheapest candidate (fewest instance-minutes) whose p95 wait
    on the tuning part meets the target, or ``None`` if none does.
    ``best_held_out`` / ``current_held_out`` are the best's and the current
    config's figures on the held-out part; ``current_tuning`` the current
    config's on the tuning part. ``held_out_miss`` says the best missed the
    target on the held-out part.
    """

    target_p95: float
    scored: tuple[Scored, ...]
    best: Scored | None
    current_tuning: Figures
    current_held_out: Figures | None
    best_held_out: Figures | None

    @property
    def held_out_miss(self) -> bool:
        """Whether the chosen policy's held-out p95 wait is over the target."""
        return self.best_held_out is not None and self.best_held_out.wait_p95_s > self.target_p95


def _config(base: FleetConfig, candidate: Candidate) -> FleetConfig:
    return attrs.evolve(base, name=candidate.label, policies=candidate.policies)


def _run_all(
    configs: list[FleetConfig],
    trace: Trace,
    options: Options,
    workers: int,
    progress: Progress | None,
) -> list[Figures]:
    total = len(configs)
    done = 0
    results: list[Figures | None] = [None] * total
    if workers <= 1:
        for index, config in enumerate(configs):
            results[index] = simulate_one(config, trace, options).figures
            done += 1
            if progress:
                progress(done, total)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures: dict[Future[Result], int] = {
                pool.submit(simulate_one, config, trace, options): index
                for index, config in enumerate(configs)
            }
            for future in as_completed(futures):
                result = future.result()
                results[futures[future]] = result.figures
                done += 1
                if progress:
                    progress(done, total)
    return [r for r in results if r is not None]


def tune(
    base: FleetConfig,
    trace: Trace,
    *,
    target_p95: float,
    split: float,
    space: SearchSpace | None = None,
    options: Options | None = None,
    workers: int = 2,
    progress: Progress | None = None,
) -> TuneResult:
    """Search ``space`` for the cheapest policies meeting ``target_p95`` seconds.

    Candidates keep ``base``'s limits and settings and replace its policies.
    They run on the trace's first ``split`` seconds; the cheapest that meets
    the target, and ``base`` itself, then run on the whole trace measured from
    ``split`` (the first part warming the fleet up), the held-out check.
    """
    if not 0 < split < trace.end:
        raise ValueError(f"split must be inside the trace (0 to {trace.end:g} s), got {split!r}")
    if target_p95 < 0:
        raise ValueError(f"target_p95 must be >= 0, got {target_p95!r}")
    options = options or Options()
    tuning = trace.between(0.0, split)
    grid = candidates(space or SearchSpace())
    configs = [_config(base, c) for c in grid] + [base]
    figures = _run_all(configs, tuning, options, workers, progress)
    scored = tuple(Scored(c, f) for c, f in zip(grid, figures, strict=False))
    meeting = [s for s in scored if s.figures.wait_p95_s <= target_p95]
    best = min(meeting, key=lambda s: (s.figures.instance_minutes, s.candidate.label), default=None)
    held_options = attrs.evolve(options, measure_from=split)
    checks = [base] + ([_config(base, best.candidate)] if best else [])
    held = _run_all(checks, trace, held_options, min(workers, len(checks)), None)
    return TuneResult(
        target_p95=target_p95,
        scored=scored,
        best=best,
        current_tuning=figures[-1],
        current_held_out=held[0],
        best_held_out=held[1] if best else None,
    )
