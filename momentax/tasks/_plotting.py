"""The main job's PNG plots: drawn, then written into a folder all at once."""

import contextlib
import os
import pathlib
import tempfile
from collections.abc import Sequence

from momentax.tasks._compare import Run
from momentax.tasks._exact import Optimum
from momentax.tasks._line import LineTask
from momentax.tasks._plot_curves import plot_k_dynamics, plot_losses
from momentax.tasks._plot_style import MISSING_MATPLOTLIB as MISSING_MATPLOTLIB
from momentax.tasks._plot_surface import plot_surface

KINDS = ("losses", "surface", "k-dynamics")
"""The plots, as their file names end: ``<task>-<kind>.png``."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_plots(
    task: LineTask, optimum: Optimum, runs: Sequence[Run], folder: pathlib.Path
) -> list[pathlib.Path]:
    """Writes the three plots into ``folder`` (created if needed), atomically.

    Each PNG is rendered into a temporary file in ``folder``; only when all three
    are rendered are they renamed over ``<task>-losses.png``,
    ``<task>-surface.png`` and ``<task>-k-dynamics.png``. So an interrupted or
    failed run leaves the old plots (or none), never a mix or a partial file.

    Returns:
        The paths of the PNG files.
    """
    folder.mkdir(parents=True, exist_ok=True)
    figures = {
        "losses": lambda: plot_losses(task, optimum, runs),
        "surface": lambda: plot_surface(task, optimum, runs),
        "k-dynamics": lambda: plot_k_dynamics(task, runs),
    }
    rendered: list[tuple[str, pathlib.Path]] = []
    try:
        for kind in KINDS:
            handle, temporary = tempfile.mkstemp(
                dir=folder, prefix=f".{task.name}-{kind}.", suffix=".png.tmp"
            )
            rendered.append((temporary, folder / f"{task.name}-{kind}.png"))
            with os.fdopen(handle, "wb") as file:
                figures[kind]().savefig(file, format="png")
            # mkstemp makes the file private (0600); a plot is as readable as
            # any file the user's umask allows.
            os.chmod(temporary, 0o666 & ~_umask())
        for temporary, path in rendered:
            os.replace(temporary, path)
    finally:
        for temporary, _ in rendered:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    return [path for _, path in rendered]
