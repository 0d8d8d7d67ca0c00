"""Training utilities: a donated, jitted train step and a ``lax.scan`` fit loop."""

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from momentax import MomentumState
from momentax import hyperparams as hp
from momentax.training._packing import unpacked
from momentax.training._placement import Placement

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]
Metric = Callable[["StepInfo"], PyTree]


class StepInfo(NamedTuple):
    """Holds what one training step saw and produced, for recording.

    Attributes:
        params: The params the loss and gradients were evaluated at (before the
            step), as the step received them (a :class:`momentax.training.Packed` stays
            packed: call ``unpack()``).
        loss: The loss at ``params``.
        grads: The gradients of the loss at ``params``.
        updates: The optimizer's updates, as added to ``params``.
        opt_state: The optimizer state after the step.
    """

    params: PyTree
    loss: jax.Array
    grads: PyTree
    updates: PyTree
    opt_state: PyTree


class FitResult(NamedTuple):
    """Holds the outcome of :func:`fit`.

    Attributes:
        params: The params after the last step.
        opt_state: The optimizer state after the last step.
        history: A dict from each recorded name to its per-step values, stacked
            along a new leading axis of length ``num_steps`` (on the device).
    """

    params: PyTree
    opt_state: PyTree
    history: dict[str, PyTree]


def get_velocity(opt_state: PyTree) -> PyTree:
    """Returns the velocity held in an optimizer state.

    Finds the one :class:`MomentumState` (or Optax ``TraceState``, as made by
    ``optax.sgd(..., momentum=...)``) anywhere inside ``opt_state``, so it works
    through ``optax.chain``, ``inject_hyperparams``, ``MultiSteps`` and the other
    wrappers, and returns its velocity: the state itself, not a copy or a
    recomputation. Plain SGD (``momentum=0``) holds no velocity and gives None.

    Args:
        opt_state: An optimizer state.

    Returns:
        The velocity pytree (None when the optimizer keeps no buffer).

    Raises:
        ValueError: If ``opt_state`` holds no momentum state, or more than one.

    Examples:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> import momentax
        >>> opt = optax.chain(optax.clip(1.0), momentax.momentum(0.1, momentum=0.9))
        >>> state = opt.init({"w": jnp.zeros(2)})
        >>> momentax.training.get_velocity(state)
        {'w': Array([0., 0.], dtype=float32)}
    """
    kinds = (MomentumState, optax.TraceState)
    found = [
        node
        for node in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, kinds))
        if isinstance(node, kinds)
    ]
    if len(found) != 1:
        raise ValueError(
            "get_velocity needs exactly one momentum state (momentax.MomentumState "
            f"or optax.TraceState) in opt_state; found {len(found)}."
        )
    (node,) = found
    return node.velocity if isinstance(node, MomentumState) else node.trace


RECORDABLE: dict[str, Metric] = {
    "loss": operator.attrgetter("loss"),
    "params": operator.attrgetter("params"),
    "grads": operator.attrgetter("grads"),
    "updates": operator.attrgetter("updates"),
    "velocity": lambda info: get_velocity(info.opt_state),
}
"""The names :func:`make_train_step` and :func:`fit` can record, and what each is."""


def _recorders(
    record: Sequence[str] | None, metrics: Mapping[str, Metric] | None
) -> tuple[tuple[str, Metric], ...]:
    """Validates ``record`` and ``metrics``; returns (name, function) pairs."""
    if isinstance(record, str):
        raise TypeError(
            f"record must be a sequence of names; got the string {record!r}."
        )
    names = tuple(record or ())
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"record names {repeated} are given more than once.")
    unknown = [name for name in names if name not in RECORDABLE]
    if unknown:
        raise ValueError(
            f"record names {unknown} are not recordable; choose from "
            f"{list(RECORDABLE)} or compute them with metrics="
            "{name: function(StepInfo)}."
        )
    metrics = dict(metrics or {})
    clash = sorted(set(names) & set(metrics))
    if clash:
        raise ValueError(f"metrics {clash} clash with names in record.")
    for name, fn in metrics.items():
        if not callable(fn):
            raise TypeError(f"metrics[{name!r}] must be a function of StepInfo.")
    return tuple((name, RECORDABLE[name]) for name in names) + tuple(metrics.items())


def _check_hashable(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    recorders: tuple[tuple[str, Metric], ...],
) -> None:
    """The compiled loop of :func:`fit` is cached on these, so they must hash."""
    named = [("loss_fn", loss_fn), ("optimizer", optimizer)]
    named += [(f"metrics[{name!r}]", fn) for name, fn in recorders]
    for name, value in named:
        try:
            hash(value)
        except TypeError:
            raise TypeError(
                f"{name} must be hashable (a function, or an object with __hash__): "
                f"fit caches its compiled loop on it; got {type(value).__name__}."
            ) from None


def _check_training(loss_fn: Any, optimizer: Any) -> None:
    if not callable(loss_fn):
        raise TypeError(
            f"loss_fn must be a function (params, batch) -> loss; got {loss_fn!r}."
        )
    if not (
        callable(getattr(optimizer, "init", None))
        and callable(getattr(optimizer, "update", None))
    ):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation; got {optimizer!r}."
        )


def _step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    recorders: tuple[tuple[str, Metric], ...],
    placement: Placement | None,
    params: PyTree,
    opt_state: PyTree,
    batch: PyTree,
) -> tuple[PyTree, PyTree, dict[str, PyTree]]:
    """One gradient step; returns the new params and state and the records."""
    loss, grads = jax.value_and_grad(
        lambda params, batch: loss_fn(unpacked(params), batch)
    )(params, batch)
    updates, new_state = optimizer.update(grads, opt_state, params)
    info = StepInfo(params, loss, grads, updates, new_state)
    records = {name: fn(info) for name, fn in recorders}
    new_params = optax.apply_updates(params, updates)
    if placement is not None:
        new_params, new_state = placement.constrain(optimizer, new_params, new_state)
    return new_params, new_state, records


def _check_placement(placement: Any) -> None:
    if placement is not None and not isinstance(placement, Placement):
        raise TypeError(
            "placement must be a momentax.training.Placement or None; got "
            f"{placement!r}."
        )


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    record: Sequence[str] | None = None,
    metrics: Mapping[str, Metric] | None = None,
    donate: bool = True,
    placement: Placement | None = None,
) -> Callable[[PyTree, PyTree, PyTree], tuple[PyTree, PyTree, Any]]:
    r"""Returns a jit-compiled training step for ``loss_fn`` and ``optimizer``.

    The step computes the loss and its gradients at ``params``, asks the optimizer
    for updates and applies them:

    .. math::
        g = \nabla_\theta \ell(\theta, \text{batch}), \quad
        (u, s') = \text{update}(g, s, \theta), \quad \theta' = \theta + u.

    With ``donate=True`` (the default) the params and optimizer state passed in are
    donated: XLA writes the new values into their buffers instead of allocating
    new ones, which saves memory traffic and memory. Donated arrays must not be
    used after the call; use the returned ones. They must also be distinct
    buffers: tied params (one array under two names) need ``donate=False``.

    The params may be a :class:`momentax.training.Packed` (see
    :func:`momentax.training.pack`):
    ``loss_fn`` still receives the unpacked tree, while the step passes, updates
    and returns a few flat buffers. That makes a call over many small leaves
    several times cheaper; initialise the optimizer on the packed params.

    The step compiles once per input structure, shape and dtype; a new batch of the
    same shape does not recompile. (Params made from Python scalars are weakly
    typed and the returned ones are not, so such params trace once more on the
    second call.)

    Args:
        loss_fn: ``loss_fn(params, batch)``, returning a scalar loss.
        optimizer: Any Optax ``GradientTransformation``.
        record: Names from :data:`RECORDABLE` to return per step instead of the
            loss alone: ``"loss"``, ``"params"`` (before the step), ``"grads"``,
            ``"updates"`` and ``"velocity"`` (the optimizer state's, after the step).
        metrics: Extra records: a dict from a name to a function of
            :class:`StepInfo` (for example a test loss).
        donate: Whether to donate the params and optimizer state buffers.
        placement: Where params, state and batches live on a device mesh (see
            :class:`momentax.training.Placement`), or None for where they already are.
            The step then places its inputs first (free for inputs already
            placed, as the returned ones are: create the state with
            ``placement.init``), and pins the returned params and state to
            their placement.

    Returns:
        ``step(params, opt_state, batch) -> (params, opt_state, out)``, where
        ``out`` is the loss, or a dict of the records when ``record`` or
        ``metrics`` is given.

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
        ...     params, state, loss = step(params, state, batch)
        >>> print(f"w = {params['w']:.3f}")
        w = 3.000
    """
    _check_training(loss_fn, optimizer)
    _check_placement(placement)
    recorders = _recorders(record, metrics)
    returns_records = record is not None or metrics is not None

    def step(params: PyTree, opt_state: PyTree, batch: PyTree) -> Any:
        params, opt_state, records = _step(
            loss_fn,
            optimizer,
            recorders if returns_records else (("loss", RECORDABLE["loss"]),),
            placement,
            params,
            opt_state,
            batch,
        )
        return params, opt_state, records if returns_records else records["loss"]

    jitted = jax.jit(step, donate_argnums=(0, 1) if donate else ())
    if placement is None:
        return jitted

    def place(params: PyTree, opt_state: PyTree, batch: PyTree) -> tuple[Any, ...]:
        return _place(placement, optimizer, params, opt_state, batch, stacked=False)

    @functools.wraps(step)
    def placed_step(params: PyTree, opt_state: PyTree, batch: PyTree) -> Any:
        return jitted(*place(params, opt_state, batch))

    # As a jitted function has: lower(...) for the HLO and the compiled step.
    placed_step.lower = lambda *args: jitted.lower(*place(*args))  # type: ignore[attr-defined]
    return placed_step


def _place(
    placement: Placement,
    optimizer: optax.GradientTransformation,
    params: PyTree,
    opt_state: PyTree,
    batch: PyTree,
    *,
    stacked: bool,
) -> tuple[PyTree, PyTree, PyTree]:
    """Places params, state (created in place when None) and batch on the mesh."""
    params = placement.put_params(params)
    if opt_state is None:
        opt_state = placement.init(optimizer, params)
    else:
        opt_state = placement.put_state(optimizer, params, opt_state)
    return params, opt_state, placement.put_batch(batch, stacked=stacked)


def _batch_at(batches: PyTree, index: jax.Array, num_batches: int | None) -> PyTree:
    if num_batches is None:
        return batches
    return jax.tree.map(lambda b: b[index % num_batches], batches)


def _scan_chunk(
    params: PyTree,
    opt_state: PyTree,
    data: PyTree,
    start: jax.Array,
    *,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    recorders: tuple[tuple[str, Metric], ...],
    placement: Placement | None,
    length: int,
    num_batches: int | None,
) -> tuple[PyTree, PyTree, dict[str, PyTree]]:
    """Runs ``length`` steps from step index ``start`` in one ``lax.scan``."""

    def body(carry: tuple[PyTree, PyTree], index: jax.Array) -> Any:
        params, opt_state = carry
        batch = _batch_at(data, index, num_batches)
        params, opt_state, records = _step(
            loss_fn, optimizer, recorders, placement, params, opt_state, batch
        )
        return (params, opt_state), records

    indices = start + jnp.arange(length, dtype=jnp.int32)
    (params, opt_state), history = jax.lax.scan(body, (params, opt_state), indices)
    return params, opt_state, history


_STATIC = ("loss_fn", "optimizer", "recorders", "placement", "length", "num_batches")
# Module-level so that repeated fits with the same loss, optimizer and chunk
# length reuse one compilation.
_SCAN = {
    True: jax.jit(_scan_chunk, static_argnames=_STATIC, donate_argnums=(0, 1)),
    False: jax.jit(_scan_chunk, static_argnames=_STATIC),
}


def _check_no_shared_buffers(tree: PyTree) -> None:
    """Donation fails on a buffer passed twice, with a cryptic XLA error."""
    seen: set[int] = set()
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array):
            if id(leaf) in seen:
                raise ValueError(
                    "params and opt_state share an array (tied params, or a state "
                    "holding the params); donation needs distinct buffers: pass "
                    "donate=False, or copy the shared leaf."
                )
            seen.add(id(leaf))


def _num_batches(batches: PyTree) -> int:
    sizes = {
        jnp.shape(leaf)[0] if jnp.ndim(leaf) else 0 for leaf in jax.tree.leaves(batches)
    }
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(
            "batches must be a pytree of arrays stacked along a leading batch axis "
            f"of one common length >= 1; got leading lengths {sorted(sizes)} "
            "(0 means a scalar leaf)."
        )
    return sizes.pop()


def fit(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    params: PyTree,
    *,
    data: PyTree = None,
    batches: PyTree = None,
    num_steps: int | None = None,
    opt_state: PyTree = None,
    steps_per_call: int | None = None,
    record: Sequence[str] = ("loss",),
    metrics: Mapping[str, Metric] | None = None,
    donate: bool = True,
    callback: Callable[[int, int], None] | None = None,
    placement: Placement | None = None,
    start_step: int = 0,
) -> FitResult:
    r"""Trains for ``num_steps`` steps, many steps per compiled call.

    Each step is the step of :func:`make_train_step`. The steps run inside
    ``jax.lax.scan``, ``steps_per_call`` of them per compiled call, so the params,
    the optimizer state and the history stay on the device from the first step
    to the last; the Python loop only runs once per call.

    Give either ``data``, one batch used by every step (full-batch training, one
    step per epoch), or ``batches``, a pytree whose leaves are stacked along a
    leading axis of ``B`` batches: step ``i`` uses batch ``i mod B``, so
    ``num_steps = epochs * B`` runs ``epochs`` passes (default: one pass).

    Compilation: the first call compiles a scan of ``steps_per_call`` steps; it
    is reused by later calls and later fits with the same ``loss_fn``,
    ``optimizer`` object, records, metric functions and shapes. When
    ``steps_per_call`` does not divide ``num_steps``, the shorter last call
    compiles once more. A new optimizer object (for example a new learning rate)
    compiles anew; to sweep hyperparameters without recompiling, build the
    optimizer with ``optax.inject_hyperparams`` and set the values in its state.

    Args:
        loss_fn: ``loss_fn(params, batch)``, returning a scalar loss.
        optimizer: Any Optax ``GradientTransformation``.
        params: The initial params, a pytree or a :class:`momentax.training.Packed`
            (``loss_fn`` then receives the unpacked tree, and the returned
            params and state stay packed). Donated when ``donate`` is True: do
            not use them after the call.
        data: The batch for full-batch training.
        batches: A stack of batches, cycled through.
        num_steps: Number of steps; required with ``data``.
        opt_state: The initial optimizer state (default ``optimizer.init(params)``);
            donated when ``donate`` is True.
        steps_per_call: Steps per compiled call (default: all of them). Smaller
            values give ``callback`` more chances to run; each call costs one
            dispatch.
        record: Names from :data:`RECORDABLE` to keep per step.
        metrics: Extra per-step records: a dict from a name to a function of
            :class:`StepInfo`, traced into the compiled loop.
        donate: Whether to donate the params and optimizer state buffers (they
            must not share arrays; this is checked).
        callback: Called as ``callback(steps_done, num_steps)`` after each call,
            once its results are ready (for progress reports).
        placement: Where params, state and batches live on a device mesh (see
            :class:`momentax.training.Placement`), or None to train where they are. With
            a placement, ``fit`` places the params, the state (created in
            place when ``opt_state`` is None) and the data, and every step
            keeps the params and state on their placement.
        start_step: The index of the first step, for resuming a run: step ``i``
            uses batch ``i mod B``. (Schedules run on the step count kept in
            ``opt_state``, so a restored state resumes them.)

    Returns:
        A :class:`FitResult` with the final params and state and the history.

    Examples:
        >>> import jax.numpy as jnp
        >>> import momentax
        >>> def loss_fn(params, batch):
        ...     x, y = batch
        ...     return jnp.mean((params["k"] * x + params["b"] - y) ** 2)
        >>> x = jnp.array([1.0, 2.0, 3.0])
        >>> result = momentax.training.fit(
        ...     loss_fn,
        ...     momentax.momentum(0.1, momentum=0.5),
        ...     {"k": jnp.array(0.0), "b": jnp.array(0.0)},
        ...     data=(x, 2.0 * x),
        ...     num_steps=200,
        ...     record=("loss", "velocity"),
        ... )
        >>> result.history["loss"].shape, result.history["velocity"]["k"].shape
        ((200,), (200,))
        >>> print(f"k = {result.params['k']:.3f}, b = {result.params['b']:.3f}")
        k = 2.000, b = 0.000
    """
    _check_training(loss_fn, optimizer)
    _check_placement(placement)
    recorders = _recorders(record, metrics)
    _check_hashable(loss_fn, optimizer, recorders)
    if (data is None) == (batches is None):
        raise ValueError(
            "fit needs exactly one of data= (one batch) or batches= (a stack)."
        )
    num_batches = None if batches is None else _num_batches(batches)
    if num_steps is None:
        if num_batches is None:
            raise ValueError("fit with data= needs num_steps, the number of steps.")
        num_steps = num_batches
    num_steps = hp.check_integer("num_steps", num_steps, low=1)
    start_step = hp.check_integer("start_step", start_step, low=0)
    per_call = num_steps
    if steps_per_call is not None:
        per_call = hp.check_integer("steps_per_call", steps_per_call, low=1)
    source = data if batches is None else batches
    if placement is not None:
        params, opt_state, source = _place(
            placement, optimizer, params, opt_state, source, stacked=batches is not None
        )
    elif opt_state is None:
        opt_state = optimizer.init(params)
    if donate:
        _check_no_shared_buffers((params, opt_state))

    run = functools.partial(
        _SCAN[bool(donate)],
        loss_fn=loss_fn,
        optimizer=optimizer,
        recorders=recorders,
        placement=placement,
        num_batches=num_batches,
    )
    chunks = []
    for start in range(0, num_steps, per_call):
        length = min(per_call, num_steps - start)
        params, opt_state, history = run(
            params, opt_state, source, jnp.int32(start_step + start), length=length
        )
        chunks.append(history)
        if callback is not None:
            jax.block_until_ready((params, opt_state))  # type: ignore[no-untyped-call]
            callback(start + length, num_steps)
    history = chunks[0] if len(chunks) == 1 else _concatenate(chunks)
    return FitResult(params, opt_state, history)


def _concatenate(chunks: list[dict[str, PyTree]]) -> dict[str, PyTree]:
    joined: dict[str, PyTree] = jax.tree.map(lambda *xs: jnp.concatenate(xs), *chunks)
    return joined
