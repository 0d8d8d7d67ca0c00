"""Timing: warm up, then interleaved repeats of every contender, with medians."""

import math
import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol


class Runner(Protocol):
    """A contender set up and ready: runs calls and waits for their results."""

    def run(self, calls: int) -> None:
        """Runs ``calls`` calls back to back and blocks until all are done."""

    def params(self) -> Any:
        """The current params as one flat NumPy array (for cross-checks)."""


@dataclass(frozen=True)
class Stats:
    """Holds the timing of one contender, in seconds per call.

    Attributes:
        median: Median over the samples.
        p25: 25th percentile.
        p75: 75th percentile.
        minimum: Fastest sample.
        samples: Number of timed samples.
        calls_per_sample: Calls run back to back in one sample (each sample is
            the sample's time divided by this).
        first_call: The first call's time, compilation included.
    """

    median: float
    p25: float
    p75: float
    minimum: float
    samples: int
    calls_per_sample: int
    first_call: float

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class Settings:
    """How long and how often to time.

    Attributes:
        repeats: Timed samples per contender.
        min_sample_time: A sample runs enough calls to last at least this long,
            so that the timer's resolution and one-off hiccups do not dominate.
    """

    repeats: int
    min_sample_time: float


def _calls_per_sample(runner: Runner, min_time: float) -> int:
    """Doubles the number of calls until a sample lasts ``min_time``."""
    calls = 1
    while True:
        start = time.perf_counter()
        runner.run(calls)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time or calls >= 2**20:
            return calls
        # Jump close to the target, then let the loop confirm it.
        calls = max(2 * calls, math.ceil(calls * min_time / max(elapsed, 1e-9)))


def time_first_call(runner: Runner) -> float:
    """Times one call of a fresh runner (it compiles, then runs)."""
    start = time.perf_counter()
    runner.run(1)
    return time.perf_counter() - start


def measure(
    runners: Mapping[str, Runner],
    first_calls: Mapping[str, float],
    settings: Settings,
) -> dict[str, Stats]:
    """Times every runner, interleaved: each round runs one sample of each.

    Interleaving spreads a noisy neighbour or a clock change over all contenders
    instead of penalising whichever ran at the time. The order is shuffled each
    round (seeded), so that no contender always runs first or always runs right
    after the same one and inherits its after-effects (a rotation keeps every
    contender's predecessor fixed; PyTorch's worker threads, for one, keep
    spinning for a while after a call).

    Args:
        runners: The contenders, already warmed up (compiled).
        first_calls: Each runner's first-call time, passed through to Stats.
        settings: Repeats and minimum sample time.

    Returns:
        The Stats of each runner, per call.
    """
    names = list(runners)
    calls = {
        name: _calls_per_sample(runners[name], settings.min_sample_time)
        for name in names
    }
    samples: dict[str, list[float]] = {name: [] for name in names}
    order = random.Random(0)  # Seeded: the same orders in every run.
    for _ in range(settings.repeats):
        for name in order.sample(names, len(names)):
            start = time.perf_counter()
            runners[name].run(calls[name])
            samples[name].append((time.perf_counter() - start) / calls[name])
    return {
        name: summarize(samples[name], calls[name], first_calls[name]) for name in names
    }


def summarize(values: list[float], calls: int, first_call: float) -> Stats:
    """Median, quartiles and minimum of timed samples."""
    quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return Stats(
        median=statistics.median(values),
        p25=quartiles[0],
        p75=quartiles[2],
        minimum=min(values),
        samples=len(values),
        calls_per_sample=calls,
        first_call=first_call,
    )


def time_repeated(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Times ``fn()`` ``repeats`` times (it must block on its own results)."""
    values = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        values.append(time.perf_counter() - start)
    return values
