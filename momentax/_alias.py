"""SGD with momentum in both conventions, as a short chain of Optax transforms.

Optax writes ``sgd`` as a chain: a trace, then a learning-rate scale. momentax
does the same with :func:`momentax.scale_by_momentum`, and the two conventions
are two orders of the same pieces: the learning rate after the buffer
(PyTorch, Optax) or before it (Sutskever et al., Keras).
"""

import math
from typing import Any, Literal, TypeAlias

import jax
import jax.numpy as jnp
import optax

from momentax import _hyperparams as hp
from momentax import _trees
from momentax._codegen import compiled_form
from momentax._inputs import checked_inputs
from momentax._learning_rate import scale_by_learning_rate
from momentax._momentum import scale_by_momentum


def _negate(updates: optax.Updates, params: optax.Params | None) -> optax.Updates:
    # A negation rather than optax.scale(-1): under jit XLA contracts a multiply
    # by -1 into its neighbours differently, which changes the last bit.
    del params
    return jax.tree.map(lambda g: -g, updates)


def _add_decayed_weights(weight_decay: hp.Scalar) -> optax.GradientTransformation:
    """``optax.add_decayed_weights`` with the decay cast to each leaf's dtype.

    Optax multiplies by the decay as given, so an array-valued decay (as
    ``optax.inject_hyperparams`` passes it) would promote bf16 updates to f32.
    """

    def decay(updates: optax.Updates, params: optax.Params | None) -> optax.Updates:
        if params is None:
            raise ValueError(
                f"weight_decay={weight_decay!r} needs the params: call "
                "update(updates, state, params). (optax.inject_hyperparams passes "
                "weight_decay as an array even when it is 0: pass the params, or "
                "list 'weight_decay' in its static_args.)"
            )
        _trees.check_like(updates, params, "params")
        return jax.tree.map(
            lambda g, p: g + jnp.asarray(weight_decay, g.dtype) * p.astype(g.dtype),
            updates,
            params,
        )

    return optax.stateless(decay)


Convention: TypeAlias = Literal["sutskever", "pytorch"]
CONVENTIONS: tuple[str, ...] = ("sutskever", "pytorch")


def momentum(
    learning_rate: hp.HyperParam,
    momentum: hp.HyperParam = 0.9,
    *,
    nesterov: bool = False,
    dampening: hp.Scalar = 0.0,
    weight_decay: hp.Scalar = 0.0,
    maximize: bool = False,
    convention: Convention = "sutskever",
    accumulator_dtype: Any | None = None,
    single_sweep: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""SGD with momentum, in the convention of your choice.

    Both conventions first form the gradient that is followed,
    :math:`g_t = \pm\nabla_t + \lambda p_t` (the sign is ``-`` with
    ``maximize=True``; :math:`\lambda` is the coupled weight decay, an L2
    penalty, as in ``torch.optim.SGD``). With :math:`\eta_t` the learning rate,
    :math:`\mu_t` the momentum and :math:`d` the dampening, the first step is
    never damped (:math:`c_1 = 1`, :math:`c_t = 1 - d` after).

    ``convention="sutskever"`` (Sutskever et al. 2013, Keras): the velocity
    carries the learning rate and is the update,

    .. math::

        v_t = \mu_t v_{t-1} - c_t \eta_t g_t, \qquad
        u_t = v_t \;\text{ or, Nesterov, }\; u_t = \mu_t v_t - \eta_t g_t.

    ``convention="pytorch"`` (``torch.optim.SGD``, ``optax.sgd``): the buffer
    is learning-rate free and the learning rate scales its output,

    .. math::

        b_t = \mu_t b_{t-1} + c_t g_t, \qquad
        u_t = -\eta_t b_t \;\text{ or, Nesterov, }\; u_t = -\eta_t (g_t + \mu_t b_t).

    The two agree exactly while the learning rate is constant (then
    :math:`v_t = -\eta b_t`). Under a schedule they differ: ``pytorch`` is
    ``sutskever`` run with momentum :math:`\mu_t \eta_t / \eta_{t-1}`, so a
    learning-rate drop also shrinks the step already in flight, whereas under
    ``sutskever`` the velocity built at the old rate decays at :math:`\mu`.

    Apply the updates with ``optax.apply_updates(params, updates)``. Extra
    keyword arguments of ``update`` (such as ``value=loss``) are accepted and
    ignored, as by every Optax optimizer. As with ``optax.sgd``, gradients may
    be Python numbers or integer arrays (taken at their value in the params'
    dtype, without params in the default float dtype), and trees may be empty.

    A step whose momentum is 0 (a schedule or injected value reaching 0) is a
    plain SGD step and restarts the buffer from that step's gradient,
    undamped: the rule above with :math:`c_t = 1`, as ``optax.sgd`` under
    ``optax.inject_hyperparams`` also does. ``torch.optim.SGD`` differs only
    there: it leaves its buffer untouched on such steps, and starts it at the
    first step with non-zero momentum.

    Hyperparameters that are traced (inside ``jax.jit``) or injected by
    ``optax.inject_hyperparams``, and the values returned by schedules, cannot
    be checked at construction and are used as given: for example a negative
    learning rate from a schedule ascends, and a traced non-zero dampening
    with ``nesterov=True`` is applied rather than rejected. Only Python numbers
    equal to 0 remove work (momentum 0 allocates no velocity; dampening and
    weight decay 0 skip their terms), so passing them as arrays never changes
    the state's structure. Changing a schedule's or an injected value never
    recompiles a jitted step; changing a Python number passed here does.

    Args:
        learning_rate: :math:`\eta \ge 0`: a float, a JAX scalar, a schedule of
            the step count, or a pytree prefix of the params giving per-leaf
            values (each a float or a schedule), e.g.
            ``{"k": 0.01, "b": 0.1}``.
        momentum: :math:`\mu` in [0, 1], in the same forms. The Python number 0
            gives plain SGD and allocates no velocity buffer.
        nesterov: Use Nesterov momentum. Requires momentum > 0 and dampening 0.
        dampening: :math:`d` in [0, 1], as in ``torch.optim.SGD``. Has no effect
            when momentum is 0.
        weight_decay: :math:`\lambda \ge 0`, coupled (added to the gradient
            before momentum, as in ``torch.optim.SGD``). Requires the params in
            ``update``. Keras 3's ``weight_decay`` is decoupled instead.
        maximize: Ascend the objective instead of descending it. Weight decay
            still pulls the params towards 0.
        convention: ``"sutskever"`` (lr inside the velocity) or ``"pytorch"``
            (lr outside).
        accumulator_dtype: A real floating dtype for the velocity (``None``:
            the params' dtype), e.g. ``jnp.float32`` to accumulate bf16 params
            in f32. The arithmetic runs in the wider of it and the gradient's
            dtype; updates come out in the gradient's dtype. With
            ``optax.inject_hyperparams`` pass it as a string or list it in
            ``static_args``, because a dtype class is callable and would be
            taken for a schedule.
        single_sweep: Where XLA:CPU's multi-output fusion is on (see
            :func:`uses_single_sweep`), compute the update so that the
            compiled step reads and writes each param and velocity once; no
            effect elsewhere, and the same bits either way. Pass ``False`` when
            the gradients are elementwise functions of the params computed in
            the same ``jit`` (a loss written on the params themselves, such as
            ``sum((p - t) ** 2)``): the sweep reads them twice, so XLA writes
            them to a temporary buffer instead of computing them inside the
            velocity loop, and the step is slower. Gradients that come out of
            matrix products or convolutions are in memory anyway and lose
            nothing; a small reduction (a bias's gradient over the batch) is
            written out, a buffer of the bias's size.

    Returns:
        An ``optax.GradientTransformationExtraArgs``: an ``optax.chain`` of
        a sign flip (``maximize``), the weight decay
        (``weight_decay``), the learning rate and :func:`scale_by_momentum`,
        the last two in the order of the convention. Its state is the chain's
        tuple of states; ``optax.tree.get(state, "velocity")`` finds the buffer.

    Raises:
        ValueError: A hyperparameter is outside its range, Nesterov is asked
            for without momentum or with dampening, or ``convention`` is
            unknown. At ``init``/``update``: a per-leaf hyperparameter does not
            match the params, the gradients' structure differs from the
            state's or the params', or weight decay is asked for without params.
        TypeError: An argument has the wrong type. At ``update``: a gradient
            is boolean or not a number, or the state is not one this
            optimizer's ``init`` returns.

    Examples:
        Fit ``y = 2x + 1`` with one learning rate for the slope and one for
        the intercept:

        >>> import jax
        >>> import jax.numpy as jnp
        >>> import optax
        >>> import momentax
        >>> x = jnp.array([1.0, 2.0, 3.0])
        >>> y = 2.0 * x + 1.0
        >>> def loss(params):
        ...     return jnp.mean((params["k"] * x + params["b"] - y) ** 2)
        >>> opt = momentax.momentum({"k": 0.05, "b": 0.1}, momentum=0.9)
        >>> params = {"k": jnp.array(0.0), "b": jnp.array(0.0)}
        >>> state = opt.init(params)
        >>> @jax.jit
        ... def step(params, state):
        ...     grads = jax.grad(loss)(params)
        ...     updates, state = opt.update(grads, state, params)
        ...     return optax.apply_updates(params, updates), state
        >>> for _ in range(200):
        ...     params, state = step(params, state)
        >>> print(f"k={params['k']:.3f} b={params['b']:.3f}")
        k=2.000 b=1.000

    References:
        Sutskever et al., `On the importance of initialization and momentum in
        deep learning <https://proceedings.mlr.press/v28/sutskever13.html>`_,
        2013; Nesterov, A method for solving the convex programming problem
        with convergence rate O(1/k^2), 1983; the ``torch.optim.SGD`` and
        ``keras.optimizers.SGD`` documentation.
    """
    if convention not in CONVENTIONS:
        raise ValueError(
            f"convention must be one of {', '.join(map(repr, CONVENTIONS))}; "
            f"got {convention!r}."
        )
    hp.check_flag("maximize", maximize)
    hp.check_flag("single_sweep", single_sweep)
    hp.check_static_scalar("weight_decay", weight_decay, low=0.0, high=math.inf)
    rate = scale_by_learning_rate(learning_rate)
    buffer = scale_by_momentum(
        momentum,
        nesterov=nesterov,
        dampening=dampening,
        accumulator_dtype=accumulator_dtype,
    )
    pieces = [rate, buffer] if convention == "sutskever" else [buffer, rate]
    if not hp.is_static_zero(weight_decay):
        pieces.insert(0, _add_decayed_weights(weight_decay))
    if maximize:
        pieces.insert(0, optax.stateless(_negate))
    chain = optax.chain(*pieces)
    accumulator_dtype = hp.check_dtype(
        "accumulator_dtype", accumulator_dtype, complex_ok=True
    )
    if hp.is_static_zero(momentum):
        return checked_inputs(chain)  # Plain SGD: one fused loop already.
    return checked_inputs(
        compiled_form(
            chain,
            accumulator_dtype=accumulator_dtype,
            # The update is the new velocity itself: lr inside, without Nesterov.
            fused_add=convention == "sutskever" and not nesterov,
            sweep=single_sweep,
        )
    )
