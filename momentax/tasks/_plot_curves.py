"""The curves of a comparison run: losses, and k's gradient and velocity, per epoch."""

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from momentax.tasks._compare import Run, diverged_epoch
from momentax.tasks._exact import Optimum
from momentax.tasks._line import LineTask
from momentax.tasks._plot_style import (
    figure,
    finite,
    label,
    legend_below,
    plain,
    shown,
    style,
    task_name,
)


def _loss_panels(task: LineTask, optimum: Optimum, runs: Sequence[Run]) -> list[str]:
    start = max(float(r.train_loss[0]) for r in runs)
    panels = ["train", "test", "gap"]
    if task.test is None:
        panels.remove("test")
    # A noiseless task's optimum is 0 up to rounding (1e-14): the gap is the
    # loss itself, and a line at the optimum would squash the curves.
    if optimum.train_loss <= 1e-9 * start:
        panels.remove("gap")
    return panels


def plot_losses(task: LineTask, optimum: Optimum, runs: Sequence[Run]) -> Any:
    """Train (and test) loss per epoch, and the train loss's gap to the optimum.

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    from matplotlib.ticker import FuncFormatter, NullLocator

    panels = _loss_panels(task, optimum, runs)
    noiseless = "gap" not in panels
    fig = figure(max(6.4, 1.0 + 3.6 * len(panels)), 4.1)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    start = max(float(r.train_loss[0]) for r in runs)
    for ax, panel in zip(axes, panels, strict=True):
        for r in runs:
            index = shown(len(r.train_loss))
            if panel == "train":
                values = r.train_loss
            elif panel == "test":
                assert r.test_loss is not None
                values = r.test_loss
            else:
                values = r.train_loss - optimum.train_loss
            drawn = style(r, faint_heavy_ball=False)
            ax.plot(index, finite(values[index]), label=label(r), **drawn)
        reference = {"train": optimum.train_loss, "test": optimum.test_loss}
        if panel in reference and not noiseless:
            ax.axhline(
                reference[panel],
                color="black",
                linestyle=":",
                linewidth=1.0,
                label="least-squares fit",
                zorder=1,
            )
        ax.set_yscale("log", nonpositive="mask")
        # Linear from epoch 0 to 1, logarithmic after: the heavy ball's first
        # 20 epochs get as much room as the slow runs' last hundreds.
        ax.set_xscale("symlog", linthresh=1.0, linscale=0.4)
        ax.xaxis.set_major_formatter(FuncFormatter(plain))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(0, max(len(r.train_loss) for r in runs) * 1.3)
        ax.set_xlabel("epoch (log scale)")
        _loss_limits(ax, start)
    titles = {
        "train": "train loss (MSE)",
        "test": "test loss (MSE, held-out points)",
        "gap": "train loss \N{MINUS SIGN} least-squares loss",
    }
    for ax, panel in zip(axes, panels, strict=True):
        ax.set_ylabel(titles[panel])
    note = " (noiseless: the least-squares loss is 0)" if noiseless else ""
    fig.suptitle(f"{task_name(task)}:\nloss per epoch{note}")
    legend_below(fig, *axes)
    return fig


def _loss_limits(ax: Any, start: float) -> None:
    """Keeps a diverged run from stretching the loss axis to 1e300."""
    bottom, top = ax.get_ylim()
    if top > 1e4 * start:
        ax.set_ylim(bottom, 1e4 * start)


def symlog_limits(values: Sequence[np.ndarray]) -> tuple[float, float, list[float]]:
    """``(limit, linthresh, ticks)`` for a symlog axis of ``values``.

    The axis runs from ``-limit`` to ``limit``, twice the largest value, so
    that the largest spike stays clear of the frame; it is logarithmic over the
    three decades below the largest and linear within ``linthresh``, a power of
    ten. The ticks are 0 and the decades above the linear part, with a labelled
    one within a factor of 10 of the largest spike.
    """
    joined = np.concatenate([np.abs(v[np.isfinite(v)]) for v in values] or [[0.0]])
    largest = float(joined.max()) if joined.size else 0.0
    if not largest > 0:
        largest = 1.0
    decade = float(10.0 ** math.ceil(math.log10(largest)))
    # Not linthresh itself: its labels would sit on top of 0's.
    decades = [d for d in (decade, decade / 10, decade / 100) if d <= 2 * largest]
    ticks = [-d for d in decades] + [0.0, *decades]
    return 2 * largest, decade * 1e-3, ticks


def _symlog_axis(ax: Any, limit: float, linthresh: float, ticks: list[float]) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.set_yscale("symlog", linthresh=linthresh, linscale=1.0)
    ax.set_ylim(-limit, limit)
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(plain))


def plot_k_dynamics(task: LineTask, runs: Sequence[Run]) -> Any:
    """K's gradient and velocity per epoch, for every optimizer.

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig = figure(10.0, 4.2)
    grad_ax, velocity_ax = fig.subplots(1, 2)
    grads, velocities = [], []
    for r in runs:
        index = shown(len(r.k_grad))
        epochs = index + 1
        kept = diverged_epoch(r) is None
        grad_ax.plot(epochs, finite(r.k_grad[index]), label=label(r), **style(r))
        if kept:
            grads.append(r.k_grad)
        if r.k_velocity is not None:
            velocity_ax.plot(epochs, finite(r.k_velocity[index]), **style(r))
            if kept:
                velocities.append(r.k_velocity)
    # Short axis labels, the details in the panels' titles: a label longer than
    # its axis runs past the figure.
    panels = (
        (grad_ax, grads, "k's gradient", "at the start of each epoch"),
        (velocity_ax, velocities, "k's velocity", "after each step (SGD keeps none)"),
    )
    for ax, values, ylabel, title in panels:
        ax.axhline(0.0, color="black", linewidth=0.6, zorder=1)
        # Linear near 0 and logarithmic beyond, so that small oscillations and a
        # tuned heavy ball's large first steps both stay readable. A diverged
        # run does not set the range: it leaves the frame.
        _symlog_axis(ax, *symlog_limits(values or [np.zeros(1)]))
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(plain))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(1, max(len(r.k_grad) for r in runs) * 1.3)
        ax.set_xlabel("epoch (log scale)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel}, {title}", fontsize="medium")
    fig.suptitle(
        f"{task_name(task)}:\nk's gradient and velocity per epoch (symmetric log scale)"
    )
    legend_below(fig, grad_ax)
    return fig
