"""``make_train_step``: one donated, jitted training step."""

import functools
from collections.abc import Callable
from typing import Any

import jax
import optax

from momentax.training import _step as s
from momentax.training._placement import Placement

PyTree = Any
TrainStep = Callable[[PyTree, PyTree, PyTree], tuple[PyTree, PyTree, dict[str, Any]]]


def make_train_step(
    loss_fn: s.LossFn,
    optimizer: optax.GradientTransformation,
    *,
    record: s.Record = ("loss",),
    donate: bool = True,
    placement: Placement | None = None,
) -> TrainStep:
    r"""Returns a jit-compiled training step for ``loss_fn`` and ``optimizer``.

    The step computes the loss and its gradients at ``params``, asks the optimizer
    for updates and applies them:

    .. math::
        g = \nabla_\theta \ell(\theta, \text{batch}), \quad
        (u, s') = \text{update}(g, s, \theta), \quad \theta' = \theta + u.

    It always returns ``(params, opt_state, records)``, ``records`` a dict with
    one entry per name in ``record`` (by default just the loss).

    With ``donate=True`` (the default) the params and optimizer state passed in are
    donated: XLA writes the new values into their buffers instead of allocating
    new ones, which saves memory traffic and memory. Donated arrays are deleted
    by the call; use the returned ones (passing a deleted one to the step again
    raises a ``ValueError`` that names it). Whatever else holds them, such as a
    Flax NNX or Equinox module the params were split from, loses them too.
    They must also be distinct buffers: tied params (one array under two names)
    need ``donate=False``.

    The params may be a :class:`momentax.training.Packed` (see
    :func:`momentax.training.pack`): ``loss_fn`` still receives the unpacked tree,
    while the step passes, updates and returns a few flat buffers. Initialise
    the optimizer on the packed params.

    The step compiles once per input structure, shape and dtype; a new batch of
    the same shape does not recompile. While compiling it checks that
    ``opt_state`` is a state of ``optimizer`` for these params.

    Args:
        loss_fn: ``loss_fn(params, batch)``, returning a scalar loss.
        optimizer: Any Optax ``GradientTransformation``.
        record: What to return per step: names from :data:`RECORDABLE`
            (``"loss"``, ``"params"`` (before the step), ``"grads"``,
            ``"updates"``, ``"velocity"`` (the state's, after the step)), or a
            dict from a name to a function of :class:`StepInfo` (for example
            a test loss; ``RECORDABLE[name]`` for the built-ins).
        donate: Whether to donate the params and optimizer state buffers.
        placement: Where params, state and batches live on a device mesh (see
            :class:`momentax.training.Placement`), or None for where they
            already are. The step then places its inputs first (free for inputs
            already placed, as the returned ones are: create the state with
            ``placement.init``), and pins the returned params and state to
            their placement.

    Returns:
        ``step(params, opt_state, batch) -> (params, opt_state, records)``.

    Raises:
        TypeError: For a ``loss_fn``, ``optimizer``, ``placement`` or ``record``
            of the wrong kind, and (at the call) a ``None`` state.
        ValueError: For unknown or repeated record names, and (at the call) a
            state of another optimizer, tied params while donating, or arrays
            deleted by an earlier donated call.

    Examples:
        >>> import jax.numpy as jnp
        >>> import momentax
        >>> def loss_fn(params, batch):
        ...     x, y = batch
        ...     return jnp.mean((params["w"] * x - y) ** 2)
        >>> opt = momentax.momentum(0.05, momentum=0.9)
        >>> step = momentax.training.make_train_step(loss_fn, opt)
        >>> params = {"w": jnp.array(0.0)}
        >>> state = opt.init(params)
        >>> batch = (jnp.array([1.0, 2.0]), jnp.array([3.0, 6.0]))
        >>> for _ in range(200):
        ...     params, state, records = step(params, state, batch)
        >>> print(f"w = {params['w']:.3f}, recorded: {sorted(records)}")
        w = 3.000, recorded: ['loss']
    """
    s.check_training(loss_fn, optimizer, placement)
    pairs = s.recorders(record)
    names = [name for name, _ in pairs]

    def step(params: PyTree, opt_state: PyTree, batch: PyTree) -> Any:
        s.check_state(optimizer, params, opt_state, names)  # at trace time only
        return s.step(loss_fn, optimizer, pairs, placement, params, opt_state, batch)

    jitted = jax.jit(step, donate_argnums=(0, 1) if donate else ())

    def prepare(params: PyTree, opt_state: PyTree, batch: PyTree) -> tuple[Any, ...]:
        if placement is None:
            return params, opt_state, batch
        # Before placement.put_state reads its structure (each call: placing
        # costs as much).
        s.check_state(optimizer, params, opt_state, names)
        return s.place(placement, optimizer, params, opt_state, batch, stacked=False)

    @functools.wraps(step)
    def train_step(params: PyTree, opt_state: PyTree, batch: PyTree) -> Any:
        args = prepare(params, opt_state, batch)
        try:
            return jitted(*args)
        except (RuntimeError, ValueError) as error:
            # JAX's messages for these name flattened argument numbers, or no
            # argument at all; say which and why.
            deleted = s.deleted_leaf(params=args[0], opt_state=args[1], batch=args[2])
            if deleted is not None:
                raise ValueError(deleted) from error
            if donate and s.shared_buffers(args[:2]):
                raise ValueError(s.TIED) from error
            raise

    # As a jitted function has: lower(...) for the HLO and the compiled step.
    train_step.lower = lambda *args: jitted.lower(*prepare(*args))  # type: ignore[attr-defined]
    return train_step
