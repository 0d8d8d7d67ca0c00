"""The states of :func:`momentax.scale_by_momentum`: a buffer, with a count or not."""

from typing import NamedTuple

import jax
import optax


class MomentumState(NamedTuple):
    r"""Holds the momentum buffer of :func:`momentax.scale_by_momentum`.

    The buffer is in the units of what the transform receives. In
    ``momentum(..., convention="pytorch")`` that is the gradient: the buffer is
    ``torch.optim.SGD``'s ``momentum_buffer`` and ``optax.trace``'s trace. In
    ``convention="sutskever"`` the learning rate is applied first, so the buffer
    is the signed, learning-rate scaled velocity :math:`v_t` of Sutskever et al.
    and Keras, in the units of the params. The two conventions' chains hold
    their pieces in a different order, so their states never have one
    structure and cannot be mistaken for each other.

    This is the state when nothing reads a step count (no momentum schedule
    and no dampening); otherwise it is a :class:`CountedMomentumState`. So a
    learning-rate schedule's count is the only ``"count"`` in
    ``momentum(schedule, 0.9)``'s state, as in ``optax.sgd``'s.

    Attributes:
        velocity: The buffer: a pytree with the params' structure and shapes
            and the accumulator dtype, or ``None`` when momentum is the Python
            number 0 (plain SGD keeps no buffer).

    Examples:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> import momentax
        >>> opt = momentax.momentum(0.1, 0.9, convention="pytorch")
        >>> state = opt.init({"w": jnp.zeros(2)})
        >>> optax.tree.get(state, "velocity")
        {'w': Array([0., 0.], dtype=float32)}
    """

    velocity: optax.Updates | None


class CountedMomentumState(NamedTuple):
    r"""Holds the momentum buffer of :func:`momentax.scale_by_momentum` and its step.

    The state of a buffer whose update reads the step count: a momentum
    schedule evaluates at it, and dampening leaves the first step undamped.

    Attributes:
        count: The number of updates so far, an int32 scalar that stops at the
            largest int32 instead of wrapping around.
        velocity: The buffer, as in :class:`MomentumState`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> import momentax
        >>> opt = momentax.momentum(0.1, 0.9, dampening=0.5)
        >>> state = opt.init({"w": jnp.zeros(2)})
        >>> optax.tree.get(state, "count")
        Array(0, dtype=int32)
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count
    velocity: optax.Updates
