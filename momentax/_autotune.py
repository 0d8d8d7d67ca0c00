r"""Heavy ball that sets its own learning rate and momentum as it trains.

Each step measures the curvature range (from gradient secants, or from a
Lanczos estimate on Hessian-vector products when the loss is passed), the
gradient variance and the distance to the minimum, turns them into
:math:`(\eta_t, \mu_t)` with YellowFin's single-step rule, and applies the
heavy-ball step with :func:`momentax.momentum` in the chosen convention.
"""

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from momentax import _curvature, _statistics
from momentax import _hyperparams as hp
from momentax._alias import CONVENTIONS, Convention, momentum
from momentax._autotune_state import AutotuneState
from momentax._single_step import single_step
from momentax._trees import check_like, check_params


def _check_positive(name: str, value: Any, *, high: float = math.inf) -> float:
    number = hp.check_real(name, value)
    if not (0 < number < high) or math.isnan(number):
        raise ValueError(f"{name} must be in (0, {high:g}); got {value!r}.")
    return number


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


# The param-sized statistics, which observe() keeps for a non-finite step itself.
_GATED: dict[str, Any] = {"previous_gradient": None, "gradient_mean": None}


def _refresh_step(count: jax.Array, every: int) -> jax.Array:
    """Whether step ``count`` (from 0) refreshes the Lanczos estimate.

    Steps 0, 1, 2, 4, 8, ... below ``every``, then every ``every``-th: each
    warm restart sharpens the estimate, most needed at the start.
    """
    power_of_two = (count & (count - 1)) == 0
    return (count % every == 0) | (power_of_two & (count < every))


def _heavy_ball(
    learning_rate: Any, buffer_momentum: Any, convention: Convention
) -> optax.GradientTransformationExtraArgs:
    return momentum(learning_rate, buffer_momentum, convention=convention)


def autotune(
    *,
    convention: Convention = "sutskever",
    initial_learning_rate: float = 1e-3,
    max_growth: float = 2.0,
    max_momentum: float = 0.999,
    max_condition_number: float = 1e6,
    stability_margin: float = 0.1,
    decay: float = 0.999,
    window: int = 20,
    curvature_every: int = 100,
    curvature_iterations: int = 20,
    axis_name: str | None = None,
    key: jax.Array | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Heavy ball whose learning rate and momentum tune themselves.

    Each step :math:`t` with gradient :math:`g_t` applies the heavy-ball step

    .. math::
        v_t = \mu_t v_{t-1} - \eta_t g_t, \qquad \theta_{t+1} = \theta_t + v_t

    with :math:`(\eta_t, \mu_t)` from the current statistics (the state's
    ``learning_rate`` and ``momentum``):

    1. The curvature range :math:`[h_{\min}, h_{\max}]`. Gradients only (the
       default): the extremes of the last ``window`` secant curvatures
       :math:`\lVert g_t - g_{t-1}\rVert / \lVert\theta_t - \theta_{t-1}\rVert`,
       EMA-smoothed so that the range widens at once and narrows slowly. With
       ``update(..., value_fn=loss)``: a Lanczos estimate
       (:func:`momentax.estimate_curvature`'s method, ``curvature_iterations``
       Hessian-vector products, warm-started from the last top and bottom
       Ritz vectors) at steps 0, 1, 2, 4, 8, ... and then every
       ``curvature_every`` steps gives :math:`h_{\max}` (raised to the
       secants' where they measure more, as where the path reaches more
       curvature between estimates), and :math:`h_{\min}` is the smaller of
       its estimate and the secants'. :math:`h_{\min}` is
       kept :math:`\ge h_{\max}` / ``max_condition_number`` (a non-convex
       loss can give :math:`h_{\min} \le 0`).
    2. The gradient variance :math:`C` and the distance to the minimum
       :math:`D`, EMAs with decay ``decay``, zero-debiased.
    3. YellowFin's single-step rule: the :math:`\mu \ge \mu_P` (Polyak's
       momentum for the range) minimising :math:`\mu D^2 + \eta^2 C` with
       :math:`\eta = (1 - \sqrt\mu)^2 / h_{\min}`, a cubic solved in closed
       form. With :math:`C = 0` this is Polyak's tuning,
       :math:`\eta = 4 / (\sqrt{h_{\max}} + \sqrt{h_{\min}})^2`; a larger
       :math:`C` raises :math:`\mu` and lowers :math:`\eta`. With Lanczos's
       range, :math:`C` is the part of the gradient change that no curvature
       up to Lanczos's :math:`L` explains, the EMA of :math:`\max(0,
       \lVert g_t - g_{t-1}\rVert^2 - L^2 \lVert s_t\rVert^2) / 2`: zero on a
       quadratic, where heavy ball's oscillation would count in the
       gradients' EMA variance and slow a deterministic problem down, and the
       noise variance of a minibatch gradient where there is noise.

    Safeguards: the rule uses :math:`h_{\max}(1 + \text{stability\_margin})`,
    so that a curvature up to that much above the estimate (Lanczos
    underestimates :math:`L`) is still stable, and :math:`\eta \le 2(1 + \mu) /
    h_{\max}`, heavy ball's stability bound, always holds; :math:`\mu \le`
    ``max_momentum``; the first step uses ``initial_learning_rate`` (a probe:
    the secants need one step) and the rate then grows by at most
    ``max_growth`` per step, a warm-up that also damps spikes in the
    statistics. A step whose gradient (or ``value`` extra argument, the loss)
    is not finite, or whose squared norm overflows, changes nothing but
    ``num_nonfinite``: its update is zero,
    and neither the statistics nor the velocity see it.

    Small batches defeat the gradients-only path: gradient noise inflates
    the secants and drives its rate towards zero. The Lanczos path tunes for
    the noise, more cautiously than the best grid point (measurements on the
    Tuning page). ``value_fn`` must be the loss whose gradients are passed:
    a gradient change that its Hessian cannot explain counts as noise.

    Conventions: ``"sutskever"`` keeps :math:`v_t` as above. ``"pytorch"``
    keeps :math:`b_t = v_t / (-\eta_t)` in gradient units, with
    :math:`b_t = \mu_t (\eta_{t-1}/\eta_t) b_{t-1} + g_t` and update
    :math:`-\eta_t b_t`: the same iterates, as the rate changes.

    Data parallelism: under ``jax.jit`` with sharded arrays every sum is
    global already. In per-device code whose gradients are per device
    (``pmap``, ``shard_map(..., check_vma=False)``) pass the data axis as
    ``axis_name``: the gradients (and Hessian-vector products) are averaged
    over it (``jax.lax.pmean``) before anything else, so the statistics and
    the step are the same on every device, and equal to those of the whole
    batch. Params must be replicated over that axis. (Under ``shard_map``'s
    default ``check_vma=True``, JAX itself sums the gradients of replicated
    params over the axis: write the loss as the batch mean,
    ``jax.lax.pmean`` of the local one, and ``axis_name`` changes nothing.)

    Args:
        convention: ``"sutskever"`` (lr inside the velocity) or
            ``"pytorch"`` (lr outside).
        initial_learning_rate: The first step's rate (> 0).
        max_growth: The most the rate may grow from one step to the next
            (> 1).
        max_momentum: The largest momentum, in (0, 1).
        max_condition_number: The largest :math:`h_{\max}/h_{\min}` (> 1).
        stability_margin: The fraction by which :math:`h_{\max}` is raised
            before tuning (>= 0).
        decay: The EMAs' decay :math:`\beta` in (0, 1).
        window: The number of secant curvatures the range is taken over (>= 1).
        curvature_every: With ``value_fn``: the steps between Lanczos
            estimates (>= 1), after the first ones at steps 0, 1, 2, 4, ...
            The default, 100, with 20 iterations, spends 0.2 Hessian-vector
            products per step (one costs about one to two gradients).
        curvature_iterations: With ``value_fn``: the Lanczos iterations of an
            estimate (>= 2).
        axis_name: The data-parallel axis of per-device code, or ``None``.
        key: The PRNG key of the Lanczos start vectors (``None``:
            ``jax.random.key(0)``); each estimate folds in the step count.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state is an
        :class:`AutotuneState`. Its ``update`` takes the extra keyword
        arguments ``value_fn`` (params -> scalar loss; needs ``params``) and
        ``value`` (the loss, checked for finiteness only).

    Raises:
        TypeError, ValueError: An argument has the wrong type or range; at
            ``update``, ``value_fn`` is given without ``params``.

    Examples:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import optax
        >>> import momentax
        >>> curvatures = jnp.logspace(0, 2, 50)  # condition number 100
        >>> def loss(params):
        ...     return 0.5 * jnp.sum(curvatures * params**2)
        >>> opt = momentax.autotune()
        >>> params = jnp.ones(50)
        >>> state = opt.init(params)
        >>> @jax.jit
        ... def step(params, state):
        ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
        ...     return optax.apply_updates(params, updates), state
        >>> for _ in range(300):
        ...     params, state = step(params, state)
        >>> print(bool(loss(params) < 1e-12))
        True

    References:
        Zhang & Mitliagkas, `YellowFin and the art of momentum tuning
        <https://arxiv.org/abs/1706.03471>`_, 2017; Polyak, "Some methods of
        speeding up the convergence of iteration methods", 1964.
    """
    if convention not in CONVENTIONS:
        raise ValueError(
            f"convention must be one of {', '.join(map(repr, CONVENTIONS))}; "
            f"got {convention!r}."
        )
    initial_learning_rate = _check_positive(
        "initial_learning_rate", initial_learning_rate
    )
    max_growth = _check_positive("max_growth", max_growth)
    if max_growth <= 1:
        raise ValueError(f"max_growth must be > 1; got {max_growth!r}.")
    max_momentum = _check_positive("max_momentum", max_momentum, high=1.0)
    max_condition_number = _check_positive("max_condition_number", max_condition_number)
    if max_condition_number <= 1:
        raise ValueError(
            f"max_condition_number must be > 1; got {max_condition_number!r}."
        )
    stability_margin = hp.check_real("stability_margin", stability_margin)
    if not (0 <= stability_margin < math.inf):
        raise ValueError(f"stability_margin must be >= 0; got {stability_margin!r}.")
    decay = _check_positive("decay", decay, high=1.0)
    window = hp.check_integer("window", window, 1)
    curvature_every = hp.check_integer("curvature_every", curvature_every, 1)
    curvature_iterations = hp.check_integer(
        "curvature_iterations", curvature_iterations, 2
    )
    if axis_name is not None and not isinstance(axis_name, str | tuple):
        raise TypeError(f"axis_name must be a str or None; got {axis_name!r}.")
    if key is not None and not isinstance(key, jax.Array):
        raise TypeError(f"key must be a JAX PRNG key or None; got {key!r}.")
    base_key = jax.random.key(0) if key is None else key

    def init_fn(params: optax.Params) -> AutotuneState:
        check_params(params)
        params = jax.tree.map(jnp.asarray, params)
        if any(jnp.iscomplexobj(p) for p in jax.tree.leaves(params)):
            raise TypeError("autotune needs real params; got complex ones.")
        work, scalar = _curvature.work_dtypes(params)

        def zero() -> jax.Array:
            # A new array per field: a donated state must hold no buffer twice.
            return jnp.zeros([], scalar)

        hb = _heavy_ball(jnp.asarray(initial_learning_rate, scalar), zero(), convention)
        return AutotuneState(
            count=jnp.zeros([], jnp.int32),
            num_nonfinite=jnp.zeros([], jnp.int32),
            learning_rate=jnp.asarray(initial_learning_rate, scalar),
            momentum=zero(),
            max_curvature=zero(),
            min_curvature=zero(),
            variance=zero(),
            distance=zero(),
            heavy_ball=hb.init(params),
            previous_gradient=jax.tree.map(jnp.zeros_like, params),
            gradient_mean=jax.tree.map(
                lambda p, d: jnp.zeros(p.shape, d), params, work
            ),
            gradient_norm_mean=zero(),
            gradient_sq_norm_mean=zero(),
            curvatures=jnp.zeros([window], scalar),
            num_curvatures=jnp.zeros([], jnp.int32),
            curvature_max_mean=zero(),
            curvature_min_mean=zero(),
            curvature_mean=zero(),
            noise_mean=zero(),
            hessian_max=zero(),
            hessian_min=zero(),
            top_vector=jax.tree.map(lambda p, d: jnp.zeros(p.shape, d), params, work),
            bottom_vector=jax.tree.map(
                lambda p, d: jnp.zeros(p.shape, d), params, work
            ),
        )

    def hessian(
        state: AutotuneState,
        params: optax.Params,
        value_fn: Callable[[Any], jax.Array],
        refresh: jax.Array,
    ) -> AutotuneState:
        """``state`` with a new Lanczos estimate where ``refresh`` holds."""

        def estimate(state: AutotuneState) -> AutotuneState:
            step_key = jax.random.fold_in(base_key, state.count)
            start_key, restart_key = jax.random.split(step_key)
            warm = jax.tree.map(jnp.add, state.top_vector, state.bottom_vector)
            start = _curvature.start_vector(start_key, params, warm)
            local = _curvature.hvp_of(value_fn, params)

            def hvp(vector: Any) -> Any:
                product = local(vector)
                if axis_name is not None:
                    product = jax.lax.pmean(product, axis_name)  # type: ignore[no-untyped-call]
                return product

            dtype = state.hessian_max.dtype
            found = _curvature.lanczos(
                hvp, start, curvature_iterations, restart_key, dtype
            )
            usable = (
                jnp.isfinite(found.max_curvature)
                & jnp.isfinite(found.min_curvature)
                & (found.max_curvature > 0)
            )

            def pick(new: Any, old: Any) -> Any:
                return jax.tree.map(
                    lambda n, o: jnp.where(usable, n.astype(o.dtype), o), new, old
                )

            return state._replace(
                hessian_max=pick(found.max_curvature, state.hessian_max),
                hessian_min=pick(found.min_curvature, state.hessian_min),
                top_vector=pick(found.top_vector, state.top_vector),
                bottom_vector=pick(found.bottom_vector, state.bottom_vector),
            )

        refreshed: AutotuneState = jax.lax.cond(
            refresh, estimate, lambda state: state, state
        )
        return refreshed

    def tuned(state: AutotuneState, previous: AutotuneState) -> AutotuneState:
        """``state`` with the step's range, statistics, rate and momentum."""
        secant_max, secant_min = _statistics.curvature_range(state, decay)
        by_hessian = state.hessian_max > 0
        # The secants bound the curvature along the path from below: where the
        # path reaches more curvature than the last Lanczos estimate saw (it is
        # refreshed every curvature_every steps), they lower the rate at once.
        h_max = jnp.where(
            by_hessian, jnp.maximum(state.hessian_max, secant_max), secant_max
        )
        lowest = jnp.where(
            secant_min > 0,
            jnp.minimum(state.hessian_min, secant_min),
            state.hessian_min,
        )
        h_min = jnp.where(by_hessian, lowest, secant_min)
        h_min = jnp.clip(h_min, h_max / max_condition_number, h_max)
        variance, distance = _statistics.variance_and_distance(state, decay)
        ranged = h_max > 0
        safe_max = jnp.where(ranged, h_max, 1) * (1 + stability_margin)
        safe_min = jnp.where(ranged, h_min, 1)
        # Lanczos's range tunes with the noise that its L does not explain (the
        # gradients' C would count heavy ball's oscillation too).
        noise = jnp.where(by_hessian, _statistics.path_noise(state, decay), variance)
        rule = single_step(safe_max, safe_min, noise, distance, max_momentum)
        cap = jnp.where(
            previous.count == 0,
            initial_learning_rate,
            max_growth * previous.learning_rate,
        ).astype(previous.learning_rate.dtype)
        # Without a curvature yet (zero gradients or steps: no secant), there is
        # no rule to grow towards: the rate holds.
        held = jnp.where(
            previous.count == 0, initial_learning_rate, previous.learning_rate
        ).astype(previous.learning_rate.dtype)
        learning_rate = jnp.where(ranged, jnp.minimum(rule.learning_rate, cap), held)
        return state._replace(
            learning_rate=learning_rate,
            momentum=jnp.where(ranged, rule.momentum, 0),
            max_curvature=h_max,
            min_curvature=h_min,
            variance=noise,
            distance=distance,
        )

    def update_fn(
        updates: optax.Updates,
        state: AutotuneState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, AutotuneState]:
        if not isinstance(state, AutotuneState):
            raise TypeError(
                "autotune's update got a state that is not an AutotuneState: "
                f"{type(state).__name__}. Pass the state that its init returned."
            )
        check_like(updates, state.previous_gradient, "params")
        value_fn = extra_args.get("value_fn")
        if value_fn is not None and params is None:
            raise ValueError(
                "value_fn needs the params: call update(grads, state, params, "
                "value_fn=loss)."
            )
        if value_fn is not None and not callable(value_fn):
            raise TypeError(
                f"value_fn must be a function of the params; got {value_fn!r}."
            )
        grads = updates
        if axis_name is not None:
            grads = jax.lax.pmean(grads, axis_name)  # type: ignore[no-untyped-call]
        dtype = state.learning_rate.dtype
        sq_norm = _statistics.tree_dot(grads, grads, dtype)
        # A NaN or an infinity in the gradient makes its squared norm one too
        # (as does a norm that overflows, which would poison the statistics):
        # one reduction that the statistics need anyway, not a pass of its own.
        finite = jnp.isfinite(sq_norm)
        if extra_args.get("value") is not None:
            finite = finite & _all_finite(extra_args["value"])
        velocity = optax.tree.get(state.heavy_ball, "velocity")
        step_norm = jnp.sqrt(_statistics.tree_dot(velocity, velocity, dtype))
        if convention == "pytorch":
            step_norm = state.learning_rate * step_norm
        new = _statistics.observe(state, grads, sq_norm, step_norm, decay, finite)
        new = new._replace(count=optax.safe_increment(state.count))
        if value_fn is not None:
            refresh = finite & _refresh_step(state.count, curvature_every)
            new = hessian(new, params, value_fn, refresh)
        new = tuned(new, state)
        if convention == "sutskever":
            buffer_momentum = new.momentum
        else:
            # b_t = mu_t (eta_{t-1} / eta_t) b_{t-1} + g_t keeps -eta_t b_t = v_t.
            buffer_momentum = new.momentum * state.learning_rate / new.learning_rate
        hb = _heavy_ball(new.learning_rate, buffer_momentum, convention)
        steps, heavy_ball = hb.update(grads, state.heavy_ball, params)
        new = new._replace(heavy_ball=heavy_ball)
        kept = jax.tree.map(
            lambda n, o: jnp.where(finite, n, o),
            new._replace(**_GATED),
            state._replace(**_GATED),
        )
        kept = kept._replace(
            num_nonfinite=state.num_nonfinite + (~finite).astype(jnp.int32),
            previous_gradient=new.previous_gradient,
            gradient_mean=new.gradient_mean,
        )
        steps = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), steps)
        return steps, kept

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
