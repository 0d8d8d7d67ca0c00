"""What every plot of a comparison run shares: figures, line styles, legends.

Drawn on ``matplotlib.figure.Figure`` directly rather than through ``pyplot``, so no
display or interactive backend is ever involved.
"""

from typing import Any

import numpy as np

from momentax.tasks._compare import Run, diverged_epoch
from momentax.tasks._line import LineTask

MISSING_MATPLOTLIB = (
    "plots need matplotlib: install it with pip install 'momentax[plots]', "
    "or pass --no-plots"
)

# Colours, widths and drawing order. The heavy ball's large, fast zigzags go
# underneath, thin and translucent, so that the slower runs stay visible on top;
# plain SGD, often under the others' first steps, goes on top.
STYLE: dict[str, dict[str, Any]] = {
    "heavy-ball": {"color": "tab:red", "linewidth": 0.9, "alpha": 0.55, "zorder": 2},
    "momentum": {"color": "tab:orange", "linewidth": 1.3, "zorder": 3},
    "nesterov": {"color": "tab:green", "linewidth": 1.3, "zorder": 4},
    "sgd": {"color": "tab:blue", "linewidth": 1.8, "zorder": 5},
    "autotune": {"color": "tab:purple", "linewidth": 1.5, "zorder": 4},
    "autotune-hvp": {
        "color": "tab:brown",
        "linewidth": 1.5,
        "linestyle": "--",
        "zorder": 4,
    },
}
# Plots show every epoch up to this one, then this many more, spaced evenly on a
# log axis: a million-epoch run plots as fast as a short one and looks the same.
_DENSE_EPOCHS = 2000
_SPARSE_EPOCHS = 2000


def figure(width: float, height: float) -> Any:
    """A new constrained-layout figure, or an ImportError saying how to get one."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(MISSING_MATPLOTLIB) from error
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def style(run: Run, *, faint_heavy_ball: bool = True) -> dict[str, Any]:
    """The line style of ``run``, by its contender's name.

    Where its zigzags do not hide the others (the loss curves), the heavy ball
    may be drawn as strongly as they are: ``faint_heavy_ball=False``.
    """
    found = dict(STYLE.get(run.contender.name, {"linewidth": 1.2, "zorder": 3}))
    if run.contender.name == "heavy-ball" and not faint_heavy_ball:
        found.update(alpha=0.9, linewidth=1.3)
    return found


def label(run: Run) -> str:
    """The legend entry of ``run``: its name, and where it diverged if it did."""
    epoch = diverged_epoch(run)
    name = run.contender.name
    return name if epoch is None else f"{name} (diverged at epoch {epoch})"


def shown(length: int) -> np.ndarray:
    """The indices of a history of ``length`` entries that the plots draw."""
    if length <= _DENSE_EPOCHS + _SPARSE_EPOCHS:
        return np.arange(length)
    sparse = np.geomspace(_DENSE_EPOCHS, length - 1, _SPARSE_EPOCHS).astype(int)
    return np.unique(np.concatenate([np.arange(_DENSE_EPOCHS), sparse]))


def finite(values: np.ndarray) -> np.ndarray:
    """``values`` with infinities as NaN, which matplotlib leaves out."""
    return np.where(np.isfinite(values), values, np.nan)


def legend_below(fig: Any, *axes: Any) -> Any:
    """One legend for the whole figure, under the panels: never over the data.

    Holds every labelled line of ``axes``, once each, in as many columns as fit
    the figure's width with the longest entry.
    """
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(text, handle)
    labels, handles = list(entries), list(entries.values())
    # About 7 pixels a character at the default 10 points, plus the line sample.
    characters = fig.get_figwidth() * fig.get_dpi() / 7
    longest = max((len(text) for text in labels), default=1)
    columns = max(1, min(len(labels), int(characters // (longest + 12))))
    return fig.legend(
        handles, labels, loc="outside lower center", ncols=columns, frameon=False
    )


def plain(value: float, _: Any = None) -> str:
    """A tick label without powers of ten: 0.01, 1, 100, -10."""
    return f"{value:g}"


def task_name(task: LineTask) -> str:
    """The task as titles name it: its name and the write-up it comes from."""
    return f"task {task.name!r}" + (f" ({task.write_up})" if task.write_up else "")
