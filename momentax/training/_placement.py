"""Sharding: optimizer state that lives where its params live, and placements.

JAX already partitions a jitted step over a mesh; what the optimizer must add is
that its state is created with, and keeps, the params' sharding. Eagerly,
``jnp.zeros_like`` of a sharded array is sharded alike. Under ``jax.jit`` with
``Auto`` mesh axes it is not: a buffer of zeros has no operand to inherit a
sharding from, so XLA makes it replicated (``optax.sgd(momentum=...)`` does
that), and the first step then slices or gathers it.
:func:`momentax.scale_by_momentum` ties each buffer to its param with
``jax.experimental.shard_alike``.
"""

import dataclasses
from typing import Any

import jax
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from momentax.training._cache import WeakCache
from momentax.training._specs import (
    REPLICATED,
    SpecRule,
    check_axis,
    largest_divisible_dim,
    put,
)
from momentax.training._specs import specs as specs_of

PyTree = Any


def _abstract(path: Any, leaf: Any) -> jax.ShapeDtypeStruct:
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
        raise ValueError(
            f"params{jax.tree_util.keystr(path)} has no sharding: give jax.Arrays "
            "or jax.ShapeDtypeStruct(shape, dtype, sharding=...) leaves."
        )
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)


def _replicated(sharding: Any) -> Any:
    """The sharding that replicates a leaf over the devices of ``sharding``."""
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, REPLICATED)
    if len(sharding.device_set) == 1:
        return sharding
    raise ValueError(
        f"params have a {type(sharding).__name__}; opt_state_sharding needs "
        "NamedSharding (or single-device) params."
    )


def opt_state_sharding(optimizer: optax.GradientTransformation, params: PyTree) -> Any:
    """Returns the sharding of each leaf of ``optimizer.init(params)`` under jit.

    Works on abstract params too, so it gives the target of a restore or of
    ``jax.jit(..., out_shardings=...)`` before any array exists. Every part of
    the state that mirrors the params (a velocity, Adam's moments) is found by
    ``optax.tree_map_params`` and gets its param's sharding, leaf by leaf; every
    other leaf (a step count, an injected hyperparameter) is replicated. The
    state's shapes come from ``jax.eval_shape``: nothing is compiled, and the
    answers are cached only as long as the optimizer lives. (``eval_shape``
    alone leaves the shardings unset on meshes with ``Auto`` axes.) The
    momentax optimizers create and keep their velocity with these shardings.

    Args:
        optimizer: Any Optax ``GradientTransformation``.
        params: A pytree of ``jax.Array`` or of ``jax.ShapeDtypeStruct`` with a
            ``sharding``.

    Returns:
        A pytree with the structure of the optimizer state and a
        ``jax.sharding.Sharding`` at each array leaf.

    Raises:
        ValueError: If a params leaf has no sharding.

    Examples:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import optax
        >>> import momentax
        >>> from jax.sharding import NamedSharding, PartitionSpec as P
        >>> mesh = jax.make_mesh((1,), ("model",))
        >>> sharding = NamedSharding(mesh, P("model"))
        >>> params = {"w": jax.ShapeDtypeStruct((8,), jnp.float32, sharding=sharding)}
        >>> opt = momentax.momentum(0.1, 0.9)
        >>> state = momentax.training.opt_state_sharding(opt, params)
        >>> optax.tree.get(state, "velocity")["w"].spec == P("model")
        True
    """
    abstract = jax.tree_util.tree_map_with_path(_abstract, params)
    leaves, treedef = jax.tree.flatten(abstract)
    shared = _SHARDINGS.get(
        (optimizer,),
        lambda: _state_sharding(optimizer, abstract),
        (treedef, tuple(leaves)),
    )
    return jax.tree.map(lambda sharding: sharding, shared)  # The caller's own copy.


# A placed train step asks on every call; tracing init each time would cost
# more than the step's dispatch. Held weakly: a dropped optimizer is freed.
_SHARDINGS: WeakCache[Any] = WeakCache()


def _state_sharding(optimizer: optax.GradientTransformation, abstract: PyTree) -> Any:
    shardings = [leaf.sharding for leaf in jax.tree.leaves(abstract)]
    replicated = (
        _replicated(shardings[0])
        if shardings
        else jax.sharding.SingleDeviceSharding(jax.devices()[0])
    )

    def follow(leaf: Any, param: jax.ShapeDtypeStruct) -> Any:
        # A params-shaped part of the state whose leaf is not param-shaped
        # (a factored moment, say) cannot take the param's split.
        same = tuple(leaf.shape) == tuple(param.shape)
        return param.sharding if same else replicated

    state = jax.eval_shape(optimizer.init, abstract)
    return optax.tree_map_params(
        optimizer,
        follow,
        state,
        abstract,
        transform_non_params=lambda leaf: replicated,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Placement:
    r"""Says where params, optimizer state and batches live on a device mesh.

    Give one to :func:`momentax.training.fit` or
    :func:`momentax.training.make_train_step` to
    train on several devices. The params are placed by the ``params`` rule;
    the optimizer state follows them (see :func:`opt_state_sharding`): each
    velocity leaf is split exactly as its param, so a step updates every shard
    where it lives and never gathers the velocity; batches are placed by the
    ``batch`` rule. JAX's partitioner inserts the collectives the loss needs
    (the gradient all-reduce of data parallelism). A placement is hashable by
    identity, like an optimizer: reuse one object to reuse compiled loops.

    The two common layouts have constructors:

    * :meth:`data_parallel`: each batch split along its leading (example)
      dimension over a ``data`` axis; params and state replicated.
    * :meth:`fully_sharded`: params and state split over a ``model`` axis
      (each leaf along its largest dimension that the axis divides), and
      batches optionally split over a data axis as well.

    Attributes:
        mesh: The ``jax.sharding.Mesh``.
        params: The spec rule of the params: a ``PartitionSpec`` for every leaf,
            a function from a leaf's ``jax.ShapeDtypeStruct`` to its spec, or a
            pytree prefix of the params with specs (``None``: replicated).
        batch: The spec rule of one batch, in the same forms.

    Examples:
        >>> import jax
        >>> import momentax
        >>> mesh = jax.make_mesh((jax.device_count(),), ("data",))
        >>> placement = momentax.training.Placement.data_parallel(mesh)
        >>> tuple(placement.batch)  # the batch's leading axis is split over "data"
        ('data',)
    """

    mesh: Mesh
    params: SpecRule = REPLICATED
    batch: SpecRule = REPLICATED

    def __post_init__(self) -> None:
        if not isinstance(self.mesh, Mesh):
            raise TypeError(
                f"mesh must be a jax.sharding.Mesh (e.g. from jax.make_mesh); "
                f"got {self.mesh!r}."
            )

    @classmethod
    def data_parallel(cls, mesh: Mesh, axis: str = "data") -> "Placement":
        """Splits batches over ``axis`` and replicates params and state.

        Args:
            mesh: The device mesh.
            axis: The mesh axis that splits the examples of each batch.

        Returns:
            The placement.
        """
        axis = check_axis(mesh, axis, "axis")
        return cls(mesh, params=PartitionSpec(), batch=PartitionSpec(axis))

    @classmethod
    def fully_sharded(
        cls, mesh: Mesh, axis: str = "model", batch_axis: str | None = None
    ) -> "Placement":
        """Splits each param and its state over ``axis``.

        Each leaf is split along its largest dimension that the size of
        ``axis`` divides; a leaf with no such dimension (a scalar, say) is
        replicated. To choose dimensions yourself, build a :class:`Placement`
        with a pytree of specs.

        Args:
            mesh: The device mesh.
            axis: The mesh axis that splits the params.
            batch_axis: A mesh axis that splits the examples of each batch as
                well (both kinds of parallelism at once), or None to replicate
                batches.

        Returns:
            The placement.
        """
        axis = check_axis(mesh, axis, "axis")
        batch = PartitionSpec()
        if batch_axis is not None:
            batch = PartitionSpec(check_axis(mesh, batch_axis, "batch_axis"))
        rule = largest_divisible_dim(mesh.shape[axis], axis)
        return cls(mesh, params=rule, batch=batch)

    def param_sharding(self, params: PyTree) -> PyTree:
        """Returns the ``NamedSharding`` of each params leaf (params may be abstract).

        Raises:
            ValueError: If a spec names an axis the mesh lacks, more dimensions
                than the leaf has, or does not divide a dimension.
        """
        specs = specs_of(self.mesh, self.params, params, "params")
        return jax.tree.map(lambda spec: NamedSharding(self.mesh, spec), specs)

    def batch_sharding(self, batch: PyTree, *, stacked: bool = False) -> PyTree:
        """Returns the ``NamedSharding`` of each leaf of a batch.

        Args:
            batch: One batch (arrays or ``jax.ShapeDtypeStruct``).
            stacked: Whether ``batch`` is a stack of batches along a new leading
                axis (as :func:`momentax.training.fit` takes with
                ``stacked=True``); that axis is never split.

        Returns:
            A pytree of ``NamedSharding`` with the structure of ``batch``.
        """
        one = batch
        if stacked:
            one = jax.tree.map(
                lambda b: jax.ShapeDtypeStruct(b.shape[1:], b.dtype), batch
            )
        specs = specs_of(self.mesh, self.batch, one, "batch")
        lead = (None,) if stacked else ()
        return jax.tree.map(
            lambda spec: NamedSharding(self.mesh, PartitionSpec(*lead, *spec)), specs
        )

    def state_sharding(
        self, optimizer: optax.GradientTransformation, params: PyTree
    ) -> Any:
        """Returns the sharding of each leaf of ``optimizer.init`` on placed params."""
        sharded = jax.tree.map(
            lambda leaf, sharding: jax.ShapeDtypeStruct(
                leaf.shape, leaf.dtype, sharding=sharding
            ),
            params,
            self.param_sharding(params),
        )
        return opt_state_sharding(optimizer, sharded)

    def put_params(self, params: PyTree) -> PyTree:
        """Returns the params placed on the mesh (no copy for a leaf already there).

        With several processes, a leaf that is not yet a global array must hold
        the same values in every process (each keeps the shards of its devices).
        """
        return put(params, self.param_sharding(params))

    def put_batch(self, batch: PyTree, *, stacked: bool = False) -> PyTree:
        """Returns a batch (or a stack of them) placed on the mesh.

        With several processes, pass the whole batch in every process: each
        keeps the examples of its own devices.
        """
        return put(batch, self.batch_sharding(batch, stacked=stacked))

    def init(self, optimizer: optax.GradientTransformation, params: PyTree) -> Any:
        """Returns ``optimizer.init(params)`` created in place on the mesh.

        The state is computed by a jitted ``init`` whose outputs are given their
        shardings, so no buffer is ever materialised on one device.
        """
        params = self.put_params(params)
        out = self.state_sharding(optimizer, params)
        return jax.jit(optimizer.init, out_shardings=out)(params)

    def put_state(
        self, optimizer: optax.GradientTransformation, params: PyTree, opt_state: Any
    ) -> Any:
        """Returns an existing optimizer state placed like ``init`` would place it."""
        return put(opt_state, self.state_sharding(optimizer, params))

    def constrain(
        self, optimizer: optax.GradientTransformation, params: PyTree, opt_state: Any
    ) -> tuple[PyTree, Any]:
        """Pins traced params and state to their placement (inside a jitted step)."""
        # Explicit mesh axes carry shardings in the types: reshard (a no-op when
        # they already agree); Auto axes take a constraint for the partitioner.
        explicit = any(t == AxisType.Explicit for t in self.mesh.axis_types)
        pin = jax.sharding.reshard if explicit else jax.lax.with_sharding_constraint
        params = pin(params, self.param_sharding(params))
        opt_state = pin(opt_state, self.state_sharding(optimizer, params))
        return params, opt_state
