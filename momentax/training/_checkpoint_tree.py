"""What a checkpoint records about its tree, and how a target is compared to it.

A record is plain JSON data: the type name of every container along the
tree (so two optimizers or conventions whose states are ordered differently
are told apart by name), each leaf's shape and dtype, and the layout of every
:class:`momentax.training.Packed` in the tree.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from momentax.training._packing import Packed

PyTree = Any
Record = dict[str, Any]

# Broad dtype classes: a checkpoint restores into a target of the same class
# (an int32 step into a Python int, float32 into bfloat16), never across them.
_KINDS = (
    ("bool", jnp.bool_),
    ("unsigned integer", jnp.unsignedinteger),
    ("signed integer", jnp.signedinteger),
    ("floating", jnp.floating),
    ("complex", jnp.complexfloating),
)
_PYTHON_DTYPES = {bool: "bool", int: "int32", float: "float32", complex: "complex64"}


def path_name(path: tuple[Any, ...]) -> str:
    """The key of a leaf or node: its path joined by ``/``, such as ``params/w``."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def shown(name: str) -> str:
    """A path name as messages print it (the root has the empty name)."""
    return name or "(the root)"


def kind(dtype: Any) -> str:
    """The broad class of ``dtype``: bool, signed integer, floating, ..."""
    for name, cls in _KINDS:
        if jnp.issubdtype(dtype, cls):
            return name
    return str(np.dtype(dtype))


def _is_leaf(node: Any) -> bool:
    return bool(jax.tree_util.all_leaves([node]))  # None is an empty node


def _walk(node: Any, path: tuple[Any, ...], out: list[tuple[str, Any, bool]]) -> None:
    """Appends (name, node, is_leaf) for ``node`` and everything below it."""
    if _is_leaf(node):
        out.append((path_name(path), node, True))
        return
    out.append((path_name(path), node, False))
    # One level at a time: each child counts as a leaf of this flatten.
    children, _ = jax.tree_util.tree_flatten_with_path(
        node, is_leaf=lambda x: x is not node
    )
    for key, child in children:
        _walk(child, path + key, out)


def _packed_layout(packed: Packed) -> list[list[Any]]:
    """Each packed leaf's name, shape, dtype, buffer and offset in the buffer."""
    # A Packed's static pytree data is its layout (see momentax.training.pack).
    treedef: Any = jax.tree.structure(packed)
    layout = treedef.node_data()[1]
    names = jax.tree_util.tree_flatten_with_path(
        jax.tree.unflatten(layout.treedef, range(len(layout.slots)))
    )[0]
    return [
        [
            path_name(path),
            list(slot.shape),
            layout.dtypes[slot.buffer].name,
            slot.buffer,
            slot.offset,
        ]
        for (path, _), slot in zip(names, layout.slots, strict=True)
    ]


def _leaf(name: str, leaf: Any) -> Record:
    if isinstance(leaf, jax.Array | jax.ShapeDtypeStruct):
        return {"shape": list(leaf.shape), "dtype": np.dtype(leaf.dtype).name}
    if isinstance(leaf, np.ndarray | np.generic):
        return {"shape": list(np.shape(leaf)), "dtype": leaf.dtype.name}
    if type(leaf) in _PYTHON_DTYPES:
        dtype = _PYTHON_DTYPES[type(leaf)]
        return {"shape": [], "dtype": dtype, "python": type(leaf).__name__}
    raise TypeError(
        f"checkpoint leaves must be arrays or numbers; {shown(name)} is a "
        f"{type(leaf).__name__}."
    )


def describe(tree: PyTree) -> Record:
    """Returns the record of ``tree``'s containers, leaves and packed layouts."""
    nodes, leaves, packed = {}, {}, {}
    walked: list[tuple[str, Any, bool]] = []
    _walk(tree, (), walked)
    for name, node, is_leaf in walked:
        if name in leaves or name in nodes:
            raise ValueError(
                f"two parts of the tree have the key {shown(name)!r}; a checkpoint "
                "needs unique keys (a dict key with '/' in it?)."
            )
        if is_leaf:
            leaves[name] = _leaf(name, node)
            continue
        nodes[name] = type(node).__name__
        if isinstance(node, Packed):
            packed[name] = _packed_layout(node)
    return {"nodes": nodes, "leaves": leaves, "packed": packed}


def _covered(name: str, leaves: Record) -> bool:
    """Whether some leaf lies under the node ``name`` (it then speaks for it)."""
    return any(leaf == name or leaf.startswith(name + "/") for leaf in leaves)


def _form(leaf: Record) -> str:
    if leaf.get("python"):
        return f"a Python {leaf['python']}"
    return f"{leaf['dtype']}{leaf['shape']}"


def _packed_difference(saved: list[Any], target: list[Any]) -> str:
    if len(saved) != len(target):
        return f"{len(saved)} packed leaves, target has {len(target)}"
    for have, want in zip(saved, target, strict=True):
        if have != want:
            keys = ("name", "shape", "dtype", "buffer", "offset")
            return (
                f"a packed leaf {dict(zip(keys, have, strict=True))}, target "
                f"has {dict(zip(keys, want, strict=True))}"
            )
    return ""


def differences(saved: Record, target: Record) -> list[str]:
    """Every way ``target`` does not fit the checkpoint ``saved``, one a line."""
    have, want = saved["leaves"], target["leaves"]
    types = [
        f"  {shown(name)}: checkpoint has {saved['nodes'][name]}, "
        f"target has {target['nodes'][name]}"
        for name in saved["nodes"].keys() & target["nodes"].keys()
        if saved["nodes"][name] != target["nodes"][name]
    ]
    # Empty containers (None, optax.EmptyState()) have no leaves to speak for them.
    for first, second, where in ((saved, target, have), (target, saved, want)):
        side = "checkpoint" if first is saved else "target"
        other = "target" if first is saved else "checkpoint"
        types += [
            f"  {shown(name)}: a {first['nodes'][name]} in the {side}, not the {other}"
            for name in first["nodes"].keys() - second["nodes"].keys()
            if not _covered(name, where)
        ]
    leaves = [
        f"  {shown(name)}: in the target, not in the checkpoint"
        for name in want.keys() - have.keys()
    ]
    leaves += [
        f"  {shown(name)}: in the checkpoint, not in the target"
        for name in have.keys() - want.keys()
    ]
    for name in have.keys() & want.keys():
        a, b = have[name], want[name]
        if a["shape"] != b["shape"] or kind(a["dtype"]) != kind(b["dtype"]):
            leaves.append(
                f"  {shown(name)}: checkpoint has {_form(a)}, target has {_form(b)}"
            )
    packed = []
    for name in saved["packed"].keys() & target["packed"].keys():
        difference = _packed_difference(saved["packed"][name], target["packed"][name])
        if difference:
            packed.append(f"  {shown(name)}: checkpoint has {difference}")
    return sorted(types) + sorted(packed) + sorted(leaves)


def as_saved(key: tuple[Any, ...], leaf: Any) -> Any:
    """What is saved for a leaf: a NumPy array for a number, of JAX's dtype for it.

    A Python number becomes what it is under ``jax.jit`` (an int becomes
    int32), as NumPy: Orbax refuses host-local JAX arrays in multi-process runs.
    """
    if isinstance(leaf, bool | int | float | complex):
        try:
            return np.asarray(jnp.asarray(leaf))
        except OverflowError:
            raise ValueError(
                f"{shown(path_name(key))} is {leaf}, out of range for JAX's "
                f"{type(leaf).__name__} type; save it as a NumPy array."
            ) from None
    if isinstance(leaf, np.generic):
        return np.asarray(leaf)
    if isinstance(leaf, jax.Array) and leaf.is_deleted():
        raise ValueError(
            f"{shown(path_name(key))} is a deleted (donated) array; save the arrays "
            "a train step returned, not the ones it was given."
        )
    return leaf


def _sharding(target: Any) -> Any:
    if isinstance(target, jax.Array | jax.ShapeDtypeStruct) and target.sharding:
        return target.sharding
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def check_shardings(names: list[str], saved: list[Record], targets: list[Any]) -> None:
    """Refuses a target leaf whose sharding cannot hold the saved shape.

    Checked before Orbax reads anything, so that the error names the leaf and
    the target, not the checkpoint (which is intact).
    """
    for name, leaf, target in zip(names, saved, targets, strict=True):
        if not isinstance(target, jax.ShapeDtypeStruct) or target.sharding is None:
            continue  # an Array's sharding holds its shape, the saved one
        shape = tuple(leaf["shape"])
        try:
            target.sharding.shard_shape(shape)
        except ValueError as error:
            raise ValueError(
                f"the target's sharding of {shown(name)} cannot hold its shape "
                f"{shape}: {error}. Give the target a sharding that divides it."
            ) from None


def abstract_leaf(saved: Record, target: Any) -> Any:
    """What a saved leaf is read as: its saved dtype, in the target's sharding."""
    dtype = np.dtype(saved["dtype"])
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        return np.empty(saved["shape"], dtype)  # float64 without jax_enable_x64
    shape, sharding = tuple(saved["shape"]), _sharding(target)
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)  # type: ignore[no-untyped-call]


def zeros(saved: Record, target: Any) -> Any:
    """A leaf with no elements, as :func:`abstract_leaf` would read it."""
    dtype, shape = np.dtype(saved["dtype"]), tuple(saved["shape"])
    place = abstract_leaf(saved, target)
    if isinstance(place, np.ndarray):
        return place
    return jax.make_array_from_callback(
        shape, place.sharding, lambda index: np.zeros(shape, dtype)[index]
    )


def as_target(value: Any, target: Any) -> Any:
    """Converts a verified restored leaf to the target leaf's dtype and type."""
    if isinstance(target, jax.Array | jax.ShapeDtypeStruct):
        if not isinstance(value, jax.Array):
            return jax.device_put(
                np.asarray(value).astype(target.dtype), _sharding(target)
            )
        if value.dtype != target.dtype:  # Shard by shard: nothing is gathered.
            cast = jax.jit(
                lambda v: v.astype(target.dtype), out_shardings=value.sharding
            )
            return cast(value)
        return value
    if isinstance(target, np.ndarray | np.generic):
        value = np.asarray(value).astype(target.dtype)
        return value[()] if isinstance(target, np.generic) else value
    return value  # A Python number's leaf comes back as the array saved.


def fitted_leaves(
    record: Record, target: Any, where: str
) -> tuple[Any, list[str], list[Any], list[Any]]:
    """The target's leaves and their saved entries, once the record fits it.

    Returns:
        The target's treedef, its leaves' names, the leaves, and each one's
        entry in ``record``.

    Raises:
        ValueError: If the record differs from the target (every difference
            listed; nothing has been read).
    """
    mismatches = differences(record, describe(target))
    if mismatches:
        raise ValueError(
            f"{where} does not fit the target (nothing was restored):\n"
            + "\n".join(mismatches)
        )
    keyed, treedef = jax.tree_util.tree_flatten_with_path(target)
    names = [path_name(key) for key, _ in keyed]
    return (
        treedef,
        names,
        [leaf for _, leaf in keyed],
        [record["leaves"][name] for name in names],
    )
