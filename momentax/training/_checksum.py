r"""Checksums of arrays that add up across shards, so no process needs a whole array.

The checksum of an array is two 32-bit sums (modulo :math:`2^{32}`) over its
elements,

.. math::

    c_s(x) = \sum_i \sum_j h\big(h((i w + j) \oplus s) \oplus b_{ij}\big) \bmod 2^{32},
    \qquad s \in \{s_1, s_2\},

where :math:`i` is an element's index in the whole array (C order, modulo
:math:`2^{32}`), :math:`b_{ij}` the :math:`j`-th of the :math:`w` 32-bit words of
its bytes (one word, zero-extended, for dtypes of 8 or 16 bits), :math:`h` the
MurmurHash3 finalizer and :math:`s_1, s_2` two seeds. A sum does not depend on
how the elements are split: each process adds up the shards it holds, on the
device that holds each (each replicated shard once, on the process holding its
first replica), and the parts of all processes add up to the same checksum
whatever the sharding. Integer sums are exact, so the order of additions does
not matter either. A changed element changes its terms, so the checksum,
except with probability about :math:`2^{-64}`. It detects accidental damage,
not tampering.
"""

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_SEEDS = (np.uint32(0x9E3779B9), np.uint32(0x7F4A7C15))
_MASK = (1 << 32) - 1


def _finalize(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finalizer (wrapping arithmetic)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _device_words(x: jax.Array) -> jax.Array:
    """The 32-bit words of each element's bytes, along a new last axis."""
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        parts = _device_words(jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1))
        return parts.reshape(*x.shape, -1)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    bits = x.dtype.itemsize * 8
    unsigned = jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{bits}"))
    if bits <= 32:
        return unsigned.astype(jnp.uint32)[..., None]
    low = (unsigned & np.uint64(_MASK)).astype(jnp.uint32)  # Little-endian order,
    high = (unsigned >> np.uint64(32)).astype(jnp.uint32)  # as the host's bytes.
    return jnp.stack([low, high], axis=-1)


def _host_words(x: np.ndarray) -> np.ndarray:
    """:func:`_device_words` of a NumPy array, from its bytes."""
    flat = np.ascontiguousarray(x).reshape(-1)
    if x.dtype.itemsize < 4:
        words = flat.view(f"uint{x.dtype.itemsize * 8}").astype(np.uint32)
        return words.reshape(*x.shape, 1)
    return flat.view(np.uint32).reshape(*x.shape, x.dtype.itemsize // 4)


def _identity(words: Any) -> Any:
    return words


@partial(jax.jit, static_argnames="words_of")
def _block_sums(
    value: Any, starts: jax.Array, strides: jax.Array, words_of: Any
) -> Any:
    """The two sums of a block at ``starts`` of an array with ``strides``."""
    words = words_of(value)
    shape, width = words.shape[:-1], words.shape[-1]
    index = jnp.zeros(shape, jnp.uint32)
    for axis in range(len(shape)):
        position = jax.lax.broadcasted_iota(jnp.uint32, shape, axis) + starts[axis]
        index = index + position * strides[axis]
    word = jax.lax.broadcasted_iota(jnp.uint32, words.shape, words.ndim - 1)
    keys = index[..., None] * np.uint32(width) + word
    return jnp.stack(
        [
            jnp.sum(_finalize(_finalize(keys ^ seed) ^ words), dtype=jnp.uint32)
            for seed in _SEEDS
        ]
    )


def _start(shape: tuple[int, ...], index: tuple[slice, ...]) -> tuple[Any, Any]:
    strides, stride = [], 1
    for size in reversed(shape):
        strides.append(stride & _MASK)
        stride *= size
    starts = [(part.start or 0) & _MASK for part in index]
    return np.array(starts, np.uint32), np.array(strides[::-1], np.uint32)


def _as_int(sums: Any) -> int:
    first, second = (int(s) for s in np.asarray(sums))
    return (first << 32) | second


def add(*checksums: int) -> int:
    """Adds checksums (or parts of them) the way they add up: word by word."""
    first = sum(c >> 32 for c in checksums) & _MASK
    second = sum(c & _MASK for c in checksums) & _MASK
    return (first << 32) | second


def partial_checksum(value: Any) -> int:
    """This process's part of the checksum of ``value``, as a 64-bit integer.

    For a ``jax.Array`` across processes: the shards this process holds, each
    replicated shard counted once across all processes, each summed on its
    device. For a value each process holds whole (a NumPy array, or a
    ``jax.Array`` on this process's devices, the same in every process): the
    whole checksum on process 0, zero elsewhere.
    """
    if isinstance(value, jax.Array):
        if value.is_fully_addressable and jax.process_index() != 0:
            return 0
        shape = tuple(value.shape)
        parts = [
            _block_sums(shard.data, *_start(shape, shard.index), _device_words)
            for shard in value.addressable_shards
            if shard.replica_id == 0
        ]
        return add(*(_as_int(part) for part in parts))
    if jax.process_index() != 0:
        return 0
    value = np.asarray(value)
    words = _host_words(value)
    full = (slice(None),) * value.ndim
    return _as_int(_block_sums(words, *_start(value.shape, full), _identity))


def add_up(parts: list[list[int]]) -> list[int]:
    """Adds the parts of every process, leaf by leaf."""
    return [add(*column) for column in zip(*parts, strict=True)]


def across_processes(parts: list[int]) -> list[int]:
    """The checksums from every process's parts (a collective: all must call)."""
    if jax.process_count() == 1:
        return parts
    from jax.experimental import multihost_utils

    halves = np.array([[p >> 32, p & _MASK] for p in parts], np.uint32)
    gathered = np.asarray(multihost_utils.process_allgather(halves.reshape(-1, 2)))
    return add_up([[(int(hi) << 32) | int(lo) for hi, lo in rows] for rows in gathered])
