"""The state of :func:`momentax.autotune`: every statistic it tunes from."""

from typing import Any, NamedTuple

import jax


class AutotuneState(NamedTuple):
    r"""Holds :func:`momentax.autotune`'s heavy-ball state and its statistics.

    Scalars are float32 (float64 for float64 params) and never change dtype or
    shape, so the state is a stable ``jax.lax.scan`` carry and a checkpoint.
    ``optax.tree.get(state, "learning_rate")`` and ``"momentum"`` give the
    values of the last step; ``"velocity"`` the heavy-ball buffer.

    Attributes:
        count: Steps taken with finite gradients (int32).
        num_nonfinite: Steps skipped for a non-finite gradient or loss (int32).
        learning_rate: :math:`\eta_t` of the last step.
        momentum: :math:`\mu_t` of the last step.
        max_curvature: :math:`h_{\max}` that the last step was tuned for.
        min_curvature: :math:`h_{\min}` that the last step was tuned for.
        variance: :math:`C`, the variance the last step was tuned with: the
            gradients' EMA variance, or with ``value_fn`` the noise estimate
            of ``noise_mean``.
        distance: :math:`D`, the distance-to-minimum estimate of the last step.
        heavy_ball: The state of the :func:`momentax.momentum` chain that
            applies the step; it holds the ``velocity``.
        previous_gradient: The last finite gradient (for the secant).
        gradient_mean: The EMA of the gradient (not debiased).
        gradient_norm_mean: The EMA of :math:`\lVert g\rVert`.
        gradient_sq_norm_mean: The EMA of :math:`\lVert g\rVert^2`.
        curvatures: The last ``window`` secant curvatures (a ring buffer).
        num_curvatures: Secant curvatures measured so far (int32).
        curvature_max_mean: The EMA of the window's largest curvature.
        curvature_min_mean: The EMA of the window's smallest curvature.
        curvature_mean: The EMA of the secant curvature.
        noise_mean: The EMA of :math:`\max(0, \lVert g_t - g_{t-1}\rVert^2 -
            (L \lVert s_t\rVert)^2) / 2` with :math:`L` = ``hessian_max``, the
            part of the gradient change that no curvature up to Lanczos's
            estimate explains: the noise variance that the Lanczos path tunes
            with (without ``value_fn``, :math:`L = 0` and it is unused).
        hessian_max: The last Lanczos estimate of :math:`L` (0: none yet).
        hessian_min: The last Lanczos estimate of :math:`m` (0: none yet).
        top_vector: The top Ritz vector, Lanczos's warm start (zeros: none).
        bottom_vector: The bottom Ritz vector, likewise.
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count
    num_nonfinite: jax.Array
    learning_rate: jax.Array
    momentum: jax.Array
    max_curvature: jax.Array
    min_curvature: jax.Array
    variance: jax.Array
    distance: jax.Array
    heavy_ball: Any
    previous_gradient: Any
    gradient_mean: Any
    gradient_norm_mean: jax.Array
    gradient_sq_norm_mean: jax.Array
    curvatures: jax.Array
    num_curvatures: jax.Array
    curvature_max_mean: jax.Array
    curvature_min_mean: jax.Array
    curvature_mean: jax.Array
    noise_mean: jax.Array
    hessian_max: jax.Array
    hessian_min: jax.Array
    top_vector: Any
    bottom_vector: Any
