"""Packed params: many small leaves kept in one flat buffer per dtype."""

import functools
from collections.abc import Hashable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


class _Slot(NamedTuple):
    """Where one leaf lives: its buffer, its offset in it, and its shape."""

    buffer: int
    offset: int
    shape: tuple[int, ...]


class _Layout(NamedTuple):
    """The static part of a :class:`Packed`: hashable, so jit caches on it."""

    treedef: Any  # jax.tree_util.PyTreeDef
    dtypes: tuple[np.dtype[Any], ...]
    slots: tuple[_Slot, ...]


@jax.tree_util.register_pytree_with_keys_class
class Packed:
    r"""Holds a pytree's leaves in one flat buffer per dtype.

    A pytree whose leaves are the buffers (one per dtype, in the order the
    dtypes first occur), so everything that maps over pytrees handles it as a
    few large arrays: ``optimizer.init`` gives a velocity of the same few
    buffers, an optimizer step is one elementwise loop per buffer, and a
    jitted call passes a few arguments instead of one per leaf. Make one with
    :func:`pack`; get the tree back with :meth:`unpack`, which under
    ``jax.jit`` costs nothing (each leaf is a slice of its buffer, fused into
    its users).

    :func:`momentax.training.make_train_step` and :func:`momentax.training.fit`
    take packed
    params as they are and hand ``loss_fn`` the unpacked tree, so the model
    code does not change.

    Attributes:
        buffers: The flat buffers, one per dtype.
    """

    __slots__ = ("_layout", "buffers")

    def __init__(self, buffers: tuple[Any, ...], layout: _Layout):
        self.buffers = tuple(buffers)
        self._layout = layout

    def unpack(self) -> PyTree:
        """Returns the pytree that was packed, with the current buffer values.

        Returns:
            A pytree of the original structure, shapes and dtypes.
        """
        device = _one_device(self.buffers)
        if device is False:
            leaves = list(_unpack_leaves(self._layout, self.buffers))
        else:
            leaves = _unpack_on_host(self._layout, self.buffers, device)
        return jax.tree.unflatten(self._layout.treedef, leaves)

    @property
    def dtypes(self) -> tuple[np.dtype[Any], ...]:
        """The dtype of each buffer, as it holds values now.

        That is the packed leaves' dtype, except in a tree mapped from the
        packed params to another dtype (a velocity kept in
        ``accumulator_dtype``, say): then the buffers' own.
        """
        return tuple(
            np.dtype(getattr(buffer, "dtype", dtype))
            for dtype, buffer in zip(self._layout.dtypes, self.buffers, strict=True)
        )

    @property
    def num_leaves(self) -> int:
        """How many leaves the packed tree has."""
        return len(self._layout.slots)

    def tree_flatten_with_keys(
        self,
    ) -> tuple[list[tuple[Any, Any]], Hashable]:
        """Flattens to the buffers, keyed by dtype name (pytree protocol)."""
        keys = [jax.tree_util.DictKey(dtype.name) for dtype in self._layout.dtypes]
        return list(zip(keys, self.buffers, strict=True)), self._layout

    @classmethod
    def tree_unflatten(cls, layout: _Layout, buffers: Any) -> "Packed":
        """Rebuilds from the layout and buffers (pytree protocol)."""
        return cls(tuple(buffers), layout)

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{dtype.name}[{_size(jnp.shape(buffer))}]"
            for dtype, buffer in zip(self.dtypes, self.buffers, strict=True)
        )
        return f"Packed({self.num_leaves} leaves in {sizes})"


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _one_device(arrays: Sequence[Any]) -> jax.Device | Literal[False] | None:
    """The device to put ``arrays``' host copies on: None for uncommitted ones.

    False for traced or sharded arrays, or arrays on several devices: those are
    sliced and joined by XLA. Concrete arrays on one device are sliced and joined
    on the host instead, because eagerly each slice or join of another shape
    compiles a program of its own (seconds for a thousand leaves). Arrays that
    were not committed to their device (``jax.Array.committed``) give None, so
    that the results are not committed either.
    """
    devices: set[jax.Device] = set()
    committed = False
    for array in arrays:
        if isinstance(array, jax.core.Tracer):
            return False
        if isinstance(array, jax.Array):
            if not array.is_fully_addressable or len(array.sharding.device_set) != 1:
                return False
            devices |= array.sharding.device_set
            committed |= array.committed
    if len(devices) > 1:
        return False
    return devices.pop() if committed else None


def _unpack_on_host(
    layout: _Layout, buffers: tuple[Any, ...], device: jax.Device | None
) -> list[jax.Array]:
    """The leaves, sliced from one host copy of each buffer, put back in one call."""
    host = [np.asarray(buffer) for buffer in buffers]
    pieces = [
        host[slot.buffer][slot.offset : slot.offset + _size(slot.shape)].reshape(
            slot.shape
        )
        for slot in layout.slots
    ]
    return list(jax.device_put(pieces, device))


def _slices(layout: _Layout, buffers: tuple[Any, ...]) -> tuple[jax.Array, ...]:
    return tuple(
        jnp.reshape(
            jax.lax.slice_in_dim(
                buffers[slot.buffer], slot.offset, slot.offset + _size(slot.shape)
            ),
            slot.shape,
        )
        for slot in layout.slots
    )


def _concatenate(layout: _Layout, leaves: tuple[Any, ...]) -> tuple[jax.Array, ...]:
    """Joins leaves (in layout order) into the layout's buffers."""
    parts: list[list[jax.Array]] = [[] for _ in layout.dtypes]
    for slot, leaf in zip(layout.slots, leaves, strict=True):
        parts[slot.buffer].append(jnp.ravel(leaf))
    return tuple(part[0] if len(part) == 1 else jnp.concatenate(part) for part in parts)


# The derivative of a slice is a zero-padded buffer; left to autodiff, the
# gradient of N slices is a sum of N full-size pads (N passes over the buffer).
# Concatenating the leaves' cotangents writes the buffer once.
@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _unpack_leaves(layout: _Layout, buffers: tuple[Any, ...]) -> tuple[Any, ...]:
    return _slices(layout, buffers)


def _unpack_forward(
    layout: _Layout, buffers: tuple[Any, ...]
) -> tuple[tuple[Any, ...], None]:
    return _slices(layout, buffers), None


def _unpack_backward(
    layout: _Layout, _: None, cotangents: tuple[Any, ...]
) -> tuple[tuple[jax.Array, ...]]:
    return (_concatenate(layout, cotangents),)


_unpack_leaves.defvjp(_unpack_forward, _unpack_backward)


def pack(tree: PyTree) -> Packed:
    r"""Packs a pytree's leaves into one flat buffer per dtype.

    A jitted call costs a fixed overhead per array it takes and returns, and
    XLA runs each leaf's elementwise update as its own loop. For a model of
    many small leaves (hundreds of biases and norms) both add up, and can cost
    far more than the arithmetic (see the README's "Performance" section for
    measurements). Packing keeps the params, and so the velocity and the
    gradients, in a few buffers instead.

    Trade-offs: packing and unpacking outside ``jax.jit`` copy every leaf
    (through the host, for arrays on one device, so that nothing compiles);
    per-leaf hyperparameters and ``optax.masked`` see the buffers, not the
    leaves, so they cannot tell the leaves apart; all leaves of a dtype share
    one device placement (do not pack sharded params); and compilation is
    slower, not faster: a first ``fit`` of a loss summing over 1000 leaves of
    3 floats took 20 s packed against 8 s unpacked (100 leaves: 1.2 s against
    0.4 s; 2-core CPU), so pack to make each call cheaper, not to compile
    sooner.

    Args:
        tree: A pytree of arrays (or numbers, converted with ``jnp.asarray``;
            weak types become strong).

    Returns:
        A :class:`Packed` holding the leaves, in a buffer per dtype.

    Raises:
        TypeError: If a leaf is not numeric, or ``tree`` is already packed.

    Examples:
        >>> import jax.numpy as jnp
        >>> import momentax
        >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3), "n": jnp.int32(7)}
        >>> packed = momentax.training.pack(params)
        >>> packed
        Packed(3 leaves in float32[9], int32[1])
        >>> packed.unpack()["w"].shape
        (2, 3)
    """
    if isinstance(tree, Packed):
        raise TypeError("tree is already a Packed; unpack() it first.")
    # Without paths: flattening with them costs more than the packing itself
    # (60 ms for a thousand leaves); they are only needed for the error.
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    arrays = []
    for index, leaf in enumerate(leaves):
        try:
            array = leaf if isinstance(leaf, jax.Array) else jnp.asarray(leaf)
        except TypeError:  # Not convertible: a str, an object, ...
            array = None
        if array is None or not (
            jnp.issubdtype(array.dtype, jnp.number)
            or jnp.issubdtype(array.dtype, jnp.bool_)
        ):
            path, _ = jax.tree_util.tree_flatten_with_path(tree)[0][index]
            what = (
                f"is {repr(leaf)[:80]}, a {type(leaf).__name__}"
                if array is None
                else f"has dtype {array.dtype}"
            )
            raise TypeError(
                f"pack needs numeric leaves (arrays or numbers); tree"
                f"{jax.tree_util.keystr(path)} {what}. Pack the arrays only, and "
                "keep other values (names, keys, settings) in a separate tree."
            )
        arrays.append(array)
    dtypes: list[np.dtype[Any]] = []
    sizes: list[int] = []
    slots = []
    for array in arrays:
        dtype = np.dtype(array.dtype)
        if dtype not in dtypes:
            dtypes.append(dtype)
            sizes.append(0)
        index = dtypes.index(dtype)
        slots.append(_Slot(index, sizes[index], tuple(array.shape)))
        sizes[index] += array.size
    layout = _Layout(treedef, tuple(dtypes), tuple(slots))
    device = _one_device(arrays)
    if device is False:
        return Packed(_concatenate(layout, tuple(arrays)), layout)
    host: list[list[np.ndarray]] = [[] for _ in dtypes]
    for slot, array in zip(slots, arrays, strict=True):
        host[slot.buffer].append(np.asarray(array).ravel())
    buffers = jax.device_put([np.concatenate(part) for part in host], device)
    return Packed(tuple(buffers), layout)


def unpacked(params: PyTree) -> PyTree:
    """Returns ``params.unpack()`` for a :class:`Packed`, else ``params``."""
    return params.unpack() if isinstance(params, Packed) else params
