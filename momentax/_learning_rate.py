"""A learning-rate scale that also takes per-leaf values.

``optax.scale_by_learning_rate`` takes one scalar or one schedule. momentax
also lets each leaf have its own rate, and casts each rate to its leaf's dtype
so that an array-valued rate never changes the updates' dtype.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from momentax import _hyperparams as hp
from momentax._trees import check_like, scalars


def _check_state(state: Any, counted: bool) -> None:
    """Checks that ``state`` is the state this scale's ``init`` returns."""
    expected = optax.ScaleByScheduleState if counted else optax.EmptyState
    if isinstance(state, expected):
        return
    if counted:
        why = "learning_rate is a schedule, so the state counts its steps"
    else:
        why = "learning_rate is constant, so the state holds nothing"
    hint = ""
    if isinstance(state, optax.EmptyState | optax.ScaleByScheduleState):
        other = "constant" if isinstance(state, optax.EmptyState) else "a schedule"
        hint = f" (the state of an optimizer whose learning_rate is {other})"
    raise TypeError(
        f"The learning rate got the state {type(state).__name__}{hint}, but {why} "
        f"({expected.__name__}). Pass the state that this optimizer's init "
        "returned, e.g. update(updates, opt.init(params), params)."
    )


def scale_by_learning_rate(
    learning_rate: hp.HyperParam,
) -> optax.GradientTransformationExtraArgs:
    r"""Scales the updates by :math:`-\eta_t`, one rate per leaf if given so.

    Args:
        learning_rate: :math:`\eta \ge 0`: a float, a JAX scalar, a schedule of
            the step count, or a pytree prefix of the params of those. The
            state counts steps only when some rate is a schedule.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state is
        ``optax.ScaleByScheduleState`` with a schedule, else ``optax.EmptyState``.
    """
    hp.check_hyperparam("learning_rate", learning_rate, low=0.0, high=float("inf"))
    counted = hp.has_schedule(learning_rate)

    def init_fn(params: optax.Params) -> Any:
        hp.check_prefix("learning_rate", learning_rate, params)
        if counted:
            return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))
        return optax.EmptyState()

    def update_fn(
        updates: optax.Updates,
        state: Any,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, Any]:
        del extra_args
        _check_state(state, counted)
        if params is not None:
            check_like(updates, params, "params")
        hp.check_prefix("learning_rate", learning_rate, updates, "updates")
        count = state.count if counted else None
        rates = hp.resolve("learning_rate", learning_rate, count, updates)
        # One negated rate per rate and dtype, not per leaf (see scalars).
        negated = scalars(lambda lr, dtype: -jnp.asarray(lr, dtype))
        updates = jax.tree.map(
            lambda g, lr: jax.lax.mul(negated(lr, jnp.result_type(g)), g),
            updates,
            rates,
        )
        if counted:
            state = optax.ScaleByScheduleState(count=optax.safe_increment(count))
        return updates, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
