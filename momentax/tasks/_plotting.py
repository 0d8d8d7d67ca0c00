"""PNG plots of a comparison run: loss curves, loss surface, k's gradient and velocity.

Drawn on ``matplotlib.figure.Figure`` directly rather than through ``pyplot``, so no
display or interactive backend is ever involved.
"""

import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from momentax.tasks._compare import Run
from momentax.tasks._line import LineTask, Optimum, exact_loss

MISSING_MATPLOTLIB = (
    "plots need matplotlib: install it with pip install 'momentax[plots]', "
    "or pass --no-plots"
)


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(MISSING_MATPLOTLIB) from error
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _finite(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, np.nan)


def plot_losses(
    task: LineTask, optimum: Optimum, runs: Sequence[Run], path: Any
) -> None:
    """Train (and test) loss per epoch, and the train loss's gap to the optimum."""
    panels = ["train loss", "test loss", "train loss - least-squares loss"]
    if task.test is None:
        panels.remove("test loss")
    figure = _figure(4.2 * len(panels), 3.6)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, title in zip(axes, panels, strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_yscale("log", nonpositive="mask")
        for r in runs:
            if title == "train loss":
                values = r.train_loss
            elif title == "test loss":
                assert r.test_loss is not None
                values = r.test_loss
            else:
                values = r.train_loss - optimum.train_loss
            ax.plot(_finite(values), label=r.contender.name, linewidth=1.2)
        reference = {"train loss": optimum.train_loss, "test loss": optimum.test_loss}
        if reference.get(title):
            ax.axhline(
                reference[title], color="black", linestyle=":", label="least squares"
            )
    axes[0].legend()
    figure.suptitle(f"task {task.name!r}: loss per epoch (log scale)")
    figure.savefig(path)


def _window(points: np.ndarray, center: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis ranges holding the finite points and the center, with a margin."""
    finite = points[np.all(np.isfinite(points), axis=1)]
    finite = np.vstack([finite, center])
    low, high = finite.min(axis=0), finite.max(axis=0)
    margin = 0.15 * np.maximum(high - low, 1e-3)
    return low - margin, high + margin


def plot_surface(
    task: LineTask, optimum: Optimum, runs: Sequence[Run], path: Any
) -> None:
    """The training loss over ``(k, b)`` as contours, with every trajectory."""
    center = np.array([optimum.params["k"], optimum.params["b"]])
    low, high = _window(np.vstack([r.trajectory for r in runs]), center)
    k, b = np.meshgrid(
        np.linspace(low[0], high[0], 300), np.linspace(low[1], high[1], 300)
    )
    loss = exact_loss(k, b, task.train)
    figure = _figure(6.4, 5.4)
    ax = figure.subplots()
    levels = np.geomspace(optimum.train_loss * 1.001 + 1e-9, loss.max(), 25)
    contours = ax.contour(k, b, loss, levels=levels, cmap="viridis", linewidths=0.7)
    figure.colorbar(contours, ax=ax, label="train loss")
    for r in runs:
        ax.plot(
            *r.trajectory.T,
            marker=".",
            markersize=3,
            linewidth=1,
            label=r.contender.name,
        )
    ax.plot(
        *center,
        marker="*",
        color="black",
        markersize=12,
        linestyle="",
        label="least squares",
    )
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_xlabel("k")
    ax.set_ylabel("b")
    ax.legend(loc="best", fontsize="small")
    ax.set_title(f"task {task.name!r}: train loss over (k, b) and trajectories")
    figure.savefig(path)


def _symlog_threshold(ax: Any) -> float:
    """A hundredth of the largest plotted value."""
    values = np.concatenate([np.abs(line.get_ydata()) for line in ax.get_lines()])
    values = values[np.isfinite(values)]
    largest = float(values.max()) if values.size else 0.0
    return 0.01 * largest if largest > 0 else 1.0


def plot_k_dynamics(task: LineTask, runs: Sequence[Run], path: Any) -> None:
    """K's gradient and velocity per epoch, for every optimizer."""
    figure = _figure(10.0, 3.8)
    grad_ax, velocity_ax = figure.subplots(1, 2)
    for r in runs:
        epochs = np.arange(1, len(r.k_grad) + 1)
        (line,) = grad_ax.plot(
            epochs, _finite(r.k_grad), linewidth=1.2, label=r.contender.name
        )
        if r.k_velocity is not None:
            velocity_ax.plot(
                epochs,
                _finite(r.k_velocity),
                linewidth=1.2,
                color=line.get_color(),
                label=r.contender.name,
            )
    panels = (
        (grad_ax, "k gradient"),
        (velocity_ax, "k velocity (plain SGD keeps none)"),
    )
    for ax, title in panels:
        ax.axhline(0.0, color="black", linewidth=0.6)
        # Linear near 0 and logarithmic beyond, so that small oscillations and a
        # tuned heavy ball's large first steps both stay readable.
        ax.set_yscale("symlog", linthresh=_symlog_threshold(ax), linscale=2.0)
        ax.set_xscale("log")
        ax.set_xlabel("epoch (log scale)")
        ax.set_title(title)
        ax.legend(fontsize="small")
    figure.suptitle(
        f"task {task.name!r}: k's gradient at the start of each epoch, "
        "velocity after its step"
    )
    figure.savefig(path)


def write_plots(
    task: LineTask, optimum: Optimum, runs: Sequence[Run], folder: pathlib.Path
) -> list[pathlib.Path]:
    """Writes the three plots into ``folder`` (created if needed).

    Returns:
        The paths of the PNG files, ``<task>-losses.png``, ``<task>-surface.png``
        and ``<task>-k-dynamics.png``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = [
        folder / f"{task.name}-{kind}.png"
        for kind in ("losses", "surface", "k-dynamics")
    ]
    plot_losses(task, optimum, runs, paths[0])
    plot_surface(task, optimum, runs, paths[1])
    plot_k_dynamics(task, runs, paths[2])
    return paths
