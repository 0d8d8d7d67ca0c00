"""The targets: what each section should show, as data, and how a run is judged.

Each `Target` names the section whose question it answers, the threshold, and
a function that reads the measured value (or several, one per case) from a
run's results. `evaluate` checks them all; a target whose section did not run
yields no row.
"""

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from benchmarks import _compile
from benchmarks import _contenders as c

Row = dict[str, Any]
Results = dict[str, Any]

MOMENTAX_STEPS = (
    "momentax sutskever",
    "momentax pytorch",
    "momentax sutskever nesterov",
    "momentax pytorch nesterov",
)
GROWTH_LIMIT = 1.1
"""The compile-time growth exponent allowed: linear (1), plus 0.1 for noise."""


@dataclass(frozen=True)
class Measured:
    """Holds one measured value of a target and the case it was measured on."""

    value: float
    where: str


@dataclass(frozen=True)
class Target:
    """Holds a target: the section it judges, its threshold and how it is measured.

    Attributes:
        name: What is compared, as the tables show it.
        section: The section whose results it reads.
        threshold: The value to reach.
        at_most: True when the measured value must be at most the threshold,
            False when at least.
        how: How the value is measured, in words.
        measure: Reads the measured values from a run's results (none when the
            section did not run).
    """

    name: str
    section: str
    threshold: float
    at_most: bool
    how: str
    measure: Callable[[Results], list[Measured]]


def evaluate(results: Results, targets: Iterable[Target] | None = None) -> list[Row]:
    """Every target's measured values in ``results``, each met or not."""
    return [
        {
            "target": target.name,
            "where": measured.where,
            "measured": measured.value,
            "threshold": target.threshold,
            "at_most": target.at_most,
            "met": measured.value <= target.threshold
            if target.at_most
            else measured.value >= target.threshold,
            "how": target.how,
        }
        for target in (TARGETS if targets is None else targets)
        for measured in target.measure(results)
    ]


def _row(rows: list[Row], problem: str | None, contender: str) -> Row | None:
    return next(
        (r for r in rows if r["problem"] == problem and r["contender"] == contender),
        None,
    )


def _ratio(rows: list[Row], problem: str | None, top: str, bottom: str) -> float | None:
    """The median of contender ``top`` over that of ``bottom`` on ``problem``."""
    a, b = _row(rows, problem, top), _row(rows, problem, bottom)
    return None if a is None or b is None else a["median"] / b["median"]


def _found(values: Iterable[tuple[float | None, str]]) -> list[Measured]:
    """The values that were measured (not None), each with its case."""
    return [Measured(value, where) for value, where in values if value is not None]


def _largest(rows: list[Row]) -> str | None:
    return max(rows, key=lambda row: row["size"])["problem"] if rows else None


def _flagged(results: Results) -> list[Row]:
    return list(results.get("with_flag", {}).get("sizes", []))


def optax_peer(name: str) -> str:
    """The ``optax.sgd`` row that runs the same update as momentax row ``name``."""
    nesterov = " nesterov" if " nesterov" in name else ""
    donation = " (no donation)" if name.endswith(" (no donation)") else ""
    return f"optax.sgd{nesterov}{donation}"


def optax_ratios(rows: list[Row]) -> list[Measured]:
    """The ratio momentax / optax.sgd of every momentax step row with an optax peer."""
    return _found(
        (
            _ratio(
                rows, row["problem"], row["contender"], optax_peer(row["contender"])
            ),
            f"{row['contender']} on {row['problem']}",
        )
        for row in rows
        if row["contender"].replace(" (no donation)", "") in MOMENTAX_STEPS
    )


def _worst(values: list[Measured], of: str, highest: bool = True) -> list[Measured]:
    """The worst value (highest or lowest), its case saying out of how many."""
    if not values:
        return []
    pick = max if highest else min
    worst = pick(values, key=lambda m: m.value)
    return [Measured(worst.value, f"{worst.where}; worst of {len(values)} {of}")]


def _against_best(results: Results) -> list[Measured]:
    sizes = results.get("sizes", [])
    largest = _largest(sizes)
    best = min(
        (
            r["median"]
            for n in ("optax.sgd", "torch fused")
            if (r := _row(sizes, largest, n))
        ),
        default=None,
    )
    return [
        Measured(row["median"] / best, f"{name} at {largest}")
        for name in MOMENTAX_STEPS[:2]
        if best and (row := _row(sizes, largest, name)) is not None
    ]


def _fraction(rows: list[Row], names: Iterable[str]) -> list[Measured]:
    largest = _largest(rows)
    return _found(
        ((row or {}).get("fraction_of_bandwidth"), f"{name} at {largest}")
        for name in names
        if (row := _row(rows, largest, name)) is not None
    )


def _beside_reference(results: Results) -> list[Measured]:
    rows = _flagged(results)
    largest = _largest(rows)
    ratios = _found(
        (_ratio(rows, largest, c.ONE_PASS, name), f"{name} at {largest}")
        for name in MOMENTAX_STEPS
    )
    return _worst(ratios, "steps", highest=False)


def _flag_speedup(results: Results) -> list[Measured]:
    rows = _flagged(results)
    speedups = _found(
        (
            _ratio(
                rows, row["problem"], optax_peer(row["contender"]), row["contender"]
            ),
            f"{row['contender']} on {row['problem']}",
        )
        for row in rows
        if row["contender"] in MOMENTAX_STEPS and row["size"] >= 10**7
    )
    return _worst(speedups, "steps", highest=False)


def _fit_per_step(results: Results) -> list[Measured]:
    sizes = results.get("sizes", [])
    largest = _largest(sizes)
    return _found(
        [(_ratio(sizes, largest, c.TRAIN_FIT, c.TRAIN_STEP), f"at {largest}")]
    )


def _worst_optax_ratio(results: Results) -> list[Measured]:
    rows = results.get("sizes", []) + results.get("trees", [])
    return _worst(optax_ratios(rows), "ratios")


def _noise_floor(results: Results) -> list[Measured]:
    rows = results.get("sizes", []) + results.get("trees", [])
    spreads = _found(
        (
            _ratio(rows, row["problem"], c.OPTAX_AGAIN, "optax.sgd"),
            f"on {row['problem']}",
        )
        for row in rows
        if row["contender"] == c.OPTAX_AGAIN
    )
    # Either may be the slower: the spread is the larger over the smaller.
    return _worst(
        [Measured(max(m.value, 1 / m.value), m.where) for m in spreads], "problems"
    )


def _median_optax_ratio(results: Results) -> list[Measured]:
    ratios = [m.value for m in optax_ratios(results.get("sizes", []))]
    if not ratios:
        return []
    return [Measured(statistics.median(ratios), f"median of {len(ratios)} ratios")]


def _above_limit(results: Results) -> list[Measured]:
    """The fastest contender over the limit, at the limit's size.

    The one-pass reference is the limit's own kernel timed again (in another
    process for the flagged rows): its ratio is drift, not a contender's.
    """
    limit = results.get("bandwidth_limit")
    size = max((r["size"] for r in results.get("bandwidth", [])), default=None)
    fractions = [
        Measured(row["gb_per_s"] / limit, f"{row['contender']} on {row['problem']}")
        for row in results.get("sizes", []) + _flagged(results)
        if limit and row["size"] == size and row["contender"] != c.ONE_PASS
    ]
    return _worst(fractions, "rows")


TREE = "1000 x 1000"


def _against_torch_fused(names: Iterable[str], fused_over_mine: bool) -> Any:
    def measure(results: Results) -> list[Measured]:
        trees = results.get("trees", [])
        return _found(
            (
                _ratio(trees, TREE, "torch fused", name)
                if fused_over_mine
                else _ratio(trees, TREE, name, "torch fused"),
                name,
            )
            for name in names
        )

    return measure


def _regression(results: Results) -> list[Measured]:
    ways = results.get("regression", {}).get("ways", {})
    fit = ways.get("momentax.training.fit (one lax.scan)")
    if "torch eager" not in ways or fit is None:
        return []
    return [Measured(ways["torch eager"]["median"] / fit["median"], "450 epochs")]


def _memory(results: Results) -> list[Measured]:
    return [
        Measured(row["ratio"], f"{row['layout']} on {row['problem']}")
        for row in results.get("memory", [])
        if row["optimizer"] == "momentax" and row["donate"]
    ]


def _compile_ratios(results: Results) -> list[Measured]:
    rows = results.get("compile", [])
    counts = sorted({row["leaves"] for row in rows})
    return [
        Measured(ratio, f"{what} at {count} leaves")
        for what in _compile.COMPARED
        for count in counts
        if (ratio := _compile.ratio(rows, what, count)) is not None
    ]


def _compile_growth(results: Results) -> list[Measured]:
    rows = results.get("compile", [])
    out = []
    for what in _compile.COMPARED:
        grows = _compile.growth(rows, what, "momentax")
        if grows is None:
            continue
        theirs = _compile.growth(rows, what, "optax.sgd")
        where = f"{what}, {grows['from']} to {grows['to']} leaves"
        if theirs is not None:
            where += f" (optax.sgd's: {theirs['exponent']:.2f})"
        out.append(Measured(grows["exponent"], where))
    return out


RATIO = "ratio of medians"
TARGETS = (
    Target(
        "donated momentax step / the best of optax.sgd and torch fused",
        "sizes",
        1.05,
        True,
        f"largest size, one jitted call per step; {RATIO}",
        _against_best,
    ),
    Target(
        "donated momentax step, fraction of the bandwidth limit",
        "sizes",
        0.85,
        False,
        "largest size; 5 x 4 bytes per param over the limit's GB/s",
        lambda results: _fraction(results.get("sizes", []), MOMENTAX_STEPS[:2]),
    ),
    Target(
        "with the fusion flag: momentax step, fraction of the bandwidth limit",
        "sizes",
        0.95,
        False,
        "largest size, in the flagged child process; the limit is timed in the "
        "parent process",
        lambda results: _fraction(_flagged(results), MOMENTAX_STEPS),
    ),
    Target(
        "with the fusion flag: C one-pass kernel / momentax step, same process",
        "sizes",
        0.95,
        False,
        f"largest size; the reference timed beside the steps, so that drift "
        f"between processes cancels; {RATIO}",
        _beside_reference,
    ),
    Target(
        "with the fusion flag: speed-up over optax.sgd under the same flag",
        "sizes",
        1.2,
        False,
        f"sizes from 1e7 up; optax.sgd / momentax, {RATIO}",
        _flag_speedup,
    ),
    Target(
        "fit on the quadratic loss, per step / one donated train step",
        "sizes",
        1.05,
        True,
        f"largest size, gradients computed in the step; {RATIO}",
        _fit_per_step,
    ),
    Target(
        "momentax / optax.sgd, the same update",
        "sizes",
        1.03,
        True,
        f"every momentax step row against its optax.sgd peer, sizes and trees; {RATIO}",
        _worst_optax_ratio,
    ),
    Target(
        "noise floor: optax.sgd against a second instance of itself",
        "sizes",
        1.03,
        True,
        "the same compiled step twice; above 1.03 the run cannot resolve the "
        "1.03 target above",
        _noise_floor,
    ),
    Target(
        "momentax / optax.sgd, median over the sizes",
        "sizes",
        1.0,
        True,
        f"median over the sizes of every momentax row's {RATIO} to its peer",
        _median_optax_ratio,
    ),
    Target(
        "fastest contender / bandwidth limit (none should beat the limit)",
        "sizes",
        1.0,
        True,
        "the limit's size; GB/s over the limit's GB/s",
        _above_limit,
    ),
    Target(
        f"torch fused / momentax fit, per step on {TREE} leaves",
        "trees",
        10.0,
        False,
        RATIO,
        _against_torch_fused(
            ("momentax fit (scan)", "momentax packed fit (scan)"), True
        ),
    ),
    Target(
        f"one jitted momentax call / torch fused, on {TREE} leaves",
        "trees",
        1.0,
        True,
        RATIO,
        _against_torch_fused(("momentax packed", "momentax sutskever"), False),
    ),
    Target(
        "blog regression: torch eager / momentax.training.fit",
        "regression",
        30.0,
        False,
        "the whole training, compile excluded; ratio of medians",
        _regression,
    ),
    Target(
        "peak memory / ideal, donated momentax train step",
        "memory",
        1.10,
        True,
        "XLA's buffer assignment; ideal = params + gradients + velocity",
        _memory,
    ),
    Target(
        "compile time, momentax / optax.sgd",
        "compile",
        1.1,
        True,
        f"first call minus a warm call; {RATIO}",
        _compile_ratios,
    ),
    Target(
        "compile time of momentax, growth exponent in the leaf count",
        "compile",
        GROWTH_LIMIT,
        True,
        "log(t_b / t_a) / log(b / a) over the two largest counts: 1 is linear, "
        "0.1 allowed for noise",
        _compile_growth,
    ),
)
