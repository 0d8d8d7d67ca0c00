"""The results as markdown: one table (or two) per section, then the targets."""

from collections.abc import Callable
from typing import Any

from benchmarks import _compile

Row = dict[str, Any]
Results = dict[str, Any]


def seconds(value: float) -> str:
    """A time with a readable unit: 8.1 ms, 12 µs, 1.23 s."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} s"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def grid(rows: list[Row], cell: Callable[[Row], str]) -> list[str]:
    """Contenders down, problems across."""
    problems = list(dict.fromkeys(row["problem"] for row in rows))
    contenders = list(dict.fromkeys(row["contender"] for row in rows))
    by_key = {(row["contender"], row["problem"]): row for row in rows}
    body = [
        [name]
        + [cell(by_key[name, p]) if (name, p) in by_key else "" for p in problems]
        for name in contenders
    ]
    return table(["contender", *problems], body)


def _step_cell(row: Row) -> str:
    text = seconds(row["median"])
    if row.get("fraction_of_bandwidth") is not None:
        text += f" ({row['fraction_of_bandwidth']:.0%})"
    return text


def _ratio_cell(before: list[Row]) -> Callable[[Row], str]:
    """A time, and in brackets the time of the same row in ``before`` over it."""
    medians = {(row["contender"], row["problem"]): row["median"] for row in before}

    def cell(row: Row) -> str:
        text = seconds(row["median"])
        earlier = medians.get((row["contender"], row["problem"]))
        return text if earlier is None else f"{text} ({earlier / row['median']:.2f}x)"

    return cell


def bandwidth(results: Results) -> list[str]:
    """The streaming kernels' times and GB/s, and the limit taken from them."""
    body = [
        [f"{r['size']:.0e}", r["kernel"], seconds(r["median"]), f"{r['gb_per_s']:.1f}"]
        for r in results["bandwidth"]
    ]
    return [
        "## Memory bandwidth (jitted, donated)",
        "",
        *table(["floats", "kernel", "time", "GB/s"], body),
        "",
        f"Limit used below: **{results['bandwidth_limit']:.1f} GB/s**.",
    ]


def sizes(results: Results) -> list[str]:
    """One leaf: every contender at every size, then the child processes' rows."""
    return [
        "## One step: time per step (fraction of the bandwidth limit)",
        "",
        "Params in one float32 leaf; 5 x 4 bytes per param per step.",
        "",
        *grid(results["sizes"], _step_cell),
        *_flagged(results, "sizes"),
        *_allocator(results),
    ]


def trees(results: Results) -> list[str]:
    """Many leaves: every contender on every tree, then the flagged child's rows."""
    fused = {
        row["problem"]: row["median"]
        for row in results["trees"]
        if row["contender"] == "torch fused"
    }

    def cell(row: Row) -> str:
        speedup = fused.get(row["problem"])
        text = seconds(row["median"])
        return text if speedup is None else f"{text} ({speedup / row['median']:.2g}x)"

    return [
        "## Many leaves: time per step (speed-up over torch fused)",
        "",
        "Leaves x floats per leaf.",
        "",
        *grid(results["trees"], cell),
        *_flagged(results, "trees"),
    ]


def _flagged(results: Results, key: str) -> list[str]:
    """The ``key`` section's rows from the child process run with the fusion flag."""
    flagged = results.get("with_flag", {})
    if not flagged.get(key):
        return []
    sweep = "on" if flagged.get("uses_single_sweep") else "**off**"
    return [
        "",
        "### The same steps with XLA:CPU's multi-output fusion",
        "",
        f"A child process started with `XLA_FLAGS={flagged['xla_flags']}`; "
        f"momentax's single sweep was {sweep} there.",
        "",
        *grid(flagged[key], _step_cell),
    ]


def _allocator(results: Results) -> list[str]:
    allocator = results.get("allocator", {})
    if not allocator.get("sizes"):
        return []
    flagged = allocator.get("with_flag", {})
    lines = [
        "",
        "### The sizes from 1e6 up with glibc keeping freed memory",
        "",
        f"Child processes started with `GLIBC_TUNABLES={allocator['glibc_tunables']}`; "
        "in brackets, the time with the default allocator in the same run over "
        "this time. A donated step allocates nothing per call, so its ratio is "
        "how much the machine drifted between the processes.",
    ]
    for rows, before, title in (
        (allocator["sizes"], results.get("sizes", []), "Without the fusion flag"),
        (
            flagged.get("sizes", []),
            results.get("with_flag", {}).get("sizes", []),
            f"With `XLA_FLAGS={flagged.get('xla_flags')}`",
        ),
    ):
        if rows:
            lines += ["", f"#### {title}", "", *grid(rows, _ratio_cell(before))]
    return lines


def regression(results: Results) -> list[str]:
    """The blog's whole training, each way: warm, first call, compile."""
    regression = results["regression"]
    ways = regression["ways"]
    eager = ways.get("torch eager", {}).get("median")
    body = [
        [
            name,
            seconds(way["median"]),
            seconds(way["first_call"]),
            seconds(way["compile"]),
            f"{eager / way['median']:.3g}x" if eager else "",
        ]
        for name, way in ways.items()
    ]
    header = ["way", "training", "first call", "compile", "speed-up over torch eager"]
    return [
        f"## The blog's regression: {regression['epochs']} epochs, whole training",
        "",
        *table(header, body),
    ]


def memory(results: Results) -> list[str]:
    """Peak bytes of each training step against the ideal."""
    body = [
        [
            row["problem"],
            f"{row['optimizer']} {row['layout']}",
            "yes" if row["donate"] else "no",
            f"{row['peak_bytes'] / 2**20:.1f}",
            f"{row['ideal_bytes'] / 2**20:.1f}",
            f"{row['ratio']:.2f}",
        ]
        for row in results["memory"]
    ]
    header = ["params", "step", "donated", "peak MiB", "ideal MiB", "peak / ideal"]
    return [
        "## Peak memory of a training step (XLA buffer assignment)",
        "",
        *table(header, body),
    ]


def compile_times(results: Results) -> list[str]:
    """Compile times by case and leaf count, and their split at the largest."""
    rows = results["compile"]
    counts = sorted({row["leaves"] for row in rows})
    by_key = {(row["what"], row["optimizer"], row["leaves"]): row for row in rows}
    body = []
    for what, optimizer in dict.fromkeys((r["what"], r["optimizer"]) for r in rows):
        cells = []
        for count in counts:
            row = by_key.get((what, optimizer, count))
            ratio = _compile.ratio(rows, what, count)
            cell = "" if row is None else seconds(row["seconds"])
            if row is not None and optimizer == "momentax" and ratio is not None:
                cell += f" ({ratio:.2f}x)"
            cells.append(cell)
        grows = _compile.growth(rows, what, optimizer)
        label = _compile.label({"what": what, "optimizer": optimizer})
        body.append(
            [label, *cells, "" if grows is None else f"{grows['exponent']:.2f}"]
        )
    largest = counts[-1]
    split = [
        [_compile.label(r), seconds(r["trace"]), seconds(r["lower"]), seconds(r["xla"])]
        for r in rows
        if r["leaves"] == largest
    ]
    return [
        "## Compile time",
        "",
        f"Leaves of {rows[0]['leaf_size']} float32, sum-of-squares loss; the first "
        "call of fresh functions minus a warm call, median seconds (momentax / "
        "optax.sgd in brackets). Growth: log(t_b / t_a) / log(b / a) over the two "
        f"largest leaf counts (1 is linear). `fit` runs {_compile.FIT_STEPS} steps.",
        "",
        *table(["case", *(f"{n} leaves" for n in counts), "growth"], body),
        "",
        f"Where the time goes at {largest} leaves (medians of each part): "
        "tracing and Python, lowering to StableHLO, XLA's compilation.",
        "",
        *table(["case", "trace", "lower", "XLA"], split),
    ]


def targets(results: Results) -> list[str]:
    """Every target's measured values, then how each is measured."""
    body = [
        [
            row["target"],
            row["where"],
            f"{row['measured']:.3g}",
            ("≤ " if row["at_most"] else "≥ ") + f"{row['threshold']:g}",
            "met" if row["met"] else "**missed**",
        ]
        for row in results["targets"]
    ]
    how = dict.fromkeys(
        f"- {row['target']}: {row['how']}." for row in results["targets"]
    )
    return [
        "## Targets",
        "",
        *table(["target", "where", "measured", "needed", ""], body),
        "",
        "How each is measured:",
        "",
        *how,
    ]
