"""``fit``: many training steps per compiled ``lax.scan`` call, failing safely."""

import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from momentax import hyperparams as hp
from momentax.training import _failsafe as failsafe
from momentax.training import _fit_checkpoint as periodic
from momentax.training import _step as s
from momentax.training._cache import WeakCache
from momentax.training._checkpoint import CheckpointManager
from momentax.training._placement import Placement

PyTree = Any


class FitResult(NamedTuple):
    """Holds the outcome of :func:`fit`, or of the steps it completed.

    Attributes:
        params: The params after the last completed step; None on the
            ``fit_result`` of an error that consumed them (see :func:`fit`).
        opt_state: The optimizer state after the last completed step; None
            where ``params`` is.
        history: A dict from each recorded name to its per-step values, stacked
            along a new leading axis, one entry per step this call completed
            (on the device; an empty dict when it completed none).
        step: The index of the next step: ``start_step`` plus the steps
            completed. Pass it as ``start_step`` to resume.
    """

    params: PyTree
    opt_state: PyTree
    history: dict[str, PyTree]
    step: int


class _Loop:
    """One compiled scan; sees the user's objects only while it is called."""

    def __init__(self, donate: bool):
        self._local = threading.local()  # Two threads may trace at once.
        self._jitted = jax.jit(
            self._scan,
            static_argnames=("length", "num_batches"),
            donate_argnums=(0, 1) if donate else (),
        )

    def _scan(
        self,
        params: PyTree,
        opt_state: PyTree,
        data: PyTree,
        index: jax.Array,
        *,
        length: int,
        num_batches: int | None,
    ) -> tuple[PyTree, PyTree, dict[str, PyTree]]:
        # Set by __call__ around the call, the only time a trace happens.
        loss_fn, optimizer, pairs, placement = self._local.objects

        def body(carry: tuple[PyTree, PyTree, jax.Array], _: None) -> Any:
            params, opt_state, index = carry
            batch = data
            if num_batches is not None:
                batch = jax.tree.map(lambda b: b[index], data)
                # Carry the batch index, not the step: it never exceeds the
                # number of batches, so no int32 step count can wrap.
                index = jnp.where(index + 1 == num_batches, 0, index + 1)
            params, opt_state, records = s.step(
                loss_fn, optimizer, pairs, placement, params, opt_state, batch
            )
            return (params, opt_state, index), records

        carry = (params, opt_state, index)
        (params, opt_state, _), history = jax.lax.scan(body, carry, length=length)
        return params, opt_state, history

    def __call__(self, objects: tuple[Any, ...], *args: Any, **kwargs: Any) -> Any:
        self._local.objects = objects
        try:
            return self._jitted(*args, **kwargs)
        finally:
            del self._local.objects


_MAX_STEPS_PER_CALL = 2**31 - 1
_LOOPS: dict[bool, WeakCache[_Loop]] = {True: WeakCache(), False: WeakCache()}


def _num_batches(data: PyTree) -> int:
    sizes = {
        jnp.shape(leaf)[0] if jnp.ndim(leaf) else 0 for leaf in jax.tree.leaves(data)
    }
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(
            "data with stacked=True must be a pytree of arrays stacked along a "
            f"leading axis of one common length >= 1; got leading lengths "
            f"{sorted(sizes)} (0 means a scalar leaf)."
        )
    return sizes.pop()


def _join(chunks: list[dict[str, PyTree]]) -> dict[str, PyTree]:
    if len(chunks) <= 1:
        return chunks[0] if chunks else {}
    joined: dict[str, PyTree] = jax.tree.map(lambda *xs: jnp.concatenate(xs), *chunks)
    return joined


def fit(
    loss_fn: s.LossFn,
    optimizer: optax.GradientTransformation,
    params: PyTree,
    data: PyTree,
    *,
    num_steps: int | None = None,
    stacked: bool = False,
    opt_state: PyTree = None,
    record: s.Record = ("loss",),
    steps_per_call: int | None = None,
    donate: bool = True,
    callback: Callable[[int, int], None] | None = None,
    placement: Placement | None = None,
    start_step: int = 0,
    checkpoint: CheckpointManager | None = None,
    checkpoint_every: int | None = None,
) -> FitResult:
    r"""Trains for ``num_steps`` steps, many steps per compiled call.

    Each step is the step of :func:`make_train_step`. The steps run inside
    ``jax.lax.scan``, ``steps_per_call`` of them per compiled call, so params,
    optimizer state and history stay on the device from the first step to the
    last; the Python loop only runs once per call.

    ``data`` is one batch that every step uses (full-batch training), or with
    ``stacked=True`` a pytree whose leaves stack ``B`` batches along a leading
    axis: step ``i`` uses batch ``i mod B``, so ``num_steps = epochs * B`` runs
    ``epochs`` passes (default: one pass).

    Donation: by default the params and ``opt_state`` passed in are donated, so
    XLA writes the results into their memory and the arrays passed in are
    deleted: use the returned ones. Whatever else holds those arrays loses them
    too, such as a Flax NNX module split with ``nnx.split`` or an Equinox
    module split with ``eqx.partition``: using it raises ``RuntimeError: Array
    has been deleted`` until the returned params are put back
    (``nnx.update(model, result.params)``, ``eqx.combine(result.params,
    static)``). Pass ``donate=False`` to keep the inputs alive.

    Compilation: the first call compiles a scan of ``steps_per_call`` steps; later
    calls and later fits reuse it while ``loss_fn``, the optimizer, the record
    functions and ``placement`` are the same objects and the shapes agree (a
    shorter last call compiles once more). The cache holds these objects weakly:
    dropping them frees them and their compilation. To sweep hyperparameters
    without recompiling, use ``optax.inject_hyperparams`` and set them in the
    state.

    Checkpoints: with ``checkpoint=`` (a
    :class:`~momentax.training.CheckpointManager`), ``fit`` saves
    ``{"params": ..., "opt_state": ...}`` as step ``start_step + steps done``
    at every multiple of ``checkpoint_every`` and at the end (compiled calls
    end there), in the background while training goes on, and waits for the
    last save before it returns. Called again with a manager whose latest step
    is past ``start_step``, it restores that step into the given params and
    state and runs the steps left to ``start_step + num_steps``, bit for bit
    as the run that never stopped: a killed run loses at most
    ``checkpoint_every`` steps. ``history`` then holds the steps this call ran.

    Failing safely: the arguments, the callback's signature and ``opt_state``
    (against ``optimizer.init(params)``) are checked before anything is donated.
    If anything raises later, a callback or Ctrl-C included, the exception
    propagates with a ``fit_result`` attribute: the :class:`FitResult` of the
    completed steps, from which the run resumes bit for bit. An error inside a
    compiled call (a device error, a failing ``jax.debug.callback``) has
    already consumed that call's donated params and state: ``fit_result``
    then has ``params=None`` and ``opt_state=None``, and the run resumes from
    the latest checkpoint (keeping a copy of them would double their memory;
    ``donate=False`` does that).

    Args:
        loss_fn: ``loss_fn(params, batch)``, returning a scalar loss.
        optimizer: Any Optax ``GradientTransformation``.
        params: The initial params, a pytree or a :class:`momentax.training.Packed`
            (``loss_fn`` then receives the unpacked tree). Donated when
            ``donate`` is True: use the returned ones.
        data: One batch, or a stack of batches (``stacked=True``).
        num_steps: Number of steps; required unless ``stacked``. Above
            :math:`2^{31} - 1` steps, pass ``steps_per_call``: one compiled
            call runs at most that many.
        stacked: Whether ``data`` is a stack of batches to cycle through.
        opt_state: The initial optimizer state (default ``optimizer.init(params)``);
            donated when ``donate`` is True.
        record: What to keep per step: names from :data:`RECORDABLE`, or a dict
            from a name to a function of :class:`StepInfo` (traced into the loop;
            define it once so that later fits reuse the compilation).
        steps_per_call: Steps per compiled call (default: all of them), at most
            :math:`2^{31} - 1`. Smaller values give ``callback`` more chances
            to run.
        donate: Whether to donate the params and optimizer state buffers (they
            must not share arrays; this is checked).
        callback: Called as ``callback(steps_done, num_steps)`` after each call,
            once its results are ready (for progress reports).
        placement: Where params, state and data live on a device mesh (see
            :class:`momentax.training.Placement`), or None to train where they
            are; every step keeps params and state on their placement.
        start_step: The index of the first step, for resuming: step ``i`` uses
            batch ``i mod B``. Any size (Python integers do not wrap).
        checkpoint: A :class:`~momentax.training.CheckpointManager` to save to
            and resume from, or None.
        checkpoint_every: Save every this many steps (at the multiples of it);
            None saves at the end only. Needs ``checkpoint``.

    Returns:
        A :class:`FitResult` with the final params and state, history and step.

    Raises:
        TypeError: For arguments of the wrong kind or a ``callback`` that does not
            take two arguments.
        ValueError: For bad counts, ragged stacked data, an ``opt_state`` of
            another optimizer or other params, tied params while donating,
            arrays deleted by an earlier donated call, ``checkpoint_every``
            without ``checkpoint``, or a ``checkpoint`` whose latest step is
            past ``start_step + num_steps`` or does not fit ``params`` and
            ``opt_state``.

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
        ...     (x, 2.0 * x),
        ...     num_steps=200,
        ...     record=("loss", "velocity"),
        ... )
        >>> result.history["loss"].shape, result.history["velocity"]["k"].shape
        ((200,), (200,))
        >>> print(f"k = {result.params['k']:.3f}, b = {result.params['b']:.3f}")
        k = 2.000, b = 0.000
        >>> result.step
        200
    """
    s.check_training(loss_fn, optimizer, placement)
    pairs = s.recorders(record)
    failsafe.check_callback(callback)
    every = periodic.check(checkpoint, checkpoint_every)
    if not isinstance(stacked, bool):
        raise TypeError(f"stacked must be True or False; got {stacked!r}.")
    num_batches = _num_batches(data) if stacked else None
    if num_steps is None:
        if num_batches is None:
            raise ValueError(
                "fit needs num_steps with one batch (or pass stacked=True for a "
                "stack of batches, one pass by default)."
            )
        num_steps = num_batches
    num_steps = hp.check_integer("num_steps", num_steps, low=1)
    start_step = hp.check_integer("start_step", start_step, low=0)
    per_call = num_steps
    if steps_per_call is not None:
        per_call = hp.check_integer("steps_per_call", steps_per_call, low=1)
    if per_call > _MAX_STEPS_PER_CALL:
        name = "num_steps" if steps_per_call is None else "steps_per_call"
        raise ValueError(
            f"{name}={per_call} is more steps than one compiled call can run "
            f"({_MAX_STEPS_PER_CALL}: lax.scan counts them in int32); pass "
            "steps_per_call (e.g. steps_per_call=1_000_000) to run them in "
            "several calls."
        )
    names = [name for name, _ in pairs]
    deleted = s.deleted_leaf(params=params, opt_state=opt_state, data=data)
    if deleted is not None:
        raise ValueError(deleted)
    created = opt_state is None
    if not created:  # Before placing it, which reads its structure.
        s.check_state(optimizer, params, opt_state, names)
    if placement is not None:
        params, opt_state, data = s.place(
            placement, optimizer, params, opt_state, data, stacked=stacked
        )
    elif created:
        opt_state = optimizer.init(params)
    if created:  # For the records it must hold (a velocity).
        s.check_state(optimizer, params, opt_state, names)
    if donate and s.shared_buffers((params, opt_state)):
        raise ValueError(s.TIED)

    objects = (loss_fn, optimizer, pairs, placement)
    loop = _LOOPS[bool(donate)].get(objects, lambda: _Loop(bool(donate)))
    chunks: list[dict[str, PyTree]] = []
    done, end = 0, start_step + num_steps
    if checkpoint is not None:
        params, opt_state, done = periodic.resume(
            checkpoint, params, opt_state, start_step, end
        )
    try:
        while done < num_steps:
            length = periodic.call_length(
                per_call, num_steps - done, start_step + done, every
            )
            index = jnp.int32(
                0 if num_batches is None else (start_step + done) % num_batches
            )
            with failsafe.sigint_deferred():
                params, opt_state, history = loop(
                    objects,
                    params,
                    opt_state,
                    data,
                    index,
                    length=length,
                    num_batches=num_batches,
                )
                chunks.append(history)
                done += length
            periodic.save_if_due(
                checkpoint, every, start_step + done, end, params, opt_state
            )
            if callback is not None:
                jax.block_until_ready((params, opt_state))  # type: ignore[no-untyped-call]
                callback(done, num_steps)
    except BaseException as error:
        partial = FitResult(params, opt_state, _join(chunks), start_step + done)
        failsafe.hand_over(error, partial, done, num_steps, checkpoint)
        raise
    if checkpoint is not None:
        checkpoint.wait()
    return FitResult(params, opt_state, _join(chunks), end)
