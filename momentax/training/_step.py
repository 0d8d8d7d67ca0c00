"""One training step: what it records and what it checks first."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
import optax

from momentax.training._cache import WeakCache
from momentax.training._packing import unpacked
from momentax.training._placement import Placement

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]
Metric = Callable[["StepInfo"], PyTree]
Record: TypeAlias = Sequence[str] | Mapping[str, Metric]
"""What to record per step: built-in names, or a dict from name to function."""
Recorders = tuple[tuple[str, Metric], ...]


def _is_field(path: tuple[Any, ...], _: Any) -> bool:
    # A NamedTuple field, not a dict key: params may have a leaf named "velocity".
    return isinstance(path[-1], optax.tree_utils.NamedTupleKey)


def velocity_of(opt_state: PyTree) -> PyTree:
    """The velocity in ``opt_state``: a ``velocity`` field, or optax's ``trace``."""
    for field in ("velocity", "trace"):
        found = optax.tree_utils.tree_get_all_with_path(
            opt_state, field, filtering=_is_field
        )
        if len(found) > 1:
            raise ValueError(
                f"record 'velocity' is ambiguous: the optimizer state holds "
                f"{len(found)} '{field}' fields; record the one you mean with a "
                "function of StepInfo."
            )
        if found:
            return found[0][1]
    raise ValueError(
        "record 'velocity' needs an optimizer state with a 'velocity' field (the "
        "momentax optimizers) or a 'trace' field (optax.sgd with momentum); this "
        "state has neither: drop 'velocity' from record."
    )


class StepInfo(NamedTuple):
    """Holds what one training step saw and produced, for recording.

    Attributes:
        params: The params the loss and gradients were evaluated at (before the
            step), as the step received them (a :class:`momentax.training.Packed`
            stays packed: call ``unpack()``).
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

    @property
    def velocity(self) -> PyTree:
        """The velocity in ``opt_state``, found by ``optax.tree.get``."""
        return velocity_of(self.opt_state)


def _attribute(name: str) -> Metric:
    # A function, not operator.attrgetter: fit's cache needs weak references.
    def get(info: StepInfo) -> PyTree:
        return getattr(info, name)

    get.__name__ = get.__qualname__ = name
    return get


RECORDABLE: dict[str, Metric] = {
    name: _attribute(name)
    for name in ("loss", "params", "grads", "updates", "velocity")
}
"""The built-in records: a name for each, and the function of :class:`StepInfo`
it records (``"velocity"`` is the optimizer state's, after the step)."""


def recorders(record: Any) -> Recorders:
    """Validates ``record``; returns its (name, function) pairs in order."""
    if isinstance(record, Mapping):
        pairs = tuple(record.items())
        for name, fn in pairs:
            if not isinstance(name, str):
                raise TypeError(f"record keys must be names (str); got {name!r}.")
            if not callable(fn):
                raise TypeError(
                    f"record[{name!r}] must be a function of StepInfo; got {fn!r}."
                )
        return pairs
    if isinstance(record, str) or not isinstance(record, Sequence):
        raise TypeError(
            "record must be a sequence of built-in names such as ('loss',), or a "
            f"dict from name to a function of StepInfo; got {record!r}."
        )
    names = tuple(record)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"record names {repeated} are given more than once.")
    unknown = [name for name in names if name not in RECORDABLE]
    if unknown:
        raise ValueError(
            f"record names {unknown} are not built in; choose from "
            f"{list(RECORDABLE)}, or pass a dict from name to a function of "
            "StepInfo (RECORDABLE[name] for the built-ins)."
        )
    return tuple((name, RECORDABLE[name]) for name in names)


def check_training(loss_fn: Any, optimizer: Any, placement: Any) -> None:
    """The loss must be callable, the optimizer an Optax one, the placement ours."""
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
    if placement is not None and not isinstance(placement, Placement):
        raise TypeError(
            "placement must be a momentax.training.Placement or None; got "
            f"{placement!r}."
        )


# Tracing init costs more than a step's dispatch: once per optimizer and params.
_EXPECTED: WeakCache[PyTree] = WeakCache()


def check_state(
    optimizer: optax.GradientTransformation,
    params: PyTree,
    opt_state: PyTree,
    names: Sequence[str],
) -> None:
    """``opt_state`` must be ``optimizer.init(params)``'s structure and shapes.

    Works on arrays and tracers alike (it only reads shapes), so the train step
    runs it while tracing: free on every later call.
    """
    leaves, treedef = jax.tree.flatten(params)
    avals = tuple(
        (jnp.shape(x), x.dtype if hasattr(x, "dtype") else jnp.result_type(x))
        for x in leaves
    )
    expected = _EXPECTED.get(
        (optimizer,), lambda: jax.eval_shape(optimizer.init, params), (treedef, avals)
    )
    if opt_state is None:
        raise TypeError(
            "opt_state is None; create it with optimizer.init(params) (or "
            "placement.init(optimizer, params))."
        )
    want, got = jax.tree.structure(expected), jax.tree.structure(opt_state)
    if want != got:  # type: ignore[operator]
        raise ValueError(
            "opt_state does not have the structure of optimizer.init(params): it "
            "is the state of another optimizer or of other params. Expected "
            f"{want}; got {got}."
        )
    for path, a, b in zip(
        (jax.tree_util.keystr(p) for p, _ in jax.tree.leaves_with_path(expected)),
        jax.tree.leaves(expected),
        jax.tree.leaves(opt_state),
        strict=True,
    ):
        if tuple(a.shape) != tuple(jnp.shape(b)):
            raise ValueError(
                f"opt_state{path} has shape {jnp.shape(b)}; optimizer.init("
                f"params) gives {a.shape}: the state belongs to other params."
            )
    if "velocity" in names:
        velocity_of(expected)


def step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    pairs: Recorders,
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
    records = {name: fn(info) for name, fn in pairs}
    new_params = optax.apply_updates(params, updates)
    if placement is not None:
        new_params, new_state = placement.constrain(optimizer, new_params, new_state)
    return new_params, new_state, records


TIED = (
    "params and opt_state share an array (tied params, or a state holding the "
    "params); donation needs distinct buffers: pass donate=False, or copy the "
    "shared leaf."
)


def shared_buffers(tree: PyTree) -> bool:
    """Whether one array object occurs twice in ``tree`` (donation would fail)."""
    arrays = [leaf for leaf in jax.tree.leaves(tree) if isinstance(leaf, jax.Array)]
    return len({id(leaf) for leaf in arrays}) < len(arrays)


def deleted_leaf(**trees: PyTree) -> str | None:
    """A message naming the first deleted array in ``trees`` (in leaf order), or None.

    A donated call (``fit``, a train step) deletes the arrays it is given; JAX's
    own error for reusing one names neither the leaf nor the reason.
    """
    for name, tree in trees.items():
        for path, leaf in jax.tree.leaves_with_path(tree):
            if isinstance(leaf, jax.Array) and leaf.is_deleted():
                return (
                    f"{name}{jax.tree_util.keystr(path)} is an array that has been "
                    "deleted: an earlier donated call (fit or a train step) consumed "
                    "it. Pass the params and opt_state that call returned, or call "
                    "it with donate=False to keep its inputs."
                )
    return None


def place(
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
