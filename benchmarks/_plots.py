"""One plot per question, each a few series with the legend beside the axes.

Every function takes a run's results and returns a matplotlib ``Figure``, or
None when the run lacks the rows it draws. Times spanning decades go on a log
axis as points (never as bars, whose length from an arbitrary edge means
nothing there).
"""

from typing import TYPE_CHECKING, Any

from benchmarks import _compile

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Row = dict[str, Any]
Results = dict[str, Any]

SIZE = (7.5, 3.4)
"""Inches: about 750 x 340 pixels at the saved 100 dpi, a docs page's width."""


def _figure(title: str) -> tuple["Figure", Any]:
    from matplotlib.figure import Figure  # optional: only a run that plots needs it

    fig = Figure(figsize=SIZE, layout="constrained")
    ax = fig.subplots()
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    return fig, ax


def _legend(fig: "Figure", ax: Any) -> None:
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=8)


def _series(rows: list[Row], contender: str) -> list[Row]:
    return sorted(
        (r for r in rows if r["contender"] == contender), key=lambda r: r["size"]
    )


STEP_SERIES = ("momentax sutskever", "optax.sgd", "jax.numpy", "torch fused")


def sizes(results: Results) -> "Figure | None":
    """How close does one step come to the memory bandwidth limit?"""
    rows = results.get("sizes", [])
    if not rows:
        return None
    fig, ax = _figure("One donated step: GB/s against size")
    flagged = results.get("with_flag", {}).get("sizes", [])
    lines = [(name, _series(rows, name), "-") for name in STEP_SERIES]
    lines.append(
        ("momentax sutskever, fusion flag", _series(flagged, STEP_SERIES[0]), "--")
    )
    for label, mine, style in lines:
        if mine:
            sizes_, rates = [r["size"] for r in mine], [r["gb_per_s"] for r in mine]
            ax.plot(sizes_, rates, style, marker="o", markersize=4, label=label)
    limit = results.get("bandwidth_limit")
    if limit:
        ax.axhline(limit, color="black", linewidth=1, label="bandwidth limit")
    ax.set(
        xscale="log",
        xlabel="params (one float32 leaf)",
        ylabel="GB/s (5 x 4 bytes per param)",
    )
    _legend(fig, ax)
    return fig


TREE_SERIES = (
    "optax.sgd",
    "momentax sutskever",
    "torch fused",
    "momentax packed",
    "momentax fit (scan)",
    "momentax packed fit (scan)",
)


def _dots(ax: Any, labels: list[str], series: dict[str, list[float | None]]) -> None:
    """One row per label, one marker per series, on a log x axis."""
    markers = "oDs^v<"
    for i, (name, values) in enumerate(series.items()):
        points = [(v, y) for y, v in enumerate(values) if v is not None]
        ax.plot(
            [v for v, _ in points],
            [y for _, y in points],
            markers[i % len(markers)],
            linestyle="none",
            label=name,
        )
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xscale("log")


def _median(rows: list[Row], problem: str, contender: str) -> float | None:
    row = next(
        (r for r in rows if r["problem"] == problem and r["contender"] == contender),
        None,
    )
    return None if row is None else float(row["median"])


def trees(results: Results) -> "Figure | None":
    """What does a step over many small leaves cost, and what helps?"""
    rows = results.get("trees", [])
    if not rows:
        return None
    fig, ax = _figure("Many leaves: time per step (leaves x floats per leaf)")
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    names = [n for n in TREE_SERIES if any(r["contender"] == n for r in rows)]
    _dots(ax, names, {p: [_median(rows, p, n) for n in names] for p in problems})
    ax.set(xlabel="seconds per step")
    _legend(fig, ax)
    return fig


def regression(results: Results) -> "Figure | None":
    """How long does the blog's whole training take, three ways?"""
    regression = results.get("regression")
    if not regression:
        return None
    ways = regression["ways"]
    fig, ax = _figure(f"The blog's regression: {regression['epochs']} epochs")
    names = list(ways)
    _dots(
        ax,
        names,
        {
            "training (warm)": [ways[n]["median"] for n in names],
            "compile": [ways[n]["compile"] or None for n in names],
        },
    )
    ax.set(xlabel="seconds")
    _legend(fig, ax)
    return fig


def _memory_label(row: Row) -> str:
    undonated = "" if row["donate"] else ", not donated"
    return f"{row['optimizer']} {row['layout']}{undonated}"


def memory(results: Results) -> "Figure | None":
    """How much memory does a training step hold, against the ideal?"""
    rows = results.get("memory", [])
    if not rows:
        return None
    fig, ax = _figure("Peak memory of a train step over the ideal")
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    steps = list(dict.fromkeys(_memory_label(r) for r in rows))
    height = 0.8 / len(problems)
    for i, problem in enumerate(problems):
        ratios = {_memory_label(r): r["ratio"] for r in rows if r["problem"] == problem}
        ax.barh(
            [j + i * height for j in range(len(steps))],
            [ratios.get(s, 0.0) for s in steps],
            height,
            label=problem,
        )
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(steps))], steps)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set(xlabel="peak / ideal")
    _legend(fig, ax)
    return fig


Case = tuple[str, str | None, str, str]
"""A compile case to draw: what, optimizer, color and line style."""


def _compile_lines(rows: list[Row], cases: list[Case], title: str) -> "Figure | None":
    fig, ax = _figure(title)
    drawn = False
    for what, optimizer, color, style in cases:
        mine = sorted(
            (r for r in rows if r["what"] == what and r["optimizer"] == optimizer),
            key=lambda r: r["leaves"],
        )
        if mine:
            drawn = True
            ax.plot(
                [r["leaves"] for r in mine],
                [r["seconds"] for r in mine],
                color=color,
                linestyle=style,
                marker="o",
                markersize=4,
                label=_compile.label(mine[0]),
            )
    if not drawn:
        return None
    ax.set(xscale="log", yscale="log", xlabel="leaves (3 floats each)")
    ax.set(ylabel="compile seconds")
    _legend(fig, ax)
    return fig


def compile_ratio(results: Results) -> "Figure | None":
    """Does momentax compile as fast as optax.sgd (solid lines: momentax)?"""
    cases: list[Case] = [
        (what, optimizer, f"C{i}", "-" if optimizer == "momentax" else "--")
        for i, what in enumerate(_compile.COMPARED)
        for optimizer in ("momentax", "optax.sgd")
    ]
    title = "Compile time: momentax (solid) and optax.sgd (dashed)"
    return _compile_lines(results.get("compile", []), cases, title)


def compile_growth(results: Results) -> "Figure | None":
    """What makes the compile time grow with the leaf count?"""
    cases: list[Case] = [
        ("fit", "momentax", "C0", "-"),
        ("fit, record=()", "momentax", "C1", "-"),
        ("fit, one (n, 3) array", "momentax", "C2", "-"),
        ("lax.scan by hand", "optax.sgd", "C3", "--"),
        ("value_and_grad of the loss", None, "C4", ":"),
        ("grad of the loss", None, "C5", ":"),
    ]
    title = "Compile time: what grows with the leaf count"
    return _compile_lines(results.get("compile", []), cases, title)
