"""The exact answers of the line tasks: least squares, losses, Hessian, curvature.

Computed in float64 with NumPy, so that the trained runs can be measured against
them.
"""

from typing import Any, NamedTuple

import numpy as np

from momentax.tasks._line import Batch, LineTask


def _design(batch: Batch) -> np.ndarray:
    x = np.asarray(batch.x, np.float64)
    return np.stack([x, np.ones_like(x)], axis=1)


class Optimum(NamedTuple):
    """Holds the least-squares solution and its losses.

    Attributes:
        params: The minimizing ``{"k", "b"}`` of the training loss.
        train_loss: The training loss there (the lowest there is).
        test_loss: The test loss there, or None without a test split.
    """

    params: dict[str, float]
    train_loss: float
    test_loss: float | None


def exact_loss(k: Any, b: Any, batch: Batch) -> np.ndarray:
    r"""The MSE at ``(k, b)`` in float64, for any number of points at once.

    Evaluated from the data's moments,
    :math:`k^2\overline{x^2} + 2kb\bar x + b^2 - 2k\overline{xy} - 2b\bar y +
    \overline{y^2}`, so a whole trajectory or grid costs O(its size), and
    accurate to about :math:`10^{-16}\,\overline{y^2}`: far below the float32
    rounding of :func:`mse_loss`, so gaps to the optimum stay visible.

    Near a zero loss (points exactly on a line) the closed form's rounding can
    come out a few times :math:`10^{-15}` below zero; such values are clamped
    at 0, since a mean of squares is never negative.

    Args:
        k: Slopes, any shape.
        b: Intercepts, broadcastable with ``k``.
        batch: The points.

    Returns:
        The losses, float64, shaped like ``k * b``, never negative (inf or nan
        where the params are not finite or too large).
    """
    x, y = np.asarray(batch.x, np.float64), np.asarray(batch.y, np.float64)
    xx, x1, xy, y1, yy = (np.mean(v) for v in (x * x, x, x * y, y, y * y))
    k, b = np.asarray(k, np.float64), np.asarray(b, np.float64)
    # A diverged run has huge or infinite params: its loss is inf or nan, quietly.
    with np.errstate(over="ignore", invalid="ignore"):
        loss: np.ndarray = k * k * xx + 2 * k * b * x1 + b * b
        loss += -2 * k * xy - 2 * b * y1 + yy
    # np.maximum keeps nan as nan; only rounding below zero is clamped.
    clamped: np.ndarray = np.maximum(loss, 0.0)
    return clamped


def least_squares(task: LineTask) -> Optimum:
    """Returns the exact minimizer of ``task``'s training loss, in float64.

    Solved with ``numpy.linalg.lstsq`` on the training points as stored (after
    rounding to the task's dtype), so it is the optimum of the very problem the
    optimizers see.

    Examples:
        >>> from momentax import tasks
        >>> optimum = tasks.least_squares(tasks.tiny_line())
        >>> print(f"{optimum.params['k']:.6f} {abs(optimum.params['b']):.6f}")
        2.000000 0.000000
    """
    solution, *_ = np.linalg.lstsq(
        _design(task.train), np.asarray(task.train.y, np.float64), rcond=None
    )
    k, b = float(solution[0]), float(solution[1])
    # The same float64 evaluation as every run's losses, so that gaps compare
    # like with like.
    test = None if task.test is None else float(exact_loss(k, b, task.test))
    return Optimum({"k": k, "b": b}, float(exact_loss(k, b, task.train)), test)


def hessian(batch: Batch) -> np.ndarray:
    r"""The Hessian of :func:`mse_loss` in ``(k, b)``, exactly, in float64.

    The loss is quadratic, so the Hessian is constant:
    :math:`H = \frac2n \begin{pmatrix} \sum x_i^2 & \sum x_i \\ \sum x_i & n
    \end{pmatrix}`.
    """
    design = _design(batch)
    result: np.ndarray = 2.0 / len(design) * design.T @ design
    return result


def curvature_bounds(batch: Batch) -> tuple[float, float]:
    """The largest and smallest eigenvalues of :func:`hessian`, ``(L, m)``.

    Examples:
        >>> import momentax
        >>> from momentax import tasks
        >>> L, m = tasks.curvature_bounds(tasks.noisy_line().train)
        >>> print(f"L = {L:.3f}, m = {m:.3f}, kappa = {L / m:.1f}")
        L = 2.566, m = 0.135, kappa = 18.9
        >>> tuning = momentax.heavy_ball_tuning(L, m)
    """
    smallest, largest = np.linalg.eigvalsh(hessian(batch))
    return float(largest), float(smallest)
