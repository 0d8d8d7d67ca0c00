r"""SGD with momentum as Optax gradient transformations.

Both public factories build the same per-leaf kernel. Writing the gradient
after sign flip and weight decay as :math:`g_t`, a step is

* scale the gradient by :math:`-\eta_t` (lr inside, ``sutskever`` only),
* accumulate :math:`b_t = \mu_t b_{t-1} + c_t g_t`, with :math:`c_1 = 1` and
  :math:`c_t = 1 - d` after, and output :math:`b_t`, or :math:`g_t + \mu_t b_t`
  with Nesterov,
* scale the output by :math:`-\eta_t` (lr outside, ``pytorch`` only).

Everything is one ``jax.tree.map``, so XLA fuses a leaf's step into a single
elementwise loop.
"""

import math
from typing import Any, Literal, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
import optax

from momentax import _hyperparams as hp
from momentax._sharding import shard_like
from momentax._state import MomentumState

Convention: TypeAlias = Literal["sutskever", "pytorch"]
CONVENTIONS: tuple[str, ...] = ("sutskever", "pytorch")


class _Settings(NamedTuple):
    """The hyperparameters of one transformation, after validation."""

    learning_rate: hp.HyperParam | None  # None: no learning rate (scale_by_momentum).
    momentum: hp.HyperParam
    nesterov: bool
    dampening: hp.Scalar
    weight_decay: hp.Scalar
    maximize: bool
    lr_inside: bool
    accumulator_dtype: jnp.dtype | None


def _check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r}.")


def _check_settings(settings: _Settings) -> None:
    hp.check_hyperparam("momentum", settings.momentum, low=0.0, high=1.0)
    for name in ("dampening", "weight_decay"):
        value = getattr(settings, name)
        if hp.is_per_leaf(value) or callable(value):
            raise TypeError(f"{name} must be a float or a JAX scalar; got {value!r}.")
    hp.check_hyperparam("dampening", settings.dampening, low=0.0, high=1.0)
    hp.check_hyperparam("weight_decay", settings.weight_decay, low=0.0, high=math.inf)
    _check_flag("nesterov", settings.nesterov)
    _check_flag("maximize", settings.maximize)
    if settings.nesterov and any(v == 0 for v in hp.known_values(settings.momentum)):
        raise ValueError(
            "nesterov=True requires momentum > 0; got momentum="
            f"{settings.momentum!r}. Use nesterov=False for plain SGD."
        )
    if settings.nesterov and any(v != 0 for v in hp.known_values(settings.dampening)):
        raise ValueError(
            f"nesterov=True requires dampening=0; got dampening={settings.dampening!r}."
        )


def _velocity_dtype(param_dtype: Any, accumulator_dtype: jnp.dtype | None) -> Any:
    """The dtype of a leaf's velocity; complex params keep a complex velocity."""
    if accumulator_dtype is None:
        return param_dtype
    if jnp.issubdtype(param_dtype, jnp.complexfloating):
        return jnp.complex128 if accumulator_dtype == jnp.float64 else jnp.complex64
    return accumulator_dtype


def _wider_dtype(a: Any, b: Any) -> Any:
    """The dtype both ``a`` and ``b`` convert to, even under strict promotion."""
    if a == b:
        return a
    with jax.numpy_dtype_promotion("standard"):
        return jnp.promote_types(a, b)


def _check_like(updates: Any, other: Any, what: str) -> None:
    """Checks that ``updates`` has the tree structure and shapes of ``other``."""
    updates_structure = jax.tree.structure(updates)
    other_structure = jax.tree.structure(other)
    if updates_structure != other_structure:  # type: ignore[operator]
        raise ValueError(
            f"The updates do not have the structure of the {what}.\n"
            f"  updates: {updates_structure}\n  {what}: {other_structure}"
        )
    mismatches = jax.tree.leaves(
        jax.tree_util.tree_map_with_path(
            lambda path, u, o: (
                None
                if jnp.shape(u) == jnp.shape(o)
                else f"  {jax.tree_util.keystr(path)}: updates {jnp.shape(u)}, "
                f"{what} {jnp.shape(o)}"
            ),
            updates,
            other,
        )
    )
    if mismatches:
        raise ValueError(
            f"The updates do not have the shapes of the {what}:\n"
            + "\n".join(mismatches)
        )


def _transformation(settings: _Settings) -> optax.GradientTransformation:
    """Builds the init and update functions for validated ``settings``."""
    has_velocity = not hp.is_static_zero(settings.momentum)
    has_lr = settings.learning_rate is not None
    damped = not hp.is_static_zero(settings.dampening)
    decayed = not hp.is_static_zero(settings.weight_decay)

    def check_per_leaf(tree: Any, what: str) -> None:
        if has_lr:
            hp.check_prefix("learning_rate", settings.learning_rate, tree, what)
        hp.check_prefix("momentum", settings.momentum, tree, what)

    def init_fn(params: optax.Params) -> MomentumState:
        check_per_leaf(params, "params")
        velocity = None
        if has_velocity:
            # Sharded like its param even under jit (see momentax._sharding).
            velocity = jax.tree.map(
                lambda p: shard_like(
                    jnp.zeros_like(
                        p, dtype=_velocity_dtype(p.dtype, settings.accumulator_dtype)
                    ),
                    p,
                ),
                params,
            )
        return MomentumState(count=jnp.zeros([], jnp.int32), velocity=velocity)

    def update_fn(
        updates: optax.Updates,
        state: MomentumState,
        params: optax.Params | None = None,
    ) -> tuple[optax.Updates, MomentumState]:
        if has_velocity:
            _check_like(updates, state.velocity, "velocity")
        if params is not None:
            _check_like(updates, params, "params")
        if decayed and params is None:
            raise ValueError(
                f"weight_decay={settings.weight_decay!r} needs the params: call "
                "update(updates, state, params). (optax.inject_hyperparams passes "
                "weight_decay as an array even when it is 0: pass the params, or "
                "list 'weight_decay' in its static_args.)"
            )
        check_per_leaf(updates, "updates")
        count = state.count
        # Ignored stand-ins keep one tree.map signature whatever is present.
        velocity = state.velocity if has_velocity else updates
        learning_rates = (
            hp.resolve("learning_rate", settings.learning_rate, count, updates)
            if has_lr
            else updates
        )
        momenta = (
            hp.resolve("momentum", settings.momentum, count, updates)
            if has_velocity
            else updates
        )
        params_or_updates = params if decayed else updates

        def leaf_step(
            g: jax.Array, v: jax.Array, p: jax.Array, lr: Any, mu: Any
        ) -> tuple[jax.Array, jax.Array | None]:
            dtype = _wider_dtype(g.dtype, v.dtype) if has_velocity else g.dtype
            x = g.astype(dtype)
            if settings.maximize:
                x = -x
            if decayed:
                x = x + jnp.asarray(settings.weight_decay, dtype) * p.astype(dtype)
            if has_lr and settings.lr_inside:
                x = -jnp.asarray(lr, dtype) * x
            new_v = None
            if has_velocity:
                mu = jnp.asarray(mu, dtype)
                if damped:
                    # As in torch.optim.SGD, the first step is undamped (b_1 = g_1)
                    # and dampening does nothing without momentum.
                    keep = 1 - jnp.asarray(settings.dampening, dtype)
                    undamped = (count == 0) | (mu == 0)
                    x_in = jnp.where(undamped, jnp.ones_like(keep), keep) * x
                else:
                    x_in = x
                new_v = mu * v.astype(dtype) + x_in
                x = x + mu * new_v if settings.nesterov else new_v
                new_v = shard_like(new_v.astype(v.dtype), v)
            if has_lr and not settings.lr_inside:
                x = -jnp.asarray(lr, dtype) * x
            return x.astype(g.dtype), new_v

        steps = jax.tree.map(
            leaf_step, updates, velocity, params_or_updates, learning_rates, momenta
        )
        new_updates = jax.tree.map(lambda _, step: step[0], updates, steps)
        new_velocity = (
            jax.tree.map(lambda _, step: step[1], updates, steps)
            if has_velocity
            else None
        )
        return new_updates, MomentumState(
            count=optax.safe_increment(count), velocity=new_velocity
        )

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_momentum(
    momentum: hp.HyperParam = 0.9,
    *,
    nesterov: bool = False,
    dampening: hp.Scalar = 0.0,
    accumulator_dtype: Any | None = None,
) -> optax.GradientTransformation:
    r"""Accumulates gradients into a momentum buffer, without a learning rate.

    The building block for chains: it follows ``torch.optim.SGD``'s buffer
    (and ``optax.trace`` when ``dampening=0``), with :math:`\mu_t` the momentum
    and :math:`d` the dampening:

    .. math::

        b_1 = g_1, \qquad b_t = \mu_t b_{t-1} + (1 - d)\, g_t \quad (t > 1),

    and outputs :math:`b_t`, or :math:`g_t + \mu_t b_t` with ``nesterov=True``.
    Follow it with ``optax.scale_by_learning_rate`` to get an optimizer.

    Args:
        momentum: :math:`\mu` in [0, 1]: a float, a JAX scalar, a schedule of
            the step count, or a pytree prefix of the params giving per-leaf
            values. The Python number 0 makes this the identity and allocates
            no buffer.
        nesterov: Output the Nesterov look-ahead :math:`g_t + \mu_t b_t`.
            Requires momentum > 0 and dampening 0.
        dampening: :math:`d` in [0, 1], the fraction of each gradient after the
            first that is left out of the buffer.
        accumulator_dtype: A real floating dtype for the buffer (``None``: the
            params' dtype). Complex params get the complex dtype of that
            precision.

    Returns:
        An ``optax.GradientTransformation`` whose state is a
        :class:`MomentumState`.

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
    settings = _Settings(
        learning_rate=None,
        momentum=momentum,
        nesterov=nesterov,
        dampening=dampening,
        weight_decay=0.0,
        maximize=False,
        lr_inside=False,
        accumulator_dtype=hp.check_dtype("accumulator_dtype", accumulator_dtype),
    )
    _check_settings(settings)
    return _transformation(settings)


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
) -> optax.GradientTransformation:
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

    Apply the updates with ``optax.apply_updates(params, updates)``.

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

    Returns:
        An ``optax.GradientTransformation`` whose state is a
        :class:`MomentumState`.

    Raises:
        ValueError: A hyperparameter is outside its range, Nesterov is asked
            for without momentum or with dampening, or ``convention`` is
            unknown. At ``init``/``update``: a per-leaf hyperparameter does not
            match the params, the gradients' structure differs from the
            state's, or weight decay is asked for without params.
        TypeError: An argument has the wrong type.

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
    hp.check_hyperparam("learning_rate", learning_rate, low=0.0, high=math.inf)
    settings = _Settings(
        learning_rate=learning_rate,
        momentum=momentum,
        nesterov=nesterov,
        dampening=dampening,
        weight_decay=weight_decay,
        maximize=maximize,
        lr_inside=convention == "sutskever",
        accumulator_dtype=hp.check_dtype("accumulator_dtype", accumulator_dtype),
    )
    _check_settings(settings)
    return _transformation(settings)
