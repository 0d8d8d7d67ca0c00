"""The loss surface of a comparison run: contours over (k, b), trajectories on top."""

from collections.abc import Sequence
from typing import Any

import numpy as np

from momentax.tasks._compare import Run, diverged_epoch
from momentax.tasks._exact import Optimum, exact_loss
from momentax.tasks._line import LineTask
from momentax.tasks._plot_style import figure, label, legend_below, plain, shown, style
from momentax.tasks._plot_style import task_name as _task_name

# Contours every quarter of a decade of the gap to the optimum, over this many
# decades below the largest gap in view.
_DECADES = 4
_PER_DECADE = 4


def view(runs: Sequence[Run], optimum: Optimum) -> tuple[np.ndarray, np.ndarray]:
    """The ``(k, b)`` window shown: lower and upper corners.

    It holds the start, the optimum and the trajectories that converge slowly
    enough to be followed. The heavy ball's first steps overshoot far on
    each side and a diverged run goes to infinity: framing them would squeeze
    every other trajectory into the middle, so they run out of the frame
    instead (their legend entries say so).
    """
    center = np.array([optimum.params["k"], optimum.params["b"]])
    framed = [r for r in runs if not _runs_out(r)] or [
        r for r in runs if diverged_epoch(r) is None
    ]
    start = [r.trajectory[:1] for r in runs]
    points = np.vstack([center, *start, *(r.trajectory for r in framed)])
    points = points[np.all(np.isfinite(points), axis=1)]
    low, high = points.min(axis=0), points.max(axis=0)
    margin = 0.12 * np.maximum(high - low, 1e-3)
    return low - margin, high + margin


def _runs_out(run: Run) -> bool:
    return run.contender.name == "heavy-ball" or diverged_epoch(run) is not None


def _outside(run: Run, low: np.ndarray, high: np.ndarray) -> bool:
    points = run.trajectory
    return bool(np.any(~np.all((points >= low) & (points <= high), axis=1)))


def plot_surface(task: LineTask, optimum: Optimum, runs: Sequence[Run]) -> Any:
    """The training loss over ``(k, b)`` as contours, with every trajectory.

    The contours are of the gap to the least-squares loss, on a log colour
    scale, so that a noiseless task (optimum 0) and a noisy one read the same.

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter

    low, high = view(runs, optimum)
    k, b = np.meshgrid(
        np.linspace(low[0], high[0], 300), np.linspace(low[1], high[1], 300)
    )
    gap = exact_loss(k, b, task.train) - optimum.train_loss
    top = np.log10(float(np.max(gap)))
    exponents = np.arange(
        np.ceil((top - _DECADES) * _PER_DECADE), np.floor(top * _PER_DECADE) + 1
    )
    levels = 10.0 ** (exponents / _PER_DECADE)
    norm = LogNorm(vmin=levels[0], vmax=levels[-1])
    fig = figure(6.6, 6.2)
    ax = fig.subplots()
    contours = ax.contour(
        k, b, gap, levels=levels, norm=norm, cmap="viridis", linewidths=0.7, zorder=1
    )
    # A continuous log scale, not the contour set's one tick per level.
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=contours.cmap), ax=ax)
    bar.ax.yaxis.set_major_formatter(FuncFormatter(plain))
    bar.set_label("train loss \N{MINUS SIGN} least-squares loss (log scale)")
    for r in runs:
        name = label(r)
        if r.contender.name == "heavy-ball" and _outside(r, low, high):
            name += " (leaves the frame)"
        index = shown(len(r.trajectory))
        points = r.trajectory[index].T
        ax.plot(*points, marker=".", markersize=3, label=name, **style(r))
    ax.plot(0.0, 0.0, "o", color="black", fillstyle="none", label="start", zorder=6)
    ax.plot(
        optimum.params["k"],
        optimum.params["b"],
        "*",
        color="black",
        markersize=12,
        label="least-squares fit",
        zorder=6,
    )
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_xlabel("k (slope)")
    ax.set_ylabel("b (intercept)")
    fig.suptitle(f"{_task_name(task)}:\ntrain loss over (k, b) and the trajectories")
    legend_below(fig, ax)
    return fig
