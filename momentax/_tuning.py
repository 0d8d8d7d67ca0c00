"""Polyak's optimal heavy-ball tuning for a strongly convex quadratic."""

import math
from typing import Any, NamedTuple


class HeavyBallTuning(NamedTuple):
    r"""Holds Polyak's heavy-ball hyperparameters and the rate they achieve.

    Attributes:
        learning_rate: The step size :math:`\eta`.
        momentum: The momentum :math:`\mu`.
        rate: The asymptotic factor by which the distance to the minimum shrinks
            per step, :math:`(\sqrt\kappa - 1)/(\sqrt\kappa + 1)`.
    """

    learning_rate: float
    momentum: float
    rate: float


def _curvature(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{name} must be a concrete real number (not traced); got {value!r}."
        ) from error
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}.")
    return number


def heavy_ball_tuning(max_curvature: float, min_curvature: float) -> HeavyBallTuning:
    r"""Returns Polyak's optimal heavy-ball tuning for a quadratic.

    For :math:`f(\theta) = \tfrac12 \theta^\top H \theta - c^\top \theta` whose
    Hessian :math:`H` has its eigenvalues in :math:`[m, L]` (``min_curvature``,
    ``max_curvature``), with condition number :math:`\kappa = L/m`, the heavy-ball
    method

    .. math::
        \theta_{t+1} = \theta_t - \eta \nabla f(\theta_t)
            + \mu (\theta_t - \theta_{t-1})

    converges fastest for

    .. math::
        \eta = \frac{4}{(\sqrt L + \sqrt m)^2}, \qquad
        \mu = \left(\frac{\sqrt\kappa - 1}{\sqrt\kappa + 1}\right)^2,

    at the asymptotic rate :math:`\sqrt\mu = (\sqrt\kappa - 1)/(\sqrt\kappa + 1)`
    per step, against :math:`(\kappa - 1)/(\kappa + 1)` for the best plain
    gradient descent. The heavy-ball method is :func:`momentax.momentum` with
    these values and a constant learning rate, in either convention. For a
    non-quadratic loss this is a heuristic, and no guarantee.

    Args:
        max_curvature: :math:`L`, the largest Hessian eigenvalue (> 0).
        min_curvature: :math:`m`, the smallest Hessian eigenvalue
            (> 0 and <= ``max_curvature``).

    Returns:
        A :class:`HeavyBallTuning` with the learning rate, momentum and rate.

    Raises:
        ValueError: If a curvature is not finite and positive, ``m > L``, or
            :math:`L` is so small that the learning rate overflows a float.

    Examples:
        >>> import momentax
        >>> tuning = momentax.heavy_ball_tuning(max_curvature=100.0, min_curvature=1.0)
        >>> print(f"{tuning.learning_rate:.4f} {tuning.momentum:.4f} {tuning.rate:.4f}")
        0.0331 0.6694 0.8182
        >>> opt = momentax.momentum(tuning.learning_rate, momentum=tuning.momentum)

    References:
        Polyak, "Some methods of speeding up the convergence of iteration
        methods", USSR Computational Mathematics and Mathematical Physics 4(5),
        1964. Goh, "Why Momentum Really Works", Distill, 2017.
    """
    big = _curvature("max_curvature", max_curvature)
    small = _curvature("min_curvature", min_curvature)
    if small > big:
        raise ValueError(
            f"min_curvature must be <= max_curvature; got {min_curvature!r} > "
            f"{max_curvature!r}."
        )
    # (sqrt(kappa) - 1) / (sqrt(kappa) + 1) with sqrt(kappa) = sqrt(L) / sqrt(m),
    # written without kappa itself: L / m overflows to inf for extreme curvatures.
    root_big, root_small = math.sqrt(big), math.sqrt(small)
    rate = (root_big - root_small) / (root_big + root_small)
    try:
        learning_rate = 4.0 / (root_big + root_small) ** 2
    except ZeroDivisionError:
        learning_rate = math.inf
    if not math.isfinite(learning_rate):
        raise ValueError(
            f"max_curvature={max_curvature!r} (with min_curvature={min_curvature!r}) "
            "is so small that the learning rate 4 / (sqrt(L) + sqrt(m))^2 exceeds "
            "the largest float: rescale the loss (multiply it by a large factor) so "
            "that its largest curvature is at least about 1e-308."
        )
    return HeavyBallTuning(learning_rate, rate**2, rate)
