r"""The running gradient statistics that :func:`momentax.autotune` tunes from.

With :math:`\beta` the EMA decay and :math:`n` the number of samples, each
average is kept as :math:`a_n = \beta a_{n-1} + (1 - \beta) x_n` from
:math:`a_0 = 0` and read zero-debiased, :math:`\hat a_n = a_n / (1 - \beta^n)`.

* Secant curvature along the last step :math:`s_t = \theta_t - \theta_{t-1}`:
  :math:`h_t = \lVert g_t - g_{t-1}\rVert / \lVert s_t\rVert`. On a quadratic
  :math:`g_t - g_{t-1} = H s_t`, so :math:`h_t \in [\lambda_{\min},
  \lambda_{\max}]`, in the units of a curvature whatever the loss's scale.
* Curvature range: the extremes of the last ``window`` secants,
  :math:`h_{\max} = \max(\max_{\text{window}} h, \hat a[\max_{\text{window}} h])`
  and :math:`h_{\min} = \min(\min_{\text{window}} h, \hat a[\min_{\text{window}} h])`:
  the range widens at once and narrows at the pace of the EMA.
* Gradient variance :math:`C = \widehat{\lVert g\rVert^2} - \lVert\hat g\rVert^2`,
  the summed per-coordinate variance, with one param-sized buffer (:math:`\hat g`).
* Noise variance along the path: the EMA of :math:`\max(0, \lVert g_t -
  g_{t-1}\rVert^2 - (L\lVert s_t\rVert)^2) / 2`, with :math:`L` the last
  Lanczos estimate. On a quadratic whose curvatures are at most :math:`L`,
  :math:`\lVert H s_t\rVert \le L\lVert s_t\rVert`, so the excess is the
  noise of the two gradients, :math:`2C` in expectation; heavy ball's own
  oscillation adds nothing to it, as it does to :math:`C` above.
* Distance to the minimum :math:`D = \widehat{\lVert g\rVert} / \hat h`, the
  average gradient norm over the average curvature (:math:`\lVert g\rVert =
  \lVert H(\theta - \theta^*)\rVert` on a quadratic).
"""

from typing import Any

import jax
import jax.numpy as jnp

from momentax._autotune_state import AutotuneState


def debiased(mean: jax.Array, decay: float, samples: jax.Array) -> jax.Array:
    """``mean / (1 - decay**samples)``, and 0 before any sample."""
    weight = 1 - jnp.asarray(decay, mean.dtype) ** samples.astype(mean.dtype)
    return jnp.where(samples > 0, mean / jnp.where(samples > 0, weight, 1), 0)


def _ema(mean: jax.Array, sample: jax.Array, decay: float) -> jax.Array:
    return decay * mean + (1 - decay) * sample


def tree_dot(a: Any, b: Any, dtype: Any) -> jax.Array:
    """The sum of ``a * b`` over all leaves, in ``dtype``."""
    terms = [
        jnp.vdot(x.astype(dtype), y.astype(dtype))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    ]
    return sum(terms, jnp.zeros([], dtype))


def observe(
    state: AutotuneState,
    grads: Any,
    sq_norm: jax.Array,
    step_norm: jax.Array,
    decay: float,
    finite: jax.Array,
) -> AutotuneState:
    r"""``state`` with the gradient ``grads`` and the last step's norm taken in.

    ``sq_norm`` is :math:`\\lVert g_t \\rVert^2` and ``step_norm``
    :math:`\\lVert s_t \\rVert`; the secant is measured only from the second
    step on, and only where it is finite and positive. Where ``finite`` is
    false the param-sized buffers keep their values (the caller keeps the
    scalars): the gating sits where each buffer is computed, so that XLA
    writes each one in a single pass.
    """
    dtype = state.gradient_norm_mean.dtype
    difference = jax.tree.map(
        lambda g, p: g.astype(p.dtype) - p, grads, state.previous_gradient
    )
    sq_difference = tree_dot(difference, difference, dtype)
    secant = jnp.sqrt(sq_difference) / jnp.where(step_norm > 0, step_norm, 1)
    measured = (state.count > 0) & (step_norm > 0) & jnp.isfinite(secant)
    measured = measured & (secant > 0)
    # g_t - g_{t-1} = H s_t + (noise of two gradients): what a curvature up to
    # Lanczos's estimate of L cannot explain is noise, 2C in expectation. (Not
    # the secants' h_max: noisy secants stretch it to explain the noise.)
    explained = state.hessian_max * step_norm
    noise = jnp.maximum(sq_difference - explained * explained, 0) / 2
    window = state.curvatures.shape[0]
    slot = state.num_curvatures % window
    curvatures = jnp.where(
        measured, state.curvatures.at[slot].set(secant), state.curvatures
    )
    num_curvatures = state.num_curvatures + measured.astype(jnp.int32)
    filled = jnp.arange(window, dtype=jnp.int32) < num_curvatures
    window_max = jnp.max(jnp.where(filled, curvatures, 0))
    window_min = jnp.min(jnp.where(filled, curvatures, jnp.inf))

    def averaged(mean: jax.Array, sample: jax.Array) -> jax.Array:
        return jnp.where(measured, _ema(mean, sample, decay), mean)

    return state._replace(
        previous_gradient=jax.tree.map(
            lambda g, p: jnp.where(finite, g.astype(p.dtype), p),
            grads,
            state.previous_gradient,
        ),
        gradient_mean=jax.tree.map(
            lambda m, g: jnp.where(finite, _ema(m, g.astype(m.dtype), decay), m),
            state.gradient_mean,
            grads,
        ),
        gradient_norm_mean=_ema(state.gradient_norm_mean, jnp.sqrt(sq_norm), decay),
        gradient_sq_norm_mean=_ema(state.gradient_sq_norm_mean, sq_norm, decay),
        curvatures=curvatures,
        num_curvatures=num_curvatures,
        curvature_max_mean=averaged(state.curvature_max_mean, window_max),
        curvature_min_mean=averaged(state.curvature_min_mean, window_min),
        curvature_mean=averaged(state.curvature_mean, secant),
        noise_mean=averaged(state.noise_mean, noise),
    )


def curvature_range(state: AutotuneState, decay: float) -> tuple[jax.Array, jax.Array]:
    r"""The secants' :math:`(h_{\\max}, h_{\\min})`; both 0 before the first secant."""
    window = state.curvatures.shape[0]
    filled = jnp.arange(window, dtype=jnp.int32) < state.num_curvatures
    window_max = jnp.max(jnp.where(filled, state.curvatures, 0))
    window_min = jnp.min(jnp.where(filled, state.curvatures, jnp.inf))
    samples = state.num_curvatures
    h_max = jnp.maximum(window_max, debiased(state.curvature_max_mean, decay, samples))
    h_min = jnp.minimum(window_min, debiased(state.curvature_min_mean, decay, samples))
    return h_max, jnp.where(samples > 0, h_min, 0)


def path_noise(state: AutotuneState, decay: float) -> jax.Array:
    """The debiased noise variance along the path (0 before a secant)."""
    return debiased(state.noise_mean, decay, state.num_curvatures)


def variance_and_distance(
    state: AutotuneState, decay: float
) -> tuple[jax.Array, jax.Array]:
    """:math:`C` and :math:`D` from the averages (:math:`D = 0` before a secant)."""
    samples = state.count
    mean = state.gradient_mean
    dtype = state.gradient_norm_mean.dtype
    weight = 1 - jnp.asarray(decay, dtype) ** samples.astype(dtype)
    weight = jnp.where(samples > 0, weight, 1)
    mean_sq_norm = tree_dot(mean, mean, dtype) / (weight * weight)
    variance = jnp.maximum(state.gradient_sq_norm_mean / weight - mean_sq_norm, 0)
    norm = state.gradient_norm_mean / weight
    curvature = debiased(state.curvature_mean, decay, state.num_curvatures)
    distance = jnp.where(
        curvature > 0, norm / jnp.where(curvature > 0, curvature, 1), 0
    )
    return variance, distance
