r"""The one transform Optax lacks: a momentum buffer with PyTorch's dampening.

``optax.trace`` keeps :math:`b_t = \mu b_{t-1} + g_t`. ``torch.optim.SGD`` adds
dampening, with a first step that is never damped, and people schedule the
momentum or give it per leaf. :func:`scale_by_momentum` is that buffer, and
nothing else: the learning rate, weight decay and the sign are separate Optax
transforms, composed by :func:`momentax.momentum`.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from momentax import _hyperparams as hp
from momentax._codegen import keep_velocity_sharding
from momentax._state import CountedMomentumState, MomentumState
from momentax._trees import (
    cast,
    check_like,
    check_params,
    check_updates,
    scalars,
    velocity_dtype,
    wider_dtype,
)


def _check_options(momentum: hp.HyperParam, nesterov: Any, dampening: Any) -> None:
    hp.check_hyperparam("momentum", momentum, low=0.0, high=1.0)
    hp.check_static_scalar("dampening", dampening, low=0.0, high=1.0)
    hp.check_flag("nesterov", nesterov)
    if nesterov and any(v == 0 for v in hp.known_values(momentum)):
        raise ValueError(
            f"nesterov=True requires momentum > 0; got momentum={momentum!r}. "
            "Use nesterov=False for plain SGD."
        )
    if nesterov and any(v != 0 for v in hp.known_values(dampening)):
        raise ValueError(
            f"nesterov=True requires dampening=0; got dampening={dampening!r}."
        )


def _check_state(state: Any, expected: type, why: str) -> None:
    """Checks that ``state`` is the state type this buffer's ``init`` returns."""
    if isinstance(state, expected):
        return
    other = {MomentumState: CountedMomentumState, CountedMomentumState: MomentumState}
    if isinstance(state, other[expected]):
        source = (
            "an optimizer that counts steps (dampening or a momentum schedule)"
            if isinstance(state, CountedMomentumState)
            else "an optimizer without dampening or a momentum schedule"
        )
        raise TypeError(
            f"scale_by_momentum's update got a {type(state).__name__}, the state "
            f"of {source}, but {why}, so its state is a {expected.__name__}. Pass "
            "the state that this optimizer's init returned."
        )
    got = "None" if state is None else type(state).__name__
    raise TypeError(
        f"scale_by_momentum's update got a state that is not a {expected.__name__}: "
        f"{got}. Pass the state that this optimizer's init returned, e.g. "
        "update(updates, opt.init(params))."
    )


def _no_buffer() -> optax.GradientTransformationExtraArgs:
    """Momentum 0: the identity, whose state says that it holds no buffer."""

    def init_fn(params: optax.Params) -> MomentumState:
        check_params(params)
        return MomentumState(velocity=None)

    def update_fn(
        updates: optax.Updates,
        state: MomentumState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, MomentumState]:
        del params, extra_args
        _check_state(state, MomentumState, "momentum=0 keeps no buffer")
        if state.velocity is not None:
            raise TypeError(
                "scale_by_momentum(0) keeps no buffer, but the state holds one: it "
                "comes from an optimizer with momentum. Pass the state that this "
                "optimizer's init returned."
            )
        check_updates(updates)
        return updates, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_momentum(
    momentum: hp.HyperParam = 0.9,
    *,
    nesterov: bool = False,
    dampening: hp.Scalar = 0.0,
    accumulator_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Accumulates updates into a momentum buffer, as ``torch.optim.SGD`` does.

    With :math:`\mu_t` the momentum and :math:`d` the dampening, the buffer and
    the output are

    .. math::

        b_1 = g_1, \qquad b_t = \mu_t b_{t-1} + (1 - d)\, g_t \quad (t > 1),
        \qquad u_t = b_t \;\text{ or, Nesterov, }\; u_t = g_t + \mu_t b_t.

    A step whose momentum is 0 restarts the buffer from that step's input,
    undamped. This is ``optax.trace`` when ``dampening=0``. Follow it with a
    learning rate (``optax.scale_by_learning_rate``) to get SGD with momentum in
    PyTorch's convention, or put the learning rate before it for Sutskever's
    (see :func:`momentax.momentum`, which does both).

    The state holds a step count only when something reads it (a momentum
    schedule, or dampening). Python numbers and integer arrays are accepted as
    updates: an integer update is taken at its value, and its output has the
    buffer's dtype (as ``optax.trace`` promotes it) rather than its own. The
    buffer keeps its dtype and, under ``jax.jit`` on a mesh, its param's
    sharding. Changing a schedule's values never recompiles a jitted step;
    changing a Python number passed here does.

    Args:
        momentum: :math:`\mu` in [0, 1]: a float, a JAX scalar, a schedule of
            the step count, or a pytree prefix of the params giving per-leaf
            values. The Python number 0 makes this the identity, with no buffer.
        nesterov: Output the Nesterov look-ahead :math:`g_t + \mu_t b_t`.
            Requires momentum > 0 and dampening 0.
        dampening: :math:`d` in [0, 1], the fraction of each input after the
            first that is left out of the buffer (a float or a JAX scalar).
        accumulator_dtype: The buffer's dtype (``None``: each param's dtype):
            float16, bfloat16, float32 or float64, or for complex params
            complex64 or complex128. Complex params with a real dtype get the
            complex dtype of that precision. The arithmetic runs in the wider
            of it and the input's dtype; the output has the input's dtype.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state is a
        :class:`CountedMomentumState` when something reads the step count (a
        momentum schedule, or dampening), else a :class:`MomentumState` (with
        ``velocity=None`` for momentum 0).

    Raises:
        ValueError: A value is outside its range, or Nesterov is asked for
            without momentum or with dampening. At ``init``: the params are not
            floating point, or a per-leaf value does not match them. At
            ``update``: the updates do not match the buffer.
        TypeError: An argument has the wrong type. At ``update``: an update
            is boolean or not a number, or the state is not the one ``init``
            returns (e.g. the state of an undamped buffer given to a damped
            one).

    Examples:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> import momentax
        >>> opt = optax.chain(
        ...     optax.clip_by_global_norm(1.0),
        ...     momentax.scale_by_momentum(0.9),
        ...     optax.scale_by_learning_rate(0.1),
        ... )
        >>> params = jnp.array([1.0, -2.0])
        >>> state = opt.init(params)
        >>> for _ in range(2):
        ...     updates, state = opt.update(jnp.array([0.3, 0.4]), state)
        >>> print(updates.round(4))
        [-0.057 -0.076]

    References:
        Sutskever et al., `On the importance of initialization and momentum in
        deep learning <https://proceedings.mlr.press/v28/sutskever13.html>`_,
        2013; the ``torch.optim.SGD`` documentation.
    """
    _check_options(momentum, nesterov, dampening)
    accumulator_dtype = hp.check_dtype(
        "accumulator_dtype", accumulator_dtype, complex_ok=True
    )
    if hp.is_static_zero(momentum):
        return _no_buffer()
    damped = not hp.is_static_zero(dampening)
    counted = damped or hp.has_schedule(momentum)

    def init_fn(params: optax.Params) -> MomentumState | CountedMomentumState:
        check_params(params, accumulator_dtype)
        hp.check_prefix("momentum", momentum, params)
        velocity = jax.tree.map(
            lambda p: optax.tree.zeros_like(
                p, dtype=velocity_dtype(jnp.result_type(p), accumulator_dtype)
            ),
            jax.tree.map(jnp.asarray, params),
        )
        if counted:
            return CountedMomentumState(jnp.zeros([], jnp.int32), velocity)
        return MomentumState(velocity)

    def update_fn(
        updates: optax.Updates,
        state: MomentumState | CountedMomentumState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, MomentumState | CountedMomentumState]:
        del extra_args
        if counted:
            why = "dampening" if damped else "a momentum schedule"
            _check_state(state, CountedMomentumState, f"{why} reads the step count")
        else:
            why = "no dampening or momentum schedule reads a step count"
            _check_state(state, MomentumState, why)
        count = state.count if isinstance(state, CountedMomentumState) else None
        check_updates(updates)
        check_like(updates, state.velocity, "velocity")
        if params is not None:
            check_like(updates, params, "params")
        hp.check_prefix("momentum", momentum, updates, "updates")
        if not jax.tree.leaves(updates):  # Nothing to accumulate (optax.masked).
            return updates, _next(count, state.velocity)
        momenta = hp.resolve("momentum", momentum, count, updates)
        as_dtype = scalars(jnp.asarray)

        # lax, not jnp operators, and no casts that change nothing: all operands
        # have one dtype here, and this runs once per leaf at every trace.
        def leaf(g: Any, v: jax.Array, mu: Any) -> tuple[jax.Array, jax.Array]:
            g = g if isinstance(g, jax.Array) else jnp.asarray(g)  # Python numbers
            dtype = wider_dtype(g.dtype, v.dtype)
            x = cast(g, dtype)
            mu = as_dtype(mu, dtype)
            if damped:
                # As torch.optim.SGD: the first step is undamped (b_1 = g_1), and
                # dampening does nothing where momentum is 0.
                keep = 1 - jnp.asarray(dampening, dtype)
                undamped = (count == 0) | (mu == 0)
                x_in = jnp.where(undamped, jnp.ones_like(keep), keep) * x
            else:
                x_in = x
            new_v = lax.add(lax.mul(mu, cast(v, dtype)), x_in)
            out = lax.add(x, lax.mul(mu, new_v)) if nesterov else new_v
            # An integer update comes out in the dtype it was accumulated in.
            integer = g.dtype != dtype and not jnp.issubdtype(g.dtype, jnp.inexact)
            out_dtype = dtype if integer else g.dtype
            return cast(out, out_dtype), cast(new_v, v.dtype)

        steps = jax.tree.map(leaf, updates, state.velocity, momenta)
        outer = jax.tree.structure(updates)
        new_updates, new_velocity = jax.tree.transpose(
            outer, jax.tree.structure((0, 0)), steps
        )
        return new_updates, _next(count, new_velocity)

    return keep_velocity_sharding(
        optax.GradientTransformationExtraArgs(init_fn, update_fn)
    )


def _next(
    count: jax.Array | None, velocity: optax.Updates
) -> MomentumState | CountedMomentumState:
    """The state after a step: the count, if there is one, moved on by one."""
    if count is None:
        return MomentumState(velocity)
    return CountedMomentumState(optax.safe_increment(count), velocity)
