"""The optimizer state shared by every momentax transformation."""

from typing import NamedTuple

import jax
import optax


class MomentumState(NamedTuple):
    r"""Holds the step count and the velocity of a momentum transformation.

    What ``velocity`` holds depends on the transformation that made the state:

    * :func:`momentax.scale_by_momentum` and ``momentum(..., convention="pytorch")``:
      the learning-rate-free buffer :math:`b_t` of ``torch.optim.SGD``
      (its ``momentum_buffer``) and of ``optax.trace``, in units of the
      gradient: :math:`b_1 = g_1`, :math:`b_t = \mu_t b_{t-1} + (1 - d) g_t`,
      where :math:`g_t` already includes weight decay and the sign flip of
      ``maximize``.
    * ``momentum(..., convention="sutskever")``: the signed, learning-rate
      scaled step :math:`v_t = \mu_t v_{t-1} - \eta_t g_t` of Sutskever et al.
      (2013) and Keras, in units of the parameters. Without Nesterov it is
      exactly the update added to the parameters.

    With a constant learning rate :math:`\eta` the two are related by
    :math:`v_t = -\eta\, b_t`, which is how a buffer is moved between the
    conventions (for example when porting a PyTorch checkpoint).

    ``velocity`` has the tree structure and shapes of the params, with the
    dtype chosen by ``accumulator_dtype`` (the params' dtype by default). It is
    ``None`` when momentum is the Python number 0, in which case no buffer is
    allocated.

    Attributes:
        count: Number of updates applied so far, an int32 scalar that stops
            (saturates) at the largest int32 instead of wrapping around.
            Schedules are evaluated at this value, so the first update uses
            ``schedule(0)``.
        velocity: The momentum buffer described above, or ``None``.

    Examples:
        The same gradients under both conventions, at a constant rate 0.1:

        >>> import jax.numpy as jnp
        >>> import momentax
        >>> grads = jnp.array([1.0, -2.0])
        >>> for convention in momentax.CONVENTIONS:
        ...     opt = momentax.momentum(0.1, 0.9, convention=convention)
        ...     state = opt.init(grads)
        ...     for _ in range(2):
        ...         _, state = opt.update(grads, state)
        ...     velocity = [round(float(v), 3) for v in state.velocity]
        ...     print(convention, int(state.count), velocity)
        sutskever 2 [-0.19, 0.38]
        pytorch 2 [1.9, -3.8]
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in Optax
    velocity: optax.Updates | None
