"""Spec rules: partition specs checked against a mesh, and trees placed by them."""

import math
from collections.abc import Callable
from typing import Any, TypeAlias

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PyTree = Any
SpecRule: TypeAlias = (
    PartitionSpec | Callable[[jax.ShapeDtypeStruct], PartitionSpec] | PyTree
)
"""A ``PartitionSpec`` for every leaf, a function from a leaf's shape and dtype
to its spec, or a pytree prefix of specs (``None`` meaning replicated)."""

REPLICATED = PartitionSpec()  # type: ignore[no-untyped-call]


def _leaf_name(what: str, path: Any) -> str:
    return f"{what}{jax.tree_util.keystr(path)}"


def _check_spec(mesh: Mesh, spec: Any, leaf: Any, name: str) -> PartitionSpec:
    """Validates one leaf's spec against the mesh and the leaf's shape."""
    if spec is None:
        spec = PartitionSpec()  # type: ignore[no-untyped-call]
    if not isinstance(spec, PartitionSpec):
        raise TypeError(f"the spec for {name} must be a PartitionSpec; got {spec!r}.")
    shape = tuple(leaf.shape)
    if len(spec) > len(shape):
        raise ValueError(
            f"the spec {spec} for {name} names {len(spec)} dimensions, but it has "
            f"shape {shape}."
        )
    for dim, axes in enumerate(spec):
        names = () if axes is None else (axes,) if isinstance(axes, str) else axes
        unknown = [axis for axis in names if axis not in mesh.shape]
        if unknown:
            raise ValueError(
                f"the spec {spec} for {name} uses mesh axes {unknown}; the mesh "
                f"has {list(mesh.axis_names)}."
            )
        split = math.prod(mesh.shape[axis] for axis in names)
        if shape[dim] % split:
            raise ValueError(
                f"the spec {spec} for {name} splits dimension {dim} of size "
                f"{shape[dim]} into {split} shards; the size must be divisible."
            )
    return spec


def specs(mesh: Mesh, rule: SpecRule, tree: PyTree, what: str) -> PyTree:
    """The validated ``PartitionSpec`` of each leaf of ``tree`` under ``rule``."""
    if isinstance(rule, PartitionSpec) or rule is None or callable(rule):
        spec_of = rule if callable(rule) else lambda _: rule
        return jax.tree_util.tree_map_with_path(
            lambda path, leaf: _check_spec(
                mesh,
                spec_of(jax.ShapeDtypeStruct(leaf.shape, leaf.dtype)),  # type: ignore[no-untyped-call]
                leaf,
                _leaf_name(what, path),
            ),
            tree,
        )

    def is_spec(x: Any) -> bool:
        return x is None or isinstance(x, PartitionSpec)

    try:  # Pair each spec with its subtree: only the structure can fail here.
        pairs = jax.tree.map(lambda spec, sub: (spec, sub), rule, tree, is_leaf=is_spec)
    except ValueError as error:
        raise ValueError(
            f"the specs for {what} must be a PartitionSpec, a function of a "
            f"leaf, or a pytree prefix of {what} with PartitionSpec leaves: {error}"
        ) from None
    return jax.tree_util.tree_map_with_path(
        lambda path, pair: jax.tree_util.tree_map_with_path(
            lambda inner, leaf: _check_spec(
                mesh, pair[0], leaf, _leaf_name(what, (*path, *inner))
            ),
            pair[1],
        ),
        pairs,
        is_leaf=lambda x: isinstance(x, tuple) and len(x) == 2 and is_spec(x[0]),
    )


def largest_divisible_dim(axis_size: int, axis: str) -> Callable[..., PartitionSpec]:
    """Returns a spec rule that splits each leaf's largest divisible dimension."""

    def rule(leaf: jax.ShapeDtypeStruct) -> PartitionSpec:
        dims = [d for d, size in enumerate(leaf.shape) if size % axis_size == 0]
        if not dims:
            return PartitionSpec()  # type: ignore[no-untyped-call]
        dim = max(dims, key=lambda d: leaf.shape[d])
        return PartitionSpec(*([None] * dim), axis)  # type: ignore[no-untyped-call]

    return rule


def put(tree: PyTree, shardings: PyTree) -> PyTree:
    """``jax.device_put``, also onto devices of other processes.

    ``device_put`` can only write to this process's devices; for a sharding
    that spans processes each process builds its own shards from its copy.
    """

    def put(x: Any, sharding: NamedSharding) -> Any:
        if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
            return x
        if sharding.is_fully_addressable or (
            isinstance(x, jax.Array) and not x.is_fully_addressable
        ):
            return jax.device_put(x, sharding)
        host = np.asarray(x)
        return jax.make_array_from_callback(
            host.shape, sharding, lambda index: host[index]
        )

    return jax.tree.map(put, tree, shardings)


def check_axis(mesh: Mesh, axis: Any, argument: str) -> str:
    if not isinstance(axis, str) or axis not in mesh.shape:
        raise ValueError(
            f"{argument} must name an axis of the mesh, one of "
            f"{list(mesh.axis_names)}; got {axis!r}."
        )
    return axis
