r"""Checksums of arrays that add up across shards, so no process needs a whole array.

The checksum of an array is a sum modulo :math:`2^{64}` over its elements,

.. math::

    c(x) = \sum_i \sum_j h\big(h(i w + j) \oplus b_{ij}\big) \bmod 2^{64},

where :math:`i` is an element's index in the whole array (C order), :math:`b_{ij}`
the :math:`j`-th of the :math:`w` 64-bit words of its bytes (zero-padded) and
:math:`h` the SplitMix64 finalizer. A sum does not depend on how the elements
are split: each process adds up the shards it holds (each replicated shard
once, on the process holding its first replica), and the partial sums of all
processes add up to the same checksum whatever the sharding. A changed element
changes its term, so the sum, except with probability about :math:`2^{-64}`.
It detects accidental damage, not tampering.
"""

from typing import Any

import jax
import numpy as np

_CHUNK = 1 << 20  # Elements hashed at a time: bounds the temporary memory.
_GOLDEN, _MIX1, _MIX2 = (
    np.uint64(0x9E3779B97F4A7C15),
    np.uint64(0xBF58476D1CE4E5B9),
    np.uint64(0x94D049BB133111EB),
)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer on a uint64 array (wrapping arithmetic)."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    mixed: np.ndarray = z ^ (z >> np.uint64(31))
    return mixed


def _block_sum(
    data: np.ndarray, starts: tuple[int, ...], shape: tuple[int, ...]
) -> int:
    """The sum of the terms of ``data``, the block at ``starts`` of a larger array."""
    itemsize = data.dtype.itemsize
    width = -(-itemsize // 8)
    strides = np.cumprod((1, *shape[:0:-1]))[::-1].astype(np.uint64)
    raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8).reshape(-1, itemsize)
    total = 0
    for lo in range(0, data.size, _CHUNK):
        hi = min(lo + _CHUNK, data.size)
        padded = np.zeros((hi - lo, width * 8), np.uint8)
        padded[:, :itemsize] = raw[lo:hi]
        words = padded.view(np.uint64)  # (elements, width), native byte order
        local = np.unravel_index(np.arange(lo, hi), data.shape) if data.ndim else ()
        index = np.zeros(hi - lo, np.uint64)
        for axis, position in enumerate(local):
            index += (position + starts[axis]).astype(np.uint64) * strides[axis]
        keys = index[:, None] * np.uint64(width) + np.arange(width, dtype=np.uint64)
        total += int(np.sum(_mix(_mix(keys) ^ words), dtype=np.uint64))
    return total % (1 << 64)


def _starts(index: tuple[slice, ...]) -> tuple[int, ...]:
    return tuple(part.start or 0 for part in index)


def partial_checksum(value: Any) -> int:
    """This process's share of the checksum of ``value``.

    For a ``jax.Array`` across processes: the sum over the shards this process
    holds, each replicated shard counted once across all processes. For a
    value each process holds whole (a NumPy array, or a ``jax.Array`` on this
    process's devices, the same in every process): the whole sum on process
    0, zero elsewhere.
    """
    if isinstance(value, jax.Array):
        if value.is_fully_addressable and jax.process_index() != 0:
            return 0
        shape = tuple(value.shape)
        return sum(
            _block_sum(np.asarray(shard.data), _starts(shard.index), shape)
            for shard in value.addressable_shards
            if shard.replica_id == 0
        ) % (1 << 64)
    if jax.process_index() != 0:
        return 0
    value = np.asarray(value)
    return _block_sum(value, (0,) * value.ndim, value.shape)


def add_up(partials: list[list[int]]) -> list[int]:
    """Adds the partial checksums of every process, leaf by leaf (mod 2**64)."""
    return [sum(column) % (1 << 64) for column in zip(*partials, strict=True)]


def across_processes(partials: list[int]) -> list[int]:
    """The checksums from every process's partials (a collective: all must call)."""
    if jax.process_count() == 1:
        return partials
    from jax.experimental import multihost_utils

    halves = np.array([[p >> 32, p & 0xFFFFFFFF] for p in partials], np.uint32)
    halves = halves.reshape(len(partials), 2)
    gathered = np.asarray(multihost_utils.process_allgather(halves))
    return add_up([[(int(hi) << 32) | int(lo) for hi, lo in rows] for rows in gathered])
